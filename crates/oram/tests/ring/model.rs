//! Random sequences of Read, Write and Dummy agree with a `HashMap` model, across many
//! values of N, B, Z, S, A and T, in batches of one to twelve accesses (at most A and S;
//! repeats of one block in a batch included).

use std::collections::HashMap;

use proptest::prelude::*;
use shroud_oram::ring::RingConfig;
use shroud_oram::{MemoryStore, Op};

use crate::common::{check_batch, engine_ops, ops, written};

fn config() -> impl Strategy<Value = RingConfig> {
    (
        prop_oneof![
            Just(1u64),
            Just(2),
            Just(3),
            4u64..40,
            Just(100),
            Just(1000)
        ],
        prop_oneof![Just(16u32), Just(17), Just(64)],
        // Small buckets, and buckets past 64 slots (a two-word unread mask).
        prop_oneof![3 => 1u32..=8, 1 => Just(32)],
        prop_oneof![3 => 1u32..=8, 1 => 33u32..=96],
        1u32..=10,
        0u32..=3,
    )
        .prop_map(|(n, b, z, s, a, t)| RingConfig {
            z,
            s,
            a,
            cached_levels: t,
            stash_limit: 1 << 20,
            ..RingConfig::new(n, b)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ring_oram_agrees_with_a_map(
        (config, ops, batch, seed) in config().prop_flat_map(|c| {
            (Just(c), ops(c.capacity, 1..300), 1usize..=12, any::<u64>())
        })
    ) {
        let batch = batch.min(config.a as usize).min(config.s as usize);
        let config = RingConfig {
            max_batch: batch as u32,
            ..config
        };
        let (mut oram, mut rng) = crate::engine(config, seed);
        let mut store = MemoryStore::new();
        let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
        let len = config.block_size as usize;
        for chunk in ops.chunks(batch) {
            let datas = written(chunk, len);
            let got = oram
                .run_batch(&mut store, &engine_ops(chunk, &datas), &mut rng)
                .expect("batch");
            check_batch(chunk, &datas, &got, &mut model, len)?;
        }
        // Everything written reads back, after all the evictions and reshuffles above.
        for (a, v) in &model {
            prop_assert_eq!(&oram.run(&mut store, Op::Read(*a), &mut rng).expect("read"), v);
        }
    }
}

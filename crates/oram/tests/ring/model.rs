//! Random sequences of Read, Write and Dummy agree with a `HashMap` model, across many
//! values of N, B, Z, S, A and T.

use std::collections::HashMap;

use proptest::prelude::*;
use shroud_oram::ring::RingConfig;
use shroud_oram::{MemoryStore, Op};

use crate::common::{M, block, ops};

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
        1u32..=8,
        1u32..=8,
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
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn ring_oram_agrees_with_a_map(
        (config, ops, seed) in config().prop_flat_map(|c| (Just(c), ops(c.capacity, 1..300), any::<u64>()))
    ) {
        let (mut oram, mut rng) = crate::engine(config, seed);
        let mut store = MemoryStore::new();
        let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
        let zeros = vec![0u8; config.block_size as usize];
        for op in &ops {
            match *op {
                M::Read(a) => {
                    let got = oram.run(&mut store, Op::Read(a), &mut rng).expect("read");
                    prop_assert_eq!(&got, model.get(&a).unwrap_or(&zeros), "read {}", a);
                }
                M::Write(a, v) => {
                    let b = block(config.block_size as usize, a, v);
                    oram.run(&mut store, Op::Write(a, &b), &mut rng).expect("write");
                    model.insert(a, b);
                }
                M::Dummy => {
                    let got = oram.run(&mut store, Op::Dummy, &mut rng).expect("dummy");
                    prop_assert!(got.is_empty());
                }
            }
        }
        // Everything written reads back, after all the evictions and reshuffles above.
        for (a, v) in &model {
            prop_assert_eq!(&oram.run(&mut store, Op::Read(*a), &mut rng).expect("read"), v);
        }
    }
}

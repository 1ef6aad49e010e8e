//! Property 1: random sequences of Read, Write and Dummy agree with a `HashMap` model, across
//! many geometries and both position-map modes, in batches whose paths may overlap.

use std::collections::HashMap;

use proptest::prelude::*;
use shroud_oram::{Config, Op, PositionMap};

use crate::common::{M, ops};

fn config() -> impl Strategy<Value = Config> {
    (
        prop_oneof![
            Just(1u64),
            Just(2),
            Just(3),
            Just(5),
            6u64..40,
            Just(100),
            Just(1000),
            Just(4099)
        ],
        prop_oneof![Just(16u32), Just(17), Just(64), Just(100)],
        2u32..=5,
        0u32..=3,
        prop_oneof![
            Just(PositionMap::Flat),
            Just(crate::common::tiny_recursive()),
            Just(PositionMap::Recursive {
                pos_block: 32,
                flat_limit: 5
            })
        ],
        1u32..=4,
    )
        .prop_map(|(n, b, z, t, pm, k)| Config {
            cached_levels: t,
            bucket_slots: z,
            position_map: pm,
            max_batch: k,
            ..Config::new(n, b)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// Half the cases with the helper thread on: these buckets are small, so it mostly checks
    /// that the helper changes nothing; `agrees_on_two_cores` gives it work.
    #[test]
    fn agrees_with_hashmap((config, ops, seed) in config().prop_flat_map(|c| (Just(c), ops(c.capacity, 1..120), any::<u64>()))) {
        agrees(config, &ops, seed, seed % 2 == 1)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Blocks of 512 B to 2 KiB, with the helper thread opening buckets on a second core.
    #[test]
    fn agrees_on_two_cores((config, ops, seed) in config().prop_flat_map(|c| (prop_oneof![Just(512u32), Just(1024), Just(2000)], Just(c))).prop_map(|(b, c)| Config { block_size: b, ..c }).prop_flat_map(|c| (Just(c), ops(c.capacity, 1..120), any::<u64>()))) {
        agrees(config, &ops, seed, true)?;
    }
}

/// Runs `ops` in batches against the engine and a `HashMap`; fails on the first difference.
fn agrees(config: Config, ops: &[M], seed: u64, helper: bool) -> Result<(), TestCaseError> {
    let (mut oram, mut store, mut rng) = crate::common::oram(config, seed);
    oram.set_helper(helper).unwrap();
    let b = config.block_size as usize;
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    for chunk in ops.chunks(config.max_batch as usize) {
        let datas: Vec<Vec<u8>> = chunk
            .iter()
            .map(|m| match m {
                M::Write(a, v) => crate::common::block(b, *a, *v),
                _ => Vec::new(),
            })
            .collect();
        let batch: Vec<Op<'_>> = chunk
            .iter()
            .zip(&datas)
            .map(|(m, d)| match m {
                M::Read(a) => Op::Read(*a),
                M::Write(a, _) => Op::Write(*a, d),
                M::Dummy => Op::Dummy,
            })
            .collect();
        let results = crate::common::batch(&mut oram, &mut store, &batch, &mut rng);
        for ((m, d), r) in chunk.iter().zip(&datas).zip(results) {
            match m {
                M::Read(a) => {
                    let want = model.get(a).cloned().unwrap_or_else(|| vec![0; b]);
                    prop_assert_eq!(r, Some(want), "read of {}", a);
                }
                M::Write(a, _) => {
                    prop_assert_eq!(r, None);
                    model.insert(*a, d.clone());
                }
                M::Dummy => prop_assert_eq!(r, None),
            }
        }
        prop_assert!(oram.stash_lens().all(|s| s <= config.stash_limit as usize));
    }
    // Everything written is still there, read back one by one.
    for (a, v) in &model {
        let r = crate::common::batch(&mut oram, &mut store, &[Op::Read(*a)], &mut rng);
        prop_assert_eq!(r[0].as_ref(), Some(v));
    }
    Ok(())
}

#[test]
fn single_block_store() {
    let (mut oram, mut store, mut rng) = crate::common::oram(Config::new(1, 16), 1);
    assert_eq!(
        crate::common::batch(&mut oram, &mut store, &[Op::Read(0)], &mut rng)[0],
        Some(vec![0; 16])
    );
    crate::common::batch(&mut oram, &mut store, &[Op::Write(0, &[5; 16])], &mut rng);
    assert_eq!(
        crate::common::batch(&mut oram, &mut store, &[Op::Read(0)], &mut rng)[0],
        Some(vec![5; 16])
    );
}

#[test]
fn read_after_write_in_one_batch() {
    let config = Config {
        max_batch: 4,
        position_map: crate::common::tiny_recursive(),
        ..Config::new(50, 16)
    };
    let (mut oram, mut store, mut rng) = crate::common::oram(config, 2);
    let r = crate::common::batch(
        &mut oram,
        &mut store,
        &[
            Op::Read(7),
            Op::Write(7, &[1; 16]),
            Op::Read(7),
            Op::Write(7, &[2; 16]),
        ],
        &mut rng,
    );
    assert_eq!(r[0], Some(vec![0; 16]));
    assert_eq!(r[2], Some(vec![1; 16]));
    assert_eq!(
        crate::common::batch(&mut oram, &mut store, &[Op::Read(7)], &mut rng)[0],
        Some(vec![2; 16])
    );
}

#[test]
fn rejects_bad_ops() {
    let (mut oram, mut store, mut rng) = crate::common::oram(Config::new(10, 16), 3);
    assert!(matches!(
        oram.run(&mut store, &[Op::Read(10)], &mut rng),
        Err(shroud_oram::DriverError::Oram(
            shroud_oram::Error::AddressOutOfBounds {
                attempted: 10,
                capacity: 10
            }
        ))
    ));
    assert!(
        oram.run(&mut store, &[Op::Write(1, &[0; 15])], &mut rng)
            .is_err()
    );
    assert!(
        oram.run(&mut store, &[Op::Dummy, Op::Dummy], &mut rng)
            .is_err()
    );
    assert!(oram.run(&mut store, &[], &mut rng).is_err());
    // Still works after the refusals.
    assert!(oram.run(&mut store, &[Op::Read(9)], &mut rng).is_ok());
}

#[test]
fn invalid_configs() {
    let mut rng = crate::common::rng(4);
    for c in [
        Config::new(0, 16),
        Config::new((1 << 32) + 1, 16),
        Config::new(10, 15),
        Config::new(10, 65537),
        Config {
            bucket_slots: 0,
            ..Config::new(10, 16)
        },
        Config {
            max_batch: 0,
            ..Config::new(10, 16)
        },
        Config {
            position_map: PositionMap::Recursive {
                pos_block: 18,
                flat_limit: 4,
            },
            ..Config::new(10, 16)
        },
    ] {
        assert!(
            shroud_oram::Oram::new(c, shroud_oram::Key::generate(&mut rng), &mut rng).is_err(),
            "{c:?}"
        );
    }
    for b in [16, 65536] {
        assert!(
            shroud_oram::Oram::new(
                Config::new(4, b),
                shroud_oram::Key::generate(&mut rng),
                &mut rng
            )
            .is_ok()
        );
    }
}

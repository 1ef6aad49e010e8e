//! The helper thread ([`Oram::set_helper`]): the engine on two cores fetches the same
//! buckets, returns the same data and rejects the same bytes as on one. Blocks of 1 KiB,
//! so that buckets go to the helper (in groups of about 16 KiB).

use rand::RngExt;
use shroud_oram::{BucketId, BucketStore, Config, Error, MemoryStore, Op, Oram, Progress};

use crate::common;

/// Runs one batch by hand; returns the ids of every round and what access 0 read.
fn run(oram: &mut Oram, store: &mut MemoryStore, ops: &[Op<'_>]) -> (Vec<BucketId>, Vec<u8>) {
    let mut rng = common::rng(0);
    run_with(oram, store, ops, &mut rng)
}

fn run_with(
    oram: &mut Oram,
    store: &mut MemoryStore,
    ops: &[Op<'_>],
    rng: &mut rand_chacha::ChaCha20Rng,
) -> (Vec<BucketId>, Vec<u8>) {
    oram.begin(ops, rng).unwrap();
    let mut ids = Vec::new();
    loop {
        let mut fetch = oram.fetch().unwrap();
        ids.extend_from_slice(fetch.ids());
        store.read_path(&mut fetch).unwrap();
        if oram.advance().unwrap() == Progress::Done {
            break;
        }
    }
    store.write_path(&oram.write_back().unwrap()).unwrap();
    (ids, oram.result(0).map(<[u8]>::to_vec).unwrap_or_default())
}

#[test]
fn two_cores_fetch_and_read_what_one_does() {
    for config in [
        Config::new(1 << 10, 1024),
        Config {
            cached_levels: 2,
            max_batch: 4,
            position_map: common::tiny_recursive(),
            ..Config::new(1 << 9, 1024)
        },
    ] {
        let (mut one, mut store1, mut rng1) = common::oram(config, 5);
        let (mut two, mut store2, mut rng2) = common::oram(config, 5);
        two.set_helper(true).unwrap();
        assert!(two.helper() && !one.helper());
        let b = config.block_size as usize;
        let mut ops_rng = common::rng(6);
        for i in 0..600u64 {
            let data = common::block(b, i, i);
            let ops: Vec<Op<'_>> = (0..config.max_batch)
                .map(|j| {
                    let a = ops_rng.random_range(0..config.capacity);
                    match (i + u64::from(j)) % 3 {
                        0 => Op::Write(a, &data),
                        1 => Op::Read(a),
                        _ => Op::Dummy,
                    }
                })
                .collect();
            let a = run_with(&mut one, &mut store1, &ops, &mut rng1);
            let b = run_with(&mut two, &mut store2, &ops, &mut rng2);
            assert_eq!(a, b, "batch {i}");
            assert!(one.stash_lens().eq(two.stash_lens()));
            assert_eq!(one.writes(), two.writes());
        }
        assert!(two.helper_opened() > 1000, "{}", two.helper_opened());
    }
}

#[test]
fn a_bucket_supplied_twice_counts_as_the_last_supply() {
    let config = Config::new(1 << 8, 1024);
    let (mut oram, mut store, mut rng) = common::oram(config, 8);
    oram.set_helper(true).unwrap();
    for a in 0..64 {
        oram.run(&mut store, &[Op::Write(a, &[a as u8; 1024])], &mut rng)
            .unwrap();
    }
    let opened = oram.helper_opened();
    assert!(opened > 0);
    // Junk first, then the stored bytes: accepted.
    oram.begin(&[Op::Read(7)], &mut rng).unwrap();
    let mut fetch = oram.fetch().unwrap();
    let ids = fetch.ids().to_vec();
    for (i, id) in ids.iter().enumerate() {
        fetch.slot_mut(i).fill(0xA5);
        let honest = store.get(*id).map(<[u8]>::to_vec);
        fetch.supply(i, honest.as_deref()).unwrap();
    }
    assert_eq!(oram.advance().unwrap(), Progress::Done);
    assert_eq!(oram.result(0).unwrap(), &[7; 1024]);
    assert!(
        oram.helper_opened() > opened,
        "the honest bytes went to the helper"
    );
    store.write_path(&oram.write_back().unwrap()).unwrap();
    // The stored bytes first, then one bucket flipped: refused, and nothing changed.
    let before = oram.snapshot().unwrap();
    oram.begin(&[Op::Read(9)], &mut rng).unwrap();
    let mut fetch = oram.fetch().unwrap();
    let ids = fetch.ids().to_vec();
    for (i, id) in ids.iter().enumerate() {
        let honest = store.get(*id).unwrap().to_vec();
        fetch.supply(i, Some(&honest)).unwrap();
    }
    // A bucket the helper has opened already (the first group), supplied again flipped.
    let mut flipped = store.get(ids[1]).unwrap().to_vec();
    flipped[100] ^= 1;
    fetch.slot_mut(1).copy_from_slice(&flipped);
    assert!(matches!(oram.advance(), Err(Error::Integrity(_))));
    oram.abort();
    assert_eq!(*oram.snapshot().unwrap(), *before);
    let (_, read) = run(&mut oram, &mut store, &[Op::Read(9)]);
    assert_eq!(read, [9; 1024]);
}

/// Begins a read of `a` and supplies the honest bytes of fetch slots `range`.
fn begin_and_supply(
    oram: &mut Oram,
    store: &MemoryStore,
    a: u64,
    range: std::ops::Range<usize>,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Vec<BucketId> {
    oram.begin(&[Op::Read(a)], rng).unwrap();
    supply(oram, store, range)
}

/// Supplies the honest bytes of fetch slots `range`; returns every slot's id.
fn supply(oram: &mut Oram, store: &MemoryStore, range: std::ops::Range<usize>) -> Vec<BucketId> {
    let mut fetch = oram.fetch().unwrap();
    let ids = fetch.ids().to_vec();
    for (i, id) in ids.iter().enumerate().take(range.end).skip(range.start) {
        let honest = store.get(*id).map(<[u8]>::to_vec);
        fetch.supply(i, honest.as_deref()).unwrap();
    }
    ids
}

#[test]
fn buffers_at_the_helper_come_back_on_abort_and_switch_off() {
    let config = Config::new(1 << 10, 1024);
    let (mut oram, mut store, mut rng) = common::oram(config, 9);
    // Every bucket stored, so that every slot supplied is a bucket for the helper.
    oram.format(|id, b| {
        store.insert(id, b.to_vec());
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap();
    oram.set_helper(true).unwrap();
    oram.run(&mut store, &[Op::Write(3, &[3; 1024])], &mut rng)
        .unwrap();
    let half = config.trees()[0].fetched_levels() / 2;
    // Half a path supplied (handed to the helper), then the batch aborted.
    begin_and_supply(&mut oram, &store, 3, 0..half, &mut rng);
    let before = oram.helper_opened();
    oram.abort();
    assert!(oram.helper_opened() > before, "a group was with the helper");
    let (_, read) = run(&mut oram, &mut store, &[Op::Read(3)]);
    assert_eq!(read, [3; 1024]);
    // Half a path supplied, the helper switched off, the rest supplied: accepted.
    begin_and_supply(&mut oram, &store, 3, 0..half, &mut rng);
    oram.set_helper(false).unwrap();
    supply(&mut oram, &store, half..usize::MAX);
    assert_eq!(oram.advance().unwrap(), Progress::Done);
    assert_eq!(oram.result(0).unwrap(), &[3; 1024]);
}

//! Ring ORAM with a recursive position map: agreement with a model across parameters and
//! batches, rebuilt from its pages at random points; tampering in a position tree caught;
//! every tree touched once per access, read, write and dummy alike; client memory below
//! the flat map's.

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use shroud_oram::ring::{Recursion, RecursiveRing, RingConfig, RingOram};
use shroud_oram::{BucketId, Key, MemoryStore, Op, Progress};
use zeroize::Zeroizing;

use crate::common::{block, check_batch, engine_ops, ops, written};

fn config() -> impl Strategy<Value = (RingConfig, Recursion)> {
    (
        prop_oneof![Just(1u64), Just(2), 3u64..60, Just(200), Just(1000)],
        prop_oneof![Just(16u32), Just(17), Just(64)],
        prop_oneof![3 => 1u32..=8, 1 => Just(32)],
        prop_oneof![3 => 1u32..=8, 1 => 33u32..=96],
        1u32..=10,
        0u32..=3,
        prop_oneof![Just(16u32), Just(20), Just(64)],
        prop_oneof![Just(1u64), Just(2), Just(5)],
    )
        .prop_map(|(n, b, z, s, a, t, pos_block, flat_limit)| {
            (
                RingConfig {
                    z,
                    s,
                    a,
                    cached_levels: t,
                    stash_limit: 1 << 20,
                    ..RingConfig::new(n, b)
                },
                Recursion {
                    pos_block,
                    flat_limit,
                },
            )
        })
}

type Saved = BTreeMap<String, Zeroizing<Vec<u8>>>;

fn rebuild(saved: &Saved, key: &Key) -> RecursiveRing {
    RecursiveRing::from_pages(|n| saved.get(n).map(|p| &p[..]), key.clone()).expect("rebuild")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random batches of Read, Write and Dummy (repeats of a block in a batch included)
    /// agree with a map, and so does the store rebuilt from its pages every few batches.
    #[test]
    fn a_recursive_ring_oram_agrees_with_a_map_across_rebuilds(
        ((config, recursion), ops, batch, rebuild_every, seed) in config().prop_flat_map(|c| {
            (Just(c), ops(c.0.capacity, 1..200), 1usize..=8, 1usize..12, any::<u64>())
        })
    ) {
        let batch = batch.min(config.a as usize).min(config.s as usize);
        let config = RingConfig { max_batch: batch as u32, ..config };
        let mut rng = crate::common::rng(seed);
        let key = Key::from_bytes([3; 32]);
        let mut oram = RecursiveRing::new(config, recursion, key.clone(), &mut rng)
            .expect("config");
        let mut saved = oram.changed_pages().expect("pages");
        let mut store = MemoryStore::new();
        let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
        let len = config.block_size as usize;
        let zeros = vec![0u8; len];
        for (i, chunk) in ops.chunks(batch).enumerate() {
            if i % rebuild_every == 0 {
                oram = rebuild(&saved, &key);
                saved.extend(oram.changed_pages().expect("pages"));
            }
            let datas = written(chunk, len);
            let got = oram
                .run_batch(&mut store, &engine_ops(chunk, &datas), &mut rng)
                .expect("batch");
            saved.extend(oram.changed_pages().expect("pages"));
            check_batch(chunk, &datas, &got, &mut model, len)?;
        }
        // The pages saved are the whole state: rebuilt from them, and from a snapshot, the
        // store reads everything back alike.
        let mut whole = RecursiveRing::restore(&oram.snapshot().expect("snapshot"), key.clone())
            .expect("restore");
        let mut back = rebuild(&saved, &key);
        let mut other = store.clone();
        for a in 0..config.capacity {
            let want = model.get(&a).unwrap_or(&zeros);
            prop_assert_eq!(&back.run(&mut store, Op::Read(a), &mut rng).expect("read"), want);
            prop_assert_eq!(&whole.run(&mut other, Op::Read(a), &mut rng).expect("read"), want);
        }
    }

    /// Pages with bytes flipped or cut are refused or read as some state, never a panic.
    #[test]
    fn hostile_pages_are_refused_without_a_panic(
        which in any::<usize>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let config = RingConfig { z: 3, s: 2, a: 2, cached_levels: 1, ..RingConfig::new(60, 16) };
        let map = Recursion { pos_block: 16, flat_limit: 4 };
        let mut rng = crate::common::rng(9);
        let key = Key::from_bytes([4; 32]);
        let mut oram = RecursiveRing::new(config, map, key.clone(), &mut rng).expect("config");
        let mut store = MemoryStore::new();
        for a in 0..60u64 {
            oram.run(&mut store, Op::Write(a, &block(16, a, 1)), &mut rng).expect("write");
        }
        let saved = oram.changed_pages().expect("pages");
        let names: Vec<&String> = saved.keys().collect();
        let name = names[which % names.len()].clone();
        let mut bad = saved.clone();
        let page = bad.get_mut(&name).expect("page");
        for (at, x) in flips {
            let n = page.len().max(1);
            if let Some(b) = page.get_mut(at % n) {
                *b ^= x | 1;
            }
        }
        let _ = RecursiveRing::from_pages(|n| bad.get(n).map(|p| &p[..]), key.clone());
        let mut short = saved.clone();
        let page = short.get_mut(&name).expect("page");
        let keep = cut % page.len().max(1);
        page.truncate(keep);
        let _ = RecursiveRing::from_pages(|n| short.get(n).map(|p| &p[..]), key.clone());
        let mut missing = saved;
        missing.remove(&name);
        prop_assert!(RecursiveRing::from_pages(|n| missing.get(n).map(|p| &p[..]), key).is_err());
    }
}

fn filled(n: u64) -> (RecursiveRing, MemoryStore, rand_chacha::ChaCha20Rng) {
    let config = RingConfig {
        z: 4,
        s: 6,
        a: 3,
        ..RingConfig::new(n, 16)
    };
    let map = Recursion {
        pos_block: 16,
        flat_limit: 4,
    };
    let mut rng = crate::common::rng(11);
    let mut oram =
        RecursiveRing::new(config, map, Key::generate(&mut rng), &mut rng).expect("config");
    let mut store = MemoryStore::new();
    for a in 0..n {
        oram.run(&mut store, Op::Write(a, &block(16, a, 1)), &mut rng)
            .expect("write");
    }
    (oram, store, rng)
}

/// A change to the slot of a position tree that an access reads fails that round, with
/// nothing changed: the same request, answered honestly, then goes through, and every
/// block reads back.
#[test]
fn tampering_with_a_position_tree_is_caught_and_the_access_completes() {
    use shroud_oram::ring::{RingRequest, RingStore};
    let (mut oram, mut store, mut rng) = filled(100);
    assert_eq!(oram.trees(), 4);
    let (mut caught, mut tampered) = (0, 0);
    for round in 0..200u64 {
        let a = round % 100;
        oram.begin_batch(&[Op::Read(a)], &mut rng).expect("begin");
        loop {
            let slot_len = oram.slot_len();
            let req = oram.request().expect("request").clone();
            // Storage applies the writes, then answers the reads from a copy in which the
            // first slot this round reads is flipped (in a position tree).
            let writes = RingRequest {
                writes: req.writes.clone(),
                ..Default::default()
            };
            let reads = RingRequest {
                writes: Vec::new(),
                ..req.clone()
            };
            store.exchange(&writes, slot_len).expect("writes");
            let first = req.online[0][0];
            let mut evil = store.clone();
            let flipped = first.bucket.tree > 0
                && evil
                    .get_mut(first.bucket)
                    .map(|b| b[usize::from(first.slot) * slot_len] ^= 1)
                    .is_some();
            let reply = evil.exchange(&reads, slot_len).expect("evil");
            let progress = match oram.finish(&reply, &mut rng) {
                Ok(p) => {
                    assert!(!flipped, "a flipped slot was read and not caught");
                    p
                }
                Err(shroud_oram::Error::Integrity(_)) => {
                    caught += 1;
                    assert_eq!(oram.request(), Some(&req), "the same request goes again");
                    let reply = store.exchange(&reads, slot_len).expect("honest");
                    oram.finish(&reply, &mut rng).expect("honest reply")
                }
                Err(e) => panic!("{e}"),
            };
            tampered += usize::from(flipped);
            if progress == Progress::Done {
                break;
            }
        }
        let got: Vec<Vec<u8>> = oram.results().map(<[u8]>::to_vec).collect();
        assert_eq!(got, vec![block(16, a, 1)]);
    }
    assert_eq!(caught, tampered);
    assert!(
        tampered > 300,
        "tampered {tampered} rounds of 600 in position trees"
    );
}

/// Every access walks every tree once, smallest first, each with one online read of a
/// whole path (less the cached levels), whatever the operation; the shapes of reads,
/// writes and dummies are alike.
#[test]
fn every_access_touches_every_tree_once_whatever_it_is() {
    let (mut oram, mut store, mut rng) = filled(100);
    let trees = oram.trees();
    let mut shapes: HashMap<&str, Vec<Vec<(u8, usize)>>> = HashMap::new();
    let data = block(16, 1, 2);
    for i in 0..300u64 {
        let (kind, op) = match i % 3 {
            0 => ("read", Op::Read(i % 100)),
            1 => ("write", Op::Write((i * 7) % 100, &data)),
            _ => ("dummy", Op::Dummy),
        };
        oram.begin_batch(&[op], &mut rng).expect("begin");
        let mut walk = Vec::new();
        loop {
            let slot_len = oram.slot_len();
            let req = oram.request().expect("request").clone();
            let tree = req.online[0][0].bucket.tree;
            assert!(req.online[0].iter().all(|s| s.bucket.tree == tree));
            walk.push((tree, req.online[0].len()));
            let reply = shroud_oram::ring::RingStore::exchange(&mut store, &req, slot_len)
                .expect("exchange");
            if oram.finish(&reply, &mut rng).expect("finish") == Progress::Done {
                break;
            }
        }
        let order: Vec<u8> = walk.iter().map(|w| w.0).collect();
        let expect: Vec<u8> = (0..trees as u8).rev().collect();
        assert_eq!(order, expect, "trees walked smallest first, once each");
        shapes.entry(kind).or_default().push(walk);
    }
    let one = |k: &str| -> Vec<(u8, usize)> { shapes[k][0].clone() };
    for k in ["read", "write", "dummy"] {
        assert!(shapes[k].iter().all(|w| *w == one("read")), "{k} differs");
    }
}

/// Client memory at N = 2^16 (B = 64): below the flat map's engine, and the position
/// trees hold the leaves; bytes printed for the docs.
#[test]
fn recursion_keeps_less_in_client_memory_than_the_flat_map() {
    let n = 1u64 << 16;
    let config = RingConfig {
        cached_levels: 0,
        ..RingConfig::new(n, 64)
    };
    let mut rng = crate::common::rng(12);
    let mut flat = RingOram::new(config, Key::generate(&mut rng), &mut rng).expect("flat");
    let mut rec = RecursiveRing::new(
        config,
        Recursion::default(),
        Key::generate(&mut rng),
        &mut rng,
    )
    .expect("recursive");
    let (mut s1, mut s2) = (MemoryStore::new(), MemoryStore::new());
    let data = [5u8; 64];
    for i in 0..4_000u64 {
        let a = (i * 7919) % n;
        flat.run(&mut s1, Op::Write(a, &data), &mut rng)
            .expect("flat");
        rec.run(&mut s2, Op::Write(a, &data), &mut rng)
            .expect("rec");
    }
    println!(
        "N = 2^16, B = 64: flat {} KiB, recursive {} KiB in {} trees",
        flat.memory() / 1024,
        rec.memory() / 1024,
        rec.trees()
    );
    assert_eq!(rec.trees(), 2);
    assert!(rec.memory() < flat.memory());
    // Each tree's stash stays as small as one Ring ORAM's (the engine's tests bound it).
    assert!(
        rec.max_stash() <= flat.max_stash() + 40,
        "stash {} against {}",
        rec.max_stash(),
        flat.max_stash()
    );
    assert!(
        s2.ids().any(|BucketId { tree, .. }| tree == 1),
        "the position tree is at storage"
    );
}

/// What storage sees of two very different workloads (block 0 over and over, and random
/// reads, writes and dummies): in every tree, online reads of uniformly random leaves, and
/// the same shape of walk access after access.
#[test]
fn storage_sees_uniform_leaves_in_every_tree_whatever_the_workload() {
    use rand::RngExt;
    const ACCESSES: u64 = 6_000;
    let config = RingConfig {
        cached_levels: 1,
        ..RingConfig::new(1 << 10, 16)
    };
    let map = Recursion {
        pos_block: 16,
        flat_limit: 16,
    };
    let mut shapes = Vec::new();
    for hot in [true, false] {
        let mut rng = crate::common::rng(u64::from(hot) + 20);
        let mut oram =
            RecursiveRing::new(config, map, Key::generate(&mut rng), &mut rng).expect("config");
        let mut store = MemoryStore::new();
        let trees = oram.trees();
        let mut leaves: Vec<HashMap<u64, u64>> = vec![HashMap::new(); trees];
        let mut heights = vec![0u32; trees];
        let mut shape = Vec::new();
        let b = [7u8; 16];
        for i in 0..ACCESSES {
            let a = if hot {
                0
            } else {
                rng.random_range(0..config.capacity)
            };
            let op = match i % 3 {
                0 => Op::Write(a, &b),
                1 => Op::Read(a),
                _ => Op::Dummy,
            };
            oram.begin_batch(&[op], &mut rng).expect("begin");
            loop {
                let slot_len = oram.slot_len();
                let req = oram.request().expect("request").clone();
                let path: Vec<BucketId> = req.online[0].iter().map(|s| s.bucket).collect();
                let t = usize::from(path[0].tree);
                // The deepest fetched bucket is a leaf: its depth is the tree's height.
                let last = path.last().expect("path").index;
                heights[t] = (last + 1).ilog2();
                *leaves[t]
                    .entry(crate::oblivious::leaf_of(&path, heights[t]))
                    .or_default() += 1;
                shape.push((t, path.len()));
                let reply = shroud_oram::ring::RingStore::exchange(&mut store, &req, slot_len)
                    .expect("exchange");
                if oram.finish(&reply, &mut rng).expect("finish") == Progress::Done {
                    break;
                }
            }
        }
        for t in 0..trees {
            let n = 1usize << heights[t];
            let counts: Vec<u64> = (0..n as u64)
                .map(|l| leaves[t].get(&l).copied().unwrap_or(0))
                .collect();
            let expected = vec![ACCESSES as f64 / n as f64; n];
            let chi = crate::oblivious::chi_square(&counts, &expected);
            assert!(
                chi < crate::oblivious::threshold(n - 1),
                "tree {t} (hot {hot}): leaves not uniform, chi-square {chi:.1} over {n} leaves"
            );
        }
        shapes.push(shape);
    }
    assert_eq!(shapes[0], shapes[1], "walks of the same shape");
}

/// A stash past its bound in any tree does not stop a walk: the access completes, its
/// last `finish` reports the overflow, and nothing is lost.
#[test]
fn a_stash_past_its_bound_is_reported_and_loses_nothing() {
    use shroud_oram::ring::RingStore;
    let config = RingConfig {
        z: 1,
        s: 2,
        a: 4,
        stash_limit: 1,
        ..RingConfig::new(64, 16)
    };
    let map = Recursion {
        pos_block: 16,
        flat_limit: 2,
    };
    let mut rng = crate::common::rng(31);
    let mut oram =
        RecursiveRing::new(config, map, Key::generate(&mut rng), &mut rng).expect("config");
    let mut store = MemoryStore::new();
    let mut overflows = 0;
    let mut access = |oram: &mut RecursiveRing, op: Op<'_>| -> Vec<u8> {
        oram.begin_batch(&[op], &mut rng).expect("begin");
        loop {
            let slot_len = oram.slot_len();
            let req = oram.request().expect("request").clone();
            let reply = store.exchange(&req, slot_len).expect("exchange");
            match oram.finish(&reply, &mut rng) {
                Ok(Progress::Fetch) => {}
                Ok(Progress::Done) => break,
                Err(shroud_oram::Error::StashOverflow { limit: 1 }) => {
                    overflows += 1;
                    assert!(oram.request().is_none(), "reported when the walk ends");
                    break;
                }
                Err(e) => panic!("{e}"),
            }
        }
        oram.results().next().expect("a result").to_vec()
    };
    for a in 0..64u64 {
        access(&mut oram, Op::Write(a, &block(16, a, 3)));
    }
    for a in 0..64u64 {
        assert_eq!(access(&mut oram, Op::Read(a)), block(16, a, 3));
    }
    assert!(overflows > 0, "a stash bound of 1 block is passed");
}

//! Snapshots: an engine restored at any point between accesses carries on exactly (the
//! buckets it owes storage included), in a new lineage; hostile snapshot bytes are refused
//! without a panic.

use std::collections::HashMap;

use proptest::prelude::*;
use shroud_oram::ring::{RingConfig, RingOram, RingStore};
use shroud_oram::{Key, MemoryStore, Op};

use crate::common::{M, block, ops};

/// Runs `op` and checks a read against `model`.
fn apply(
    oram: &mut RingOram,
    store: &mut MemoryStore,
    model: &mut HashMap<u64, Vec<u8>>,
    op: &M,
    rng: &mut rand_chacha::ChaCha20Rng,
) -> Result<(), TestCaseError> {
    match *op {
        M::Read(a) => {
            let got = oram.run(store, Op::Read(a), rng).expect("read");
            let zeros = vec![0u8; 16];
            prop_assert_eq!(&got, model.get(&a).unwrap_or(&zeros));
        }
        M::Write(a, v) => {
            let b = block(16, a, v);
            oram.run(store, Op::Write(a, &b), rng).expect("write");
            model.insert(a, b);
        }
        M::Dummy => {
            oram.run(store, Op::Dummy, rng).expect("dummy");
        }
    }
    Ok(())
}

fn config() -> impl Strategy<Value = RingConfig> {
    (
        prop_oneof![Just(1u64), Just(7), 8u64..60, Just(300)],
        1u32..=6,
        1u32..=6,
        1u32..=6,
        0u32..=2,
    )
        .prop_map(|(n, z, s, a, t)| RingConfig {
            z,
            s,
            a,
            cached_levels: t,
            stash_limit: 1 << 20,
            ..RingConfig::new(n, 16)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn a_restored_engine_carries_on_exactly(
        (config, ops, restore_every, seed) in config().prop_flat_map(|c| {
            (Just(c), ops(c.capacity, 1..200), 1usize..20, any::<u64>())
        })
    ) {
        let mut rng = crate::common::rng(seed);
        let key = Key::from_bytes([7; 32]);
        let mut oram = RingOram::new(config, key.clone(), &mut rng).expect("config");
        let mut store = MemoryStore::new();
        let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
        for (i, op) in ops.iter().enumerate() {
            if i % restore_every == 0 {
                let saved = oram.snapshot().expect("snapshot");
                oram = RingOram::restore(&saved, key.clone()).expect("restore");
            }
            apply(&mut oram, &mut store, &mut model, op, &mut rng)?;
        }
    }

    #[test]
    fn an_engine_rebuilt_from_its_pages_carries_on_exactly(
        (config, ops, rebuild_every, seed) in config().prop_flat_map(|c| {
            (Just(c), ops(c.capacity, 1..200), 1usize..20, any::<u64>())
        })
    ) {
        let mut rng = crate::common::rng(seed);
        let key = Key::from_bytes([8; 32]);
        let mut oram = RingOram::new(config, key.clone(), &mut rng).expect("config");
        let mut saved = oram.changed_pages().expect("pages");
        let mut store = MemoryStore::new();
        let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
        let zeros = vec![0u8; 16];
        for (i, op) in ops.iter().enumerate() {
            if i % rebuild_every == 0 {
                oram = RingOram::from_pages(|n| saved.get(n).map(|p| &p[..]), key.clone())
                    .expect("rebuild");
                // A rebuilt engine owes little to save until it changes: its core (a new
                // lineage), or everything if it dropped a lineage nothing uses.
                saved.extend(oram.changed_pages().expect("pages"));
            }
            apply(&mut oram, &mut store, &mut model, op, &mut rng)?;
            saved.extend(oram.changed_pages().expect("pages"));
        }
        // The pages saved are the whole state: rebuilt from them, and from a snapshot, the
        // engine reads everything back alike.
        let mut whole = RingOram::restore(&oram.snapshot().expect("snapshot"), key.clone())
            .expect("restore");
        let mut pages = RingOram::from_pages(|n| saved.get(n).map(|p| &p[..]), key)
            .expect("rebuild");
        let (mut s1, mut s2) = (store.clone(), store);
        for a in 0..config.capacity {
            let want = model.get(&a).unwrap_or(&zeros);
            prop_assert_eq!(&whole.run(&mut s1, Op::Read(a), &mut rng).expect("read"), want);
            prop_assert_eq!(&pages.run(&mut s2, Op::Read(a), &mut rng).expect("read"), want);
        }
    }

    #[test]
    fn hostile_snapshots_are_refused_without_a_panic(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
        cut in any::<usize>(),
    ) {
        let config = RingConfig { z: 3, s: 2, a: 2, cached_levels: 1, ..RingConfig::new(40, 16) };
        let (mut oram, mut rng) = crate::engine(config, 5);
        let mut store = MemoryStore::new();
        for a in 0..40u64 {
            oram.run(&mut store, Op::Write(a, &block(16, a, 1)), &mut rng).expect("write");
        }
        let saved = oram.snapshot().expect("snapshot");
        let key = Key::from_bytes([1; 32]);
        let mut bytes = saved.to_vec();
        for (at, x) in flips {
            let n = bytes.len();
            bytes[at % n] ^= x | 1;
        }
        // Decoding may succeed (a flipped data byte is still a state); it must not panic.
        let _ = RingOram::restore(&bytes, key.clone());
        let short = &saved[..cut % saved.len()];
        prop_assert!(RingOram::restore(short, key).is_err());
    }
}

/// The write-ahead rule: a snapshot taken before an access's request is sent holds the
/// buckets that request owes storage, so an engine restored after a crash (the request
/// lost) sends them again and reads everything back.
#[test]
fn owed_buckets_survive_a_crash_before_they_reach_storage() {
    let config = RingConfig {
        z: 4,
        s: 3,
        a: 2,
        ..RingConfig::new(64, 16)
    };
    let key = Key::from_bytes([3; 32]);
    let mut rng = crate::common::rng(11);
    let mut oram = RingOram::new(config, key.clone(), &mut rng).expect("config");
    let mut store = MemoryStore::new();
    let mut lost = 0;
    for a in 0..64u64 {
        oram.run(&mut store, Op::Write(a, &block(16, a, 2)), &mut rng)
            .expect("write");
        // Saved, then the next request is built and lost with the process.
        let saved = oram.snapshot().expect("snapshot");
        let req = oram.begin(Op::Read(a), &mut rng).expect("begin").clone();
        lost += usize::from(!req.writes.is_empty());
        oram = RingOram::restore(&saved, key.clone()).expect("restore");
    }
    assert!(lost > 10, "only {lost} lost requests owed buckets");
    for a in 0..64u64 {
        let got = oram.run(&mut store, Op::Read(a), &mut rng).expect("read");
        assert_eq!(got, block(16, a, 2), "block {a}");
    }
    // Storage holds what the engine's metadata says, sealed under lineages it kept.
    let req = oram.flush().unwrap();
    store.exchange(&req, config.slot_len()).expect("flush");
}

/// Two restores of one snapshot seal under two lineages: the same bucket rewritten by
/// both never repeats a (key, nonce) pair.
#[test]
fn restoring_one_snapshot_twice_seals_differently() {
    let config = RingConfig {
        z: 2,
        s: 2,
        a: 1,
        ..RingConfig::new(8, 16)
    };
    let key = Key::from_bytes([4; 32]);
    let mut rng = crate::common::rng(12);
    let mut oram = RingOram::new(config, key.clone(), &mut rng).expect("config");
    let mut store = MemoryStore::new();
    oram.run(&mut store, Op::Write(1, &block(16, 1, 1)), &mut rng)
        .expect("write");
    let saved = oram.snapshot().expect("snapshot");
    let mut outs = Vec::new();
    for _ in 0..2 {
        let mut o = RingOram::restore(&saved, key.clone()).expect("restore");
        let mut r = crate::common::rng(99);
        let mut s = store.clone();
        o.run(&mut s, Op::Write(1, &block(16, 1, 2)), &mut r)
            .expect("write");
        outs.push(o.flush().unwrap());
    }
    assert!(!outs[0].writes.is_empty());
    assert_eq!(outs[0].writes.len(), outs[1].writes.len());
    for (a, b) in outs[0].writes.iter().zip(&outs[1].writes) {
        assert_eq!(a.0, b.0, "same buckets, same seeds");
        assert_ne!(a.1, b.1, "sealed under another lineage's key");
    }
}

/// An access saves little: the core (counters, which blocks the stash holds), on an
/// eviction the blocks of the buckets owed to storage, the metadata pages of the buckets it
/// read or wrote, one position page, the cached buckets an eviction changed (which blocks
/// they hold), and the data of blocks new to the client; never the whole state, and on
/// average (a write every access, T = 6) well under the 64 KiB an epoch of issue 14.
#[test]
fn an_access_changes_few_pages() {
    let config = RingConfig {
        cached_levels: 6,
        ..RingConfig::new(1 << 14, 1024)
    };
    let key = Key::from_bytes([9; 32]);
    let mut rng = crate::common::rng(13);
    let mut oram = RingOram::new(config, key, &mut rng).expect("config");
    let all = oram.changed_pages().expect("pages");
    let whole: usize = all.values().map(|p| p.len()).sum();
    let mut store = MemoryStore::new();
    let data = vec![1u8; 1024];
    let (mut most, mut total) = (0usize, 0usize);
    let fetched = (config.height() + 1 - config.cached()) as usize;
    for i in 0..2000u64 {
        oram.run(&mut store, Op::Write(i % 4096, &data), &mut rng)
            .expect("write");
        let pages = oram.changed_pages().expect("pages");
        let metas = pages.keys().filter(|n| n.starts_with("meta/")).count();
        let positions = pages.keys().filter(|n| n.starts_with("pos/")).count();
        // Online reads and up to two buckets rewritten per level.
        assert!(
            metas <= 3 * fetched + 2,
            "access {i}: {metas} metadata pages"
        );
        assert!(positions <= 1, "access {i}: {positions} position pages");
        let bytes: usize = pages.values().map(|p| p.len()).sum();
        most = most.max(bytes);
        total += bytes;
    }
    println!(
        "whole state {whole} bytes; an access saves {} on average, {most} at most",
        total / 2000
    );
    assert!(
        total / 2000 * 10 < whole,
        "an access saved {} of {whole} bytes on average",
        total / 2000
    );
    assert!(
        total / 2000 < 20 << 10,
        "an access saved {} bytes on average",
        total / 2000
    );
}

/// An evicting access saves the blocks its rewritten buckets hold, not the buckets: the
/// `owed` page against the sealed bytes the next request carries (Z + S slots a bucket).
#[test]
fn owed_buckets_are_saved_as_their_blocks() {
    let config = RingConfig {
        cached_levels: 4,
        ..RingConfig::new(1 << 12, 1024)
    };
    let key = Key::from_bytes([8; 32]);
    let mut rng = crate::common::rng(14);
    let mut oram = RingOram::new(config, key, &mut rng).expect("config");
    let mut store = MemoryStore::new();
    let data = vec![2u8; 1024];
    let (mut saved, mut sealed, mut evictions) = (0usize, 0usize, 0);
    for i in 0..2000u64 {
        oram.run(&mut store, Op::Write(i % 4096, &data), &mut rng)
            .expect("write");
        let pages = oram.changed_pages().expect("pages");
        let owed = pages.get("owed").expect("an owed page every access").len();
        let writes = oram.flush().unwrap();
        let bytes: usize = writes.writes.iter().map(|(_, b)| b.len()).sum();
        if bytes == 0 {
            assert!(
                owed < 16,
                "access {i}: {owed} bytes owed with nothing to send"
            );
            continue;
        }
        store.exchange(&writes, config.slot_len()).expect("flush");
        evictions += 1;
        saved += owed;
        sealed += bytes;
    }
    println!("{evictions} evictions: {saved} bytes saved for {sealed} sealed");
    assert!(evictions >= 40, "{evictions} evictions");
    // About Z/3 blocks a fetched bucket against Z + S = 3Z slots.
    assert!(
        saved * 4 < sealed,
        "{saved} bytes saved for {sealed} sealed"
    );
}

/// The stored samples of the Ring ORAM formats: a key, every page of a 16-block store where
/// block `a` holds sixteen bytes of `a`, and every bucket storage holds. Version 1 (`core`
/// page version 1, owed buckets sealed in it) and version 2 (owed buckets as their blocks
/// in the `owed` page); the slots' sealed layout is the same. Set SHROUD_WRITE_SAMPLES=1
/// to write today's again (only with a new format version, and a migration for the old).
const SAMPLES: [&str; 2] = ["samples/ring-v1.txt", "samples/ring-v2.txt"];

#[test]
fn reads_the_stored_sample_of_ring_pages_and_slots_v1() {
    reads_the_stored_sample(SAMPLES[0], false);
}

#[test]
fn reads_the_stored_sample_of_ring_pages_and_slots_v2() {
    reads_the_stored_sample(SAMPLES[1], true);
}

fn reads_the_stored_sample(sample: &str, today: bool) {
    use data_encoding::HEXLOWER;
    use shroud_oram::BucketId;
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(sample);
    let config = RingConfig {
        z: 2,
        s: 3,
        a: 2,
        cached_levels: 1,
        ..RingConfig::new(16, 16)
    };
    if today && std::env::var_os("SHROUD_WRITE_SAMPLES").is_some() {
        let mut rng = rand::rng();
        let key = [0x5a; 32];
        let mut oram = RingOram::new(config, Key::from_bytes(key), &mut rng).expect("engine");
        let mut pages = oram.changed_pages().expect("pages");
        let mut store = MemoryStore::new();
        for a in 0..16u64 {
            oram.run(&mut store, Op::Write(a, &[a as u8; 16]), &mut rng)
                .expect("write");
            pages.extend(oram.changed_pages().expect("pages"));
        }
        let mut text = format!(
            "key {}\nsnapshot {}\n",
            HEXLOWER.encode(&key),
            HEXLOWER.encode(&oram.snapshot().expect("snapshot"))
        );
        for (name, page) in &pages {
            text += &format!("page {name} {}\n", HEXLOWER.encode(page));
        }
        for index in 0..config.buckets() {
            if let Some(b) = store.get(BucketId { tree: 0, index }) {
                text += &format!("bucket {index} {}\n", HEXLOWER.encode(b));
            }
        }
        std::fs::write(&path, text).expect("sample written");
    }
    let text = std::fs::read_to_string(&path).expect("the stored sample");
    let unhex = |s: &str| HEXLOWER.decode(s.as_bytes()).expect("hex");
    let (mut key, mut pages, mut store) = (None, HashMap::new(), MemoryStore::new());
    let mut snapshot = None;
    for line in text.lines() {
        match line.split(' ').collect::<Vec<_>>().as_slice() {
            ["key", k] => key = Some(<[u8; 32]>::try_from(unhex(k)).expect("a key")),
            ["snapshot", s] => snapshot = Some(unhex(s)),
            ["page", name, p] => {
                pages.insert(name.to_string(), unhex(p));
            }
            ["bucket", i, b] => {
                let index = i.parse().expect("an index");
                store.insert(BucketId { tree: 0, index }, unhex(b));
            }
            _ => panic!("bad sample line {line}"),
        }
    }
    let key = Key::from_bytes(key.expect("a key"));
    let from_pages = RingOram::from_pages(|name| pages.get(name).map(|p| &p[..]), key.clone())
        .expect("today's pages open");
    let restored =
        RingOram::restore(&snapshot.expect("a snapshot"), key).expect("today's snapshot restores");
    let mut rng = rand::rng();
    for (what, mut oram) in [("pages", from_pages), ("snapshot", restored)] {
        let mut store = store.clone();
        for round in 0..2 {
            for a in 0..16u64 {
                let got = oram.run(&mut store, Op::Read(a), &mut rng);
                assert_eq!(
                    got.expect("today's slots verify"),
                    [a as u8; 16],
                    "{what}: block {a}, round {round}"
                );
            }
        }
    }
}

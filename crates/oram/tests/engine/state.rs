//! Snapshot/restore exactness, lazy init at N = 2^32, and client memory at N = 2^24.

use std::time::Instant;

use rand::RngExt;
use shroud_oram::{Config, Key, MemoryStore, Op, Oram, PositionMap};

/// A restored engine behaves exactly like the original: same fetch ids, same reads, same
/// stash sizes, for the same random choices.
#[test]
fn snapshot_restore_is_exact() {
    for config in [
        Config {
            cached_levels: 2,
            max_batch: 2,
            ..Config::new(500, 24)
        },
        Config {
            position_map: crate::common::tiny_recursive(),
            cached_levels: 1,
            ..Config::new(300, 16)
        },
    ] {
        let (mut a, mut store, mut rng) = crate::common::oram(config, 11);
        let key = Key::generate(&mut crate::common::rng(11));
        let mut a_rng = crate::common::rng(1);
        a = {
            // Re-create with a known key so it can be restored.
            drop(a);
            Oram::new(config, key.clone(), &mut a_rng).unwrap()
        };
        let b = config.block_size as usize;
        let k = config.max_batch as usize;
        for v in 0..400u64 {
            let addr = rng.random_range(0..config.capacity);
            let d = crate::common::block(b, addr, v);
            let mut ops = vec![Op::Write(addr, &d)];
            ops.resize(k, Op::Dummy);
            a.run(&mut store, &ops, &mut rng).unwrap();
        }
        let snap = a.snapshot().unwrap();
        let mut b_oram = Oram::restore(&snap, key.clone()).unwrap();
        assert_eq!(
            *b_oram.snapshot().unwrap(),
            *snap,
            "restore then snapshot is the identity"
        );
        assert_eq!(
            b_oram.stash_lens().collect::<Vec<_>>(),
            a.stash_lens().collect::<Vec<_>>()
        );
        assert_eq!(b_oram.writes(), a.writes());
        // Drive both with identical randomness on copies of the same server state.
        let mut store_b = store.clone();
        let (mut ra, mut rb) = (crate::common::rng(3), crate::common::rng(3));
        for i in 0..300u64 {
            let addr = i * 7 % config.capacity;
            let ops = vec![Op::Read(addr); k];
            a.begin(&ops, &mut ra).unwrap();
            b_oram.begin(&ops, &mut rb).unwrap();
            loop {
                let ids_a = a.fetch().unwrap().ids().to_vec();
                assert_eq!(ids_a, b_oram.fetch().unwrap().ids().to_vec());
                shroud_oram::BucketStore::read_path(&mut store, &mut a.fetch().unwrap()).unwrap();
                shroud_oram::BucketStore::read_path(&mut store_b, &mut b_oram.fetch().unwrap())
                    .unwrap();
                let (pa, pb) = (a.advance().unwrap(), b_oram.advance().unwrap());
                assert_eq!(pa, pb);
                if pa == shroud_oram::Progress::Done {
                    break;
                }
            }
            assert_eq!(a.result(0), b_oram.result(0));
            shroud_oram::BucketStore::write_path(&mut store, &a.write_back().unwrap()).unwrap();
            shroud_oram::BucketStore::write_path(&mut store_b, &b_oram.write_back().unwrap())
                .unwrap();
            assert_eq!(
                a.stash_lens().collect::<Vec<_>>(),
                b_oram.stash_lens().collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn snapshot_refused_mid_batch() {
    let (mut oram, _, mut rng) = crate::common::oram(Config::new(8, 16), 5);
    oram.begin(&[Op::Read(1)], &mut rng).unwrap();
    assert!(matches!(oram.snapshot(), Err(shroud_oram::Error::Busy)));
    assert!(matches!(
        oram.begin(&[Op::Read(1)], &mut rng),
        Err(shroud_oram::Error::Busy)
    ));
    oram.abort();
    assert!(oram.snapshot().is_ok());
}

/// N = 2^32 with the recursive map: O(1) creation time, O(1) server space, O(log N) client
/// memory, and it works.
#[test]
fn lazy_init_at_2_pow_32() {
    let config = Config {
        position_map: PositionMap::recursive(),
        ..Config::new(1 << 32, 64)
    };
    let mut rng = crate::common::rng(6);
    let start = Instant::now();
    let mut oram = Oram::new(config, Key::generate(&mut rng), &mut rng).unwrap();
    let created = start.elapsed();
    let mut store = MemoryStore::new();
    assert!(store.is_empty(), "creation writes nothing");
    let trees: Vec<_> = oram.trees().collect();
    assert_eq!(trees[0].height, 31);
    println!(
        "N=2^32: {} trees, client memory {} KiB, created in {created:?}",
        trees.len(),
        oram.memory() / 1024
    );
    assert!(created.as_millis() < 200, "creation took {created:?}");
    assert!(
        oram.memory() < 4 << 20,
        "client memory {} bytes",
        oram.memory()
    );
    let last = (1u64 << 32) - 1;
    for (i, a) in [0, 1, last, 1 << 31, 12_345_678_901 % (1 << 32)]
        .into_iter()
        .enumerate()
    {
        oram.run(&mut store, &[Op::Write(a, &[i as u8 + 1; 64])], &mut rng)
            .unwrap();
    }
    for (i, a) in [0, 1, last, 1 << 31, 12_345_678_901 % (1 << 32)]
        .into_iter()
        .enumerate()
    {
        oram.run(&mut store, &[Op::Read(a)], &mut rng).unwrap();
        assert_eq!(oram.result(0).unwrap(), &[i as u8 + 1; 64]);
    }
    oram.run(&mut store, &[Op::Read(77)], &mut rng).unwrap();
    assert_eq!(oram.result(0).unwrap(), &[0; 64]);
    // Server space grows with accesses, not with N.
    let per_access: usize = trees.iter().map(|t| t.fetched_levels()).sum();
    assert!(store.len() <= 11 * per_access);
}

/// At N = 2^24 and 1 KiB blocks, the recursive map keeps the client well under 64 MiB; the
/// flat map alone is 64 MiB.
#[test]
fn client_memory_at_2_pow_24() {
    let mut rng = crate::common::rng(7);
    let rec = Config {
        position_map: PositionMap::recursive(),
        ..Config::new(1 << 24, 1024)
    };
    let mut oram = Oram::new(rec, Key::generate(&mut rng), &mut rng).unwrap();
    let mut store = MemoryStore::new();
    for a in 0..200u64 {
        oram.run(
            &mut store,
            &[Op::Write(a * 65_537 % (1 << 24), &[a as u8; 1024])],
            &mut rng,
        )
        .unwrap();
    }
    let rec_mem = oram.memory();
    let flat = Oram::new(
        Config::new(1 << 24, 1024),
        Key::generate(&mut rng),
        &mut rng,
    )
    .unwrap();
    println!(
        "N=2^24, B=1KiB: recursive client memory {} KiB, flat {} KiB",
        rec_mem / 1024,
        flat.memory() / 1024
    );
    assert!(rec_mem < 64 << 20);
    assert!(flat.memory() >= 64 << 20);
}

/// Found by the `bucket` fuzz target: a snapshot whose config asks for gigabytes of stash.
/// It must be refused before anything is allocated for it.
#[test]
fn a_snapshot_that_asks_for_gigabytes_is_refused_first() {
    let bytes: &[u8] = &[
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x5a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xfe, 0x00,
        0x00, 0x3a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xa9,
        0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x41, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0xce, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x4c,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00,
    ];
    let r = Oram::restore(bytes, Key::from_bytes([3; 32]));
    assert!(matches!(
        r,
        Err(shroud_oram::Error::BadSnapshot(_) | shroud_oram::Error::InvalidConfig(_))
    ));
}

/// The stored sample of today's formats (snapshot version 2, whose config fixes the bucket
/// layout: version 2 buckets name their lineage): a key, a snapshot, and every bucket of a 16-block store where block `a` holds
/// sixteen bytes of `a`. Set SHROUD_WRITE_SAMPLES=1 to write it again (only with a new
/// format version, and a migration for the old one).
const SAMPLE: &str = "samples/store-v2.txt";

use data_encoding::HEXLOWER;

fn hex(bytes: &[u8]) -> String {
    HEXLOWER.encode(bytes)
}

fn unhex(s: &str) -> Vec<u8> {
    HEXLOWER.decode(s.as_bytes()).expect("hex")
}

#[test]
fn reads_the_stored_sample_of_snapshot_and_buckets_v2() {
    use shroud_oram::{BucketId, TreeGeometry};
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE);
    let config = Config::new(16, 16);
    let geometry = TreeGeometry::for_blocks(16, config.bucket_slots, 16, config.cached_levels);
    if std::env::var_os("SHROUD_WRITE_SAMPLES").is_some() {
        let mut rng = rand::rng();
        let key = [0x5a; 32];
        let mut oram = Oram::new(config, Key::from_bytes(key), &mut rng).unwrap();
        let mut store = MemoryStore::new();
        for a in 0..16u64 {
            oram.run(&mut store, &[Op::Write(a, &[a as u8; 16])], &mut rng)
                .unwrap();
        }
        let mut text = format!(
            "key {}\nsnapshot {}\n",
            hex(&key),
            hex(&oram.snapshot().unwrap())
        );
        for index in 0..geometry.bucket_count() {
            if let Some(b) = store.get(BucketId { tree: 0, index }) {
                text += &format!("bucket {index} {}\n", hex(b));
            }
        }
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let text = std::fs::read_to_string(&path).expect("the stored sample");
    let (mut key, mut snapshot, mut store) = (None, None, MemoryStore::new());
    for line in text.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        match parts.as_slice() {
            ["key", k] => key = Some(<[u8; 32]>::try_from(unhex(k)).unwrap()),
            ["snapshot", s] => snapshot = Some(unhex(s)),
            ["bucket", i, b] => {
                let index = i.parse().unwrap();
                store.insert(BucketId { tree: 0, index }, unhex(b));
            }
            _ => panic!("bad sample line {line}"),
        }
    }
    let mut rng = rand::rng();
    let mut oram = Oram::restore(&snapshot.unwrap(), Key::from_bytes(key.unwrap()))
        .expect("today's snapshot restores");
    for a in 0..16u64 {
        oram.run(&mut store, &[Op::Read(a)], &mut rng)
            .expect("today's buckets verify");
        assert_eq!(oram.result(0), Some(&[a as u8; 16][..]));
    }
}

/// Issue 12, finding 7: restoring one snapshot twice (a VM snapshot restored twice, a copied
/// state) and sealing the same bucket with the same counter uses two different subkeys: the
/// two lineages' write-backs agree on every bucket id and nonce counter and on nothing else.
#[test]
fn a_snapshot_restored_twice_seals_under_two_subkeys() {
    let config = Config::new(64, 16);
    let mut rng = crate::common::rng(11);
    let key = Key::generate(&mut rng);
    let mut oram = Oram::new(config, key.clone(), &mut rng).unwrap();
    let mut store = MemoryStore::new();
    oram.run(&mut store, &[Op::Write(3, &[9; 16])], &mut rng)
        .unwrap();
    let snap = oram.snapshot().unwrap();
    let mut a = Oram::restore(&snap, key.clone()).unwrap();
    let mut b = Oram::restore(&snap, key).unwrap();
    assert_ne!(a.lineage(), b.lineage());
    assert_ne!(a.lineage(), oram.lineage());
    let (mut sa, mut sb) = (store.clone(), store.clone());
    let (mut ra, mut rb) = (crate::common::rng(4), crate::common::rng(4));
    a.run(&mut sa, &[Op::Write(3, &[1; 16])], &mut ra).unwrap();
    b.run(&mut sb, &[Op::Write(3, &[1; 16])], &mut rb).unwrap();
    let changed: Vec<_> = sa
        .ids()
        .filter(|id| sa.get(*id) != store.get(*id))
        .collect();
    assert!(!changed.is_empty());
    for id in changed {
        let (x, y) = (
            sa.get(id).unwrap(),
            sb.get(id).expect("the same bucket written"),
        );
        assert_eq!(x[..32], a.lineage(), "each bucket names its lineage");
        assert_eq!(y[..32], b.lineage());
        assert_eq!(x[36..44], y[36..44], "the same nonce counter");
        assert_ne!(
            x[44..],
            y[44..],
            "different keys: different ciphertext and tag"
        );
    }
    // Each reads what the other wrote in its own lineage, and the original's buckets.
    a.run(&mut sa, &[Op::Read(3)], &mut ra).unwrap();
    assert_eq!(a.result(0), Some(&[1u8; 16][..]));
}

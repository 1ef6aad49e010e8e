//! The Redis Cluster engine (issue 15) against a real cluster of 3 masters and 3 replicas on
//! loopback: the same contract as sled, and what it promises when a master dies.

use std::time::Duration;

use shroud_proto::{Geometry, StoreId};
use shroud_storage::{
    Backend, Fetch, Put, RedisBackend, RedisOptions, SledBackend, StoreMeta, Want,
};
use shroud_testkit::redis_cluster::RedisCluster;

fn meta(seed: u8, bucket_len: u32, buckets: u64) -> StoreMeta {
    StoreMeta {
        cap_hash: [seed; 32],
        geometry: Geometry {
            bucket_len,
            buckets,
        },
    }
}

fn bucket(store: u8, index: u64, round: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| store ^ (index as u8).wrapping_mul(31) ^ round ^ (i as u8))
        .collect()
}

/// What every engine must do, the same way: the protocol code relies on each point.
fn contract(b: &dyn Backend) {
    let (a, c) = (StoreId([0xa1; 16]), StoreId([0xc3; 16]));
    let (ma, mc) = (meta(1, 64, 16), meta(2, 32, 8));
    assert_eq!(b.meta(&a).expect("meta"), None);
    assert!(b.create(&a, &ma).expect("create"));
    assert!(!b.create(&a, &mc).expect("create taken"), "an id is taken");
    assert!(b.create(&c, &mc).expect("create"));
    assert_eq!(
        b.metas(&[c, StoreId([9; 16]), a]).expect("metas"),
        vec![Some(mc), None, Some(ma)]
    );
    // A batch over two stores, with a bucket written twice (the later write wins).
    let (a0, a0b, a5, c7) = (
        bucket(1, 0, 0, 64),
        bucket(1, 0, 1, 64),
        bucket(1, 5, 0, 64),
        bucket(2, 7, 0, 32),
    );
    let puts = [
        Put {
            store: a,
            bucket: 0,
            data: &a0,
        },
        Put {
            store: c,
            bucket: 7,
            data: &c7,
        },
        Put {
            store: a,
            bucket: 5,
            data: &a5,
        },
        Put {
            store: a,
            bucket: 0,
            data: &a0b,
        },
    ];
    b.apply(&puts).expect("apply");
    b.flush().expect("flush");
    let mut out = Vec::new();
    assert!(b.read(&a, 0, &mut out).expect("read"));
    assert_eq!(out, a0b);
    assert!(!b.read(&a, 1, &mut out).expect("read"), "never written");
    assert!(b.contains(&c, 7).expect("contains"));
    assert!(!b.contains(&c, 6).expect("contains"));
    let mut x = vec![0xffu8; 8];
    assert!(b.xor_range(&a, 5, 16, &mut x).expect("xor"));
    let want: Vec<u8> = a5[16..24].iter().map(|v| v ^ 0xff).collect();
    assert_eq!(x, want);
    let fetched = b
        .fetch(&[
            Fetch {
                store: a,
                bucket: 5,
                want: Want::Bucket,
            },
            Fetch {
                store: a,
                bucket: 5,
                want: Want::Range {
                    offset: 32,
                    len: 32,
                },
            },
            Fetch {
                store: c,
                bucket: 7,
                want: Want::Exists,
            },
            Fetch {
                store: c,
                bucket: 1,
                want: Want::Exists,
            },
            Fetch {
                store: c,
                bucket: 1,
                want: Want::Bucket,
            },
            Fetch {
                store: c,
                bucket: 1,
                want: Want::Range { offset: 0, len: 8 },
            },
        ])
        .expect("fetch");
    assert_eq!(
        fetched,
        vec![
            Some(a5.clone()),
            Some(a5[32..].to_vec()),
            Some(vec![]),
            None,
            None,
            None
        ]
    );
    // Only buckets never written before count as new bytes; a bucket twice counts once.
    let (a6, a5b) = (bucket(1, 6, 0, 64), bucket(1, 5, 1, 64));
    let again = [
        Put {
            store: a,
            bucket: 6,
            data: &a6,
        },
        Put {
            store: a,
            bucket: 5,
            data: &a5b,
        },
        Put {
            store: a,
            bucket: 6,
            data: &a6,
        },
    ];
    assert_eq!(b.apply_new(&again).expect("apply"), 64);
    b.apply(&puts[2..3]).expect("apply");
    let usage = b.usage().expect("usage");
    assert_eq!(
        (usage.stores, usage.buckets, usage.bucket_bytes),
        (2, 4, 64 * 3 + 32)
    );
    // Deleting takes the buckets with the store: made again, it starts empty.
    assert_eq!(b.delete(&a).expect("delete"), 3 * 64);
    assert_eq!(b.meta(&a).expect("meta"), None);
    assert!(b.create(&a, &ma).expect("create again"));
    assert!(!b.contains(&a, 0).expect("contains"));
    assert!(b.delete(&a).expect("delete") == 0);
    // Outboxes: numbered as made, each with its owner; a number is taken once.
    assert!(b.outboxes().expect("outboxes").is_empty());
    assert!(b.outbox_create(0, &[5; 32]).expect("outbox"));
    assert!(b.outbox_create(1, &[6; 32]).expect("outbox"));
    assert!(!b.outbox_create(1, &[7; 32]).expect("outbox taken"));
    assert_eq!(
        b.outboxes().expect("outboxes"),
        vec![(0, [5; 32]), (1, [6; 32])]
    );
}

#[test]
fn the_cluster_engine_keeps_the_same_contract_as_sled() {
    let dir = tempfile::tempdir().expect("tempdir");
    contract(&SledBackend::open(dir.path()).expect("sled"));
    let cluster = RedisCluster::start(3, 1).expect("cluster");
    let redis = RedisBackend::connect(&cluster.url(), RedisOptions::default()).expect("connect");
    contract(&redis);
    // A second engine on the same cluster (another storage server) sees it all.
    let other = RedisBackend::connect(&cluster.url(), RedisOptions::default()).expect("connect");
    assert_eq!(other.usage().expect("usage").stores, 1);
    assert_eq!(other.outboxes().expect("outboxes").len(), 2);
    assert!(other.disk_bytes().expect("disk") > 0, "the masters' AOF");
    // Two servers, one store: a batch that read the store before the other server wrote
    // it is refused (applied late, it would take the store back in time).
    let s = StoreId([0x5e; 16]);
    assert!(redis.create(&s, &meta(9, 16, 4)).expect("create"));
    let (old, new) = (vec![1u8; 16], vec![2u8; 16]);
    redis.metas(&[s]).expect("the slow server reads");
    other.metas(&[s]).expect("the other reads");
    let put = |d| {
        [Put {
            store: s,
            bucket: 0,
            data: d,
        }]
    };
    other.apply(&put(&new)).expect("the other writes");
    let err = redis.apply(&put(&old)).expect_err("the stale batch");
    assert!(
        matches!(err, shroud_storage::BackendError::Conflict(id) if id == s),
        "{err}"
    );
    let mut out = Vec::new();
    assert!(redis.read(&s, 0, &mut out).expect("read"));
    assert_eq!(out, new, "the newer write stays");
    // Read again, the slow server writes in turn.
    redis.metas(&[s]).expect("read again");
    redis.apply(&put(&old)).expect("a fresh batch");
}

/// The buckets of `store` after a round, one value per bucket: `Some(round)` if every
/// bucket holds that round's bytes (a store is never torn).
fn round_of(b: &dyn Backend, store: StoreId, seed: u8, buckets: u64, len: usize) -> Option<u8> {
    let mut rounds = Vec::new();
    for i in 0..buckets {
        let mut out = Vec::new();
        assert!(b.read(&store, i, &mut out).expect("read"), "bucket {i}");
        let round = (0..=255u8).find(|&r| out == bucket(seed, i, r, len));
        rounds.push(round.expect("a bucket of some round"));
    }
    rounds.dedup();
    (rounds.len() == 1).then(|| rounds[0])
}

/// A batch over two stores on two masters, with the second master killed: the first
/// store's part is applied (whole), the second's not at all, and the batch fails. Each
/// client reads and writes only its own store, sees its own store whole, and re-sends its
/// writes after the failure (they are idempotent): that is why per-store atomicity is all
/// the clients need (docs/redis-cluster.md).
#[test]
fn a_master_killed_between_two_stores_writes_leaves_each_store_whole() {
    let mut cluster = RedisCluster::start(3, 1).expect("cluster");
    let key = |s: &StoreId| format!("{{{}}}", data_encoding::HEXLOWER.encode(&s.0));
    let a = StoreId([1; 16]);
    let master_a = cluster.master_of(&key(&a)).expect("master");
    let c = (2..=255u8)
        .map(|i| StoreId([i; 16]))
        .find(|s| cluster.master_of(&key(s)).expect("master") != master_a)
        .expect("a store on another master");
    let master_c = cluster.master_of(&key(&c)).expect("master");
    let options = RedisOptions {
        // Shorter than a failover: the batch gives up while the second master is down.
        retry_for: Duration::from_millis(300),
        ..RedisOptions::default()
    };
    let b = RedisBackend::connect(&cluster.url(), options).expect("connect");
    let (n, len) = (16u64, 256usize);
    for (store, seed) in [(a, 1), (c, 2)] {
        assert!(
            b.create(&store, &meta(seed, len as u32, n))
                .expect("create")
        );
    }
    let write = |round: u8| -> Vec<(StoreId, u64, Vec<u8>)> {
        [(a, 1u8), (c, 2u8)]
            .iter()
            .flat_map(|&(s, seed)| (0..n).map(move |i| (s, i, bucket(seed, i, round, len))))
            .collect()
    };
    let apply = |b: &RedisBackend, round: u8| {
        let data = write(round);
        let puts: Vec<Put<'_>> = data
            .iter()
            .map(|(store, bucket, d)| Put {
                store: *store,
                bucket: *bucket,
                data: d,
            })
            .collect();
        b.apply(&puts)
    };
    apply(&b, 0).expect("round 0");
    cluster.kill(master_c).expect("kill -9");
    assert!(apply(&b, 1).is_err(), "the second store's master is down");
    cluster
        .wait_failover(master_c, 3, Duration::from_secs(30))
        .expect("failover");
    assert_eq!(
        round_of(&b, a, 1, n, len),
        Some(1),
        "the first store's part is applied whole"
    );
    assert_eq!(
        round_of(&b, c, 2, n, len),
        Some(0),
        "the second store's part not at all"
    );
    // The killed node comes back as a replica; the clients' re-sent writes complete.
    cluster.restart(master_c, 1).expect("restart");
    apply(&b, 1).expect("round 1 again");
    assert_eq!(round_of(&b, a, 1, n, len), Some(1));
    assert_eq!(round_of(&b, c, 2, n, len), Some(1));
}

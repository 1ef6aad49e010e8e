//! The Redis Cluster engine (issue 15) against a real cluster of 3 masters and 3 replicas on
//! loopback: the same contract as sled, and what it promises when a master dies.

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
    let usage = b.usage().expect("usage");
    assert_eq!(
        (usage.stores, usage.buckets, usage.bucket_bytes),
        (2, 3, 64 * 2 + 32)
    );
    // Deleting takes the buckets with the store: made again, it starts empty.
    assert_eq!(b.delete(&a).expect("delete"), 2 * 64);
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
}

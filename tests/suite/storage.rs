//! The storage server end to end, in process, on 127.0.0.1 with port 0: ORAM workloads
//! checked against a model, capabilities, batch semantics, the transcript, and hostile input
//! while an honest client keeps working.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{Engine, TestServer};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shroud_client::direct::DirectStore;
use shroud_net::conn::{ConnError, Connection};
use shroud_net::transport::ClientTls;
use shroud_oram::{Config as OramConfig, Key, Op, Oram, PositionMap};
use shroud_proto::{
    Batch, BatchOp, Capability, ErrorCode, Geometry, Grant, Hello, Limits, ReadResult, Request,
    Response, decode, encode,
};
use shroud_storage::{Config, Transcript};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use shroud_testkit::fixtures::grant;

async fn connect(addr: std::net::SocketAddr) -> Connection {
    Connection::connect(addr, &ClientTls::Plain, Limits::default())
        .await
        .expect("connect")
}

/// Random ORAM traffic against a real server, checked against a `HashMap`.
async fn oram_workload(addr: std::net::SocketAddr, config: OramConfig, ops: usize, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut oram = Oram::new(config, Key::generate(&mut rng), &mut rng).unwrap();
    let grants = DirectStore::new_grants(&oram, &mut rng);
    let mut remote = DirectStore::create(connect(addr).await, &oram, grants)
        .await
        .unwrap();
    let b = config.block_size as usize;
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    for i in 0..ops {
        let a = rng.random_range(0..config.capacity.min(64));
        if rng.random_bool(0.5) {
            let d: Vec<u8> = (0..b).map(|j| (i + j) as u8).collect();
            let k = config.max_batch as usize;
            let mut batch = vec![Op::Write(a, &d)];
            batch.resize(k, Op::Dummy);
            remote.run(&mut oram, &batch, &mut rng).await.unwrap();
            model.insert(a, d);
        } else {
            remote
                .run(&mut oram, &[Op::Read(a)], &mut rng)
                .await
                .unwrap();
            let want = model.get(&a).cloned().unwrap_or_else(|| vec![0; b]);
            assert_eq!(
                oram.result(0).unwrap(),
                want.as_slice(),
                "read {a} after {i} ops"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oram_workloads_agree_with_model() {
    oram_workloads_agree_with_model_on(&Engine::Sled).await;
}

async fn oram_workloads_agree_with_model_on(engine: &Engine) {
    let server =
        TestServer::start_on(engine, shroud_testkit::fixtures::storage_config(), false).await;
    let configs = [
        OramConfig {
            cached_levels: 2,
            ..OramConfig::new(1000, 64)
        },
        OramConfig {
            position_map: PositionMap::Recursive {
                pos_block: 16,
                flat_limit: 8,
            },
            ..OramConfig::new(300, 32)
        },
        OramConfig {
            max_batch: 3,
            ..OramConfig::new(50, 16)
        },
    ];
    let stores: u64 = configs.iter().map(|c| c.trees().len() as u64).sum();
    let tasks: Vec<_> = configs
        .into_iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(oram_workload(server.addr, c, 150, i as u64)))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let stats = connect(server.addr).await.stats().await.unwrap();
    assert!(stats.batches > 0 && stats.flushes > 0 && stats.flushes <= stats.batches);
    assert_eq!(stats.stores, stores);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_guard_stores() {
    capabilities_guard_stores_on(&Engine::Sled).await;
}

async fn capabilities_guard_stores_on(engine: &Engine) {
    let server =
        TestServer::start_on(engine, shroud_testkit::fixtures::storage_config(), false).await;
    let geometry = Geometry {
        bucket_len: 8,
        buckets: 4,
    };
    let mut owner = connect(server.addr).await;
    owner.create_store(&grant(1, 1), geometry).await.unwrap();
    owner
        .batch(Batch {
            grants: vec![grant(1, 1)],
            ops: vec![BatchOp::Write {
                grant: 0,
                bucket: 0,
                data: vec![7; 8],
            }],
        })
        .await
        .unwrap();
    let mut other = connect(server.addr).await;
    let refused =
        |r: Result<_, ConnError>| matches!(r, Err(ConnError::Refused(ErrorCode::Unauthorized)));
    // Wrong capability and missing store: the same answer.
    let read = |g: Grant| Batch {
        grants: vec![g],
        ops: vec![BatchOp::Read {
            grant: 0,
            bucket: 0,
        }],
    };
    assert!(refused(other.batch(read(grant(1, 2))).await));
    assert!(refused(other.batch(read(grant(9, 1))).await));
    assert!(refused(
        other
            .batch(Batch {
                grants: vec![grant(1, 2)],
                ops: vec![BatchOp::Write {
                    grant: 0,
                    bucket: 0,
                    data: vec![0; 8]
                }]
            })
            .await
    ));
    assert!(refused(
        other
            .delete_store(&grant(1, 2))
            .await
            .map(|_| Vec::<ReadResult>::new())
    ));
    assert!(
        refused(
            other
                .create_store(&grant(1, 3), geometry)
                .await
                .map(|_| Vec::<ReadResult>::new())
        ),
        "ids are not reusable"
    );
    // A batch naming a good and a bad grant (as a proxy's, pooling clients, may): the bad
    // grant is refused alone, none of its operations run, and the good one's all do.
    let mixed = || Batch {
        grants: vec![grant(1, 1), grant(1, 2)],
        ops: vec![
            BatchOp::Write {
                grant: 0,
                bucket: 1,
                data: vec![1; 8],
            },
            BatchOp::Write {
                grant: 1,
                bucket: 2,
                data: vec![2; 8],
            },
            BatchOp::Read {
                grant: 1,
                bucket: 0,
            },
            BatchOp::Read {
                grant: 0,
                bucket: 1,
            },
        ],
    };
    let reply = other.batch_per_grant(mixed()).await.unwrap();
    assert_eq!(reply.refused, vec![(1, ErrorCode::Unauthorized)]);
    assert_eq!(
        reply.reads,
        vec![ReadResult {
            present: true,
            data: vec![1; 8]
        }],
        "the good grant's read, which sees its own write"
    );
    // Through the single-client call, any refusal is the call's.
    assert!(refused(other.batch(mixed()).await));
    let r = owner.batch(read(grant(1, 1))).await.unwrap();
    assert_eq!(
        r[0],
        ReadResult {
            present: true,
            data: vec![7; 8]
        }
    );
    let r = owner
        .batch(Batch {
            grants: vec![grant(1, 1)],
            ops: vec![BatchOp::Read {
                grant: 0,
                bucket: 2,
            }],
        })
        .await
        .unwrap();
    assert_eq!(
        r[0],
        ReadResult {
            present: false,
            data: vec![0; 8]
        },
        "nothing of the refused grant landed"
    );
    owner.delete_store(&grant(1, 1)).await.unwrap();
    assert!(refused(owner.batch(read(grant(1, 1))).await));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_are_ordered_and_all_or_nothing() {
    batches_are_ordered_and_all_or_nothing_on(&Engine::Sled).await;
}

async fn batches_are_ordered_and_all_or_nothing_on(engine: &Engine) {
    let server =
        TestServer::start_on(engine, shroud_testkit::fixtures::storage_config(), false).await;
    let mut c = connect(server.addr).await;
    c.create_store(
        &grant(2, 2),
        Geometry {
            bucket_len: 4,
            buckets: 8,
        },
    )
    .await
    .unwrap();
    let g = || vec![grant(2, 2)];
    let r = c
        .batch(Batch {
            grants: g(),
            ops: vec![
                BatchOp::Read {
                    grant: 0,
                    bucket: 3,
                },
                BatchOp::Write {
                    grant: 0,
                    bucket: 3,
                    data: vec![1; 4],
                },
                BatchOp::Read {
                    grant: 0,
                    bucket: 3,
                },
                BatchOp::Write {
                    grant: 0,
                    bucket: 3,
                    data: vec![2; 4],
                },
                BatchOp::Read {
                    grant: 0,
                    bucket: 3,
                },
            ],
        })
        .await
        .unwrap();
    assert_eq!(
        r.iter().map(|x| (x.present, x.data[0])).collect::<Vec<_>>(),
        vec![(false, 0), (true, 1), (true, 2)]
    );
    // One bad op refuses the whole batch.
    for bad in [
        BatchOp::Write {
            grant: 0,
            bucket: 8,
            data: vec![0; 4],
        },
        BatchOp::Write {
            grant: 0,
            bucket: 1,
            data: vec![0; 5],
        },
        BatchOp::Read {
            grant: 1,
            bucket: 0,
        },
    ] {
        let res = c
            .batch(Batch {
                grants: g(),
                ops: vec![
                    BatchOp::Write {
                        grant: 0,
                        bucket: 0,
                        data: vec![9; 4],
                    },
                    bad,
                ],
            })
            .await;
        assert!(matches!(res, Err(ConnError::Refused(_))), "{res:?}");
    }
    let r = c
        .batch(Batch {
            grants: g(),
            ops: vec![BatchOp::Read {
                grant: 0,
                bucket: 0,
            }],
        })
        .await
        .unwrap();
    assert!(!r[0].present);
    assert!(matches!(
        c.create_store(
            &grant(3, 3),
            Geometry {
                bucket_len: 0,
                buckets: 8
            }
        )
        .await,
        Err(ConnError::Refused(ErrorCode::BadGeometry))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transcript_holds_exactly_the_requests() {
    transcript_holds_exactly_the_requests_on(&Engine::Sled).await;
}

async fn transcript_holds_exactly_the_requests_on(engine: &Engine) {
    let server =
        TestServer::start_on(engine, shroud_testkit::fixtures::storage_config(), true).await;
    let mut c = connect(server.addr).await;
    c.create_store(
        &grant(4, 4),
        Geometry {
            bucket_len: 16,
            buckets: 8,
        },
    )
    .await
    .unwrap();
    c.batch(Batch {
        grants: vec![grant(4, 4)],
        ops: vec![
            BatchOp::Write {
                grant: 0,
                bucket: 5,
                data: vec![1; 16],
            },
            BatchOp::Read {
                grant: 0,
                bucket: 2,
            },
        ],
    })
    .await
    .unwrap();
    let _ = c
        .batch(Batch {
            grants: vec![grant(4, 5)],
            ops: vec![BatchOp::Read {
                grant: 0,
                bucket: 2,
            }],
        })
        .await;
    c.stats().await.unwrap();
    c.delete_store(&grant(4, 4)).await.unwrap();
    let path = server.transcript.clone().unwrap();
    drop(c);
    let _dir = server.stop().await;
    let lines = Transcript::read(&path).unwrap();
    use shroud_storage::Op;
    let ops: Vec<Op> = lines.iter().map(|e| e.op).collect();
    assert_eq!(
        ops,
        vec![Op::Create, Op::Batch, Op::Batch, Op::Stats, Op::Delete]
    );
    let store = grant(4, 4).store.to_string();
    assert!(
        lines
            .iter()
            .filter(|e| e.op != shroud_storage::Op::Stats)
            .all(|e| e.stores == vec![store.clone()])
    );
    assert_eq!(lines[1].writes, vec![(0, 5, 16)]);
    assert_eq!(lines[1].reads, vec![(0, 2)]);
    assert_eq!(lines[1].error, None);
    assert_eq!(lines[2].error, None);
    assert_eq!(
        lines[2].refused,
        vec![(0, shroud_proto::ErrorCode::Unauthorized)],
        "the wrong grant, refused on its own"
    );
    assert!(
        lines
            .iter()
            .all(|e| e.request_bytes > 0 && e.response_bytes > 0 && e.conn == lines[0].conn)
    );
    // Never a capability: the transcript does not contain the secret's bytes.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(
        !text.contains(
            &Capability([4; 32])
                .0
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        )
    );
}

/// Writes one frame: a 4-byte big-endian length, then the body.
async fn raw_frame(s: &mut TcpStream, body: &[u8]) {
    s.write_all(&(body.len() as u32).to_be_bytes())
        .await
        .unwrap();
    s.write_all(body).await.unwrap();
}

/// Reads one frame's response, if the server sends one before closing.
async fn raw_response(s: &mut TcpStream) -> Option<Response> {
    let mut len = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut len))
        .await
        .ok()?
        .ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    decode(&body, Limits::default()).ok()
}

async fn closed(s: &mut TcpStream) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn hello(version: u32) -> Vec<u8> {
    encode(
        &Request::Hello(Hello {
            version,
            ..Hello::current()
        }),
        Limits::default(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_is_refused_while_honest_clients_work() {
    hostile_input_is_refused_while_honest_clients_work_on(&Engine::Sled).await;
}

async fn hostile_input_is_refused_while_honest_clients_work_on(engine: &Engine) {
    let config = Config {
        idle_timeout: Duration::from_millis(500),
        hello_timeout: Duration::from_millis(500),
        ..shroud_testkit::fixtures::storage_config()
    };
    let server = TestServer::start_on(engine, config, false).await;
    let addr = server.addr;
    let honest = tokio::spawn(oram_workload(
        addr,
        OramConfig {
            cached_levels: 1,
            ..OramConfig::new(200, 32)
        },
        300,
        77,
    ));
    let mut rng = StdRng::seed_from_u64(5);
    for round in 0..20 {
        // Random bytes as the first frame.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let junk: Vec<u8> = (0..rng.random_range(1..300))
            .map(|_| rng.random())
            .collect();
        raw_frame(&mut s, &junk).await;
        assert_eq!(
            raw_response(&mut s).await,
            Some(Response::Error(ErrorCode::Malformed)),
            "round {round}"
        );
        assert!(closed(&mut s).await);
        // Random bytes after a good hello.
        let mut s = TcpStream::connect(addr).await.unwrap();
        raw_frame(&mut s, &hello(shroud_proto::PROTOCOL_VERSION)).await;
        assert!(matches!(
            raw_response(&mut s).await,
            Some(Response::Hello(..))
        ));
        raw_frame(&mut s, &junk).await;
        assert_eq!(
            raw_response(&mut s).await,
            Some(Response::Error(ErrorCode::Malformed))
        );
        assert!(closed(&mut s).await);
    }
    // An oversized length prefix.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert_eq!(
        raw_response(&mut s).await,
        Some(Response::Error(ErrorCode::TooLarge))
    );
    assert!(closed(&mut s).await);
    // A hello of the wrong version, and a request before any hello.
    let mut s = TcpStream::connect(addr).await.unwrap();
    raw_frame(&mut s, &hello(999)).await;
    assert_eq!(
        raw_response(&mut s).await,
        Some(Response::Error(ErrorCode::UnsupportedVersion))
    );
    assert!(closed(&mut s).await);
    let mut s = TcpStream::connect(addr).await.unwrap();
    raw_frame(&mut s, &encode(&Request::Stats, Limits::default()).unwrap()).await;
    assert_eq!(
        raw_response(&mut s).await,
        Some(Response::Error(ErrorCode::HelloRequired))
    );
    // A second hello is out of order.
    let mut s = TcpStream::connect(addr).await.unwrap();
    raw_frame(&mut s, &hello(shroud_proto::PROTOCOL_VERSION)).await;
    raw_response(&mut s).await;
    raw_frame(&mut s, &hello(shroud_proto::PROTOCOL_VERSION)).await;
    assert_eq!(
        raw_response(&mut s).await,
        Some(Response::Error(ErrorCode::UnexpectedHello))
    );
    assert!(closed(&mut s).await);
    // A truncated frame, then silence: the slow-loris client is dropped on the timeout.
    let mut s = TcpStream::connect(addr).await.unwrap();
    raw_frame(&mut s, &hello(shroud_proto::PROTOCOL_VERSION)).await;
    raw_response(&mut s).await;
    s.write_all(&100u32.to_be_bytes()).await.unwrap();
    s.write_all(&[0u8; 10]).await.unwrap();
    assert_eq!(
        raw_response(&mut s).await,
        Some(Response::Error(ErrorCode::Timeout))
    );
    assert!(closed(&mut s).await);
    // A truncated frame and a hang-up.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&50u32.to_be_bytes()).await.unwrap();
    s.write_all(&[1u8; 20]).await.unwrap();
    drop(s);
    honest.await.unwrap();
    let stats = connect(addr).await.stats().await.unwrap();
    assert!(stats.rejected >= 45, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_is_typed() {
    let server = TestServer::start(
        Config {
            max_connections: 2,
            ..shroud_testkit::fixtures::storage_config()
        },
        false,
    )
    .await;
    let _a = connect(server.addr).await;
    let _b = connect(server.addr).await;
    let third = Connection::connect(server.addr, &ClientTls::Plain, Limits::default()).await;
    assert!(
        matches!(
            third,
            Err(ConnError::Refused(ErrorCode::TooManyConnections))
        ),
        "{:?}",
        third.err()
    );
}

/// What the operator sees of ORAM traffic: every read batch of a store has one size, every
/// write-back batch another, and so do their replies, whatever the accesses were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oram_traffic_has_constant_shape() {
    let server = TestServer::start(shroud_testkit::fixtures::storage_config(), true).await;
    oram_workload(
        server.addr,
        OramConfig {
            cached_levels: 1,
            ..OramConfig::new(500, 64)
        },
        200,
        9,
    )
    .await;
    let path = server.transcript.clone().unwrap();
    let _dir = server.stop().await;
    let lines = Transcript::read(&path).unwrap();
    let batches: Vec<_> = lines
        .iter()
        .filter(|e| e.op == shroud_storage::Op::Batch)
        .collect();
    assert_eq!(
        batches.len(),
        400,
        "one read batch and one write batch per access"
    );
    let shape = |e: &&shroud_storage::Entry| {
        (
            e.reads.len(),
            e.writes.len(),
            e.request_bytes,
            e.response_bytes,
        )
    };
    let reads: std::collections::HashSet<_> = batches
        .iter()
        .filter(|e| e.writes.is_empty())
        .map(shape)
        .collect();
    let writes: std::collections::HashSet<_> = batches
        .iter()
        .filter(|e| !e.writes.is_empty())
        .map(shape)
        .collect();
    assert_eq!(reads.len(), 1, "{reads:?}");
    assert_eq!(writes.len(), 1, "{writes:?}");
}

/// Ring ORAM (issue 14) against the real server: slot reads, XORed online reads and whole
/// bucket rewrites, checked against a `HashMap`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_oram_over_storage_agrees_with_a_model() {
    ring_oram_over_storage_agrees_with_a_model_on(&Engine::Sled).await;
}

async fn ring_oram_over_storage_agrees_with_a_model_on(engine: &Engine) {
    use shroud_client::direct::DirectRingStore;
    use shroud_oram::ring::{RingConfig, RingOram};
    let server =
        TestServer::start_on(engine, shroud_testkit::fixtures::storage_config(), false).await;
    let mut rng = StdRng::seed_from_u64(14);
    let config = RingConfig {
        cached_levels: 1,
        max_batch: 3,
        ..RingConfig::new(200, 32)
    };
    let mut oram = RingOram::new(config, Key::generate(&mut rng), &mut rng).unwrap();
    let mut remote = DirectRingStore::create(
        connect(server.addr).await,
        &oram,
        shroud_client::random_grant(&mut rng),
    )
    .await
    .unwrap();
    let mut model: HashMap<u64, Vec<u8>> = HashMap::new();
    for i in 0..600usize {
        let a = rng.random_range(0..config.capacity);
        if rng.random_bool(0.5) {
            let d: Vec<u8> = (0..32).map(|j| (i + j) as u8).collect();
            remote
                .run(&mut oram, Op::Write(a, &d), &mut rng)
                .await
                .unwrap();
            model.insert(a, d);
        } else if i % 3 == 0 {
            // A batch of three: the block, another, and the block again.
            let b = rng.random_range(0..config.capacity);
            let got = remote
                .run_batch(
                    &mut oram,
                    &[Op::Read(a), Op::Read(b), Op::Read(a)],
                    &mut rng,
                )
                .await
                .unwrap();
            for (x, g) in [a, b, a].iter().zip(&got) {
                let want = model.get(x).cloned().unwrap_or_else(|| vec![0; 32]);
                assert_eq!(g, &want, "batched read {x} after {i} ops");
            }
        } else {
            let got = remote.run(&mut oram, Op::Read(a), &mut rng).await.unwrap();
            let want = model.get(&a).cloned().unwrap_or_else(|| vec![0; 32]);
            assert_eq!(got, want, "read {a} after {i} ops");
        }
    }
    let stats = connect(server.addr).await.stats().await.unwrap();
    assert!(stats.buckets_written > 0, "evictions rewrote buckets");
}

/// Slot reads: one by one or XORed, a write earlier in the batch seen, a bucket never
/// written answered as absent zeros; a slot outside its bucket, a zero slot length and an
/// answer past the frame refused with a typed error, the connection still serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_reads_are_checked_and_bounded() {
    slot_reads_are_checked_and_bounded_on(&Engine::Sled).await;
}

async fn slot_reads_are_checked_and_bounded_on(engine: &Engine) {
    use shroud_proto::SlotRef;
    let server =
        TestServer::start_on(engine, shroud_testkit::fixtures::storage_config(), false).await;
    let geometry = Geometry {
        bucket_len: 40,
        buckets: 4,
    };
    let g = grant(3, 3);
    let mut c = connect(server.addr).await;
    c.create_store(&g, geometry).await.unwrap();
    let bucket: Vec<u8> = (0..40).collect();
    let slot = |bucket, slot| SlotRef { bucket, slot };
    let reads = |xor, slot_len, slots| BatchOp::ReadSlots {
        grant: 0,
        slot_len,
        xor,
        slots,
    };
    let got = c
        .batch(Batch {
            grants: vec![g.clone()],
            ops: vec![
                BatchOp::Write {
                    grant: 0,
                    bucket: 1,
                    data: bucket.clone(),
                },
                reads(false, 8, vec![slot(1, 0), slot(1, 4), slot(2, 1)]),
                reads(true, 8, vec![slot(1, 1), slot(1, 2), slot(3, 0)]),
            ],
        })
        .await
        .unwrap();
    assert_eq!(got.len(), 4);
    assert_eq!((got[0].present, &got[0].data[..]), (true, &bucket[0..8]));
    assert_eq!(&got[1].data[..], &bucket[32..40]);
    assert_eq!((got[2].present, &got[2].data[..]), (false, &[0u8; 8][..]));
    let xor: Vec<u8> = (8..16).zip(16..24).map(|(a, b)| a ^ b).collect();
    assert_eq!((got[3].present, &got[3].data), (true, &xor));
    // From the stored bucket, in a later batch.
    let later = c
        .batch(Batch {
            grants: vec![g.clone()],
            ops: vec![reads(true, 20, vec![slot(1, 0), slot(1, 1)])],
        })
        .await
        .unwrap();
    let xor: Vec<u8> = (0..20).zip(20..40).map(|(a, b)| a ^ b).collect();
    assert_eq!(later[0].data, xor);
    // Outside the bucket, a zero length, and more answer than a frame holds.
    for (op, code) in [
        (
            reads(false, 8, vec![slot(1, 5)]),
            ErrorCode::BucketOutOfRange,
        ),
        (
            reads(true, 8, vec![slot(4, 0)]),
            ErrorCode::BucketOutOfRange,
        ),
        (
            reads(true, 0, vec![slot(1, 0)]),
            ErrorCode::BucketOutOfRange,
        ),
        (
            reads(true, 40, vec![slot(1, 0); 1_800_000]),
            ErrorCode::TooLarge,
        ),
    ] {
        let refused = c
            .batch(Batch {
                grants: vec![g.clone()],
                ops: vec![op],
            })
            .await;
        assert!(
            matches!(refused, Err(ConnError::Refused(c)) if c == code),
            "{refused:?}"
        );
    }
    let again = c
        .batch(Batch {
            grants: vec![g],
            ops: vec![reads(false, 40, vec![slot(1, 0)])],
        })
        .await
        .unwrap();
    assert_eq!(again[0].data, bucket);
}

/// The tests above on a real Redis Cluster (3 masters, 3 replicas; issue 15), one after
/// another on one cluster, emptied between them. Batches over several stores are atomic per
/// store there, not as a whole; none of these tests depends on the difference.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_tests_on_a_redis_cluster() {
    let cluster = shroud_testkit::redis_cluster::RedisCluster::start(3, 1).expect("cluster");
    let engine = Engine::Redis(cluster.url());
    oram_workloads_agree_with_model_on(&engine).await;
    cluster.flush_all().expect("flush");
    capabilities_guard_stores_on(&engine).await;
    cluster.flush_all().expect("flush");
    batches_are_ordered_and_all_or_nothing_on(&engine).await;
    cluster.flush_all().expect("flush");
    transcript_holds_exactly_the_requests_on(&engine).await;
    cluster.flush_all().expect("flush");
    hostile_input_is_refused_while_honest_clients_work_on(&engine).await;
    cluster.flush_all().expect("flush");
    ring_oram_over_storage_agrees_with_a_model_on(&engine).await;
    cluster.flush_all().expect("flush");
    slot_reads_are_checked_and_bounded_on(&engine).await;
}

//! The stored samples of today's wire format (protocol version [`crate::PROTOCOL_VERSION`]):
//! one frame of every kind the client, the proxy and storage exchange, byte for byte, in
//! `samples/frames-v6.txt`. A change to any message shows up here first, and must come with
//! a new protocol version (which the hello checks) instead of silent breakage. Set
//! SHROUD_WRITE_SAMPLES=1 to write the file again.

use std::fmt::Write as _;

use crate::board::PirBytes;
use crate::proxy::{ClientMsg, ProxyMsg, Reads, RoundDone, RoundFrame, Slot, SlotDone, SlotWrite};
use crate::sealed::Sealed;
use crate::{
    Batch, BatchOp, BatchReply, Capability, Difficulty, ErrorCode, Geometry, Grant, Hello, Limits,
    ReadResult, Request, Response, Shape, StoreId, Work, decode, encode,
};

const SAMPLE: &str = "samples/frames-v6.txt";

fn grant() -> Grant {
    Grant {
        store: StoreId([1; 16]),
        capability: Capability([2; 32]),
    }
}

/// One message of every kind, with small distinct contents.
fn client_messages() -> Vec<(&'static str, ClientMsg)> {
    vec![
        ("client-hello", ClientMsg::Hello(Hello::current())),
        ("register", ClientMsg::Register(grant(), Work(0x0102_0304))),
        (
            "slot",
            ClientMsg::Slot(Slot {
                seq: 9,
                grant: grant(),
                write: true,
                writes: vec![SlotWrite {
                    bucket: 3,
                    data: vec![4; 5],
                }],
                reads: Reads::Buckets(vec![6, 7]),
            }),
        ),
        (
            "ring-slot",
            ClientMsg::Slot(Slot {
                seq: 10,
                grant: grant(),
                write: false,
                writes: Vec::new(),
                reads: Reads::Slots {
                    online: vec![crate::SlotRef { bucket: 5, slot: 6 }],
                    each: vec![crate::SlotRef { bucket: 7, slot: 8 }],
                },
            }),
        ),
        (
            "client-reader-key",
            ClientMsg::ReaderKey(PirBytes(vec![8; 5])),
        ),
        (
            "client-round",
            ClientMsg::Round(RoundFrame {
                seq: 10,
                round: 3,
                write: Sealed(vec![9; 3]),
                queries: vec![PirBytes(vec![8; 4])],
            }),
        ),
        ("client-outbox", ClientMsg::Outbox(Sealed(vec![7; 3]))),
        ("client-stats", ClientMsg::Stats),
    ]
}

fn proxy_messages() -> Vec<(&'static str, ProxyMsg)> {
    let shape = Shape::new(64, 32, 1)
        .and_then(|s| s.with_schedule(2, 100))
        .expect("shape");
    // The Ring ORAM defaults of the day the sample was stored (the shape's fields are the
    // format, not the defaults).
    let ring = Shape::with_ring(shroud_oram::ring::RingConfig {
        z: 16,
        s: 32,
        a: 20,
        cached_levels: 1,
        ..shroud_oram::ring::RingConfig::new(64, 32)
    })
    .and_then(|s| s.with_schedule(2, 100))
    .expect("ring shape");
    vec![
        (
            "proxy-hello",
            ProxyMsg::Hello(Hello::current(), shape, Difficulty(22)),
        ),
        (
            "proxy-hello-ring",
            ProxyMsg::Hello(Hello::current(), ring, Difficulty(22)),
        ),
        ("registered", ProxyMsg::Registered),
        (
            "done",
            ProxyMsg::Done(SlotDone {
                seq: 9,
                epoch: 11,
                reads: vec![ReadResult {
                    present: true,
                    data: vec![12; 4],
                }],
            }),
        ),
        ("failed", ProxyMsg::Failed(9, ErrorCode::Unavailable)),
        ("reader-kept", ProxyMsg::ReaderKept),
        (
            "round-done",
            ProxyMsg::RoundDone(RoundDone {
                seq: 10,
                round: 11,
                written: Sealed(vec![13; 2]),
                answers: vec![PirBytes(vec![14; 3])],
            }),
        ),
        (
            "round-failed",
            ProxyMsg::RoundFailed(10, ErrorCode::OutOfRound),
        ),
        ("proxy-outbox", ProxyMsg::Outbox(Sealed(vec![12; 3]))),
        ("proxy-error", ProxyMsg::Error(ErrorCode::TooManySlots)),
    ]
}

fn storage_requests() -> Vec<(&'static str, Request)> {
    vec![
        ("storage-hello", Request::Hello(Hello::current())),
        (
            "create",
            Request::CreateStore {
                store: StoreId([1; 16]),
                capability: Capability([2; 32]),
                geometry: Geometry {
                    bucket_len: 16,
                    buckets: 31,
                },
                work: Work(0x0506_0708),
            },
        ),
        (
            "batch",
            Request::Batch(Batch {
                grants: vec![grant()],
                ops: vec![
                    BatchOp::Write {
                        grant: 0,
                        bucket: 1,
                        data: vec![2; 3],
                    },
                    BatchOp::Read {
                        grant: 0,
                        bucket: 4,
                    },
                    BatchOp::ReadSlots {
                        grant: 0,
                        slot_len: 5,
                        xor: true,
                        slots: vec![
                            crate::SlotRef { bucket: 6, slot: 7 },
                            crate::SlotRef { bucket: 8, slot: 9 },
                        ],
                    },
                ],
            }),
        ),
        ("outbox", Request::Outbox(Sealed(vec![7; 5]))),
        (
            "reader-key",
            Request::ReaderKey {
                session: [8; 16],
                key: crate::board::PirBytes(vec![9; 3]),
            },
        ),
        ("forget-reader", Request::ForgetReader([10; 16])),
        ("round", Request::Round(vec![Sealed(vec![11; 2])])),
        (
            "answer",
            Request::Answer(vec![crate::board::Query {
                session: [12; 16],
                query: crate::board::PirBytes(vec![13; 2]),
            }]),
        ),
    ]
}

fn storage_responses() -> Vec<(&'static str, Response)> {
    vec![
        (
            "storage-hello-reply",
            Response::Hello(Hello::current(), Difficulty(22)),
        ),
        ("created", Response::Created),
        (
            "batch-reply",
            Response::Batch(BatchReply {
                refused: vec![(1, ErrorCode::Unauthorized)],
                reads: vec![ReadResult {
                    present: false,
                    data: vec![0; 4],
                }],
            }),
        ),
        ("outbox-reply", Response::Outbox(Sealed(vec![9; 4]))),
        ("kept", Response::Kept),
        ("forgotten", Response::Forgotten),
        ("round-reply", Response::Round(vec![Sealed(vec![14; 2])])),
        (
            "answers",
            Response::Answers(vec![crate::board::PirBytes(vec![15; 3])]),
        ),
        ("storage-error", Response::Error(ErrorCode::Unauthorized)),
    ]
}

fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// Every sample as `name hex` lines, in a fixed order.
fn render() -> String {
    let limits = Limits::default();
    let mut lines = String::new();
    let mut add = |name: &str, bytes: Vec<u8>| {
        let _ = writeln!(lines, "{name} {}", hex(&bytes));
    };
    for (n, m) in client_messages() {
        add(n, encode(&m, limits).expect("encode"));
    }
    for (n, m) in proxy_messages() {
        add(n, encode(&m, limits).expect("encode"));
    }
    for (n, m) in storage_requests() {
        add(n, encode(&m, limits).expect("encode"));
    }
    for (n, m) in storage_responses() {
        add(n, encode(&m, limits).expect("encode"));
    }
    lines
}

fn stored() -> Vec<(String, Vec<u8>)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(SAMPLE);
    if std::env::var_os("SHROUD_WRITE_SAMPLES").is_some() {
        std::fs::write(&path, render()).expect("write the sample");
    }
    let text = std::fs::read_to_string(&path).expect("the stored sample");
    text.lines()
        .map(|l| {
            let (name, h) = l.split_once(' ').expect("name hex");
            let bytes = data_encoding::HEXLOWER.decode(h.as_bytes()).expect("hex");
            (name.to_string(), bytes)
        })
        .collect()
}

fn sample(name: &str) -> Vec<u8> {
    stored()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no sample {name}"))
        .1
}

#[test]
fn todays_frames_decode_from_the_stored_sample() {
    let limits = Limits::default();
    for (n, m) in client_messages() {
        assert_eq!(decode::<ClientMsg>(&sample(n), limits).expect(n), m, "{n}");
    }
    for (n, m) in proxy_messages() {
        assert_eq!(decode::<ProxyMsg>(&sample(n), limits).expect(n), m, "{n}");
    }
    for (n, m) in storage_requests() {
        assert_eq!(decode::<Request>(&sample(n), limits).expect(n), m, "{n}");
    }
    for (n, m) in storage_responses() {
        assert_eq!(decode::<Response>(&sample(n), limits).expect(n), m, "{n}");
    }
}

#[test]
fn todays_frames_encode_to_the_stored_sample() {
    let want: String = stored()
        .iter()
        .map(|(n, b)| format!("{n} {}\n", hex(b)))
        .collect();
    assert_eq!(render(), want);
}

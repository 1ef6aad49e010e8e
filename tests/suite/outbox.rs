//! Issue 13: outboxes on storage's mail board, made through a sealed request that only
//! storage opens, bound to their owner's capability from the first request (the rule of
//! issue 12, finding 6), paid for with work, and kept across a restart.

use crate::common::TestServer;
use shroud_net::conn::{ConnError, Connection};
use shroud_net::transport::ClientTls;
use shroud_proto::board::{
    OUTBOX_INFO, OUTBOX_REPLY_LEN, OUTBOX_REQUEST_LEN, OutboxReply, OutboxRequest, OutboxStatus,
};
use shroud_proto::routing::RoutingKey;
use shroud_proto::sealed::Sealed;
use shroud_proto::sealed::seal_request;
use shroud_proto::{Capability, ErrorCode, Limits, Request, Response, StoreId, Work};

async fn connect(addr: std::net::SocketAddr) -> Connection {
    Connection::connect(addr, &ClientTls::Plain, Limits::default())
        .await
        .expect("connect")
}

/// Asks for `capability`'s outbox with `work`; storage's opened answer.
async fn ask(
    c: &mut Connection,
    storage: &[u8; 32],
    capability: Capability,
    work: Work,
) -> OutboxReply {
    let req = OutboxRequest { capability, work };
    let (sealed, responder) =
        seal_request(storage, OUTBOX_INFO, &req.to_bytes(), &mut rand::rng()).expect("seal");
    assert_eq!(sealed.len(), OUTBOX_REQUEST_LEN);
    match c
        .call(&Request::Outbox(Sealed(sealed)))
        .await
        .expect("outbox")
    {
        Response::Outbox(s) => {
            assert_eq!(s.0.len(), OUTBOX_REPLY_LEN);
            OutboxReply::from_bytes(&responder.open(&s.0).expect("opens")).expect("reply")
        }
        other => panic!("unexpected {other:?}"),
    }
}

fn paid(capability: &Capability) -> Work {
    Work::find(
        &StoreId::of(capability),
        shroud_testkit::fixtures::storage_config()
            .new_stores
            .difficulty,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outboxes_are_made_once_per_capability_paid_for_and_kept() {
    let dir = tempfile::tempdir().expect("dir");
    let key = RoutingKey::generate(&mut rand::rng());
    let secret = key.secret();
    let storage = key.public();
    let server =
        TestServer::start_in_with_routing(dir, shroud_testkit::fixtures::storage_config(), key)
            .await;
    let mut c = connect(server.addr).await;
    let (alice, bob) = (Capability([1; 32]), Capability([2; 32]));
    let a = ask(&mut c, &storage, alice.clone(), paid(&alice)).await;
    assert_eq!((a.status, a.outbox), (OutboxStatus::Ok, 0));
    // Unpaid: refused; paid: the next number.
    let b = ask(&mut c, &storage, bob.clone(), Work(0)).await;
    assert_eq!(b.status, OutboxStatus::NeedsWork);
    let b = ask(&mut c, &storage, bob.clone(), paid(&bob)).await;
    assert_eq!((b.status, b.outbox), (OutboxStatus::Ok, 1));
    // Asking again (a client retrying after a crash) finds the same outbox, without work.
    let again = ask(&mut c, &storage, alice.clone(), Work(0)).await;
    assert_eq!((again.status, again.outbox), (OutboxStatus::Ok, 0));
    // A request sealed to another key, or of the wrong size: random bytes of the reply's
    // size, or a typed refusal that closes the connection.
    let stranger = RoutingKey::generate(&mut rand::rng()).public();
    let (sealed, _) = seal_request(
        &stranger,
        OUTBOX_INFO,
        &OutboxRequest {
            capability: alice.clone(),
            work: Work(0),
        }
        .to_bytes(),
        &mut rand::rng(),
    )
    .expect("seal");
    match c
        .call(&Request::Outbox(Sealed(sealed)))
        .await
        .expect("noise")
    {
        Response::Outbox(s) => assert_eq!(s.0.len(), OUTBOX_REPLY_LEN),
        other => panic!("unexpected {other:?}"),
    }
    match c.call(&Request::Outbox(Sealed(vec![0; 7]))).await {
        Err(ConnError::Refused(ErrorCode::WrongShape)) => {}
        other => panic!("a short request: {other:?}"),
    }
    // A restart keeps every outbox and its owner.
    let dir = server.stop().await;
    let server = TestServer::start_in_with_routing(
        dir,
        shroud_testkit::fixtures::storage_config(),
        RoutingKey::from_secret(&secret).expect("key"),
    )
    .await;
    let mut c = connect(server.addr).await;
    let b = ask(&mut c, &storage, bob, Work(0)).await;
    assert_eq!((b.status, b.outbox), (OutboxStatus::Ok, 1));
    let carol = Capability([3; 32]);
    let n = ask(&mut c, &storage, carol.clone(), paid(&carol)).await;
    assert_eq!((n.status, n.outbox), (OutboxStatus::Ok, 2));
    server.stop().await;
}

/// A whole round at storage, with the real cryptography on both ends: Alice writes a row
/// for Bob into her outbox (and dummies in its other rows), Bob's PIR query for that row
/// comes back, decodes, verifies under Alice's outbox key and opens under their pair key.
/// A write under a capability that is not the outbox's is refused; a query of an unknown
/// session gets random bytes of an answer's size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_carries_a_row_from_outbox_to_reader_by_pir() {
    use shroud_client::mailbox::row::{self, Opened, OutboxKey, PairKey, Place};
    use shroud_pir::{Geometry, Reader};
    use shroud_proto::board::{OutboxWrite, PirBytes, Query, WRITE_INFO, WriteStatus};
    const ROWS: u64 = 256;
    const PER: u64 = 4;
    let key = RoutingKey::generate(&mut rand::rng());
    let storage = key.public();
    let mut config = shroud_testkit::fixtures::storage_config();
    config.board = (ROWS, PER as u32);
    let server =
        TestServer::start_in_with_routing(tempfile::tempdir().expect("dir"), config, key).await;
    let mut c = connect(server.addr).await;
    let (alice, bob) = (Capability([4; 32]), Capability([5; 32]));
    let a = ask(&mut c, &storage, alice.clone(), paid(&alice))
        .await
        .outbox;
    let b = ask(&mut c, &storage, bob.clone(), paid(&bob)).await.outbox;
    assert_ne!(a, b);
    // Bob's reader key, once per connection.
    let geometry = Geometry::new(ROWS).expect("geometry");
    let reader = Reader::new(geometry, &mut rand::rng());
    let session = [9u8; 16];
    let kept = c
        .call(&Request::ReaderKey {
            session,
            key: PirBytes(reader.public_key().to_vec()),
        })
        .await
        .expect("key");
    assert_eq!(kept, Response::Kept);
    // Alice's round: a row for Bob first, dummies after.
    let mut rng = rand::rng();
    let (alice_outbox, alice_to_bob) = (OutboxKey::generate(&mut rng), PairKey::generate(&mut rng));
    let round = 0;
    let mut chunk = [0u8; row::CHUNK_LEN];
    chunk[..5].copy_from_slice(b"hello");
    let mut rows = Vec::new();
    for j in 0..PER {
        let place = Place {
            round,
            row: a * PER + j,
        };
        let r = if j == 0 {
            row::seal(&alice_outbox, &alice_to_bob, place, &chunk, &mut rng)
        } else {
            row::seal_dummy(&alice_outbox, place, &mut rng)
        };
        rows.extend_from_slice(&r[..]);
    }
    let write = |outbox: u64, capability: &Capability, rows: &[u8]| {
        let w = OutboxWrite {
            outbox,
            capability: capability.clone(),
            rows: rows.to_vec(),
        };
        seal_request(&storage, WRITE_INFO, &w.to_bytes(), &mut rand::rng()).expect("seal")
    };
    let (honest, honest_reply) = write(a, &alice, &rows);
    let (stolen, stolen_reply) = write(b, &alice, &rows);
    let statuses = match c
        .call(&Request::Round(vec![Sealed(honest), Sealed(stolen)]))
        .await
        .expect("round")
    {
        Response::Round(s) => s,
        other => panic!("unexpected {other:?}"),
    };
    let status = |s: &Sealed, r: &shroud_proto::sealed::Responder| {
        WriteStatus::from_byte(r.open(&s.0).expect("opens")[0])
    };
    assert_eq!(
        status(&statuses[0], &honest_reply),
        Some(WriteStatus::Written)
    );
    assert_eq!(
        status(&statuses[1], &stolen_reply),
        Some(WriteStatus::Unauthorized)
    );
    // Bob reads Alice's first row by PIR; an unknown session gets noise.
    let wanted = a * PER;
    let query = PirBytes(reader.query(wanted).expect("query"));
    let answers = match c
        .call(&Request::Answer(vec![
            Query {
                session,
                query: query.clone(),
            },
            Query {
                session: [1; 16],
                query,
            },
        ]))
        .await
        .expect("answer")
    {
        Response::Answers(a) => a,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(answers[0].0.len(), geometry.answer_len());
    assert_eq!(answers[1].0.len(), geometry.answer_len());
    // Past its allowance of answers this round, a session gets noise, at no cost.
    let many: Vec<Query> = (0..shroud_storage::delivery::MAX_QUERIES_PER_ROUND)
        .map(|_| Query {
            session,
            query: PirBytes(reader.query(wanted).expect("query")),
        })
        .collect();
    let extra = match c.call(&Request::Answer(many)).await.expect("answers") {
        Response::Answers(a) => a,
        other => panic!("unexpected {other:?}"),
    };
    let last = extra.last().expect("answers");
    let decoded = reader.decode(wanted, &last.0).expect("decode");
    assert!(
        row::open(
            &alice_outbox,
            &alice_to_bob,
            Place { round, row: wanted },
            &decoded
        )
        .is_err(),
        "the ninth answer of a round is noise"
    );
    let fetched = reader.decode(wanted, &answers[0].0).expect("decode");
    let place = Place { round, row: wanted };
    match row::open(&alice_outbox, &alice_to_bob, place, &fetched).expect("authentic") {
        Opened::Mine(got) => assert_eq!(&got[..5], b"hello"),
        Opened::NotMine => panic!("the row was for Bob"),
    }
    server.stop().await;
}

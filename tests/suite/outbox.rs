//! Issue 13: outboxes on storage's mail board, made through a sealed request that only
//! storage opens, bound to their owner's capability from the first request (the rule of
//! issue 12, finding 6), paid for with work, and kept across a restart.

use crate::common::TestServer;
use shroud_net::conn::{ConnError, Connection};
use shroud_net::transport::ClientTls;
use shroud_proto::board::{
    OUTBOX_INFO, OUTBOX_REPLY_LEN, OUTBOX_REQUEST_LEN, OutboxReply, OutboxRequest, OutboxStatus,
};
use shroud_proto::mail::Sealed;
use shroud_proto::routing::RoutingKey;
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

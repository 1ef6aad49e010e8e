//! Storage's inbox queues (the mailbox's delivery layer, issue #6): envelopes sealed by one
//! client, filed by storage from their routing headers, drained by the recipient, deleted only
//! once acknowledged, bounded with backpressure, and durable across a restart.

use crate::common::TestServer;
use shroud_client::mailbox::envelope::{CHUNK_LEN, ENVELOPE_LEN};
use shroud_client::mailbox::{Account, Identity, Reassembly, ReplayWindow, envelope};
use shroud_net::conn::{ConnError, Connection};
use shroud_net::transport::ClientTls;
use shroud_proto::routing::RoutingKey;
use shroud_proto::{DepositStatus, Envelope, ErrorCode, Geometry, Grant, Limits};

async fn connect(addr: std::net::SocketAddr) -> Connection {
    Connection::connect(addr, &ClientTls::Plain, Limits::default())
        .await
        .expect("connect")
}

/// A fresh account: its identity and its inbox's grant.
fn account() -> (Identity, Grant) {
    let a = Account::generate(&mut rand::rng());
    (a.identity().expect("identity"), a.inbox().expect("inbox"))
}

/// Creates `grant`'s inbox, holding at most `limit` envelopes.
async fn open_inbox(c: &mut Connection, grant: &Grant, limit: u64) -> Grant {
    let grant = grant.clone();
    c.create_store(
        &grant,
        Geometry {
            bucket_len: ENVELOPE_LEN as u32,
            buckets: limit,
        },
    )
    .await
    .expect("inbox");
    grant
}

fn seal(
    from: &Identity,
    to: &Identity,
    storage: &[u8; 32],
    message: &[u8],
    counter: &mut u64,
    id: u64,
) -> Vec<Envelope> {
    envelope::seal_message(
        from,
        &to.address(),
        storage,
        message,
        id,
        counter,
        &mut rand::rng(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_are_filed_drained_and_deleted_only_when_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let key = RoutingKey::generate(&mut rand::rng());
    let secret = key.secret();
    let server =
        TestServer::start_in_with_routing(dir, shroud_testkit::fixtures::storage_config(), key)
            .await;
    let mut rng = rand::rng();
    let ((alice, _), (bob, bob_grant)) = (account(), account());
    let storage_pk = RoutingKey::from_secret(&secret).unwrap().public();
    let mut c = connect(server.addr).await;
    assert_eq!(c.routing_key().await.unwrap(), storage_pk);
    let bob_inbox = open_inbox(&mut c, &bob_grant, 64).await;
    // A short and a long (chunked) message, plus a dummy and garbage.
    let mut ctr = 0;
    let long: Vec<u8> = (0..3 * CHUNK_LEN as u32 + 7)
        .map(|i| (i % 253) as u8)
        .collect();
    let mut envs = seal(&alice, &bob, &storage_pk, b"hello bob", &mut ctr, 1);
    envs.extend(seal(&alice, &bob, &storage_pk, &long, &mut ctr, 2));
    let decoy = envelope::Decoy::generate(&mut rng);
    envs.push(Envelope(
        envelope::dummy(&decoy, &storage_pk, &mut rng).unwrap().0,
    ));
    envs.push(Envelope(vec![7u8; ENVELOPE_LEN]));
    let status = c.deposit(envs).await.unwrap();
    assert_eq!(&status[..5], &[DepositStatus::Delivered; 5]);
    assert_eq!(status[5], DepositStatus::Dropped);
    assert_eq!(status[6], DepositStatus::Unreadable);
    // Draining without acknowledging returns the same envelopes again: a crash between
    // fetching and storing loses nothing.
    let first = c.drain(&bob_inbox, 0, 8).await.unwrap();
    assert_eq!(first.iter().filter(|d| d.present).count(), 5);
    assert!(
        first.iter().all(|d| d.envelope.0.len() == ENVELOPE_LEN),
        "padded to one size"
    );
    let again = c.drain(&bob_inbox, 0, 8).await.unwrap();
    assert_eq!(first, again);
    // Bob opens, checks replays, reassembles.
    let (mut window, mut re, mut got) =
        (ReplayWindow::default(), Reassembly::default(), Vec::new());
    for d in first.iter().filter(|d| d.present) {
        let (from, h, body) = envelope::open(&d.envelope.0, &bob, &[alice.address()]).unwrap();
        window.accept(&from, h.counter).unwrap();
        if let Some(m) = re.add(&from, h, body) {
            got.push(m);
        }
    }
    assert_eq!(got, vec![b"hello bob".to_vec(), long]);
    // Acknowledged envelopes are gone; others cannot drain Bob's inbox.
    let last = first
        .iter()
        .filter(|d| d.present)
        .map(|d| d.seq)
        .max()
        .unwrap();
    assert!(
        c.drain(&bob_inbox, last, 8)
            .await
            .unwrap()
            .iter()
            .all(|d| !d.present)
    );
    let mut thief = bob_inbox.clone();
    thief.capability = shroud_proto::Capability([0; 32]);
    assert!(matches!(
        c.drain(&thief, 0, 8).await,
        Err(ConnError::Refused(ErrorCode::Unauthorized))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_inboxes_push_back_and_queues_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let key = RoutingKey::generate(&mut rand::rng());
    let secret = key.secret();
    let server =
        TestServer::start_in_with_routing(dir, shroud_testkit::fixtures::storage_config(), key)
            .await;
    let storage_pk = RoutingKey::from_secret(&secret).unwrap().public();
    let ((alice, _), (carol, carol_grant)) = (account(), account());
    let mut c = connect(server.addr).await;
    let inbox = open_inbox(&mut c, &carol_grant, 3).await;
    let mut ctr = 0;
    let envs: Vec<Envelope> = (0..5)
        .flat_map(|i| seal(&alice, &carol, &storage_pk, b"x", &mut ctr, i))
        .collect();
    let status = c.deposit(envs.clone()).await.unwrap();
    assert_eq!(
        status,
        vec![
            DepositStatus::Delivered,
            DepositStatus::Delivered,
            DepositStatus::Delivered,
            DepositStatus::Full,
            DepositStatus::Full
        ]
    );
    drop(c);
    // Restart on the same database: the queue is still there.
    let dir = server.stop().await;
    let server = TestServer::start_in_with_routing(
        dir,
        shroud_testkit::fixtures::storage_config(),
        RoutingKey::from_secret(&secret).unwrap(),
    )
    .await;
    let mut c = connect(server.addr).await;
    let drained = c.drain(&inbox, 0, 4).await.unwrap();
    assert_eq!(drained.iter().filter(|d| d.present).count(), 3);
    // After an acknowledgement there is room again: the sender retries the refused ones.
    let acked = drained[1].seq;
    let status = c.deposit(envs[3..].to_vec()).await.unwrap();
    assert_eq!(status, vec![DepositStatus::Full, DepositStatus::Full]);
    let rest = c.drain(&inbox, acked, 4).await.unwrap();
    assert_eq!(rest.iter().filter(|d| d.present).count(), 1);
    let status = c.deposit(envs[3..].to_vec()).await.unwrap();
    assert_eq!(
        status,
        vec![DepositStatus::Delivered, DepositStatus::Delivered]
    );
}

/// A drain of `grant`'s inbox through storage's mail path (as the proxy carries it): its
/// status, once opened by the requester.
async fn sealed_drain(
    c: &mut Connection,
    storage_pk: &[u8; 32],
    grant: &Grant,
) -> shroud_proto::mail::DrainStatus {
    use shroud_proto::mail::{DRAIN_INFO, DrainReply, DrainRequest, MailBatch, Sealed};
    // With the work a new inbox needs: what is refused is the capability, not the price.
    let req = DrainRequest {
        grant: grant.clone(),
        ack_through: 0,
        work: shroud_proto::Work::find(&grant.store, c.difficulty()),
    };
    let (sealed, responder) = shroud_proto::sealed::seal_request(
        storage_pk,
        DRAIN_INFO,
        &req.to_bytes(),
        &mut rand::rng(),
    )
    .expect("seal");
    let reply = c
        .mail(MailBatch {
            envelope_len: ENVELOPE_LEN as u32,
            drain_max: 2,
            deposits: Vec::new(),
            drains: vec![Sealed(sealed)],
        })
        .await
        .expect("mail");
    let plain = responder.open(&reply.drained[0].0).expect("open");
    DrainReply::from_bytes(&plain, 2, ENVELOPE_LEN as u32)
        .expect("reply")
        .status
}

/// Issue 12, finding 6: an inbox id is public (in its owner's address), and an inbox was
/// created by whoever drained it first. A squatter who knows the address can no longer
/// create it (directly or by a drain), nor drain or delete it once its owner has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squatter_who_knows_the_address_cannot_take_the_inbox() {
    use shroud_proto::mail::DrainStatus;
    let dir = tempfile::tempdir().unwrap();
    let key = RoutingKey::generate(&mut rand::rng());
    let storage_pk = key.public();
    let server =
        TestServer::start_in_with_routing(dir, shroud_testkit::fixtures::storage_config(), key)
            .await;
    let mut c = connect(server.addr).await;
    let ((alice, _), (bob, bob_grant)) = (account(), account());
    // What the squatter knows: Bob's address, so his inbox id; any capability of its own.
    let inbox = shroud_proto::StoreId(bob.address().inbox);
    let mut squat = shroud_client::random_grant(&mut rand::rng());
    squat.store = inbox;
    let geometry = Geometry {
        bucket_len: ENVELOPE_LEN as u32,
        buckets: 8,
    };
    assert!(matches!(
        c.create_store(&squat, geometry).await,
        Err(ConnError::Refused(ErrorCode::Unauthorized))
    ));
    assert_eq!(
        sealed_drain(&mut c, &storage_pk, &squat).await,
        DrainStatus::Unauthorized
    );
    // Nothing was created: mail to Bob is not filed anywhere yet.
    let mut ctr = 0;
    let env = seal(&alice, &bob, &storage_pk, b"hi", &mut ctr, 1);
    assert_eq!(c.deposit(env).await.unwrap(), vec![DepositStatus::NoInbox]);
    // Bob's first drain creates it; then the squatter can neither drain nor delete it.
    assert_eq!(
        sealed_drain(&mut c, &storage_pk, &bob_grant).await,
        DrainStatus::Ok
    );
    let env = seal(&alice, &bob, &storage_pk, b"hi", &mut ctr, 2);
    assert_eq!(
        c.deposit(env).await.unwrap(),
        vec![DepositStatus::Delivered]
    );
    assert_eq!(
        sealed_drain(&mut c, &storage_pk, &squat).await,
        DrainStatus::Unauthorized
    );
    assert!(matches!(
        c.drain(&squat, 0, 2).await,
        Err(ConnError::Refused(ErrorCode::Unauthorized))
    ));
    assert!(matches!(
        c.delete_store(&squat).await,
        Err(ConnError::Refused(ErrorCode::Unauthorized))
    ));
    let got = c.drain(&bob_grant, 0, 2).await.unwrap();
    assert_eq!(
        got.iter().filter(|d| d.present).count(),
        1,
        "Bob's mail is his"
    );
}

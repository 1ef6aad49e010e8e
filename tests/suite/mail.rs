//! The mailbox end to end (issue #6): real TLS storage and proxy servers on 127.0.0.1, clients
//! running the fixed schedule with D deposits and one drain per epoch, and a real agent
//! process killed with SIGKILL.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::common::{Reaped, Stack};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis_protocol::resp2::types::OwnedFrame;
use shroud_client::durable::{Durable, Unlock};
use shroud_client::mailbox::envelope::CHUNK_LEN;
use shroud_client::mailbox::{Account, Address, Mailbox};
use shroud_client::{Client, Kv};
use shroud_oram::Key;
use shroud_proto::Shape;
use shroud_proto::StoreId;
use shroud_storage::backend::QueueOp;
use shroud_storage::{Backend, BackendError, Put, SledBackend, StoreMeta, Usage};

/// Epochs of 40 ms: a client's frames leave 2/5 into the epoch, and the rest must cover the
/// proxy's round trip to storage even on a loaded 2-core machine.
fn shape() -> Shape {
    Shape::new(1024, 512, 3)
        .expect("shape")
        .with_schedule(2, 40)
        .expect("shape")
        .with_mail(2, 4)
}

type User = shroud_testkit::stack::MailUser;

async fn user_with(stack: &Stack, account: Account, rng: &mut StdRng) -> User {
    stack.mail_user_with(account, rng).await.expect("user")
}

async fn user(stack: &Stack, rng: &mut StdRng) -> User {
    stack.mail_user(rng).await.expect("user")
}

fn stat(u: &User, f: impl Fn(&shroud_client::ClientStats) -> u64) -> u64 {
    f(u.stats())
}

async fn befriend(users: &[(&str, &User)]) {
    shroud_testkit::stack::befriend(users)
        .await
        .expect("contacts");
}

/// The messages `u` received from `from`, once there are `n` (or panics after `secs`).
async fn wait_incoming(u: &Mailbox, from: &Address, n: usize, secs: u64) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let got: Vec<Vec<u8>> = u
            .conversation(from)
            .await
            .expect("history")
            .into_iter()
            .filter(|r| !r.outgoing)
            .map(|r| r.body)
            .collect();
        if got.len() >= n || Instant::now() > deadline {
            assert_eq!(got.len(), n, "messages received");
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn long_message(seed: u8) -> Vec<u8> {
    (0..3 * CHUNK_LEN + 17)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_users_exchange_short_and_long_messages() {
    let stack = Stack::start(shape()).await.expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let alice = user(&stack, &mut rng).await;
    let bob = user(&stack, &mut rng).await;
    let carol = user(&stack, &mut rng).await;
    befriend(&[("alice", &alice), ("bob", &bob), ("carol", &carol)]).await;
    let long = long_message(7);
    // Sends return once the envelopes are queued in the recipient's inbox.
    let (a, b, c) = tokio::join!(
        async {
            alice.mail.send(&bob.address, b"hi bob").await?;
            alice.mail.send(&carol.address, &long).await
        },
        bob.mail.send(&carol.address, b"hi carol, bob here"),
        carol.mail.send(&alice.address, b"hello alice"),
    );
    a.expect("alice sends");
    b.expect("bob sends");
    c.expect("carol sends");
    assert_eq!(
        wait_incoming(&bob.mail, &alice.address, 1, 30).await,
        vec![b"hi bob".to_vec()]
    );
    assert_eq!(
        wait_incoming(&carol.mail, &alice.address, 1, 30).await,
        vec![long.clone()]
    );
    assert_eq!(
        wait_incoming(&carol.mail, &bob.address, 1, 30).await,
        vec![b"hi carol, bob here".to_vec()]
    );
    assert_eq!(
        wait_incoming(&alice.mail, &carol.address, 1, 30).await,
        vec![b"hello alice".to_vec()]
    );
    // The senders' histories hold what they sent.
    let sent = alice.mail.conversation(&carol.address).await.unwrap();
    assert!(sent.iter().any(|r| r.outgoing && r.body == long));
    let with_carol = carol.mail.conversation(&alice.address).await.unwrap();
    assert_eq!(with_carol.len(), 2, "carol: one in, one out");
    // A stranger's mail is refused: Dave is nobody's contact.
    let dave = user(&stack, &mut rng).await;
    dave.mail.add_contact("bob", bob.address).await.unwrap();
    dave.mail.send(&bob.address, b"spam").await.expect("queued");
    let deadline = Instant::now() + Duration::from_secs(20);
    while stat(&bob, |s| s.mail_rejected.load(Relaxed)) == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(stat(&bob, |s| s.mail_rejected.load(Relaxed)), 1);
    assert!(
        bob.mail
            .conversation(&dave.address)
            .await
            .unwrap()
            .is_empty()
    );
    for u in [alice, bob, carol, dave] {
        u.stop().await;
    }
}

/// One run: Alice writes to `target` (1 = Bob, 2 = Carol) for a while; returns storage's view
/// and the proxy's (slot and mail frame sizes, mail slots per epoch).
async fn oblivious_run(
    target: usize,
) -> (
    BTreeMap<shroud_lab::audit::sizes::RequestSize, usize>,
    [u64; 4],
) {
    let stack = Stack::start(shape()).await.expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let alice = user(&stack, &mut rng).await;
    let bob = user(&stack, &mut rng).await;
    let carol = user(&stack, &mut rng).await;
    befriend(&[("alice", &alice), ("bob", &bob), ("carol", &carol)]).await;
    let to = [&alice, &bob, &carol][target];
    alice.mail.send(&to.address, b"short").await.unwrap();
    alice
        .mail
        .send(&to.address, &long_message(1))
        .await
        .unwrap();
    wait_incoming(&to.mail, &alice.address, 2, 30).await;
    let stats = shroud::cmd::proxy::stats(stack.proxy, &stack.tls.client().unwrap())
        .await
        .expect("proxy stats");
    for u in [alice, bob, carol] {
        u.stop().await;
    }
    let view = shroud_lab::audit::sizes::storage(&stack.transcript, 3).expect("transcript");
    (view, shroud_lab::audit::sizes::proxy(&stats))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_to_bob_and_alice_to_carol_look_the_same() {
    let (to_bob, proxy_bob) = oblivious_run(1).await;
    let (to_carol, proxy_carol) = oblivious_run(2).await;
    println!("storage, Alice->Bob:   {to_bob:?}");
    println!("storage, Alice->Carol: {to_carol:?}");
    println!("proxy (slot min/max, mail min/max): {proxy_bob:?} vs {proxy_carol:?}");
    // Every steady epoch has one batch and one mail request, of one size each, the same in
    // both runs; the proxy saw one slot size and one mail size, the same in both.
    for op in [shroud_storage::Op::Batch, shroud_storage::Op::Mail] {
        let (b, _, b_edges) = shroud_lab::audit::sizes::usual(&to_bob, op).expect("requests");
        let (c, _, c_edges) = shroud_lab::audit::sizes::usual(&to_carol, op).expect("requests");
        assert_eq!(b, c, "{op}");
        assert!(
            b_edges <= 2 && c_edges <= 2,
            "{op}: {b_edges} and {c_edges} odd epochs"
        );
    }
    assert_eq!(proxy_bob, proxy_carol);
    assert_eq!(proxy_bob[0], proxy_bob[1]);
    assert_eq!(proxy_bob[2], proxy_bob[3]);
}

/// What a hostile storage server does to the envelopes it returns.
const HONEST: u8 = 0;
const ALTER: u8 = 1;
const REPLAY: u8 = 2;
const REORDER: u8 = 3;
const DROP: u8 = 4;

/// A backend that lies about inbox contents on demand.
struct Hostile {
    inner: SledBackend,
    mode: Arc<AtomicU8>,
    seen: Mutex<Vec<Vec<u8>>>,
}

impl Backend for Hostile {
    fn meta(&self, store: &StoreId) -> Result<Option<StoreMeta>, BackendError> {
        self.inner.meta(store)
    }
    fn create(&self, store: &StoreId, meta: &StoreMeta) -> Result<bool, BackendError> {
        self.inner.create(store, meta)
    }
    fn delete(&self, store: &StoreId) -> Result<u64, BackendError> {
        self.inner.delete(store)
    }
    fn read(&self, store: &StoreId, bucket: u64, out: &mut Vec<u8>) -> Result<bool, BackendError> {
        self.inner.read(store, bucket, out)
    }
    fn contains(&self, store: &StoreId, bucket: u64) -> Result<bool, BackendError> {
        self.inner.contains(store, bucket)
    }
    fn apply(&self, puts: &[Put<'_>]) -> Result<(), BackendError> {
        self.inner.apply(puts)
    }
    fn queue_state(&self, store: &StoreId) -> Result<(u64, u64), BackendError> {
        self.inner.queue_state(store)
    }
    fn queue_read(
        &self,
        store: &StoreId,
        from: u64,
        max: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, BackendError> {
        let mut v = self.inner.queue_read(store, from, max)?;
        match self.mode.load(Relaxed) {
            ALTER => {
                for (_, e) in v.iter_mut() {
                    e[300] ^= 0x40;
                }
            }
            REPLAY => {
                // Serve an envelope delivered (and acknowledged) earlier in place of a new one.
                if let (Some(old), Some(first)) = (self.seen.lock().first().cloned(), v.first_mut())
                {
                    first.1 = old;
                }
            }
            REORDER => v.reverse(),
            _ => {}
        }
        self.seen.lock().extend(v.iter().map(|(_, e)| e.clone()));
        Ok(v)
    }
    fn outbox_create(&self, index: u64, cap_hash: &[u8; 32]) -> Result<bool, BackendError> {
        self.inner.outbox_create(index, cap_hash)
    }
    fn outboxes(&self) -> Result<Vec<(u64, [u8; 32])>, BackendError> {
        self.inner.outboxes()
    }
    fn apply_queue(&self, ops: &[QueueOp<'_>]) -> Result<(), BackendError> {
        // Dropping: say "delivered", file nothing, and keep the numbering seamless.
        let pushes: Vec<StoreId> = ops
            .iter()
            .filter_map(|op| match op {
                QueueOp::Push { store, .. } => Some(*store),
                _ => None,
            })
            .collect();
        if self.mode.load(Relaxed) != DROP || pushes.len() != 1 {
            return self.inner.apply_queue(ops);
        }
        let kept: Vec<QueueOp<'_>> = ops
            .iter()
            .filter(|op| !matches!(op, QueueOp::Push { .. }))
            .map(|op| match *op {
                QueueOp::SetState { store, head, tail } if store == pushes[0] => {
                    QueueOp::SetState {
                        store,
                        head,
                        tail: tail - 1,
                    }
                }
                other => other,
            })
            .collect();
        self.inner.apply_queue(&kept)
    }
    fn flush(&self) -> Result<(), BackendError> {
        self.inner.flush()
    }
    fn disk_bytes(&self) -> Result<u64, BackendError> {
        self.inner.disk_bytes()
    }

    fn usage(&self) -> Result<Usage, BackendError> {
        self.inner.usage()
    }
}

async fn wait_stat(u: &User, f: impl Fn(&shroud_client::ClientStats) -> u64, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while stat(u, &f) < at_least {
        assert!(
            Instant::now() < deadline,
            "counter stuck at {}",
            stat(u, &f)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_storage_server_is_caught_and_its_envelopes_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mode = Arc::new(AtomicU8::new(HONEST));
    let backend = Arc::new(Hostile {
        inner: SledBackend::open(&dir.path().join("db")).unwrap(),
        mode: mode.clone(),
        seen: Mutex::new(Vec::new()),
    });
    let stack = Stack::start_with(
        shape(),
        backend,
        shroud_testkit::fixtures::storage_config(),
        dir,
    )
    .await
    .expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let alice = user(&stack, &mut rng).await;
    let bob = user(&stack, &mut rng).await;
    befriend(&[("alice", &alice), ("bob", &bob)]).await;
    let rejected = |s: &shroud_client::ClientStats| s.mail_rejected.load(Relaxed);
    alice.mail.send(&bob.address, b"one").await.unwrap();
    wait_incoming(&bob.mail, &alice.address, 1, 30).await;

    // Each attack: Alice sends `body` while storage lies as `m`; Bob must count a refusal.
    let attack = |m: u8, body: Vec<u8>, refusals: u64| {
        let (mode, alice, bob) = (&mode, &alice, &bob);
        async move {
            mode.store(m, Relaxed);
            alice.mail.send(&bob.address, &body).await.unwrap();
            wait_stat(bob, rejected, refusals).await;
            mode.store(HONEST, Relaxed);
        }
    };

    // Altered: the envelope does not open; the message is refused, nothing else breaks.
    attack(ALTER, b"two (altered)".to_vec(), 1).await;
    alice.mail.send(&bob.address, b"three").await.unwrap();
    let got = wait_incoming(&bob.mail, &alice.address, 2, 30).await;
    assert_eq!(got, vec![b"one".to_vec(), b"three".to_vec()]);

    // Replayed: an old envelope served in place of a new one is refused by the replay window
    // (the new one is lost: storage can always destroy mail, but not pass off an old one).
    attack(REPLAY, b"four (replaced)".to_vec(), 2).await;
    alice.mail.send(&bob.address, b"five").await.unwrap();
    let got = wait_incoming(&bob.mail, &alice.address, 3, 30).await;
    assert_eq!(
        got,
        vec![b"one".to_vec(), b"three".to_vec(), b"five".to_vec()]
    );

    // Reordered: entries out of sequence make Bob refuse the whole drain (nothing is
    // acknowledged); once storage behaves, the message arrives whole.
    let long = long_message(3);
    attack(REORDER, long.clone(), 3).await;
    let got = wait_incoming(&bob.mail, &alice.address, 4, 30).await;
    assert_eq!(got.last().unwrap(), &long);

    // Dropped: storage says "delivered" and files nothing. Bob notices once a later envelope
    // arrives and the gap outlasts its grace period.
    let missing = |s: &shroud_client::ClientStats| s.mail_missing.load(Relaxed);
    mode.store(DROP, Relaxed);
    alice
        .mail
        .send(&bob.address, b"six (dropped)")
        .await
        .unwrap();
    mode.store(HONEST, Relaxed);
    alice.mail.send(&bob.address, b"seven").await.unwrap();
    let got = wait_incoming(&bob.mail, &alice.address, 5, 30).await;
    assert_eq!(got.last().unwrap(), b"seven");
    wait_stat(&bob, missing, 1).await;
    println!("bob refused {} envelopes in all", stat(&bob, rejected));
    for u in [alice, bob] {
        u.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_inbox_pushes_back_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(SledBackend::open(&dir.path().join("db")).unwrap());
    let config = shroud_storage::Config {
        inbox_capacity: 3,
        ..shroud_testkit::fixtures::storage_config()
    };
    let stack = Stack::start_with(shape(), backend, config, dir)
        .await
        .expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let alice = user(&stack, &mut rng).await;
    let bob_account = Account::generate(&mut rng);
    let bob = user_with(&stack, bob_account.clone(), &mut rng).await;
    let bob_address = bob.address;
    alice.mail.add_contact("bob", bob_address).await.unwrap();
    // Bob's first drain made his inbox; now he goes away.
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.stop().await;
    let sends: Vec<_> = (0..5u8)
        .map(|i| {
            let m = alice.mail.clone();
            tokio::spawn(async move { m.send(&bob_address, &[b'm', b'0' + i]).await })
        })
        .collect();
    let full = |s: &shroud_client::ClientStats| s.mail_full.load(Relaxed);
    wait_stat(&alice, full, 3).await;
    let done = sends.iter().filter(|s| s.is_finished()).count();
    assert_eq!(done, 3, "three fit; two wait");
    // Bob comes back: he drains, the waiting sends go through, nothing is lost.
    let bob = user_with(&stack, bob_account, &mut rng).await;
    bob.mail.add_contact("alice", alice.address).await.unwrap();
    for s in sends {
        tokio::time::timeout(Duration::from_secs(30), s)
            .await
            .expect("send finishes")
            .unwrap()
            .expect("delivered");
    }
    let mut got = wait_incoming(&bob.mail, &alice.address, 5, 30).await;
    got.sort();
    assert_eq!(
        got,
        (0..5u8).map(|i| vec![b'm', b'0' + i]).collect::<Vec<_>>()
    );
    for u in [alice, bob] {
        u.stop().await;
    }
}

/// A durable in-process user (its state in `dir`).
async fn durable_user(stack: &Stack, dir: &Path) -> (User, Arc<Durable>) {
    let config = stack.client_config().expect("config");
    let unlock = Unlock::KeyFile(dir.join("key"));
    let state = dir.join("state");
    if !Durable::exists(&state) {
        Client::create(&config, &state, &unlock)
            .await
            .expect("create");
    }
    let (durable, meta) = Durable::open(&state, &unlock).expect("open");
    let durable = Arc::new(durable);
    let (client, task) = Client::open(config, durable.clone(), &meta)
        .await
        .expect("client");
    let kv = Kv::open(
        client,
        shroud_client::kv::DEFAULT_MAX_VALUE,
        durable.clone(),
    )
    .await
    .expect("kv");
    let mail = Mailbox::open(kv.clone(), Some(durable.clone()))
        .await
        .expect("mailbox");
    let address = mail.init().await.expect("account");
    (
        User {
            kv,
            mail,
            task,
            address,
        },
        durable,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_recipient_catches_up_without_loss_or_duplicates() {
    let stack = Stack::start(shape()).await.expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let alice = user(&stack, &mut rng).await;
    let dir = tempfile::tempdir().unwrap();
    let (bob, durable) = durable_user(&stack, dir.path()).await;
    let bob_address = bob.address;
    bob.mail.add_contact("alice", alice.address).await.unwrap();
    alice.mail.add_contact("bob", bob_address).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    bob.stop().await;
    drop(durable);
    // Bob is offline for well over a hundred epochs while Alice writes.
    let started = Instant::now();
    let mut sent = Vec::new();
    for i in 0..10u8 {
        let m = if i % 4 == 3 {
            long_message(i)
        } else {
            format!("message {i}").into_bytes()
        };
        alice.mail.send(&bob_address, &m).await.unwrap();
        sent.push(m);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let offline = started.elapsed();
    assert!(
        offline >= Duration::from_millis(25 * 120),
        "{offline:?}: over 120 epochs"
    );
    let (bob, _durable) = durable_user(&stack, dir.path()).await;
    assert_eq!(bob.address, bob_address, "same account after the restart");
    let mut got = wait_incoming(&bob.mail, &alice.address, 10, 60).await;
    // Let a few more epochs pass: nothing more arrives (no duplicates).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        wait_incoming(&bob.mail, &alice.address, 10, 1).await.len(),
        10
    );
    got.sort();
    sent.sort();
    assert_eq!(got, sent);
    for u in [alice, bob] {
        u.stop().await;
    }
}

/// Where an agent process listens, and its token.
#[derive(Clone)]
struct AgentAt {
    addr: SocketAddr,
    token: String,
    token_file: std::path::PathBuf,
}

/// A minimal RESP client for the agent process (authenticated).
async fn resp(agent: &AgentAt, args: &[&[u8]]) -> std::io::Result<OwnedFrame> {
    let mut s = crate::common::agent_connection(agent.addr, &agent.token).await?;
    shroud_client::resp::call(&mut s, args).await
}

fn spawn_agent(stack: &Stack, state: &Path) -> (Reaped, AgentAt) {
    let key: String = stack
        .storage_key
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_shroud"));
    cmd.args(["agent", "--listen", "127.0.0.1:0", "--proxy"])
        .arg(stack.proxy.to_string())
        .arg("--ca")
        .arg(&stack.tls.files.ca)
        .arg("--state")
        .arg(state)
        .arg("--storage-key")
        .arg(key)
        .arg("--key-file")
        .arg(crate::common::key_file(state));
    let (child, addr) = crate::common::spawn_listening(cmd);
    let at = AgentAt {
        addr,
        token: crate::common::agent_token(state),
        token_file: state.join("agent.token"),
    };
    (Reaped(child), at)
}

fn bulk(f: OwnedFrame) -> String {
    match f {
        OwnedFrame::BulkString(b) => String::from_utf8(b).expect("utf-8"),
        other => panic!("expected a bulk string, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_recipient_between_fetch_and_ack_loses_nothing() {
    recipient_crash_loop(8).await;
}

/// `SHROUD_CRASH_ITERS=100 cargo test --release --test suite mail:: -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn killing_the_recipient_long() {
    let kills = crate::common::env_count("SHROUD_CRASH_ITERS", 100);
    recipient_crash_loop(kills).await;
}

async fn recipient_crash_loop(kills: usize) {
    let stack = Stack::start(shape()).await.expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let alice = user(&stack, &mut rng).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("bob");
    let (mut child, addr) = spawn_agent(&stack, &state);
    let bob: Address = bulk(resp(&addr, &[b"MAIL.INIT"]).await.unwrap())
        .parse()
        .expect("address");
    let alice_addr = alice.address.to_string();
    resp(
        &addr,
        &[b"MAIL.ADD-CONTACT", b"alice", alice_addr.as_bytes()],
    )
    .await
    .unwrap();
    alice.mail.add_contact("bob", bob).await.unwrap();
    let mut sent = Vec::new();
    for round in 0..kills {
        for j in 0..2 {
            let m = format!("round {round} message {j}").into_bytes();
            alice.mail.send(&bob, &m).await.unwrap();
            sent.push(m);
        }
        // Bob is draining, storing, acknowledging: kill him anywhere in that.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
        drop(child);
        child = spawn_agent(&stack, &state).0;
    }
    drop(child);
    let (child, addr) = spawn_agent(&stack, &state);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got: Vec<Vec<u8>>;
    loop {
        got = match resp(&addr, &[b"MAIL.READ", b"alice"]).await.unwrap() {
            OwnedFrame::Array(items) => items
                .into_iter()
                .map(|f| {
                    let line = bulk(f);
                    let mut parts = line.splitn(3, ' ');
                    let (_, dir, body) = (parts.next(), parts.next(), parts.next());
                    assert_eq!(dir, Some("in"));
                    body.unwrap_or_default().as_bytes().to_vec()
                })
                .collect(),
            other => panic!("{other:?}"),
        };
        if got.len() >= sent.len() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    got.sort();
    sent.sort();
    assert_eq!(got, sent, "every message exactly once after {kills} kills");
    println!(
        "{kills} kills of the recipient: {} messages, each exactly once",
        sent.len()
    );
    drop(child);
    alice.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_pinning_another_storage_key_refuses_to_send() {
    let stack = Stack::start(shape()).await.expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let bob = user(&stack, &mut rng).await;
    // Mallory's key is not storage's: nothing storage answers opens with it.
    let wrong = shroud_proto::routing::RoutingKey::generate(&mut rng).public();
    let config = stack
        .client_config()
        .unwrap()
        .with_account(Account::generate(&mut rng))
        .with_storage_key(wrong);
    let (client, task) = Client::start(
        config,
        Key::generate(&mut rng),
        shroud_client::random_grant(&mut rng),
    )
    .await
    .unwrap();
    let kv = Kv::new(client, shroud_client::kv::DEFAULT_MAX_VALUE);
    let mail = Mailbox::open(kv.clone(), None).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        mail.send(&bob.address, b"via the wrong key"),
    )
    .await
    .expect("refused in time");
    assert_eq!(r, Err(shroud_client::mailbox::MailError::StorageKey));
    assert!(bob.mail.conversations().await.is_empty());
    drop((mail, kv));
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
    bob.stop().await;
}

/// Runs `shroud mail --agent ADDR ARGS...`; returns its stdout.
fn shroud_mail(agent: &AgentAt, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_shroud"))
        .args(["mail", "--agent", &agent.addr.to_string(), "--token-file"])
        .arg(&agent.token_file)
        .args(args)
        .output()
        .expect("shroud mail");
    assert!(
        out.status.success(),
        "shroud mail {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shroud_mail_cli_works_through_the_agent() {
    let stack = Stack::start(shape()).await.expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let alice = user(&stack, &mut rng).await;
    let dir = tempfile::tempdir().unwrap();
    let (child, agent) = spawn_agent(&stack, &dir.path().join("bob"));
    let cli = move |args: Vec<String>| {
        let agent = agent.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            shroud_mail(&agent, &args)
        })
    };
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let bob: Address = cli(s(&["init"]))
        .await
        .unwrap()
        .trim()
        .parse()
        .expect("address");
    assert_eq!(cli(s(&["address"])).await.unwrap().trim(), bob.to_string());
    cli(s(&["add-contact", "alice", &alice.address.to_string()]))
        .await
        .unwrap();
    assert!(
        cli(s(&["add-contact", "typo", &format!("{}x", alice.address)]))
            .await
            .is_err(),
        "a mistyped address is refused"
    );
    alice.mail.add_contact("bob", bob).await.unwrap();
    alice.mail.send(&bob, b"hello from alice").await.unwrap();
    cli(s(&["send", "alice", "hello back"])).await.unwrap();
    wait_incoming(&alice.mail, &bob, 1, 30).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let read = loop {
        let read = cli(s(&["read", "alice"])).await.unwrap();
        if read.lines().count() >= 2 || Instant::now() > deadline {
            break read;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(read.contains(" in hello from alice"), "{read}");
    assert!(read.contains(" out hello back"), "{read}");
    assert_eq!(cli(s(&["inbox"])).await.unwrap().trim(), "alice 2");
    drop(child);
    alice.stop().await;
}

//! The mailbox end to end (issues 6 and 13): real TLS storage and proxy servers on 127.0.0.1,
//! clients writing their own outboxes and reading their contacts' with PIR every round, a
//! relay that lies on the operators' behalf, and real agent processes killed with SIGKILL.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::common::{Reaped, Stack};
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis_protocol::resp2::types::OwnedFrame;
use shroud_client::durable::{Durable, Unlock};
use shroud_client::mailbox::chunk::PAYLOAD_LEN;
use shroud_client::mailbox::{Account, Address, Mailbox};
use shroud_client::{Client, Kv};
use shroud_oram::Key;
use shroud_proto::proxy::{ClientMsg, ProxyMsg};
use shroud_proto::{Limits, Shape};

/// Epochs of 40 ms: a client's frames leave 2/5 into the epoch, and the rest must cover the
/// proxy's round trip to storage even on a loaded 2-core machine. A mail round every 40
/// epochs (1.6 s: storage answers a round of three or four users' queries in about a
/// second on this machine), two queries a round, a board of 2^8 rows in outboxes of 2.
fn shape() -> Shape {
    Shape::new(1024, 512, 3)
        .expect("shape")
        .with_schedule(2, 40)
        .expect("shape")
        .with_board(256, 2)
        .expect("board")
        .with_mail(40, 2)
}

/// How long a test waits for mail: rounds are seconds long, and the tests of this binary
/// share two cores.
const MAIL_WAIT: u64 = 120;

type User = shroud_testkit::stack::MailUser;

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
    (0..3 * PAYLOAD_LEN + 17)
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
    // Sends return once the message is queued in the sender's state.
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
        wait_incoming(&bob.mail, &alice.address, 1, MAIL_WAIT).await,
        vec![b"hi bob".to_vec()]
    );
    assert_eq!(
        wait_incoming(&carol.mail, &alice.address, 1, MAIL_WAIT).await,
        vec![long.clone()]
    );
    assert_eq!(
        wait_incoming(&carol.mail, &bob.address, 1, MAIL_WAIT).await,
        vec![b"hi carol, bob here".to_vec()]
    );
    assert_eq!(
        wait_incoming(&alice.mail, &carol.address, 1, MAIL_WAIT).await,
        vec![b"hello alice".to_vec()]
    );
    // The senders' histories hold what they sent.
    let sent = alice.mail.conversation(&carol.address).await.unwrap();
    assert!(sent.iter().any(|r| r.outgoing && r.body == long));
    let with_carol = carol.mail.conversation(&alice.address).await.unwrap();
    assert_eq!(with_carol.len(), 2, "carol: one in, one out");
    // Every message was acknowledged whole.
    for (u, n) in [(&alice, 2), (&bob, 1), (&carol, 1)] {
        wait_stat(u, |s| s.mail_delivered.load(Relaxed), n).await;
    }
    // A stranger's mail never arrives: Bob reads only his contacts' outboxes, and Dave is
    // not one of them.
    let dave = user(&stack, &mut rng).await;
    dave.mail.add_contact("bob", bob.address).await.unwrap();
    dave.mail.send(&bob.address, b"spam").await.expect("queued");
    let rounds = stat(&dave, |s| s.mail_rounds.load(Relaxed));
    wait_stat(&dave, |s| s.mail_rounds.load(Relaxed), rounds + 4).await;
    assert!(
        bob.mail
            .conversation(&dave.address)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(stat(&dave, |s| s.mail_delivered.load(Relaxed)), 0);
    assert_eq!(stat(&bob, |s| s.mail_rejected.load(Relaxed)), 0);
    for u in [alice, bob, carol, dave] {
        u.stop().await;
    }
}

/// One run: Alice writes to `target` (1 = Bob, 2 = Carol) for a while; returns storage's view
/// and the proxy's (slot and round frame sizes).
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
    wait_incoming(&to.mail, &alice.address, 2, MAIL_WAIT).await;
    let stats = shroud::cmd::proxy::stats(stack.proxy, &stack.tls.client().unwrap())
        .await
        .expect("proxy stats");
    for u in [alice, bob, carol] {
        u.stop().await;
    }
    let q = stack.shape.queries_per_round as usize;
    let view = shroud_lab::audit::sizes::storage(&stack.transcript, 3, q).expect("transcript");
    (view, shroud_lab::audit::sizes::proxy(&stats))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alice_to_bob_and_alice_to_carol_look_the_same() {
    let (to_bob, proxy_bob) = oblivious_run(1).await;
    let (to_carol, proxy_carol) = oblivious_run(2).await;
    println!("storage, Alice->Bob:   {to_bob:?}");
    println!("storage, Alice->Carol: {to_carol:?}");
    println!("proxy (slot min/max, round min/max): {proxy_bob:?} vs {proxy_carol:?}");
    // Every steady epoch has one batch, every round one request of writes and one of
    // queries, of one size each, the same in both runs; the proxy saw one slot size and one
    // round frame size, the same in both.
    for op in [
        shroud_storage::Op::Batch,
        shroud_storage::Op::Round,
        shroud_storage::Op::Answer,
    ] {
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

async fn wait_stat(u: &User, f: impl Fn(&shroud_client::ClientStats) -> u64, at_least: u64) {
    let deadline = Instant::now() + Duration::from_secs(MAIL_WAIT);
    while stat(u, &f) < at_least {
        assert!(
            Instant::now() < deadline,
            "counter stuck at {} (waiting for {at_least})",
            stat(u, &f)
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// What the lying relay does.
const HONEST: u8 = 0;
/// Inverts a stretch of every PIR answer to the client (a flipped low bit can vanish in the
/// scheme's rounding: that is no lie).
const ALTER_ANSWERS: u8 = 1;
/// Hands the client an earlier round's answers as this round's.
const REPLAY_ANSWERS: u8 = 2;
/// Swallows the client's round frames: its outbox write (and queries) never reach storage.
const DROP_WRITES: u8 = 3;
/// Puts the client's earlier outbox write in place of this round's.
const REPLAY_WRITES: u8 = 4;

/// A relay in front of the proxy that lies as `mode` says, for every connection through it:
/// what a hostile proxy, or a storage server (which could do all of it at the board), can do
/// to a client's round frames and answers. It terminates TLS with the proxy's certificate
/// (the operators hold it) and speaks the real protocol to the real proxy behind it.
async fn lying_relay(stack: &Stack, mode: Arc<AtomicU8>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (server, client, proxy) = (
        stack.tls.server().unwrap(),
        stack.tls.client().unwrap(),
        stack.proxy,
    );
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            // As the proxy's own listener does: no Nagle delay on small frames.
            let _ = tcp.set_nodelay(true);
            let (server, client, mode) = (server.clone(), client.clone(), mode.clone());
            tokio::spawn(async move {
                let Ok(down) = server.accept(tcp, Duration::from_secs(10)).await else {
                    return;
                };
                let Ok(up) = client.connect(proxy).await else {
                    return;
                };
                let codec = || shroud_net::frame_codec(Limits::default());
                let (mut down_tx, mut down_rx) =
                    StreamExt::split::<bytes::Bytes>(tokio_util::codec::Framed::new(down, codec()));
                let (mut up_tx, mut up_rx) =
                    StreamExt::split::<bytes::Bytes>(tokio_util::codec::Framed::new(up, codec()));
                let last_write = Arc::new(Mutex::new(None));
                let answers: Arc<Mutex<Vec<ProxyMsg>>> = Arc::new(Mutex::new(Vec::new()));
                let (m, lw) = (mode.clone(), last_write.clone());
                let to_proxy = async move {
                    while let Some(Ok(frame)) = down_rx.next().await {
                        let msg: ClientMsg = shroud_proto::decode(&frame, Limits::default())
                            .expect("a client frame");
                        let msg = match (m.load(Relaxed), msg) {
                            (DROP_WRITES, ClientMsg::Round(_)) => continue,
                            (mode, ClientMsg::Round(mut r)) => {
                                let previous = lw.lock().replace(r.write.clone());
                                if let (REPLAY_WRITES, Some(old)) = (mode, previous) {
                                    r.write = old;
                                }
                                ClientMsg::Round(r)
                            }
                            (_, other) => other,
                        };
                        let bytes = shroud_proto::encode(&msg, Limits::default()).unwrap();
                        if up_tx.send(bytes::Bytes::from(bytes)).await.is_err() {
                            return;
                        }
                    }
                };
                let to_client = async move {
                    while let Some(Ok(frame)) = up_rx.next().await {
                        let msg: ProxyMsg =
                            shroud_proto::decode(&frame, Limits::default()).expect("a proxy frame");
                        let msg = match (mode.load(Relaxed), msg) {
                            (ALTER_ANSWERS, ProxyMsg::RoundDone(mut d)) => {
                                for a in &mut d.answers {
                                    for b in &mut a.0[64..1088] {
                                        *b ^= 0xff;
                                    }
                                }
                                ProxyMsg::RoundDone(d)
                            }
                            (REPLAY_ANSWERS, ProxyMsg::RoundDone(d)) => {
                                let old = answers.lock().first().cloned();
                                answers.lock().push(ProxyMsg::RoundDone(d.clone()));
                                match old {
                                    Some(ProxyMsg::RoundDone(mut o)) => {
                                        o.seq = d.seq;
                                        o.round = d.round;
                                        ProxyMsg::RoundDone(o)
                                    }
                                    _ => ProxyMsg::RoundDone(d),
                                }
                            }
                            (_, ProxyMsg::RoundDone(d)) => {
                                answers.lock().push(ProxyMsg::RoundDone(d.clone()));
                                ProxyMsg::RoundDone(d)
                            }
                            (_, other) => other,
                        };
                        let bytes = shroud_proto::encode(&msg, Limits::default()).unwrap();
                        if down_tx.send(bytes::Bytes::from(bytes)).await.is_err() {
                            return;
                        }
                    }
                };
                tokio::join!(to_proxy, to_client);
            });
        }
    });
    addr
}

/// Operators that alter or replay PIR answers, or drop or replay outbox writes, are caught
/// every time (the reader refuses and counts what does not verify) and lose nothing: the
/// sender keeps writing a chunk until its reader acknowledges it, so each message arrives,
/// once, when they stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lying_operators_are_caught_and_lose_nothing() {
    let stack = Stack::start(shape()).await.expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let (alice_mode, bob_mode) = (
        Arc::new(AtomicU8::new(HONEST)),
        Arc::new(AtomicU8::new(HONEST)),
    );
    let alice_via = lying_relay(&stack, alice_mode.clone()).await;
    let bob_via = lying_relay(&stack, bob_mode.clone()).await;
    let alice = stack
        .mail_user_through(alice_via, &mut rng)
        .await
        .expect("alice");
    let bob = stack
        .mail_user_through(bob_via, &mut rng)
        .await
        .expect("bob");
    befriend(&[("alice", &alice), ("bob", &bob)]).await;
    let rejected = |s: &shroud_client::ClientStats| s.mail_rejected.load(Relaxed);
    alice.mail.send(&bob.address, b"one").await.unwrap();
    wait_incoming(&bob.mail, &alice.address, 1, MAIL_WAIT).await;
    let mut want = vec![b"one".to_vec()];
    // Each attack: Alice sends while the relay lies; Bob counts refusals where there is
    // something to refuse; once the relay is honest again, the message arrives.
    for (who, mode, refuses) in [
        (&bob_mode, ALTER_ANSWERS, true),
        (&bob_mode, REPLAY_ANSWERS, true),
        (&alice_mode, REPLAY_WRITES, true),
        (&alice_mode, DROP_WRITES, false),
    ] {
        let before = stat(&bob, rejected);
        let body = format!("sent while the relay does {mode}").into_bytes();
        who.store(mode, Relaxed);
        alice.mail.send(&bob.address, &body).await.unwrap();
        let rounds = stat(&bob, |s| s.mail_rounds.load(Relaxed));
        wait_stat(&bob, |s| s.mail_rounds.load(Relaxed), rounds + 4).await;
        if refuses {
            // Rounds storage skipped (it falls behind when the machine is busy) carry no
            // answers to refuse: wait, while the relay still lies, for the first refusal.
            wait_stat(&bob, rejected, before + 1).await;
        }
        let got = bob.mail.conversation(&alice.address).await.unwrap();
        assert_eq!(got.len(), want.len(), "mode {mode}: a message got through");
        who.store(HONEST, Relaxed);
        want.push(body);
        let mut got = wait_incoming(&bob.mail, &alice.address, want.len(), MAIL_WAIT).await;
        got.sort();
        let mut sorted = want.clone();
        sorted.sort();
        assert_eq!(got, sorted, "mode {mode}");
    }
    println!(
        "bob refused {} rows or answers in all",
        stat(&bob, rejected)
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
    // Bob is offline for several rounds while Alice writes.
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
    let round = Duration::from_millis(u64::from(shape().epoch_ms * shape().round_epochs));
    tokio::time::sleep(round * 4).await;
    let offline = started.elapsed();
    assert!(offline >= round * 4, "{offline:?}: four rounds");
    let (bob, _durable) = durable_user(&stack, dir.path()).await;
    assert_eq!(bob.address, bob_address, "same account after the restart");
    let mut got = wait_incoming(&bob.mail, &alice.address, 10, MAIL_WAIT).await;
    // Let two more rounds pass: nothing more arrives (no duplicates).
    tokio::time::sleep(round * 2).await;
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
        // Bob is reading, storing, acknowledging: kill him anywhere in that.
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..2_000))).await;
        drop(child);
        child = spawn_agent(&stack, &state).0;
    }
    drop(child);
    let (child, addr) = spawn_agent(&stack, &state);
    let deadline = Instant::now() + Duration::from_secs(MAIL_WAIT);
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

/// The sender's agent is killed with SIGKILL while its long messages stream out (each
/// restart makes new PIR keys and reconnects): every message arrives whole, exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sender_mid_message_loses_and_duplicates_nothing() {
    let stack = Stack::start(shape()).await.expect("stack");
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let bob = user(&stack, &mut rng).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("alice");
    let (mut child, mut agent) = spawn_agent(&stack, &state);
    let alice: Address = bulk(resp(&agent, &[b"MAIL.INIT"]).await.unwrap())
        .parse()
        .expect("address");
    let bob_address = bob.address.to_string();
    resp(
        &agent,
        &[b"MAIL.ADD-CONTACT", b"bob", bob_address.as_bytes()],
    )
    .await
    .unwrap();
    bob.mail.add_contact("alice", alice).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..3u8 {
        // Four chunks, two rows a round: two rounds to stream; killed anywhere in that.
        let m = long_message(40 + i);
        let ok = resp(&agent, &[b"MAIL.SEND", b"bob", &m]).await.unwrap();
        assert_eq!(ok, OwnedFrame::SimpleString(b"OK".to_vec()));
        sent.push(m);
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..3_000))).await;
        drop(child);
        (child, agent) = spawn_agent(&stack, &state);
    }
    let mut got = wait_incoming(&bob.mail, &alice, 3, MAIL_WAIT).await;
    // Two more rounds: nothing arrives twice.
    let round = Duration::from_millis(u64::from(shape().epoch_ms * shape().round_epochs));
    tokio::time::sleep(round * 2).await;
    assert_eq!(wait_incoming(&bob.mail, &alice, 3, 1).await.len(), 3);
    got.sort();
    sent.sort();
    assert_eq!(
        got, sent,
        "every message whole, exactly once, after 3 kills of the sender"
    );
    drop(child);
    bob.stop().await;
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
    // Its outbox request does not open at storage, and storage's noise does not open here.
    let r = tokio::time::timeout(Duration::from_secs(20), mail.init())
        .await
        .expect("refused in time");
    assert_eq!(r, Err(shroud_client::mailbox::MailError::StorageKey));
    let r = mail.send(&bob.address, b"via the wrong key").await;
    assert_eq!(r, Err(shroud_client::mailbox::MailError::NoAccount));
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
    // Both sides read the same safety number.
    let number = alice.mail.safety_number("bob").await.unwrap();
    assert_eq!(
        cli(s(&["safety", "alice"])).await.unwrap().trim(),
        format!("safety number {number}")
    );
    // Another address under a name that has one is refused (a changed key is shown, with
    // both numbers), unless replaced on purpose; then the number changes.
    let other = shroud_client::mailbox::Account::generate(&mut rng)
        .with_outbox(77)
        .address()
        .expect("address");
    let refused = cli(s(&["add-contact", "alice", &other.to_string()])).await;
    assert!(refused.is_err(), "a changed key was taken silently");
    cli(s(&["add-contact", "mallory", &other.to_string()]))
        .await
        .unwrap();
    let replaced = cli(s(&[
        "add-contact",
        "--replace",
        "mallory",
        &alice.address.to_string(),
    ]))
    .await
    .unwrap();
    assert_eq!(replaced.trim(), format!("safety number {number}"));
    alice.mail.send(&bob, b"hello from alice").await.unwrap();
    cli(s(&["send", "alice", "hello back"])).await.unwrap();
    wait_incoming(&alice.mail, &bob, 1, MAIL_WAIT).await;
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

//! A malicious storage server, as a man in the middle between the proxy and the real one
//! (it terminates the proxy's TLS with storage's certificate, as storage's operator could).
//! Each attack is tried many times, each time on one answer of one response at a random
//! position: flip a byte, swap two answers, replay an older version of an answer, return
//! an answer as absent, truncate one, reorder a response's answers, drop a response. An
//! answer is a bucket (Path ORAM), or a slot or an XOR of slots (Ring ORAM): both modes
//! are attacked, side by side.
//!
//! Every try must be detected at the first read (the client refuses the epoch:
//! `ClientStats::integrity_failures`, or for a dropped response the proxy's timeout and the
//! client's resend: `ClientStats::failed_exchanges`), and the client's data must stay exactly
//! what a model says once the server behaves again.
//!
//! `SHROUD_ATTACK_TRIES=N` sets the tries per attack (1,000 by default).

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Stack;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shroud_client::{Client, ClientError};
use shroud_net::transport::{ClientTls, ServerTls};
use shroud_oram::Key;
use shroud_proto::Shape;
use shroud_proto::{BatchOp, Limits, ReadResult, Request, Response, StoreId, decode, encode};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

const ATTACKS: [&str; 7] = [
    "flip a byte",
    "swap two buckets",
    "replay an older version",
    "return a bucket as absent",
    "truncate a bucket",
    "reorder the buckets",
    "drop the response",
];
const DROP: u8 = 6;

/// What one answer of a batch is of: a bucket, a slot, or an online read (an XOR of
/// slots), with its store.
type AnswerId = (StoreId, u64, u32);

/// Every version of every answer served so far.
type Versions = HashMap<AnswerId, Vec<Vec<u8>>>;

/// The man in the middle.
#[derive(Default)]
struct Mitm {
    attack: AtomicU8,
    armed: AtomicBool,
    tries: AtomicU64,
    seen: Mutex<Versions>,
}

impl Mitm {
    /// Tampers with `reads` (of buckets `ids`); false if this response offers no target.
    fn tamper(&self, reads: &mut [ReadResult], ids: &[AnswerId], rng: &mut StdRng) -> bool {
        let present: Vec<usize> = (0..reads.len()).filter(|&i| reads[i].present).collect();
        if present.is_empty() {
            return false;
        }
        let i = present[rng.random_range(0..present.len())];
        match self.attack.load(SeqCst) {
            0 => {
                let at = rng.random_range(0..reads[i].data.len());
                reads[i].data[at] ^= 1 << rng.random_range(0..8);
            }
            1 => {
                let others: Vec<usize> = present
                    .iter()
                    .copied()
                    .filter(|&j| reads[j].data != reads[i].data)
                    .collect();
                let Some(&j) = others.get(rng.random_range(0..others.len().max(1))) else {
                    return false;
                };
                reads.swap(i, j);
            }
            2 => {
                let seen = self.seen.lock();
                let Some(old) = seen
                    .get(&ids[i])
                    .and_then(|v| v.iter().rev().find(|d| **d != reads[i].data))
                else {
                    return false;
                };
                reads[i].data = old.clone();
            }
            3 => {
                reads[i].present = false;
                reads[i].data.iter_mut().for_each(|b| *b = 0);
            }
            4 => {
                let keep = rng.random_range(0..reads[i].data.len());
                reads[i].data.truncate(keep);
            }
            5 => {
                if present.len() < 2 {
                    return false;
                }
                // Rotate the present buckets by one position.
                let first = reads[present[0]].clone();
                for w in present.windows(2) {
                    reads[w[0]] = reads[w[1]].clone();
                }
                let last = *present.last().unwrap_or(&0);
                reads[last] = first;
                if present
                    .iter()
                    .all(|&p| reads[p].data == reads[present[0]].data)
                {
                    return false;
                }
            }
            _ => {}
        }
        true
    }

    fn remember(&self, reads: &[ReadResult], ids: &[AnswerId]) {
        let mut seen = self.seen.lock();
        for (r, id) in reads.iter().zip(ids) {
            if r.present {
                let v = seen.entry(*id).or_default();
                if v.last() != Some(&r.data) {
                    v.push(r.data.clone());
                }
            }
        }
    }
}

/// What each answer of a batch is of, in order: a bucket `(store, bucket, u32::MAX)`, a
/// slot `(store, bucket, slot)`, or an online read `(store, first bucket, u32::MAX - 1)`.
fn read_ids(req: &Request) -> Option<Vec<AnswerId>> {
    let Request::Batch(b) = req else { return None };
    let mut ids = Vec::new();
    for op in &b.ops {
        let store = |g: u32| b.grants.get(g as usize).map(|g| g.store);
        match op {
            BatchOp::Read { grant, bucket } => ids.push((store(*grant)?, *bucket, u32::MAX)),
            BatchOp::Write { .. } => {}
            BatchOp::ReadSlots {
                grant,
                xor: true,
                slots,
                ..
            } => ids.push((store(*grant)?, slots.first()?.bucket, u32::MAX - 1)),
            BatchOp::ReadSlots { grant, slots, .. } => {
                let s = store(*grant)?;
                ids.extend(slots.iter().map(|r| (s, r.bucket, u32::from(r.slot))));
            }
        }
    }
    Some(ids)
}

async fn serve_one(
    mitm: Arc<Mitm>,
    stream: tokio::net::TcpStream,
    storage: SocketAddr,
    server: Arc<ServerTls>,
    client: Arc<ClientTls>,
) -> std::io::Result<()> {
    let limits = Limits::default();
    let down = server.accept(stream, Duration::from_secs(10)).await?;
    let up = client.connect(storage).await?;
    let (mut down, mut up) = (
        Framed::new(down, shroud_net::frame_codec(limits)),
        Framed::new(up, shroud_net::frame_codec(limits)),
    );
    let mut rng = StdRng::from_rng(&mut rand::rng());
    while let Some(Ok(frame)) = down.next().await {
        let ids = decode::<Request>(&frame, limits)
            .ok()
            .as_ref()
            .and_then(read_ids);
        up.send(frame.freeze()).await?;
        let Some(Ok(reply)) = up.next().await else {
            return Ok(());
        };
        let mut out = reply.freeze();
        if let (Some(ids), Ok(Response::Batch(mut reply))) = (ids, decode::<Response>(&out, limits))
        {
            let honest = reply.reads.clone();
            if mitm.armed.load(SeqCst) {
                if mitm.attack.load(SeqCst) == DROP {
                    // Swallow the response: the proxy hears nothing.
                    mitm.armed.store(false, SeqCst);
                    mitm.tries.fetch_add(1, SeqCst);
                    mitm.remember(&honest, &ids);
                    continue;
                }
                if mitm.tamper(&mut reply.reads, &ids, &mut rng) {
                    mitm.armed.store(false, SeqCst);
                    mitm.tries.fetch_add(1, SeqCst);
                    out = Bytes::from(
                        encode(&Response::Batch(reply), limits).map_err(std::io::Error::other)?,
                    );
                }
            }
            mitm.remember(&honest, &ids);
        }
        down.send(out).await?;
    }
    Ok(())
}

async fn run_mitm(
    mitm: Arc<Mitm>,
    listener: TcpListener,
    storage: SocketAddr,
    server: ServerTls,
    client: ClientTls,
) {
    let (server, client) = (Arc::new(server), Arc::new(client));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(serve_one(
            mitm.clone(),
            stream,
            storage,
            server.clone(),
            client.clone(),
        ));
    }
}

/// The proxy's storage timeout: long enough for storage's group-commit fsync on a loaded
/// 2-core machine (at 40 ms a slow response, honest or tampered, was sometimes timed out
/// unread and miscounted), short enough for 1,000 dropped responses.
const STORAGE_TIMEOUT: Duration = Duration::from_millis(100);

/// The proxy's storage timeout while responses are dropped (each drop waits it out).
const DROP_TIMEOUT: Duration = Duration::from_millis(30);

fn tries() -> u64 {
    common::env_count("SHROUD_ATTACK_TRIES", 1000)
}

// The two tests run side by side (each waits on epochs and timeouts far more than it
// computes: about a tenth of a core each).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tampered_response_is_detected_and_honest_operation_resumes() {
    tokio::join!(
        attack(0..DROP, STORAGE_TIMEOUT, path()),
        attack(0..DROP, STORAGE_TIMEOUT, ring())
    );
}

// Each dropped response costs the proxy's whole storage timeout: a shorter one for this
// test (an honest response slower than it is failed and resent too, and counts as caught
// above the tries, which the check allows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dropped_response_is_detected_and_honest_operation_resumes() {
    tokio::join!(
        attack(DROP..DROP + 1, DROP_TIMEOUT, path()),
        attack(DROP..DROP + 1, DROP_TIMEOUT, ring())
    );
}

/// 64 blocks of 32 bytes, one slot every 4 ms.
fn path() -> Shape {
    Shape::new(64, 32, 1)
        .expect("shape")
        .with_schedule(1, 4)
        .expect("shape")
        .with_mail(0, 0)
}

/// The same store in Ring ORAM, two slots every 4 ms: a response of one slot holds a
/// single XOR answer but on evictions, and swapping or reordering answers needs two.
fn ring() -> Shape {
    Shape::ring(64, 32, 1)
        .expect("shape")
        .with_schedule(2, 4)
        .expect("shape")
        .with_mail(0, 0)
}

/// Tries each of `attacks` on its own stack of `shape`, with the proxy's storage timeout
/// `storage_timeout`.
async fn attack(attacks: std::ops::Range<u8>, storage_timeout: Duration, shape: Shape) {
    let mode = if shape.is_ring() { "Ring" } else { "Path" };
    let mut stack = Stack::start(shape).await.expect("stack");
    // Put the man in the middle between the proxy and storage.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mitm_addr = listener.local_addr().unwrap();
    let mitm = Arc::new(Mitm::default());
    tokio::spawn(run_mitm(
        mitm.clone(),
        listener,
        stack.storage,
        stack.tls.server().unwrap(),
        stack.tls.proxy_client().unwrap(),
    ));
    stack.kill_proxy().await;
    stack.storage = mitm_addr;
    stack.storage_timeout = storage_timeout;
    stack.start_proxy().await.expect("proxy");

    let mut rng = StdRng::seed_from_u64(7);
    // Each dropped response costs a reconnection; the first wait before it is cut from the
    // default 50 ms (a production client's courtesy to a failing proxy) to keep the DROP
    // phase short. When the client resends is not what this test checks.
    let mut config = stack.client_config().unwrap();
    config.min_backoff = Duration::from_millis(2);
    let (client, task) = Client::start(
        config,
        Key::generate(&mut rng),
        shroud_client::random_grant(&mut rng),
    )
    .await
    .expect("client");
    // Fill the store, so that every bucket on every path is present and has a history.
    let mut model: Vec<Vec<u8>> = (0..64u8).map(|a| vec![a; 32]).collect();
    for (a, v) in model.iter().enumerate() {
        client
            .write(a as u64, v.clone())
            .await
            .expect("honest write");
    }
    for _ in 0..64 {
        let a = rng.random_range(0..64u64);
        client.read(a).await.expect("honest read");
    }
    let stats = client.stats();
    let n = tries();
    let mut results = Vec::new();
    for attack in attacks {
        let name = ATTACKS[usize::from(attack)];
        mitm.attack.store(attack, SeqCst);
        // A tampered response is either refused by the client (an integrity failure) or
        // never reaches it: storage was slower than the proxy's timeout (an fsync can be),
        // so the proxy failed the epoch and the client resent it (a failed exchange). Either
        // way nothing tampered is accepted, which the reads below check against the model.
        let caught = || {
            let timed_out = stats.failed_exchanges.load(SeqCst);
            if attack == DROP {
                timed_out
            } else {
                stats.integrity_failures.load(SeqCst) + timed_out
            }
        };
        let (t0, d0) = (mitm.tries.load(SeqCst), caught());
        let (i0, f0) = (
            stats.integrity_failures.load(SeqCst),
            stats.failed_exchanges.load(SeqCst),
        );
        let started = Instant::now();
        let mut refused_ops = 0u64;
        while mitm.tries.load(SeqCst) - t0 < n {
            mitm.armed.store(true, SeqCst);
            // Work through the attack: a refused operation fails whole, with a typed error.
            let a = rng.random_range(0..64u64);
            let r = if rng.random_bool(0.5) {
                let v = vec![rng.random::<u8>(); 32];
                let r = client.write(a, v.clone()).await;
                if r.is_ok() {
                    model[a as usize] = v;
                }
                r.map(|_| ())
            } else {
                client
                    .read(a)
                    .await
                    .map(|got| assert_eq!(got, model[a as usize], "verified data only"))
            };
            match r {
                Ok(()) => {}
                Err(ClientError::Integrity(_)) => refused_ops += 1,
                Err(e) => panic!("{name}: unexpected error {e}"),
            }
            while mitm.armed.load(SeqCst) && started.elapsed() < Duration::from_secs(600) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        // Let the last tampered epoch finish: wait for its detection (or give up after 30 s,
        // and the count below fails) rather than for a fixed time a loaded machine can miss.
        let tried = mitm.tries.load(SeqCst) - t0;
        let waiting = Instant::now();
        while caught() - d0 < tried && waiting.elapsed() < Duration::from_secs(30) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let detected = caught() - d0;
        let (refused, timed_out) = (
            stats.integrity_failures.load(SeqCst) - i0,
            stats.failed_exchanges.load(SeqCst) - f0,
        );
        let how = if attack == DROP {
            "caught by the proxy's storage timeout, the epoch resent".to_string()
        } else {
            format!(
                "caught: {refused} at the first read (integrity error; the same slots resent until they verify), {timed_out} timed out at the proxy before reaching the client"
            )
        };
        println!(
            "{mode} ORAM, {name}: {tried} tries, {detected} {how}; {refused_ops} operations failed with a typed error; {:.1} s",
            started.elapsed().as_secs_f64()
        );
        results.push((name, tried, detected));
        // Honest again: every block is what the model says.
        mitm.attack.store(0, SeqCst);
        for (a, v) in model.iter().enumerate() {
            assert_eq!(
                &client.read(a as u64).await.expect("honest read"),
                v,
                "{mode} ORAM, {name}"
            );
        }
    }
    // Every try was caught. A count above the tries is an honest response that storage was
    // slower than the proxy's timeout to give (an fsync can be): the proxy failed that epoch
    // too and the client resent it, which is the system working, not a missed attack; that
    // nothing tampered was accepted is what the model check after each phase shows.
    for (name, tried, detected) in results {
        assert!(tried >= n, "{mode} ORAM, {name}: {tried} tries");
        assert!(
            detected >= tried,
            "{mode} ORAM, {name}: {detected} of {tried} tries caught"
        );
    }
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
}

//! Issue 12, finding 2: a storage server that corrupts one reply must not learn, from what the
//! client reads next, whether the corrupted access was real or a dummy. Before the fix a
//! client undid a batch that failed verification and its caller retried: a real access read
//! the same leaf again within an epoch or two (its block had not moved), a dummy almost never.
//! Now the client resends the identical slots until they verify, for a real access and a
//! dummy alike, so the corrupted path comes back at once in both cases.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use parking_lot::Mutex;
use rand::RngExt;
use shroud_proto::{Shape, StoreId};
use shroud_storage::{Backend, BackendError, Put, SledBackend, StoreMeta, Usage};

/// Leaf reads of each store between two corruptions of it.
const PERIOD: u64 = 12;
/// Reads of a store before its first corruption.
const WARM_UP: u64 = 24;
/// How far ahead a re-read of the corrupted leaf counts.
const HORIZON: usize = 10;

fn shape() -> Shape {
    Shape::new(256, 64, 1)
        .expect("shape")
        .with_schedule(1, 20)
        .expect("shape")
        .with_mail(0, 0)
}

/// What a test storage does to each bucket it reads (after reading it); returns whether the
/// bucket is present.
trait OnRead: Send + Sync + 'static {
    fn on_read(&self, store: &StoreId, bucket: u64, present: bool, out: &mut [u8]) -> bool;
}

/// A sled backend whose reads go through `hook`; everything else is sled's.
struct Tapped<H> {
    inner: SledBackend,
    hook: H,
}

/// A stack over sled storage whose reads go through `hook`.
async fn tapped<H: OnRead>(
    shape: Shape,
    hook: H,
) -> (Arc<Tapped<H>>, shroud_testkit::stack::Stack) {
    let dir = tempfile::tempdir().expect("dir");
    let backend = Arc::new(Tapped {
        inner: SledBackend::open(&dir.path().join("db")).expect("sled"),
        hook,
    });
    let stack = shroud_testkit::stack::Stack::start_with(
        shape,
        backend.clone(),
        shroud_testkit::fixtures::storage_config(),
        dir,
    )
    .await
    .expect("stack");
    (backend, stack)
}

impl<H: OnRead> Backend for Tapped<H> {
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
        let present = self.inner.read(store, bucket, out)?;
        Ok(self.hook.on_read(store, bucket, present, out))
    }
    fn contains(&self, store: &StoreId, bucket: u64) -> Result<bool, BackendError> {
        self.inner.contains(store, bucket)
    }
    fn apply(&self, puts: &[Put<'_>]) -> Result<(), BackendError> {
        self.inner.apply(puts)
    }
    fn outbox_create(&self, index: u64, cap_hash: &[u8; 32]) -> Result<bool, BackendError> {
        self.inner.outbox_create(index, cap_hash)
    }
    fn outboxes(&self) -> Result<Vec<(u64, [u8; 32])>, BackendError> {
        self.inner.outboxes()
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

/// Flips a byte of every store's leaf bucket once every [`PERIOD`] batches, and remembers
/// every leaf it served per store, in order, marking the corrupted ones.
struct Corrupting {
    first_leaf: u64,
    on: AtomicBool,
    /// Per store: every leaf read, in order, and whether it was corrupted.
    leaves: Mutex<HashMap<StoreId, Vec<(u64, bool)>>>,
}

impl OnRead for Corrupting {
    fn on_read(&self, store: &StoreId, bucket: u64, present: bool, out: &mut [u8]) -> bool {
        if bucket < self.first_leaf {
            return present;
        }
        let mut leaves = self.leaves.lock();
        let seen = leaves.entry(*store).or_default();
        let n = seen.len() as u64;
        let corrupt = self.on.load(Relaxed) && present && n >= WARM_UP && n.is_multiple_of(PERIOD);
        if corrupt {
            let at = rand::rng().random_range(0..out.len());
            out[at] ^= 0x40;
        }
        seen.push((bucket, corrupt));
        present
    }
}

/// Of the corruptions in `reads`, how many saw their leaf read again within [`HORIZON`].
fn reread(reads: &[(u64, bool)]) -> (u64, u64) {
    let (mut trials, mut again) = (0, 0);
    for (i, &(leaf, corrupted)) in reads.iter().enumerate() {
        if !corrupted || i + HORIZON >= reads.len() {
            continue;
        }
        trials += 1;
        again += u64::from(reads[i + 1..=i + HORIZON].iter().any(|r| r.0 == leaf));
    }
    (trials, again)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_reply_is_followed_by_the_same_reads_for_real_and_dummy_accesses() {
    const CLIENTS: usize = 10;
    const TRIALS: u64 = 1000;
    let s = shape();
    let height = s.path_len + s.cached_levels - 1;
    let (backend, stack) = tapped(
        s,
        Corrupting {
            first_leaf: (1u64 << height) - 1,
            on: AtomicBool::new(true),
            leaves: Mutex::default(),
        },
    )
    .await;
    let mut rng = rand::rng();
    let mut busy = Vec::new();
    let mut idle = Vec::new();
    for i in 0..2 * CLIENTS {
        let grant = shroud_client::random_grant(&mut rng);
        let store = grant.store;
        let (client, task) = shroud_client::Client::start(
            stack.client_config().expect("config"),
            shroud_oram::Key::generate(&mut rng),
            grant,
        )
        .await
        .expect("client");
        if i % 2 == 0 {
            busy.push((store, client, task));
        } else {
            idle.push((store, client, task));
        }
    }
    // Every block is written first, so that a real read follows its block's leaf; then busy
    // clients read in every epoch (two readers each, so one is always queued), a failed read
    // retried on the same address, as a caller would.
    backend.hook.on.store(false, Relaxed);
    let fill = busy.iter().map(|(_, c, _)| {
        let c = c.clone();
        async move {
            for a in 0..256u64 {
                c.write(a, vec![a as u8; 64]).await.expect("write");
            }
        }
    });
    futures::future::join_all(fill).await;
    backend.hook.leaves.lock().clear();
    backend.hook.on.store(true, Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = busy
        .iter()
        .flat_map(|(_, c, _)| [c.clone(), c.clone()])
        .map(|c| {
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Relaxed) {
                    let a = rand::rng().random_range(0..256u64);
                    while c.read(a).await.is_err() && !stop.load(Relaxed) {}
                }
            })
        })
        .collect();
    let count = |stores: &[StoreId]| -> (u64, u64) {
        let leaves = backend.hook.leaves.lock();
        stores
            .iter()
            .map(|s| reread(leaves.get(s).map_or(&[][..], Vec::as_slice)))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    };
    let busy_stores: Vec<StoreId> = busy.iter().map(|b| b.0).collect();
    let idle_stores: Vec<StoreId> = idle.iter().map(|b| b.0).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(300);
    while (count(&busy_stores).0 < TRIALS || count(&idle_stores).0 < TRIALS)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    backend.hook.on.store(false, Relaxed);
    stop.store(true, Relaxed);
    for w in workers {
        let _ = tokio::time::timeout(Duration::from_secs(5), w).await;
    }
    let failures: u64 = busy
        .iter()
        .chain(&idle)
        .map(|(_, c, _)| c.stats().integrity_failures.load(Relaxed))
        .sum();
    let (real, dummy) = (count(&busy_stores), count(&idle_stores));
    for (_, c, t) in busy.into_iter().chain(idle) {
        drop(c);
        let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
    }
    let rate = |(n, k): (u64, u64)| k as f64 / n.max(1) as f64;
    println!(
        "corrupted leaf read again within {HORIZON} epochs: real {}/{} ({:.3}), dummy {}/{} ({:.3}); {failures} integrity failures seen by the clients",
        real.1,
        real.0,
        rate(real),
        dummy.1,
        dummy.0,
        rate(dummy)
    );
    assert!(
        real.0 >= TRIALS && dummy.0 >= TRIALS,
        "too few trials: {real:?} {dummy:?}"
    );
    assert!(
        failures >= real.0 + dummy.0 - 2 * CLIENTS as u64,
        "corruptions went unnoticed"
    );
    // The same behaviour for both: two-proportion z below 5 (here both are resent at once).
    let (p1, p2) = (rate(real), rate(dummy));
    let p = (real.1 + dummy.1) as f64 / (real.0 + dummy.0) as f64;
    let se = (p * (1.0 - p) * (1.0 / real.0 as f64 + 1.0 / dummy.0 as f64)).sqrt();
    let z = if p1 == p2 {
        0.0
    } else {
        (p1 - p2).abs() / se.max(1e-12)
    };
    assert!(
        z < 5.0,
        "a corrupted real access and a dummy are followed differently: {p1:.3} vs {p2:.3} (|z| {z:.1})"
    );
}

/// When armed, holds the first read of one store until disarmed: the batch is seen (its
/// paths in storage's transcript) but its answer never reaches the client.
struct Stalling {
    target: Mutex<Option<StoreId>>,
    armed: AtomicBool,
    /// A read was held.
    held: AtomicBool,
}

impl OnRead for Stalling {
    fn on_read(&self, store: &StoreId, _bucket: u64, present: bool, _out: &mut [u8]) -> bool {
        let hold = self.armed.load(Relaxed)
            && *self.target.lock() == Some(*store)
            && !self.held.swap(true, Relaxed);
        let waited = std::time::Instant::now();
        while hold && self.armed.load(Relaxed) && waited.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(5));
        }
        present
    }
}

/// The rule after a crash: a client killed while storage holds its batch (the paths seen,
/// the answer lost) replays that very batch when it restarts, from the plan its write-ahead
/// record saved before the reads left, instead of reading its blocks' old leaves afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_batch_replays_the_same_paths() {
    use shroud_client::durable::{Durable, Unlock};
    let s = Shape::new(256, 64, 1)
        .expect("shape")
        .with_schedule(1, 50)
        .expect("shape")
        .with_mail(0, 0);
    let state_dir = tempfile::tempdir().expect("state dir");
    let (backend, mut stack) = tapped(
        s,
        Stalling {
            target: Mutex::default(),
            armed: AtomicBool::new(false),
            held: AtomicBool::new(false),
        },
    )
    .await;
    let (state, unlock) = (
        state_dir.path().join("state"),
        Unlock::KeyFile(state_dir.path().join("key")),
    );
    let open = |stack: &shroud_testkit::stack::Stack| {
        let config = stack.client_config().expect("config");
        let (state, unlock) = (state.clone(), unlock.clone());
        async move {
            if !Durable::exists(&state) {
                shroud_client::Client::create(&config, &state, &unlock)
                    .await
                    .expect("create");
            }
            let (durable, meta) = Durable::open(&state, &unlock).expect("open");
            let store = meta.grant.store;
            let (client, task) = shroud_client::Client::open(config, Arc::new(durable), &meta)
                .await
                .expect("client");
            (client, task, store)
        }
    };
    let (client, task, store) = open(&stack).await;
    for a in 0..32u64 {
        client.write(a, vec![a as u8; 64]).await.expect("write");
    }
    // A read goes out; storage holds the batch it is in; the proxy dies; the client is killed.
    *backend.hook.target.lock() = Some(store);
    backend.hook.armed.store(true, Relaxed);
    let pending = tokio::spawn({
        let c = client.clone();
        async move { c.read(7).await }
    });
    let waited = std::time::Instant::now();
    while !backend.hook.held.load(Relaxed) && waited.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(backend.hook.held.load(Relaxed), "storage held a batch");
    stack.kill_proxy().await;
    task.abort();
    let _ = task.await;
    pending.abort();
    drop(client);
    backend.hook.armed.store(false, Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // What storage saw of this store, batch by batch (its transcript has every read, also
    // those a batch serves from its own writes).
    let batches = |stack: &shroud_testkit::stack::Stack| -> Vec<Vec<u64>> {
        let id = store.to_string();
        shroud_storage::Transcript::read(&stack.transcript)
            .expect("transcript")
            .into_iter()
            .filter(|e| e.op == shroud_storage::Op::Batch)
            .filter_map(|e| {
                let g = e.stores.iter().position(|s| *s == id)? as u32;
                Some(e.reads.iter().filter(|r| r.0 == g).map(|r| r.1).collect())
            })
            .collect()
    };
    let before = batches(&stack).len();
    // Restart: proxy, then the client from its saved state.
    stack.start_proxy().await.expect("proxy");
    let (client, task, _) = open(&stack).await;
    assert_eq!(client.read(7).await.expect("read"), vec![7u8; 64]);
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    let all = batches(&stack);
    assert!(
        before >= 1 && all.len() > before,
        "no batch after the restart"
    );
    let (held_batch, first_after) = (&all[before - 1], &all[before]);
    println!(
        "held batch read {held_batch:?}; the first batch after the restart read {first_after:?}"
    );
    assert_eq!(
        held_batch, first_after,
        "the restarted client read other paths than its interrupted batch"
    );
}

/// Corrupts one read of one store, once armed.
struct CorruptOnce {
    target: Mutex<Option<StoreId>>,
    armed: AtomicBool,
}

impl OnRead for CorruptOnce {
    fn on_read(&self, store: &StoreId, _bucket: u64, present: bool, out: &mut [u8]) -> bool {
        if present && *self.target.lock() == Some(*store) && self.armed.swap(false, Relaxed) {
            out[out.len() / 2] ^= 0x01;
        }
        present
    }
}

/// A client with saved state and a mailbox saves what its mailbox read in the epoch whose
/// ORAM reply failed verification (while that batch is still out, to be sent again), and
/// carries on: it used to stop there, since the engine cannot be saved mid-batch, so that
/// one corrupted reply took a mail user offline, which the operators see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mail_client_with_saved_state_carries_on_after_a_corrupted_reply() {
    use shroud_client::durable::{Durable, Unlock};
    use std::sync::atomic::Ordering::Relaxed;
    let s = Shape::new(256, 64, 1)
        .expect("shape")
        .with_schedule(1, 40)
        .expect("shape")
        .with_board(256, 2)
        .expect("board")
        .with_mail(10, 1);
    let state_dir = tempfile::tempdir().expect("state dir");
    let (backend, stack) = tapped(
        s,
        CorruptOnce {
            target: Mutex::default(),
            armed: AtomicBool::new(false),
        },
    )
    .await;
    let config = stack.client_config().expect("config");
    let (state, unlock) = (
        state_dir.path().join("state"),
        Unlock::KeyFile(state_dir.path().join("key")),
    );
    shroud_client::Client::create(&config, &state, &unlock)
        .await
        .expect("create");
    let (durable, meta) = Durable::open(&state, &unlock).expect("open");
    let (client, task) = shroud_client::Client::open(config, Arc::new(durable), &meta)
        .await
        .expect("client");
    client.write(3, vec![3; 64]).await.expect("write");
    *backend.hook.target.lock() = Some(meta.grant.store);
    backend.hook.armed.store(true, Relaxed);
    let waited = std::time::Instant::now();
    while client.stats().integrity_failures.load(Relaxed) == 0
        && waited.elapsed() < Duration::from_secs(20)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(client.stats().integrity_failures.load(Relaxed), 1);
    let epochs = client.stats().epochs.load(Relaxed);
    client
        .write(4, vec![4; 64])
        .await
        .expect("write after the failure");
    assert_eq!(client.read(3).await.expect("read"), vec![3u8; 64]);
    assert!(client.stats().epochs.load(Relaxed) > epochs);
    assert!(!task.is_finished(), "the scheduler stopped");
    drop(client);
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
}

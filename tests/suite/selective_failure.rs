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
use shroud_storage::backend::QueueOp;
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

/// Storage that flips a byte of every store's leaf bucket once every [`PERIOD`] batches,
/// and remembers every leaf it served per store, in order, marking the corrupted ones.
struct Corrupting {
    inner: SledBackend,
    first_leaf: u64,
    on: AtomicBool,
    /// Per store: every leaf read, in order, and whether it was corrupted.
    leaves: Mutex<HashMap<StoreId, Vec<(u64, bool)>>>,
}

impl Backend for Corrupting {
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
        if bucket < self.first_leaf {
            return Ok(present);
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
        Ok(present)
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
        self.inner.queue_read(store, from, max)
    }
    fn apply_queue(&self, ops: &[QueueOp<'_>]) -> Result<(), BackendError> {
        self.inner.apply_queue(ops)
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
    let dir = tempfile::tempdir().expect("dir");
    let backend = Arc::new(Corrupting {
        inner: SledBackend::open(&dir.path().join("db")).expect("sled"),
        first_leaf: (1u64 << height) - 1,
        on: AtomicBool::new(true),
        leaves: Mutex::default(),
    });
    let stack = shroud_testkit::stack::Stack::start_with(
        s,
        backend.clone(),
        shroud_storage::Config::default(),
        dir,
    )
    .await
    .expect("stack");
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
    backend.on.store(false, Relaxed);
    let fill = busy.iter().map(|(_, c, _)| {
        let c = c.clone();
        async move {
            for a in 0..256u64 {
                c.write(a, vec![a as u8; 64]).await.expect("write");
            }
        }
    });
    futures::future::join_all(fill).await;
    backend.leaves.lock().clear();
    backend.on.store(true, Relaxed);
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
        let leaves = backend.leaves.lock();
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
    backend.on.store(false, Relaxed);
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

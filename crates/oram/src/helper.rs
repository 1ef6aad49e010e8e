//! The second core: a helper thread that authenticates and decrypts fetched buckets while the
//! store is still supplying the rest of the round.
//!
//! Reading a path is two kinds of work: the store's (copying 21 sealed buckets in from
//! memory or the network) and the engine's (AES-GCM open of each). They need not wait for
//! each other: as soon as a bucket is complete the engine hands its buffer to this thread,
//! which opens it while the store supplies the next. What the helper does is only the AEAD
//! check and decryption of one bucket under its own nonce, tag and associated data; the
//! digest chain (each bucket's nonce and tag against its parent's record, top down) is still
//! checked on the caller's thread before any plaintext is used, so the engine accepts
//! exactly what it accepts without the helper.
//!
//! Buffers move to the thread and back by value: nothing is shared but the sealer.
//!
//! The thread spins for [`SPIN`] after its last bucket before it sleeps, so that the next
//! access (tens of microseconds later in a busy engine) does not pay a wake-up; an idle
//! engine costs one such spin per batch.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use zeroize::Zeroize;

use crate::BucketId;
use crate::seal::Sealer;

/// How long either side polls for the other before it blocks.
const SPIN: Duration = Duration::from_micros(100);
/// How long each side sleeps on its channel once when the helper starts ([`warm`]).
const WARM: Duration = Duration::from_millis(5);
/// Polls that only pause the processor before [`poll`] starts yielding.
const PAUSES: u32 = 256;

/// One bucket to open, and on its way back, whether it opened.
pub(crate) struct Item {
    pub id: BucketId,
    /// The round position the buffer belongs to.
    pub position: usize,
    pub buf: Vec<u8>,
    /// Set by the helper: the tag checked and the plaintext region decrypted in place.
    pub opened: bool,
}

/// A bucket on its way back holds its plaintext: wiped if dropped there (the helper gone).
impl Drop for Item {
    fn drop(&mut self) {
        self.buf.zeroize();
    }
}

/// A group of buckets: one message each way, whatever the group's size (a message costs a
/// few hundred nanoseconds, more than opening a small bucket).
pub(crate) struct Job {
    /// The sealer to open with from now on, when it changed since the last job (a
    /// reference count bumped per job would bounce its cache line between the cores).
    sealer: Option<Arc<Sealer>>,
    pub items: Vec<Item>,
}

/// The handle to the helper thread; the thread ends when this is dropped.
pub(crate) struct Helper {
    jobs: Option<SyncSender<Job>>,
    /// In a mutex only so that the engine stays `Sync`; only `&mut self` takes from it.
    done: Mutex<Receiver<Job>>,
    /// The sealer the thread has.
    sealer: Option<Arc<Sealer>>,
    /// Jobs handed over and not yet taken back.
    away: usize,
    /// Emptied groups, reused so that a round allocates nothing.
    spare: Vec<Vec<Item>>,
    /// Buckets the thread has opened (or tried to), since it started.
    opened: u64,
    thread: Option<JoinHandle<()>>,
}

impl Helper {
    /// Starts the thread, for rounds of at most `groups` groups of at most `size` buckets.
    /// The channels and the groups are allocated here, so that a round allocates nothing.
    pub fn spawn(groups: usize, size: usize) -> std::io::Result<Self> {
        let (jobs, todo) = mpsc::sync_channel::<Job>(groups);
        let (finished, done) = mpsc::sync_channel::<Job>(groups);
        let thread = std::thread::Builder::new()
            .name("shroud-oram-helper".into())
            .spawn(move || {
                let Ok(mut first) = warm(&todo) else { return };
                let mut sealer: Option<Arc<Sealer>> = None;
                while let Some(mut job) = first.take().or_else(|| poll(&todo)) {
                    if let Some(s) = job.sealer.take() {
                        sealer = Some(s);
                    }
                    for item in &mut job.items {
                        item.opened = sealer
                            .as_ref()
                            .is_some_and(|s| s.open_body(item.id, &mut item.buf).is_ok());
                    }
                    if finished.send(job).is_err() {
                        return;
                    }
                }
            })?;
        // Nothing was sent yet, so this only sleeps (or finds the thread gone).
        let _ = warm(&done);
        Ok(Helper {
            jobs: Some(jobs),
            done: Mutex::new(done),
            sealer: None,
            away: 0,
            spare: (0..groups).map(|_| Vec::with_capacity(size)).collect(),
            opened: 0,
            thread: Some(thread),
        })
    }

    /// An empty group to fill and hand over.
    pub fn group(&mut self) -> Vec<Item> {
        self.spare.pop().unwrap_or_default()
    }

    /// Hands `items` to the thread to open with `sealer`; gives them back if the thread is
    /// gone.
    pub fn open(&mut self, sealer: &Arc<Sealer>, items: Vec<Item>) -> Result<(), Vec<Item>> {
        let Some(jobs) = &self.jobs else {
            return Err(items);
        };
        let changed = !self.sealer.as_ref().is_some_and(|s| Arc::ptr_eq(s, sealer));
        let job = Job {
            sealer: changed.then(|| Arc::clone(sealer)),
            items,
        };
        jobs.send(job).map_err(|e| e.0.items)?;
        if changed {
            self.sealer = Some(Arc::clone(sealer));
        }
        self.away += 1;
        Ok(())
    }

    /// The next finished group, waiting for it; `None` if nothing is away, or if the thread
    /// died (what it held is then lost). Give the emptied group back with
    /// [`Helper::recycle`].
    pub fn take(&mut self) -> Option<Vec<Item>> {
        if self.away == 0 {
            return None;
        }
        let done = self.done.get_mut().unwrap_or_else(PoisonError::into_inner);
        match poll(done) {
            Some(job) => {
                self.away -= 1;
                self.opened += job.items.len() as u64;
                Some(job.items)
            }
            None => {
                self.away = 0;
                self.jobs = None;
                None
            }
        }
    }

    /// Buckets the thread has opened (or tried to), since it started.
    pub fn opened(&self) -> u64 {
        self.opened
    }

    /// Keeps an emptied group for reuse.
    pub fn recycle(&mut self, mut items: Vec<Item>) {
        items.clear();
        self.spare.push(items);
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sleeps once on `rx`, for at most [`WARM`]: the first time a thread sleeps on a channel,
/// std allocates the thread's waiting context and the channel's list of waiters, and this
/// makes that happen when the helper starts rather than in some round (a round allocates
/// nothing). Returns a message that came meanwhile; `Err` once the sender is gone.
fn warm<T>(rx: &Receiver<T>) -> Result<Option<T>, RecvTimeoutError> {
    match rx.recv_timeout(WARM) {
        Ok(m) => Ok(Some(m)),
        Err(RecvTimeoutError::Timeout) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The next message: polled for [`SPIN`], then waited for. `None` once the sender is gone.
///
/// The first polls only pause the processor (the other side is usually a few hundred
/// nanoseconds away); later ones yield, in case the other thread waits for this core (a new
/// thread starts on its parent's core until the scheduler moves it).
fn poll<T>(rx: &Receiver<T>) -> Option<T> {
    let start = Instant::now();
    let mut spins = 0u32;
    loop {
        match rx.try_recv() {
            Ok(m) => return Some(m),
            Err(TryRecvError::Disconnected) => return None,
            Err(TryRecvError::Empty) => {}
        }
        spins = spins.saturating_add(1);
        if spins < PAUSES {
            std::hint::spin_loop();
        } else if start.elapsed() > SPIN {
            return rx.recv().ok();
        } else {
            std::thread::yield_now();
        }
    }
}

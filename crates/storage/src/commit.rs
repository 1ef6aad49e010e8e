//! Group commit: a batch is acknowledged only once durable, and concurrent batches share
//! one flush.
//!
//! Every mutation takes a sequence number after it is applied. One flusher task runs the
//! engine's flush whenever someone waits, and on return marks durable everything applied
//! before that flush began. A batch waits until its number is marked. Batches arriving during
//! a flush are covered by the next one, so under load each flush serves many batches.
//!
//! A failed flush poisons the commit: every later wait fails, and the server must be
//! restarted (after an fsync error the state of the page cache is unknown; see the
//! PostgreSQL "fsyncgate" discussion of 2018).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use tokio::sync::{Notify, watch};

use crate::backend::Backend;
use crate::stats::Stats;

/// The shared sequence numbers.
pub struct GroupCommit {
    applied: AtomicU64,
    flushed: watch::Sender<u64>,
    wake: Notify,
    poisoned: AtomicBool,
}

/// The flush that would have made a batch durable failed.
#[derive(Debug, thiserror::Error)]
#[error("flush failed: the server must be restarted")]
pub struct Poisoned;

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            applied: AtomicU64::new(0),
            flushed: watch::Sender::new(0),
            wake: Notify::new(),
            poisoned: AtomicBool::new(false),
        }
    }
}

impl GroupCommit {
    /// Records one applied mutation; returns its sequence number. Call while holding the
    /// execution lock, right after applying.
    pub fn applied(&self) -> u64 {
        self.applied.fetch_add(1, Ordering::SeqCst) + 1
    }

    /// The sequence number of the last applied mutation (what a reader has seen).
    pub fn current(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }

    /// Waits until mutation `seq` (and all before it) is durable.
    pub async fn durable(&self, seq: u64) -> Result<(), Poisoned> {
        let mut rx = self.flushed.subscribe();
        if *rx.borrow() >= seq {
            return self.check();
        }
        self.wake.notify_one();
        let _ = rx
            .wait_for(|f| *f >= seq || self.poisoned.load(Ordering::SeqCst))
            .await;
        self.check()
    }

    fn check(&self) -> Result<(), Poisoned> {
        if self.poisoned.load(Ordering::SeqCst) {
            Err(Poisoned)
        } else {
            Ok(())
        }
    }

    /// The flusher: run it as a task for the server's lifetime.
    pub async fn run_flusher(self: Arc<Self>, backend: Arc<dyn Backend>, stats: Arc<Stats>) {
        loop {
            self.wake.notified().await;
            loop {
                let target = self.current();
                if target <= *self.flushed.borrow() || self.poisoned.load(Ordering::SeqCst) {
                    break;
                }
                let start = Instant::now();
                let b = backend.clone();
                let result = tokio::task::spawn_blocking(move || b.flush()).await;
                match result {
                    Ok(Ok(())) => {
                        stats.flushed(start.elapsed());
                        self.flushed.send_replace(target);
                    }
                    Ok(Err(e)) => {
                        tracing::error!("flush failed, refusing all further batches: {e}");
                        self.poison();
                    }
                    Err(e) => {
                        tracing::error!("flush task failed: {e}");
                        self.poison();
                    }
                }
            }
        }
    }

    fn poison(&self) {
        self.poisoned.store(true, Ordering::SeqCst);
        self.flushed.send_modify(|_| {});
    }
}

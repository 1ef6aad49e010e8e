//! Server counters, read by the `Stats` request.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use shroud_proto::StatsReply;

/// Counters, updated lock-free.
#[derive(Default)]
pub struct Stats {
    pub batches: AtomicU64,
    pub buckets_read: AtomicU64,
    pub buckets_written: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    pub flushes: AtomicU64,
    pub flush_total_us: AtomicU64,
    pub flush_max_us: AtomicU64,
    pub active_connections: AtomicU64,
    pub rejected: AtomicU64,
    pub stores: AtomicU64,
    pub stored_bytes: AtomicU64,
}

impl Stats {
    /// Records one flush.
    pub fn flushed(&self, took: Duration) {
        let us = took.as_micros() as u64;
        self.flushes.fetch_add(1, Relaxed);
        self.flush_total_us.fetch_add(us, Relaxed);
        self.flush_max_us.fetch_max(us, Relaxed);
    }

    /// A snapshot for the wire.
    pub fn reply(&self, disk_bytes: u64) -> StatsReply {
        let flushes = self.flushes.load(Relaxed);
        StatsReply {
            batches: self.batches.load(Relaxed),
            buckets_read: self.buckets_read.load(Relaxed),
            buckets_written: self.buckets_written.load(Relaxed),
            bytes_in: self.bytes_in.load(Relaxed),
            bytes_out: self.bytes_out.load(Relaxed),
            flushes,
            flush_mean_us: self
                .flush_total_us
                .load(Relaxed)
                .checked_div(flushes)
                .unwrap_or(0),
            flush_max_us: self.flush_max_us.load(Relaxed),
            active_connections: self.active_connections.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            stores: self.stores.load(Relaxed),
            stored_bytes: self.stored_bytes.load(Relaxed),
            disk_bytes,
        }
    }
}

//! Per-epoch counters, and how an operator reads them from a running proxy.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use shroud_net::frame_codec;
use shroud_net::transport::ClientTls;
use shroud_proto::histogram;
use shroud_proto::proxy::{ClientMsg, ProxyMsg, ProxyStats};
use shroud_proto::{CodecError, Hello, Limits, decode, encode};
use tokio_util::codec::Framed;

/// Why a proxy's counters could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchStatsError {
    /// Connecting, the handshake, or the connection failed.
    #[error("talking to the proxy: {0}")]
    Io(#[from] std::io::Error),
    /// A frame was not a message.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// No answer within the deadline.
    #[error("the proxy did not answer within {0:?}")]
    Timeout(Duration),
    /// The proxy closed the connection first.
    #[error("the proxy closed the connection")]
    Closed,
    /// The proxy refused or answered something else.
    #[error("unexpected reply from the proxy: {0}")]
    Unexpected(String),
}

/// Fetches a running proxy's counters (a hello, then a stats request).
pub async fn fetch_stats(addr: SocketAddr, tls: &ClientTls) -> Result<ProxyStats, FetchStatsError> {
    let io = tls.connect(addr).await?;
    let mut conn = Framed::new(io, frame_codec(Limits::default()));
    for msg in [ClientMsg::Hello(Hello::current()), ClientMsg::Stats] {
        conn.send(Bytes::from(encode(&msg, Limits::default())?))
            .await?;
    }
    let deadline = Duration::from_secs(10);
    loop {
        let frame = tokio::time::timeout(deadline, conn.next())
            .await
            .map_err(|_| FetchStatsError::Timeout(deadline))?
            .ok_or(FetchStatsError::Closed)??;
        match decode::<ProxyMsg>(&frame, Limits::default())? {
            ProxyMsg::Stats(s) => return Ok(s),
            ProxyMsg::Hello(..) => continue,
            other => return Err(FetchStatsError::Unexpected(format!("{other:?}"))),
        }
    }
}

/// Counters, updated lock-free.
pub struct Stats {
    /// Epochs run.
    pub epochs: AtomicU64,
    /// Clients registered now.
    pub clients: AtomicU64,
    /// Slots in the last epoch's batch.
    pub last_slots: AtomicU64,
    /// Slots that missed the last boundary.
    pub last_late: AtomicU64,
    /// The last batch's round trip to storage, microseconds.
    pub last_batch_us: AtomicU64,
    /// The slowest batch, microseconds.
    pub max_batch_us: AtomicU64,
    /// Epochs whose batch took longer than the epoch.
    pub overrun_epochs: AtomicU64,
    /// Epochs made longer so that the clients' next frames, sent a fixed time after a late
    /// batch's replies, still made it (`epoch::next_boundary`); logged, not in
    /// [`ProxyStats`] (a wire format).
    pub stretched_epochs: AtomicU64,
    /// Slots forwarded in all.
    pub slots: AtomicU64,
    /// Slots that missed their boundary, in all.
    pub late_total: AtomicU64,
    /// Time spent in batches, microseconds, in all.
    pub batch_total_us: AtomicU64,
    /// Slots storage failed for.
    pub failed_slots: AtomicU64,
    /// Connections refused or closed on an error.
    pub rejected: AtomicU64,
    /// The smallest slot frame seen, bytes.
    pub slot_frame_min: AtomicU64,
    /// The largest slot frame seen, bytes.
    pub slot_frame_max: AtomicU64,
    /// Round frames forwarded.
    pub round_frames: AtomicU64,
    /// The smallest round frame seen, bytes.
    pub round_frame_min: AtomicU64,
    /// The largest round frame seen, bytes.
    pub round_frame_max: AtomicU64,
    /// Rounds run.
    pub rounds: AtomicU64,
    /// Rounds that started after the next round's first epoch had begun.
    pub late_rounds: AtomicU64,
    /// Storage's time for the last round, microseconds.
    pub last_round_us: AtomicU64,
    /// Batches per round-trip class ([`shroud_proto::histogram`]).
    pub batch_histogram: Vec<AtomicU64>,
}

impl Stats {
    /// A snapshot for the wire.
    pub fn reply(&self) -> ProxyStats {
        ProxyStats {
            epochs: self.epochs.load(Relaxed),
            clients: self.clients.load(Relaxed),
            last_slots: self.last_slots.load(Relaxed),
            last_late: self.last_late.load(Relaxed),
            last_batch_us: self.last_batch_us.load(Relaxed),
            max_batch_us: self.max_batch_us.load(Relaxed),
            overrun_epochs: self.overrun_epochs.load(Relaxed),
            slots: self.slots.load(Relaxed),
            late_total: self.late_total.load(Relaxed),
            batch_total_us: self.batch_total_us.load(Relaxed),
            failed_slots: self.failed_slots.load(Relaxed),
            rejected: self.rejected.load(Relaxed),
            slot_frame_min: match self.slot_frame_min.load(Relaxed) {
                u64::MAX => 0,
                v => v,
            },
            slot_frame_max: self.slot_frame_max.load(Relaxed),
            round_frames: self.round_frames.load(Relaxed),
            round_frame_min: match self.round_frame_min.load(Relaxed) {
                u64::MAX => 0,
                v => v,
            },
            round_frame_max: self.round_frame_max.load(Relaxed),
            rounds: self.rounds.load(Relaxed),
            late_rounds: self.late_rounds.load(Relaxed),
            last_round_us: self.last_round_us.load(Relaxed),
            batch_histogram: self
                .batch_histogram
                .iter()
                .map(|c| c.load(Relaxed))
                .collect(),
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            epochs: AtomicU64::new(0),
            clients: AtomicU64::new(0),
            last_slots: AtomicU64::new(0),
            last_late: AtomicU64::new(0),
            last_batch_us: AtomicU64::new(0),
            max_batch_us: AtomicU64::new(0),
            overrun_epochs: AtomicU64::new(0),
            stretched_epochs: AtomicU64::new(0),
            slots: AtomicU64::new(0),
            late_total: AtomicU64::new(0),
            batch_total_us: AtomicU64::new(0),
            failed_slots: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            slot_frame_min: AtomicU64::new(u64::MAX),
            slot_frame_max: AtomicU64::new(0),
            round_frames: AtomicU64::new(0),
            round_frame_min: AtomicU64::new(u64::MAX),
            round_frame_max: AtomicU64::new(0),
            rounds: AtomicU64::new(0),
            late_rounds: AtomicU64::new(0),
            last_round_us: AtomicU64::new(0),
            batch_histogram: (0..histogram::CLASSES).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

//! The client-proxy protocol: fixed-size slots, one schedule for everyone.
//!
//! Every client of a proxy uses one store shape, the proxy's [`Shape`](crate::Shape), and sends exactly
//! `slots_per_epoch` [`Slot`]s per epoch. A slot is one complete ORAM access in two halves:
//! the write-back of an earlier access and the read of the next.
//! - Path ORAM: `path_len` buckets written (or `write = false` and zeros when there is none
//!   yet) and `path_len` bucket ids read. Every slot message has the same size, and so does
//!   every [`SlotDone`] reply.
//! - Ring ORAM: `path_len` slots read and answered as their XOR; the first slot of an epoch
//!   also carries the buckets the store's last batch rewrote and the slots this batch's
//!   maintenance reads, in counts fixed by the store's access count
//!   ([`Shape::ring_maintenance`](crate::Shape::ring_maintenance)).

use serde::{Deserialize, Serialize};

use crate::Shape;
use crate::board::PirBytes;
use crate::message::{ErrorCode, Grant, Hello, ReadResult, SlotRef};
use crate::sealed::Sealed;

/// One bucket of a write-back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotWrite {
    /// Bucket index.
    pub bucket: u64,
    /// Exactly `bucket_len` bytes.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
}

/// One access: the write-back of an earlier one, and the read of the next.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slot {
    /// The client's number for this slot; the reply carries it back.
    pub seq: u64,
    /// The client's store.
    pub grant: Grant,
    /// False when `writes` is padding (a Path ORAM client's first slot); in Ring ORAM,
    /// true exactly when there are writes.
    pub write: bool,
    /// Path ORAM: exactly `path_len` buckets. Ring ORAM: the buckets to rewrite (at most
    /// [`Shape::max_slot_writes`](crate::Shape::max_slot_writes)).
    pub writes: Vec<SlotWrite>,
    /// What to read after every write of the epoch.
    pub reads: Reads,
}

/// What a slot reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reads {
    /// Path ORAM: exactly `path_len` whole buckets, one answer each.
    Buckets(Vec<u64>),
    /// Ring ORAM: one slot of each of `path_len` buckets, answered as one XOR of them, then
    /// the maintenance slots (at most [`Shape::max_slot_reads`](crate::Shape::max_slot_reads)),
    /// one answer each.
    Slots {
        /// The online read.
        online: Vec<SlotRef>,
        /// Slots read one by one.
        each: Vec<SlotRef>,
    },
}

impl Reads {
    /// How many [`ReadResult`]s answer these reads.
    pub fn answers(&self) -> usize {
        match self {
            Reads::Buckets(b) => b.len(),
            Reads::Slots { each, .. } => 1 + each.len(),
        }
    }
}

/// One client's mail for one round (docs/mail-delivery.md), sent in the first epochs of the
/// round beside the slots: its outbox write and its PIR queries, real or dummy, of fixed sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundFrame {
    /// The client's number for this frame; the answer carries it back.
    pub seq: u64,
    /// The round it is for (its rows are sealed for it): the proxy takes it only in that
    /// round's window.
    pub round: u64,
    /// A sealed [`crate::board::OutboxWrite`] of the shape's `write_len` bytes.
    pub write: Sealed,
    /// Exactly `queries_per_round` queries of `query_len` bytes, answered with the key this
    /// connection sent.
    pub queries: Vec<PirBytes>,
}

/// The answer to a round frame: storage's sealed write status and the PIR answers, which
/// only the client opens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoundDone {
    /// The frame's `seq`.
    pub seq: u64,
    /// The round (its first epoch over `round_epochs`).
    pub round: u64,
    /// The sealed [`crate::board::WriteStatus`].
    pub written: Sealed,
    /// One answer of `answer_len` bytes per query, in order.
    pub answers: Vec<PirBytes>,
}

/// What a client sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// First message.
    Hello(Hello),
    /// Create (or confirm) the client's store with the proxy's shape, with the work that
    /// pays for it (the difficulty is in the proxy's hello).
    Register(Grant, crate::Work),
    /// An access.
    Slot(Slot),
    /// This connection's PIR key (when the shape has mail): once, before any round frame.
    ReaderKey(PirBytes),
    /// A round's mail, in the round's first epoch (when the shape has mail).
    Round(RoundFrame),
    /// Make, or find again, the outbox of a capability: a sealed
    /// [`crate::board::OutboxRequest`] (paid with work), taken before registration too, so a
    /// mailbox can be made on a connection of its own.
    Outbox(Sealed),
    /// The proxy's counters.
    Stats,
}

/// The reply to a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotDone {
    /// The slot's `seq`.
    pub seq: u64,
    /// The epoch whose batch carried it.
    pub epoch: u64,
    /// The slot's [`Reads::answers`] reads, in its order.
    pub reads: Vec<ReadResult>,
}

/// Per-epoch counters of a proxy.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStats {
    /// Epochs since start.
    pub epochs: u64,
    /// Clients connected now.
    pub clients: u64,
    /// Slots in the last epoch's batch.
    pub last_slots: u64,
    /// Connected clients times K, minus the slots in the last batch.
    pub last_late: u64,
    /// Storage round trip of the last batch, microseconds.
    pub last_batch_us: u64,
    /// Slowest batch so far, microseconds.
    pub max_batch_us: u64,
    /// Epochs whose batch went out after the next boundary (the proxy fell behind).
    pub overrun_epochs: u64,
    /// Slots sent to storage in total.
    pub slots: u64,
    /// Late slots summed over all epochs.
    pub late_total: u64,
    /// Storage round trips summed over all epochs, microseconds.
    pub batch_total_us: u64,
    /// Slots that failed at storage.
    pub failed_slots: u64,
    /// Connections refused or closed for errors.
    pub rejected: u64,
    /// Smallest slot frame received, bytes (in Path ORAM equal to the largest when every
    /// client keeps the shape; in Ring ORAM an online read alone, the largest carrying an
    /// eviction).
    pub slot_frame_min: u64,
    /// Largest slot frame received, bytes.
    pub slot_frame_max: u64,
    /// Round frames sent to storage in total.
    pub round_frames: u64,
    /// Smallest round frame received, bytes.
    pub round_frame_min: u64,
    /// Largest round frame received, bytes.
    pub round_frame_max: u64,
    /// Rounds run.
    pub rounds: u64,
    /// Rounds that started after the next round's first epoch had begun (storage's PIR work
    /// outlasted a round).
    pub late_rounds: u64,
    /// Storage's time for the last round (writes and every answer), microseconds.
    pub last_round_us: u64,
    /// Batches by round trip: entry `i` counts those in time class `i` of
    /// [`crate::histogram`] ([`crate::histogram::CLASSES`] entries), so that two snapshots
    /// give any window's tail.
    pub batch_histogram: Vec<u64>,
}

/// What a proxy sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyMsg {
    /// The proxy's hello, its shape, and the work storage asks for a new store.
    Hello(Hello, Shape, crate::Difficulty),
    /// The store exists with the proxy's shape.
    Registered,
    /// A slot's reads.
    Done(SlotDone),
    /// A slot the storage batch failed for (`seq`); the client resends it.
    Failed(u64, ErrorCode),
    /// The connection's PIR key is kept at storage.
    ReaderKept,
    /// A round frame's answers (they come when storage has answered the whole round, which
    /// may be epochs later).
    RoundDone(RoundDone),
    /// A round frame that was not run (`seq`): outside a round's first epoch, or storage
    /// failed. Its rows go again next round.
    RoundFailed(u64, ErrorCode),
    /// The sealed [`crate::board::OutboxReply`] to an [`ClientMsg::Outbox`].
    Outbox(Sealed),
    /// Counters.
    Stats(ProxyStats),
    /// A refusal; the connection closes.
    Error(ErrorCode),
}

//! The client-proxy protocol: fixed-size slots, one schedule for everyone.
//!
//! Every client of a proxy uses one store shape, the proxy's [`Shape`](crate::Shape), and sends exactly
//! `slots_per_epoch` [`Slot`]s per epoch. A slot is one complete ORAM access in two halves:
//! the write-back of an earlier access (`path_len` buckets, or `write = false` and zeros when
//! there is none yet) and the read of the next (`path_len` bucket ids). Every slot message has
//! the same size, and so does every [`SlotDone`] reply.

use serde::{Deserialize, Serialize};

use crate::Shape;
use crate::mail::Sealed;
use crate::message::{Envelope, ErrorCode, Grant, Hello, ReadResult};

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
    /// False when `writes` is padding (a client's first slot).
    pub write: bool,
    /// Exactly `path_len` buckets.
    pub writes: Vec<SlotWrite>,
    /// Exactly `path_len` bucket ids.
    pub reads: Vec<u64>,
}

/// One epoch's mail of one client: exactly D envelopes (real or dummy) and one sealed drain
/// request (real or dummy), all of fixed sizes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailSlot {
    /// The client's number for this slot; the reply carries it back.
    pub seq: u64,
    /// Exactly D envelopes of `envelope_len` bytes.
    pub deposits: Vec<Envelope>,
    /// A sealed [`crate::mail::DrainRequest`] of [`crate::mail::DRAIN_REQUEST_LEN`] bytes.
    pub drain: Sealed,
}

/// The reply to a mail slot: storage's sealed answers, which only the client opens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailDone {
    /// The slot's `seq`.
    pub seq: u64,
    /// The epoch whose batch carried it.
    pub epoch: u64,
    /// One sealed status per deposit, in order.
    pub deposited: Vec<Sealed>,
    /// The sealed drain reply.
    pub drained: Sealed,
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
    /// The epoch's mail (when the shape has a mailbox): at most one per epoch.
    Mail(MailSlot),
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
    /// Exactly `path_len` reads, in the slot's order.
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
    /// Smallest slot frame received, bytes (equal to the largest when every client keeps
    /// the shape).
    pub slot_frame_min: u64,
    /// Largest slot frame received, bytes.
    pub slot_frame_max: u64,
    /// Mail slots sent to storage in total.
    pub mail_slots: u64,
    /// Smallest mail frame received, bytes.
    pub mail_frame_min: u64,
    /// Largest mail frame received, bytes.
    pub mail_frame_max: u64,
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
    /// A mail slot's answers.
    MailDone(MailDone),
    /// A mail slot storage failed for (`seq`); the client sends its mail again.
    MailFailed(u64, ErrorCode),
    /// Counters.
    Stats(ProxyStats),
    /// A refusal; the connection closes.
    Error(ErrorCode),
}

//! The counters of one client, shared by the scheduler and whatever rides on it.

use std::sync::atomic::AtomicU64;

/// Counters of one client.
#[derive(Debug, Default)]
pub struct ClientStats {
    /// Epochs completed.
    pub epochs: AtomicU64,
    /// Real accesses served.
    pub real: AtomicU64,
    /// Dummy accesses sent.
    pub dummy: AtomicU64,
    /// Reconnections.
    pub reconnects: AtomicU64,
    /// Round frames sent (one per round when the proxy runs mail).
    pub mail_rounds: AtomicU64,
    /// Rows, answers or chunks refused: forged, altered, replayed, or malformed.
    pub mail_rejected: AtomicU64,
    /// Messages sent that the recipient acknowledged whole.
    pub mail_delivered: AtomicU64,
    /// Whole messages received.
    pub mail_received: AtomicU64,
    /// Epochs whose reads failed verification (the server's data was refused, the batch
    /// undone, the operations failed with [`ClientError::Integrity`]).
    pub integrity_failures: AtomicU64,
    /// Epochs the proxy reported failed at storage, or that got no reply: resent.
    pub failed_exchanges: AtomicU64,
    /// Epochs whose frames were ready only after their fixed send time: their timing may
    /// have shown how much work the client did (see `schedule`'s "When frames leave").
    pub late_sends: AtomicU64,
    /// Bytes of client state written to local disk since the state was opened (sealed
    /// records and pages handed to the state database).
    pub state_bytes: AtomicU64,
}

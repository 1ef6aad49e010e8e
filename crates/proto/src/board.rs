//! The outbox delivery's messages to storage (issue 13; docs/mail-delivery.md), in the forms
//! the client seals and storage opens; the proxy carries them sealed and learns nothing from
//! them.
//!
//! - [`OutboxRequest`] (sealed under [`OUTBOX_INFO`]): make, or find again, the outbox of a
//!   capability, paid for with work bound to `StoreId::of(capability)`; answered by a sealed
//!   [`OutboxReply`] naming the outbox's number.
//! - [`OutboxWrite`] (sealed under [`WRITE_INFO`]): one round's rows of one outbox; answered
//!   by a sealed [`WriteStatus`] byte.
//!
//! Every plaintext here has a fixed size for its board shape, so a sealed one's size says
//! nothing but the shape.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::message::{Capability, StoreId};
use crate::sealed::{REQUEST_OVERHEAD, RESPONSE_OVERHEAD};

/// The HPKE context label of outbox requests.
pub const OUTBOX_INFO: &[u8] = b"shroud-outbox-v1";
/// The HPKE context label of outbox writes.
pub const WRITE_INFO: &[u8] = b"shroud-write-v1";
/// Plaintext bytes of an outbox request: capability, work.
const OUTBOX_PLAIN: usize = 32 + 8;
/// Bytes of a sealed outbox request.
pub const OUTBOX_REQUEST_LEN: usize = OUTBOX_PLAIN + REQUEST_OVERHEAD;
/// Plaintext bytes of an outbox reply: status, number.
const REPLY_PLAIN: usize = 1 + 8;
/// Bytes of a sealed outbox reply.
pub const OUTBOX_REPLY_LEN: usize = REPLY_PLAIN + RESPONSE_OVERHEAD;
/// Bytes of a sealed write status.
pub const WRITE_STATUS_LEN: usize = 1 + RESPONSE_OVERHEAD;

/// Bytes of a sealed outbox write of `rows` rows of `row_len` bytes.
pub fn write_len(rows: u32, row_len: u32) -> usize {
    8 + 32 + rows as usize * row_len as usize + REQUEST_OVERHEAD
}

/// A PIR key, query or answer: opaque bytes, of sizes fixed by the board's geometry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PirBytes(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// One PIR query of a reader session (an id the proxy gives a client connection; it says
/// nothing about rows).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// The session whose key answers it.
    pub session: [u8; 16],
    /// The query.
    pub query: PirBytes,
}

/// A request for the outbox of a capability.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRequest {
    /// The owner's capability; storage keeps only its hash.
    pub capability: Capability,
    /// Work that pays for a new outbox, bound to `StoreId::of(capability)`.
    pub work: crate::Work,
}

impl OutboxRequest {
    /// The id the work is bound to.
    pub fn work_id(&self) -> StoreId {
        StoreId::of(&self.capability)
    }

    /// The plaintext to seal.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(OUTBOX_PLAIN));
        out.extend_from_slice(&self.capability.0);
        out.extend_from_slice(&self.work.0.to_le_bytes());
        out
    }

    /// Parses an opened request.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != OUTBOX_PLAIN {
            return None;
        }
        Some(OutboxRequest {
            capability: Capability(b[..32].try_into().ok()?),
            work: crate::Work(u64::from_le_bytes(b[32..].try_into().ok()?)),
        })
    }
}

/// Why an outbox request got no outbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxStatus {
    /// The outbox, new or found again.
    Ok,
    /// The board has no room for another outbox.
    Full,
    /// A new outbox's work falls short of storage's difficulty.
    NeedsWork,
    /// Storage could not serve it.
    Failed,
}

/// Storage's answer to an outbox request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxReply {
    /// The outcome.
    pub status: OutboxStatus,
    /// The outbox's number (0 unless `Ok`): its first row is this times the rows per outbox.
    pub outbox: u64,
}

impl OutboxReply {
    /// The plaintext to seal.
    pub fn to_bytes(&self) -> [u8; REPLY_PLAIN] {
        let mut out = [0u8; REPLY_PLAIN];
        out[0] = match self.status {
            OutboxStatus::Ok => 0,
            OutboxStatus::Full => 1,
            OutboxStatus::NeedsWork => 2,
            OutboxStatus::Failed => 3,
        };
        out[1..].copy_from_slice(&self.outbox.to_le_bytes());
        out
    }

    /// Parses an opened reply.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != REPLY_PLAIN {
            return None;
        }
        let status = match b[0] {
            0 => OutboxStatus::Ok,
            1 => OutboxStatus::Full,
            2 => OutboxStatus::NeedsWork,
            3 => OutboxStatus::Failed,
            _ => return None,
        };
        Some(OutboxReply {
            status,
            outbox: u64::from_le_bytes(b[1..].try_into().ok()?),
        })
    }
}

/// One round's rows of one outbox, as its owner writes them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxWrite {
    /// The outbox's number.
    pub outbox: u64,
    /// Its capability.
    pub capability: Capability,
    /// Exactly rows-per-outbox rows, in order.
    pub rows: Vec<u8>,
}

impl OutboxWrite {
    /// The plaintext to seal.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(8 + 32 + self.rows.len()));
        out.extend_from_slice(&self.outbox.to_le_bytes());
        out.extend_from_slice(&self.capability.0);
        out.extend_from_slice(&self.rows);
        out
    }

    /// Parses an opened write of exactly `rows_len` bytes of rows.
    pub fn from_bytes(b: &[u8], rows_len: usize) -> Option<Self> {
        if b.len() != 8 + 32 + rows_len {
            return None;
        }
        Some(OutboxWrite {
            outbox: u64::from_le_bytes(b[..8].try_into().ok()?),
            capability: Capability(b[8..40].try_into().ok()?),
            rows: b[40..].to_vec(),
        })
    }
}

/// What became of one outbox write, as one sealed byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteStatus {
    /// The rows are on this round's board.
    Written,
    /// No outbox of that number opens with that capability.
    Unauthorized,
    /// The outbox was written already this round.
    Twice,
    /// The write did not open, or had the wrong size.
    Unreadable,
}

impl WriteStatus {
    /// The status as one byte.
    pub fn to_byte(self) -> u8 {
        match self {
            WriteStatus::Written => 0,
            WriteStatus::Unauthorized => 1,
            WriteStatus::Twice => 2,
            WriteStatus::Unreadable => 3,
        }
    }

    /// The status a byte names.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => WriteStatus::Written,
            1 => WriteStatus::Unauthorized,
            2 => WriteStatus::Twice,
            3 => WriteStatus::Unreadable,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::RoutingKey;
    use crate::sealed::seal_request;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    proptest! {
        /// Every message round-trips at its fixed size, sealed and opened as storage does;
        /// a byte more or less is refused.
        #[test]
        fn board_messages_round_trip_sealed_at_fixed_sizes(
            cap in any::<[u8; 32]>(), work in any::<u64>(), outbox in any::<u64>(),
            status in 0u8..4, rows in proptest::collection::vec(any::<u8>(), 64),
        ) {
            let mut rng = StdRng::seed_from_u64(work);
            let storage = RoutingKey::generate(&mut rng);
            let req = OutboxRequest { capability: Capability(cap), work: crate::Work(work) };
            let (sealed, responder) =
                seal_request(&storage.public(), OUTBOX_INFO, &req.to_bytes(), &mut rng).expect("seal");
            prop_assert_eq!(sealed.len(), OUTBOX_REQUEST_LEN);
            let (plain, at_storage) = storage.open_request(OUTBOX_INFO, &sealed).expect("open");
            prop_assert_eq!(OutboxRequest::from_bytes(&plain), Some(req.clone()));
            prop_assert!(storage.open_request(WRITE_INFO, &sealed).is_err(), "labels bind");
            let reply = OutboxReply {
                status: [OutboxStatus::Ok, OutboxStatus::Full, OutboxStatus::NeedsWork, OutboxStatus::Failed][status as usize],
                outbox,
            };
            let back = at_storage.seal(&reply.to_bytes(), &mut rng);
            prop_assert_eq!(back.len(), OUTBOX_REPLY_LEN);
            prop_assert_eq!(OutboxReply::from_bytes(&responder.open(&back).expect("reply")), Some(reply));
            let write = OutboxWrite { outbox, capability: Capability(cap), rows };
            let (sealed, _) =
                seal_request(&storage.public(), WRITE_INFO, &write.to_bytes(), &mut rng).expect("seal");
            prop_assert_eq!(sealed.len(), write_len(2, 32));
            let (plain, _) = storage.open_request(WRITE_INFO, &sealed).expect("open");
            prop_assert_eq!(OutboxWrite::from_bytes(&plain, 64), Some(write));
            prop_assert!(OutboxWrite::from_bytes(&plain, 63).is_none());
            prop_assert!(OutboxRequest::from_bytes(&plain).is_none());
            prop_assert!(OutboxReply::from_bytes(&[9; REPLY_PLAIN]).is_none());
        }
    }

    #[test]
    fn write_statuses_are_one_byte() {
        for s in [
            WriteStatus::Written,
            WriteStatus::Unauthorized,
            WriteStatus::Twice,
            WriteStatus::Unreadable,
        ] {
            assert_eq!(WriteStatus::from_byte(s.to_byte()), Some(s));
        }
        assert_eq!(WriteStatus::from_byte(4), None);
        assert_eq!(WRITE_STATUS_LEN, 1 + RESPONSE_OVERHEAD);
    }
}

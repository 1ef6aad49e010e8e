//! The mailbox's delivery messages, as storage and the client read them; the proxy carries
//! them sealed and learns nothing from them.
//!
//! Each epoch a client sends D envelopes and one drain request (the proxy's
//! mail slot); the proxy pools every client's into one
//! [`MailBatch`], shuffled. Every piece is sealed to storage ([`crate::sealed`]), and every
//! answer is sealed back to its requester alone:
//! - an envelope's routing header names the inbox; its answer is a [`DepositStatus`] byte;
//! - a drain request ([`DrainRequest`], sealed under [`DRAIN_INFO`]) names the inbox, its
//!   capability and how far the owner has stored what it drained; its answer is a
//!   [`DrainReply`] of exactly M envelope slots.
//!
//! So the proxy sees fixed-size opaque bytes both ways, and cannot match an envelope it
//! carried in (a deposit) to one it carries out (a drain): those are sealed afresh.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::message::{Capability, DepositStatus, Drained, Envelope, Grant, StoreId};
use crate::sealed::{REQUEST_OVERHEAD, RESPONSE_OVERHEAD};

/// Bytes of every envelope, real or dummy.
pub const ENVELOPE_LEN: usize = 1024;
/// The HPKE context label of drain requests.
pub const DRAIN_INFO: &[u8] = b"shroud-drain-v1";
/// Plaintext bytes of a drain request: inbox id, capability, `ack_through`, work.
const DRAIN_PLAIN: usize = 16 + 32 + 8 + 8;
/// Bytes of a sealed drain request.
pub const DRAIN_REQUEST_LEN: usize = DRAIN_PLAIN + REQUEST_OVERHEAD;
/// Bytes of a sealed deposit status.
pub const STATUS_LEN: usize = 1 + RESPONSE_OVERHEAD;
/// The store id of a dummy drain (a client without a mailbox); storage answers it with an
/// empty reply of the usual size.
pub const NULL_DRAIN: StoreId = StoreId([0; 16]);

/// Bytes of a sealed drain reply carrying `max` envelopes of `envelope_len` bytes.
pub fn drain_reply_len(max: u32, envelope_len: u32) -> usize {
    1 + max as usize * (1 + 8 + envelope_len as usize) + RESPONSE_OVERHEAD
}

/// Opaque sealed bytes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed(#[serde(with = "serde_bytes")] pub Vec<u8>);

/// One epoch's mail from every client, pooled and shuffled by the proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailBatch {
    /// Bytes of every envelope.
    pub envelope_len: u32,
    /// Envelopes each drain returns (M).
    pub drain_max: u32,
    /// Envelopes to file, each opening with a routing header.
    pub deposits: Vec<Envelope>,
    /// Sealed [`DrainRequest`]s.
    pub drains: Vec<Sealed>,
}

/// Storage's answer: one sealed status per deposit and one sealed reply per drain, in order.
/// A piece that does not open (a wrong key, or noise) is answered with random bytes of the
/// same length, so the answer's shape never depends on the contents.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailReply {
    /// [`STATUS_LEN`] bytes each.
    pub deposited: Vec<Sealed>,
    /// [`drain_reply_len`] bytes each.
    pub drained: Vec<Sealed>,
}

impl DepositStatus {
    /// The status as one byte.
    pub fn to_byte(self) -> u8 {
        match self {
            DepositStatus::Delivered => 0,
            DepositStatus::Full => 1,
            DepositStatus::NoInbox => 2,
            DepositStatus::Dropped => 3,
            DepositStatus::Unreadable => 4,
        }
    }

    /// The status a byte names.
    pub fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            0 => DepositStatus::Delivered,
            1 => DepositStatus::Full,
            2 => DepositStatus::NoInbox,
            3 => DepositStatus::Dropped,
            4 => DepositStatus::Unreadable,
            _ => return None,
        })
    }
}

/// An owner's request to drain its inbox (created on first use with storage's inbox
/// capacity), after deleting everything up to `ack_through`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainRequest {
    /// The inbox ([`NULL_DRAIN`] for a dummy) and its capability.
    pub grant: Grant,
    /// Envelopes up to this sequence number are stored safely and may be deleted.
    pub ack_through: u64,
    /// The proof of work that pays for the inbox when this drain creates it (the first);
    /// storage ignores it for an inbox that exists.
    pub work: crate::Work,
}

impl DrainRequest {
    /// The plaintext to seal.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(DRAIN_PLAIN));
        out.extend_from_slice(&self.grant.store.0);
        out.extend_from_slice(&self.grant.capability.0);
        out.extend_from_slice(&self.ack_through.to_le_bytes());
        out.extend_from_slice(&self.work.0.to_le_bytes());
        out
    }

    /// Parses an opened request.
    pub fn from_bytes(b: &[u8]) -> Option<Self> {
        if b.len() != DRAIN_PLAIN {
            return None;
        }
        Some(DrainRequest {
            grant: Grant {
                store: StoreId(b[..16].try_into().ok()?),
                capability: Capability(b[16..48].try_into().ok()?),
            },
            ack_through: u64::from_le_bytes(b[48..56].try_into().ok()?),
            work: crate::Work(u64::from_le_bytes(b[56..64].try_into().ok()?)),
        })
    }
}

/// Why a drain returned nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainStatus {
    /// Drained (perhaps zero envelopes).
    Ok,
    /// The inbox exists under another capability.
    Unauthorized,
    /// Storage could not serve it (an engine error); nothing was deleted.
    Failed,
}

/// What a drain returns: exactly `max` slots, the present ones first, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DrainReply {
    /// The outcome.
    pub status: DrainStatus,
    /// Exactly `max` slots.
    pub envelopes: Vec<Drained>,
}

impl DrainReply {
    /// The plaintext to seal: always `drain_reply_len(max, envelope_len)` minus the overhead.
    pub fn to_bytes(&self, max: u32, envelope_len: u32) -> Zeroizing<Vec<u8>> {
        let len = envelope_len as usize;
        let mut out = Zeroizing::new(Vec::with_capacity(
            drain_reply_len(max, envelope_len) - RESPONSE_OVERHEAD,
        ));
        out.push(match self.status {
            DrainStatus::Ok => 0,
            DrainStatus::Unauthorized => 1,
            DrainStatus::Failed => 2,
        });
        for i in 0..max as usize {
            match self.envelopes.get(i) {
                Some(d) if d.present && d.envelope.0.len() == len => {
                    out.push(1);
                    out.extend_from_slice(&d.seq.to_le_bytes());
                    out.extend_from_slice(&d.envelope.0);
                }
                _ => {
                    let n = out.len() + 1 + 8 + len;
                    out.resize(n, 0);
                }
            }
        }
        out
    }

    /// Parses an opened reply of this shape.
    pub fn from_bytes(b: &[u8], max: u32, envelope_len: u32) -> Option<Self> {
        let len = envelope_len as usize;
        if b.len() + RESPONSE_OVERHEAD != drain_reply_len(max, envelope_len) {
            return None;
        }
        let status = match b[0] {
            0 => DrainStatus::Ok,
            1 => DrainStatus::Unauthorized,
            2 => DrainStatus::Failed,
            _ => return None,
        };
        let envelopes = b[1..]
            .chunks_exact(1 + 8 + len)
            .map(|c| {
                Some(Drained {
                    present: match c[0] {
                        0 => false,
                        1 => true,
                        _ => return None,
                    },
                    seq: u64::from_le_bytes(c[1..9].try_into().ok()?),
                    envelope: Envelope(c[9..].to_vec()),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(DrainReply { status, envelopes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn drain_messages_round_trip_at_fixed_sizes(
            store in any::<[u8; 16]>(), ack in any::<u64>(),
            present in proptest::collection::vec(any::<(bool, u64, u8)>(), 0..5),
            max in 0u32..5, status in 0u8..3,
        ) {
            let req = DrainRequest {
                grant: Grant { store: StoreId(store), capability: Capability([9; 32]) },
                ack_through: ack,
                work: crate::Work(ack.rotate_left(7)),
            };
            prop_assert_eq!(req.to_bytes().len() + REQUEST_OVERHEAD, DRAIN_REQUEST_LEN);
            prop_assert_eq!(DrainRequest::from_bytes(&req.to_bytes()), Some(req));
            let envelopes: Vec<Drained> = present.iter().map(|&(p, seq, b)| Drained {
                present: p, seq: if p { seq } else { 0 }, envelope: Envelope(vec![if p { b } else { 0 }; 7]),
            }).collect();
            let reply = DrainReply {
                status: [DrainStatus::Ok, DrainStatus::Unauthorized, DrainStatus::Failed][status as usize],
                envelopes,
            };
            let bytes = reply.to_bytes(max, 7);
            prop_assert_eq!(bytes.len() + RESPONSE_OVERHEAD, drain_reply_len(max, 7));
            let back = DrainReply::from_bytes(&bytes, max, 7).unwrap();
            prop_assert_eq!(back.envelopes.len(), max as usize);
            for (i, d) in back.envelopes.iter().enumerate() {
                match reply.envelopes.get(i) {
                    Some(orig) if orig.present => prop_assert_eq!(d, orig),
                    _ => prop_assert!(!d.present),
                }
            }
            prop_assert!(DrainReply::from_bytes(&bytes[1..], max, 7).is_none());
        }
    }

    #[test]
    fn statuses_are_one_byte() {
        for s in [
            DepositStatus::Delivered,
            DepositStatus::Full,
            DepositStatus::NoInbox,
            DepositStatus::Dropped,
            DepositStatus::Unreadable,
        ] {
            assert_eq!(DepositStatus::from_byte(s.to_byte()), Some(s));
        }
        assert_eq!(DepositStatus::from_byte(9), None);
    }
}

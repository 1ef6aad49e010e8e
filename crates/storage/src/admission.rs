//! What a request may cost, checked before any of its work starts (issue 12, finding 4).
//!
//! A frame's size is capped by the codec, but the work and the answer a request causes are
//! not proportional to it: a mail request of a million empty drains asks for a million
//! padded replies, a batch of absent reads of a store with huge buckets for gigabytes of
//! zeros, a deposit of a million junk envelopes for a million X25519 operations. Every such
//! multiplier is capped here, right after decoding, and the answer's size is bounded by the
//! frame limit before anything is allocated ([`admit`]); what depends on a store's geometry
//! is checked by the executor before it reads ([`reply_fits`]).

use shroud_proto::mail::{MailBatch, STATUS_LEN, drain_reply_len};
use shroud_proto::routing::ROUTING_LEN;
use shroud_proto::{ErrorCode, Request};

use crate::inbox::{MAX_DRAIN, MAX_ENVELOPE_LEN};

/// The largest bucket a store may have: a mebibyte (the default shape's are about 4 KiB).
pub const MAX_BUCKET_LEN: u32 = 1 << 20;
/// The most grants one batch may name (the proxy sends clients × K).
pub const MAX_BATCH_GRANTS: usize = 1 << 16;
/// The most operations one batch may carry.
pub const MAX_BATCH_OPS: usize = 1 << 20;
/// The most envelopes one deposit or mail request may carry, and the most drains one mail
/// request may carry (sixteen times a full 1,024-client proxy's).
pub const MAX_MAIL_PIECES: usize = 1 << 14;

/// Bytes of framing around each element of a response (a length prefix or a flag).
const PER_ITEM: usize = 9;
/// Bytes of a response's envelope (its variant and vector lengths).
const PER_RESPONSE: usize = 32;

/// True if an answer of `bytes` fits in a frame of `max_frame`.
pub fn reply_fits(bytes: usize, max_frame: usize) -> bool {
    bytes.saturating_add(PER_RESPONSE) <= max_frame
}

/// The bytes of the answer to a mail request, or `None` past `usize`.
fn mail_reply_bytes(m: &MailBatch) -> Option<usize> {
    let drain = PER_ITEM.checked_add(drain_reply_len(m.drain_max, m.envelope_len))?;
    m.deposits
        .len()
        .checked_mul(PER_ITEM + STATUS_LEN)?
        .checked_add(m.drains.len().checked_mul(drain)?)
}

/// The most PIR queries one request may carry.
pub const MAX_ANSWERS: usize = 1024;

/// Refuses a request whose work or answer would exceed the caps, before any of it is done.
pub fn admit(req: &Request, max_frame: usize) -> Result<(), ErrorCode> {
    let envelope_ok = |n: usize| (ROUTING_LEN..=MAX_ENVELOPE_LEN as usize).contains(&n);
    match req {
        Request::CreateStore { geometry, .. }
            if geometry.bucket_len > MAX_BUCKET_LEN
                || !reply_fits(geometry.bucket_len as usize + PER_ITEM, max_frame) =>
        {
            Err(ErrorCode::BadGeometry)
        }
        Request::Batch(b) if b.grants.len() > MAX_BATCH_GRANTS || b.ops.len() > MAX_BATCH_OPS => {
            Err(ErrorCode::TooLarge)
        }
        Request::Outbox(sealed) if sealed.0.len() != shroud_proto::board::OUTBOX_REQUEST_LEN => {
            Err(ErrorCode::WrongShape)
        }
        // At most one write per outbox of the largest board; queries bounded so that their
        // answers (at most 16 KiB each) fit a frame.
        Request::Round(w) if w.len() > 1 << 16 => Err(ErrorCode::TooLarge),
        Request::Answer(q) if q.len() > MAX_ANSWERS => Err(ErrorCode::TooLarge),
        Request::Deposit(e)
            if e.len() > MAX_MAIL_PIECES || !e.iter().all(|e| envelope_ok(e.0.len())) =>
        {
            Err(ErrorCode::TooLarge)
        }
        Request::Drain { max, .. } if *max > MAX_DRAIN => Err(ErrorCode::TooLarge),
        Request::Mail(m) if !envelope_ok(m.envelope_len as usize) || m.drain_max > MAX_DRAIN => {
            Err(ErrorCode::WrongShape)
        }
        Request::Mail(m)
            if m.deposits.len() > MAX_MAIL_PIECES
                || m.drains.len() > MAX_MAIL_PIECES
                || !mail_reply_bytes(m).is_some_and(|n| reply_fits(n, max_frame)) =>
        {
            Err(ErrorCode::TooLarge)
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shroud_proto::mail::Sealed;
    use shroud_proto::{Envelope, Geometry};

    const FRAME: usize = 64 << 20;

    fn mail(deposits: usize, drains: usize, drain_max: u32, envelope_len: u32) -> Request {
        Request::Mail(MailBatch {
            envelope_len,
            drain_max,
            deposits: vec![Envelope(vec![0; envelope_len as usize]); deposits],
            drains: vec![Sealed(Vec::new()); drains],
        })
    }

    #[test]
    fn every_multiplier_is_capped_before_work() {
        // A million empty drains, each to be answered with a padded reply.
        assert_eq!(
            admit(&mail(0, 1_000_000, 2, 1024), FRAME),
            Err(ErrorCode::TooLarge)
        );
        // A few drains whose replies alone exceed a frame.
        assert_eq!(
            admit(&mail(0, 8, 1024, 64 * 1024), FRAME),
            Err(ErrorCode::TooLarge)
        );
        // An honest proxy's epoch: 1,024 clients, D = 2, M = 4, 1 KiB envelopes.
        assert_eq!(admit(&mail(2048, 1024, 4, 1024), FRAME), Ok(()));
        assert_eq!(admit(&mail(0, 1, 2, 16), FRAME), Err(ErrorCode::WrongShape));
        // A store with 16 MiB buckets.
        let create = |bucket_len| Request::CreateStore {
            store: shroud_proto::StoreId([1; 16]),
            capability: shroud_proto::Capability([1; 32]),
            geometry: Geometry {
                bucket_len,
                buckets: 8,
            },
            work: shroud_proto::Work(0),
        };
        assert_eq!(admit(&create(16 << 20), FRAME), Err(ErrorCode::BadGeometry));
        assert_eq!(admit(&create(4228), FRAME), Ok(()));
        let drain = Request::Drain {
            grant: shroud_proto::Grant::of(shroud_proto::Capability([3; 32])),
            ack_through: 0,
            max: u32::MAX,
        };
        assert_eq!(admit(&drain, FRAME), Err(ErrorCode::TooLarge));
        let junk = Request::Deposit(vec![Envelope(vec![0; 8]); 3]);
        assert_eq!(admit(&junk, FRAME), Err(ErrorCode::TooLarge));
    }
}

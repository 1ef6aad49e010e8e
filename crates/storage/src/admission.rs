//! What a request may cost, checked before any of its work starts (issue 12, finding 4).
//!
//! A frame's size is capped by the codec, but the work and the answer a request causes are
//! not proportional to it: a batch of absent reads of a store with huge buckets asks for
//! gigabytes of zeros, a round of a million junk writes for a million X25519 operations, a
//! thousand PIR queries for minutes of work. Every such
//! multiplier is capped here, right after decoding, and the answer's size is bounded by the
//! frame limit before anything is allocated ([`admit`]); what depends on a store's geometry
//! is checked by the executor before it reads ([`reply_fits`]).

use shroud_proto::{ErrorCode, Request};

/// The largest bucket a store may have: a mebibyte (the default shape's are about 4 KiB).
pub const MAX_BUCKET_LEN: u32 = 1 << 20;
/// The most grants one batch may name (the proxy sends clients × K).
pub const MAX_BATCH_GRANTS: usize = 1 << 16;
/// The most operations one batch may carry.
pub const MAX_BATCH_OPS: usize = 1 << 20;
/// Bytes of framing around each element of a response (a length prefix or a flag).
const PER_ITEM: usize = 9;
/// Bytes of a response's envelope (its variant and vector lengths).
const PER_RESPONSE: usize = 32;

/// True if an answer of `bytes` fits in a frame of `max_frame`.
pub fn reply_fits(bytes: usize, max_frame: usize) -> bool {
    bytes.saturating_add(PER_RESPONSE) <= max_frame
}

/// The most PIR queries one request may carry.
pub const MAX_ANSWERS: usize = 1024;

/// Refuses a request whose work or answer would exceed the caps, before any of it is done.
pub fn admit(req: &Request, max_frame: usize) -> Result<(), ErrorCode> {
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
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shroud_proto::Geometry;
    use shroud_proto::board::{OUTBOX_REQUEST_LEN, PirBytes, Query};
    use shroud_proto::sealed::Sealed;

    const FRAME: usize = 64 << 20;

    #[test]
    fn every_multiplier_is_capped_before_work() {
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
        // A round of more writes than the largest board has outboxes.
        let round = |n| Request::Round(vec![Sealed(Vec::new()); n]);
        assert_eq!(admit(&round(1 << 16), FRAME), Ok(()));
        assert_eq!(
            admit(&round((1 << 16) + 1), FRAME),
            Err(ErrorCode::TooLarge)
        );
        // More queries than one request may carry.
        let answer = |n| {
            Request::Answer(vec![
                Query {
                    session: [0; 16],
                    query: PirBytes(Vec::new()),
                };
                n
            ])
        };
        assert_eq!(admit(&answer(MAX_ANSWERS), FRAME), Ok(()));
        assert_eq!(
            admit(&answer(MAX_ANSWERS + 1), FRAME),
            Err(ErrorCode::TooLarge)
        );
        // An outbox request of the wrong size.
        let outbox = |n| Request::Outbox(Sealed(vec![0; n]));
        assert_eq!(admit(&outbox(OUTBOX_REQUEST_LEN), FRAME), Ok(()));
        assert_eq!(
            admit(&outbox(OUTBOX_REQUEST_LEN + 1), FRAME),
            Err(ErrorCode::WrongShape)
        );
    }
}

//! What a row carries for its reader, before sealing ([`super::row`]): one chunk of a
//! message (or none) and the writer's acknowledgement of what the reader sent it.
//!
//! ```text
//! chunk (CHUNK_LEN) = seq (8) || ack (8) || sack (8) || message (8) || index (2) || count (2)
//!                     || len (2) || payload (len) || zeros
//! ```
//! All integers big-endian. `seq` numbers the writer's chunks to this reader 1, 2, 3, ...
//! (0: the row carries only the acknowledgement). `ack`: every chunk of the reader's up to
//! this number arrived; bit i of `sack`: chunk `ack + 1 + i` arrived too. A chunk is chunk
//! `index` of `count` of message `message`.

use zeroize::Zeroizing;

use super::row::CHUNK_LEN;

const HEADER_LEN: usize = 8 * 4 + 2 * 3;
/// Bytes of message a chunk carries.
pub const PAYLOAD_LEN: usize = CHUNK_LEN - HEADER_LEN;

/// One chunk, opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The writer's number for it (0: no chunk, only the acknowledgement).
    pub seq: u64,
    /// Every chunk of the reader's up to this arrived.
    pub ack: u64,
    /// Bit i: chunk `ack + 1 + i` of the reader's arrived.
    pub sack: u64,
    /// The message it belongs to.
    pub message: u64,
    /// Its place in the message.
    pub index: u16,
    /// The message's chunks.
    pub count: u16,
    /// At most [`PAYLOAD_LEN`] bytes.
    pub payload: Vec<u8>,
}

impl Chunk {
    /// The plaintext to seal (exactly [`CHUNK_LEN`] bytes; `None` if the payload is too
    /// long).
    pub fn to_bytes(&self) -> Option<Zeroizing<[u8; CHUNK_LEN]>> {
        let len = u16::try_from(self.payload.len())
            .ok()
            .filter(|&l| usize::from(l) <= PAYLOAD_LEN)?;
        let mut out = Zeroizing::new([0u8; CHUNK_LEN]);
        out[0..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..16].copy_from_slice(&self.ack.to_be_bytes());
        out[16..24].copy_from_slice(&self.sack.to_be_bytes());
        out[24..32].copy_from_slice(&self.message.to_be_bytes());
        out[32..34].copy_from_slice(&self.index.to_be_bytes());
        out[34..36].copy_from_slice(&self.count.to_be_bytes());
        out[36..38].copy_from_slice(&len.to_be_bytes());
        out[HEADER_LEN..HEADER_LEN + self.payload.len()].copy_from_slice(&self.payload);
        Some(out)
    }

    /// Parses an opened chunk: `None` for a wrong length, a payload past the end, an index
    /// outside its message, or padding that is not zeros (a chunk is parsed only after its
    /// row authenticated under a pair key, so this catches only a buggy or hostile contact).
    pub fn from_bytes(b: &[u8]) -> Option<Chunk> {
        if b.len() != CHUNK_LEN {
            return None;
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let u16_at = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let len = usize::from(u16_at(36));
        let c = Chunk {
            seq: u64_at(0),
            ack: u64_at(8),
            sack: u64_at(16),
            message: u64_at(24),
            index: u16_at(32),
            count: u16_at(34),
            payload: b.get(HEADER_LEN..HEADER_LEN + len)?.to_vec(),
        };
        let padding_is_zero = b[HEADER_LEN + len..].iter().all(|&x| x == 0);
        let shaped = c.seq == 0 || c.index < c.count;
        (padding_is_zero && shaped).then_some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunks_round_trip(
            seq in any::<u64>(), ack in any::<u64>(), sack in any::<u64>(),
            message in any::<u64>(), count in 1u16..100, payload in proptest::collection::vec(any::<u8>(), 0..=PAYLOAD_LEN),
        ) {
            let c = Chunk { seq, ack, sack, message, index: count - 1, count, payload };
            let bytes = c.to_bytes().expect("fits");
            prop_assert_eq!(Chunk::from_bytes(&bytes[..]), Some(c));
        }

        #[test]
        fn any_bytes_parse_or_are_refused_without_panic(b in proptest::collection::vec(any::<u8>(), CHUNK_LEN)) {
            let _ = Chunk::from_bytes(&b);
        }
    }

    #[test]
    fn too_long_and_misshapen_chunks_are_refused() {
        let c = Chunk {
            seq: 1,
            ack: 0,
            sack: 0,
            message: 1,
            index: 0,
            count: 1,
            payload: vec![1; PAYLOAD_LEN + 1],
        };
        assert!(c.to_bytes().is_none());
        let ok = Chunk {
            payload: vec![1; 3],
            ..c.clone()
        };
        let mut b = ok.to_bytes().expect("fits");
        b[CHUNK_LEN - 1] = 1;
        assert_eq!(Chunk::from_bytes(&b[..]), None, "padding");
        let outside = Chunk {
            index: 1,
            ..ok.clone()
        };
        assert_eq!(
            Chunk::from_bytes(&outside.to_bytes().expect("fits")[..]),
            None
        );
        assert_eq!(Chunk::from_bytes(&[0u8; 5]), None);
    }
}

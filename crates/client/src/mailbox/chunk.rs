//! What a row carries for its reader, before sealing ([`super::row`]): the writer's
//! acknowledgement of what the reader sent it, and one chunk of a message (or none), whose
//! content is encrypted in the pair's Olm session ([`super::session`]).
//!
//! ```text
//! chunk (CHUNK_LEN) = seq (8) || ack (8) || sack (8) || kind (1) || len (2) || olm (len) || zeros
//! content (inside the Olm message) = message (8) || index (2) || count (2) || payload
//! ```
//! All integers big-endian. `seq` numbers the writer's chunks to this reader 1, 2, 3, ...
//! (0: the row carries only the acknowledgement, and `kind` is 0). `ack`: every chunk of the
//! reader's up to this number arrived; bit i of `sack`: chunk `ack + 1 + i` arrived too.
//! `kind` says which Olm message follows: 1 a pre-key message (the session's first ones), 2
//! a normal one (both begin with the same version byte, so the kind travels beside them).
//! A chunk's content is chunk `index` of `count` of message `message`; a content of no chunks
//! (`count` 0, no payload) is a session's confirmation, which a reader sends back on a session
//! a contact started, so that the ratchet turns at once ([`super::session`]).
//!
//! The numbering and acknowledgements are under the pair key only (they say how much a pair
//! exchanged, which a thief of either end's keys learns from the rows it recorded); what a
//! message says is under the ratchet too, which a thief of today's keys does not undo.

use zeroize::Zeroizing;

use super::row::CHUNK_LEN;

const HEADER_LEN: usize = 8 * 3 + 1 + 2;
/// The most bytes of Olm message a chunk carries.
pub const OLM_LEN: usize = CHUNK_LEN - HEADER_LEN;
const CONTENT_HEADER: usize = 8 + 2 + 2;
/// The largest content (the Olm plaintext) whose Olm message fits [`OLM_LEN`] whatever the
/// session's state: see [`olm_len`].
pub const CONTENT_LEN: usize = largest_content(OLM_LEN);
/// Bytes of message a chunk carries.
pub const PAYLOAD_LEN: usize = CONTENT_LEN - CONTENT_HEADER;
/// Most chunks of one message.
pub const MAX_CHUNKS: u16 = 128;

/// Bytes of a protobuf varint of `x`.
const fn varint_len(x: u64) -> usize {
    let mut n = 1;
    let mut v = x >> 7;
    while v > 0 {
        n += 1;
        v >>= 7;
    }
    n
}

/// Bytes of the largest Olm message (vodozemac 0.11, session version 1) for `plain` bytes of
/// plaintext: a pre-key message at the largest chain index. AES-256-CBC with PKCS#7 pads to
/// `16 * (plain / 16 + 1)`; a message is `version (1) || ratchet key (2 + 32) || chain index
/// (1 + varint) || ciphertext (1 + varint + C) || MAC (8)`, and a pre-key message adds
/// `version (1) || one-time key, base key, identity key (3 * (2 + 32)) || message (1 + varint
/// + L)` (vodozemac `src/olm/messages/message.rs` and `pre_key.rs`).
pub const fn olm_len(plain: usize) -> usize {
    let c = 16 * (plain / 16 + 1);
    let message = 37 + 8 + varint_len(u64::MAX) + varint_len(c as u64) + c;
    1 + 3 * 34 + 1 + varint_len(message as u64) + message
}

/// The largest plaintext whose Olm messages all fit `budget` bytes.
const fn largest_content(budget: usize) -> usize {
    let mut plain = budget;
    while plain > 0 && olm_len(plain) > budget {
        plain -= 1;
    }
    plain
}

/// An Olm message as a chunk carries it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OlmBytes {
    /// A pre-key message (the session's first, before the reader answered on it).
    pub pre_key: bool,
    /// The message, at most [`OLM_LEN`] bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
}

/// One chunk, opened (its Olm message not yet decrypted).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// The writer's number for it (0: no chunk, only the acknowledgement).
    pub seq: u64,
    /// Every chunk of the reader's up to this arrived.
    pub ack: u64,
    /// Bit i: chunk `ack + 1 + i` of the reader's arrived.
    pub sack: u64,
    /// The content, encrypted (present exactly when `seq` is not 0).
    pub olm: Option<OlmBytes>,
}

impl Chunk {
    /// The plaintext to seal (exactly [`CHUNK_LEN`] bytes; `None` if the Olm message is too
    /// long, or present without a number or missing with one).
    pub fn to_bytes(&self) -> Option<Zeroizing<[u8; CHUNK_LEN]>> {
        if (self.seq == 0) != self.olm.is_none() {
            return None;
        }
        let mut out = Zeroizing::new([0u8; CHUNK_LEN]);
        out[0..8].copy_from_slice(&self.seq.to_be_bytes());
        out[8..16].copy_from_slice(&self.ack.to_be_bytes());
        out[16..24].copy_from_slice(&self.sack.to_be_bytes());
        if let Some(olm) = &self.olm {
            let len = u16::try_from(olm.bytes.len())
                .ok()
                .filter(|&l| usize::from(l) <= OLM_LEN)?;
            out[24] = if olm.pre_key { 1 } else { 2 };
            out[25..27].copy_from_slice(&len.to_be_bytes());
            out[HEADER_LEN..HEADER_LEN + olm.bytes.len()].copy_from_slice(&olm.bytes);
        }
        Some(out)
    }

    /// Parses an opened chunk: `None` for a wrong length, a message past the end, a kind
    /// that does not fit the number, or padding that is not zeros (a chunk is parsed only
    /// after its row authenticated under a pair key, so this catches only a buggy or hostile
    /// contact).
    pub fn from_bytes(b: &[u8]) -> Option<Chunk> {
        if b.len() != CHUNK_LEN {
            return None;
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        let len = usize::from(u16::from_be_bytes([b[25], b[26]]));
        let olm = match (b[24], len) {
            (0, 0) => None,
            (kind @ (1 | 2), 1..) => Some(OlmBytes {
                pre_key: kind == 1,
                bytes: b.get(HEADER_LEN..HEADER_LEN + len)?.to_vec(),
            }),
            _ => return None,
        };
        let c = Chunk {
            seq: u64_at(0),
            ack: u64_at(8),
            sack: u64_at(16),
            olm,
        };
        let padding_is_zero = b[HEADER_LEN + len..].iter().all(|&x| x == 0);
        let shaped = (c.seq == 0) == c.olm.is_none();
        (padding_is_zero && shaped).then_some(c)
    }
}

/// What a chunk says, once its Olm message is decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Content {
    /// The message it belongs to.
    pub message: u64,
    /// Its place in the message.
    pub index: u16,
    /// The message's chunks.
    pub count: u16,
    /// At most [`PAYLOAD_LEN`] bytes.
    pub payload: Vec<u8>,
}

impl Content {
    /// `body` as the contents of message `message`, in order; `None` if it needs more than
    /// [`MAX_CHUNKS`].
    pub fn split(message: u64, body: &[u8]) -> Option<Vec<Content>> {
        let parts: Vec<&[u8]> = if body.is_empty() {
            vec![&[][..]]
        } else {
            body.chunks(PAYLOAD_LEN).collect()
        };
        let count = u16::try_from(parts.len())
            .ok()
            .filter(|&c| c <= MAX_CHUNKS)?;
        Some(
            parts
                .into_iter()
                .enumerate()
                .map(|(i, p)| Content {
                    message,
                    index: i as u16,
                    count,
                    payload: p.to_vec(),
                })
                .collect(),
        )
    }

    /// A session's confirmation: no message.
    pub fn confirmation() -> Content {
        Content {
            message: 0,
            index: 0,
            count: 0,
            payload: Vec::new(),
        }
    }

    /// The plaintext to encrypt (`None` if the payload is too long).
    pub fn to_bytes(&self) -> Option<Zeroizing<Vec<u8>>> {
        if self.payload.len() > PAYLOAD_LEN {
            return None;
        }
        let mut out = Zeroizing::new(Vec::with_capacity(CONTENT_HEADER + self.payload.len()));
        out.extend_from_slice(&self.message.to_be_bytes());
        out.extend_from_slice(&self.index.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.payload);
        Some(out)
    }

    /// Parses a decrypted content: `None` if too short or too long, with an index outside its
    /// message, or a confirmation that carries something.
    pub fn from_bytes(b: &[u8]) -> Option<Content> {
        if !(CONTENT_HEADER..=CONTENT_LEN).contains(&b.len()) {
            return None;
        }
        let c = Content {
            message: u64::from_be_bytes(b[0..8].try_into().ok()?),
            index: u16::from_be_bytes([b[8], b[9]]),
            count: u16::from_be_bytes([b[10], b[11]]),
            payload: b[CONTENT_HEADER..].to_vec(),
        };
        let confirmation = c == Content::confirmation();
        (c.index < c.count || confirmation).then_some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunks_round_trip(
            seq in 1u64.., ack in any::<u64>(), sack in any::<u64>(), pre_key in any::<bool>(),
            olm in proptest::collection::vec(any::<u8>(), 1..=OLM_LEN),
        ) {
            let c = Chunk { seq, ack, sack, olm: Some(OlmBytes { pre_key, bytes: olm }) };
            let bytes = c.to_bytes().expect("fits");
            prop_assert_eq!(Chunk::from_bytes(&bytes[..]), Some(c));
            let ack_only = Chunk { seq: 0, ack, sack, olm: None };
            let bytes = ack_only.to_bytes().expect("fits");
            prop_assert_eq!(Chunk::from_bytes(&bytes[..]), Some(ack_only));
        }

        #[test]
        fn contents_round_trip(
            message in any::<u64>(), count in 1u16..100,
            payload in proptest::collection::vec(any::<u8>(), 0..=PAYLOAD_LEN),
        ) {
            let c = Content { message, index: count - 1, count, payload };
            prop_assert_eq!(Content::from_bytes(&c.to_bytes().expect("fits")), Some(c));
        }

        #[test]
        fn any_bytes_parse_or_are_refused_without_panic(b in proptest::collection::vec(any::<u8>(), CHUNK_LEN)) {
            let _ = Chunk::from_bytes(&b);
            let _ = Content::from_bytes(&b[..b[0] as usize * 4 % CHUNK_LEN]);
        }
    }

    #[test]
    fn too_long_and_misshapen_chunks_are_refused() {
        let olm = |n| {
            Some(OlmBytes {
                pre_key: false,
                bytes: vec![1; n],
            })
        };
        let c = Chunk {
            seq: 1,
            ack: 0,
            sack: 0,
            olm: olm(OLM_LEN + 1),
        };
        assert!(c.to_bytes().is_none());
        assert!(
            Chunk {
                olm: None,
                ..c.clone()
            }
            .to_bytes()
            .is_none()
        );
        assert!(
            Chunk {
                seq: 0,
                olm: olm(3),
                ..c.clone()
            }
            .to_bytes()
            .is_none()
        );
        let ok = Chunk { olm: olm(3), ..c };
        let mut b = ok.to_bytes().expect("fits");
        b[CHUNK_LEN - 1] = 1;
        assert_eq!(Chunk::from_bytes(&b[..]), None, "padding");
        let mut b = ok.to_bytes().expect("fits");
        b[24] = 3;
        assert_eq!(Chunk::from_bytes(&b[..]), None, "kind");
        assert_eq!(Chunk::from_bytes(&[0u8; 5]), None);
        let outside = Content {
            message: 1,
            index: 1,
            count: 1,
            payload: Vec::new(),
        };
        assert_eq!(
            Content::from_bytes(&outside.to_bytes().expect("fits")),
            None
        );
        let c = Content::confirmation();
        assert_eq!(Content::from_bytes(&c.to_bytes().expect("fits")), Some(c));
        let carrying = Content {
            count: 0,
            index: 0,
            ..outside.clone()
        };
        assert_eq!(
            Content::from_bytes(&carrying.to_bytes().expect("fits")),
            None
        );
        assert_eq!(Content::split(1, &[]).expect("one").len(), 1);
        assert_eq!(
            Content::split(1, &vec![0; PAYLOAD_LEN * 2 + 1])
                .expect("three")
                .iter()
                .map(|c| (c.index, c.count))
                .collect::<Vec<_>>(),
            vec![(0, 3), (1, 3), (2, 3)]
        );
        assert!(Content::split(1, &vec![0; PAYLOAD_LEN * 128 + 1]).is_none());
        assert!(
            Content {
                payload: vec![0; PAYLOAD_LEN + 1],
                ..outside
            }
            .to_bytes()
            .is_none()
        );
    }

    /// The size bound against real Olm messages: a session's pre-key and normal messages of
    /// the largest content fit, and the formula is exact at a small chain index.
    #[test]
    fn the_largest_content_fits_real_olm_messages() {
        use vodozemac::olm::{Account, OlmMessage, SessionConfig};
        let (alice, mut bob) = (Account::new(), Account::new());
        bob.generate_fallback_key();
        let prekey = *bob.fallback_key().values().next().expect("fallback key");
        let mut a = alice
            .create_outbound_session(SessionConfig::version_1(), bob.curve25519_key(), prekey)
            .expect("session");
        let content = vec![7u8; CONTENT_LEN];
        let first = a.encrypt(&content).expect("encrypt");
        let OlmMessage::PreKey(p) = &first else {
            panic!("a new session's first message is a pre-key message");
        };
        let len = p.to_bytes().len();
        // Chain index 0: its varint is 9 bytes shorter than the largest's.
        assert_eq!(len + varint_len(u64::MAX) - 1, olm_len(CONTENT_LEN));
        assert!(olm_len(CONTENT_LEN) <= OLM_LEN && olm_len(CONTENT_LEN + 16) > OLM_LEN);
        let mut b = bob
            .create_inbound_session(SessionConfig::version_1(), alice.curve25519_key(), p)
            .expect("inbound")
            .session;
        let back = b.encrypt(&content).expect("encrypt");
        let OlmMessage::Normal(m) = back else {
            panic!("an answered session sends normal messages");
        };
        assert!(m.to_bytes().len() <= OLM_LEN);
        assert_eq!(PAYLOAD_LEN, 755);
    }
}

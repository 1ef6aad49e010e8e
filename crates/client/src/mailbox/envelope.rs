//! Fixed-size envelopes ([`Envelope`], the wire type): sealed to the recipient with HPKE in auth mode (RFC 9180, section
//! 5.1.3: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305), so that only the
//! recipient reads it and the recipient knows which of its contacts sent it; padded, so the
//! length does not show; chunked, so a long message is several envelopes; numbered, so
//! replays and duplicates are rejected.
//!
//! ```text
//! envelope (ENVELOPE_LEN) = routing header (sealed to storage: the inbox id)
//!                         || encapsulated key (32) || HPKE-Auth(header || padded chunk) || tag (16)
//! header = counter (u64) | message id (u64) | chunk (u16) | chunks (u16) | chunk length (u16)
//! ```
//! The body's associated data is the recipient's inbox id, so a body cannot be refiled to
//! another inbox. A dummy envelope (for the null inbox) is sealed the same way between
//! throwaway keys ([`Decoy`]): nobody can tell it from a real one without those keys.

use std::collections::{BTreeMap, HashMap};

use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use rand::CryptoRng;
use shroud_proto::Envelope;
use shroud_proto::routing::{self, INBOX_LEN, NULL_INBOX, ROUTING_LEN};
use shroud_proto::sealed::Responder;

use super::identity::{Address, Identity, Kem};

type Kdf = hpke::kdf::HkdfSha256;
type Aead = hpke::aead::ChaCha20Poly1305;

const INFO: &[u8] = b"shroud-mail-v1";
pub use shroud_proto::mail::ENVELOPE_LEN;
const HEADER_LEN: usize = 22;
const BODY_OVERHEAD: usize = 32 + 16;
/// Payload bytes per envelope.
pub const CHUNK_LEN: usize = ENVELOPE_LEN - ROUTING_LEN - BODY_OVERHEAD - HEADER_LEN;
/// The most envelopes one message may take (a 1 MiB-ish limit).
pub const MAX_CHUNKS: u16 = 1024;

/// An envelope failure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// Not an envelope for us from any of our contacts, or altered.
    #[error("envelope does not open with any contact's key")]
    Open,
    /// A wrong size or a header that makes no sense.
    #[error("malformed envelope")]
    Malformed,
    /// A message longer than `MAX_CHUNKS` envelopes.
    #[error("message too long")]
    TooLong,
    /// Storage's pinned key is not usable.
    #[error("bad storage routing key")]
    Routing,
    /// Seen before: a replay or a duplicate.
    #[error("replayed or duplicate envelope")]
    Replay,
}

/// What an envelope says about its chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Header {
    /// The sender's counter for this conversation: strictly increasing per envelope.
    pub counter: u64,
    /// The message this chunk belongs to.
    pub message: u64,
    /// This chunk's index.
    pub chunk: u16,
    /// How many chunks the message has.
    pub chunks: u16,
}

/// Seals one chunk (at most [`CHUNK_LEN`] bytes) from `from` to `to`, routed through the
/// storage key `storage_pk`.
pub fn seal<R: CryptoRng>(
    from: &Identity,
    to: &Address,
    storage_pk: &[u8; 32],
    header: Header,
    chunk: &[u8],
    rng: &mut R,
) -> Result<Envelope, EnvelopeError> {
    seal_routed(from, to, storage_pk, header, chunk, rng).map(|(e, _)| e)
}

/// [`seal`], also returning what opens storage's sealed status for it.
pub fn seal_routed<R: CryptoRng>(
    from: &Identity,
    to: &Address,
    storage_pk: &[u8; 32],
    header: Header,
    chunk: &[u8],
    rng: &mut R,
) -> Result<(Envelope, Responder), EnvelopeError> {
    if chunk.len() > CHUNK_LEN || header.chunk >= header.chunks || header.chunks > MAX_CHUNKS {
        return Err(EnvelopeError::Malformed);
    }
    let mut plain = Vec::with_capacity(HEADER_LEN + CHUNK_LEN);
    plain.extend_from_slice(&header.counter.to_le_bytes());
    plain.extend_from_slice(&header.message.to_le_bytes());
    plain.extend_from_slice(&header.chunk.to_le_bytes());
    plain.extend_from_slice(&header.chunks.to_le_bytes());
    plain.extend_from_slice(&(chunk.len() as u16).to_le_bytes());
    plain.extend_from_slice(chunk);
    plain.resize(HEADER_LEN + CHUNK_LEN, 0);
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(&to.public_key)
        .map_err(|_| EnvelopeError::Malformed)?;
    let mode = OpModeS::Auth((from.sk.clone(), from.pk.clone()));
    let (enc, ct) =
        hpke::single_shot_seal_with_rng::<Aead, Kdf, Kem>(&mode, &pk, INFO, &plain, &to.inbox, rng)
            .map_err(|_| EnvelopeError::Malformed)?;
    let mut out = Vec::with_capacity(ENVELOPE_LEN);
    let (header, responder) =
        routing::seal(storage_pk, &to.inbox, rng).map_err(|_| EnvelopeError::Routing)?;
    out.extend_from_slice(&header);
    out.extend_from_slice(&enc.to_bytes());
    out.extend_from_slice(&ct);
    debug_assert_eq!(out.len(), ENVELOPE_LEN);
    Ok((Envelope(out), responder))
}

/// Seals a whole message: one envelope per chunk, numbered from `counter` on (which
/// advances by the number of envelopes), all carrying message id `message`.
pub fn seal_message<R: CryptoRng>(
    from: &Identity,
    to: &Address,
    storage_pk: &[u8; 32],
    message_bytes: &[u8],
    message: u64,
    counter: &mut u64,
    rng: &mut R,
) -> Result<Vec<Envelope>, EnvelopeError> {
    let parts = chunks(message_bytes)?;
    let n = parts.len() as u16;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, part)| {
            *counter += 1;
            let h = Header {
                counter: *counter,
                message,
                chunk: i as u16,
                chunks: n,
            };
            seal(from, to, storage_pk, h, part, rng)
        })
        .collect()
}

/// The throwaway sender and recipient of dummy envelopes: fresh key pairs that never leave
/// the process, so that a dummy is a real seal, made by the same code as a real envelope, and
/// differs from one only in keys nobody else holds (issue 12, finding 1: random bytes there
/// were told apart by the `enc` key's top bit, always 0 in a real X25519 encoding).
///
/// # Security
/// The recipient's inbox is [`NULL_INBOX`], so storage drops what it receives; the body opens
/// for nobody. Seal costs what a real envelope's does (one auth-mode HPKE seal and one
/// routing seal), so the time to build a slot does not depend on how much of it is real.
pub struct Decoy {
    from: Identity,
    to: Address,
}

impl Decoy {
    /// Fresh throwaway keys.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let from = Identity::generate(rng);
        let mut to = Identity::generate(rng).address();
        to.inbox = NULL_INBOX;
        Decoy { from, to }
    }
}

/// A dummy for the null inbox: a real seal of an empty chunk between throwaway keys.
pub fn dummy<R: CryptoRng>(
    decoy: &Decoy,
    storage_pk: &[u8; 32],
    rng: &mut R,
) -> Result<Envelope, EnvelopeError> {
    dummy_routed(decoy, storage_pk, rng).map(|(e, _)| e)
}

/// [`dummy`], also returning what opens storage's sealed status for it.
pub fn dummy_routed<R: CryptoRng>(
    decoy: &Decoy,
    storage_pk: &[u8; 32],
    rng: &mut R,
) -> Result<(Envelope, Responder), EnvelopeError> {
    let header = Header {
        counter: rng.next_u64(),
        message: rng.next_u64(),
        chunk: 0,
        chunks: 1,
    };
    seal_routed(&decoy.from, &decoy.to, storage_pk, header, &[], rng)
}

/// Opens an envelope addressed to `me` from one of `contacts` (trying each: auth mode
/// needs the sender's key, and mail from strangers is refused). Returns the sender, the
/// header and the chunk.
pub fn open(
    envelope: &[u8],
    me: &Identity,
    contacts: &[Address],
) -> Result<(Address, Header, Vec<u8>), EnvelopeError> {
    if envelope.len() != ENVELOPE_LEN {
        return Err(EnvelopeError::Malformed);
    }
    let body = &envelope[ROUTING_LEN..];
    let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(&body[..32])
        .map_err(|_| EnvelopeError::Open)?;
    let inbox = me.address().inbox;
    // Every contact is tried, also after one has opened it, so that opening costs the same
    // for every envelope whoever sent it, real or not: a client's work, and so when its
    // thread gets to run on a busy machine, must not show its mail (issue 12, finding 3).
    let mut found = None;
    for c in contacts {
        let Ok(pk) = <Kem as hpke::Kem>::PublicKey::from_bytes(&c.public_key) else {
            continue;
        };
        let mode = OpModeR::Auth(pk);
        if let Ok(plain) =
            hpke::single_shot_open::<Aead, Kdf, Kem>(&mode, &me.sk, &enc, INFO, &body[32..], &inbox)
            && found.is_none()
        {
            found = Some((c, plain));
        }
    }
    if let Some((c, plain)) = found {
        let u64_at = |i: usize| u64::from_le_bytes(plain[i..i + 8].try_into().unwrap_or([0; 8]));
        let u16_at = |i: usize| u16::from_le_bytes(plain[i..i + 2].try_into().unwrap_or([0; 2]));
        let header = Header {
            counter: u64_at(0),
            message: u64_at(8),
            chunk: u16_at(16),
            chunks: u16_at(18),
        };
        let len = u16_at(20) as usize;
        if len > CHUNK_LEN || header.chunk >= header.chunks || header.chunks > MAX_CHUNKS {
            return Err(EnvelopeError::Malformed);
        }
        return Ok((*c, header, plain[HEADER_LEN..HEADER_LEN + len].to_vec()));
    }
    Err(EnvelopeError::Open)
}

/// The inbox this envelope is for, as storage reads it.
pub fn inbox(
    envelope: &[u8],
    storage: &routing::RoutingKey,
) -> Result<[u8; INBOX_LEN], EnvelopeError> {
    storage
        .open(&envelope[..ROUTING_LEN.min(envelope.len())])
        .map(|(inbox, _)| inbox)
        .map_err(|_| EnvelopeError::Open)
}

/// Splits a message into chunks of at most [`CHUNK_LEN`] bytes (one empty chunk for an empty
/// message).
pub fn chunks(message: &[u8]) -> Result<Vec<&[u8]>, EnvelopeError> {
    let n = message.len().div_ceil(CHUNK_LEN).max(1);
    if n > MAX_CHUNKS as usize {
        return Err(EnvelopeError::TooLong);
    }
    Ok(if message.is_empty() {
        vec![message]
    } else {
        message.chunks(CHUNK_LEN).collect()
    })
}

/// Per-sender replay protection: counters strictly increase per sender, envelopes may arrive
/// out of order within a window of 1,024, and each counter is accepted once.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct ReplayWindow {
    seen: HashMap<[u8; 32], (u64, Vec<u64>)>,
}

const WINDOW: u64 = 1024;

impl ReplayWindow {
    /// Accepts `counter` from `sender` once; refuses repeats and counters older than the window.
    pub fn accept(&mut self, sender: &Address, counter: u64) -> Result<(), EnvelopeError> {
        let (high, recent) = self.seen.entry(sender.public_key).or_default();
        // Older than the window: `counter + WINDOW <= high`, without overflowing on a counter
        // the contact chose near u64::MAX (which wrapped in release and panicked in debug).
        let too_old = counter.checked_add(WINDOW).is_some_and(|c| c <= *high);
        if too_old || recent.contains(&counter) {
            return Err(EnvelopeError::Replay);
        }
        recent.push(counter);
        *high = (*high).max(counter);
        let floor = high.saturating_sub(WINDOW);
        recent.retain(|&c| c > floor);
        Ok(())
    }
}

/// The chunks of one message so far: how many there will be, and those in.
type Partial = (u16, BTreeMap<u16, Vec<u8>>);

/// Reassembles chunked messages, whatever order their envelopes arrive in.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Reassembly {
    /// Keyed by sender and message id.
    partial: HashMap<([u8; 32], u64), Partial>,
}

impl Reassembly {
    /// Messages begun and not yet whole.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Adds a chunk; returns the whole message once its last chunk is in.
    pub fn add(&mut self, sender: &Address, header: Header, chunk: Vec<u8>) -> Option<Vec<u8>> {
        let key = (sender.public_key, header.message);
        let (chunks, parts) = self
            .partial
            .entry(key)
            .or_insert_with(|| (header.chunks, BTreeMap::new()));
        if *chunks != header.chunks {
            return None;
        }
        parts.insert(header.chunk, chunk);
        if parts.len() == *chunks as usize {
            let (_, parts) = self.partial.remove(&key)?;
            return Some(parts.into_values().flatten().collect());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_near_the_top_neither_wrap_nor_panic() {
        let alice = Identity::generate(&mut rand::rng()).address();
        let mut w = ReplayWindow::default();
        assert_eq!(w.accept(&alice, u64::MAX - 1), Ok(()));
        assert_eq!(w.accept(&alice, u64::MAX), Ok(()), "new, not a replay");
        assert_eq!(w.accept(&alice, u64::MAX), Err(EnvelopeError::Replay));
        assert_eq!(w.accept(&alice, u64::MAX - 1), Err(EnvelopeError::Replay));
        assert_eq!(
            w.accept(&alice, 5),
            Err(EnvelopeError::Replay),
            "far below the window"
        );
    }
    use shroud_proto::routing::RoutingKey;

    fn send(
        from: &Identity,
        to: &Address,
        storage: &RoutingKey,
        message: &[u8],
        counter: &mut u64,
        id: u64,
    ) -> Vec<Envelope> {
        seal_message(
            from,
            to,
            &storage.public(),
            message,
            id,
            counter,
            &mut rand::rng(),
        )
        .unwrap()
    }

    #[test]
    fn sealed_to_the_recipient_from_a_known_sender() {
        let mut rng = rand::rng();
        let storage = RoutingKey::generate(&mut rng);
        let (alice, bob, carol) = (
            Identity::generate(&mut rng),
            Identity::generate(&mut rng),
            Identity::generate(&mut rng),
        );
        let mut ctr = 0;
        let env = send(&alice, &bob.address(), &storage, b"hi bob", &mut ctr, 1);
        assert_eq!(env.len(), 1);
        assert_eq!(env[0].0.len(), ENVELOPE_LEN);
        assert_eq!(inbox(&env[0].0, &storage).unwrap(), bob.address().inbox);
        let contacts = [carol.address(), alice.address()];
        let (from, h, body) = open(&env[0].0, &bob, &contacts).unwrap();
        assert_eq!(
            (from, h.counter, body.as_slice()),
            (alice.address(), 1, &b"hi bob"[..])
        );
        // The sender first or last among the contacts (every one is tried either way).
        let first = [alice.address(), carol.address()];
        assert_eq!(open(&env[0].0, &bob, &first).unwrap().0, alice.address());
        // Carol cannot read it; Bob refuses it from a stranger; an altered byte fails.
        assert!(open(&env[0].0, &carol, &[alice.address()]).is_err());
        assert!(open(&env[0].0, &bob, &[carol.address()]).is_err());
        let mut bad = env[0].clone();
        bad.0[ROUTING_LEN + 100] ^= 1;
        assert!(open(&bad.0, &bob, &contacts).is_err());
        // Moved to Carol's inbox by a lying storage: the body is bound to Bob's inbox.
        let mut moved = env[0].clone();
        moved.0[..ROUTING_LEN].copy_from_slice(
            &routing::seal(&storage.public(), &carol.address().inbox, &mut rng)
                .unwrap()
                .0,
        );
        assert!(open(&moved.0, &carol, &[alice.address()]).is_err());
    }

    #[test]
    fn padding_hides_length_and_long_messages_reassemble() {
        let mut rng = rand::rng();
        let storage = RoutingKey::generate(&mut rng);
        let (alice, bob) = (Identity::generate(&mut rng), Identity::generate(&mut rng));
        let mut ctr = 0;
        let short = send(&alice, &bob.address(), &storage, b"", &mut ctr, 1);
        let long_msg: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let mut long = send(&alice, &bob.address(), &storage, &long_msg, &mut ctr, 2);
        assert_eq!(long.len(), long_msg.len().div_ceil(CHUNK_LEN));
        assert!(short.iter().chain(&long).all(|e| e.0.len() == ENVELOPE_LEN));
        let dummy = dummy(&Decoy::generate(&mut rng), &storage.public(), &mut rng).unwrap();
        assert_eq!(dummy.0.len(), ENVELOPE_LEN);
        assert_eq!(inbox(&dummy.0, &storage).unwrap(), NULL_INBOX);
        // Out of order, with a duplicate and a replay.
        long.reverse();
        let mut window = ReplayWindow::default();
        let mut re = Reassembly::default();
        let mut done = None;
        for e in long.iter().chain([&long[0]]) {
            let (from, h, body) = open(&e.0, &bob, &[alice.address()]).unwrap();
            if window.accept(&from, h.counter).is_err() {
                continue;
            }
            if let Some(m) = re.add(&from, h, body) {
                assert!(done.is_none(), "delivered twice");
                done = Some(m);
            }
        }
        assert_eq!(done.unwrap(), long_msg);
        assert_eq!(
            window.accept(&alice.address(), 2),
            Err(EnvelopeError::Replay)
        );
        assert!(chunks(&vec![0u8; CHUNK_LEN * MAX_CHUNKS as usize + 1]).is_err());
    }
}

//! One outbox row of the outbox delivery (issue 13; docs/mail-delivery.md "What a row is"):
//! what a writer puts in its outbox each round, real or not, and what a reader who fetched
//! it makes of it.
//!
//! ```text
//! row (ROW_LEN) = tag (16) || nonce (24) || XChaCha20-Poly1305(pair key, nonce, aad, chunk) || AEAD tag (16)
//! tag           = HMAC-SHA256(outbox key, aad || nonce || ciphertext || AEAD tag), first 16 bytes
//! aad           = "shroud-row-v1" || round (u64 BE) || row index (u64 BE)
//! ```
//!
//! - The **outbox key** is the writer's, known to its contacts: any contact who fetches the
//!   row tells an authentic row of this round and place from a forged, altered or replayed
//!   one ([`RowError::Forged`]), whoever it was written to. HMAC (RFC 2104) over the AEAD's
//!   output is encrypt-then-MAC (Bellare and Namprempre, 2000); truncating HMAC-SHA256 to 128
//!   bits follows RFC 2104 section 5 and NIST SP 800-107.
//! - The **pair key** is per ordered pair of contacts: only the reader it was written to opens
//!   the chunk ([`Opened::Mine`]); to everyone else it is [`Opened::NotMine`].
//! - XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha) takes a random 192-bit nonce, so a writer
//!   that crashes and writes a round again never repeats a (key, nonce) pair.
//! - A dummy row is a real seal through the same code, under a throwaway pair key
//!   ([`seal_dummy`]): without the keys, nothing tells it from a real one, bit for bit.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Tag, XChaCha20Poly1305, XNonce};
use hmac::{Hmac, Mac};
use rand::CryptoRng;
use sha2::Sha256;
use zeroize::Zeroizing;

/// Bytes of a row (the PIR board's row).
pub const ROW_LEN: usize = 1024;
const MAC_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const AEAD_TAG_LEN: usize = 16;
const CIPHER_AT: usize = MAC_LEN + NONCE_LEN;
/// Bytes of the chunk a row carries.
pub const CHUNK_LEN: usize = ROW_LEN - CIPHER_AT - AEAD_TAG_LEN;
const LABEL: &[u8] = b"shroud-row-v1";
const AAD_LEN: usize = 13 + 16;

/// A row that is not what its writer wrote for this round and place.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RowError {
    /// The outbox tag does not verify: altered, forged, replayed from another round or
    /// place, or a wrong PIR answer.
    #[error("outbox row fails its writer's tag: altered, replayed or a wrong answer")]
    Forged,
    /// Not [`ROW_LEN`] bytes.
    #[error("a row of {0} bytes")]
    Length(usize),
}

/// A writer's outbox key, shared with its contacts.
///
/// # Security
/// Whoever holds it can verify, and forge, the writer's outbox tags (not read or forge its
/// chunks, which need a pair key). Zeroized on drop.
#[derive(Clone)]
pub struct OutboxKey(Zeroizing<[u8; 32]>);

/// The key of one ordered pair of contacts, writer to reader.
///
/// # Security
/// Reads and writes the pair's chunks. Zeroized on drop.
#[derive(Clone)]
pub struct PairKey(Zeroizing<[u8; 32]>);

/// 32 fresh random bytes, zeroized on drop.
fn fresh<R: CryptoRng + ?Sized>(rng: &mut R) -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(k.as_mut());
    k
}

impl OutboxKey {
    /// A fresh key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        OutboxKey(fresh(rng))
    }

    /// The key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        OutboxKey(Zeroizing::new(bytes))
    }

    fn tag(&self, aad: &[u8; AAD_LEN], rest: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as hmac::KeyInit>::new_from_slice(self.0.as_ref())
            .expect("HMAC takes a key of any length");
        mac.update(aad);
        mac.update(rest);
        mac
    }
}

impl PairKey {
    /// A fresh key.
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        PairKey(fresh(rng))
    }

    /// The key from its bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        PairKey(Zeroizing::new(bytes))
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new((&*self.0).into())
    }
}

/// Where a row sits: the round and the row's index on the board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Place {
    /// The round it is written for.
    pub round: u64,
    /// Its index on the board.
    pub row: u64,
}

impl Place {
    fn aad(&self) -> [u8; AAD_LEN] {
        let mut a = [0u8; AAD_LEN];
        a[..13].copy_from_slice(LABEL);
        a[13..21].copy_from_slice(&self.round.to_be_bytes());
        a[21..].copy_from_slice(&self.row.to_be_bytes());
        a
    }
}

/// What a fetched, authentic row holds for its reader.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// A chunk written to this reader.
    Mine(Zeroizing<Vec<u8>>),
    /// Written to someone else, or a dummy.
    NotMine,
}

/// Seals `chunk` (exactly [`CHUNK_LEN`] bytes: the caller pads) for the reader of `pair`,
/// at `place` of the outbox keyed by `outbox`.
pub fn seal<R: CryptoRng + ?Sized>(
    outbox: &OutboxKey,
    pair: &PairKey,
    place: Place,
    chunk: &[u8; CHUNK_LEN],
    rng: &mut R,
) -> Box<[u8; ROW_LEN]> {
    let mut row = Box::new([0u8; ROW_LEN]);
    let mut nonce = [0u8; NONCE_LEN];
    rng.fill_bytes(&mut nonce);
    row[MAC_LEN..CIPHER_AT].copy_from_slice(&nonce);
    row[CIPHER_AT..ROW_LEN - AEAD_TAG_LEN].copy_from_slice(chunk);
    let aad = place.aad();
    let tag = pair
        .cipher()
        .encrypt_inout_detached(
            &XNonce::from(nonce),
            &aad,
            (&mut row[CIPHER_AT..ROW_LEN - AEAD_TAG_LEN]).into(),
        )
        .expect("XChaCha20-Poly1305 seals any length under 256 GiB");
    row[ROW_LEN - AEAD_TAG_LEN..].copy_from_slice(&tag);
    let mac = outbox.tag(&aad, &row[MAC_LEN..]).finalize().into_bytes();
    row[..MAC_LEN].copy_from_slice(&mac[..MAC_LEN]);
    row
}

/// A dummy row for `place`: a real seal of random bytes under a throwaway pair key, tagged
/// with the outbox key like any other row.
pub fn seal_dummy<R: CryptoRng + ?Sized>(
    outbox: &OutboxKey,
    place: Place,
    rng: &mut R,
) -> Box<[u8; ROW_LEN]> {
    let throwaway = PairKey::generate(rng);
    let mut chunk = Zeroizing::new([0u8; CHUNK_LEN]);
    rng.fill_bytes(chunk.as_mut());
    seal(outbox, &throwaway, place, &chunk, rng)
}

/// Checks a fetched row against its writer's outbox key and place, then opens it with the
/// pair key from that writer to us.
pub fn open(
    outbox: &OutboxKey,
    pair: &PairKey,
    place: Place,
    row: &[u8],
) -> Result<Opened, RowError> {
    if row.len() != ROW_LEN {
        return Err(RowError::Length(row.len()));
    }
    let aad = place.aad();
    outbox
        .tag(&aad, &row[MAC_LEN..])
        .verify_truncated_left(&row[..MAC_LEN])
        .map_err(|_| RowError::Forged)?;
    let mut nonce = [0u8; NONCE_LEN];
    nonce.copy_from_slice(&row[MAC_LEN..CIPHER_AT]);
    let mut tag = [0u8; AEAD_TAG_LEN];
    tag.copy_from_slice(&row[ROW_LEN - AEAD_TAG_LEN..]);
    let mut chunk = Zeroizing::new(row[CIPHER_AT..ROW_LEN - AEAD_TAG_LEN].to_vec());
    match pair.cipher().decrypt_inout_detached(
        &XNonce::from(nonce),
        &aad,
        chunk.as_mut_slice().into(),
        &Tag::from(tag),
    ) {
        Ok(()) => Ok(Opened::Mine(chunk)),
        Err(_) => Ok(Opened::NotMine),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    fn keys(rng: &mut StdRng) -> (OutboxKey, PairKey) {
        (OutboxKey::generate(rng), PairKey::generate(rng))
    }

    /// The reader it was written to opens the chunk; another reader sees "not mine"; a
    /// dummy is "not mine" to everyone; every row verifies for every contact of the writer.
    #[test]
    fn only_the_pair_opens_and_every_contact_verifies() {
        let mut rng = StdRng::seed_from_u64(1);
        let (outbox, to_bob) = keys(&mut rng);
        let to_carol = PairKey::generate(&mut rng);
        let place = Place { round: 7, row: 42 };
        let mut chunk = [0u8; CHUNK_LEN];
        rng.fill_bytes(&mut chunk);
        let row = seal(&outbox, &to_bob, place, &chunk, &mut rng);
        assert_eq!(
            open(&outbox, &to_bob, place, &row[..]),
            Ok(Opened::Mine(Zeroizing::new(chunk.to_vec())))
        );
        assert_eq!(
            open(&outbox, &to_carol, place, &row[..]),
            Ok(Opened::NotMine)
        );
        let dummy = seal_dummy(&outbox, place, &mut rng);
        assert_eq!(
            open(&outbox, &to_bob, place, &dummy[..]),
            Ok(Opened::NotMine)
        );
    }

    /// Any altered bit, another round or place (a replay), another writer's key, or a wrong
    /// length is caught before the chunk is opened.
    #[test]
    fn altered_or_replayed_rows_are_caught() {
        let mut rng = StdRng::seed_from_u64(2);
        let (outbox, pair) = keys(&mut rng);
        let place = Place { round: 3, row: 9 };
        let row = seal(&outbox, &pair, place, &[5u8; CHUNK_LEN], &mut rng);
        for bit in (0..ROW_LEN * 8).step_by(61) {
            let mut bad = row.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(
                open(&outbox, &pair, place, &bad[..]),
                Err(RowError::Forged),
                "bit {bit}"
            );
        }
        for other in [Place { round: 4, row: 9 }, Place { round: 3, row: 10 }] {
            assert_eq!(open(&outbox, &pair, other, &row[..]), Err(RowError::Forged));
        }
        let stranger = OutboxKey::generate(&mut rng);
        assert_eq!(
            open(&stranger, &pair, place, &row[..]),
            Err(RowError::Forged)
        );
        assert_eq!(
            open(&outbox, &pair, place, &row[1..]),
            Err(RowError::Length(ROW_LEN - 1))
        );
    }

    /// Two seals of one chunk at one place differ (fresh nonces): a writer that writes a
    /// round again after a crash repeats no (key, nonce) pair, and a retry is not linkable.
    #[test]
    fn every_seal_is_fresh() {
        let mut rng = StdRng::seed_from_u64(3);
        let (outbox, pair) = keys(&mut rng);
        let place = Place { round: 1, row: 1 };
        let a = seal(&outbox, &pair, place, &[1u8; CHUNK_LEN], &mut rng);
        let b = seal(&outbox, &pair, place, &[1u8; CHUNK_LEN], &mut rng);
        assert_ne!(a[MAC_LEN..CIPHER_AT], b[MAC_LEN..CIPHER_AT]);
        assert_ne!(a[CIPHER_AT..], b[CIPHER_AT..]);
    }
}

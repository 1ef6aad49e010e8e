//! AES-256-GCM sealing of buckets (NIST SP 800-38D), with a nonce scheme that never repeats.
//!
//! # Associated data
//! `"shroud-oram-v1" || store id (16) || tree (1) || bucket index (u64 LE)`. A ciphertext is
//! bound to its store and position, so the server cannot move it elsewhere.
//!
//! # Keys, lineages and nonces
//! A bucket is sealed under the subkey of a *lineage*, not under the store key itself:
//! `subkey = HKDF-SHA256(salt = lineage id, IKM = store key, info = "shroud-oram-lineage-v1" ||
//! store id)` (RFC 5869). A lineage is one run of the engine: a fresh 256-bit id drawn from the
//! operating system's generator at every `new` and every `restore`, never from the caller's
//! RNG (a restored VM snapshot or a cloned process duplicates a user-space generator's state;
//! the kernel's is reseeded on VM fork). The id is the first 32 bytes of every sealed bucket,
//! so a bucket sealed in an earlier lineage still opens.
//!
//! A nonce is `lineage id (first 4 bytes) || counter (u64 BE)`.
//! - The counter is one per store, starts at 1 and goes up by one per sealed bucket. It is
//!   part of the engine state, and the snapshot carries it.
//! - The caller persists the snapshot (the client's write-ahead log does) before it sends a
//!   write-back to the server, so within a lineage no `(key, nonce)` pair repeats.
//! - Across lineages the keys differ: restoring one snapshot twice (a VM snapshot restored
//!   twice, a replayed write-ahead log with a rolled-back server, a copied state directory)
//!   gives two lineages, two subkeys, and counters that may overlap harmlessly. Two lineages
//!   share a subkey only if their 256-bit ids collide. (The 32-bit salt this replaces made
//!   that about L^2 / 2^33 over L lineages, and certain for a restored VM.)
//! - 2^40 bucket writes use 2^40 of the 2^64 counter values: uniqueness is by construction,
//!   not by chance. (Random 96-bit nonces would not do: 2^40 of them collide with
//!   probability about 2^-17, and NIST caps random nonces at 2^32 per key.)
//! - Data volume: with 4 KiB buckets, 2^40 writes are 2^48 AES blocks; the GCM privacy
//!   bound (sigma^2 / 2^129 with sigma blocks) is then about 2^-33. Rotate the key well
//!   before that for higher margins.

use hkdf::Hkdf;
use rand::{CryptoRng, TryRng};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::aead::Aes256Gcm;
use crate::bucket::{LINEAGE_LEN, NONCE_AT, NONCE_LEN, PLAIN_AT, TAG_LEN};
use crate::integrity::{self, Digest, IntegrityError};
use crate::{BucketId, Error};

const AAD_PREFIX: &[u8; 14] = b"shroud-oram-v1";
const AAD_LEN: usize = AAD_PREFIX.len() + 16 + 1 + 8;

/// A 256-bit store key.
///
/// # Security
/// The only secret of a store. Zeroed on drop; `Debug` does not print it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Key([u8; 32]);

impl Key {
    /// A fresh random key.
    ///
    /// ```
    /// let key = shroud_oram::Key::generate(&mut rand::rng());
    /// assert_eq!(key.as_bytes().len(), 32);
    /// ```
    pub fn generate<R: CryptoRng + ?Sized>(rng: &mut R) -> Self {
        let mut k = [0u8; 32];
        rng.fill_bytes(&mut k);
        Key(k)
    }

    /// Wraps existing key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Key(bytes)
    }

    /// The key bytes, for the caller to store (encrypted) at rest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Key(<redacted>)")
    }
}

const LINEAGE_INFO: &[u8] = b"shroud-oram-lineage-v1";

/// The AES-256-GCM cipher of one lineage's subkey (see the module docs).
pub(crate) fn lineage_cipher(
    key: &Key,
    store_id: &[u8; 16],
    lineage: &[u8; LINEAGE_LEN],
) -> Aes256Gcm {
    let hk = Hkdf::<Sha256>::new(Some(lineage), &key.0);
    let mut info = [0u8; LINEAGE_INFO.len() + 16];
    info[..LINEAGE_INFO.len()].copy_from_slice(LINEAGE_INFO);
    info[LINEAGE_INFO.len()..].copy_from_slice(store_id);
    let mut subkey = Zeroizing::new([0u8; 32]);
    // 32 bytes is far below HKDF-SHA256's 255 * 32-byte limit: this cannot fail.
    let _ = hk.expand(&info, &mut subkey[..]);
    Aes256Gcm::new(&subkey)
}

/// A new lineage id, from the operating system's generator (see the module docs).
pub(crate) fn fresh_lineage() -> Result<[u8; LINEAGE_LEN], Error> {
    let mut lineage = [0u8; LINEAGE_LEN];
    rand::rngs::SysRng
        .try_fill_bytes(&mut lineage)
        .map_err(|_| Error::Entropy)?;
    Ok(lineage)
}

/// Seals and opens buckets of one store: seals under this lineage's subkey, opens under
/// whichever lineage a bucket names.
pub(crate) struct Sealer {
    key: Key,
    store_id: [u8; 16],
    lineage: [u8; LINEAGE_LEN],
    /// Wiped on drop (see [`Aes256Gcm`]).
    cipher: Aes256Gcm,
}

impl Sealer {
    /// A sealer for a new lineage, its id drawn from the operating system.
    pub fn new(key: &Key, store_id: [u8; 16]) -> Result<Self, Error> {
        Ok(Self::with_lineage(key, store_id, fresh_lineage()?))
    }

    /// A sealer for the given lineage (tests).
    pub(crate) fn with_lineage(key: &Key, store_id: [u8; 16], lineage: [u8; LINEAGE_LEN]) -> Self {
        Sealer {
            cipher: lineage_cipher(key, &store_id, &lineage),
            key: key.clone(),
            store_id,
            lineage,
        }
    }

    /// This lineage's id.
    pub fn lineage(&self) -> [u8; LINEAGE_LEN] {
        self.lineage
    }

    fn aad(&self, id: BucketId) -> [u8; AAD_LEN] {
        let mut a = [0u8; AAD_LEN];
        let (p, rest) = a.split_at_mut(AAD_PREFIX.len());
        p.copy_from_slice(AAD_PREFIX);
        rest[..16].copy_from_slice(&self.store_id);
        rest[16] = id.tree;
        rest[17..].copy_from_slice(&id.index.to_le_bytes());
        a
    }

    /// Encrypts the plaintext region of `buf` in place, writes nonce and tag around it and
    /// returns the bucket's new digest. `counter` is the store's nonce counter.
    pub fn seal(&self, counter: &mut u64, id: BucketId, buf: &mut [u8]) -> Result<Digest, Error> {
        let c = *counter;
        *counter = c.checked_add(1).ok_or(Error::NoncesExhausted)?;
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..4].copy_from_slice(&self.lineage[..4]);
        nonce[4..].copy_from_slice(&c.to_be_bytes());
        let n = buf.len();
        buf[..LINEAGE_LEN].copy_from_slice(&self.lineage);
        buf[NONCE_AT..PLAIN_AT].copy_from_slice(&nonce);
        let aad = self.aad(id);
        let tag = self
            .cipher
            .seal(&nonce, &aad, &mut buf[PLAIN_AT..n - TAG_LEN])
            .map_err(|_| Error::Crypto)?;
        buf[n - TAG_LEN..].copy_from_slice(&tag);
        Ok(integrity::digest_of(buf))
    }

    /// Checks that `buf` is the version named by `expected` and decrypts it in place.
    pub fn open(
        &self,
        id: BucketId,
        expected: &Digest,
        buf: &mut [u8],
    ) -> Result<(), IntegrityError> {
        if !integrity::matches(buf, expected) {
            return Err(IntegrityError::Tampered(id));
        }
        self.open_body(id, buf)
    }

    /// Checks `buf`'s tag under its own nonce and `id`, and decrypts it in place: the AEAD
    /// half of [`Sealer::open`], without the digest check. The caller must still compare the
    /// bucket's digest with its parent's record (`integrity::matches`, which reads only the
    /// nonce and tag, so it can come after) before using the plaintext.
    pub fn open_body(&self, id: BucketId, buf: &mut [u8]) -> Result<(), IntegrityError> {
        let n = buf.len();
        if n < PLAIN_AT + TAG_LEN {
            return Err(IntegrityError::Tampered(id));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&buf[NONCE_AT..PLAIN_AT]);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&buf[n - TAG_LEN..]);
        let mut lineage = [0u8; LINEAGE_LEN];
        lineage.copy_from_slice(&buf[..LINEAGE_LEN]);
        let aad = self.aad(id);
        // A bucket of this lineage, or of an earlier one: its subkey again.
        let earlier;
        let cipher = if lineage == self.lineage {
            &self.cipher
        } else {
            earlier = lineage_cipher(&self.key, &self.store_id, &lineage);
            &earlier
        };
        cipher
            .open(&nonce, &aad, &mut buf[PLAIN_AT..n - TAG_LEN], &tag)
            .map_err(|_| IntegrityError::Tampered(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::ciphertext_len;

    fn sealer() -> Sealer {
        Sealer::new(&Key::from_bytes([7; 32]), [1; 16]).unwrap()
    }

    #[test]
    fn seal_open_round_trip() {
        let s = sealer();
        let id = BucketId { tree: 0, index: 5 };
        let mut buf = vec![0u8; ciphertext_len(4, 16)];
        buf[PLAIN_AT + 8] = 42;
        let plain = buf[PLAIN_AT..buf.len() - TAG_LEN].to_vec();
        let mut ctr = 1;
        let d = s.seal(&mut ctr, id, &mut buf).unwrap();
        assert_eq!(ctr, 2);
        // The whole region, not one byte: a random lineage makes any one ciphertext byte
        // equal its plaintext one run in 256.
        assert_ne!(buf[PLAIN_AT..buf.len() - TAG_LEN], plain[..]);
        s.open(id, &d, &mut buf).unwrap();
        assert_eq!(buf[PLAIN_AT + 8], 42);
    }

    #[test]
    fn wrong_position_or_store_fails() {
        let s = sealer();
        let id = BucketId { tree: 0, index: 5 };
        let mut buf = vec![0u8; ciphertext_len(4, 16)];
        let mut ctr = 1;
        let d = s.seal(&mut ctr, id, &mut buf).unwrap();
        let mut moved = buf.clone();
        assert!(
            s.open(BucketId { tree: 0, index: 6 }, &d, &mut moved)
                .is_err()
        );
        let mut other_tree = buf.clone();
        assert!(
            s.open(BucketId { tree: 1, index: 5 }, &d, &mut other_tree)
                .is_err()
        );
        let other = Sealer::new(&Key::from_bytes([7; 32]), [9; 16]).unwrap();
        assert!(other.open(id, &d, &mut buf).is_err());
    }

    /// Issue 12, finding 7: the same snapshot restored twice seals the same bucket with the
    /// same counter under two subkeys, and a later lineage still opens the earlier's buckets.
    #[test]
    fn lineages_have_their_own_subkeys() {
        let key = Key::from_bytes([7; 32]);
        let (a, b) = (
            Sealer::new(&key, [1; 16]).unwrap(),
            Sealer::new(&key, [1; 16]).unwrap(),
        );
        assert_ne!(a.lineage(), b.lineage());
        let id = BucketId { tree: 0, index: 3 };
        let plain = vec![0u8; ciphertext_len(2, 16)];
        let (mut x, mut y) = (plain.clone(), plain.clone());
        let (mut ca, mut cb) = (41u64, 41u64);
        let dx = a.seal(&mut ca, id, &mut x).unwrap();
        let dy = b.seal(&mut cb, id, &mut y).unwrap();
        // Same store, bucket, counter and plaintext: different ciphertexts and tags, so the
        // keys differ (under one key, equal nonce and plaintext give equal ciphertext).
        assert_eq!(
            x[NONCE_AT + 4..PLAIN_AT],
            y[NONCE_AT + 4..PLAIN_AT],
            "same counter"
        );
        assert_ne!(x[PLAIN_AT..], y[PLAIN_AT..]);
        assert_ne!(dx, dy);
        // Same lineage bytes forced into both: still different subkeys would be needed to
        // open, so a bucket opens only under its own lineage's key.
        let mut forged = y.clone();
        forged[..LINEAGE_LEN].copy_from_slice(&a.lineage());
        forged[NONCE_AT..PLAIN_AT].copy_from_slice(&x[NONCE_AT..PLAIN_AT]);
        let dforged = integrity::digest_of(&forged);
        assert!(a.open(id, &dforged, &mut forged).is_err());
        // A later lineage opens an earlier one's bucket (by the id it carries).
        assert!(b.open(id, &dx, &mut x.clone()).is_ok());
        assert!(a.open(id, &dy, &mut y.clone()).is_ok());
        // The subkey is HKDF of the store key and the lineage: fixed inputs, fixed output.
        let l = [9u8; LINEAGE_LEN];
        let (p, q) = (
            Sealer::with_lineage(&key, [1; 16], l),
            Sealer::with_lineage(&key, [1; 16], l),
        );
        let (mut u, mut v) = (plain.clone(), plain);
        let (mut c1, mut c2) = (5u64, 5u64);
        p.seal(&mut c1, id, &mut u).unwrap();
        q.seal(&mut c2, id, &mut v).unwrap();
        assert_eq!(u, v, "one lineage, one subkey");
    }

    #[test]
    fn nonces_are_distinct() {
        let s = sealer();
        let id = BucketId { tree: 0, index: 0 };
        let mut ctr = 1;
        let mut a = vec![0u8; ciphertext_len(1, 16)];
        let mut b = a.clone();
        let da = s.seal(&mut ctr, id, &mut a).unwrap();
        let db = s.seal(&mut ctr, id, &mut b).unwrap();
        assert_ne!(da[..NONCE_LEN], db[..NONCE_LEN]);
        assert_ne!(a, b);
    }

    #[test]
    fn key_debug_is_redacted() {
        assert_eq!(format!("{:?}", Key::from_bytes([1; 32])), "Key(<redacted>)");
    }
}

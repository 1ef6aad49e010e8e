//! AES-256-GCM sealing of buckets (NIST SP 800-38D), with a nonce scheme that never repeats.
//!
//! # Associated data
//! `"shroud-oram-v1" || store id (16) || tree (1) || bucket index (u64 LE)`. A ciphertext is
//! bound to its store and position, so the server cannot move it elsewhere.
//!
//! # Nonces
//! A nonce is `salt (4 bytes) || counter (u64 BE)`.
//! - The counter is one per store, starts at 1 and goes up by one per sealed bucket. It is
//!   part of the engine state, and the snapshot carries it.
//! - The caller persists the snapshot (the client's write-ahead log does) before it sends a
//!   write-back to the server. So after a crash the restored counter is at or beyond every
//!   counter the server has ever seen, and no `(key, nonce)` pair is used twice on the wire.
//!   A bucket sealed but never sent may have its counter reused after a crash; it was never
//!   observed, so that is not a reuse an adversary can exploit.
//! - The salt is drawn afresh from the caller's CSPRNG at every `new` and `restore`. It is
//!   defence in depth against a caller that breaks the rule above (restores a stale
//!   snapshot after sending): two such lineages collide only if their salts match, 2^-32.
//! - 2^40 bucket writes use 2^40 of the 2^64 counter values: uniqueness is by construction,
//!   not by chance. (Random 96-bit nonces would not do: 2^40 of them collide with
//!   probability about 2^-17, and NIST caps random nonces at 2^32 per key.)
//! - Data volume: with 4 KiB buckets, 2^40 writes are 2^48 AES blocks; the GCM privacy
//!   bound (sigma^2 / 2^129 with sigma blocks) is then about 2^-33. Rotate the key well
//!   before that for higher margins.

use aes_gcm::aead::{Nonce, Tag};
use aes_gcm::{AeadInOut, Aes256Gcm, KeyInit};
use rand::CryptoRng;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::bucket::{NONCE_LEN, TAG_LEN};
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

/// Seals and opens buckets of one store.
pub(crate) struct Sealer {
    /// aes-gcm's `zeroize` feature wipes the expanded key schedule on drop.
    cipher: Aes256Gcm,
    store_id: [u8; 16],
    salt: [u8; 4],
}

impl Sealer {
    pub fn new(key: &Key, store_id: [u8; 16], salt: [u8; 4]) -> Self {
        let cipher = Aes256Gcm::new(&key.0.into());
        Sealer {
            cipher,
            store_id,
            salt,
        }
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
        nonce[..4].copy_from_slice(&self.salt);
        nonce[4..].copy_from_slice(&c.to_be_bytes());
        let n = buf.len();
        buf[..NONCE_LEN].copy_from_slice(&nonce);
        let aad = self.aad(id);
        let tag = self
            .cipher
            .encrypt_inout_detached(
                &Nonce::<Aes256Gcm>::from(nonce),
                &aad,
                (&mut buf[NONCE_LEN..n - TAG_LEN]).into(),
            )
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
        let n = buf.len();
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&buf[..NONCE_LEN]);
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&buf[n - TAG_LEN..]);
        let aad = self.aad(id);
        self.cipher
            .decrypt_inout_detached(
                &Nonce::<Aes256Gcm>::from(nonce),
                &aad,
                (&mut buf[NONCE_LEN..n - TAG_LEN]).into(),
                &Tag::<Aes256Gcm>::from(tag),
            )
            .map_err(|_| IntegrityError::Tampered(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bucket::ciphertext_len;

    fn sealer() -> Sealer {
        Sealer::new(&Key::from_bytes([7; 32]), [1; 16], [2; 4])
    }

    #[test]
    fn seal_open_round_trip() {
        let s = sealer();
        let id = BucketId { tree: 0, index: 5 };
        let mut buf = vec![0u8; ciphertext_len(4, 16)];
        buf[20] = 42;
        let mut ctr = 1;
        let d = s.seal(&mut ctr, id, &mut buf).unwrap();
        assert_eq!(ctr, 2);
        assert_ne!(buf[20], 42);
        s.open(id, &d, &mut buf).unwrap();
        assert_eq!(buf[20], 42);
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
        let other = Sealer::new(&Key::from_bytes([7; 32]), [9; 16], [2; 4]);
        assert!(other.open(id, &d, &mut buf).is_err());
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
        assert_ne!(da[..12], db[..12]);
        assert_ne!(a, b);
    }

    #[test]
    fn key_debug_is_redacted() {
        assert_eq!(format!("{:?}", Key::from_bytes([1; 32])), "Key(<redacted>)");
    }
}

//! Integrity and freshness: the digest tree aligned with the ORAM tree.
//!
//! Each bucket's plaintext carries the digests of its two children, and the client keeps the
//! digest of the root (or, with a tree-top cache, the cached buckets themselves, which carry
//! the digests of the first fetched level). A fetched path is verified from the top down, so
//! every bucket is checked against a digest that was itself authenticated.
//!
//! # What a digest is
//! A digest is the sealed bucket's `nonce || tag` (28 bytes), not a hash of its bytes.
//! - The GCM tag is a MAC over the ciphertext and the associated data (store id, tree, bucket
//!   index) under the secret key. Substituting other bytes under the same `(nonce, tag)` is a
//!   forgery, which AES-GCM's INT-CTXT security rules out (McGrew and Viega, "The Security and
//!   Performance of the Galois/Counter Mode", 2004; NIST SP 800-38D).
//! - Nonces never repeat (see [`crate::seal`]), so every version of a bucket has a distinct
//!   digest: an older version (rollback or replay) does not match the parent's record.
//! - Ciphertexts of other buckets or stores fail the tag check because the associated data
//!   differs.
//!
//! This is the "keyed Merkle tree" that the design notes allow in place of hashing: it gives
//! the same freshness as a hash over each bucket but costs no hashing at all, because the
//! tag is computed anyway. A parent holding a child's digest plays the role of the version
//! counters in Bonsai Merkle trees (Rogers et al., MICRO 2007).
//!
//! # Lazy init
//! A child that was never written has the all-zero digest [`EMPTY`]: it is the constant digest
//! of an empty subtree at every level. A real digest is never all-zero because the nonce
//! counter starts at 1. The server must return "absent" for such a bucket; returning anything
//! else, or "absent" for a bucket whose digest is not [`EMPTY`], is an [`IntegrityError`].

use std::fmt;

use subtle::ConstantTimeEq;

use crate::BucketId;
use crate::bucket::{NONCE_AT, NONCE_LEN, PLAIN_AT, TAG_LEN};

/// Bytes of a bucket digest: nonce and tag.
pub const DIGEST_LEN: usize = NONCE_LEN + TAG_LEN;

/// The digest of one sealed bucket.
///
/// # Security
/// Public: it is the bucket's nonce and tag, which the server stores anyway.
pub type Digest = [u8; DIGEST_LEN];

/// The digest of a bucket (and subtree) that was never written.
pub const EMPTY: Digest = [0u8; DIGEST_LEN];

/// The server returned something other than the bucket the client last wrote.
///
/// # Security
/// Raised before any of the bucket's contents are used; the engine's state is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IntegrityError {
    /// The bucket's bytes, nonce or tag are not those of the version the client wrote: a
    /// flipped byte, a swapped bucket, or a replayed older version.
    #[error("bucket {0} failed authentication (tampered, swapped or rolled back)")]
    Tampered(BucketId),
    /// The client wrote this bucket, but the server says it is absent.
    #[error("bucket {0} is missing")]
    Missing(BucketId),
    /// The client never wrote this bucket, but the server returned one.
    #[error("bucket {0} should be absent")]
    Unexpected(BucketId),
    /// The server returned a bucket of the wrong length.
    #[error("bucket {id} is {got} bytes, expected {expected}")]
    WrongLength {
        /// The bucket.
        id: BucketId,
        /// Bytes received.
        got: usize,
        /// The store's ciphertext length.
        expected: usize,
    },
    /// The same bucket was requested twice in one round and the copies differ.
    #[error("two copies of bucket {0} differ")]
    Inconsistent(BucketId),
    /// Ring ORAM: the XOR of the slots read on the path through this bucket (its first
    /// fetched bucket) is not the one the client expects.
    #[error("the combined slots of the path through bucket {0} failed authentication")]
    Combined(BucketId),
    /// The position map places a block on a path that does not hold it.
    #[error("block {0} is not on its path")]
    BlockMissing(u64),
}

/// Compares a bucket's `nonce || tag` with the expected digest, in constant time.
pub(crate) fn matches(sealed: &[u8], expected: &Digest) -> bool {
    let n = sealed.len();
    if n < PLAIN_AT + TAG_LEN {
        return false;
    }
    let nonce_ok = sealed[NONCE_AT..PLAIN_AT].ct_eq(&expected[..NONCE_LEN]);
    let tag_ok = sealed[n - TAG_LEN..].ct_eq(&expected[NONCE_LEN..]);
    (nonce_ok & tag_ok).into()
}

/// Reads the digest of a sealed bucket.
pub(crate) fn digest_of(sealed: &[u8]) -> Digest {
    let mut d = EMPTY;
    let n = sealed.len();
    d[..NONCE_LEN].copy_from_slice(&sealed[NONCE_AT..PLAIN_AT]);
    d[NONCE_LEN..].copy_from_slice(&sealed[n - TAG_LEN..]);
    d
}

impl fmt::Display for BucketId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tree, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_round_trip() {
        let mut sealed = vec![0u8; 100];
        sealed[NONCE_AT..PLAIN_AT].copy_from_slice(&[1u8; 12]);
        let n = sealed.len();
        sealed[n - 16..].copy_from_slice(&[2u8; 16]);
        let d = digest_of(&sealed);
        assert!(matches(&sealed, &d));
        sealed[NONCE_AT] ^= 1;
        assert!(!matches(&sealed, &d));
        assert!(!matches(&[0u8; 3], &d));
    }
}

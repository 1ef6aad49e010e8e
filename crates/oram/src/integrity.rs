//! Integrity and freshness: the digest tree aligned with the ORAM tree.
//!
//! Each bucket's plaintext carries the digests of its two children, and the client keeps the
//! digest of the root (or, with a tree-top cache, the cached buckets themselves, which carry
//! the digests of the first fetched level). A fetched path is verified from the top down, so
//! every bucket is checked against a digest that was itself authenticated.
//!
//! # What a digest is
//! A digest is 28 bytes that name one sealed version of a bucket, not a hash of its bytes. A
//! store records one of two kinds for its whole life ([`Records`]):
//! - [`Records::Lineages`] (stores made since format 3): the bucket's `nonce || lineage id
//!   (first 16 bytes)`. Within a lineage the nonce counter never repeats, so the pair names
//!   exactly one ciphertext the client ever produced, and AES-GCM's INT-CTXT security
//!   (McGrew and Viega, "The Security and Performance of the Galois/Counter Mode", 2004;
//!   NIST SP 800-38D) rules out any other bytes opening under that lineage's subkey, nonce and
//!   associated data. Two lineages share the 128-bit prefix with probability about
//!   L^2 / 2^129 over L lineages. This is the counter form of a Bonsai Merkle tree (Rogers et
//!   al., MICRO 2007), as in Intel's memory encryption engine (Gueron, "A Memory Encryption
//!   Engine Suitable for General Purpose Processors", 2016): a parent records its children's
//!   counters, and a MAC under the secret key binds each child to its counter. Its point is
//!   that a digest is known before the bucket is sealed, so the buckets of a path are sealed
//!   independently (on two cores, [`crate::helper`]) rather than in a chain from the leaf up.
//! - [`Records::Tags`] (stores made before): the bucket's `nonce || tag`. The tag is the MAC
//!   itself, so the same argument holds, but a parent can record it only once its child is
//!   sealed.
//!
//! Either way:
//! - Nonces never repeat within a lineage (see [`crate::seal`]), so every version of a bucket
//!   has a distinct digest: an older version (rollback or replay) does not match the parent's
//!   record.
//! - Ciphertexts of other buckets or stores fail the tag check because the associated data
//!   differs (and it names the kind of record, so a bucket of one kind never opens as the
//!   other).
//!
//! This is the "keyed Merkle tree" that the design notes allow in place of hashing: it gives
//! the same freshness as a hash over each bucket but costs no hashing at all.
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

/// Bytes of a bucket digest: the nonce and 16 bytes of lineage id or tag.
pub const DIGEST_LEN: usize = NONCE_LEN + TAG_LEN;

/// Bytes of the lineage id a [`Records::Lineages`] digest holds.
const LINEAGE_PART: usize = DIGEST_LEN - NONCE_LEN;

/// The digest of one sealed bucket.
///
/// # Security
/// Public: it is bytes of the sealed bucket (nonce, and lineage id or tag), which the
/// server stores anyway.
pub type Digest = [u8; DIGEST_LEN];

/// What a parent bucket records of each child: fixed for a store's life (the snapshot
/// carries it). See the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Records {
    /// `nonce || tag`: stores made before format 3.
    Tags,
    /// `nonce || lineage id (first 16 bytes)`: known before the bucket is sealed.
    Lineages,
}

impl Records {
    /// The digest a bucket sealed with this nonce in this lineage has (for
    /// [`Records::Lineages`]; a tag is known only after sealing).
    pub(crate) fn predict(self, nonce: &[u8; NONCE_LEN], lineage: &[u8]) -> Option<Digest> {
        (self == Records::Lineages).then(|| {
            let mut d = EMPTY;
            d[..NONCE_LEN].copy_from_slice(nonce);
            d[NONCE_LEN..].copy_from_slice(&lineage[..LINEAGE_PART]);
            d
        })
    }
}

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

/// The second part of a sealed bucket's digest: its tag or its lineage id's prefix.
fn second_part(sealed: &[u8], records: Records) -> &[u8] {
    match records {
        Records::Tags => &sealed[sealed.len() - TAG_LEN..],
        Records::Lineages => &sealed[..LINEAGE_PART],
    }
}

/// Compares a sealed bucket's digest with the expected one, in constant time.
pub(crate) fn matches(sealed: &[u8], expected: &Digest, records: Records) -> bool {
    if sealed.len() < PLAIN_AT + TAG_LEN {
        return false;
    }
    let nonce_ok = sealed[NONCE_AT..PLAIN_AT].ct_eq(&expected[..NONCE_LEN]);
    let rest_ok = second_part(sealed, records).ct_eq(&expected[NONCE_LEN..]);
    (nonce_ok & rest_ok).into()
}

/// Reads the digest of a sealed bucket.
pub(crate) fn digest_of(sealed: &[u8], records: Records) -> Digest {
    let mut d = EMPTY;
    d[..NONCE_LEN].copy_from_slice(&sealed[NONCE_AT..PLAIN_AT]);
    d[NONCE_LEN..].copy_from_slice(second_part(sealed, records));
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
        for records in [Records::Tags, Records::Lineages] {
            let mut sealed = vec![0u8; 100];
            sealed[..32].copy_from_slice(&[3u8; 32]);
            sealed[NONCE_AT..PLAIN_AT].copy_from_slice(&[1u8; 12]);
            let n = sealed.len();
            sealed[n - 16..].copy_from_slice(&[2u8; 16]);
            let d = digest_of(&sealed, records);
            assert!(matches(&sealed, &d, records));
            // Every byte the digest covers counts.
            let covered: Vec<usize> = match records {
                Records::Tags => (NONCE_AT..PLAIN_AT).chain(n - 16..n).collect(),
                Records::Lineages => (0..16).chain(NONCE_AT..PLAIN_AT).collect(),
            };
            for i in covered {
                let mut other = sealed.clone();
                other[i] ^= 1;
                assert!(!matches(&other, &d, records), "{records:?} byte {i}");
            }
            assert!(!matches(&[0u8; 3], &d, records));
        }
        let lineages = digest_of(&[4u8; 100], Records::Lineages);
        let predicted = Records::Lineages.predict(&[4u8; 12], &[4u8; 32]);
        assert_eq!(predicted, Some(lineages));
        assert_eq!(Records::Tags.predict(&[4u8; 12], &[4u8; 32]), None);
    }
}

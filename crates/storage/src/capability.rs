//! Capabilities: the server keeps `SHA-256("shroud-capability-v1" || secret)` and compares
//! hashes in constant time. Capabilities are 32 random bytes, so a fast hash suffices (no
//! password hashing needed), and a stolen database reveals no usable secret.
//!
//! A missing store is checked against a fixed dummy hash, so "no such store" and "wrong
//! capability" take the same path and give the same answer.

use sha2::{Digest, Sha256};
use shroud_proto::Capability;
use subtle::ConstantTimeEq;

use crate::backend::StoreMeta;

const DOMAIN: &[u8] = b"shroud-capability-v1";

/// The hash the server stores for a capability.
pub fn hash(capability: &Capability) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    h.update(capability.0);
    h.finalize().into()
}

/// True if `capability` opens the store described by `meta` (false if there is none).
pub fn check(meta: Option<&StoreMeta>, capability: &Capability) -> bool {
    opens(meta.map(|m| &m.cap_hash), capability)
}

/// True if `capability` hashes to `expected` (false if there is none), on the same path and
/// in constant time either way.
pub fn opens(expected: Option<&[u8; 32]>, capability: &Capability) -> bool {
    let matches: bool = hash(capability)
        .ct_eq(expected.unwrap_or(&[0xA5; 32]))
        .into();
    matches & expected.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shroud_proto::Geometry;

    #[test]
    fn only_the_right_secret_opens() {
        let cap = Capability([7; 32]);
        let meta = StoreMeta {
            cap_hash: hash(&cap),
            geometry: Geometry {
                bucket_len: 1,
                buckets: 1,
            },
        };
        assert!(check(Some(&meta), &cap));
        assert!(!check(Some(&meta), &Capability([8; 32])));
        assert!(!check(None, &cap));
        assert_ne!(hash(&cap), cap.0);
    }
}

//! The bucket layout, plaintext and sealed.
//!
//! A sealed bucket is `lineage (32) || nonce (12) || AES-GCM(plaintext) || tag (16)`, the
//! lineage naming the key it was sealed under ([`crate::seal`]). Its plaintext is
//!
//! ```text
//! left child digest (28) | right child digest (28) | Z x slot
//! slot = address + 1 (u64 LE, 0 = empty) | leaf (u32 LE) | block (B bytes)
//! ```
//!
//! All-zero plaintext is therefore an empty bucket whose children were never written, which
//! is what the engine substitutes for a bucket the server has never stored (lazy init).
//!
//! # Security
//! Every bucket has the same length whatever it holds: empty slots are encrypted zeros.

use crate::integrity::{DIGEST_LEN, Digest};

/// Bytes of the lineage id at the front of a sealed bucket.
pub const LINEAGE_LEN: usize = 32;
/// Bytes of the AES-GCM nonce, after the lineage id.
pub const NONCE_LEN: usize = 12;
/// Where the nonce starts in a sealed bucket.
pub const NONCE_AT: usize = LINEAGE_LEN;
/// Where the encrypted plaintext starts in a sealed bucket.
pub const PLAIN_AT: usize = LINEAGE_LEN + NONCE_LEN;
/// Bytes of the AES-GCM tag at the end of a sealed bucket.
pub const TAG_LEN: usize = 16;
/// Bytes of a slot's header: `address + 1` and `leaf`.
pub const SLOT_HEADER_LEN: usize = 12;
/// Bytes of the two child digests at the front of the plaintext.
pub const DIGESTS_LEN: usize = 2 * DIGEST_LEN;

/// Plaintext bytes of a bucket with `slots` slots of `block` bytes.
pub const fn plaintext_len(slots: usize, block: usize) -> usize {
    DIGESTS_LEN + slots * (SLOT_HEADER_LEN + block)
}

/// Sealed bytes of a bucket with `slots` slots of `block` bytes.
pub const fn ciphertext_len(slots: usize, block: usize) -> usize {
    PLAIN_AT + plaintext_len(slots, block) + TAG_LEN
}

/// A view of a decrypted bucket: the plaintext part of a sealed-bucket buffer.
pub(crate) struct Layout {
    pub block: usize,
}

impl Layout {
    /// Where slot `slot` starts in a sealed-bucket buffer.
    pub(crate) fn slot_offset(&self, slot: usize) -> usize {
        PLAIN_AT + DIGESTS_LEN + slot * (SLOT_HEADER_LEN + self.block)
    }

    /// The digest of child `right as usize` (0 = left, 1 = right).
    pub fn child(&self, buf: &[u8], right: bool) -> Digest {
        let at = PLAIN_AT + usize::from(right) * DIGEST_LEN;
        let mut d = [0u8; DIGEST_LEN];
        d.copy_from_slice(&buf[at..at + DIGEST_LEN]);
        d
    }

    pub fn set_child(&self, buf: &mut [u8], right: bool, digest: &Digest) {
        let at = PLAIN_AT + usize::from(right) * DIGEST_LEN;
        buf[at..at + DIGEST_LEN].copy_from_slice(digest);
    }

    /// The block in `slot`: `(address, leaf)`, or `None` if the slot is empty.
    pub fn slot(&self, buf: &[u8], slot: usize) -> Option<(u64, u32)> {
        let at = self.slot_offset(slot);
        let addr = u64::from_le_bytes(buf[at..at + 8].try_into().ok()?);
        let leaf = u32::from_le_bytes(buf[at + 8..at + 12].try_into().ok()?);
        addr.checked_sub(1).map(|a| (a, leaf))
    }

    pub fn data<'a>(&self, buf: &'a [u8], slot: usize) -> &'a [u8] {
        let at = self.slot_offset(slot) + SLOT_HEADER_LEN;
        &buf[at..at + self.block]
    }

    /// Stores a block in `slot` and returns its data area for the caller to fill.
    pub fn put<'a>(&self, buf: &'a mut [u8], slot: usize, addr: u64, leaf: u32) -> &'a mut [u8] {
        let at = self.slot_offset(slot);
        buf[at..at + 8].copy_from_slice(&(addr + 1).to_le_bytes());
        buf[at + 8..at + 12].copy_from_slice(&leaf.to_le_bytes());
        &mut buf[at + SLOT_HEADER_LEN..at + SLOT_HEADER_LEN + self.block]
    }

    /// Zeroes slots `from..slots`: they hold no block.
    pub fn clear_from(&self, buf: &mut [u8], from: usize, slots: usize) {
        let start = self.slot_offset(from);
        let end = self.slot_offset(slots);
        buf[start..end].fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_buffer_is_empty_bucket() {
        let l = Layout { block: 16 };
        let buf = vec![0u8; ciphertext_len(4, 16)];
        for s in 0..4 {
            assert_eq!(l.slot(&buf, s), None);
        }
        assert_eq!(l.child(&buf, false), [0u8; DIGEST_LEN]);
    }

    #[test]
    fn put_and_read_back() {
        let l = Layout { block: 16 };
        let mut buf = vec![0u8; ciphertext_len(4, 16)];
        l.put(&mut buf, 2, 0, 7).copy_from_slice(&[9u8; 16]);
        assert_eq!(l.slot(&buf, 2), Some((0, 7)));
        assert_eq!(l.data(&buf, 2), &[9u8; 16]);
        l.clear_from(&mut buf, 0, 4);
        assert_eq!(l.slot(&buf, 2), None);
        let d = [5u8; DIGEST_LEN];
        l.set_child(&mut buf, true, &d);
        assert_eq!(l.child(&buf, true), d);
        assert_eq!(l.child(&buf, false), [0u8; DIGEST_LEN]);
    }
}

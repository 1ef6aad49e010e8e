//! The stash: blocks read from the tree that eviction could not yet write back.
//!
//! A dense, preallocated arena. Every round builds the next stash from the blocks eviction
//! left over, so the stash never needs a free list.
//!
//! # Security
//! Client-side only. Its size is never visible to the server, because every access writes back
//! the same number of buckets whatever the stash holds. Its bound is a typed error
//! ([`crate::Error::StashOverflow`]), not silent growth.

use zeroize::Zeroize;

/// A bounded set of `(address, leaf, block)` entries.
pub(crate) struct Stash {
    block: usize,
    limit: usize,
    addrs: Vec<u64>,
    leaves: Vec<u32>,
    data: Vec<u8>,
}

impl Stash {
    /// An empty stash for up to `limit` blocks of `block` bytes.
    pub fn new(block: usize, limit: usize) -> Self {
        Stash {
            block,
            limit,
            addrs: Vec::with_capacity(limit),
            leaves: Vec::with_capacity(limit),
            data: Vec::with_capacity(limit * block),
        }
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn addr(&self, i: usize) -> u64 {
        self.addrs[i]
    }

    pub fn leaf(&self, i: usize) -> u32 {
        self.leaves[i]
    }

    pub fn data(&self, i: usize) -> &[u8] {
        &self.data[i * self.block..(i + 1) * self.block]
    }

    /// Empties the stash, wiping the plaintext it held.
    pub fn clear(&mut self) {
        self.data.as_mut_slice().zeroize();
        self.data.clear();
        self.addrs.clear();
        self.leaves.clear();
    }

    /// Adds a block. The caller checks the limit first; past it this returns `false`.
    pub fn push(&mut self, addr: u64, leaf: u32, data: &[u8]) -> bool {
        if self.addrs.len() >= self.limit {
            return false;
        }
        self.addrs.push(addr);
        self.leaves.push(leaf);
        self.data.extend_from_slice(data);
        true
    }

    /// Bytes held by the stash's allocations.
    pub fn memory(&self) -> usize {
        self.addrs.capacity() * 8 + self.leaves.capacity() * 4 + self.data.capacity()
    }
}

impl Drop for Stash {
    fn drop(&mut self) {
        self.data.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded() {
        let mut s = Stash::new(4, 2);
        assert!(s.push(1, 0, &[1; 4]));
        assert!(s.push(2, 1, &[2; 4]));
        assert!(!s.push(3, 1, &[3; 4]));
        assert_eq!(s.len(), 2);
        assert_eq!(s.data(1), &[2; 4]);
        assert_eq!((s.addr(0), s.leaf(1)), (1, 1));
        s.clear();
        assert_eq!(s.len(), 0);
        assert_eq!(s.limit(), 2);
    }
}

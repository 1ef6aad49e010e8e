//! Position maps: where each block lives.
//!
//! An entry is `leaf + 1`, and `0` means "vacant": the block was never written and is on no
//! path. All-zero memory is thus a valid, empty map, which is what makes lazy init O(1).
//!
//! - **Flat**: one `u32` per block in client memory (4N bytes).
//! - **Recursive** (Stefanov et al., section 3.1; Shi et al., ASIACRYPT 2011): the entries of
//!   tree `t` are packed `chi = pos_block / 4` to a block and stored as the blocks of tree
//!   `t + 1`, a smaller ORAM built by the same engine. The last tree's entries stay in a flat
//!   map of at most `flat_limit` entries. Client memory is then O(log N) stashes and buffers
//!   plus that constant-size top map.
//!
//! # Security
//! A position is a uniformly random leaf drawn when the block was last accessed, and is
//! revealed exactly once: when the block is next read. Vacant blocks are read along a fresh
//! random path, so vacancy does not show.

use serde::{Deserialize, Serialize};

/// How the position map is kept.
///
/// # Security
/// Both modes hide the same things; the recursive one shows the server one more tree (and
/// round trip) per recursion level, which the geometry already tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PositionMap {
    /// One `u32` per block in client memory.
    Flat,
    /// Positions packed into blocks of smaller ORAMs.
    Recursive {
        /// Bytes per position block (a multiple of 4, 16 to 4096); `chi = pos_block / 4`
        /// entries per block.
        pos_block: u32,
        /// Recursion stops once a tree has at most this many blocks; their positions are
        /// then kept flat in client memory.
        flat_limit: u64,
    },
}

impl PositionMap {
    /// Recursive mode with 128-byte position blocks and a top map of at most 2^14 entries
    /// (64 KiB).
    pub const fn recursive() -> Self {
        PositionMap::Recursive {
            pos_block: 128,
            flat_limit: 1 << 14,
        }
    }
}

/// Encodes a leaf as an entry.
pub(crate) fn entry(leaf: u32) -> u32 {
    leaf + 1
}

/// Decodes an entry: `None` for vacant.
pub(crate) fn leaf_of(entry: u32) -> Option<u32> {
    entry.checked_sub(1)
}

/// Reads entry `i` of a position block.
pub(crate) fn get(block: &[u8], i: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&block[4 * i..4 * i + 4]);
    u32::from_le_bytes(b)
}

/// Writes entry `i` of a position block.
pub(crate) fn set(block: &mut [u8], i: usize, entry: u32) {
    block[4 * i..4 * i + 4].copy_from_slice(&entry.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries() {
        assert_eq!(leaf_of(0), None);
        assert_eq!(leaf_of(entry(0)), Some(0));
        assert_eq!(leaf_of(entry((1 << 31) - 1)), Some((1 << 31) - 1));
        let mut b = [0u8; 16];
        assert_eq!(get(&b, 3), 0);
        set(&mut b, 3, entry(9));
        assert_eq!(leaf_of(get(&b, 3)), Some(9));
        assert_eq!(get(&b, 2), 0);
    }
}

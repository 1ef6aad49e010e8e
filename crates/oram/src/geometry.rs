//! Tree geometry: heights, leaves, and which bucket ids lie on a path.
//!
//! Buckets are numbered in heap order: the root is 0 and the children of `i` are `2i+1` and
//! `2i+2`, so the bucket at depth `d` on the path to `leaf` is `2^d - 1 + (leaf >> (L - d))`.

use serde::{Deserialize, Serialize};

use crate::bucket;

/// Upper bound on a tree's height: leaves are `u32` values and position-map entries store
/// `leaf + 1`, so `2^31` leaves is the most that fits.
pub const MAX_HEIGHT: u32 = 31;

/// The shape of one ORAM tree.
///
/// # Security
/// Public: the server learns the geometry from the store's size and the bucket length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeGeometry {
    /// `L`: the tree has `2^L` leaves and `L + 1` levels.
    pub height: u32,
    /// `Z`: block slots per bucket.
    pub slots: u32,
    /// `B`: bytes per block.
    pub block_size: u32,
    /// `T`: the top levels held in client memory and never fetched.
    pub cached_levels: u32,
    /// How many logical blocks this tree stores.
    pub blocks: u64,
}

impl TreeGeometry {
    /// The geometry for `blocks` logical blocks.
    ///
    /// The tree gets about `blocks / 2` leaves, so about `blocks` buckets and `Z * blocks`
    /// slots: a 25% load at Z = 4. Stefanov et al. use `blocks` leaves; half as many keeps the
    /// stash small in our measurements (see the `stash_distribution` test) and saves one level
    /// of crypto per access.
    pub fn for_blocks(blocks: u64, slots: u32, block_size: u32, cached_levels: u32) -> Self {
        let height = ceil_log2(blocks).saturating_sub(1).min(MAX_HEIGHT);
        Self {
            height,
            slots,
            block_size,
            cached_levels: cached_levels.min(height),
            blocks,
        }
    }

    /// Number of levels, `L + 1`.
    pub fn levels(&self) -> usize {
        self.height as usize + 1
    }

    /// Number of leaves, `2^L`.
    pub fn leaves(&self) -> u64 {
        1u64 << self.height
    }

    /// Number of buckets in the whole tree, `2^(L+1) - 1`.
    pub fn bucket_count(&self) -> u64 {
        (1u64 << (self.height + 1)) - 1
    }

    /// Levels fetched from the server on each access: `L + 1 - T`.
    pub fn fetched_levels(&self) -> usize {
        self.levels() - self.cached_levels as usize
    }

    /// Heap index of the bucket at `depth` on the path to `leaf`.
    pub fn bucket_index(&self, depth: usize, leaf: u32) -> u64 {
        ((1u64 << depth) - 1) + (u64::from(leaf) >> (self.height as usize - depth))
    }

    /// The prefix of `leaf` that names its ancestor at `depth`.
    pub fn prefix(&self, depth: usize, leaf: u32) -> u32 {
        leaf >> (self.height as usize - depth)
    }

    /// Depth of the deepest bucket shared by the paths to `a` and `b`.
    pub fn common_depth(&self, a: u32, b: u32) -> usize {
        let diff = a ^ b;
        self.height as usize - (32 - diff.leading_zeros()) as usize
    }

    /// Bytes of one bucket's plaintext.
    pub fn plaintext_len(&self) -> usize {
        bucket::plaintext_len(self.slots as usize, self.block_size as usize)
    }

    /// Bytes of one sealed bucket, as stored on the server.
    pub fn ciphertext_len(&self) -> usize {
        bucket::ciphertext_len(self.slots as usize, self.block_size as usize)
    }

    /// Buckets held in the client's tree-top cache.
    pub fn cached_buckets(&self) -> usize {
        (1usize << self.cached_levels) - 1
    }
}

/// `ceil(log2(n))`, with `ceil_log2(0) = ceil_log2(1) = 0`.
pub fn ceil_log2(n: u64) -> u32 {
    if n <= 1 {
        0
    } else {
        64 - (n - 1).leading_zeros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_trees() {
        assert_eq!(TreeGeometry::for_blocks(1, 4, 16, 0).height, 0);
        assert_eq!(TreeGeometry::for_blocks(2, 4, 16, 0).height, 0);
        assert_eq!(TreeGeometry::for_blocks(3, 4, 16, 0).height, 1);
        assert_eq!(TreeGeometry::for_blocks(1 << 20, 4, 16, 0).height, 19);
        assert_eq!(TreeGeometry::for_blocks((1 << 20) + 1, 4, 16, 0).height, 20);
        assert_eq!(TreeGeometry::for_blocks(1 << 32, 4, 16, 0).height, 31);
    }

    #[test]
    fn path_indices() {
        let g = TreeGeometry::for_blocks(16, 4, 16, 0); // height 3, 8 leaves
        assert_eq!(g.height, 3);
        let path: Vec<u64> = (0..g.levels()).map(|d| g.bucket_index(d, 5)).collect();
        assert_eq!(path, vec![0, 2, 5, 12]);
        assert_eq!(g.common_depth(5, 5), 3);
        assert_eq!(g.common_depth(4, 5), 2);
        assert_eq!(g.common_depth(0, 7), 0);
    }

    #[test]
    fn cache_is_capped_by_height() {
        let g = TreeGeometry::for_blocks(8, 4, 16, 10);
        assert_eq!(g.cached_levels, g.height);
        assert_eq!(g.fetched_levels(), 1);
    }
}

//! An in-memory store that lays each tree's buckets out in one array, by heap index.

use crate::BucketId;
use crate::access::{Fetch, WriteBack};
use crate::engine::Oram;
use crate::geometry::TreeGeometry;
use crate::store::BucketStore;

/// Why a [`DenseStore`] refused a request.
///
/// # Security
/// Names bucket ids only, which are public.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DenseStoreError {
    /// The id names a tree or a heap index the store has no room for.
    #[error("bucket {0:?} is outside the store's trees")]
    OutOfRange(BucketId),
    /// Bytes of another length than the tree's buckets.
    #[error("bucket {id:?}: {got} bytes, the tree's buckets have {expected}")]
    WrongLength {
        /// The bucket.
        id: BucketId,
        /// Bytes given.
        got: usize,
        /// Bytes of every bucket of that tree.
        expected: usize,
    },
    /// The trees need more bytes than the limit given.
    #[error("the trees need {needed} bytes, more than the limit of {limit}")]
    TooLarge {
        /// Bytes the trees would take.
        needed: u64,
        /// The limit.
        limit: u64,
    },
}

/// One tree's buckets, back to back by heap index, and which were ever written.
#[derive(Clone)]
struct DenseTree {
    bucket_len: usize,
    bytes: Vec<u8>,
    written: Vec<u64>,
}

impl DenseTree {
    fn at(&self, index: u64) -> Option<usize> {
        let i = usize::try_from(index).ok()?;
        (i < self.bytes.len() / self.bucket_len.max(1)).then_some(i * self.bucket_len)
    }

    fn is_written(&self, index: u64) -> bool {
        self.written[(index / 64) as usize] & (1 << (index % 64)) != 0
    }
}

/// Buckets in one array per tree, at offsets computed from their heap index: for trees that
/// are formatted or filled in memory (benchmarks, embedding). A path's buckets are found
/// without hashing, and their addresses are known before any is read.
///
/// # Security
/// Holds only sealed buckets; like [`crate::MemoryStore`] it is the "server" side of the seam
/// and is trusted for nothing. Its layout is the tree's, which the server knows anyway.
///
/// Room for every bucket of every tree is reserved at creation (the operating system backs
/// the pages as they are written); a bucket never written is supplied as absent, so lazy
/// init works as with any store. For trees too large to hold, use [`crate::MemoryStore`],
/// which holds only the buckets written.
#[derive(Clone)]
pub struct DenseStore {
    trees: Vec<DenseTree>,
    reads: u64,
    writes: u64,
}

impl DenseStore {
    /// Room for every bucket of `trees` (tree `t` of the iterator is `BucketId::tree == t`),
    /// each of [`TreeGeometry::ciphertext_len`] bytes, if they fit in `limit` bytes.
    pub fn new(
        trees: impl IntoIterator<Item = TreeGeometry>,
        limit: u64,
    ) -> Result<Self, DenseStoreError> {
        let geoms: Vec<TreeGeometry> = trees.into_iter().collect();
        let needed = geoms
            .iter()
            .map(|g| g.bucket_count().saturating_mul(g.ciphertext_len() as u64))
            .fold(0u64, u64::saturating_add);
        if needed > limit || usize::try_from(needed).is_err() {
            return Err(DenseStoreError::TooLarge { needed, limit });
        }
        let trees = geoms
            .iter()
            .map(|g| {
                let count = g.bucket_count() as usize;
                DenseTree {
                    bucket_len: g.ciphertext_len(),
                    // Zeroed memory the allocator maps lazily: untouched pages cost nothing.
                    bytes: vec![0u8; count * g.ciphertext_len()],
                    written: vec![0u64; count.div_ceil(64)],
                }
            })
            .collect();
        Ok(DenseStore {
            trees,
            reads: 0,
            writes: 0,
        })
    }

    /// Room for every bucket of `oram`'s trees, within `limit` bytes.
    pub fn for_oram(oram: &Oram, limit: u64) -> Result<Self, DenseStoreError> {
        Self::new(oram.trees(), limit)
    }

    /// The stored bytes of a bucket, if it was written.
    pub fn get(&self, id: BucketId) -> Option<&[u8]> {
        let tree = self.trees.get(usize::from(id.tree))?;
        let at = tree.at(id.index)?;
        tree.is_written(id.index)
            .then(|| &tree.bytes[at..at + tree.bucket_len])
    }

    /// Mutable access to a written bucket's bytes (to tamper with it).
    pub fn get_mut(&mut self, id: BucketId) -> Option<&mut [u8]> {
        let tree = self.trees.get_mut(usize::from(id.tree))?;
        let at = tree.at(id.index)?;
        let len = tree.bucket_len;
        tree.is_written(id.index)
            .then(|| &mut tree.bytes[at..at + len])
    }

    /// Stores a bucket's bytes.
    pub fn insert(&mut self, id: BucketId, bytes: &[u8]) -> Result<(), DenseStoreError> {
        let tree = self
            .trees
            .get_mut(usize::from(id.tree))
            .ok_or(DenseStoreError::OutOfRange(id))?;
        let at = tree.at(id.index).ok_or(DenseStoreError::OutOfRange(id))?;
        if bytes.len() != tree.bucket_len {
            return Err(DenseStoreError::WrongLength {
                id,
                got: bytes.len(),
                expected: tree.bucket_len,
            });
        }
        tree.bytes[at..at + bytes.len()].copy_from_slice(bytes);
        tree.written[(id.index / 64) as usize] |= 1 << (id.index % 64);
        Ok(())
    }

    /// Buckets read and written so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.reads, self.writes)
    }
}

impl BucketStore for DenseStore {
    type Error = DenseStoreError;

    fn read_path(&mut self, fetch: &mut Fetch<'_>) -> Result<(), DenseStoreError> {
        // Every id checked first: a request the store cannot serve reads nothing.
        for &id in fetch.ids() {
            let tree = self
                .trees
                .get(usize::from(id.tree))
                .ok_or(DenseStoreError::OutOfRange(id))?;
            tree.at(id.index).ok_or(DenseStoreError::OutOfRange(id))?;
        }
        for i in 0..fetch.ids().len() {
            let id = fetch.ids()[i];
            self.reads += 1;
            let tree = &self.trees[usize::from(id.tree)];
            if !tree.is_written(id.index) {
                let _ = fetch.supply(i, None);
                continue;
            }
            let at = tree.at(id.index).unwrap_or(0);
            let bytes = &tree.bytes[at..at + tree.bucket_len];
            if bytes.len() == fetch.bucket_len() {
                fetch.slot_mut(i).copy_from_slice(bytes);
            } else {
                // A tree of another geometry than the engine's: the engine rejects it.
                let _ = fetch.supply(i, Some(bytes));
            }
        }
        Ok(())
    }

    fn write_path(&mut self, writes: &WriteBack<'_>) -> Result<(), DenseStoreError> {
        for (id, bytes) in writes.iter() {
            self.insert(id, bytes)?;
            self.writes += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Config, Key, MemoryStore, Op, PositionMap};
    use rand::{RngExt, SeedableRng};

    fn engines(config: Config, seed: u64) -> (Oram, Oram, rand_chacha::ChaCha20Rng) {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
        let key = Key::generate(&mut rng);
        let a = Oram::new(config, key.clone(), &mut rng).unwrap();
        let b = Oram::new(config, key, &mut rng).unwrap();
        (a, b, rng)
    }

    /// The same accesses against a dense and a hash-map store read the same data, formatted
    /// or lazily initialized, flat or recursive.
    #[test]
    fn agrees_with_the_hash_map_store() {
        for (format, position_map) in [
            (true, PositionMap::Flat),
            (false, PositionMap::Flat),
            (
                true,
                crate::position::PositionMap::Recursive {
                    pos_block: 16,
                    flat_limit: 2,
                },
            ),
            (
                false,
                crate::position::PositionMap::Recursive {
                    pos_block: 16,
                    flat_limit: 2,
                },
            ),
        ] {
            let config = Config {
                position_map,
                cached_levels: 1,
                ..Config::new(200, 16)
            };
            let (mut a, mut b, mut rng) = engines(config, 7);
            let mut dense = DenseStore::for_oram(&a, 1 << 24).unwrap();
            let mut hash = MemoryStore::new();
            if format {
                a.format(|id, bytes| dense.insert(id, bytes)).unwrap();
            }
            let mut model = vec![[0u8; 16]; 200];
            for i in 0..2_000u32 {
                let addr = rng.random_range(0..200u64);
                let data = [i as u8; 16];
                let op = if i % 3 == 0 {
                    model[addr as usize] = data;
                    Op::Write(addr, &data)
                } else {
                    Op::Read(addr)
                };
                a.run(&mut dense, &[op], &mut rng).unwrap();
                b.run(&mut hash, &[op], &mut rng).unwrap();
                if let Op::Read(addr) = op {
                    assert_eq!(a.result(0), Some(&model[addr as usize][..]));
                    assert_eq!(a.result(0), b.result(0));
                }
            }
        }
    }

    /// Tampering with a stored bucket is caught as with any store.
    #[test]
    fn tampering_is_caught() {
        let config = Config::new(64, 16);
        let (mut oram, _, mut rng) = engines(config, 8);
        let mut store = DenseStore::for_oram(&oram, 1 << 20).unwrap();
        oram.run(&mut store, &[Op::Write(1, &[9; 16])], &mut rng)
            .unwrap();
        let root = BucketId { tree: 0, index: 0 };
        store.get_mut(root).unwrap()[20] ^= 1;
        assert!(oram.run(&mut store, &[Op::Read(1)], &mut rng).is_err());
    }

    /// Ids and lengths the trees have no room for are typed errors, not panics.
    #[test]
    fn refuses_what_it_has_no_room_for() {
        let config = Config::new(64, 16);
        let (oram, _, _) = engines(config, 9);
        let mut store = DenseStore::for_oram(&oram, 1 << 20).unwrap();
        let far = BucketId {
            tree: 0,
            index: 1 << 40,
        };
        assert_eq!(
            store.insert(far, &[0; 4]),
            Err(DenseStoreError::OutOfRange(far))
        );
        let other_tree = BucketId { tree: 3, index: 0 };
        assert_eq!(
            store.insert(other_tree, &[0; 4]),
            Err(DenseStoreError::OutOfRange(other_tree))
        );
        let root = BucketId { tree: 0, index: 0 };
        assert!(matches!(
            store.insert(root, &[0; 4]),
            Err(DenseStoreError::WrongLength { got: 4, .. })
        ));
        assert!(store.get(root).is_none());
        assert!(matches!(
            DenseStore::for_oram(&oram, 100),
            Err(DenseStoreError::TooLarge { limit: 100, .. })
        ));
    }
}

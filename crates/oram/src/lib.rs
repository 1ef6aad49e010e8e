//! A sans-IO Path ORAM engine with authenticated, encrypted buckets.
//!
//! # The algorithm
//! Path ORAM (Stefanov, van Dijk, Shi, Fletcher, Ren, Yu and Devadas, "Path ORAM: An Extremely
//! Simple Oblivious RAM Protocol", CCS 2013) keeps N blocks in a binary tree of buckets of Z
//! slots on an untrusted server. Every block is mapped to a uniformly random leaf and lives on
//! the path from the root to that leaf, or in the client's stash. To access a block the
//! client reads the whole path of its leaf, remaps the block to a fresh random leaf, and
//! writes the path back, pushing stash blocks as deep as they may go. The server sees one
//! uniformly random path per access, whatever the access was.
//!
//! On top of the basic scheme this engine has:
//! - AES-256-GCM sealing of every bucket, bound to its store and position ([`seal`]);
//! - a digest tree aligned with the ORAM tree, so that tampering, swapping, rollback and
//!   deletion are detected when the path is next read ([`integrity`]);
//! - lazy init: buckets never written are empty and need no setup, so creating a store is
//!   O(1) ([`integrity`], [`position`]);
//! - a flat or recursive position map ([`position`]);
//! - a tree-top cache of T levels held in client memory (Maas et al., "PHANTOM", CCS 2013,
//!   and Ren et al., "Constants Count", USENIX Security 2015, use the same treetop caching);
//! - batches of several accesses per round, correct when their paths overlap.
//!
//! The [`ring`] module is a second engine over the same sealing and keys: Ring ORAM (Ren et
//! al., USENIX Security 2015), which reads one slot per bucket and moves about a third of
//! the bytes (docs/benchmarks.md), with a flat position map ([`ring::RingOram`]) or a
//! recursive one ([`ring::RecursiveRing`]). [`DenseStore`] holds a formatted tree in memory
//! by heap index, [`MemoryStore`] the buckets written in a hash map.
//!
//! # Sans-IO
//! The engine never touches a socket or a disk. [`Oram::begin`] plans a batch; [`Oram::fetch`]
//! names the buckets to read and takes their bytes; [`Oram::advance`] verifies them and either
//! asks for the next round (one per recursion level) or finishes; then [`Oram::write_back`]
//! lists the sealed buckets to store and [`Oram::result`] gives what was read.
//! [`Oram::run`] drives that loop synchronously over any [`BucketStore`], such as
//! [`MemoryStore`].
//!
//! ```
//! use shroud_oram::{Config, Key, MemoryStore, Op, Oram};
//!
//! let mut rng = rand::rng();
//! let mut oram = Oram::new(Config::new(1000, 32), Key::generate(&mut rng), &mut rng)?;
//! let mut store = MemoryStore::new();
//! oram.run(&mut store, &[Op::Write(7, &[1u8; 32])], &mut rng)?;
//! oram.run(&mut store, &[Op::Read(7)], &mut rng)?;
//! assert_eq!(oram.result(0), Some(&[1u8; 32][..]));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Security
//! What leaves the engine (bucket ids and sealed bytes) depends only on uniformly random
//! leaves: every access of a tree fetches one full root-to-leaf path minus the T cached
//! levels, and writes back the same ids; Read, Write and Dummy look the same; every sealed
//! bucket has the same length. What leaks: the geometry (N, B, Z, T and the number of
//! recursion levels), how many batches run and how many accesses each holds, and timing,
//! which the caller hides with a fixed schedule. Keys and the stash stay in client memory.
//! The engine is not constant-time: the client is trusted, and the server sees no client
//! timing finer than a round trip.

mod access;
pub mod aead;
pub mod bucket;
mod dense_store;
mod eager_init;
mod engine;
pub mod geometry;
mod helper;
pub mod integrity;
pub mod pages;
pub mod position;
pub mod ring;
mod round;
pub mod seal;
mod snapshot;
mod stash;
mod store;

use serde::{Deserialize, Serialize};

pub use access::{Fetch, Progress, WriteBack};
pub use dense_store::{DenseStore, DenseStoreError};
pub use eager_init::FormatError;
pub use engine::Oram;
pub use geometry::TreeGeometry;
pub use integrity::IntegrityError;
pub use position::PositionMap;
pub use seal::Key;
pub use store::{BucketStore, DriverError, MemoryStore};

/// A logical block address, `0..capacity`.
///
/// # Security
/// Secret: addresses never leave the client; the server sees only random leaves.
pub type Address = u64;

/// The largest supported capacity: 2^32 blocks.
pub const MAX_CAPACITY: u64 = 1 << 32;
/// The smallest block size.
pub const MIN_BLOCK: u32 = 16;
/// The largest block size: 64 KiB.
pub const MAX_BLOCK: u32 = 64 * 1024;

/// Names one bucket on the server: which tree (0 is the data tree, 1.. the recursive
/// position maps) and its heap index in that tree.
///
/// # Security
/// Public: the server sees every id the client fetches and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BucketId {
    /// The tree: 0 is the data tree; `t > 0` holds the positions of tree `t - 1`.
    pub tree: u8,
    /// Heap index within the tree: the root is 0, the children of `i` are `2i+1` and `2i+2`.
    pub index: u64,
}

/// One logical access.
///
/// # Security
/// The three kinds are indistinguishable to the server: each fetches and writes back one
/// uniformly random path per tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op<'a> {
    /// Read a block; an address never written reads as zeros.
    Read(Address),
    /// Overwrite a block with exactly `block_size` bytes.
    Write(Address, &'a [u8]),
    /// Touch nothing, look like anything.
    Dummy,
}

/// Store parameters, fixed at creation.
///
/// # Security
/// All of these are visible to the server, directly or through sizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// N: how many blocks, 1 to 2^32.
    pub capacity: u64,
    /// B: bytes per block, 16 to 65,536.
    pub block_size: u32,
    /// Z: slots per bucket (default 4).
    pub bucket_slots: u32,
    /// T: top levels cached in client memory (capped at each tree's height).
    pub cached_levels: u32,
    /// Flat or recursive position map.
    pub position_map: PositionMap,
    /// The most blocks the stash may hold between batches, per tree.
    pub stash_limit: u32,
    /// The most accesses one batch may hold.
    pub max_batch: u32,
}

impl Config {
    /// `capacity` blocks of `block_size` bytes, with Z = 4, no cache, a flat position map,
    /// a stash bound of 256 blocks and batches of one access.
    pub fn new(capacity: u64, block_size: u32) -> Self {
        Config {
            capacity,
            block_size,
            bucket_slots: 4,
            cached_levels: 0,
            position_map: PositionMap::Flat,
            stash_limit: 256,
            max_batch: 1,
        }
    }

    /// Checks the ranges documented on each field.
    pub fn validate(&self) -> Result<(), Error> {
        if self.capacity == 0 || self.capacity > MAX_CAPACITY {
            return Err(Error::InvalidConfig("capacity must be 1 to 2^32"));
        }
        if !(MIN_BLOCK..=MAX_BLOCK).contains(&self.block_size) {
            return Err(Error::InvalidConfig("block size must be 16 to 65536 bytes"));
        }
        if !(1..=64).contains(&self.bucket_slots) {
            return Err(Error::InvalidConfig("bucket slots must be 1 to 64"));
        }
        if !(1..=1 << 20).contains(&self.stash_limit) {
            return Err(Error::InvalidConfig("stash limit must be 1 to 2^20"));
        }
        if !(1..=64).contains(&self.max_batch) {
            return Err(Error::InvalidConfig("max batch must be 1 to 64"));
        }
        if self.cached_levels > 24 {
            return Err(Error::InvalidConfig("at most 24 cached levels"));
        }
        if let PositionMap::Recursive {
            pos_block,
            flat_limit,
        } = self.position_map
        {
            if pos_block % 4 != 0 || !(16..=4096).contains(&pos_block) {
                return Err(Error::InvalidConfig(
                    "position blocks must be 16 to 4096 bytes, a multiple of 4",
                ));
            }
            if flat_limit == 0 {
                return Err(Error::InvalidConfig("flat limit must be at least 1"));
            }
        }
        Ok(())
    }

    /// The geometry of every tree: the data tree first, then the position-map trees.
    pub fn trees(&self) -> Vec<TreeGeometry> {
        let mut trees = vec![TreeGeometry::for_blocks(
            self.capacity,
            self.bucket_slots,
            self.block_size,
            self.cached_levels,
        )];
        if let PositionMap::Recursive {
            pos_block,
            flat_limit,
        } = self.position_map
        {
            let chi = u64::from(pos_block / 4);
            let mut blocks = self.capacity;
            while blocks > flat_limit {
                blocks = blocks.div_ceil(chi);
                trees.push(TreeGeometry::for_blocks(
                    blocks,
                    self.bucket_slots,
                    pos_block,
                    self.cached_levels,
                ));
            }
        }
        trees
    }
}

/// Everything that can go wrong in the engine.
///
/// # Security
/// Messages name bucket ids (public) and addresses the caller passed in, never keys or
/// block contents. A failed batch is visible to the server as reads without a write-back.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server's data failed verification. The engine state is unchanged.
    #[error(transparent)]
    Integrity(#[from] IntegrityError),
    /// An address at or past the capacity.
    #[error("address {attempted} out of bounds (capacity {capacity})")]
    AddressOutOfBounds {
        /// The address asked for.
        attempted: u64,
        /// The store's capacity.
        capacity: u64,
    },
    /// A write whose data is not exactly one block.
    #[error("write of {got} bytes, blocks are {expected} bytes")]
    WrongBlockSize {
        /// Bytes given.
        got: usize,
        /// The block size.
        expected: usize,
    },
    /// A batch with no accesses or more than `max_batch`.
    #[error("batch of {got} accesses; 1 to {max} allowed")]
    BatchSize {
        /// Accesses given.
        got: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Eviction left more blocks than the stash may hold. The batch is aborted and the state
    /// is unchanged; a new batch (with fresh random leaves) may proceed.
    #[error("stash overflow: more than {limit} blocks left after eviction")]
    StashOverflow {
        /// The configured bound.
        limit: usize,
    },
    /// The operating system's random generator failed (drawing a lineage id).
    #[error("the operating system's random generator failed")]
    Entropy,
    /// `begin` while a batch is still in flight.
    #[error("a batch is already in flight")]
    Busy,
    /// `advance` with no batch waiting for buckets.
    #[error("no batch is waiting for buckets")]
    NotFetching,
    /// A parameter out of range.
    #[error("invalid config: {0}")]
    InvalidConfig(&'static str),
    /// The 64-bit nonce counter ran out (after 2^64 bucket writes).
    #[error("nonce counter exhausted")]
    NoncesExhausted,
    /// AES-GCM refused a buffer (too long).
    #[error("AEAD failure")]
    Crypto,
    /// A snapshot that does not decode or does not fit its config.
    #[error("bad snapshot: {0}")]
    BadSnapshot(String),
    /// The engine's own bookkeeping broke a rule it keeps (a bug, never the server's doing).
    #[error("internal invariant broken: {0}")]
    Invariant(&'static str),
}

//! Ring ORAM: a tree ORAM whose access reads one slot per bucket, beside Path ORAM.
//!
//! # The algorithm
//! Ring ORAM (Ren, Fletcher, Kwon, Stefanov, Shi, van Dijk and Devadas, "Constants Count:
//! Practical Improvements to Oblivious RAM", USENIX Security 2015) keeps every block on the
//! path of its leaf, as Path ORAM does, but in buckets of Z real and S dummy slots, each slot
//! sealed on its own, in an order only the client knows. Per access:
//! - **ReadPath**: one slot of each bucket on the block's path: the block where it lies, a
//!   random unread dummy everywhere else. Storage XORs the slots into one (the "XOR trick":
//!   the client recomputes every dummy it asked for and removes them), so one slot travels
//!   back. The block is remapped to a fresh random leaf and kept in the stash.
//! - **EvictPath**, every A-th access: Z slots of each bucket on the next path in
//!   reverse-lexicographic order (the real blocks still unread, padded with unread dummies)
//!   come back; every bucket of that path is rewritten with Z + S fresh slots, blocks pushed
//!   from the stash as deep as they may go.
//! - **EarlyReshuffle**: a bucket read S times since its last write has no unread dummy left;
//!   it is read (Z slots) and rewritten in the same access with the blocks it held, in a
//!   fresh order with fresh dummies. It takes no block from the stash, and is written
//!   before the access's eviction, which would otherwise pull its blocks into the eviction
//!   path's upper buckets, where every block competes for room (measured: either change
//!   tripled the stash's tail), so the blocks' places are what evictions alone make them.
//!
//! Which buckets, slots and paths an access touches depends only on the access count and
//! on uniformly random leaves, never on the data or the operation.
//!
//! # Parameters
//! Z = 32 real slots and A = 46 accesses per eviction, with L = ceil(log2(2N / A)) levels
//! below the root: the paper's pair for Z = 32 (its table of Z and A pairs, which also
//! gives Z = 16 and A = 20, this engine's default until issue 14 measured both) and its
//! tree height. (The paper's table could not be read again from this machine; the Z = 16
//! pair agrees with Obladi's code, OSDI 2018, which cites it.) S sets how often a bucket
//! must be reshuffled, not where blocks go: a bucket is read A times between evictions on
//! average. S = 64 with the schedule below: with S = 40 or 48 the schedule falls behind
//! (0.04 and 0.013 unscheduled reshuffles an access at N = 2^14, T = 8), with 64 it never
//! did in the runs of docs/benchmarks.md. A bucket holds Z + S = 96 slots, past one
//! 64-bit word of read marks (the metadata keeps as many words as a bucket needs).
//! Against Z = 16, S = 32, A = 20 at N = 2^14, B = 1 KiB, T = 8 this sends 315 instead of
//! 471 MB a day up at 2-second epochs and 120 instead of 175 MB down (engine bytes), for
//! 5.7 instead of 3.3 MiB of client memory.
//!
//! # Scheduled reshuffles: a request shape fixed by the access count
//! The paper reshuffles a bucket in the access that reads it the S-th time, so how many
//! buckets an access rewrites depends on the read counts of the paths it happened to
//! read. Those counts are public (storage sees every read), so this leaks nothing storage
//! does not know; but a slot schedule wants every client's frames alike whatever its
//! random paths. So the engine also reshuffles on a fixed schedule: on every
//! `reshuffle_every`-th eviction (3 by default) it reshuffles the fetched bucket read most
//! since its last write (the lowest index on a tie), a choice made from public counts
//! alone. Requests then have one shape per access count: the online slots every access,
//! and on every A-th access the eviction's Z slots per fetched bucket, plus Z more on
//! every third. A bucket that still reaches S reads is reshuffled at once, as in the paper,
//! and counted ([`RingOram::unscheduled_reshuffles`]): its request has Z more slots, by
//! public counts only. This schedule is this project's, not the paper's; no published
//! deamortization of Ring ORAM's early reshuffles could be read here. Its cost and how
//! often it falls back were measured (`the_reshuffle_schedule_keeps_up` in the engine's
//! tests; bytes per access in docs/benchmarks.md).
//!
//! # Where this engine departs from the paper
//! - **Bucket metadata stays with the client.** The paper stores each bucket's metadata
//!   (which slot holds which block, which were read, how many times) encrypted beside the
//!   bucket, and reads it before every access. Here the client keeps it (5 bytes a
//!   block slot, and masks: 0.43 MB at N = 2^14), so an access is one round trip, as in the slot schedule, and
//!   the metadata never leaves the client: there is nothing of it to tamper with or roll
//!   back.
//! - **Freshness without a digest tree.** The metadata records each bucket's lineage and
//!   first nonce, so the client opens every slot with the nonce it expects: a flipped byte,
//!   a slot moved to another bucket or position (the associated data names them) or an
//!   older version (another nonce) fails authentication at the first read.
//! - **Every slot read is checked**, dummies included (the client recomputes a dummy and
//!   compares it in constant time): a change to any slot an access reads fails it the same
//!   way, so tampering cannot tell a block from a dummy by whether the client complains.
//! - **Tree-top cache.** The top T levels are held by the client as plain buckets of at
//!   most Z blocks: never fetched, never reshuffled, written by eviction like the rest.
//! - **Batches, one round trip each, and a flat position map.** A batch of up to K
//!   accesses (`max_batch`, at most A and S) reads one path each; a block an earlier
//!   access of the batch brings in is read from the client, on a fresh random path. The
//!   batch's maintenance (the eviction of its A-th access, reshuffles) is planned after
//!   all its online reads and applied after all its operations, and a bucket is
//!   reshuffled once the next batch could find no unread dummy in it (after S + 1 - K
//!   reads; S with batches of one, as in the paper). The rewritten buckets travel in the
//!   next request, before its reads (storage applies writes first).
//! - **A flat position map, or a recursive one.** [`RingOram`] keeps a flat map (4 bytes a
//!   block, beside the metadata's 26); [`RecursiveRing`] keeps it in smaller Ring ORAMs
//!   whose blocks carry their own leaves, a round trip a tree (see its module docs, and
//!   docs/benchmarks.md, "Which mode is the default", for what it saves and costs).
//!
//! # Security
//! What leaves the engine per access: the previous access's rewritten buckets (the
//! eviction path, fixed by the access count, and the buckets whose public read counts
//! reached S), one slot of each fetched bucket of a uniformly random path (a uniformly
//! random slot among those not read since the bucket's last write, whether it holds the
//! block or a dummy), and on eviction Z such slots of each bucket of the eviction path.
//! Every slot has the same length. Read, write and dummy accesses are alike. The engine is
//! not constant-time; the client is trusted.

mod engine;
mod meta;
pub mod pages;
mod recursive;
mod slot;
mod snapshot;
mod store;

use serde::{Deserialize, Serialize};

use crate::geometry::ceil_log2;
use crate::{BucketId, Error, MAX_BLOCK, MIN_BLOCK};

pub use engine::RingOram;
pub use recursive::{Recursion, RecursiveRing};
pub use slot::SLOT_OVERHEAD;
pub use store::RingStore;

/// Z: real slots per bucket (Ren et al. 2015, the Z = 32 row).
pub const DEFAULT_Z: u32 = 32;
/// A: accesses per eviction, the paper's largest for Z = 32.
pub const DEFAULT_A: u32 = 46;
/// S: dummy slots per bucket (see the module docs).
pub const DEFAULT_S: u32 = 64;
/// The most slots (Z + S) a bucket may have.
pub const MAX_SLOTS: u32 = 128;
/// Evictions per scheduled reshuffle (see the module docs).
pub const DEFAULT_RESHUFFLE_EVERY: u32 = 3;

/// The parameters of a Ring ORAM store, fixed at creation.
///
/// # Security
/// All public: the server sees the slot count, slot length, tree height and eviction rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingConfig {
    /// N: how many blocks, 1 to 2^31.
    pub capacity: u64,
    /// B: bytes per block, 16 to 65,536.
    pub block_size: u32,
    /// Z: real slots per bucket.
    pub z: u32,
    /// S: dummy slots per bucket.
    pub s: u32,
    /// A: accesses per eviction.
    pub a: u32,
    /// One scheduled reshuffle every this many evictions (0: none, the paper's early
    /// reshuffles only): see the module docs.
    pub reshuffle_every: u32,
    /// T: top levels held by the client (capped at the tree's height).
    pub cached_levels: u32,
    /// The most blocks the stash may hold after an access.
    pub stash_limit: u32,
    /// The most accesses one batch may hold (K): at most A (so a batch has at most one
    /// eviction) and at most S (a bucket is reshuffled once the next batch could find no
    /// unread dummy in it: after S + 1 - K reads).
    pub max_batch: u32,
}

impl RingConfig {
    /// `capacity` blocks of `block_size` bytes with the default Z, S and A, no cached
    /// levels, a stash bound of 256 blocks and batches of one access.
    pub fn new(capacity: u64, block_size: u32) -> Self {
        RingConfig {
            capacity,
            block_size,
            z: DEFAULT_Z,
            s: DEFAULT_S,
            a: DEFAULT_A,
            reshuffle_every: DEFAULT_RESHUFFLE_EVERY,
            cached_levels: 0,
            stash_limit: 256,
            max_batch: 1,
        }
    }

    /// Checks the ranges documented on each field.
    pub fn validate(&self) -> Result<(), Error> {
        if self.capacity == 0 || self.capacity > 1 << 31 {
            return Err(Error::InvalidConfig("capacity must be 1 to 2^31"));
        }
        if !(MIN_BLOCK..=MAX_BLOCK).contains(&self.block_size) {
            return Err(Error::InvalidConfig("block size must be 16 to 65536 bytes"));
        }
        if self.z == 0 || self.s == 0 || self.z + self.s > MAX_SLOTS {
            return Err(Error::InvalidConfig(
                "Z and S must be at least 1, and Z + S at most 128",
            ));
        }
        if !(1..=1 << 16).contains(&self.a) {
            return Err(Error::InvalidConfig("A must be 1 to 65536"));
        }
        if self.max_batch == 0 || self.max_batch > self.a.min(self.s).min(64) {
            return Err(Error::InvalidConfig("max batch must be 1 to min(A, S, 64)"));
        }
        if !(1..=1 << 20).contains(&self.stash_limit) {
            return Err(Error::InvalidConfig("stash limit must be 1 to 2^20"));
        }
        if self.cached_levels > 24 {
            return Err(Error::InvalidConfig("at most 24 cached levels"));
        }
        Ok(())
    }

    /// L: levels below the root, ceil(log2(2N / A)) (at least 1).
    pub fn height(&self) -> u32 {
        let leaves = (2 * self.capacity).div_ceil(u64::from(self.a));
        ceil_log2(leaves).clamp(1, 30)
    }

    /// Levels held by the client: T, capped so that at least one level is fetched.
    pub fn cached(&self) -> u32 {
        self.cached_levels.min(self.height())
    }

    /// Slots per bucket, Z + S.
    pub fn slots(&self) -> usize {
        (self.z + self.s) as usize
    }

    /// Bytes of one sealed slot on the wire and at storage.
    pub fn slot_len(&self) -> usize {
        self.block_size as usize + SLOT_OVERHEAD
    }

    /// Bytes of one stored bucket: Z + S sealed slots.
    pub fn bucket_len(&self) -> usize {
        self.slots() * self.slot_len()
    }

    /// Buckets in the whole tree, 2^(L+1) - 1.
    pub fn buckets(&self) -> u64 {
        (1u64 << (self.height() + 1)) - 1
    }
}

/// One slot of one bucket at storage.
///
/// # Security
/// Public: the server sees every slot the client reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SlotId {
    /// The bucket.
    pub bucket: BucketId,
    /// The slot, `0..Z + S`.
    pub slot: u16,
}

/// What one access asks of storage, applied in this order: write the buckets, then read.
///
/// # Security
/// Public: see the module docs for why none of it depends on the data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RingRequest {
    /// Buckets to overwrite whole (Z + S sealed slots each, concatenated): the previous
    /// access's evicted and reshuffled buckets.
    pub writes: Vec<(BucketId, Vec<u8>)>,
    /// The online reads, one per access of the batch: one slot per fetched bucket of a
    /// path, XORed into one slot (a bucket never written counts as zeros).
    pub online: Vec<Vec<SlotId>>,
    /// Slots to return one by one: the eviction's and the early reshuffles' reads.
    pub reads: Vec<SlotId>,
}

impl RingRequest {
    /// Bytes sent to storage: the written buckets and 10 bytes per slot id.
    pub fn up_bytes(&self) -> usize {
        let online: usize = self.online.iter().map(Vec::len).sum();
        let ids = 10 * (online + self.reads.len());
        ids + self.writes.iter().map(|(_, b)| 8 + b.len()).sum::<usize>()
    }
}

/// Storage's answer to a [`RingRequest`].
///
/// # Security
/// Untrusted: the engine verifies all of it before use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RingReply {
    /// The XOR of each access's online slots.
    pub online: Vec<Vec<u8>>,
    /// Each of the request's `reads`, in order; `None` for a bucket never written.
    pub reads: Vec<Option<Vec<u8>>>,
}

impl RingReply {
    /// Bytes received from storage.
    pub fn down_bytes(&self) -> usize {
        self.online.iter().map(Vec::len).sum::<usize>()
            + self
                .reads
                .iter()
                .map(|r| r.as_ref().map_or(1, Vec::len))
                .sum::<usize>()
    }
}

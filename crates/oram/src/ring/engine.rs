//! The Ring ORAM client: plans a batch of accesses ([`RingOram::begin_batch`]), verifies
//! storage's answer, completes the accesses and evicts ([`RingOram::finish`]).

use std::collections::{BTreeSet, HashMap, HashSet};

use rand::{CryptoRng, RngExt};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::meta::{DUMMY, Meta};
use super::pages::Dirty;
use super::slot::{NonceAt, Slots};
use super::store::RingStore;
use super::{RingConfig, RingReply, RingRequest, SlotId};
use crate::geometry::TreeGeometry;
use crate::integrity::IntegrityError;
use crate::seal::{Key, fresh_lineage, lineage_cipher};
use crate::store::DriverError;
use crate::{BucketId, Error, Op};

/// A position-map entry for a block never written.
const UNMAPPED: u32 = u32::MAX;

/// Where the block an access wants was found when it was planned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// A dummy access, or a block never written.
    None,
    /// In the stash or a cached bucket.
    Local,
    /// In the fetched bucket at this index of the online read.
    Online(usize),
}

/// One slot read one by one, as planned.
struct Read {
    bucket: u64,
    slot: u16,
    held: u32,
    nonce: Option<NonceAt>,
}

/// One access of a batch, as planned: its operation and its online read.
struct Access {
    addr: Option<u32>,
    write: Option<Zeroizing<Vec<u8>>>,
    target: Target,
    new_leaf: u32,
    /// A position-map update to apply once the block is in (see [`Placed::update`]).
    update: Option<(usize, u32)>,
    /// Online slots: bucket, slot, nonce (`None`: never written).
    online: Vec<(u64, u16, Option<NonceAt>)>,
}

/// A batch's maintenance, planned after all its online reads: the slots it reads one by
/// one, the eviction (its leaf) and the buckets to reshuffle (with their depth).
#[derive(Default)]
struct Maintenance {
    reads: Vec<Read>,
    evict: Option<u32>,
    reshuffle: Vec<(usize, u64)>,
}

/// A rewritten bucket still owed to storage, as what it takes to seal it: the plaintext
/// of its real slots, by slot, and its first slot's nonce. The dummies, the order and the
/// nonces are in the bucket's metadata, so every sealing (the next request, and after a
/// restart) gives the same bytes (the same key, nonce and plaintext: a resend, not a
/// reuse). Held and saved instead of the sealed bucket, this costs a client's memory and
/// disk the blocks the bucket holds, not its Z + S slots.
pub(super) struct Owed {
    pub(super) index: u64,
    pub(super) first: NonceAt,
    pub(super) blocks: Vec<(u16, Zeroizing<Vec<u8>>)>,
}

/// A batch between `begin_batch` and a verified `finish`.
struct Flight {
    accesses: Vec<Access>,
    maintenance: Maintenance,
}

/// Where an engine's buckets are, and where it keeps its blocks' leaves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Layout {
    /// The tree's number in bucket ids.
    pub tree: u8,
    /// Leaves in the blocks' last 4 bytes, given by the caller per access (see
    /// [`RingOram::begin_placed`]), and no position map.
    pub leaves_in_blocks: bool,
}

/// One access of a tree whose leaves the caller keeps (a tree of a recursive store).
#[derive(Clone, Copy, Debug)]
pub(super) struct Placed<'a> {
    pub op: Op<'a>,
    /// The block's leaf, `None` if it was never written.
    pub leaf: Option<u32>,
    /// Its leaf after the access.
    pub new_leaf: u32,
    /// For a read: then set entry `.0` (4 bytes, little-endian) of the block to `.1`.
    pub update: Option<(usize, u32)>,
}

/// A Ring ORAM client over one tree with a flat position map.
///
/// See the [module docs](super) for the algorithm and how it departs from the paper.
///
/// ```
/// use shroud_oram::Op;
/// use shroud_oram::ring::{RingConfig, RingOram};
///
/// let mut rng = rand::rng();
/// let key = shroud_oram::Key::generate(&mut rng);
/// let mut oram = RingOram::new(RingConfig::new(1000, 32), key, &mut rng)?;
/// let mut store = shroud_oram::MemoryStore::new();
/// oram.run(&mut store, Op::Write(7, &[1u8; 32]), &mut rng)?;
/// assert_eq!(oram.run(&mut store, Op::Read(7), &mut rng)?, [1u8; 32]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Security
/// Holds every secret of the store: the lineage subkeys derived from the key (wiped on
/// drop; the key itself is not kept), the position map, the bucket metadata, the stash
/// and the cached levels (block data wiped on drop). What it emits depends only on the
/// configuration, the access count and uniformly random leaves (see the module docs).
pub struct RingOram {
    pub(super) config: RingConfig,
    /// The tree's number in its buckets' ids: 0 alone, or in a recursive store (0 the
    /// data, `t > 0` the positions of tree `t - 1`).
    pub(super) tree: u8,
    /// Leaves kept in the blocks (the last 4 bytes of each, little-endian) and given by
    /// the caller for each access, instead of in `pos`: the trees of a recursive store.
    pub(super) leaves_in_blocks: bool,
    pub(super) geom: TreeGeometry,
    pub(super) slots: Slots,
    /// The next nonce counter value.
    pub(super) counter: u64,
    pub(super) meta: Meta,
    pub(super) pos: Vec<u32>,
    /// The data of every block the client holds: the stash and the cached levels.
    pub(super) local: HashMap<u32, Zeroizing<Vec<u8>>>,
    /// Addresses in the stash.
    pub(super) stash: BTreeSet<u32>,
    /// Addresses in each cached bucket, by heap index.
    pub(super) cache: Vec<Vec<u32>>,
    pub(super) accesses: u64,
    pub(super) evictions: u64,
    /// Rewrites of the last batch, sealed into the next request (before its reads).
    pub(super) owed: Vec<Owed>,
    flight: Option<Flight>,
    request: RingRequest,
    results: Vec<Zeroizing<Vec<u8>>>,
    pub(super) max_stash: usize,
    /// Early reshuffles the schedule did not make (see [`RingConfig::reshuffle_every`]).
    pub(super) unscheduled: u64,
    /// What changed since pages were last taken.
    pub(super) dirty: Dirty,
}

impl RingOram {
    /// A new, empty store: nothing is written until the first eviction.
    pub fn new<R: CryptoRng + ?Sized>(
        config: RingConfig,
        key: Key,
        rng: &mut R,
    ) -> Result<Self, Error> {
        let mut store_id = [0u8; 16];
        rng.fill_bytes(&mut store_id);
        Self::with_lineages(config, &key, store_id, &[], Layout::default())
    }

    /// An empty engine whose buckets may have been sealed by the `earlier` lineages, in a
    /// new lineage of its own (drawn from the operating system: see [`crate::seal`]).
    pub(super) fn with_lineages(
        config: RingConfig,
        key: &Key,
        store_id: [u8; 16],
        earlier: &[[u8; 32]],
        layout: Layout,
    ) -> Result<Self, Error> {
        config.validate()?;
        if layout.leaves_in_blocks && config.block_size < 8 {
            return Err(Error::InvalidConfig(
                "a block that carries its leaf needs at least 8 bytes",
            ));
        }
        let geom = TreeGeometry {
            height: config.height(),
            slots: config.z,
            block_size: config.block_size,
            cached_levels: config.cached(),
            blocks: config.capacity,
        };
        let mut slots = Slots::new(store_id);
        for lineage in earlier {
            slots.push_lineage(*lineage, lineage_cipher(key, &store_id, lineage));
        }
        let lineage = fresh_lineage()?;
        slots.push_lineage(lineage, lineage_cipher(key, &store_id, &lineage));
        let pos = if layout.leaves_in_blocks {
            Vec::new()
        } else {
            vec![UNMAPPED; config.capacity as usize]
        };
        Ok(RingOram {
            tree: layout.tree,
            leaves_in_blocks: layout.leaves_in_blocks,
            geom,
            slots,
            counter: 1,
            meta: Meta::new(
                geom.bucket_count() as usize,
                config.slots(),
                config.z as usize,
            ),
            pos,
            local: HashMap::new(),
            stash: BTreeSet::new(),
            cache: vec![Vec::new(); geom.cached_buckets()],
            accesses: 0,
            evictions: 0,
            owed: Vec::new(),
            flight: None,
            request: RingRequest::default(),
            results: Vec::new(),
            max_stash: 0,
            unscheduled: 0,
            dirty: Dirty::everything(),
            config,
        })
    }

    /// The parameters the store was created with.
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// The tree's shape (Z here is the real slots per bucket).
    pub fn geometry(&self) -> TreeGeometry {
        self.geom
    }

    /// Blocks in the stash now.
    pub fn stash_len(&self) -> usize {
        self.stash.len()
    }

    /// The largest stash seen after an access.
    pub fn max_stash(&self) -> usize {
        self.max_stash
    }

    /// Early reshuffles the schedule did not make: reshuffles of a bucket read S times,
    /// which change their access's request shape (by public read counts only). Zero with
    /// no schedule counts nothing.
    pub fn unscheduled_reshuffles(&self) -> u64 {
        self.unscheduled
    }

    /// Accesses finished so far.
    pub fn accesses(&self) -> u64 {
        self.accesses
    }

    /// Bytes of client memory held: position map, metadata, stash, cached blocks and the
    /// blocks of rewrites owed to storage.
    pub fn memory(&self) -> usize {
        self.pos.capacity() * 4
            + self.meta.memory()
            + self.local.len() * (self.config.block_size as usize + 48)
            + self
                .owed
                .iter()
                .map(|o| o.blocks.len() * (self.config.block_size as usize + 32) + 64)
                .sum::<usize>()
            + self
                .cache
                .iter()
                .map(|c| c.capacity() * 4 + 24)
                .sum::<usize>()
    }

    /// Plans one access and returns what to send. Until a reply verifies, the same
    /// request is what must be sent again ([`RingOram::request`]): its slots are spent.
    pub fn begin<R: CryptoRng + ?Sized>(
        &mut self,
        op: Op<'_>,
        rng: &mut R,
    ) -> Result<&RingRequest, Error> {
        self.begin_batch(&[op], rng)
    }

    /// Plans a batch of accesses sent in one request (at most `max_batch`), in order: each
    /// reads one path; a block an earlier access of the batch reads or writes is then read
    /// from the client, on a fresh random path. The batch's maintenance (the eviction of
    /// its A-th access, reshuffles) comes after all its online reads.
    pub fn begin_batch<R: CryptoRng + ?Sized>(
        &mut self,
        ops: &[Op<'_>],
        rng: &mut R,
    ) -> Result<&RingRequest, Error> {
        if self.leaves_in_blocks {
            return Err(Error::InvalidConfig(
                "a tree of a recursive store is accessed with its leaves",
            ));
        }
        let ops: Vec<(Op<'_>, Option<Placed<'_>>)> = ops.iter().map(|&op| (op, None)).collect();
        self.plan_batch(&ops, rng)
    }

    /// [`RingOram::begin_batch`] for a tree that keeps its leaves in its blocks: each
    /// access comes with its block's leaf (from the position tree above it) and the leaf
    /// it moves to, and may update a position entry of the block it reads.
    pub(super) fn begin_placed<R: CryptoRng + ?Sized>(
        &mut self,
        placed: &[Placed<'_>],
        rng: &mut R,
    ) -> Result<&RingRequest, Error> {
        let leaves = self.geom.leaves();
        let entries = self.config.block_size as usize / 4 - 1;
        let fits = |p: &Placed<'_>| {
            p.leaf.is_none_or(|l| u64::from(l) < leaves)
                && u64::from(p.new_leaf) < leaves
                && p.update
                    .is_none_or(|(e, _)| e < entries && matches!(p.op, Op::Read(_)))
        };
        if !self.leaves_in_blocks || !placed.iter().all(fits) {
            return Err(Error::InvalidConfig(
                "leaves are given only to a tree that keeps them, and must be in it",
            ));
        }
        let ops: Vec<(Op<'_>, Option<Placed<'_>>)> =
            placed.iter().map(|p| (p.op, Some(*p))).collect();
        self.plan_batch(&ops, rng)
    }

    fn plan_batch<R: CryptoRng + ?Sized>(
        &mut self,
        ops: &[(Op<'_>, Option<Placed<'_>>)],
        rng: &mut R,
    ) -> Result<&RingRequest, Error> {
        if self.flight.is_some() {
            return Err(Error::Busy);
        }
        let max = self.config.max_batch as usize;
        if ops.is_empty() || ops.len() > max {
            return Err(Error::BatchSize {
                got: ops.len(),
                max,
            });
        }
        // Every operation checked before anything changes.
        let mut checked = Vec::with_capacity(ops.len());
        for (op, _) in ops {
            checked.push(match *op {
                Op::Read(a) => (Some(self.check_addr(a)?), None),
                Op::Write(a, data) => {
                    if data.len() != self.config.block_size as usize {
                        return Err(Error::WrongBlockSize {
                            got: data.len(),
                            expected: self.config.block_size as usize,
                        });
                    }
                    (
                        Some(self.check_addr(a)?),
                        Some(Zeroizing::new(data.to_vec())),
                    )
                }
                Op::Dummy => (None, None),
            });
        }
        let writes = self.sealed_owed()?;
        let mut coming = HashSet::new();
        let mut accesses = Vec::with_capacity(ops.len());
        for ((addr, write), (_, placed)) in checked.into_iter().zip(ops) {
            let access = self.plan_online(addr, write, *placed, &coming, rng)?;
            // A later access of the batch finds the block with the client: it was found,
            // is written, or (with leaves in blocks) is kept even if never written.
            if let Some(a) = access.addr
                && (access.target != Target::None
                    || access.write.is_some()
                    || self.leaves_in_blocks)
            {
                coming.insert(a);
            }
            accesses.push(access);
        }
        let maintenance = self.plan_maintenance(&accesses, rng);
        self.owed.clear();
        self.request = RingRequest {
            writes,
            online: accesses
                .iter()
                .map(|p| {
                    p.online
                        .iter()
                        .map(|&(b, s, _)| self.slot_id(b, s))
                        .collect()
                })
                .collect(),
            reads: maintenance
                .reads
                .iter()
                .map(|r| self.slot_id(r.bucket, r.slot))
                .collect(),
        };
        self.flight = Some(Flight {
            accesses,
            maintenance,
        });
        Ok(&self.request)
    }

    /// Plans one access's online read: `coming` holds the blocks earlier accesses of the
    /// batch read or write.
    fn plan_online<R: CryptoRng + ?Sized>(
        &mut self,
        addr: Option<u32>,
        write: Option<Zeroizing<Vec<u8>>>,
        placed: Option<Placed<'_>>,
        coming: &HashSet<u32>,
        rng: &mut R,
    ) -> Result<Access, Error> {
        let leaves = self.geom.leaves() as u32;
        let mut target = match addr {
            Some(a) if self.local.contains_key(&a) || coming.contains(&a) => Target::Local,
            _ => Target::None,
        };
        let mapped = match (addr, target, placed) {
            (Some(_), Target::None, Some(p)) => p.leaf.unwrap_or(UNMAPPED),
            (Some(a), Target::None, None) => self.pos[a as usize],
            _ => UNMAPPED,
        };
        let leaf = if mapped == UNMAPPED {
            rng.random_range(0..leaves)
        } else {
            mapped
        };
        let new_leaf = match placed {
            Some(p) => p.new_leaf,
            None => rng.random_range(0..leaves),
        };
        let (t, l) = (self.geom.cached_levels as usize, self.geom.height as usize);
        let mut online = Vec::with_capacity(l + 1 - t);
        for d in t..=l {
            let b = self.geom.bucket_index(d, leaf);
            let found = match addr {
                Some(a) if mapped != UNMAPPED && target == Target::None => {
                    self.meta.find(b as usize, a)
                }
                _ => None,
            };
            let slot = match found {
                Some(j) => {
                    target = Target::Online(online.len());
                    j
                }
                None => self
                    .meta
                    .random_dummy(b as usize, rng)
                    .ok_or(Error::Invariant("a bucket on the path has no unread dummy"))?,
            };
            online.push((b, slot, self.meta.nonce(b as usize, slot)));
            self.meta.read(b as usize, slot);
            self.dirty.meta(b);
        }
        if mapped != UNMAPPED && target == Target::None {
            return Err(IntegrityError::BlockMissing(u64::from(addr.unwrap_or(0))).into());
        }
        Ok(Access {
            addr,
            write,
            target,
            new_leaf,
            update: placed.and_then(|p| p.update),
            online,
        })
    }

    /// Plans a batch's maintenance, fixed by the access count and the (public) read counts:
    /// the eviction if the batch holds an A-th access (at most one: `max_batch <= A`), the
    /// scheduled reshuffle on every `reshuffle_every`-th eviction, and the reshuffle of
    /// every bucket the batch read that the next batch could read past its dummies.
    fn plan_maintenance<R: CryptoRng + ?Sized>(
        &mut self,
        accesses: &[Access],
        rng: &mut R,
    ) -> Maintenance {
        let mut m = Maintenance::default();
        let (t, l) = (self.geom.cached_levels as usize, self.geom.height as usize);
        let z = self.config.z as usize;
        let a = u64::from(self.config.a);
        let evicts = (1..=accesses.len() as u64).any(|i| (self.accesses + i).is_multiple_of(a));
        m.evict = evicts.then(|| reverse_lexicographic(self.evictions, self.geom.height));
        if let Some(e) = m.evict {
            for d in t..=l {
                self.plan_reads(self.geom.bucket_index(d, e), z, &mut m.reads, rng);
            }
        }
        let evict = m.evict;
        let on_eviction_path =
            |d: usize, b: u64| evict.is_some_and(|e| self.geom.bucket_index(d, e) == b);
        // The scheduled reshuffle: on every `reshuffle_every`-th eviction, the fetched
        // bucket read most often since its last write (public counts; the lowest index on
        // a tie), wherever it is.
        let every = u64::from(self.config.reshuffle_every);
        if every > 0 && evicts && self.evictions.is_multiple_of(every) {
            let first = (1u64 << t) - 1;
            let chosen = (first..self.geom.bucket_count())
                .map(|b| (b, (b + 1).ilog2() as usize))
                .filter(|&(b, d)| !on_eviction_path(d, b))
                .max_by_key(|&(b, _)| (self.meta.count(b as usize), std::cmp::Reverse(b)));
            if let Some((b, d)) = chosen {
                m.reshuffle.push((d, b));
            }
        }
        // The paper's early reshuffle, of a bucket read so often that the next batch could
        // find no unread dummy in it (S reads with batches of one): with a schedule, only
        // when the schedule did not keep up (counted: it changes this request's shape, by
        // public counts only).
        let limit = self.config.s + 1 - self.config.max_batch;
        for p in accesses {
            for (i, &(b, _, _)) in p.online.iter().enumerate() {
                let d = t + i;
                if !on_eviction_path(d, b)
                    && !m.reshuffle.contains(&(d, b))
                    && self.meta.count(b as usize) >= limit
                {
                    m.reshuffle.push((d, b));
                    self.unscheduled += u64::from(every > 0);
                }
            }
        }
        let mut reads = std::mem::take(&mut m.reads);
        for &(_, b) in &m.reshuffle {
            self.plan_reads(b, z, &mut reads, rng);
        }
        m.reads = reads;
        m
    }

    /// The request in flight (to send again after a reply that did not verify).
    pub fn request(&self) -> Option<&RingRequest> {
        self.flight.as_ref().map(|_| &self.request)
    }

    /// The rewrites still owed to storage, as a request with no reads (to leave storage
    /// settled, e.g. before a shutdown); empty while an access is in flight.
    pub fn flush(&mut self) -> Result<RingRequest, Error> {
        if self.flight.is_some() {
            return Ok(RingRequest::default());
        }
        let writes = self.sealed_owed()?;
        self.owed.clear();
        Ok(RingRequest {
            writes,
            ..RingRequest::default()
        })
    }

    /// The owed rewrites, sealed.
    fn sealed_owed(&self) -> Result<Vec<(BucketId, Vec<u8>)>, Error> {
        self.owed
            .iter()
            .map(|o| {
                Ok((
                    self.bucket_id(o.index),
                    self.seal_bucket(o.index, o.first, &o.blocks)?,
                ))
            })
            .collect()
    }

    pub(super) fn check_addr(&self, a: u64) -> Result<u32, Error> {
        if a >= self.config.capacity {
            return Err(Error::AddressOutOfBounds {
                attempted: a,
                capacity: self.config.capacity,
            });
        }
        Ok(a as u32)
    }

    fn plan_reads<R: CryptoRng + ?Sized>(
        &mut self,
        bucket: u64,
        z: usize,
        reads: &mut Vec<Read>,
        rng: &mut R,
    ) {
        for (slot, held) in self.meta.pick(bucket as usize, z, rng) {
            reads.push(Read {
                bucket,
                slot,
                held,
                nonce: self.meta.nonce(bucket as usize, slot),
            });
            self.meta.read(bucket as usize, slot);
        }
        self.dirty.meta(bucket);
    }

    /// Verifies storage's answer to the request in flight and completes its accesses: what
    /// each read (or zeros) is then [`RingOram::results`].
    ///
    /// On an [`IntegrityError`] nothing changes and the accesses stay in flight: send the
    /// same request again. After a [`Error::StashOverflow`] the accesses are complete and no
    /// block is lost (the stash grew past its bound; the error reports it).
    pub fn finish<R: CryptoRng + ?Sized>(
        &mut self,
        reply: &RingReply,
        rng: &mut R,
    ) -> Result<(), Error> {
        let Some(flight) = self.flight.take() else {
            return Err(Error::NotFetching);
        };
        let checked = self.verify(&flight, reply);
        let (found, blocks) = match checked {
            Ok(v) => v,
            Err(e) => {
                self.flight = Some(flight);
                return Err(e.into());
            }
        };
        let Flight {
            accesses,
            maintenance,
        } = flight;
        self.results.clear();
        for (access, found) in accesses.into_iter().zip(found) {
            self.commit(access, found);
        }
        self.maintain(maintenance, blocks, rng)?;
        self.max_stash = self.max_stash.max(self.stash.len());
        if self.stash.len() > self.config.stash_limit as usize {
            return Err(Error::StashOverflow {
                limit: self.config.stash_limit as usize,
            });
        }
        Ok(())
    }

    /// Checks every slot of the reply (each access's XORed online slot, and the reads);
    /// returns each access's block (if fetched) and the blocks the reads brought back.
    #[allow(clippy::type_complexity)]
    fn verify(
        &self,
        f: &Flight,
        reply: &RingReply,
    ) -> Result<
        (
            Vec<Option<Zeroizing<Vec<u8>>>>,
            Vec<(u32, Zeroizing<Vec<u8>>)>,
        ),
        IntegrityError,
    > {
        let slot_len = self.config.slot_len();
        let first = self.bucket_id(f.accesses[0].online[0].0);
        if reply.online.len() != f.accesses.len() || reply.reads.len() != f.maintenance.reads.len()
        {
            return Err(IntegrityError::WrongLength {
                id: first,
                got: reply.reads.len(),
                expected: f.maintenance.reads.len(),
            });
        }
        let mut scratch = Zeroizing::new(vec![0u8; slot_len]);
        let mut found = Vec::with_capacity(f.accesses.len());
        for (p, online) in f.accesses.iter().zip(&reply.online) {
            let first = self.bucket_id(p.online[0].0);
            if online.len() != slot_len {
                return Err(IntegrityError::WrongLength {
                    id: first,
                    got: online.len(),
                    expected: slot_len,
                });
            }
            let mut acc = Zeroizing::new(online.clone());
            for (i, &(b, slot, nonce)) in p.online.iter().enumerate() {
                if let (Some(at), false) = (nonce, p.target == Target::Online(i)) {
                    self.slots
                        .xor_dummy(at, self.bucket_id(b), slot, &mut scratch, &mut acc)
                        .map_err(|_| IntegrityError::Tampered(self.bucket_id(b)))?;
                }
            }
            found.push(match p.target {
                Target::Online(i) => {
                    let (b, slot, nonce) = p.online[i];
                    let at = nonce
                        .ok_or(IntegrityError::BlockMissing(u64::from(p.addr.unwrap_or(0))))?;
                    self.slots
                        .open(at, self.bucket_id(b), slot, &mut acc)
                        .map_err(|_| IntegrityError::Combined(first))?;
                    acc.truncate(self.config.block_size as usize);
                    Some(acc)
                }
                _ => {
                    if !bool::from(acc.ct_eq(&vec![0u8; slot_len][..])) {
                        return Err(IntegrityError::Combined(first));
                    }
                    None
                }
            });
        }
        let mut blocks = Vec::new();
        for (r, got) in f.maintenance.reads.iter().zip(&reply.reads) {
            let id = self.bucket_id(r.bucket);
            match (r.nonce, got) {
                (None, None) => {}
                (None, Some(_)) => return Err(IntegrityError::Unexpected(id)),
                (Some(_), None) => return Err(IntegrityError::Missing(id)),
                (Some(at), Some(bytes)) => {
                    if bytes.len() != slot_len {
                        return Err(IntegrityError::WrongLength {
                            id,
                            got: bytes.len(),
                            expected: slot_len,
                        });
                    }
                    if r.held != DUMMY {
                        let mut data = Zeroizing::new(bytes.clone());
                        self.slots.open(at, id, r.slot, &mut data)?;
                        data.truncate(self.config.block_size as usize);
                        blocks.push((r.held, data));
                    } else {
                        // A dummy is checked too: were tampering with a dummy let pass, a
                        // server could tell dummies from blocks by whether the client
                        // complains (a selective failure).
                        let mut expect = Zeroizing::new(vec![0u8; slot_len]);
                        self.slots
                            .xor_dummy(at, id, r.slot, &mut scratch, &mut expect)
                            .map_err(|_| IntegrityError::Tampered(id))?;
                        if !bool::from(expect.ct_eq(&bytes[..])) {
                            return Err(IntegrityError::Tampered(id));
                        }
                    }
                }
            }
        }
        Ok((found, blocks))
    }

    /// Completes one verified access's operation: its block, remapped, into the stash.
    fn commit(&mut self, f: Access, found: Option<Zeroizing<Vec<u8>>>) {
        self.accesses += 1;
        let Some(a) = f.addr else {
            self.results.push(Zeroizing::new(Vec::new()));
            return;
        };
        let held = match f.target {
            Target::Local => {
                if let Some(b) = self.cache.iter().position(|c| c.contains(&a)) {
                    self.cache[b].retain(|&x| x != a);
                    self.dirty.cache(b);
                }
                self.local.remove(&a)
            }
            _ => found,
        };
        let zeros = || Zeroizing::new(vec![0; self.config.block_size as usize]);
        self.results.push(held.clone().unwrap_or_else(zeros));
        // Data new to the client (written, or read from storage) is saved; a block the
        // client held and only read keeps the page it had, unless its leaf is in it.
        if f.write.is_some() || f.target != Target::Local || self.leaves_in_blocks {
            self.dirty.data(a);
        }
        if self.leaves_in_blocks {
            // Every block touched is kept, even one never written: the tree above now
            // names its leaf.
            let mut data = f.write.or(held).unwrap_or_else(zeros);
            let end = data.len() - 4;
            if let Some((e, v)) = f.update {
                data[e * 4..e * 4 + 4].copy_from_slice(&v.to_le_bytes());
            }
            data[end..].copy_from_slice(&f.new_leaf.to_le_bytes());
            self.local.insert(a, data);
            self.stash.insert(a);
        } else if let Some(data) = f.write.or(held) {
            self.local.insert(a, data);
            self.stash.insert(a);
            self.pos[a as usize] = f.new_leaf;
            self.dirty.pos(a);
        }
    }

    /// The leaf of block `a`, which the client holds (in the stash or a cached bucket) or
    /// maps.
    pub(super) fn leaf_of(&self, a: u32) -> u32 {
        if self.leaves_in_blocks {
            self.local
                .get(&a)
                .map_or(UNMAPPED, |d| le_u32(d, d.len() - 4))
        } else {
            self.pos[a as usize]
        }
    }

    /// The id of bucket `index` of this tree.
    pub(super) fn bucket_id(&self, index: u64) -> BucketId {
        BucketId {
            tree: self.tree,
            index,
        }
    }

    fn slot_id(&self, bucket: u64, slot: u16) -> SlotId {
        SlotId {
            bucket: self.bucket_id(bucket),
            slot,
        }
    }

    /// Completes a verified batch's maintenance: the blocks it read into the stash, its
    /// reshuffles, then its eviction.
    fn maintain<R: CryptoRng + ?Sized>(
        &mut self,
        m: Maintenance,
        blocks: Vec<(u32, Zeroizing<Vec<u8>>)>,
        rng: &mut R,
    ) -> Result<(), Error> {
        for (a, data) in blocks {
            self.local.insert(a, data);
            self.dirty.data(a);
            self.stash.insert(a);
        }
        for &(d, b) in &m.reshuffle {
            // A reshuffle refreshes the bucket's dummies and order: it writes back the
            // blocks it read, no others, and before the eviction (which would otherwise
            // pull them into the eviction path's upper buckets, where every block
            // competes for room: measured, that tripled the stash's tail). A block it read
            // that an access of the batch has since remapped stays in the stash.
            let own: Vec<u32> = m
                .reads
                .iter()
                .filter(|r| r.bucket == b && r.held != DUMMY)
                .map(|r| r.held)
                .collect();
            self.write_bucket(d, b, Some(&own), rng)?;
        }
        if let Some(e) = m.evict {
            self.evictions += 1;
            for d in 0..self.geom.cached_levels as usize {
                let b = self.geom.bucket_index(d, e) as usize;
                self.stash.extend(self.cache[b].drain(..));
                self.dirty.cache(b);
            }
            for d in (0..=self.geom.height as usize).rev() {
                self.write_bucket(d, self.geom.bucket_index(d, e), None, rng)?;
            }
        }
        Ok(())
    }

    /// Fills bucket `b` at depth `d` with up to Z stash blocks whose paths pass through it:
    /// in client memory for a cached level, else in a fresh random order, owed to storage
    /// (sealed into the next request).
    fn write_bucket<R: CryptoRng + ?Sized>(
        &mut self,
        d: usize,
        b: u64,
        only: Option<&[u32]>,
        rng: &mut R,
    ) -> Result<(), Error> {
        let prefix = b + 1 - (1u64 << d);
        let eligible = |a: u32| u64::from(self.geom.prefix(d, self.leaf_of(a))) == prefix;
        let chosen: Vec<u32> = match only {
            // A reshuffle's own blocks, less any an access of the batch remapped.
            Some(own) => own
                .iter()
                .copied()
                .filter(|&a| self.stash.contains(&a) && eligible(a))
                .collect(),
            None => self
                .stash
                .iter()
                .copied()
                .filter(|&a| eligible(a))
                .take(self.config.z as usize)
                .collect(),
        };
        for a in &chosen {
            self.stash.remove(a);
        }
        if d < self.geom.cached_levels as usize {
            self.cache[b as usize] = chosen;
            self.dirty.cache(b as usize);
            return Ok(());
        }
        let n = self.config.slots();
        let mut held = vec![DUMMY; n];
        let mut order: Vec<usize> = (0..n).collect();
        for (i, a) in chosen.iter().enumerate() {
            let k = rng.random_range(i..n);
            order.swap(i, k);
            held[order[i]] = *a;
        }
        let first = NonceAt {
            lineage: self.slots.current(),
            counter: self.counter,
        };
        self.counter = self
            .counter
            .checked_add(n as u64)
            .ok_or(Error::NoncesExhausted)?;
        let mut blocks = Vec::with_capacity(chosen.len());
        for (j, &a) in held.iter().enumerate() {
            if a != DUMMY
                && let Some(data) = self.local.remove(&a)
            {
                blocks.push((j as u16, data));
            }
        }
        self.meta.write(b as usize, &held, first);
        self.dirty.meta(b);
        self.owed.push(Owed {
            index: b,
            first,
            blocks,
        });
        Ok(())
    }

    /// Bucket `b` sealed from nonce `first`: `blocks` in their slots, zeros (the dummies)
    /// in the others.
    pub(super) fn seal_bucket(
        &self,
        b: u64,
        first: NonceAt,
        blocks: &[(u16, Zeroizing<Vec<u8>>)],
    ) -> Result<Vec<u8>, Error> {
        let slot_len = self.config.slot_len();
        let block = self.config.block_size as usize;
        let mut bytes = vec![0u8; self.config.slots() * slot_len];
        for (j, data) in blocks {
            let at = usize::from(*j) * slot_len;
            bytes[at..at + block].copy_from_slice(data);
        }
        for (j, out) in bytes.chunks_exact_mut(slot_len).enumerate() {
            let at = NonceAt {
                counter: first.counter + j as u64,
                ..first
            };
            self.slots.seal(at, self.bucket_id(b), j as u16, out)?;
        }
        Ok(bytes)
    }

    /// What the first access of the last finished batch read: the block (zeros if never
    /// written), or empty after a dummy.
    pub fn result(&self) -> &[u8] {
        self.results.first().map_or(&[], |r| &r[..])
    }

    /// What each access of the last finished batch read, in order.
    pub fn results(&self) -> impl Iterator<Item = &[u8]> {
        self.results.iter().map(|r| &r[..])
    }

    /// Runs one access to completion against `store` and returns what it read.
    pub fn run<S: RingStore, R: CryptoRng + ?Sized>(
        &mut self,
        store: &mut S,
        op: Op<'_>,
        rng: &mut R,
    ) -> Result<Vec<u8>, DriverError<S::Error>> {
        Ok(self.run_batch(store, &[op], rng)?.remove(0))
    }

    /// Runs a batch of accesses in one exchange and returns what each read.
    pub fn run_batch<S: RingStore, R: CryptoRng + ?Sized>(
        &mut self,
        store: &mut S,
        ops: &[Op<'_>],
        rng: &mut R,
    ) -> Result<Vec<Vec<u8>>, DriverError<S::Error>> {
        let slot_len = self.config.slot_len();
        let req = self.begin_batch(ops, rng)?;
        let reply = store.exchange(req, slot_len).map_err(DriverError::Store)?;
        self.finish(&reply, rng)?;
        Ok(self.results().map(<[u8]>::to_vec).collect())
    }
}

/// The `g`-th eviction path: `g`'s low `height` bits reversed (Gentry et al., "Optimizing
/// ORAM and Using It Efficiently for Secure Computation", PETS 2013, as Ring ORAM uses it),
/// so consecutive evictions spread over the tree.
fn reverse_lexicographic(g: u64, height: u32) -> u32 {
    let low = (g & ((1u64 << height) - 1)) as u32;
    low.reverse_bits() >> (32 - height)
}

/// The little-endian `u32` at byte `at` of `data` (a position entry, or a block's leaf).
pub(super) fn le_u32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([data[at], data[at + 1], data[at + 2], data[at + 3]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use rand::SeedableRng;

    #[test]
    fn every_block_is_in_exactly_one_place() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        for (z, s, a, t, k) in [
            (16, 14, 20, 0, 1),
            (4, 2, 3, 1, 1),
            (16, 28, 20, 2, 1),
            (16, 32, 20, 2, 4),
            (4, 3, 3, 1, 3),
        ] {
            let config = RingConfig {
                z,
                s,
                a,
                cached_levels: t,
                stash_limit: 1 << 20,
                max_batch: k,
                ..RingConfig::new(1 << 10, 16)
            };
            let mut o = RingOram::new(config, Key::generate(&mut rng), &mut rng).unwrap();
            let mut store = MemoryStore::new();
            let data = [1u8; 16];
            for i in 0..10_000u64 {
                let ops: Vec<Op<'_>> = (0..k)
                    .map(|j| {
                        let addr = rng.random_range(0..1u64 << 10);
                        if (i + u64::from(j)) % 2 == 0 {
                            Op::Write(addr, &data)
                        } else {
                            Op::Read(addr)
                        }
                    })
                    .collect();
                o.run_batch(&mut store, &ops, &mut rng).unwrap();
                if i % 997 == 0 {
                    // The check a rebuild from pages makes: every mapped block in exactly
                    // one place on its path.
                    o.check_places().expect("every block in one place");
                }
            }
            println!("Z {z} S {s} A {a} T {t} K {k}: max stash {}", o.max_stash());
        }
    }

    #[test]
    fn eviction_paths_cycle_through_every_leaf_in_reverse_lexicographic_order() {
        let order: Vec<u32> = (0..8).map(|g| reverse_lexicographic(g, 3)).collect();
        assert_eq!(order, vec![0, 4, 2, 6, 1, 5, 3, 7]);
        assert_eq!(reverse_lexicographic(8, 3), 0);
    }
}

//! The Ring ORAM client: plans an access ([`RingOram::begin`]), verifies storage's answer
//! and evicts ([`RingOram::finish`]).

use std::collections::{BTreeSet, HashMap};

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

/// An access between `begin` and a verified `finish`.
struct Flight {
    addr: Option<u32>,
    write: Option<Zeroizing<Vec<u8>>>,
    target: Target,
    new_leaf: u32,
    /// Online slots: bucket, slot, nonce (`None`: never written), holds the target.
    online: Vec<(u64, u16, Option<NonceAt>)>,
    reads: Vec<Read>,
    evict: Option<u32>,
    /// Buckets to reshuffle, with their depth.
    reshuffle: Vec<(usize, u64)>,
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
/// Holds every secret of the store: the key (zeroized on drop), the position map, the
/// bucket metadata, the stash and the cached levels (block data zeroized on drop). What it
/// emits depends only on the configuration, the access count and uniformly random leaves
/// (see the module docs).
pub struct RingOram {
    pub(super) config: RingConfig,
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
    /// Sealed rewrites of the last access, sent before the next access's reads.
    pub(super) pending: Vec<(BucketId, Vec<u8>)>,
    flight: Option<Flight>,
    request: RingRequest,
    result: Zeroizing<Vec<u8>>,
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
        Self::with_lineages(config, &key, store_id, &[])
    }

    /// An empty engine whose buckets may have been sealed by the `earlier` lineages, in a
    /// new lineage of its own (drawn from the operating system: see [`crate::seal`]).
    pub(super) fn with_lineages(
        config: RingConfig,
        key: &Key,
        store_id: [u8; 16],
        earlier: &[[u8; 32]],
    ) -> Result<Self, Error> {
        config.validate()?;
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
        Ok(RingOram {
            geom,
            slots,
            counter: 1,
            meta: Meta::new(geom.bucket_count() as usize, config.slots()),
            pos: vec![UNMAPPED; config.capacity as usize],
            local: HashMap::new(),
            stash: BTreeSet::new(),
            cache: vec![Vec::new(); geom.cached_buckets()],
            accesses: 0,
            evictions: 0,
            pending: Vec::new(),
            flight: None,
            request: RingRequest::default(),
            result: Zeroizing::new(Vec::new()),
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

    /// Bytes of client memory held: position map, metadata, stash and cached blocks.
    pub fn memory(&self) -> usize {
        self.pos.capacity() * 4
            + self.meta.memory()
            + self.local.len() * (self.config.block_size as usize + 48)
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
        if self.flight.is_some() {
            return Err(Error::Busy);
        }
        let (addr, write) = match op {
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
        };
        let leaves = self.geom.leaves() as u32;
        let mapped = addr.map_or(UNMAPPED, |a| self.pos[a as usize]);
        let leaf = if mapped == UNMAPPED {
            rng.random_range(0..leaves)
        } else {
            mapped
        };
        let new_leaf = rng.random_range(0..leaves);
        let mut target = match addr {
            Some(a) if self.local.contains_key(&a) => Target::Local,
            _ => Target::None,
        };
        let (t, l) = (self.geom.cached_levels as usize, self.geom.height as usize);
        let mut online = Vec::with_capacity(l + 1 - t);
        for d in t..=l {
            let b = self.geom.bucket_index(d, leaf);
            let found = match (addr, target) {
                (Some(a), Target::None) if mapped != UNMAPPED => self.meta.find(b as usize, a),
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
        // Maintenance, fixed by the access count and the (public) read counts.
        let mut reads = Vec::new();
        let z = self.config.z as usize;
        let evict = (self.accesses + 1)
            .is_multiple_of(u64::from(self.config.a))
            .then(|| reverse_lexicographic(self.evictions, self.geom.height));
        if let Some(e) = evict {
            for d in t..=l {
                self.plan_reads(self.geom.bucket_index(d, e), z, &mut reads, rng);
            }
        }
        let on_eviction_path =
            |d: usize, b: u64| evict.is_some_and(|e| self.geom.bucket_index(d, e) == b);
        let mut reshuffle = Vec::new();
        // The scheduled reshuffle: on every `reshuffle_every`-th eviction, the fetched
        // bucket read most often since its last write (public counts; the lowest index on
        // a tie), wherever it is.
        let every = u64::from(self.config.reshuffle_every);
        if every > 0 && evict.is_some() && self.evictions.is_multiple_of(every) {
            let first = (1u64 << t) - 1;
            let chosen = (first..self.geom.bucket_count())
                .map(|b| (b, (b + 1).ilog2() as usize))
                .filter(|&(b, d)| !on_eviction_path(d, b))
                .max_by_key(|&(b, _)| (self.meta.count(b as usize), std::cmp::Reverse(b)));
            if let Some((b, d)) = chosen {
                reshuffle.push((d, b));
            }
        }
        // The paper's early reshuffle, of a bucket on this path read S times: with a
        // schedule, only when the schedule did not keep up (counted: it changes this
        // request's shape, by public counts only).
        for d in t..=l {
            let b = self.geom.bucket_index(d, leaf);
            if !on_eviction_path(d, b)
                && !reshuffle.contains(&(d, b))
                && self.meta.count(b as usize) >= self.config.s
            {
                reshuffle.push((d, b));
                self.unscheduled += u64::from(every > 0);
            }
        }
        for &(_, b) in &reshuffle {
            self.plan_reads(b, z, &mut reads, rng);
        }
        self.request = RingRequest {
            writes: std::mem::take(&mut self.pending),
            online: online.iter().map(|&(b, s, _)| slot_id(b, s)).collect(),
            reads: reads.iter().map(|r| slot_id(r.bucket, r.slot)).collect(),
        };
        self.flight = Some(Flight {
            addr,
            write,
            target,
            new_leaf,
            online,
            reads,
            evict,
            reshuffle,
        });
        Ok(&self.request)
    }

    /// The request in flight (to send again after a reply that did not verify).
    pub fn request(&self) -> Option<&RingRequest> {
        self.flight.as_ref().map(|_| &self.request)
    }

    /// The rewrites still owed to storage, as a request with no reads (to leave storage
    /// settled, e.g. before a shutdown); empty while an access is in flight.
    pub fn flush(&mut self) -> RingRequest {
        if self.flight.is_some() {
            return RingRequest::default();
        }
        RingRequest {
            writes: std::mem::take(&mut self.pending),
            ..RingRequest::default()
        }
    }

    fn check_addr(&self, a: u64) -> Result<u32, Error> {
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

    /// Verifies storage's answer to the request in flight and completes the access: the
    /// block read (or zeros) is then [`RingOram::result`].
    ///
    /// On an [`IntegrityError`] nothing changes and the access stays in flight: send the
    /// same request again. After a [`Error::StashOverflow`] the access is complete and no
    /// block is lost (the stash grew past its bound; the error reports it).
    pub fn finish<R: CryptoRng + ?Sized>(
        &mut self,
        reply: &RingReply,
        rng: &mut R,
    ) -> Result<(), Error> {
        let Some(flight) = self.flight.take() else {
            return Err(Error::NotFetching);
        };
        match self.verify(&flight, reply) {
            Ok((found, blocks)) => self.commit(flight, found, blocks, rng),
            Err(e) => {
                self.flight = Some(flight);
                Err(e.into())
            }
        }
    }

    /// Checks every slot of the reply that the access uses; returns the target's data (if
    /// it was fetched) and the blocks the maintenance reads brought back.
    #[allow(clippy::type_complexity)]
    fn verify(
        &self,
        f: &Flight,
        reply: &RingReply,
    ) -> Result<(Option<Zeroizing<Vec<u8>>>, Vec<(u32, Zeroizing<Vec<u8>>)>), IntegrityError> {
        let slot_len = self.config.slot_len();
        let first = bucket_id(f.online[0].0);
        if reply.online.len() != slot_len || reply.reads.len() != f.reads.len() {
            return Err(IntegrityError::WrongLength {
                id: first,
                got: reply.online.len(),
                expected: slot_len,
            });
        }
        let mut acc = Zeroizing::new(reply.online.clone());
        let mut scratch = Zeroizing::new(vec![0u8; slot_len]);
        for (i, &(b, slot, nonce)) in f.online.iter().enumerate() {
            if let (Some(at), false) = (nonce, f.target == Target::Online(i)) {
                self.slots
                    .xor_dummy(at, bucket_id(b), slot, &mut scratch, &mut acc)
                    .map_err(|_| IntegrityError::Tampered(bucket_id(b)))?;
            }
        }
        let found = match f.target {
            Target::Online(i) => {
                let (b, slot, nonce) = f.online[i];
                let at =
                    nonce.ok_or(IntegrityError::BlockMissing(u64::from(f.addr.unwrap_or(0))))?;
                self.slots
                    .open(at, bucket_id(b), slot, &mut acc)
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
        };
        let mut blocks = Vec::new();
        for (r, got) in f.reads.iter().zip(&reply.reads) {
            let id = bucket_id(r.bucket);
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

    fn commit<R: CryptoRng + ?Sized>(
        &mut self,
        f: Flight,
        found: Option<Zeroizing<Vec<u8>>>,
        blocks: Vec<(u32, Zeroizing<Vec<u8>>)>,
        rng: &mut R,
    ) -> Result<(), Error> {
        self.accesses += 1;
        let block = self.config.block_size as usize;
        if let Some(a) = f.addr {
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
            self.result = held
                .clone()
                .unwrap_or_else(|| Zeroizing::new(vec![0; block]));
            if let Some(data) = f.write.or(held) {
                self.local.insert(a, data);
                self.stash.insert(a);
                self.pos[a as usize] = f.new_leaf;
                self.dirty.pos(a);
            }
        } else {
            self.result = Zeroizing::new(Vec::new());
        }
        for (a, data) in blocks {
            self.local.insert(a, data);
            self.stash.insert(a);
        }
        for &(d, b) in &f.reshuffle {
            // A reshuffle refreshes the bucket's dummies and order: it writes back the
            // blocks it read, no others, and before the eviction (which would otherwise
            // pull them into the eviction path's upper buckets, where every block
            // competes for room: measured, that tripled the stash's tail).
            let own: Vec<u32> = f
                .reads
                .iter()
                .filter(|r| r.bucket == b && r.held != DUMMY)
                .map(|r| r.held)
                .collect();
            self.write_bucket(d, b, Some(&own), rng)?;
        }
        if let Some(e) = f.evict {
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
        self.max_stash = self.max_stash.max(self.stash.len());
        if self.stash.len() > self.config.stash_limit as usize {
            return Err(Error::StashOverflow {
                limit: self.config.stash_limit as usize,
            });
        }
        Ok(())
    }

    /// Fills bucket `b` at depth `d` with up to Z stash blocks whose paths pass through it:
    /// in client memory for a cached level, else sealed in a fresh random order into
    /// `pending`.
    fn write_bucket<R: CryptoRng + ?Sized>(
        &mut self,
        d: usize,
        b: u64,
        only: Option<&[u32]>,
        rng: &mut R,
    ) -> Result<(), Error> {
        let prefix = b + 1 - (1u64 << d);
        let z = self.config.z as usize;
        let chosen: Vec<u32> = match only {
            Some(own) => own.to_vec(),
            None => self
                .stash
                .iter()
                .filter(|&&a| u64::from(self.geom.prefix(d, self.pos[a as usize])) == prefix)
                .take(z)
                .copied()
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
        let slot_len = self.config.slot_len();
        let block = self.config.block_size as usize;
        let mut bytes = vec![0u8; n * slot_len];
        for (j, out) in bytes.chunks_exact_mut(slot_len).enumerate() {
            if held[j] != DUMMY
                && let Some(data) = self.local.remove(&held[j])
            {
                out[..block].copy_from_slice(&data);
            }
            let at = NonceAt {
                counter: first.counter + j as u64,
                ..first
            };
            self.slots.seal(at, bucket_id(b), j as u16, out)?;
        }
        self.meta.write(b as usize, &held, first);
        self.dirty.meta(b);
        self.pending.push((bucket_id(b), bytes));
        Ok(())
    }

    /// What the last finished access read: the block (zeros if never written), or empty
    /// after a dummy.
    pub fn result(&self) -> &[u8] {
        &self.result
    }

    /// Runs one access to completion against `store` and returns what it read.
    pub fn run<S: RingStore, R: CryptoRng + ?Sized>(
        &mut self,
        store: &mut S,
        op: Op<'_>,
        rng: &mut R,
    ) -> Result<Vec<u8>, DriverError<S::Error>> {
        let slot_len = self.config.slot_len();
        let req = self.begin(op, rng)?;
        let reply = store.exchange(req, slot_len).map_err(DriverError::Store)?;
        self.finish(&reply, rng)?;
        Ok(self.result.to_vec())
    }
}

/// The `g`-th eviction path: `g`'s low `height` bits reversed (Gentry et al., "Optimizing
/// ORAM and Using It Efficiently for Secure Computation", PETS 2013, as Ring ORAM uses it),
/// so consecutive evictions spread over the tree.
fn reverse_lexicographic(g: u64, height: u32) -> u32 {
    let low = (g & ((1u64 << height) - 1)) as u32;
    low.reverse_bits() >> (32 - height)
}

fn bucket_id(index: u64) -> BucketId {
    BucketId { tree: 0, index }
}

fn slot_id(bucket: u64, slot: u16) -> SlotId {
    SlotId {
        bucket: bucket_id(bucket),
        slot,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MemoryStore;
    use rand::SeedableRng;

    /// Where every mapped block is: exactly one of the stash, a cached bucket or an unread
    /// slot of a bucket on its path.
    fn census(o: &RingOram) {
        let mut seen: HashMap<u32, usize> = HashMap::new();
        for &a in &o.stash {
            *seen.entry(a).or_default() += 1;
        }
        for c in &o.cache {
            for &a in c {
                *seen.entry(a).or_default() += 1;
            }
        }
        for b in 0..o.geom.bucket_count() as usize {
            for j in 0..o.config.slots() as u16 {
                if let Some(a) = o.meta.holds(b, j) {
                    *seen.entry(a).or_default() += 1;
                    let depth = (b + 1).ilog2() as usize;
                    let leaf = o.pos[a as usize];
                    assert_eq!(o.geom.bucket_index(depth, leaf), b as u64, "off its path");
                }
            }
        }
        for (a, &p) in o.pos.iter().enumerate() {
            let n = seen.get(&(a as u32)).copied().unwrap_or(0);
            assert_eq!(n, usize::from(p != UNMAPPED), "block {a} held {n} times");
        }
    }

    #[test]
    fn every_block_is_in_exactly_one_place() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        for (z, s, a, t) in [(16, 14, 20, 0), (4, 2, 3, 1), (16, 28, 20, 2)] {
            let config = RingConfig {
                z,
                s,
                a,
                cached_levels: t,
                stash_limit: 1 << 20,
                ..RingConfig::new(1 << 10, 16)
            };
            let mut o = RingOram::new(config, Key::generate(&mut rng), &mut rng).unwrap();
            let mut store = MemoryStore::new();
            let data = [1u8; 16];
            for i in 0..20_000u64 {
                let addr = rng.random_range(0..1u64 << 10);
                let op = if i % 2 == 0 {
                    Op::Write(addr, &data)
                } else {
                    Op::Read(addr)
                };
                o.run(&mut store, op, &mut rng).unwrap();
                if i % 997 == 0 {
                    census(&o);
                }
            }
            println!("Z {z} S {s} A {a} T {t}: max stash {}", o.max_stash());
        }
    }

    #[test]
    fn eviction_paths_cycle_through_every_leaf_in_reverse_lexicographic_order() {
        let order: Vec<u32> = (0..8).map(|g| reverse_lexicographic(g, 3)).collect();
        assert_eq!(order, vec![0, 4, 2, 6, 1, 5, 3, 7]);
        assert_eq!(reverse_lexicographic(8, 3), 0);
    }
}

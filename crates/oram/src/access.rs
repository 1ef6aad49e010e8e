//! The sans-IO access protocol: plan a batch, fetch and verify one round per tree, finish.
//!
//! A batch of `k` accesses runs one round per tree, from the last position-map tree down to
//! the data tree. Round `t` reads, for each access, the position of its block in tree `t - 1`
//! and writes the block's new position; then round `t - 1` knows which paths to fetch. With a
//! flat position map there is a single round.
//!
//! Nothing is committed until the last round has verified, evicted and sealed: a failed
//! verification or a stash overflow at any round leaves the engine exactly as it was before
//! [`Oram::begin`], and the sealed buckets of all rounds are released together by
//! [`Oram::write_back`].
//!
//! # Duplicates within a batch
//! The first access to touch a block (in any tree) fetches its path and remaps it; later
//! accesses of the same batch to the same block find it among the candidates and fetch a
//! fresh uniformly random path instead, so the server never sees a path twice for one block.
//! Accesses apply in order: a read after a write in the same batch sees the write.

use rand::CryptoRng;
use zeroize::Zeroize;

use crate::engine::{Oram, Tree};
use crate::helper::Helper;
use crate::integrity::IntegrityError;
use crate::position;
use crate::round::{Inputs, Lend, Round, Src};
use crate::seal::Sealer;
use crate::{BucketId, Config, Error, Op};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Dummy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    Fetching(usize),
    Done,
}

/// What [`Oram::advance`] did.
///
/// # Security
/// Public by nature: the server sees whether another round of fetches follows (the number
/// of rounds is the number of trees, fixed by the geometry).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Verified this round; [`Oram::fetch`] names the next round's buckets.
    Fetch,
    /// The batch is complete and committed; see [`Oram::write_back`] and [`Oram::result`].
    Done,
}

/// The batch's write data and read results are blocks: wiped when dropped.
impl Drop for Batch {
    fn drop(&mut self) {
        self.payload.zeroize();
        self.results.zeroize();
    }
}

/// The in-flight batch. Per-tree arrays are indexed `t * max_batch + j`.
pub(crate) struct Batch {
    pub(crate) phase: Phase,
    k: usize,
    max: usize,
    block: usize,
    /// `chi^t` for each tree: the data address divided by it is the block of tree `t`.
    divisors: Vec<u64>,
    chi: u64,
    kinds: Vec<Kind>,
    addrs: Vec<u64>,
    payload: Vec<u8>,
    results: Vec<u8>,
    zero: Vec<u8>,
    first_touch: Vec<bool>,
    needs: Vec<bool>,
    exists: Vec<bool>,
    new_leaf: Vec<u32>,
    rand_leaf: Vec<u32>,
    fetch_leaf: Vec<u32>,
    top_updates: Vec<(usize, u32)>,
}

impl Batch {
    pub fn new(config: &Config, trees: usize) -> Self {
        let max = config.max_batch as usize;
        let block = config.block_size as usize;
        let (chi, pos_block) = match config.position_map {
            position::PositionMap::Recursive { pos_block, .. } => {
                (u64::from(pos_block / 4), pos_block as usize)
            }
            position::PositionMap::Flat => (1, 0),
        };
        let divisors = (0..trees)
            .map(|t| (0..t).fold(1u64, |d, _| d.saturating_mul(chi)))
            .collect();
        let per_tree = max * trees;
        Batch {
            phase: Phase::Idle,
            k: 0,
            max,
            block,
            divisors,
            chi,
            kinds: vec![Kind::Dummy; max],
            addrs: vec![0; max],
            payload: vec![0; max * block],
            results: vec![0; max * block],
            zero: vec![0; block.max(pos_block)],
            first_touch: vec![false; per_tree],
            needs: vec![false; per_tree],
            exists: vec![false; per_tree],
            new_leaf: vec![0; per_tree],
            rand_leaf: vec![0; per_tree],
            fetch_leaf: vec![0; per_tree],
            top_updates: Vec::with_capacity(max),
        }
    }

    /// The block of tree `t` that access `j` touches.
    fn at(&self, j: usize, t: usize) -> u64 {
        self.addrs[j] / self.divisors[t]
    }

    fn leaves(&self, t: usize) -> &[u32] {
        &self.fetch_leaf[t * self.max..t * self.max + self.k]
    }

    pub fn memory(&self) -> usize {
        self.payload.capacity()
            + self.results.capacity()
            + self.zero.capacity()
            + self.addrs.capacity() * 8
            + self.kinds.capacity()
            + self.first_touch.capacity() * 3
            + self.new_leaf.capacity() * 12
            + self.top_updates.capacity() * 16
            + self.divisors.capacity() * 8
    }
}

/// The buckets one round needs. Fill each slot with [`Fetch::supply`] (or write into
/// [`Fetch::slot_mut`]), then call [`Oram::advance`].
///
/// # Security
/// The ids form one root-to-leaf path (minus cached levels) per access, for uniformly random
/// leaves. The bytes supplied are untrusted: `advance` verifies them all before use.
pub struct Fetch<'a> {
    round: &'a mut Round,
    helper: Option<&'a mut Helper>,
    sealer: &'a std::sync::Arc<Sealer>,
}

impl Fetch<'_> {
    /// The bucket ids to read, path after path, root side first.
    pub fn ids(&self) -> &[BucketId] {
        self.round.ids()
    }

    /// Bytes of every sealed bucket of this round's tree.
    pub fn bucket_len(&self) -> usize {
        self.round.geom.ciphertext_len()
    }

    /// The server's answer for slot `i`: its bytes, or `None` if it has no such bucket.
    pub fn supply(&mut self, i: usize, bucket: Option<&[u8]>) -> Result<(), IntegrityError> {
        let lend = lend(&mut self.helper, self.sealer);
        self.round.supply(i, bucket, lend)
    }

    /// A buffer of [`Fetch::bucket_len`] bytes for slot `i`, to read into directly.
    pub fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        let lend = lend(&mut self.helper, self.sealer);
        self.round.slot_mut(i, lend)
    }
}

fn lend<'a>(
    helper: &'a mut Option<&mut Helper>,
    sealer: &'a std::sync::Arc<Sealer>,
) -> Option<Lend<'a>> {
    helper.as_deref_mut().map(|helper| Lend { helper, sealer })
}

/// The sealed buckets of a finished batch, to store on the server.
///
/// # Security
/// The same ids that were fetched, in the same order; each bucket is freshly sealed, so the
/// bytes of a bucket read and written back unchanged still differ entirely.
pub struct WriteBack<'a> {
    trees: &'a [Tree],
}

impl<'a> WriteBack<'a> {
    /// `(bucket id, sealed bytes)` pairs, in the order the rounds fetched them.
    pub fn iter(&self) -> impl Iterator<Item = (BucketId, &'a [u8])> + '_ {
        self.trees.iter().rev().flat_map(|t| t.round.write_back())
    }

    /// How many buckets.
    pub fn len(&self) -> usize {
        self.trees.iter().map(|t| t.round.ids().len()).sum()
    }

    /// True when a fully cached tree needs no write-back.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Oram {
    /// Plans a batch of accesses. Draws every leaf the batch will use from `rng`.
    ///
    /// Fails with [`Error::Busy`] while another batch is still fetching.
    pub fn begin<R: CryptoRng + ?Sized>(
        &mut self,
        ops: &[Op<'_>],
        rng: &mut R,
    ) -> Result<(), Error> {
        if let Phase::Fetching(_) = self.batch.phase {
            return Err(Error::Busy);
        }
        let (max, capacity, block) = (self.batch.max, self.config.capacity, self.batch.block);
        if ops.is_empty() || ops.len() > max {
            return Err(Error::BatchSize {
                got: ops.len(),
                max,
            });
        }
        for op in ops {
            match *op {
                Op::Read(a) | Op::Write(a, _) if a >= capacity => {
                    return Err(Error::AddressOutOfBounds {
                        attempted: a,
                        capacity,
                    });
                }
                Op::Write(_, d) if d.len() != block => {
                    return Err(Error::WrongBlockSize {
                        got: d.len(),
                        expected: block,
                    });
                }
                _ => {}
            }
        }
        let b = &mut self.batch;
        b.k = ops.len();
        for (j, op) in ops.iter().enumerate() {
            (b.kinds[j], b.addrs[j]) = match *op {
                Op::Read(a) => (Kind::Read, a),
                Op::Write(a, d) => {
                    b.payload[j * block..(j + 1) * block].copy_from_slice(d);
                    (Kind::Write, a)
                }
                Op::Dummy => (Kind::Dummy, 0),
            };
        }
        let trees = self.trees.len();
        for t in 0..trees {
            let mask = (self.trees[t].round.geom.leaves() - 1) as u32;
            for j in 0..b.k {
                let i = t * max + j;
                let a = b.at(j, t);
                let real = |x: usize| b.kinds[x] != Kind::Dummy && b.at(x, t) == a;
                b.first_touch[i] = b.kinds[j] != Kind::Dummy && !(0..j).any(real);
                b.needs[i] = b.kinds[j] != Kind::Dummy
                    && (0..b.k).any(|x| b.kinds[x] == Kind::Write && b.at(x, t) == a);
                b.exists[i] = false;
                b.new_leaf[i] = rng.next_u32() & mask;
                b.rand_leaf[i] = rng.next_u32() & mask;
                b.fetch_leaf[i] = b.rand_leaf[i];
            }
        }
        // The top tree's positions are in client memory.
        let top = trees - 1;
        b.top_updates.clear();
        for j in 0..b.k {
            let i = top * max + j;
            if !b.first_touch[i] {
                continue;
            }
            let a = b.at(j, top) as usize;
            let old = self.top[a];
            b.exists[i] = old != 0;
            if let Some(leaf) = position::leaf_of(old) {
                b.fetch_leaf[i] = leaf;
            }
            if old != 0 || b.needs[i] {
                b.top_updates.push((a, position::entry(b.new_leaf[i])));
            }
        }
        self.trees[top].round.setup(b.leaves(top));
        b.phase = Phase::Fetching(top);
        Ok(())
    }

    /// The buckets the current round needs, or `None` when no batch is fetching.
    pub fn fetch(&mut self) -> Option<Fetch<'_>> {
        match self.batch.phase {
            Phase::Fetching(t) => Some(Fetch {
                round: &mut self.trees[t].round,
                helper: self.helper.as_mut(),
                sealer: &self.sealer,
            }),
            _ => None,
        }
    }

    /// Verifies the supplied buckets and runs the round.
    ///
    /// - `Ok(Progress::Fetch)`: another round is needed (recursive position map).
    /// - `Ok(Progress::Done)`: the batch is committed.
    /// - `Err(Error::Integrity(_))`: the server's data is not what the client wrote. Nothing
    ///   changed; supply the buckets again (for instance from an honest replica) or
    ///   [`Oram::abort`].
    /// - `Err(Error::StashOverflow { .. })`: the batch is aborted, nothing changed.
    pub fn advance(&mut self) -> Result<Progress, Error> {
        let Phase::Fetching(t) = self.batch.phase else {
            return Err(Error::NotFetching);
        };
        let Oram {
            trees,
            batch,
            sealer,
            counter,
            helper,
            ..
        } = self;
        let tree = &mut trees[t];
        if let Some(h) = helper {
            tree.round.finish_supply(h);
        }
        tree.round.verify(sealer, &tree.root, &tree.cache)?;
        tree.round.gather(&tree.stash, &tree.cache);
        if let Err(e) = apply(batch, &mut tree.round, &tree.stash, &tree.cache, t) {
            tree.round.reset_present();
            return Err(e);
        }
        let inputs = Inputs {
            stash: &tree.stash,
            cache: &tree.cache,
            payload: &batch.payload,
            zero: &batch.zero,
        };
        if let Err(e) = tree.round.evict(&inputs) {
            batch.phase = Phase::Idle;
            return Err(e);
        }
        if t > 0 {
            trees[t - 1].round.setup(batch.leaves(t - 1));
            batch.phase = Phase::Fetching(t - 1);
            return Ok(Progress::Fetch);
        }
        // Every round succeeded: only now consume nonces.
        for tree in trees.iter_mut() {
            if let Err(e) = tree.round.seal(sealer, counter, &tree.cache) {
                batch.phase = Phase::Idle;
                return Err(e);
            }
        }
        self.commit();
        Ok(Progress::Done)
    }

    fn commit(&mut self) {
        for (t, tree) in self.trees.iter_mut().enumerate() {
            std::mem::swap(&mut tree.stash, &mut tree.round.staged);
            tree.round
                .commit_cache(&mut tree.cache, |i, r| self.dirty.cache(t, i, r));
            if tree.round.geom.cached_levels == 0 {
                tree.root = tree.round.new_root;
            }
            self.max_stash = self.max_stash.max(tree.stash.len());
        }
        for &(a, e) in &self.batch.top_updates {
            self.top[a] = e;
            self.dirty.top(a);
        }
        self.batch.phase = Phase::Done;
    }

    /// Drops the batch in flight, if any. Nothing was committed, and nothing needs to be
    /// written back. (The server saw reads without writes, which shows that a batch failed.)
    pub fn abort(&mut self) {
        if let Phase::Fetching(t) = self.batch.phase {
            if let Some(h) = &mut self.helper {
                self.trees[t].round.settle(h);
            }
            self.batch.phase = Phase::Idle;
        }
    }

    /// True while a batch is waiting for buckets.
    pub fn in_flight(&self) -> bool {
        matches!(self.batch.phase, Phase::Fetching(_))
    }

    /// After [`Progress::Done`]: the sealed buckets to store, every tree's in round order.
    /// The caller must store them before the next batch reads those buckets.
    pub fn write_back(&self) -> Option<WriteBack<'_>> {
        if self.batch.phase != Phase::Done {
            return None;
        }
        Some(WriteBack { trees: &self.trees })
    }

    /// After [`Progress::Done`]: what access `j` read (a block of zeros if never written),
    /// or `None` if access `j` was not a read.
    pub fn result(&self, j: usize) -> Option<&[u8]> {
        let b = &self.batch;
        (b.phase == Phase::Done && j < b.k && b.kinds[j] == Kind::Read)
            .then(|| &b.results[j * b.block..(j + 1) * b.block])
    }
}

/// Applies the batch's accesses to tree `t`'s candidate blocks, in order.
fn apply(
    b: &mut Batch,
    round: &mut Round,
    stash: &crate::stash::Stash,
    cache: &[u8],
    t: usize,
) -> Result<(), Error> {
    let inputs = Inputs {
        stash,
        cache,
        payload: &b.payload,
        zero: &b.zero,
    };
    for j in 0..b.k {
        if b.kinds[j] == Kind::Dummy {
            continue;
        }
        let i = t * b.max + j;
        let a = b.at(j, t);
        let mut cand = round.find(a);
        if b.first_touch[i] {
            match cand {
                Some(c) => round.cand_leaf[c] = b.new_leaf[i],
                None if b.exists[i] => return Err(IntegrityError::BlockMissing(a).into()),
                None if b.needs[i] => cand = Some(round.push_cand(Src::Zero, a, b.new_leaf[i])),
                None => {}
            }
        }
        if t == 0 {
            let block = b.block;
            match (b.kinds[j], cand) {
                (Kind::Read, Some(c)) => {
                    let data = round.data(c, &inputs);
                    b.results[j * block..(j + 1) * block].copy_from_slice(data);
                }
                (Kind::Read, None) => b.results[j * block..(j + 1) * block].fill(0),
                (Kind::Write, Some(c)) => round.cand_src[c] = Src::Payload(j as u32),
                _ => return Err(IntegrityError::BlockMissing(a).into()),
            }
            continue;
        }
        // A position block: read and update the entry of the child block.
        let ci = (t - 1) * b.max + j;
        if !b.first_touch[ci] {
            continue;
        }
        let e = (b.at(j, t - 1) % b.chi) as usize;
        let old = cand.map_or(0, |c| position::get(round.data(c, &inputs), e));
        b.exists[ci] = old != 0;
        if let Some(leaf) = position::leaf_of(old) {
            b.fetch_leaf[ci] = leaf;
        }
        if let (Some(c), true) = (cand, old != 0 || b.needs[ci]) {
            position::set(
                round.make_mut(c, &inputs),
                e,
                position::entry(b.new_leaf[ci]),
            );
        }
    }
    Ok(())
}

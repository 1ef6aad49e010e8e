//! Ring ORAM with a recursive position map: the leaves of the data tree's blocks are kept
//! in the blocks of a smaller Ring ORAM, whose leaves are kept in a smaller one again,
//! until a tree is small enough for its positions to stay in client memory.
//!
//! # The construction
//! The recursion of Path ORAM (Stefanov et al., CCS 2013, section 3.1; Shi et al.,
//! ASIACRYPT 2011), which Ring ORAM uses unchanged (Ren et al., USENIX Security 2015,
//! section 3): position block `p` of tree `t > 0` holds the leaves of blocks
//! `p * chi .. (p + 1) * chi` of tree `t - 1`, `chi = pos_block / 4` entries of 4 bytes
//! (`leaf + 1`, 0 for a block never written). An access of block `a` walks the trees from
//! the smallest: it reads `a / chi^t` in tree `t`, at the leaf the tree above gave, and in
//! the same access writes there the leaf that block `a / chi^(t-1)` of the tree below moves
//! to (drawn before the walk); then tree `t - 1`. One round trip a tree.
//!
//! Each tree is a [`RingOram`] that keeps its blocks' leaves in the blocks themselves (4
//! bytes after each block), given for each access by the walk, so no tree holds a position
//! map: an eviction places again the blocks it reads by the leaves sealed with them, where
//! the paper reads them from its bucket metadata (which this engine keeps in client memory,
//! so there they would cost 4 bytes a real slot).
//!
//! # What it costs
//! The flat map's 4 bytes a block, against the position trees' metadata, stashes and a
//! round trip each; and 4 bytes more per slot. With the metadata in client memory (about 26
//! bytes a block) the saving is small: docs/benchmarks.md measures it. The slot schedule
//! uses the flat map (one round trip a slot).
//!
//! # Security
//! Each tree's accesses are those of [`RingOram`]: one uniformly random path per access,
//! whatever the operation, read, write and dummy alike; the walk touches every tree once
//! per access, in a fixed order. What leaks beyond one Ring ORAM: the number of trees and
//! their sizes, which the configuration fixes.

use rand::{CryptoRng, RngExt};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use super::engine::{Layout, Placed, RingOram, le_u32};
use super::pages::Dirty;
use super::snapshot::{by_name, pack, unpack};
use super::store::RingStore;
use super::{RingConfig, RingReply, RingRequest};
use crate::pages::{Pages, positions_page, read_positions};
use crate::snapshot::{decode, encode};
use crate::store::DriverError;
use crate::{Error, Key, MAX_BLOCK, Op, Progress};

/// The format of the `recursive` page.
const VERSION: u32 = 1;
/// Entries of the top map per `top/P` page.
const TOP_PAGE: usize = 256;
/// The most trees: the data tree and its position trees.
const MAX_TREES: usize = 16;

/// The parameters of the recursion, fixed at creation.
///
/// # Security
/// Public: the server sees every tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recursion {
    /// Bytes of positions per position block: a multiple of 4, 16 to 4,096.
    pub pos_block: u32,
    /// Recursion stops at a tree of at most this many blocks, whose positions the client
    /// keeps (1 to 2^20).
    pub flat_limit: u64,
}

impl Default for Recursion {
    /// 128-byte position blocks (32 entries) and a top map of at most 2^14 entries, as
    /// Path ORAM's [`crate::PositionMap::recursive`].
    fn default() -> Self {
        Recursion {
            pos_block: 128,
            flat_limit: 1 << 14,
        }
    }
}

impl Recursion {
    fn validate(&self) -> Result<(), Error> {
        if !self.pos_block.is_multiple_of(4) || !(16..=4096).contains(&self.pos_block) {
            return Err(Error::InvalidConfig(
                "position blocks must be a multiple of 4, 16 to 4096 bytes",
            ));
        }
        if !(1..=1 << 20).contains(&self.flat_limit) {
            return Err(Error::InvalidConfig("flat limit must be 1 to 2^20"));
        }
        Ok(())
    }

    fn chi(&self) -> u64 {
        u64::from(self.pos_block / 4)
    }

    /// The configs of every tree, the data tree first.
    fn trees(&self, data: &RingConfig) -> Result<Vec<RingConfig>, Error> {
        self.validate()?;
        data.validate()?;
        if data.block_size > MAX_BLOCK - 4 {
            return Err(Error::InvalidConfig(
                "blocks of a recursive Ring ORAM are at most 65,532 bytes",
            ));
        }
        let mut trees = vec![RingConfig {
            block_size: data.block_size + 4,
            ..*data
        }];
        let mut capacity = data.capacity;
        while capacity > self.flat_limit {
            capacity = capacity.div_ceil(self.chi());
            trees.push(RingConfig {
                capacity,
                block_size: self.pos_block + 4,
                ..*data
            });
            if trees.len() > MAX_TREES {
                return Err(Error::InvalidConfig("too many levels of recursion"));
            }
        }
        Ok(trees)
    }
}

/// The `recursive` page: what the trees are.
#[derive(Serialize, Deserialize)]
struct Head {
    version: u32,
    config: RingConfig,
    recursion: Recursion,
    accesses: u64,
}

/// Nothing secret: for [`decode`], which wipes what it decodes.
impl zeroize::Zeroize for Head {
    fn zeroize(&mut self) {
        self.accesses.zeroize();
    }
}

/// One access of a walk: its address (`None`: a dummy) and, for a write, its data padded
/// with the 4 bytes of its leaf.
type Planned = (Option<u64>, Option<Zeroizing<Vec<u8>>>);

/// A batch walking down the trees.
struct Walk {
    /// Per access: its operation's address (`None`: a dummy), and its data for a write
    /// (padded with the 4 bytes of its leaf).
    ops: Vec<Planned>,
    /// The tree whose request is out.
    tree: usize,
    /// Per tree, per access: the leaf its block moves to.
    new_leaves: Vec<Vec<u32>>,
    /// Per access: the leaf of its block in `tree` (`None`: never written).
    leaves: Vec<Option<u32>>,
    /// A tree's stash grew past this bound during the walk: reported when it ends.
    overflow: Option<usize>,
}

/// A Ring ORAM client whose position map is kept recursively in smaller Ring ORAMs.
///
/// ```
/// use shroud_oram::Op;
/// use shroud_oram::ring::{RecursiveRing, Recursion, RingConfig};
///
/// let mut rng = rand::rng();
/// let key = shroud_oram::Key::generate(&mut rng);
/// let map = Recursion { pos_block: 16, flat_limit: 8 };
/// let mut oram = RecursiveRing::new(RingConfig::new(1000, 32), map, key, &mut rng)?;
/// assert_eq!(oram.trees(), 5); // 1000 blocks, then 250, 63, 16 and 4 of positions
/// let mut store = shroud_oram::MemoryStore::new();
/// oram.run(&mut store, Op::Write(7, &[1u8; 32]), &mut rng)?;
/// assert_eq!(oram.run(&mut store, Op::Read(7), &mut rng)?, [1u8; 32]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # Security
/// Holds every secret of the store: each tree's engine (see [`RingOram`]) and the top map.
/// What it emits depends only on the configuration, the access count and uniformly random
/// leaves: one access of every tree per access, in a fixed order (see the module docs).
pub struct RecursiveRing {
    config: RingConfig,
    recursion: Recursion,
    /// The data tree, then the position trees, smallest last.
    trees: Vec<RingOram>,
    /// `leaf + 1` of each block of the last tree (0: never written).
    top: Vec<u32>,
    /// `top/P` pages changed since pages were last taken.
    top_dirty: std::collections::BTreeSet<usize>,
    all_dirty: bool,
    accesses: u64,
    walk: Option<Walk>,
    results: Vec<Zeroizing<Vec<u8>>>,
}

impl RecursiveRing {
    /// A new, empty store of `config` (its blocks' size and count, Z, S, A, T, the stash
    /// bound and the batch size, which every tree shares) with the position map of
    /// `recursion`. Nothing is written until the first eviction of each tree.
    pub fn new<R: CryptoRng + ?Sized>(
        config: RingConfig,
        recursion: Recursion,
        key: Key,
        rng: &mut R,
    ) -> Result<Self, Error> {
        let configs = recursion.trees(&config)?;
        let mut trees = Vec::with_capacity(configs.len());
        for (t, c) in configs.iter().enumerate() {
            let mut store_id = [0u8; 16];
            rng.fill_bytes(&mut store_id);
            let layout = Layout {
                tree: t as u8,
                leaves_in_blocks: true,
            };
            trees.push(RingOram::with_lineages(*c, &key, store_id, &[], layout)?);
        }
        let top_len = configs.last().map_or(0, |c| c.capacity) as usize;
        Ok(RecursiveRing {
            config,
            recursion,
            trees,
            top: vec![0; top_len],
            top_dirty: Default::default(),
            all_dirty: true,
            accesses: 0,
            walk: None,
            results: Vec::new(),
        })
    }

    /// The parameters of the data tree, as given (its blocks without their leaves).
    pub fn config(&self) -> &RingConfig {
        &self.config
    }

    /// The recursion's parameters.
    pub fn recursion(&self) -> &Recursion {
        &self.recursion
    }

    /// Trees: the data tree and its position trees.
    pub fn trees(&self) -> usize {
        self.trees.len()
    }

    /// Accesses finished so far.
    pub fn accesses(&self) -> u64 {
        self.accesses
    }

    /// The largest stash seen after an access, in any tree.
    pub fn max_stash(&self) -> usize {
        self.trees
            .iter()
            .map(RingOram::max_stash)
            .max()
            .unwrap_or(0)
    }

    /// Bytes of client memory held: every tree's engine and the top map.
    pub fn memory(&self) -> usize {
        self.trees.iter().map(RingOram::memory).sum::<usize>() + self.top.capacity() * 4
    }

    /// Plans a batch of accesses (at most `max_batch`) and returns the first request: the
    /// smallest tree's. Send each request in turn and give its reply to
    /// [`RecursiveRing::finish`] until it says [`Progress::Done`].
    pub fn begin_batch<R: CryptoRng + ?Sized>(
        &mut self,
        ops: &[Op<'_>],
        rng: &mut R,
    ) -> Result<&RingRequest, Error> {
        if self.walk.is_some() {
            return Err(Error::Busy);
        }
        let max = self.config.max_batch as usize;
        if ops.is_empty() || ops.len() > max {
            return Err(Error::BatchSize {
                got: ops.len(),
                max,
            });
        }
        let block = self.config.block_size as usize;
        let mut planned = Vec::with_capacity(ops.len());
        for op in ops {
            planned.push(match *op {
                Op::Read(a) => (Some(self.check_addr(a)?), None),
                Op::Write(a, data) => {
                    if data.len() != block {
                        return Err(Error::WrongBlockSize {
                            got: data.len(),
                            expected: block,
                        });
                    }
                    let mut padded = Zeroizing::new(vec![0u8; block + 4]);
                    padded[..block].copy_from_slice(data);
                    (Some(self.check_addr(a)?), Some(padded))
                }
                Op::Dummy => (None, None),
            });
        }
        let new_leaves = self
            .trees
            .iter()
            .map(|t| {
                let leaves = t.geometry().leaves() as u32;
                (0..ops.len())
                    .map(|_| rng.random_range(0..leaves))
                    .collect()
            })
            .collect();
        let last = self.trees.len() - 1;
        let leaves = planned
            .iter()
            .map(|(a, _)| {
                a.and_then(|a| {
                    let e = self.top[block_in(self.recursion.chi(), a, last) as usize];
                    e.checked_sub(1)
                })
            })
            .collect();
        self.walk = Some(Walk {
            ops: planned,
            tree: last,
            new_leaves,
            leaves,
            overflow: None,
        });
        match self.begin_tree(rng) {
            Ok(()) => self.request().ok_or(Error::NotFetching),
            Err(e) => {
                self.walk = None;
                Err(e)
            }
        }
    }

    /// The request out (to send, or send again after a reply that did not verify).
    pub fn request(&self) -> Option<&RingRequest> {
        let w = self.walk.as_ref()?;
        self.trees[w.tree].request()
    }

    /// Bytes of one slot of the tree whose request is out (storage's
    /// [`RingStore::exchange`] takes it), or of the data tree between accesses.
    pub fn slot_len(&self) -> usize {
        let t = self.walk.as_ref().map_or(0, |w| w.tree);
        self.trees[t].config().slot_len()
    }

    /// Verifies storage's reply to the request out and completes that tree's accesses:
    /// [`Progress::Fetch`] when the next tree's request is out, [`Progress::Done`] when
    /// the batch is complete (see [`RecursiveRing::results`]).
    ///
    /// On an [`Error::Integrity`] nothing changes: send the same request again. A tree
    /// whose stash grows past its bound does not stop the walk: the batch completes (no
    /// block is lost) and its last `finish` returns [`Error::StashOverflow`].
    pub fn finish<R: CryptoRng + ?Sized>(
        &mut self,
        reply: &RingReply,
        rng: &mut R,
    ) -> Result<Progress, Error> {
        let Some(t) = self.walk.as_ref().map(|w| w.tree) else {
            return Err(Error::NotFetching);
        };
        let overflow = match self.trees[t].finish(reply, rng) {
            Ok(()) => None,
            Err(Error::StashOverflow { limit }) => Some(limit),
            Err(e) => return Err(e),
        };
        let walk = self.walk.as_mut().ok_or(Error::NotFetching)?;
        walk.overflow = walk.overflow.or(overflow);
        let last = self.trees.len() - 1;
        if t == last {
            // The top map names the leaves this tree's blocks moved to, in access order.
            for (j, (a, _)) in walk.ops.iter().enumerate() {
                if let Some(a) = *a {
                    let b = block_in(self.recursion.chi(), a, last) as usize;
                    self.top[b] = walk.new_leaves[last][j] + 1;
                    self.top_dirty.insert(b / TOP_PAGE);
                }
            }
        }
        if t > 0 {
            let chi = self.recursion.chi();
            // Each access read its position block: the entry of the block below.
            walk.leaves = walk
                .ops
                .iter()
                .zip(self.trees[t].results())
                .map(|((a, _), data)| {
                    a.and_then(|a| le_u32(data, entry_in(chi, a, t) * 4).checked_sub(1))
                })
                .collect();
            walk.tree = t - 1;
            self.begin_tree(rng)?;
            return Ok(Progress::Fetch);
        }
        let block = self.config.block_size as usize;
        self.results = self.trees[0]
            .results()
            .map(|r| Zeroizing::new(r.get(..block).unwrap_or_default().to_vec()))
            .collect();
        let walk = self.walk.take().ok_or(Error::NotFetching)?;
        self.accesses += walk.ops.len() as u64;
        match walk.overflow {
            Some(limit) => Err(Error::StashOverflow { limit }),
            None => Ok(Progress::Done),
        }
    }

    /// Plans the walk's accesses of its current tree.
    fn begin_tree<R: CryptoRng + ?Sized>(&mut self, rng: &mut R) -> Result<(), Error> {
        let chi = self.recursion.chi();
        let walk = self.walk.as_ref().ok_or(Error::NotFetching)?;
        let t = walk.tree;
        let placed: Vec<Placed<'_>> = walk
            .ops
            .iter()
            .enumerate()
            .map(|(j, (a, write))| {
                let op = match (a, write) {
                    (None, _) => Op::Dummy,
                    (Some(a), Some(data)) if t == 0 => Op::Write(*a, &data[..]),
                    (Some(a), _) => Op::Read(block_in(chi, *a, t)),
                };
                let update = match a {
                    Some(a) if t > 0 => Some((entry_in(chi, *a, t), walk.new_leaves[t - 1][j] + 1)),
                    _ => None,
                };
                Placed {
                    op,
                    leaf: walk.leaves[j],
                    new_leaf: walk.new_leaves[t][j],
                    update,
                }
            })
            .collect();
        self.trees[t].begin_placed(&placed, rng)?;
        Ok(())
    }

    /// `a`, if the data tree (of the same capacity) holds it.
    fn check_addr(&self, a: u64) -> Result<u64, Error> {
        self.trees[0].check_addr(a).map(u64::from)
    }

    /// What each access of the last finished batch read (zeros if never written; empty
    /// after a dummy), in order.
    pub fn results(&self) -> impl Iterator<Item = &[u8]> {
        self.results.iter().map(|r| &r[..])
    }

    /// The rewrites every tree still owes storage, a request per tree (to leave storage
    /// settled, e.g. before a shutdown); empty while a batch is out.
    pub fn flush(&mut self) -> Result<Vec<(usize, RingRequest)>, Error> {
        if self.walk.is_some() {
            return Ok(Vec::new());
        }
        self.trees
            .iter_mut()
            .map(|t| Ok((t.config().slot_len(), t.flush()?)))
            .collect()
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

    /// Runs a batch of accesses, one exchange per tree, and returns what each read.
    pub fn run_batch<S: RingStore, R: CryptoRng + ?Sized>(
        &mut self,
        store: &mut S,
        ops: &[Op<'_>],
        rng: &mut R,
    ) -> Result<Vec<Vec<u8>>, DriverError<S::Error>> {
        self.begin_batch(ops, rng)?;
        loop {
            let slot_len = self.slot_len();
            let req = self.request().ok_or(Error::NotFetching)?;
            let reply = store.exchange(req, slot_len).map_err(DriverError::Store)?;
            if self.finish(&reply, rng)? == Progress::Done {
                break;
            }
        }
        Ok(self.results().map(<[u8]>::to_vec).collect())
    }

    /// The pages that changed since the last call (all of them after `new` or a rebuild):
    /// `recursive` (the trees' parameters and the access count), `top/P` (entries
    /// `P * 256 ..` of the top map), and each tree's pages ([`RingOram::changed_pages`])
    /// under `t<T>/`. Only between batches: [`Error::Busy`] while one is out. Store them
    /// together (atomically), as for one engine.
    pub fn changed_pages(&mut self) -> Result<Pages, Error> {
        if self.walk.is_some() {
            return Err(Error::Busy);
        }
        let mut pages = Pages::new();
        pages.insert("recursive".into(), encode(&self.head())?);
        let dirty: Vec<usize> = if self.all_dirty {
            (0..self.top.len().div_ceil(TOP_PAGE)).collect()
        } else {
            self.top_dirty.iter().copied().collect()
        };
        for p in dirty {
            pages.insert(format!("top/{p}"), self.top_page(p));
        }
        self.top_dirty.clear();
        self.all_dirty = false;
        for (t, tree) in self.trees.iter_mut().enumerate() {
            for (name, bytes) in tree.changed_pages()? {
                pages.insert(format!("t{t}/{name}"), bytes);
            }
        }
        Ok(pages)
    }

    /// Serializes the whole client-side state (every page, as [`RingOram::snapshot`] does).
    /// Only between batches: [`Error::Busy`] while one is out.
    pub fn snapshot(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        if self.walk.is_some() {
            return Err(Error::Busy);
        }
        let mut pages = Pages::new();
        pages.insert("recursive".into(), encode(&self.head())?);
        for p in 0..self.top.len().div_ceil(TOP_PAGE) {
            pages.insert(format!("top/{p}"), self.top_page(p));
        }
        for (t, tree) in self.trees.iter().enumerate() {
            for (name, bytes) in tree.pages(Dirty::everything())? {
                pages.insert(format!("t{t}/{name}"), bytes);
            }
        }
        pack(&pages)
    }

    /// Rebuilds a store from [`RecursiveRing::snapshot`] bytes and the key, as
    /// [`RecursiveRing::from_pages`] does.
    pub fn restore(bytes: &[u8], key: Key) -> Result<Self, Error> {
        let snap = unpack(bytes)?;
        let by_name = by_name(&snap);
        RecursiveRing::from_pages(|name| by_name.get(name).copied(), key)
    }

    fn head(&self) -> Head {
        Head {
            version: VERSION,
            config: self.config,
            recursion: self.recursion,
            accesses: self.accesses,
        }
    }

    fn top_page(&self, p: usize) -> Zeroizing<Vec<u8>> {
        positions_page(&self.top[p * TOP_PAGE..((p + 1) * TOP_PAGE).min(self.top.len())])
    }

    /// Rebuilds a store from the latest bytes of every page, looked up by name, and the
    /// key: each tree as [`RingOram::from_pages`] rebuilds one (in a new lineage), checked
    /// against the parameters the `recursive` page names. Refuses (never panics on) a page
    /// missing or of the wrong size or content.
    pub fn from_pages<'a>(
        page: impl Fn(&str) -> Option<&'a [u8]>,
        key: Key,
    ) -> Result<Self, Error> {
        let bad = |m: String| Error::BadSnapshot(m);
        let named = page("recursive").ok_or_else(|| bad("the recursive page is missing".into()))?;
        let head: Zeroizing<Head> = decode(named)?;
        if head.version != VERSION {
            return Err(bad("unknown version of the recursive page".into()));
        }
        let configs = head.recursion.trees(&head.config)?;
        let mut trees = Vec::with_capacity(configs.len());
        for (t, c) in configs.iter().enumerate() {
            let prefix = format!("t{t}/");
            let layout = Layout {
                tree: t as u8,
                leaves_in_blocks: true,
            };
            let tree = RingOram::from_pages_in(
                |name| page(&format!("{prefix}{name}")),
                key.clone(),
                layout,
            )?;
            if tree.config() != c {
                return Err(bad(format!(
                    "tree {t} does not have the recursion's parameters"
                )));
            }
            trees.push(tree);
        }
        let top_len = configs.last().map_or(0, |c| c.capacity) as usize;
        let top_leaves = trees.last().map_or(0, |t| t.geometry().leaves());
        let mut top = vec![0u32; top_len];
        for p in 0..top_len.div_ceil(TOP_PAGE) {
            let name = format!("top/{p}");
            let bytes = page(&name).ok_or_else(|| bad(format!("page {name} is missing")))?;
            let entries = &mut top[p * TOP_PAGE..((p + 1) * TOP_PAGE).min(top_len)];
            read_positions(&name, bytes, entries)?;
            if entries.iter().any(|&e| u64::from(e) > top_leaves) {
                return Err(bad(format!("page {name} names a leaf past the tree")));
            }
        }
        Ok(RecursiveRing {
            config: head.config,
            recursion: head.recursion,
            trees,
            top,
            top_dirty: Default::default(),
            all_dirty: false,
            accesses: head.accesses,
            walk: None,
            results: Vec::new(),
        })
    }
}

/// The block of tree `t` that holds what data block `a` needs there: `a / chi^t`.
fn block_in(chi: u64, a: u64, t: usize) -> u64 {
    (0..t).fold(a, |b, _| b / chi)
}

/// The entry of tree `t`'s block (`t > 0`) that holds the leaf of data block `a`'s block
/// in tree `t - 1`.
fn entry_in(chi: u64, a: u64, t: usize) -> usize {
    (block_in(chi, a, t - 1) % chi) as usize
}

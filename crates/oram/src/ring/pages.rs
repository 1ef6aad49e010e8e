//! A Ring ORAM client's state as pages, so that a caller saves what an access changed
//! instead of the whole state, as for Path ORAM ([`crate::pages`]):
//! - `core`: version, config, store id, nonce counter, lineages, access and eviction
//!   counts and which blocks the stash holds (in every call);
//! - `owed`: the rewritten buckets still owed to storage, as the plaintext of their real
//!   slots, sealed again on restore from their metadata's nonces (in every call; version 1
//!   of `core` held them sealed, Z + S slots each, and is still read);
//! - `meta/P`: the metadata of buckets `P * 4 ..` (what each slot holds, which were read,
//!   how often, and their nonces), changed by every read and write of those buckets;
//! - `pos/P`: entries `P * 256 ..` of the position map (1 KiB a page);
//! - `cache/I`: which blocks cached bucket `I` (heap order) holds;
//! - `block/A`: the plaintext of block `A`, for every block the client holds (stash or
//!   cached levels), saved when its data comes to the client (written, or read from
//!   storage), not when it moves between the stash and the cached buckets. The page of a
//!   block that left for storage stays behind, unread, until the block comes back (at
//!   most one page a block: the disk holds at most N blocks of it).
//!
//! Version 1 of `core` (still read) held the stash's and the cached buckets' data in
//! `core` and `cache/I`, owed buckets sealed in `core`, and metadata pages of 16 buckets.
//!
//! A caller keeps the latest bytes of every page (the first call after [`RingOram::new`]
//! or a restore returns them all), stores an access's pages together (atomically), and
//! encrypts them at rest; [`RingOram::from_pages`] rebuilds the engine in a new lineage,
//! treating every page as untrusted: lengths and indices checked against the config before
//! use, and every block in exactly one place.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use zeroize::{Zeroize, Zeroizing};

use super::RingConfig;
use super::engine::{Layout, RingOram};
use super::meta::Meta;
use super::slot::NonceAt;
use crate::pages::{Pages, positions_page, read_positions};
use crate::snapshot::{MAX_RESTORE_BYTES, decode, encode};
use crate::{Error, Key};

/// Buckets per `meta/P` page: 4 since `core` version 2 (an access reads one bucket a
/// level, each in its own page, so smaller pages save less unchanged metadata; at Z + S =
/// 96 a bucket's metadata is about 420 bytes).
pub const META_PAGE: usize = 4;
/// Buckets per `meta/P` page in `core` version 1.
const META_PAGE_V1: usize = 16;
/// Position-map entries per `pos/P` page.
pub const POS_PAGE: usize = 256;

/// The format of the `core` page: 2 since owed buckets moved to the `owed` page (its
/// `pending` is then empty) and held blocks' data to `block/A` pages (its `stash` and the
/// `cache/I` pages then carry empty data); version 1 is still read.
const VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Core {
    version: u32,
    config: RingConfig,
    store_id: [u8; 16],
    counter: u64,
    lineages: Vec<[u8; 32]>,
    accesses: u64,
    evictions: u64,
    stash: Vec<(u32, ByteBuf)>,
    pending: Vec<(u64, ByteBuf)>,
}

#[derive(Serialize, Deserialize)]
struct MetaPage {
    held: Vec<u32>,
    unread: Vec<u64>,
    count: Vec<u8>,
    written: Vec<NonceAt>,
}

/// The `owed` page: per owed bucket, its heap index and its real slots' plaintext.
#[derive(Serialize, Deserialize)]
struct OwedPage {
    buckets: Vec<(u64, Vec<(u16, ByteBuf)>)>,
}

#[derive(Serialize, Deserialize)]
struct CachePage {
    blocks: Vec<(u32, ByteBuf)>,
}

impl Zeroize for Core {
    fn zeroize(&mut self) {
        for (a, d) in &mut self.stash {
            a.zeroize();
            d.as_mut_slice().zeroize();
        }
    }
}

impl Zeroize for MetaPage {
    fn zeroize(&mut self) {
        self.held.zeroize();
    }
}

impl Zeroize for OwedPage {
    fn zeroize(&mut self) {
        for (_, blocks) in &mut self.buckets {
            for (_, d) in blocks {
                d.as_mut_slice().zeroize();
            }
        }
    }
}

impl Zeroize for CachePage {
    fn zeroize(&mut self) {
        for (a, d) in &mut self.blocks {
            a.zeroize();
            d.as_mut_slice().zeroize();
        }
    }
}

/// The name of the page of owed buckets.
const OWED: &str = "owed";

/// What changed since pages were last taken.
#[derive(Default)]
pub(crate) struct Dirty {
    all: bool,
    meta: BTreeSet<usize>,
    pos: BTreeSet<usize>,
    cache: BTreeSet<usize>,
    data: BTreeSet<u32>,
}

impl Dirty {
    /// Everything: the engine was just made or rebuilt.
    pub fn everything() -> Self {
        Dirty {
            all: true,
            ..Dirty::default()
        }
    }

    /// Bucket `b`'s metadata changed.
    pub fn meta(&mut self, b: u64) {
        self.meta.insert(b as usize / META_PAGE);
    }

    /// Block `a`'s position changed.
    pub fn pos(&mut self, a: u32) {
        self.pos.insert(a as usize / POS_PAGE);
    }

    /// Cached bucket `b` changed.
    pub fn cache(&mut self, b: usize) {
        self.cache.insert(b);
    }

    /// Block `a`'s data came to the client.
    pub fn data(&mut self, a: u32) {
        self.data.insert(a);
    }
}

fn meta_name(p: usize) -> String {
    format!("meta/{p}")
}

fn pos_name(p: usize) -> String {
    format!("pos/{p}")
}

fn cache_name(b: usize) -> String {
    format!("cache/{b}")
}

fn block_name(a: u32) -> String {
    format!("block/{a}")
}

impl RingOram {
    /// The pages that changed since the last call (all of them after `new` or a rebuild).
    /// Only between accesses: [`Error::Busy`] while one is in flight.
    ///
    /// ```
    /// use shroud_oram::ring::{RingConfig, RingOram};
    /// use shroud_oram::{Key, MemoryStore, Op};
    /// let mut rng = rand::rng();
    /// let key = Key::generate(&mut rng);
    /// let mut oram = RingOram::new(RingConfig::new(4096, 16), key.clone(), &mut rng)?;
    /// let mut saved = oram.changed_pages()?;
    /// let mut store = MemoryStore::new();
    /// oram.run(&mut store, Op::Write(3, &[9; 16]), &mut rng)?;
    /// let changed = oram.changed_pages()?;
    /// assert!(changed.len() < saved.len());
    /// saved.extend(changed);
    /// let mut back = RingOram::from_pages(|name| saved.get(name).map(|p| &p[..]), key)?;
    /// assert_eq!(back.run(&mut store, Op::Read(3), &mut rng)?, [9u8; 16]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn changed_pages(&mut self) -> Result<Pages, Error> {
        if self.request().is_some() {
            return Err(Error::Busy);
        }
        let dirty = std::mem::take(&mut self.dirty);
        self.pages(dirty)
    }

    /// The pages `dirty` names, and `core` and `owed`.
    pub(super) fn pages(&self, dirty: Dirty) -> Result<Pages, Error> {
        let mut pages = Pages::new();
        let held = |a: &u32| -> (u32, ByteBuf) { (*a, ByteBuf::new()) };
        let core = Zeroizing::new(Core {
            version: VERSION,
            config: self.config,
            store_id: self.slots.store_id(),
            counter: self.counter,
            lineages: self.slots.lineages().to_vec(),
            accesses: self.accesses,
            evictions: self.evictions,
            stash: self.stash.iter().map(held).collect(),
            pending: Vec::new(),
        });
        pages.insert("core".into(), encode(&*core)?);
        let owed = Zeroizing::new(OwedPage {
            buckets: self
                .owed
                .iter()
                .map(|o| {
                    let blocks = o.blocks.iter();
                    let blocks = blocks.map(|(j, d)| (*j, ByteBuf::from(d.to_vec())));
                    (o.index, blocks.collect())
                })
                .collect(),
        });
        pages.insert(OWED.into(), encode(&*owed)?);
        let buckets = self.geom.bucket_count() as usize;
        let metas: Vec<usize> = if dirty.all {
            (0..buckets.div_ceil(META_PAGE)).collect()
        } else {
            dirty.meta.into_iter().collect()
        };
        for p in metas {
            let r = p * META_PAGE..((p + 1) * META_PAGE).min(buckets);
            let (held, unread, count, written) = self.meta.page_parts(r);
            let page = Zeroizing::new(MetaPage {
                held,
                unread: unread.to_vec(),
                count: count.to_vec(),
                written: written.to_vec(),
            });
            pages.insert(meta_name(p), encode(&*page)?);
        }
        let positions: Vec<usize> = if dirty.all {
            (0..self.pos.len().div_ceil(POS_PAGE)).collect()
        } else {
            dirty.pos.into_iter().collect()
        };
        for p in positions {
            let entries = &self.pos[p * POS_PAGE..((p + 1) * POS_PAGE).min(self.pos.len())];
            pages.insert(pos_name(p), positions_page(entries));
        }
        let cached: Vec<usize> = if dirty.all {
            (0..self.cache.len()).collect()
        } else {
            dirty.cache.into_iter().collect()
        };
        for b in cached {
            let page = Zeroizing::new(CachePage {
                blocks: self.cache[b].iter().map(held).collect(),
            });
            pages.insert(cache_name(b), encode(&*page)?);
        }
        let blocks: Vec<u32> = if dirty.all {
            self.local.keys().copied().collect()
        } else {
            dirty.data.into_iter().collect()
        };
        for a in blocks {
            if let Some(data) = self.local.get(&a) {
                pages.insert(block_name(a), Zeroizing::new(data.to_vec()));
            }
        }
        Ok(pages)
    }

    /// Rebuilds an engine from the latest bytes of every page, looked up by name, and the
    /// store's key, in a new lineage (keeping only the lineages that sealed a bucket still
    /// held). Refuses (never panics on) a page missing, of the wrong size or content, or a
    /// state that puts a block in two places.
    pub fn from_pages<'a>(
        page: impl Fn(&str) -> Option<&'a [u8]>,
        key: Key,
    ) -> Result<Self, Error> {
        Self::from_pages_in(page, key, Layout::default())
    }

    /// [`RingOram::from_pages`] for a tree of `layout` (a tree of a recursive store).
    pub(super) fn from_pages_in<'a>(
        page: impl Fn(&str) -> Option<&'a [u8]>,
        key: Key,
        layout: Layout,
    ) -> Result<Self, Error> {
        let bad = |m: String| Error::BadSnapshot(m);
        let need = |name: &str| page(name).ok_or_else(|| bad(format!("page {name} is missing")));
        let mut core: Zeroizing<Core> = decode(need("core")?)?;
        if core.version != VERSION && core.version != 1 {
            return Err(bad("unknown version of the core page".into()));
        }
        if core.version == VERSION && !core.pending.is_empty() {
            return Err(bad("owed buckets belong in the owed page".into()));
        }
        let c = core.config;
        c.validate()?;
        let buckets = c.buckets() as usize;
        let memory = (buckets as u64)
            .saturating_mul(c.slots() as u64 * 4 + 32)
            .saturating_add(if layout.leaves_in_blocks {
                0
            } else {
                c.capacity.saturating_mul(4)
            });
        if memory > MAX_RESTORE_BYTES {
            return Err(bad(
                "the config needs more client memory than allowed".into()
            ));
        }
        if core.counter == 0 {
            return Err(bad("nonce counter must be at least 1".into()));
        }
        let slots = c.slots();
        let (mut held, mut unread, mut count, mut written) = (
            Vec::with_capacity(buckets * slots),
            Vec::with_capacity(buckets * Meta::words(slots)),
            Vec::with_capacity(buckets),
            Vec::with_capacity(buckets),
        );
        let per_page = if core.version == 1 {
            META_PAGE_V1
        } else {
            META_PAGE
        };
        for p in 0..buckets.div_ceil(per_page) {
            let mut m: Zeroizing<MetaPage> = decode(need(&meta_name(p))?)?;
            let n = per_page.min(buckets - p * per_page);
            if m.held.len() != n * slots
                || m.unread.len() != n * Meta::words(slots)
                || m.count.len() != n
                || m.written.len() != n
            {
                return Err(bad(format!("page {} has the wrong size", meta_name(p))));
            }
            held.append(&mut m.held);
            unread.append(&mut m.unread);
            count.append(&mut m.count);
            written.append(&mut m.written);
        }
        // Keep only the lineages that sealed a bucket still held, renumbered.
        let n = core.lineages.len();
        let mut used = vec![false; n];
        for w in &written {
            if w.counter != 0 {
                *used
                    .get_mut(w.lineage as usize)
                    .ok_or_else(|| bad("a bucket names an unknown lineage".into()))? = true;
            }
            if w.counter >= core.counter {
                return Err(bad("a bucket was sealed past the nonce counter".into()));
            }
        }
        let mut renumber = vec![0u32; n];
        let mut kept = Vec::new();
        for (i, l) in core.lineages.iter().enumerate() {
            if used[i] {
                renumber[i] = kept.len() as u32;
                kept.push(*l);
            }
        }
        for w in written.iter_mut().filter(|w| w.counter != 0) {
            w.lineage = renumber[w.lineage as usize];
        }
        let mut o = RingOram::with_lineages(c, &key, core.store_id, &kept, layout)?;
        o.counter = core.counter;
        o.accesses = core.accesses;
        o.evictions = core.evictions;
        o.meta = Meta::from_parts(buckets, slots, c.z as usize, &held, unread, count, written)
            .ok_or_else(|| bad("bucket metadata does not fit the config".into()))?;
        drop(held);
        let leaves = o.geom.leaves();
        let len = o.pos.len();
        for p in 0..len.div_ceil(POS_PAGE) {
            let name = pos_name(p);
            let bytes = need(&name)?;
            let entries = &mut o.pos[p * POS_PAGE..((p + 1) * POS_PAGE).min(len)];
            read_positions(&name, bytes, entries)?;
            if entries
                .iter()
                .any(|&e| e != u32::MAX && u64::from(e) >= leaves)
            {
                return Err(bad(format!("page {name} names a leaf past the tree")));
            }
        }
        let version = core.version;
        let hold = |o: &mut RingOram, a: u32, data: ByteBuf| -> Result<(), Error> {
            let data = if version == 1 {
                Zeroizing::new(data.into_vec())
            } else if data.is_empty() && u64::from(a) < c.capacity {
                Zeroizing::new(need(&block_name(a))?.to_vec())
            } else {
                return Err(bad("a held block names no block page".into()));
            };
            if data.len() != c.block_size as usize || u64::from(a) >= c.capacity {
                return Err(bad("a held block does not fit the config".into()));
            }
            if o.local.insert(a, data).is_some() {
                return Err(bad("a block held twice".into()));
            }
            Ok(())
        };
        for (a, data) in std::mem::take(&mut core.stash) {
            o.stash.insert(a);
            hold(&mut o, a, data)?;
        }
        for b in 0..o.cache.len() {
            let mut page: Zeroizing<CachePage> = decode(need(&cache_name(b))?)?;
            if page.blocks.len() > c.z as usize {
                return Err(bad(format!("page {} holds too many blocks", cache_name(b))));
            }
            for (a, data) in std::mem::take(&mut page.blocks) {
                o.cache[b].push(a);
                hold(&mut o, a, data)?;
            }
        }
        // Version 1 saved owed buckets sealed: open their real slots to owe them as today.
        for (index, bytes) in &core.pending {
            if *index >= buckets as u64 || bytes.len() != c.bucket_len() {
                return Err(bad("an owed bucket does not fit the config".into()));
            }
            let blocks = o.open_owed(*index, bytes)?;
            o.owe_again(*index, blocks)?;
        }
        if core.version == VERSION {
            let mut owed: Zeroizing<OwedPage> = decode(need(OWED)?)?;
            for (index, blocks) in std::mem::take(&mut owed.buckets) {
                o.owe_again(index, blocks)?;
            }
        }
        o.check_places()?;
        o.max_stash = o.stash.len();
        // The state is what the caller holds, so nothing is to be saved yet; unless a
        // lineage was dropped, which renumbered every bucket's, or the pages were of
        // version 1 (other metadata pages, owed buckets in `core`): then all of it.
        o.dirty = if kept.len() == n && core.version == VERSION {
            Dirty::default()
        } else {
            Dirty::everything()
        };
        Ok(o)
    }

    /// Owes bucket `index` again (sealed into the next request from its saved real slots
    /// and the nonces its metadata recorded), after checking they fit: a fetched bucket,
    /// written, whose blocks are exactly the slots given, each of a block's length.
    fn owe_again(&mut self, index: u64, blocks: Vec<(u16, ByteBuf)>) -> Result<(), Error> {
        let bad = || Error::BadSnapshot("an owed bucket does not fit its metadata".into());
        let first_fetched = (1u64 << self.geom.cached_levels) - 1;
        if index < first_fetched || index >= self.geom.bucket_count() {
            return Err(bad());
        }
        let b = index as usize;
        let first = self.meta.nonce(b, 0).ok_or_else(bad)?;
        let real: Vec<u16> = self.meta.blocks(b).map(|(j, _)| j).collect();
        let given: Vec<u16> = blocks.iter().map(|(j, _)| *j).collect();
        let block = self.config.block_size as usize;
        if given != real || blocks.iter().any(|(_, d)| d.len() != block) {
            return Err(bad());
        }
        let blocks: Vec<(u16, Zeroizing<Vec<u8>>)> = blocks
            .into_iter()
            .map(|(j, d)| (j, Zeroizing::new(d.into_vec())))
            .collect();
        self.owed.push(super::engine::Owed {
            index,
            first,
            blocks,
        });
        Ok(())
    }

    /// The real slots of sealed owed bucket `index` (a version-1 `core` page), opened with
    /// the nonces its metadata recorded.
    fn open_owed(&self, index: u64, bytes: &[u8]) -> Result<Vec<(u16, ByteBuf)>, Error> {
        let bad = || Error::BadSnapshot("an owed bucket does not open".into());
        let b = usize::try_from(index).map_err(|_| bad())?;
        let (slot_len, block) = (self.config.slot_len(), self.config.block_size as usize);
        let mut out = Vec::new();
        for (j, _) in self.meta.blocks(b) {
            let at_byte = usize::from(j) * slot_len;
            let sealed = bytes.get(at_byte..at_byte + slot_len).ok_or_else(bad)?;
            let at = self.meta.nonce(b, j).ok_or_else(bad)?;
            let mut data = Zeroizing::new(sealed.to_vec());
            let id = self.bucket_id(index);
            self.slots.open(at, id, j, &mut data).map_err(|_| bad())?;
            out.push((j, ByteBuf::from(data[..block].to_vec())));
        }
        Ok(out)
    }

    /// Every mapped block is in exactly one place (the stash, a cached bucket, or an unread
    /// slot of a bucket on its path).
    pub(super) fn check_places(&self) -> Result<(), Error> {
        if self.leaves_in_blocks {
            return self.check_places_in_blocks();
        }
        let bad = |m: &str| Error::BadSnapshot(m.to_string());
        let mut seen = vec![false; self.pos.len()];
        let mut place = |a: u32, b: Option<usize>| -> Result<(), Error> {
            let leaf = *self
                .pos
                .get(a as usize)
                .ok_or_else(|| bad("unknown block"))?;
            if leaf == u32::MAX {
                return Err(bad("a block held has no position"));
            }
            if let Some(b) = b {
                let depth = (b + 1).ilog2() as usize;
                if self.geom.bucket_index(depth, leaf) != b as u64 {
                    return Err(bad("a block off its path"));
                }
            }
            if std::mem::replace(&mut seen[a as usize], true) {
                return Err(bad("a block in two places"));
            }
            Ok(())
        };
        for &a in &self.stash {
            place(a, None)?;
        }
        for (b, c) in self.cache.iter().enumerate() {
            for &a in c {
                place(a, Some(b))?;
            }
        }
        for b in 0..self.geom.bucket_count() as usize {
            for (_, a) in self.meta.unread_blocks(b) {
                place(a, Some(b))?;
            }
        }
        let mapped = self.pos.iter().filter(|&&l| l != u32::MAX).count();
        if seen.iter().filter(|&&s| s).count() != mapped {
            return Err(bad("blocks held and positions disagree"));
        }
        Ok(())
    }
    /// [`RingOram::check_places`] for a tree that keeps its leaves in its blocks: every
    /// block in at most one place, and each one the client holds on its leaf's path (the
    /// leaves of blocks at storage are sealed with them).
    fn check_places_in_blocks(&self) -> Result<(), Error> {
        let bad = |m: &str| Error::BadSnapshot(m.to_string());
        let leaves = self.geom.leaves();
        let mut seen = std::collections::HashSet::new();
        let mut place = |a: u32| -> Result<(), Error> {
            if u64::from(a) >= self.config.capacity || !seen.insert(a) {
                return Err(bad("a block in two places, or past the store"));
            }
            Ok(())
        };
        for &a in &self.stash {
            place(a)?;
        }
        for (b, c) in self.cache.iter().enumerate() {
            for &a in c {
                place(a)?;
                let leaf = self.leaf_of(a);
                let depth = (b + 1).ilog2() as usize;
                if u64::from(leaf) >= leaves || self.geom.bucket_index(depth, leaf) != b as u64 {
                    return Err(bad("a block off its path"));
                }
            }
        }
        if self
            .stash
            .iter()
            .any(|&a| u64::from(self.leaf_of(a)) >= leaves)
        {
            return Err(bad("a block names a leaf past the tree"));
        }
        for b in 0..self.geom.bucket_count() as usize {
            for (_, a) in self.meta.unread_blocks(b) {
                place(a)?;
            }
        }
        Ok(())
    }
}

//! The client-side state as pages, so that a caller saves what a batch changed instead of the
//! whole state (issue 14, "The client's own disk").
//!
//! A batch changes little of the state: the nonce counter, the roots and stashes, the cached
//! buckets on its paths, and one position-map entry per access. [`Oram::snapshot`] writes
//! all of it (about 1 MiB with 8 cached levels); [`Oram::changed_pages`] writes only the pages
//! a batch touched since the last call:
//! - `core`: version, config, store id, nonce counter, and per tree its root and stash
//!   (small; in every call);
//! - `cache/T/I/R`: region `R` of cached bucket `I` (heap order) of tree `T`, as plaintext:
//!   region 0 is the bucket's header (its child digests), region `s + 1` its slot `s`, so
//!   that an access whose eviction leaves a slot as it was does not rewrite it;
//! - `top/P`: entries `P * 256 ..` of the top position map (1 KiB a page).
//!
//! A caller keeps the latest bytes of every page (the first call after [`Oram::new`],
//! [`Oram::restore`] or [`Oram::format`](crate::Oram) returns them all) and rebuilds the
//! engine with [`Oram::from_pages`]. Like a snapshot, pages are plaintext: the caller
//! encrypts them at rest, and must store a batch's pages together (atomically), since pages
//! of different times do not describe one state.
//!
//! The decoder treats its input as untrusted, as [`Oram::restore`] does: sizes are checked
//! against the config before anything is allocated, and every page must be present with
//! its exact length.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use bincode::Options;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::bucket::Layout;
use crate::engine::Oram;
use crate::geometry::TreeGeometry;
use crate::integrity::Digest;
use crate::seal::Key;
use crate::snapshot::{StashEntry, load_stash, options, rebuild, save_stash};
use crate::{Config, Error};

/// Position-map entries per `top/P` page (1 KiB).
pub const TOP_PAGE: usize = 256;

/// The format of the `core` page.
const VERSION: u32 = 1;

/// Pages by name, as [`Oram::changed_pages`] returns them and [`Oram::from_pages`] takes them.
pub type Pages = BTreeMap<String, Zeroizing<Vec<u8>>>;

/// A page of position-map entries, little-endian.
pub(crate) fn positions_page(entries: &[u32]) -> Zeroizing<Vec<u8>> {
    Zeroizing::new(entries.iter().flat_map(|e| e.to_le_bytes()).collect())
}

/// Reads page `name` of position-map entries into `entries`; its length must match.
pub(crate) fn read_positions(name: &str, bytes: &[u8], entries: &mut [u32]) -> Result<(), Error> {
    if bytes.len() != entries.len() * 4 {
        return Err(Error::BadSnapshot(format!(
            "page {name} has the wrong length"
        )));
    }
    for (e, b) in entries.iter_mut().zip(bytes.chunks_exact(4)) {
        let mut le = [0u8; 4];
        le.copy_from_slice(b);
        *e = u32::from_le_bytes(le);
    }
    Ok(())
}

/// What changed since pages were last taken.
pub(crate) struct Dirty {
    /// Everything: the engine was just made, restored or formatted.
    all: bool,
    /// `top/P` pages.
    top: BTreeSet<usize>,
    /// Per tree, the cached buckets' (heap index, region).
    cache: Vec<BTreeSet<(usize, usize)>>,
}

impl Dirty {
    /// Nothing changed, for `trees` trees.
    pub fn clean(trees: usize) -> Self {
        Dirty {
            all: false,
            top: BTreeSet::new(),
            cache: vec![BTreeSet::new(); trees],
        }
    }

    /// Top position-map entry `a` changed.
    pub fn top(&mut self, a: usize) {
        self.top.insert(a / TOP_PAGE);
    }

    /// Region `region` of cached bucket `index` of tree `t` changed.
    pub fn cache(&mut self, t: usize, index: usize, region: usize) {
        if let Some(set) = self.cache.get_mut(t) {
            set.insert((index, region));
        }
    }

    /// Everything changed.
    pub fn everything(&mut self) {
        self.all = true;
    }
}

#[derive(Serialize, Deserialize)]
struct Core {
    version: u32,
    config: Config,
    store_id: [u8; 16],
    counter: u64,
    trees: Vec<CoreTree>,
}

#[derive(Serialize, Deserialize)]
struct CoreTree {
    root: Digest,
    stash: Vec<StashEntry>,
}

impl zeroize::Zeroize for Core {
    fn zeroize(&mut self) {
        for t in &mut self.trees {
            t.stash.zeroize();
        }
    }
}

fn cache_name(t: usize, index: usize, region: usize) -> String {
    format!("cache/{t}/{index}/{region}")
}

/// Regions of a cached bucket: its header, then one per slot.
pub(crate) fn regions(geom: &TreeGeometry) -> usize {
    geom.slots as usize + 1
}

/// The bytes of region `r` within a cached bucket's `ciphertext_len` bytes: the header
/// (with the bytes before the plaintext), each slot, the last with the bytes after it.
pub(crate) fn region(geom: &TreeGeometry, r: usize) -> Range<usize> {
    let layout = Layout {
        block: geom.block_size as usize,
    };
    let slot = |s: usize| layout.slot_offset(s);
    let start = if r == 0 { 0 } else { slot(r - 1) };
    let end = if r == regions(geom) - 1 {
        geom.ciphertext_len()
    } else {
        slot(r)
    };
    start..end
}

fn top_name(page: usize) -> String {
    format!("top/{page}")
}

impl Oram {
    /// The pages changed since the last call (all of them on the first call after
    /// [`Oram::new`], [`Oram::restore`] or a format), and forgets those changes. Only between
    /// batches: fails with [`Error::Busy`] while a batch is fetching.
    ///
    /// ```
    /// use shroud_oram::{Config, Key, MemoryStore, Op, Oram};
    /// let mut rng = rand::rng();
    /// let key = Key::generate(&mut rng);
    /// let mut config = Config::new(1 << 10, 16);
    /// config.cached_levels = 3;
    /// let mut oram = Oram::new(config, key.clone(), &mut rng)?;
    /// let mut saved = oram.changed_pages()?;
    /// let mut store = MemoryStore::new();
    /// oram.run(&mut store, &[Op::Write(3, &[9; 16])], &mut rng)?;
    /// let changed = oram.changed_pages()?;
    /// assert!(changed.len() < saved.len());
    /// saved.extend(changed);
    /// let mut back = Oram::from_pages(|name| saved.get(name).map(|p| &p[..]), key)?;
    /// back.run(&mut store, &[Op::Read(3)], &mut rng)?;
    /// assert_eq!(back.result(0), Some(&[9u8; 16][..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn changed_pages(&mut self) -> Result<Pages, Error> {
        if self.in_flight() {
            return Err(Error::Busy);
        }
        let dirty = std::mem::replace(&mut self.dirty, Dirty::clean(self.trees.len()));
        let mut pages = Pages::new();
        let core = Zeroizing::new(Core {
            version: VERSION,
            config: self.config,
            store_id: self.store_id,
            counter: self.counter,
            trees: self
                .trees
                .iter()
                .map(|t| CoreTree {
                    root: t.root,
                    stash: save_stash(t),
                })
                .collect(),
        });
        let bytes = options()
            .serialize(&*core)
            .map_err(|e| Error::BadSnapshot(e.to_string()))?;
        pages.insert("core".into(), Zeroizing::new(bytes));
        for (t, tree) in self.trees.iter().enumerate() {
            let geom = tree.round.geom;
            let clen = geom.ciphertext_len();
            let changed: Vec<(usize, usize)> = if dirty.all {
                (0..geom.cached_buckets())
                    .flat_map(|i| (0..regions(&geom)).map(move |r| (i, r)))
                    .collect()
            } else {
                dirty.cache[t].iter().copied().collect()
            };
            for (i, r) in changed {
                let bytes = &tree.cache[i * clen..(i + 1) * clen][region(&geom, r)];
                pages.insert(cache_name(t, i, r), Zeroizing::new(bytes.to_vec()));
            }
        }
        let top_pages: Vec<usize> = if dirty.all {
            (0..self.top.len().div_ceil(TOP_PAGE)).collect()
        } else {
            dirty.top.into_iter().collect()
        };
        for p in top_pages {
            let entries = &self.top[p * TOP_PAGE..((p + 1) * TOP_PAGE).min(self.top.len())];
            pages.insert(top_name(p), positions_page(entries));
        }
        Ok(pages)
    }

    /// Rebuilds an engine from the latest bytes of every page ([`Oram::changed_pages`]),
    /// looked up by name, and the store's key, in a new lineage (as [`Oram::restore`]).
    /// Fails if a page is missing, has the wrong length or does not decode.
    pub fn from_pages<'a>(
        page: impl Fn(&str) -> Option<&'a [u8]>,
        key: Key,
    ) -> Result<Self, Error> {
        let bad = |m: String| Error::BadSnapshot(m);
        let need = |name: &str| page(name).ok_or_else(|| bad(format!("page {name} is missing")));
        let bytes = need("core")?;
        let core: Core = options()
            .with_limit(bytes.len() as u64)
            .deserialize(bytes)
            .map_err(|e| bad(e.to_string()))?;
        let core = Zeroizing::new(core);
        if core.version != VERSION {
            return Err(bad("unknown version of the core page".into()));
        }
        let mut oram = rebuild(&core.config, key, core.store_id, core.counter)?;
        if core.trees.len() != oram.trees.len() {
            return Err(bad("tree count does not match the config".into()));
        }
        for (t, (tree, ct)) in oram.trees.iter_mut().zip(core.trees.iter()).enumerate() {
            tree.root = ct.root;
            load_stash(tree, &ct.stash)?;
            let geom = tree.round.geom;
            let clen = geom.ciphertext_len();
            for i in 0..geom.cached_buckets() {
                for r in 0..regions(&geom) {
                    let name = cache_name(t, i, r);
                    let bytes = need(&name)?;
                    let range = region(&geom, r);
                    if bytes.len() != range.len() {
                        return Err(bad(format!("page {name} has the wrong length")));
                    }
                    tree.cache[i * clen..(i + 1) * clen][range].copy_from_slice(bytes);
                }
            }
        }
        let len = oram.top.len();
        for p in 0..len.div_ceil(TOP_PAGE) {
            let name = top_name(p);
            let bytes = need(&name)?;
            let entries = &mut oram.top[p * TOP_PAGE..((p + 1) * TOP_PAGE).min(len)];
            read_positions(&name, bytes, entries)?;
        }
        // The state is exactly what the caller holds: nothing to save yet.
        oram.dirty.all = false;
        Ok(oram)
    }
}

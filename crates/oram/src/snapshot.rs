//! Snapshot and restore of the whole client-side state.
//!
//! A snapshot holds the config, store id, nonce counter, top position map, and per tree the
//! root digest, the tree-top cache and the stash. It does not hold the key, which the caller
//! keeps apart (and which `restore` takes back). It is plaintext: the caller must encrypt it
//! at rest, and it is wiped from memory when dropped.
//!
//! Restoring starts a new lineage, with its own subkey (see [`crate::seal`]); everything else is exactly as
//! it was, so a restored engine reads back every block and verifies every bucket.
//!
//! The decoder treats its input as untrusted: bincode 1.3 with a size limit equal to the
//! input length, fixed-width integers, trailing bytes rejected, and every length checked
//! against the config before use.

use bincode::Options;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::engine::{Oram, Tree};
use crate::integrity::Digest;
use crate::seal::Key;
use crate::{Config, Error};

/// 2: buckets name their lineage (`crate::bucket`); version 1 stores do not open.
const VERSION: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    config: Config,
    store_id: [u8; 16],
    counter: u64,
    top: Vec<u32>,
    trees: Vec<TreeSnapshot>,
}

#[derive(Serialize, Deserialize)]
struct TreeSnapshot {
    root: Digest,
    #[serde(with = "serde_bytes")]
    cache: Vec<u8>,
    stash: Vec<StashEntry>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct StashEntry {
    addr: u64,
    leaf: u32,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

pub(crate) fn options() -> impl Options {
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .reject_trailing_bytes()
}

/// A snapshot's bytes, wiped when dropped.
pub(crate) fn encode<T: Serialize>(snap: &T) -> Result<Zeroizing<Vec<u8>>, Error> {
    options()
        .serialize(snap)
        .map(Zeroizing::new)
        .map_err(|e| Error::BadSnapshot(e.to_string()))
}

/// Decodes untrusted snapshot bytes, no more than their own length allocated.
pub(crate) fn decode<T: serde::de::DeserializeOwned + zeroize::Zeroize>(
    bytes: &[u8],
) -> Result<Zeroizing<T>, Error> {
    options()
        .with_limit(bytes.len() as u64)
        .deserialize(bytes)
        .map(Zeroizing::new)
        .map_err(|e| Error::BadSnapshot(e.to_string()))
}

impl Oram {
    /// Serializes the full client-side state. Only between batches: fails with
    /// [`Error::Busy`] while a batch is fetching.
    ///
    /// ```
    /// use shroud_oram::{Config, Key, MemoryStore, Op, Oram};
    /// let mut rng = rand::rng();
    /// let key = Key::generate(&mut rng);
    /// let mut oram = Oram::new(Config::new(64, 16), key.clone(), &mut rng)?;
    /// let mut store = MemoryStore::new();
    /// oram.run(&mut store, &[Op::Write(3, &[9; 16])], &mut rng)?;
    /// let saved = oram.snapshot()?;
    /// let mut back = Oram::restore(&saved, key)?;
    /// back.run(&mut store, &[Op::Read(3)], &mut rng)?;
    /// assert_eq!(back.result(0), Some(&[9u8; 16][..]));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshot(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        if self.in_flight() {
            return Err(Error::Busy);
        }
        let trees = self
            .trees
            .iter()
            .map(|t| TreeSnapshot {
                root: t.root,
                cache: t.cache.clone(),
                stash: save_stash(t),
            })
            .collect();
        let snap = Zeroizing::new(Snapshot {
            version: VERSION,
            config: self.config,
            store_id: self.store_id,
            counter: self.counter,
            top: self.top.clone(),
            trees,
        });
        encode(&*snap)
    }

    /// Rebuilds an engine from [`Oram::snapshot`] bytes and the store's key, in a new lineage
    /// (its id drawn from the operating system, so restoring one snapshot twice, even in a
    /// cloned process or VM, never seals two buckets under one key and nonce).
    pub fn restore(bytes: &[u8], key: Key) -> Result<Self, Error> {
        let bad = |m: &str| Error::BadSnapshot(m.to_string());
        let snap: Zeroizing<Snapshot> = decode(bytes)?;
        if snap.version != VERSION {
            return Err(bad("unknown version"));
        }
        let mut oram = rebuild(&snap.config, key, snap.store_id, snap.counter)?;
        if snap.top.len() != oram.top.len() || snap.trees.len() != oram.trees.len() {
            return Err(bad("position map or tree count does not match the config"));
        }
        oram.top.copy_from_slice(&snap.top);
        for (tree, ts) in oram.trees.iter_mut().zip(snap.trees.iter()) {
            if ts.cache.len() != tree.cache.len() {
                return Err(bad("cache size does not match the config"));
            }
            tree.root = ts.root;
            tree.cache.copy_from_slice(&ts.cache);
            load_stash(tree, &ts.stash)?;
        }
        Ok(oram)
    }
}

/// An engine for restored state, once the sizes its config implies are checked: hostile bytes
/// must not make us reserve gigabytes (found by the `bucket` fuzz target).
pub(crate) fn rebuild(
    config: &Config,
    key: Key,
    store_id: [u8; 16],
    counter: u64,
) -> Result<Oram, Error> {
    if counter == 0 {
        return Err(Error::BadSnapshot(
            "nonce counter must be at least 1".into(),
        ));
    }
    config.validate()?;
    if preallocation(config) > MAX_RESTORE_BYTES {
        return Err(Error::BadSnapshot(
            "the snapshot's config needs more client memory than allowed".into(),
        ));
    }
    Oram::with_state(*config, key, store_id, counter)
}

/// Puts saved stash entries back, each checked against its tree.
pub(crate) fn load_stash(tree: &mut Tree, entries: &[StashEntry]) -> Result<(), Error> {
    let geom = tree.round.geom;
    for e in entries {
        if e.data.len() != geom.block_size as usize
            || u64::from(e.leaf) >= geom.leaves()
            || e.addr >= geom.blocks
        {
            return Err(Error::BadSnapshot(
                "stash entry does not fit its tree".into(),
            ));
        }
        if !tree.stash.push(e.addr, e.leaf, &e.data) {
            return Err(Error::BadSnapshot("stash exceeds its limit".into()));
        }
    }
    Ok(())
}

/// A tree's stash as saved entries.
pub(crate) fn save_stash(tree: &Tree) -> Vec<StashEntry> {
    (0..tree.stash.len())
        .map(|i| StashEntry {
            addr: tree.stash.addr(i),
            leaf: tree.stash.leaf(i),
            data: tree.stash.data(i).to_vec(),
        })
        .collect()
}

/// The most client memory a restored snapshot may make the engine preallocate (1 GiB).
pub const MAX_RESTORE_BYTES: u64 = 1 << 30;

/// The bytes the engine preallocates for `config`: per tree its stash, its cached levels
/// and the buffers of a full batch (fetched and written back), plus the top position map.
fn preallocation(config: &Config) -> u64 {
    let trees = config.trees();
    let per_tree: u64 = trees
        .iter()
        .map(|g| {
            let bucket = g.ciphertext_len() as u64;
            let stash = u64::from(config.stash_limit) * u64::from(g.block_size);
            let cache = g.cached_buckets() as u64 * bucket;
            let batch = 2 * u64::from(config.max_batch) * g.fetched_levels() as u64 * bucket;
            stash.saturating_add(cache).saturating_add(batch)
        })
        .fold(0u64, u64::saturating_add);
    let top = trees.last().map_or(0, |g| g.blocks) * 4;
    per_tree.saturating_add(top)
}

impl zeroize::Zeroize for Snapshot {
    fn zeroize(&mut self) {
        self.top.zeroize();
        for t in &mut self.trees {
            t.cache.zeroize();
            t.stash.zeroize();
        }
    }
}

impl zeroize::Zeroize for StashEntry {
    fn zeroize(&mut self) {
        self.data.zeroize();
    }
}

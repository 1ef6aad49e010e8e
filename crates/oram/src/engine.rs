//! The client-side state of one store, and its construction.

use std::sync::Arc;

use rand::CryptoRng;
use zeroize::Zeroize;

use crate::access::Batch;
use crate::geometry::TreeGeometry;
use crate::helper::Helper;
use crate::integrity::{Digest, EMPTY};
use crate::pages::Dirty;
use crate::round::Round;
use crate::seal::{Key, Sealer};
use crate::stash::Stash;
use crate::{Config, Error};

/// One tree's committed state and its round scratch.
pub(crate) struct Tree {
    pub root: Digest,
    /// The top `T` levels, as decrypted buckets in heap order.
    pub cache: Vec<u8>,
    pub stash: Stash,
    pub round: Round,
}

impl Tree {
    pub fn new(geom: TreeGeometry, id: u8, config: &Config) -> Self {
        let stash_limit = config.stash_limit as usize;
        Tree {
            root: EMPTY,
            cache: vec![0; geom.cached_buckets() * geom.ciphertext_len()],
            stash: Stash::new(geom.block_size as usize, stash_limit),
            round: Round::new(geom, id, config.max_batch as usize, stash_limit),
        }
    }
}

/// The cached levels are decrypted buckets: wiped when dropped (the stash wipes itself).
impl Drop for Tree {
    fn drop(&mut self) {
        self.cache.zeroize();
    }
}

/// A Path ORAM client: the keys, stash, position map, root digests and counters of one store.
///
/// See the [crate docs](crate) for the protocol and an example.
///
/// # Security
/// Holds every secret of the store: the key, the stash, the position map, the cached levels
/// and the round's decrypted buckets, all wiped when dropped. Everything it emits (bucket
/// ids, sealed bytes, their sizes and counts) depends only on the geometry, the number of
/// accesses per batch, and uniformly random leaves.
pub struct Oram {
    pub(crate) config: Config,
    pub(crate) store_id: [u8; 16],
    pub(crate) sealer: Arc<Sealer>,
    /// The second core, if the caller asked for it ([`Oram::set_helper`]).
    pub(crate) helper: Option<Helper>,
    /// The next nonce counter value; see [`crate::seal`].
    pub(crate) counter: u64,
    pub(crate) trees: Vec<Tree>,
    /// Positions of the last tree's blocks (all blocks, in flat mode).
    pub(crate) top: Vec<u32>,
    pub(crate) batch: Batch,
    pub(crate) max_stash: usize,
    /// What changed since [`Oram::changed_pages`] was last called.
    pub(crate) dirty: Dirty,
}

/// The position map is wiped when dropped (the other secrets wipe themselves).
impl Drop for Oram {
    fn drop(&mut self) {
        self.top.zeroize();
    }
}

impl Oram {
    /// A new, empty store. O(1) in N with the recursive position map: nothing is written and
    /// every bucket starts out empty.
    pub fn new<R: CryptoRng + ?Sized>(
        config: Config,
        key: Key,
        rng: &mut R,
    ) -> Result<Self, Error> {
        let mut store_id = [0u8; 16];
        rng.fill_bytes(&mut store_id);
        Self::with_state(config, key, store_id, 1)
    }

    /// An engine over existing state, in a new lineage (drawn from the operating system,
    /// not from a caller's RNG: see [`crate::seal`]).
    pub(crate) fn with_state(
        config: Config,
        key: Key,
        store_id: [u8; 16],
        counter: u64,
    ) -> Result<Self, Error> {
        config.validate()?;
        let sealer = Arc::new(Sealer::new(&key, store_id)?);
        let geoms = config.trees();
        let trees: Vec<Tree> = geoms
            .iter()
            .enumerate()
            .map(|(i, g)| Tree::new(*g, i as u8, &config))
            .collect();
        let top_len = geoms.last().map_or(0, |g| g.blocks) as usize;
        let mut dirty = Dirty::clean(trees.len());
        dirty.everything();
        Ok(Oram {
            dirty,
            sealer,
            helper: None,
            store_id,
            counter,
            top: vec![0; top_len],
            batch: Batch::new(&config, trees.len()),
            trees,
            config,
            max_stash: 0,
        })
    }

    /// Uses a second core (`on`) or not: a helper thread authenticates and decrypts each
    /// fetched bucket as soon as the store has supplied it, while the store supplies the
    /// next (the private `helper` module). Off by default; not part of the snapshot.
    ///
    /// Fails only if the thread cannot be started.
    ///
    /// # Security
    /// Changes nothing that leaves the client and nothing the engine accepts: the helper
    /// checks each bucket's AEAD tag, and every bucket's digest is still compared with its
    /// parent's record, top down, on the caller's thread before any plaintext is used.
    pub fn set_helper(&mut self, on: bool) -> std::io::Result<()> {
        if let (Some(h), crate::access::Phase::Fetching(t)) =
            (self.helper.as_mut(), self.batch.phase)
        {
            self.trees[t].round.settle(h);
        }
        self.helper = match (on, self.helper.take()) {
            (true, Some(h)) => Some(h),
            (true, None) => {
                let (groups, size) = self.trees.iter().fold((1, 1), |(g, s), t| {
                    let (tg, ts) = t.round.groups();
                    (g.max(tg), s.max(ts))
                });
                Some(Helper::spawn(groups, size)?)
            }
            (false, _) => None,
        };
        Ok(())
    }

    /// True if [`Oram::set_helper`] turned the second core on.
    pub fn helper(&self) -> bool {
        self.helper.is_some()
    }

    /// Buckets the helper thread has opened since it was turned on. Buckets go to it in
    /// groups of about 16 KiB, so paths of small buckets stay on the caller's thread.
    pub fn helper_opened(&self) -> u64 {
        self.helper.as_ref().map_or(0, Helper::opened)
    }

    /// The parameters the store was created with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This run's lineage id: drawn from the operating system at `new` and at every
    /// `restore`, it names the subkey every bucket sealed now is sealed under.
    pub fn lineage(&self) -> [u8; 32] {
        self.sealer.lineage()
    }

    /// The random id bound into every bucket's associated data.
    pub fn store_id(&self) -> [u8; 16] {
        self.store_id
    }

    /// Every tree's geometry: the data tree, then the position-map trees.
    pub fn trees(&self) -> impl Iterator<Item = TreeGeometry> + '_ {
        self.trees.iter().map(|t| t.round.geom)
    }

    /// Blocks in the data tree's stash now.
    pub fn stash_len(&self) -> usize {
        self.trees[0].stash.len()
    }

    /// Blocks in each tree's stash now, data tree first.
    pub fn stash_lens(&self) -> impl Iterator<Item = usize> + '_ {
        self.trees.iter().map(|t| t.stash.len())
    }

    /// The largest stash (of any tree) seen after a batch since creation or restore.
    pub fn max_stash(&self) -> usize {
        self.max_stash
    }

    /// Bucket writes so far: the nonce counter.
    pub fn writes(&self) -> u64 {
        self.counter - 1
    }

    /// Bytes of client memory held by the engine: position map, stashes, caches and round
    /// buffers (all allocated up front).
    pub fn memory(&self) -> usize {
        let trees: usize = self
            .trees
            .iter()
            .map(|t| t.cache.capacity() + t.stash.memory() + t.round.memory())
            .sum();
        trees + self.top.capacity() * 4 + self.batch.memory() + std::mem::size_of::<Self>()
    }
}

//! Snapshot and restore of a Ring ORAM client's whole state, as for Path ORAM
//! ([`crate::Oram::snapshot`]): everything but the key, in plaintext for the caller to
//! encrypt at rest, wiped from memory when dropped.
//!
//! A snapshot holds the rewritten buckets still owed to storage: they must reach storage
//! before the next access's reads, so a caller that persists the snapshot before sending
//! an access's request (the write-ahead rule) can always send them again. Restoring starts
//! a new lineage; the lineages that sealed buckets still held are kept (and the others
//! dropped), so every slot still opens.
//!
//! The decoder treats its input as untrusted: bincode 1.3 with a size limit equal to the
//! input length, fixed-width integers, trailing bytes rejected, every length and index
//! checked against the config before use, and the memory the config implies bounded before
//! anything is allocated.

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::RingConfig;
use super::engine::RingOram;
use super::meta::Meta;
use super::slot::NonceAt;
use crate::snapshot::{MAX_RESTORE_BYTES, decode, encode};
use crate::{BucketId, Error, Key};

/// The format of [`RingOram::snapshot`].
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    config: RingConfig,
    store_id: [u8; 16],
    counter: u64,
    lineages: Vec<[u8; 32]>,
    held: Vec<u32>,
    unread: Vec<u64>,
    count: Vec<u8>,
    written: Vec<NonceAt>,
    pos: Vec<u32>,
    /// The blocks the client holds (stash and cached levels): address and data.
    blocks: Vec<(u32, serde_bytes::ByteBuf)>,
    stash: Vec<u32>,
    cache: Vec<Vec<u32>>,
    accesses: u64,
    evictions: u64,
    pending: Vec<(u64, serde_bytes::ByteBuf)>,
}

impl Zeroize for Snapshot {
    fn zeroize(&mut self) {
        self.held.zeroize();
        self.pos.zeroize();
        self.stash.zeroize();
        for (a, data) in &mut self.blocks {
            a.zeroize();
            data.as_mut_slice().zeroize();
        }
        for c in &mut self.cache {
            c.zeroize();
        }
    }
}

impl RingOram {
    /// Serializes the whole client-side state. Only between accesses: fails with
    /// [`Error::Busy`] while one is in flight.
    ///
    /// ```
    /// use shroud_oram::ring::{RingConfig, RingOram};
    /// use shroud_oram::{Key, MemoryStore, Op};
    /// let mut rng = rand::rng();
    /// let key = Key::generate(&mut rng);
    /// let mut oram = RingOram::new(RingConfig::new(64, 16), key.clone(), &mut rng)?;
    /// let mut store = MemoryStore::new();
    /// oram.run(&mut store, Op::Write(3, &[9; 16]), &mut rng)?;
    /// let saved = oram.snapshot()?;
    /// let mut back = RingOram::restore(&saved, key)?;
    /// assert_eq!(back.run(&mut store, Op::Read(3), &mut rng)?, [9u8; 16]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn snapshot(&self) -> Result<Zeroizing<Vec<u8>>, Error> {
        if self.request().is_some() {
            return Err(Error::Busy);
        }
        let (held, unread, count, written) = self.meta.parts();
        let mut blocks: Vec<(u32, serde_bytes::ByteBuf)> = self
            .local
            .iter()
            .map(|(a, d)| (*a, serde_bytes::ByteBuf::from(d.to_vec())))
            .collect();
        blocks.sort_unstable_by_key(|(a, _)| *a);
        let snap = Zeroizing::new(Snapshot {
            version: VERSION,
            config: self.config,
            store_id: self.slots.store_id(),
            counter: self.counter,
            lineages: self.slots.lineages().to_vec(),
            held: held.to_vec(),
            unread: unread.to_vec(),
            count: count.to_vec(),
            written: written.to_vec(),
            pos: self.pos.clone(),
            blocks,
            stash: self.stash.iter().copied().collect(),
            cache: self.cache.clone(),
            accesses: self.accesses,
            evictions: self.evictions,
            pending: self
                .pending
                .iter()
                .map(|(id, b)| (id.index, serde_bytes::ByteBuf::from(b.clone())))
                .collect(),
        });
        encode(&*snap)
    }

    /// Rebuilds an engine from [`RingOram::snapshot`] bytes and the store's key, in a new
    /// lineage. Refuses (never panics on) bytes that do not decode, do not fit their config,
    /// or put a block in two places.
    pub fn restore(bytes: &[u8], key: Key) -> Result<Self, Error> {
        let bad = |m: &str| Error::BadSnapshot(m.to_string());
        let mut snap: Zeroizing<Snapshot> = decode(bytes)?;
        if snap.version != VERSION {
            return Err(bad("unknown version"));
        }
        let c = snap.config;
        c.validate()?;
        let buckets = c.buckets();
        let memory = buckets
            .saturating_mul(c.slots() as u64 * 4 + 32)
            .saturating_add(c.capacity.saturating_mul(4));
        if memory > MAX_RESTORE_BYTES {
            return Err(bad(
                "the snapshot's config needs more client memory than allowed",
            ));
        }
        // Keep only the lineages that sealed a bucket still held, renumbered.
        let n = snap.lineages.len();
        let mut used = vec![false; n];
        for w in &snap.written {
            if w.counter != 0 {
                *used
                    .get_mut(w.lineage as usize)
                    .ok_or_else(|| bad("a bucket names an unknown lineage"))? = true;
            }
            if w.counter >= snap.counter {
                return Err(bad("a bucket was sealed past the nonce counter"));
            }
        }
        let mut renumber = vec![0u32; n];
        let mut kept = Vec::new();
        for (i, l) in snap.lineages.iter().enumerate() {
            if used[i] {
                renumber[i] = kept.len() as u32;
                kept.push(*l);
            }
        }
        for w in &mut snap.written {
            if w.counter != 0 {
                w.lineage = renumber[w.lineage as usize];
            }
        }
        let mut o = RingOram::with_lineages(c, &key, snap.store_id, &kept)?;
        if snap.counter == 0 {
            return Err(bad("nonce counter must be at least 1"));
        }
        o.counter = snap.counter;
        o.meta = Meta::from_parts(
            buckets as usize,
            c.slots(),
            std::mem::take(&mut snap.held),
            std::mem::take(&mut snap.unread),
            std::mem::take(&mut snap.count),
            std::mem::take(&mut snap.written),
        )
        .ok_or_else(|| bad("bucket metadata does not fit the config"))?;
        if snap.pos.len() != o.pos.len() {
            return Err(bad("position map does not fit the config"));
        }
        let leaves = o.geom.leaves();
        if snap
            .pos
            .iter()
            .any(|&l| l != u32::MAX && u64::from(l) >= leaves)
        {
            return Err(bad("a position is not a leaf"));
        }
        o.pos.copy_from_slice(&snap.pos);
        for (a, data) in std::mem::take(&mut snap.blocks) {
            if data.len() != c.block_size as usize || u64::from(a) >= c.capacity {
                return Err(bad("a held block does not fit the config"));
            }
            o.local.insert(a, Zeroizing::new(data.into_vec()));
        }
        if snap.cache.len() != o.cache.len() || snap.cache.iter().any(|b| b.len() > c.z as usize) {
            return Err(bad("cached buckets do not fit the config"));
        }
        o.cache = std::mem::take(&mut snap.cache);
        o.stash = snap.stash.iter().copied().collect();
        o.accesses = snap.accesses;
        o.evictions = snap.evictions;
        for (index, bytes) in &snap.pending {
            if *index >= buckets || bytes.len() != c.bucket_len() {
                return Err(bad("an owed bucket does not fit the config"));
            }
            o.pending.push((
                BucketId {
                    tree: 0,
                    index: *index,
                },
                bytes.to_vec(),
            ));
        }
        o.check_places()?;
        o.max_stash = o.stash.len();
        Ok(o)
    }

    /// Every mapped block is in exactly one place (the stash, a cached bucket, or an unread
    /// slot of a bucket on its path) and every block held has its data.
    fn check_places(&self) -> Result<(), Error> {
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
            for j in 0..self.config.slots() as u16 {
                if let Some(a) = self.meta.holds(b, j) {
                    place(a, Some(b))?;
                }
            }
        }
        let local_ok = self.stash.iter().chain(self.cache.iter().flatten()).count()
            == self.local.len()
            && self
                .stash
                .iter()
                .chain(self.cache.iter().flatten())
                .all(|a| self.local.contains_key(a));
        let mapped = self.pos.iter().filter(|&&l| l != u32::MAX).count();
        if !local_ok || seen.iter().filter(|&&s| s).count() != mapped {
            return Err(bad("blocks held and positions disagree"));
        }
        Ok(())
    }
}

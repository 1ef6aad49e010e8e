//! The client-local key map and block allocator, and how it is saved: in pages, of which a
//! put or delete rewrites one (issue 14, "The client's own disk"), not the whole map.
//!
//! - `kv/next`: the first block never allocated;
//! - `kv/keys/P`: the keys whose SHA-256 falls in page `P`, with their entries. There are
//!   `capacity / 16` pages (a power of two, at most 2^16), so a full store has about 16
//!   keys a page.
//!
//! The free list is not saved: when the map is loaded, every block below `kv/next` that no
//! key holds is free (so blocks of a put that never finished are free again).

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::durable::{Pages, StateError, decode_page, encode_page};

/// The prefix of the key map's pages.
pub const PREFIX: &str = "kv/";
const NEXT: &str = "kv/next";
const MAX_PAGES: u64 = 1 << 16;

/// Where a value lives.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Bytes of the value.
    pub len: u32,
    /// Its blocks, in order.
    pub blocks: Vec<u64>,
}

/// The key map (in pages) and the block allocator.
#[derive(Clone, Debug)]
pub struct Index {
    /// Per page, its keys.
    pages: Vec<BTreeMap<Vec<u8>, Entry>>,
    keys: usize,
    /// Blocks freed by deletes and overwrites.
    free: Vec<u64>,
    /// Blocks `next..capacity` were never used.
    next: u64,
    capacity: u64,
    /// Pages changed since [`Index::changed_pages`] was last called.
    dirty: BTreeSet<usize>,
    next_dirty: bool,
}

fn page_count(capacity: u64) -> usize {
    (capacity / 16).clamp(1, MAX_PAGES).next_power_of_two() as usize
}

fn page_name(p: usize) -> String {
    format!("{PREFIX}keys/{p}")
}

impl Index {
    /// An empty map for a store of `capacity` blocks.
    pub fn new(capacity: u64) -> Self {
        Index {
            pages: vec![BTreeMap::new(); page_count(capacity)],
            keys: 0,
            free: Vec::new(),
            next: 0,
            capacity,
            dirty: BTreeSet::new(),
            next_dirty: false,
        }
    }

    fn page_of(&self, key: &[u8]) -> usize {
        let h = Sha256::digest(key);
        let mut first = [0u8; 8];
        first.copy_from_slice(&h[..8]);
        (u64::from_le_bytes(first) % self.pages.len() as u64) as usize
    }

    /// The entry of `key`.
    pub fn get(&self, key: &[u8]) -> Option<&Entry> {
        self.pages[self.page_of(key)].get(key)
    }

    /// Sets `key`'s entry; returns the one it replaces.
    pub fn insert(&mut self, key: Vec<u8>, entry: Entry) -> Option<Entry> {
        let p = self.page_of(&key);
        self.dirty.insert(p);
        let old = self.pages[p].insert(key, entry);
        self.keys += usize::from(old.is_none());
        old
    }

    /// Removes `key`; returns its entry.
    pub fn remove(&mut self, key: &[u8]) -> Option<Entry> {
        let p = self.page_of(key);
        let old = self.pages[p].remove(key);
        if old.is_some() {
            self.dirty.insert(p);
            self.keys -= 1;
        }
        old
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys
    }

    /// True if there are no keys.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Every key, in order.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        let mut all: Vec<Vec<u8>> = self.pages.iter().flat_map(|p| p.keys().cloned()).collect();
        all.sort_unstable();
        all
    }

    /// Blocks that can be allocated.
    pub fn free_blocks(&self) -> usize {
        self.free.len() + (self.capacity - self.next) as usize
    }

    /// `n` blocks, from the free list first (the caller checked [`Index::free_blocks`]).
    pub fn allocate(&mut self, n: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.free.pop() {
                Some(b) => out.push(b),
                None => {
                    out.push(self.next);
                    self.next += 1;
                    self.next_dirty = true;
                }
            }
        }
        out
    }

    /// Blocks free again.
    pub fn release(&mut self, blocks: impl IntoIterator<Item = u64>) {
        self.free.extend(blocks);
    }

    /// The pages changed since the last call (every page on the first call after
    /// [`Index::new`] made a map that was never saved, none more after loading).
    pub fn changed_pages(&mut self) -> Result<Pages, StateError> {
        let mut out = Pages::new();
        if std::mem::take(&mut self.next_dirty) {
            out.insert(NEXT.into(), encode_page(&self.next)?);
        }
        for p in std::mem::take(&mut self.dirty) {
            let entries: Vec<(&Vec<u8>, &Entry)> = self.pages[p].iter().collect();
            out.insert(page_name(p), encode_page(&entries)?);
        }
        Ok(out)
    }

    /// Marks every page changed (after a save that failed).
    pub fn all_changed(&mut self) {
        self.dirty = (0..self.pages.len()).collect();
        self.next_dirty = true;
    }

    /// The map the pages under [`PREFIX`] hold (an empty one if there are none), checked:
    /// every key in its page and at most [`super::MAX_KEY`] long, every block below
    /// `kv/next` and `capacity` and held by one key at most.
    pub fn from_pages(pages: &Pages, capacity: u64) -> Result<Self, StateError> {
        let mut index = Index::new(capacity);
        let bad = || StateError::Corrupt("kv page");
        if let Some(bytes) = pages.get(NEXT) {
            index.next = decode_page(bytes)?;
        }
        if index.next > capacity {
            return Err(bad());
        }
        let mut held = vec![false; index.next as usize];
        for (name, bytes) in pages.range(page_name(0)..) {
            let Some(p) = name.strip_prefix(&format!("{PREFIX}keys/")) else {
                continue;
            };
            let p: usize = p.parse().map_err(|_| bad())?;
            if p >= index.pages.len() {
                return Err(bad());
            }
            let entries: Vec<(Vec<u8>, Entry)> = decode_page(bytes)?;
            for (key, entry) in entries {
                if key.len() > super::MAX_KEY || index.page_of(&key) != p {
                    return Err(bad());
                }
                for &b in &entry.blocks {
                    let slot = held.get_mut(b as usize).ok_or_else(bad)?;
                    if std::mem::replace(slot, true) {
                        return Err(bad());
                    }
                }
                index.pages[p].insert(key, entry);
                index.keys += 1;
            }
        }
        index.free = (0..index.next).filter(|&b| !held[b as usize]).collect();
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A map saved as pages and loaded back is the same map; a change rewrites one page;
    /// the free list comes back from the blocks no key holds.
    #[test]
    fn pages_round_trip_and_a_change_rewrites_one() {
        let mut index = Index::new(1 << 10);
        let mut saved = Pages::new();
        for i in 0..100u64 {
            let blocks = index.allocate(2);
            index.insert(format!("key{i}").into_bytes(), Entry { len: 100, blocks });
        }
        let old = index.remove(b"key7").expect("key7");
        index.release(old.blocks.clone());
        saved.extend(index.changed_pages().unwrap());
        let back = Index::from_pages(&saved, 1 << 10).unwrap();
        assert_eq!(back.keys(), index.keys());
        assert_eq!(back.len(), 99);
        let mut free = back.free.clone();
        free.sort_unstable();
        assert_eq!(free, old.blocks);
        index.insert(b"key3".to_vec(), Entry::default());
        let changed = index.changed_pages().unwrap();
        assert_eq!(changed.len(), 1, "{:?}", changed.keys());
        // A key in the wrong page, and a block held twice, are refused.
        let mut wrong = saved.clone();
        let (name, _) = saved.iter().find(|(n, _)| n.contains("keys/")).unwrap();
        let other = (0..64)
            .map(page_name)
            .find(|n| n != name && !saved.contains_key(n))
            .unwrap();
        wrong.insert(other, saved[name].clone());
        assert!(Index::from_pages(&wrong, 1 << 10).is_err());
        let mut twice = Index::new(1 << 10);
        twice.next = 4;
        twice.insert(
            b"a".to_vec(),
            Entry {
                len: 1,
                blocks: vec![1],
            },
        );
        twice.insert(
            b"b".to_vec(),
            Entry {
                len: 1,
                blocks: vec![1],
            },
        );
        twice.next_dirty = true;
        assert!(Index::from_pages(&twice.changed_pages().unwrap(), 1 << 10).is_err());
    }
}

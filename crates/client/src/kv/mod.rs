//! The oblivious key-value store: byte keys and byte values over the block store that the
//! scheduler keeps on its fixed schedule.
//!
//! # The key map is client-local
//! Which blocks hold which key's value is kept in client memory ([`Index`]: maps from key to
//! the value's length and block addresses, plus a free list), not in the ORAM. The server never
//! sees it, so it learns nothing from it; putting it in the ORAM would cost extra oblivious
//! accesses on every operation for no gain in what the server learns, since the client is
//! trusted with its own keys anyway. The price is client memory proportional to the number of
//! keys and blocks (about 60 bytes per key plus 8 per block), and that the map must be
//! persisted with the rest of the client state: in pages, of which a put or delete rewrites
//! one ([`index`]).
//!
//! # Values are split into blocks
//! A value of `n` bytes takes `ceil(n / B)` blocks. A put writes the new blocks (taken from the
//! free list) before switching the key to them and freeing the old ones, so a failed put leaves
//! the old value intact. Every block access goes through the fixed schedule, so a large value
//! takes more epochs but never changes what the server sees per epoch: the server cannot tell a
//! 10-byte value from a 60 KiB one.
//!
//! # Consistency
//! Operations are linearizable, and run concurrently: each holds the key map's lock only to
//! read or change the map, never across block accesses, so the block accesses of
//! concurrent operations share epochs (the scheduler runs K per epoch). A put writes its new
//! blocks, then switches the key in one step under the lock, where it linearizes; a get
//! linearizes where it reads the key's entry. A value's blocks are never rewritten while a
//! get may still read them: blocks freed by a put or delete wait until every get begun
//! before has finished before they are used again. Every change of the map is saved (and
//! fsynced) before the operation returns; concurrent operations may share one save.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::durable::Durable;
use crate::{Client, ClientError};

/// Longest key, bytes.
pub const MAX_KEY: usize = 1024;
/// Default largest value, bytes.
pub const DEFAULT_MAX_VALUE: usize = 64 * 1024;

/// A KV failure.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KvError {
    /// A key longer than [`MAX_KEY`].
    #[error("key of {0} bytes; at most {MAX_KEY}")]
    KeyTooLong(usize),
    /// A value longer than the configured maximum.
    #[error("value of {got} bytes; at most {max}")]
    ValueTooLarge {
        /// Bytes given.
        got: usize,
        /// The maximum.
        max: usize,
    },
    /// Not enough free blocks for the value; nothing was changed.
    #[error("store full: {needed} blocks needed, {free} free")]
    Full {
        /// Blocks the value needs.
        needed: usize,
        /// Blocks free.
        free: usize,
    },
    /// The block store failed; the key keeps its previous value.
    #[error(transparent)]
    Client(#[from] ClientError),
}

mod index;

pub use index::{Entry, Index};

/// The key map with what concurrent gets hold (see "Consistency").
struct Shared {
    index: Index,
    /// Changes of the map so far.
    version: u64,
    /// The next get's ticket.
    next_get: u64,
    /// Tickets of the gets under way.
    gets: std::collections::BTreeSet<u64>,
    /// Freed blocks not yet free: the gets with tickets below each tag may still read them.
    held: Vec<(u64, Vec<u64>)>,
}

impl Shared {
    /// Frees `blocks` once no get under way can read them.
    fn free(&mut self, blocks: Vec<u64>) {
        if self.gets.is_empty() {
            self.index.release(blocks);
        } else {
            self.held.push((self.next_get, blocks));
        }
    }

    /// Frees what no get under way holds any more.
    fn release(&mut self) {
        let oldest = self.gets.first().copied().unwrap_or(u64::MAX);
        let (done, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|(tag, _)| *tag <= oldest);
        self.held = keep;
        for (_, blocks) in done {
            self.index.release(blocks);
        }
    }
}

/// A get under way: its ticket, given back when it ends (or is cancelled).
struct GetTicket<'a> {
    shared: &'a Mutex<Shared>,
    ticket: u64,
}

impl Drop for GetTicket<'_> {
    fn drop(&mut self) {
        let mut s = self.shared.lock();
        s.gets.remove(&self.ticket);
        s.release();
    }
}

/// The key-value store. `Send + Sync + Clone`: share it between tasks.
///
/// # Security
/// The server sees only the schedule's fixed slots; keys, value sizes and which operation ran
/// stay in this process.
#[derive(Clone)]
pub struct Kv {
    client: Client,
    shared: Arc<Mutex<Shared>>,
    /// The version of the map last saved; held while saving, so saves are in order.
    saved: Arc<tokio::sync::Mutex<u64>>,
    max_value: usize,
    durable: Option<Arc<Durable>>,
}

fn state_error(e: impl std::error::Error + Send + Sync + 'static) -> KvError {
    KvError::Client(ClientError::State(crate::error::source(e)))
}

impl Kv {
    /// A store over `client`'s blocks, empty, kept in memory only.
    pub fn new(client: Client, max_value: usize) -> Self {
        let capacity = client.shape().capacity;
        Self::with(client, Index::new(capacity), max_value, None)
    }

    fn with(client: Client, index: Index, max_value: usize, durable: Option<Arc<Durable>>) -> Self {
        Kv {
            client,
            shared: Arc::new(Mutex::new(Shared {
                index,
                version: 0,
                next_get: 0,
                gets: Default::default(),
                held: Vec::new(),
            })),
            saved: Arc::default(),
            max_value,
            durable,
        }
    }

    /// A store over `client`'s blocks whose key map lives in `durable`: loaded now, saved
    /// (and fsynced) before every put and delete is acknowledged.
    pub async fn open(
        client: Client,
        max_value: usize,
        durable: Arc<Durable>,
    ) -> Result<Self, KvError> {
        let d = durable.clone();
        let capacity = client.shape().capacity;
        let index = tokio::task::spawn_blocking(move || {
            Index::from_pages(&d.load_pages(index::PREFIX)?, capacity)
        })
        .await
        .map_err(state_error)?
        .map_err(state_error)?;
        Ok(Self::with(client, index, max_value, Some(durable)))
    }

    /// Changes the map with `f` (one step, under the lock), then returns once the map with
    /// that change is saved, if this store is durable.
    async fn change<T>(&self, f: impl FnOnce(&mut Shared) -> T) -> Result<T, KvError> {
        let (out, version) = {
            let mut s = self.shared.lock();
            let out = f(&mut s);
            s.version += 1;
            (out, s.version)
        };
        self.save(version).await?;
        Ok(out)
    }

    /// Saves the map, unless a save of `version` or later is done already.
    async fn save(&self, version: u64) -> Result<(), KvError> {
        let Some(d) = self.durable.clone() else {
            return Ok(());
        };
        let mut saved = self.saved.lock().await;
        if *saved >= version {
            return Ok(());
        }
        let (pages, now) = {
            let mut s = self.shared.lock();
            (s.index.changed_pages().map_err(state_error)?, s.version)
        };
        let done = tokio::task::spawn_blocking(move || d.save_pages(&pages))
            .await
            .map_err(state_error)
            .and_then(|r| r.map_err(state_error));
        if done.is_err() {
            // Its pages were taken: the next save writes them all.
            self.shared.lock().index.all_changed();
        }
        done?;
        *saved = now;
        Ok(())
    }

    /// The block store.
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn check_key(key: &[u8]) -> Result<(), KvError> {
        if key.len() > MAX_KEY {
            Err(KvError::KeyTooLong(key.len()))
        } else {
            Ok(())
        }
    }

    fn check_value(&self, value: &[u8]) -> Result<(), KvError> {
        if value.len() > self.max_value {
            return Err(KvError::ValueTooLarge {
                got: value.len(),
                max: self.max_value,
            });
        }
        Ok(())
    }

    /// The value of `key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Self::check_key(key)?;
        let (entry, _ticket) = {
            let mut s = self.shared.lock();
            let Some(e) = s.index.get(key).cloned() else {
                return Ok(None);
            };
            let ticket = s.next_get;
            s.next_get += 1;
            s.gets.insert(ticket);
            (
                e,
                GetTicket {
                    shared: &self.shared,
                    ticket,
                },
            )
        };
        let reads = entry.blocks.iter().map(|&b| self.client.read(b));
        let blocks = futures::future::try_join_all(reads).await?;
        let mut v: Vec<u8> = blocks.concat();
        v.truncate(entry.len as usize);
        Ok(Some(v))
    }

    /// Sets `key` to `value`; returns once the value is durable at storage.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        self.put_many(&[(key.to_vec(), value.to_vec())]).await
    }

    /// Sets several keys at once: all of them or, on failure, none (the new blocks are
    /// written first and the keys switched together).
    pub async fn put_many(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), KvError> {
        for (k, v) in pairs {
            Self::check_key(k)?;
            self.check_value(v)?;
        }
        let b = self.client.shape().block_size as usize;
        let placed: Vec<Vec<u64>> = {
            let mut s = self.shared.lock();
            let needed: usize = pairs.iter().map(|(_, v)| v.len().div_ceil(b)).sum();
            let free = s.index.free_blocks();
            if needed > free {
                return Err(KvError::Full { needed, free });
            }
            pairs
                .iter()
                .map(|(_, v)| s.index.allocate(v.len().div_ceil(b)))
                .collect()
        };
        let writes = pairs.iter().zip(&placed).flat_map(|((_, v), blocks)| {
            blocks.iter().zip(v.chunks(b)).map(|(&addr, chunk)| {
                let mut block = chunk.to_vec();
                block.resize(b, 0);
                self.client.write(addr, block)
            })
        });
        if let Err(e) = futures::future::try_join_all(writes).await {
            // Never referenced: free at once.
            self.shared
                .lock()
                .index
                .release(placed.into_iter().flatten());
            return Err(e.into());
        }
        self.change(|s| {
            for ((k, v), blocks) in pairs.iter().zip(placed) {
                let entry = Entry {
                    len: v.len() as u32,
                    blocks,
                };
                if let Some(old) = s.index.insert(k.clone(), entry) {
                    s.free(old.blocks);
                }
            }
        })
        .await
    }

    /// Removes `key`; true if it was there.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, KvError> {
        Self::check_key(key)?;
        if self.shared.lock().index.get(key).is_none() {
            return Ok(false);
        }
        self.change(|s| match s.index.remove(key) {
            Some(e) => {
                s.free(e.blocks);
                true
            }
            None => false,
        })
        .await
    }

    /// True if `key` has a value.
    pub async fn contains(&self, key: &[u8]) -> Result<bool, KvError> {
        Self::check_key(key)?;
        Ok(self.shared.lock().index.get(key).is_some())
    }

    /// Number of keys.
    pub async fn len(&self) -> usize {
        self.shared.lock().index.len()
    }

    /// True if there are no keys.
    pub async fn is_empty(&self) -> bool {
        self.shared.lock().index.is_empty()
    }

    /// All keys, in order (from client-local state: no server traffic).
    pub async fn keys(&self) -> Vec<Vec<u8>> {
        self.shared.lock().index.keys()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks freed while a get is under way are reused only after every get begun before
    /// the free has ended (or was cancelled).
    #[test]
    fn freed_blocks_wait_for_the_gets_begun_before() {
        let shared = Mutex::new(Shared {
            index: Index::new(16),
            version: 0,
            next_get: 0,
            gets: Default::default(),
            held: Vec::new(),
        });
        let free = |s: &Mutex<Shared>| {
            let mut i = s.lock().index.clone();
            let mut out = i.allocate(i.free_blocks() - 16);
            out.sort_unstable();
            out
        };
        let begin = || {
            let mut s = shared.lock();
            let ticket = s.next_get;
            s.next_get += 1;
            s.gets.insert(ticket);
            GetTicket {
                shared: &shared,
                ticket,
            }
        };
        shared.lock().free(vec![1]);
        assert_eq!(free(&shared), vec![1], "no get: free at once");
        let first = begin();
        shared.lock().free(vec![2, 3]);
        let second = begin();
        shared.lock().free(vec![4]);
        assert_eq!(free(&shared), vec![1]);
        drop(second);
        assert_eq!(free(&shared), vec![1], "the first get may read 2, 3, 4");
        drop(first);
        assert_eq!(free(&shared), vec![1, 2, 3, 4]);
        let third = begin();
        shared.lock().free(vec![5]);
        let fourth = begin();
        drop(third);
        assert_eq!(
            free(&shared),
            vec![1, 2, 3, 4, 5],
            "the fourth began after 5 was freed"
        );
        drop(fourth);
    }
}

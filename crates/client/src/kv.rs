//! The oblivious key-value store: byte keys and byte values over the block store that the
//! scheduler keeps on its fixed schedule.
//!
//! # The key map is client-local
//! Which blocks hold which key's value is kept in client memory (a `BTreeMap` from key to the
//! value's length and block addresses, plus a free list), not in the ORAM. The server never
//! sees it, so it learns nothing from it; putting it in the ORAM would cost extra oblivious
//! accesses on every operation for no gain in what the server learns, since the client is
//! trusted with its own keys anyway. The price is client memory proportional to the number of
//! keys and blocks (about 60 bytes per key plus 8 per block), and that the map must be
//! persisted with the rest of the client state.
//!
//! # Values are split into blocks
//! A value of `n` bytes takes `ceil(n / B)` blocks. A put writes the new blocks (taken from the
//! free list) before switching the key to them and freeing the old ones, so a failed put leaves
//! the old value intact. Every block access goes through the fixed schedule, so a large value
//! takes more epochs but never changes what the server sees per epoch: the server cannot tell a
//! 10-byte value from a 60 KiB one.
//!
//! # Consistency
//! Operations are serialized by one lock (linearizable); the block accesses of one operation are
//! submitted together, and the scheduler runs them K per epoch.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::durable::Durable;
use crate::durable::StateRecord;
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

/// Where a value lives.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Entry {
    /// Bytes of the value.
    pub len: u32,
    /// Its blocks, in order.
    pub blocks: Vec<u64>,
}

/// The client-local key map and block allocator.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Index {
    /// Key to value location.
    pub keys: BTreeMap<Vec<u8>, Entry>,
    /// Blocks freed by deletes and overwrites.
    pub free: Vec<u64>,
    /// Blocks `next..capacity` were never used.
    pub next: u64,
}

impl StateRecord for Index {
    const NAME: &'static str = "index";
}

impl Index {
    fn free_blocks(&self, capacity: u64) -> usize {
        self.free.len() + (capacity - self.next) as usize
    }

    fn allocate(&mut self, n: usize) -> Vec<u64> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match self.free.pop() {
                Some(b) => out.push(b),
                None => {
                    out.push(self.next);
                    self.next += 1;
                }
            }
        }
        out
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
    index: Arc<Mutex<Index>>,
    max_value: usize,
    durable: Option<Arc<Durable>>,
}

impl Kv {
    /// A store over `client`'s blocks, empty, kept in memory only.
    pub fn new(client: Client, max_value: usize) -> Self {
        Kv {
            client,
            index: Arc::new(Mutex::new(Index::default())),
            max_value,
            durable: None,
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
        let index = tokio::task::spawn_blocking(move || d.load::<Index>())
            .await
            .map_err(|e| KvError::Client(ClientError::State(crate::error::source(e))))?
            .map_err(|e| KvError::Client(ClientError::State(crate::error::source(e))))?
            .unwrap_or_default();
        Ok(Kv {
            client,
            index: Arc::new(Mutex::new(index)),
            max_value,
            durable: Some(durable),
        })
    }

    /// Saves the key map, if this store is durable.
    async fn save(&self, index: &Index) -> Result<(), KvError> {
        let Some(d) = self.durable.clone() else {
            return Ok(());
        };
        let copy = index.clone();
        tokio::task::spawn_blocking(move || d.save(&copy))
            .await
            .map_err(|e| KvError::Client(ClientError::State(crate::error::source(e))))?
            .map_err(|e| KvError::Client(ClientError::State(crate::error::source(e))))
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

    /// The value of `key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Self::check_key(key)?;
        let index = self.index.lock().await;
        let Some(e) = index.keys.get(key) else {
            return Ok(None);
        };
        let reads = e.blocks.iter().map(|&b| self.client.read(b));
        let blocks = futures::future::try_join_all(reads).await?;
        let mut v: Vec<u8> = blocks.concat();
        v.truncate(e.len as usize);
        Ok(Some(v))
    }

    /// Sets `key` to `value`; returns once the value is durable at storage.
    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<(), KvError> {
        Self::check_key(key)?;
        if value.len() > self.max_value {
            return Err(KvError::ValueTooLarge {
                got: value.len(),
                max: self.max_value,
            });
        }
        let b = self.client.shape().block_size as usize;
        let capacity = self.client.shape().capacity;
        let mut index = self.index.lock().await;
        let needed = value.len().div_ceil(b);
        let free = index.free_blocks(capacity);
        if needed > free {
            return Err(KvError::Full { needed, free });
        }
        let blocks = index.allocate(needed);
        let writes = blocks.iter().zip(value.chunks(b)).map(|(&addr, chunk)| {
            let mut block = chunk.to_vec();
            block.resize(b, 0);
            self.client.write(addr, block)
        });
        if let Err(e) = futures::future::try_join_all(writes).await {
            index.free.extend(blocks);
            return Err(e.into());
        }
        let old = index.keys.insert(
            key.to_vec(),
            Entry {
                len: value.len() as u32,
                blocks,
            },
        );
        if let Some(old) = old {
            index.free.extend(old.blocks);
        }
        self.save(&index).await
    }

    /// Sets several keys at once: all of them or, on failure, none (the new blocks are
    /// written first and the keys switched together).
    pub async fn put_many(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<(), KvError> {
        for (k, v) in pairs {
            Self::check_key(k)?;
            if v.len() > self.max_value {
                return Err(KvError::ValueTooLarge {
                    got: v.len(),
                    max: self.max_value,
                });
            }
        }
        let b = self.client.shape().block_size as usize;
        let capacity = self.client.shape().capacity;
        let mut index = self.index.lock().await;
        let needed: usize = pairs.iter().map(|(_, v)| v.len().div_ceil(b)).sum();
        let free = index.free_blocks(capacity);
        if needed > free {
            return Err(KvError::Full { needed, free });
        }
        let placed: Vec<Vec<u64>> = pairs
            .iter()
            .map(|(_, v)| index.allocate(v.len().div_ceil(b)))
            .collect();
        let writes = pairs.iter().zip(&placed).flat_map(|((_, v), blocks)| {
            blocks.iter().zip(v.chunks(b)).map(|(&addr, chunk)| {
                let mut block = chunk.to_vec();
                block.resize(b, 0);
                self.client.write(addr, block)
            })
        });
        if let Err(e) = futures::future::try_join_all(writes).await {
            index.free.extend(placed.into_iter().flatten());
            return Err(e.into());
        }
        for ((k, v), blocks) in pairs.iter().zip(placed) {
            if let Some(old) = index.keys.insert(
                k.clone(),
                Entry {
                    len: v.len() as u32,
                    blocks,
                },
            ) {
                index.free.extend(old.blocks);
            }
        }
        self.save(&index).await
    }

    /// Removes `key`; true if it was there.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, KvError> {
        Self::check_key(key)?;
        let mut index = self.index.lock().await;
        match index.keys.remove(key) {
            Some(e) => {
                index.free.extend(e.blocks);
                self.save(&index).await?;
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// True if `key` has a value.
    pub async fn contains(&self, key: &[u8]) -> Result<bool, KvError> {
        Self::check_key(key)?;
        Ok(self.index.lock().await.keys.contains_key(key))
    }

    /// Number of keys.
    pub async fn len(&self) -> usize {
        self.index.lock().await.keys.len()
    }

    /// True if there are no keys.
    pub async fn is_empty(&self) -> bool {
        self.index.lock().await.keys.is_empty()
    }

    /// All keys, in order (from client-local state: no server traffic).
    pub async fn keys(&self) -> Vec<Vec<u8>> {
        self.index.lock().await.keys.keys().cloned().collect()
    }

    /// A copy of the key map, for persistence.
    pub async fn index(&self) -> Index {
        self.index.lock().await.clone()
    }
}

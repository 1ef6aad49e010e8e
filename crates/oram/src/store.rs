//! The storage seam, an in-memory store, and a synchronous driver.

use std::collections::HashMap;
use std::convert::Infallible;

use rand::CryptoRng;

use crate::access::{Fetch, Progress, WriteBack};
use crate::engine::Oram;
use crate::{BucketId, Error, Op};

/// Where sealed buckets live. Path-granular: one call reads a round's buckets, one call
/// writes a batch's buckets back.
///
/// # Security
/// Implementations are untrusted: whatever they return is verified before use.
pub trait BucketStore {
    /// The store's own failures (I/O, network).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reads every bucket that `fetch` names into it ([`Fetch::supply`] or
    /// [`Fetch::slot_mut`]); a bucket never written is supplied as `None`.
    fn read_path(&mut self, fetch: &mut Fetch<'_>) -> Result<(), Self::Error>;

    /// Stores every bucket of `writes`, in order; all of them or, on error, as many as the
    /// store could (the caller retries the whole write-back).
    fn write_path(&mut self, writes: &WriteBack<'_>) -> Result<(), Self::Error>;
}

/// Buckets in a hash map: for tests, benchmarks and embedding.
///
/// # Security
/// Holds only sealed buckets; it is the "server" side of the seam and is trusted for
/// nothing.
///
/// Buckets never written take no space, so a store of 2^32 blocks costs nothing up front.
/// The accessors let tests play a malicious server.
#[derive(Default, Clone)]
pub struct MemoryStore {
    buckets: HashMap<BucketId, Vec<u8>>,
    reads: u64,
    writes: u64,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored bytes of a bucket.
    pub fn get(&self, id: BucketId) -> Option<&[u8]> {
        self.buckets.get(&id).map(Vec::as_slice)
    }

    /// Mutable access to a bucket's bytes (to tamper with it).
    pub fn get_mut(&mut self, id: BucketId) -> Option<&mut Vec<u8>> {
        self.buckets.get_mut(&id)
    }

    /// Replaces a bucket's bytes.
    pub fn insert(&mut self, id: BucketId, bytes: Vec<u8>) -> Option<Vec<u8>> {
        self.buckets.insert(id, bytes)
    }

    /// Deletes a bucket.
    pub fn remove(&mut self, id: BucketId) -> Option<Vec<u8>> {
        self.buckets.remove(&id)
    }

    /// Stored buckets.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True if nothing was ever written.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// All stored bucket ids.
    pub fn ids(&self) -> impl Iterator<Item = BucketId> + '_ {
        self.buckets.keys().copied()
    }

    /// Buckets read and written so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.reads, self.writes)
    }
}

impl BucketStore for MemoryStore {
    type Error = Infallible;

    fn read_path(&mut self, fetch: &mut Fetch<'_>) -> Result<(), Infallible> {
        // Touch every bucket before copying any: the lookups are independent, so the
        // processor overlaps their cache misses instead of taking them one copy at a time.
        // (The second lookup below then hits the cache; no list is kept, to allocate nothing.)
        for id in fetch.ids() {
            if let Some(b) = self.buckets.get(id) {
                std::hint::black_box(b.first());
            }
        }
        for i in 0..fetch.ids().len() {
            let id = fetch.ids()[i];
            self.reads += 1;
            match self.buckets.get(&id) {
                Some(b) if b.len() == fetch.bucket_len() => fetch.slot_mut(i).copy_from_slice(b),
                // A bucket of the wrong length is the engine's to reject.
                Some(b) => {
                    let _ = fetch.supply(i, Some(b));
                }
                None => {
                    let _ = fetch.supply(i, None);
                }
            }
        }
        Ok(())
    }

    fn write_path(&mut self, writes: &WriteBack<'_>) -> Result<(), Infallible> {
        for (id, bytes) in writes.iter() {
            self.writes += 1;
            match self.buckets.get_mut(&id) {
                Some(b) => {
                    b.clear();
                    b.extend_from_slice(bytes);
                }
                None => {
                    self.buckets.insert(id, bytes.to_vec());
                }
            }
        }
        Ok(())
    }
}

/// An engine error or a store error, from the synchronous driver.
///
/// # Security
/// See [`Error`]; store errors are whatever the store reports.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriverError<E: std::error::Error + 'static> {
    /// The engine refused or detected tampering.
    #[error(transparent)]
    Oram(#[from] Error),
    /// The store failed.
    #[error("bucket store: {0}")]
    Store(#[source] E),
}

impl Oram {
    /// Runs one batch to completion against `store`: fetch, verify, write back.
    ///
    /// On an engine error the batch is aborted and the state is unchanged. On a store error
    /// during the write-back the batch is committed but its buckets may not all be stored:
    /// call [`Oram::write_back`] and store them again before anything else.
    ///
    /// ```
    /// use shroud_oram::{Config, Key, MemoryStore, Op, Oram};
    /// let mut rng = rand::rng();
    /// let mut oram = Oram::new(Config::new(16, 16), Key::generate(&mut rng), &mut rng)?;
    /// let mut store = MemoryStore::new();
    /// oram.run(&mut store, &[Op::Dummy], &mut rng)?;
    /// assert!(oram.result(0).is_none());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn run<S: BucketStore, R: CryptoRng + ?Sized>(
        &mut self,
        store: &mut S,
        ops: &[Op<'_>],
        rng: &mut R,
    ) -> Result<(), DriverError<S::Error>> {
        self.begin(ops, rng)?;
        loop {
            if let Some(mut fetch) = self.fetch()
                && let Err(e) = store.read_path(&mut fetch)
            {
                self.abort();
                return Err(DriverError::Store(e));
            }
            match self.advance() {
                Ok(Progress::Fetch) => continue,
                Ok(Progress::Done) => break,
                Err(e) => {
                    self.abort();
                    return Err(e.into());
                }
            }
        }
        if let Some(writes) = self.write_back() {
            store.write_path(&writes).map_err(DriverError::Store)?;
        }
        Ok(())
    }

    /// Reads block `addr` into `out` (zeros if never written).
    pub fn read_into<S: BucketStore, R: CryptoRng + ?Sized>(
        &mut self,
        store: &mut S,
        addr: u64,
        out: &mut [u8],
        rng: &mut R,
    ) -> Result<(), DriverError<S::Error>> {
        let expected = self.config.block_size as usize;
        if out.len() != expected {
            return Err(Error::WrongBlockSize {
                got: out.len(),
                expected,
            }
            .into());
        }
        self.run(store, &[Op::Read(addr)], rng)?;
        if let Some(r) = self.result(0) {
            out.copy_from_slice(r);
        }
        Ok(())
    }
}

//! The storage-engine seam: what the protocol needs from an embedded (or distributed)
//! key-value engine. `SledBackend` (embedded) and `RedisBackend` (Redis Cluster) implement
//! it; another engine plugs in here without touching the protocol code.
//!
//! A networked engine pays a round trip per call, so a batch's metadata and reads come in
//! one call each ([`Backend::metas`], [`Backend::fetch`]) and its writes in one
//! ([`Backend::apply`]).

use shroud_proto::{Geometry, StoreId};

/// What the server keeps about a store: the hash of its capability and its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreMeta {
    /// SHA-256 of the capability (see [`crate::capability`]).
    pub cap_hash: [u8; 32],
    /// Bucket length and count.
    pub geometry: Geometry,
}

impl StoreMeta {
    /// The stored form, 44 bytes: the capability hash, then the bucket length (u32) and
    /// count (u64), big-endian. Both engines store this.
    pub(crate) fn encode(&self) -> [u8; 44] {
        let mut v = [0u8; 44];
        v[..32].copy_from_slice(&self.cap_hash);
        v[32..36].copy_from_slice(&self.geometry.bucket_len.to_be_bytes());
        v[36..].copy_from_slice(&self.geometry.buckets.to_be_bytes());
        v
    }

    /// Reads the stored form of `store`'s metadata.
    pub(crate) fn decode(store: &StoreId, v: &[u8]) -> Result<Self, BackendError> {
        let bad = || BackendError::CorruptMeta(*store);
        if v.len() != 44 {
            return Err(bad());
        }
        let mut cap_hash = [0u8; 32];
        cap_hash.copy_from_slice(&v[..32]);
        let bucket_len = u32::from_be_bytes(v[32..36].try_into().map_err(|_| bad())?);
        let buckets = u64::from_be_bytes(v[36..44].try_into().map_err(|_| bad())?);
        Ok(StoreMeta {
            cap_hash,
            geometry: Geometry {
                bucket_len,
                buckets,
            },
        })
    }
}

/// One bucket write of a batch.
#[derive(Clone, Copy, Debug)]
pub struct Put<'a> {
    /// The store.
    pub store: StoreId,
    /// The bucket index.
    pub bucket: u64,
    /// The bucket's bytes.
    pub data: &'a [u8],
}

/// What one read of a batch wants from a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    /// All of it.
    Bucket,
    /// `len` bytes from `offset` (a slot of a Ring ORAM bucket); the caller has checked
    /// that the range lies inside the store's buckets.
    Range {
        /// First byte.
        offset: usize,
        /// Bytes.
        len: usize,
    },
    /// Only whether it was ever written.
    Exists,
}

/// One read of a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fetch {
    /// The store.
    pub store: StoreId,
    /// The bucket index.
    pub bucket: u64,
    /// What of it.
    pub want: Want,
}

/// What is stored, for the startup log and stats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Stores.
    pub stores: u64,
    /// Buckets stored.
    pub buckets: u64,
    /// Bytes of bucket data.
    pub bucket_bytes: u64,
    /// Bytes on disk.
    pub disk_bytes: u64,
}

/// A storage-engine failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The engine reported an error.
    #[error("storage engine: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The database was written in a format this build does not read.
    #[error("database format {found}; this build reads format {supported}")]
    UnknownFormat {
        /// The database's version.
        found: u32,
        /// This build's.
        supported: u32,
    },
    /// Stored metadata does not decode.
    #[error("corrupt metadata for store {0}")]
    CorruptMeta(StoreId),
    /// The outboxes stored are not numbered 0, 1, 2, ... as they are made.
    #[error("corrupt outbox table at outbox {0}")]
    CorruptOutboxes(u64),
    /// Another storage server wrote the store after this batch read it (a batch delayed
    /// past its proxy's patience, arriving after the next): refused, so that a store never
    /// goes back in time. The client sends its writes again.
    #[error("store {0} was written by another server since this batch read it")]
    Conflict(StoreId),
    /// A stored bucket does not have its store's length.
    #[error("corrupt bucket: {0}")]
    Corrupt(&'static str),
}

/// `out ^= bucket[offset..offset + out.len()]`.
pub(crate) fn xor_part(bucket: &[u8], offset: usize, out: &mut [u8]) -> Result<(), BackendError> {
    let part = bucket
        .get(offset..offset.saturating_add(out.len()))
        .ok_or(BackendError::Corrupt("a bucket shorter than its store's"))?;
    for (o, b) in out.iter_mut().zip(part) {
        *o ^= b;
    }
    Ok(())
}

/// An embedded key-value engine holding stores and buckets.
///
/// Calls are blocking; the server runs them off the async threads.
pub trait Backend: Send + Sync + 'static {
    /// The store's metadata, if it exists.
    fn meta(&self, store: &StoreId) -> Result<Option<StoreMeta>, BackendError>;
    /// Creates a store; `false` if the id is taken (nothing changes then).
    fn create(&self, store: &StoreId, meta: &StoreMeta) -> Result<bool, BackendError>;
    /// Deletes a store and all its buckets, atomically; returns the bytes of buckets
    /// removed.
    fn delete(&self, store: &StoreId) -> Result<u64, BackendError>;
    /// The metadata of each store, in order (one round trip on a networked engine).
    fn metas(&self, stores: &[StoreId]) -> Result<Vec<Option<StoreMeta>>, BackendError> {
        stores.iter().map(|s| self.meta(s)).collect()
    }
    /// Copies a bucket into `out`; `false` if it was never written.
    fn read(&self, store: &StoreId, bucket: u64, out: &mut Vec<u8>) -> Result<bool, BackendError>;
    /// XORs `out.len()` bytes of a bucket, from `offset`, into `out` (a slot of a Ring
    /// ORAM bucket); `false` (and `out` unchanged) if the bucket was never written. The
    /// caller has checked that the range lies inside the store's buckets; a stored bucket
    /// too short for it is the engine's corruption.
    fn xor_range(
        &self,
        store: &StoreId,
        bucket: u64,
        offset: usize,
        out: &mut [u8],
    ) -> Result<bool, BackendError> {
        let mut all = Vec::new();
        if !self.read(store, bucket, &mut all)? {
            return Ok(false);
        }
        xor_part(&all, offset, out)?;
        Ok(true)
    }
    /// Runs `reads` in order: for each, `None` if the bucket was never written, else the
    /// bytes wanted (empty for [`Want::Exists`]). A stored bucket too short for a range is
    /// the engine's corruption.
    fn fetch(&self, reads: &[Fetch]) -> Result<Vec<Option<Vec<u8>>>, BackendError> {
        reads
            .iter()
            .map(|f| match f.want {
                Want::Bucket => {
                    let mut out = Vec::new();
                    Ok(self.read(&f.store, f.bucket, &mut out)?.then_some(out))
                }
                Want::Range { offset, len } => {
                    let mut out = vec![0; len];
                    Ok(self
                        .xor_range(&f.store, f.bucket, offset, &mut out)?
                        .then_some(out))
                }
                Want::Exists => Ok(self.contains(&f.store, f.bucket)?.then(Vec::new)),
            })
            .collect()
    }
    /// True if the bucket exists.
    fn contains(&self, store: &StoreId, bucket: u64) -> Result<bool, BackendError>;
    /// Applies all puts or none, atomically (also across a crash).
    fn apply(&self, puts: &[Put<'_>]) -> Result<(), BackendError>;
    /// [`Backend::apply`], returning the bytes of buckets that had never been written (for
    /// the stored-bytes counter). By default, asks first ([`Want::Exists`]); an engine that
    /// learns it while writing says so then, without the extra round trip.
    fn apply_new(&self, puts: &[Put<'_>]) -> Result<u64, BackendError> {
        let mut seen = std::collections::HashSet::new();
        let first: Vec<&Put<'_>> = puts
            .iter()
            .filter(|p| seen.insert((p.store, p.bucket)))
            .collect();
        let asks: Vec<Fetch> = first
            .iter()
            .map(|p| Fetch {
                store: p.store,
                bucket: p.bucket,
                want: Want::Exists,
            })
            .collect();
        let found = self.fetch(&asks)?;
        self.apply(puts)?;
        Ok(first
            .iter()
            .zip(found)
            .filter(|(_, f)| f.is_none())
            .map(|(p, _)| p.data.len() as u64)
            .sum())
    }
    /// Records outbox `index` as owned by the capability hashed to `cap_hash`; `false` if
    /// the number is taken (nothing changes then). Durable after [`Backend::flush`].
    fn outbox_create(&self, index: u64, cap_hash: &[u8; 32]) -> Result<bool, BackendError>;
    /// Every outbox, in number order, with its capability hash.
    fn outboxes(&self) -> Result<Vec<(u64, [u8; 32])>, BackendError>;
    /// Makes everything applied so far durable (fsync).
    fn flush(&self) -> Result<(), BackendError>;
    /// Scans what is stored (slow: at startup only).
    fn usage(&self) -> Result<Usage, BackendError>;
    /// Bytes the engine uses on disk, without reading what is stored (for stats).
    fn disk_bytes(&self) -> Result<u64, BackendError>;
}

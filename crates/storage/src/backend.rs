//! The storage-engine seam: what the protocol needs from an embedded (or distributed)
//! key-value engine. `SledBackend` implements it; another engine plugs in here without
//! touching the protocol code.

use shroud_proto::{Geometry, StoreId};

/// What the server keeps about a store: the hash of its capability and its shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreMeta {
    /// SHA-256 of the capability (see [`crate::capability`]).
    pub cap_hash: [u8; 32],
    /// Bucket length and count.
    pub geometry: Geometry,
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
    /// Deletes a store and all its buckets, atomically; returns the bytes
    /// removed.
    fn delete(&self, store: &StoreId) -> Result<u64, BackendError>;
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
    /// True if the bucket exists.
    fn contains(&self, store: &StoreId, bucket: u64) -> Result<bool, BackendError>;
    /// Applies all puts or none, atomically (also across a crash).
    fn apply(&self, puts: &[Put<'_>]) -> Result<(), BackendError>;
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

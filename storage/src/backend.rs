//! The storage-engine seam: what the protocol needs from an embedded (or distributed)
//! key-value engine. `SledBackend` implements it; another engine plugs in here without
//! touching the protocol code.

use shroud_wire::{Geometry, StoreId};

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
pub enum BackendError {
    /// The engine reported an error.
    #[error("storage engine: {0}")]
    Engine(String),
    /// Stored metadata does not decode.
    #[error("corrupt metadata for store {0}")]
    CorruptMeta(StoreId),
}

/// An embedded key-value engine holding stores and buckets.
///
/// Calls are blocking; the server runs them off the async threads.
pub trait Backend: Send + Sync + 'static {
    /// The store's metadata, if it exists.
    fn meta(&self, store: &StoreId) -> Result<Option<StoreMeta>, BackendError>;
    /// Creates a store; `false` if the id is taken (nothing changes then).
    fn create(&self, store: &StoreId, meta: &StoreMeta) -> Result<bool, BackendError>;
    /// Deletes a store and all its buckets, atomically; returns the bucket bytes removed.
    fn delete(&self, store: &StoreId) -> Result<u64, BackendError>;
    /// Copies a bucket into `out`; `false` if it was never written.
    fn read(&self, store: &StoreId, bucket: u64, out: &mut Vec<u8>) -> Result<bool, BackendError>;
    /// True if the bucket exists.
    fn contains(&self, store: &StoreId, bucket: u64) -> Result<bool, BackendError>;
    /// Applies all puts or none, atomically (also across a crash).
    fn apply(&self, puts: &[Put<'_>]) -> Result<(), BackendError>;
    /// Makes everything applied so far durable (fsync).
    fn flush(&self) -> Result<(), BackendError>;
    /// Scans what is stored (slow: at startup and for stats).
    fn usage(&self) -> Result<Usage, BackendError>;
}

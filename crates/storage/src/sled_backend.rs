//! The default storage engine: sled 0.34.7, one tree for everything.
//!
//! Keys are `store id (16) || kind (1) || index (u64 BE)`: kind 0 is the store's metadata,
//! kind 1 its buckets. Keeping both in one tree makes a batch, and a store's deletion, a
//! single `apply_batch`, which sled applies atomically, crash included.
//!
//! The database's format version is the value of the key `format` (a `u32`, big-endian),
//! written when the database is created. A database from before versions (no `format` key,
//! written by 0.1.0) has format 1, today's: it is marked on first open. A database of any
//! other version is refused rather than misread; a later format comes with a migration here.
//!
//! sled has open upstream reports of corruption after an abrupt kill (#1527, #1533); the
//! crash test in `tests/suite/storage_crash.rs` kills a real server process to look for them.

use std::path::Path;

use shroud_proto::StoreId;

use crate::backend::{Backend, BackendError, Put, StoreMeta, Usage};

/// The format this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The key of the format version (6 bytes: never a store key, which has 25).
const FORMAT_KEY: &[u8] = b"format";
/// The prefix of an outbox's key, `outbox || number (u64 BE)` (14 bytes: never a store key).
const OUTBOX: &[u8] = b"outbox";

fn outbox_key(index: u64) -> [u8; 14] {
    let mut k = [0u8; 14];
    k[..6].copy_from_slice(OUTBOX);
    k[6..].copy_from_slice(&index.to_be_bytes());
    k
}

const META: u8 = 0;
const BUCKET: u8 = 1;
// Kinds 2 and 3 held inbox queues before protocol version 4: no longer written; deleting
// their store removes them with it.

fn key(store: &StoreId, kind: u8, index: u64) -> [u8; 25] {
    let mut k = [0u8; 25];
    k[..16].copy_from_slice(&store.0);
    k[16] = kind;
    k[17..].copy_from_slice(&index.to_be_bytes());
    k
}

fn engine(e: sled::Error) -> BackendError {
    BackendError::Engine(Box::new(e))
}

/// Stores and buckets in a sled database.
pub struct SledBackend {
    db: sled::Db,
}

impl SledBackend {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, BackendError> {
        let db = sled::Config::new().path(dir).open().map_err(engine)?;
        match db.get(FORMAT_KEY).map_err(engine)? {
            Some(v) if v.as_ref() == FORMAT_VERSION.to_be_bytes() => {}
            Some(v) => {
                let found = <[u8; 4]>::try_from(v.as_ref()).map_or(u32::MAX, u32::from_be_bytes);
                return Err(BackendError::UnknownFormat {
                    found,
                    supported: FORMAT_VERSION,
                });
            }
            None => {
                db.insert(FORMAT_KEY, &FORMAT_VERSION.to_be_bytes()[..])
                    .map_err(engine)?;
                db.flush().map_err(engine)?;
            }
        }
        Ok(SledBackend { db })
    }
}

impl Backend for SledBackend {
    fn meta(&self, store: &StoreId) -> Result<Option<StoreMeta>, BackendError> {
        match self.db.get(key(store, META, 0)).map_err(engine)? {
            Some(v) => StoreMeta::decode(store, &v).map(Some),
            None => Ok(None),
        }
    }

    fn create(&self, store: &StoreId, meta: &StoreMeta) -> Result<bool, BackendError> {
        let k = key(store, META, 0);
        let swapped = self
            .db
            .compare_and_swap(k, None::<&[u8]>, Some(&meta.encode()[..]))
            .map_err(engine)?;
        Ok(swapped.is_ok())
    }

    fn delete(&self, store: &StoreId) -> Result<u64, BackendError> {
        let mut batch = sled::Batch::default();
        batch.remove(&key(store, META, 0)[..]);
        let mut removed = 0;
        for kv in self.db.scan_prefix(&store.0[..]) {
            let (k, v) = kv.map_err(engine)?;
            if k.get(16) == Some(&BUCKET) {
                removed += v.len() as u64;
            }
            batch.remove(k);
        }
        self.db.apply_batch(batch).map_err(engine)?;
        Ok(removed)
    }

    fn read(&self, store: &StoreId, bucket: u64, out: &mut Vec<u8>) -> Result<bool, BackendError> {
        match self.db.get(key(store, BUCKET, bucket)).map_err(engine)? {
            Some(v) => {
                out.clear();
                out.extend_from_slice(&v);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Reads the slot out of sled's own copy of the value (no copy of the whole bucket).
    fn xor_range(
        &self,
        store: &StoreId,
        bucket: u64,
        offset: usize,
        out: &mut [u8],
    ) -> Result<bool, BackendError> {
        let Some(v) = self.db.get(key(store, BUCKET, bucket)).map_err(engine)? else {
            return Ok(false);
        };
        crate::backend::xor_part(&v, offset, out)?;
        Ok(true)
    }

    fn contains(&self, store: &StoreId, bucket: u64) -> Result<bool, BackendError> {
        self.db
            .contains_key(key(store, BUCKET, bucket))
            .map_err(engine)
    }

    fn apply(&self, puts: &[Put<'_>]) -> Result<(), BackendError> {
        let mut batch = sled::Batch::default();
        for p in puts {
            batch.insert(&key(&p.store, BUCKET, p.bucket)[..], p.data);
        }
        self.db.apply_batch(batch).map_err(engine)
    }

    fn outbox_create(&self, index: u64, cap_hash: &[u8; 32]) -> Result<bool, BackendError> {
        let swapped = self
            .db
            .compare_and_swap(outbox_key(index), None::<&[u8]>, Some(&cap_hash[..]))
            .map_err(engine)?;
        Ok(swapped.is_ok())
    }

    fn outboxes(&self) -> Result<Vec<(u64, [u8; 32])>, BackendError> {
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(OUTBOX) {
            let (k, v) = kv.map_err(engine)?;
            let index = k
                .get(6..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes);
            let hash = <[u8; 32]>::try_from(v.as_ref()).ok();
            match (index, hash) {
                (Some(i), Some(h)) => out.push((i, h)),
                _ => return Err(BackendError::CorruptOutboxes(out.len() as u64)),
            }
        }
        Ok(out)
    }

    fn flush(&self) -> Result<(), BackendError> {
        self.db.flush().map(|_| ()).map_err(engine)
    }

    fn disk_bytes(&self) -> Result<u64, BackendError> {
        self.db.size_on_disk().map_err(engine)
    }

    fn usage(&self) -> Result<Usage, BackendError> {
        let mut u = Usage {
            disk_bytes: self.db.size_on_disk().map_err(engine)?,
            ..Usage::default()
        };
        for kv in self.db.iter() {
            let (k, v) = kv.map_err(engine)?;
            match k.get(16) {
                Some(&META) => u.stores += 1,
                Some(&BUCKET) => {
                    u.buckets += 1;
                    u.bucket_bytes += v.len() as u64;
                }
                _ => {}
            }
        }
        Ok(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shroud_proto::Geometry;

    /// A store's metadata record as 0.1.0 wrote it (format 1), byte for byte.
    const META_V1: &str = include_str!("../samples/store-meta-v1.hex");

    fn unhex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER.decode(s.trim().as_bytes()).unwrap()
    }

    #[test]
    fn reads_the_stored_sample_of_format_1() {
        let store = StoreId([7; 16]);
        let m = StoreMeta::decode(&store, &unhex(META_V1)).unwrap();
        assert_eq!(m.cap_hash, [0xab; 32]);
        assert_eq!(
            m.geometry,
            Geometry {
                bucket_len: 4160,
                buckets: 8191
            }
        );
        assert_eq!(m.encode().to_vec(), unhex(META_V1));
        assert_eq!(key(&store, BUCKET, 5).len(), 25);
    }

    #[test]
    fn the_format_is_marked_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        drop(SledBackend::open(dir.path()).unwrap());
        {
            let db = sled::Config::new().path(dir.path()).open().unwrap();
            assert_eq!(
                db.get(FORMAT_KEY).unwrap().unwrap().as_ref(),
                FORMAT_VERSION.to_be_bytes()
            );
            db.insert(FORMAT_KEY, &2u32.to_be_bytes()[..]).unwrap();
            db.flush().unwrap();
        }
        assert!(matches!(
            SledBackend::open(dir.path()),
            Err(BackendError::UnknownFormat { found: 2, .. })
        ));
    }

    fn meta(len: u32) -> StoreMeta {
        StoreMeta {
            cap_hash: [3; 32],
            geometry: Geometry {
                bucket_len: len,
                buckets: 10,
            },
        }
    }

    #[test]
    fn stores_buckets_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let b = SledBackend::open(dir.path()).unwrap();
        let (s1, s2) = (StoreId([1; 16]), StoreId([2; 16]));
        assert!(b.create(&s1, &meta(4)).unwrap());
        assert!(!b.create(&s1, &meta(8)).unwrap(), "ids are not reused");
        assert_eq!(b.meta(&s1).unwrap(), Some(meta(4)));
        assert!(b.create(&s2, &meta(4)).unwrap());
        b.apply(&[
            Put {
                store: s1,
                bucket: 0,
                data: &[1, 1, 1, 1],
            },
            Put {
                store: s2,
                bucket: 0,
                data: &[2, 2, 2, 2],
            },
        ])
        .unwrap();
        b.flush().unwrap();
        let mut out = Vec::new();
        assert!(b.read(&s1, 0, &mut out).unwrap());
        assert_eq!(out, vec![1; 4]);
        assert!(!b.read(&s1, 1, &mut out).unwrap());
        assert_eq!(b.usage().unwrap().buckets, 2);
        b.delete(&s1).unwrap();
        assert_eq!(b.meta(&s1).unwrap(), None);
        assert!(!b.read(&s1, 0, &mut out).unwrap());
        assert!(
            b.read(&s2, 0, &mut out).unwrap(),
            "other stores are untouched"
        );
        let u = b.usage().unwrap();
        assert_eq!((u.stores, u.buckets, u.bucket_bytes), (1, 1, 4));
    }
}

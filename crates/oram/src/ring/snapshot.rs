//! Snapshot and restore of a Ring ORAM client's whole state: every page of
//! [`super::pages`] in one value, for callers that save it whole. Like the pages, it holds
//! everything but the key (the rewritten buckets still owed to storage included, so that a
//! caller that saves it before sending an access's request can always send them again), is
//! plaintext for the caller to encrypt at rest, and is wiped from memory when dropped.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use zeroize::{Zeroize, Zeroizing};

use super::engine::RingOram;
use super::pages::Dirty;
use crate::pages::Pages;
use crate::snapshot::{decode, encode};
use crate::{Error, Key};

/// The format of [`RingOram::snapshot`].
const VERSION: u32 = 1;

#[derive(Serialize, Deserialize)]
pub(super) struct Snapshot {
    version: u32,
    pages: Vec<(String, ByteBuf)>,
}

impl Zeroize for Snapshot {
    fn zeroize(&mut self) {
        for (_, p) in &mut self.pages {
            p.as_mut_slice().zeroize();
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
        pack(&self.pages(Dirty::everything())?)
    }

    /// Rebuilds an engine from [`RingOram::snapshot`] bytes and the store's key, in a new
    /// lineage, as [`RingOram::from_pages`] does.
    pub fn restore(bytes: &[u8], key: Key) -> Result<Self, Error> {
        let snap = unpack(bytes)?;
        let by_name = by_name(&snap);
        RingOram::from_pages(|name| by_name.get(name).copied(), key)
    }
}

/// Every page in one value (the snapshot format of both Ring ORAM engines).
pub(super) fn pack(pages: &Pages) -> Result<Zeroizing<Vec<u8>>, Error> {
    let snap = Zeroizing::new(Snapshot {
        version: VERSION,
        pages: pages
            .iter()
            .map(|(name, bytes)| (name.clone(), ByteBuf::from(bytes.to_vec())))
            .collect(),
    });
    encode(&*snap)
}

/// The pages of [`pack`]'s bytes.
pub(super) fn unpack(bytes: &[u8]) -> Result<Zeroizing<Snapshot>, Error> {
    let snap: Zeroizing<Snapshot> = decode(bytes)?;
    if snap.version != VERSION {
        return Err(Error::BadSnapshot("unknown version".into()));
    }
    Ok(snap)
}

/// The pages of a snapshot, by name.
pub(super) fn by_name(snap: &Snapshot) -> std::collections::HashMap<&str, &[u8]> {
    snap.pages
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect()
}

//! The Ring ORAM storage seam, and [`MemoryStore`] behind it.

use std::convert::Infallible;

use super::slot::xor_into;
use super::{RingReply, RingRequest, SlotId};
use crate::MemoryStore;

/// Where the sealed buckets of a Ring ORAM store live: one call per access.
///
/// # Security
/// Implementations are untrusted: whatever they return is verified before use.
pub trait RingStore {
    /// The store's own failures (I/O, network).
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies `req`: stores its buckets, then answers its reads. `slot_len` is the length
    /// of one slot (every bucket is a whole number of them).
    fn exchange(&mut self, req: &RingRequest, slot_len: usize) -> Result<RingReply, Self::Error>;
}

fn slot(store: &MemoryStore, id: SlotId, slot_len: usize) -> Option<&[u8]> {
    let at = usize::from(id.slot) * slot_len;
    store.get(id.bucket).and_then(|b| b.get(at..at + slot_len))
}

/// The same buckets in a hash map, read a slot at a time.
impl RingStore for MemoryStore {
    type Error = Infallible;

    fn exchange(&mut self, req: &RingRequest, slot_len: usize) -> Result<RingReply, Infallible> {
        for (id, bytes) in &req.writes {
            self.insert(*id, bytes.clone());
        }
        let online = req
            .online
            .iter()
            .map(|ids| {
                let mut acc = vec![0u8; slot_len];
                for id in ids {
                    if let Some(s) = slot(self, *id, slot_len) {
                        xor_into(&mut acc, s);
                    }
                }
                acc
            })
            .collect();
        let reads = req
            .reads
            .iter()
            .map(|id| slot(self, *id, slot_len).map(<[u8]>::to_vec))
            .collect();
        Ok(RingReply { online, reads })
    }
}

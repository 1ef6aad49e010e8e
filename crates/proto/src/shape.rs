//! The one store shape and schedule a proxy serves: the geometry every client's ORAM store
//! has, how many slots each client sends per epoch, and the mail slot's sizes. Every wire
//! size in it is derived here, once, from the engine's own [`TreeGeometry`], so the proxy,
//! the client and storage cannot disagree about the length of a path or a bucket.

use serde::{Deserialize, Serialize};
use shroud_oram::{Config, PositionMap, TreeGeometry};

use crate::mail::ENVELOPE_LEN;

/// Slots per bucket (Z) of every shape: 4, the value for which Path ORAM's stash bound is
/// proven (Stefanov et al., CCS 2013, section 4).
pub const BUCKET_SLOTS: u32 = 4;

/// The one store shape and schedule a proxy serves, sent to every client in its hello.
///
/// Build one with [`Shape::new`] (and [`Shape::with_schedule`], [`Shape::with_mail`]); the
/// fields after the chosen ones are derived and never set by hand.
///
/// # Security
/// Everything here is public: the proxy announces it, storage sees its consequences. It is
/// what makes every client's traffic the same size: a shape is the same for everyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Blocks per store (N).
    pub capacity: u64,
    /// Bytes per block (B).
    pub block_size: u32,
    /// Slots per bucket (Z).
    pub bucket_slots: u32,
    /// Levels every client caches (T).
    pub cached_levels: u32,
    /// Buckets per path on the wire: tree levels minus cached levels (derived).
    pub path_len: u32,
    /// Bytes of every sealed bucket (derived).
    pub bucket_len: u32,
    /// Buckets of every store (derived).
    pub buckets: u64,
    /// Slots every client sends per epoch (K).
    pub slots_per_epoch: u32,
    /// Epoch length, milliseconds (E).
    pub epoch_ms: u32,
    /// Envelopes every client deposits per epoch (D); 0 with `drains_per_epoch` 0 turns the
    /// mailbox off.
    pub deposits_per_epoch: u32,
    /// Envelopes every client drains per epoch (M).
    pub drains_per_epoch: u32,
    /// Bytes of every envelope (derived: [`ENVELOPE_LEN`] with a mailbox, else 0).
    pub envelope_len: u32,
}

/// A shape that cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ShapeError {
    /// No slots, or an epoch of no time.
    #[error("slots per epoch and the epoch length must be positive")]
    EmptySchedule,
    /// No blocks, or blocks of no bytes.
    #[error("capacity and block size must be positive")]
    EmptyStore,
    /// More cached levels than the tree has.
    #[error("{cached} cached levels is more than a tree of {capacity} blocks has")]
    TooManyCachedLevels {
        /// Levels asked for.
        cached: u32,
        /// Blocks of the store.
        capacity: u64,
    },
}

impl Default for Shape {
    /// The defaults the cost table in docs/benchmarks.md argues for: N = 2^14 blocks of
    /// 1 KiB (16 MiB per user), Z = 4, 8 cached levels (about 1 MiB of client memory), one
    /// slot every 2 s, one envelope deposited and two drained per epoch.
    fn default() -> Self {
        Shape::new(1 << 14, 1024, 8)
            .and_then(|s| s.with_schedule(1, 2000))
            .map(|s| s.with_mail(1, 2))
            .expect("the default shape is valid")
    }
}

impl Shape {
    /// A store of `capacity` blocks of `block_size` bytes, `cached_levels` of them held by
    /// the client; one slot every 2 s and the default mail slot (1 deposit, 2 drains).
    pub fn new(capacity: u64, block_size: u32, cached_levels: u32) -> Result<Shape, ShapeError> {
        if capacity == 0 || block_size == 0 {
            return Err(ShapeError::EmptyStore);
        }
        let g = TreeGeometry::for_blocks(capacity, BUCKET_SLOTS, block_size, cached_levels);
        if g.cached_levels != cached_levels {
            return Err(ShapeError::TooManyCachedLevels {
                cached: cached_levels,
                capacity,
            });
        }
        Ok(Shape {
            capacity,
            block_size,
            bucket_slots: BUCKET_SLOTS,
            cached_levels,
            path_len: g.fetched_levels() as u32,
            bucket_len: g.ciphertext_len() as u32,
            buckets: g.bucket_count(),
            slots_per_epoch: 1,
            epoch_ms: 2000,
            deposits_per_epoch: 0,
            drains_per_epoch: 0,
            envelope_len: 0,
        }
        .with_mail(1, 2))
    }

    /// The same store, `slots` slots every `epoch_ms` milliseconds.
    pub fn with_schedule(self, slots: u32, epoch_ms: u32) -> Result<Shape, ShapeError> {
        if slots == 0 || epoch_ms == 0 {
            return Err(ShapeError::EmptySchedule);
        }
        Ok(Shape {
            slots_per_epoch: slots,
            epoch_ms,
            ..self
        })
    }

    /// The same store and schedule with a mail slot of `deposits` envelopes and `drains`
    /// drained per epoch (both 0: no mailbox).
    pub fn with_mail(self, deposits: u32, drains: u32) -> Shape {
        let mail = deposits > 0 || drains > 0;
        Shape {
            deposits_per_epoch: deposits,
            drains_per_epoch: drains,
            envelope_len: if mail { ENVELOPE_LEN as u32 } else { 0 },
            ..self
        }
    }

    /// True if clients send a mail slot every epoch.
    pub fn mail(&self) -> bool {
        self.deposits_per_epoch > 0 || self.drains_per_epoch > 0
    }

    /// The engine configuration of a client store of this shape: a flat position map (the
    /// shape has one tree) and batches of up to one epoch's slots.
    pub fn engine_config(&self) -> Config {
        Config {
            capacity: self.capacity,
            block_size: self.block_size,
            bucket_slots: self.bucket_slots,
            cached_levels: self.cached_levels,
            position_map: PositionMap::Flat,
            max_batch: self.slots_per_epoch,
            ..Config::new(self.capacity, self.block_size)
        }
    }

    /// The tree every store of this shape has.
    pub fn geometry(&self) -> TreeGeometry {
        TreeGeometry::for_blocks(
            self.capacity,
            self.bucket_slots,
            self.block_size,
            self.cached_levels,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_sizes_are_the_engines() {
        let s = Shape::new(1 << 12, 1024, 4).unwrap();
        let g = TreeGeometry::for_blocks(1 << 12, 4, 1024, 4);
        assert_eq!(s.path_len as usize, g.fetched_levels());
        assert_eq!(s.bucket_len as usize, g.ciphertext_len());
        assert_eq!(s.buckets, g.bucket_count());
        assert_eq!(s.geometry(), g);
    }

    #[test]
    fn invalid_shapes_are_refused() {
        assert_eq!(Shape::new(0, 1024, 0), Err(ShapeError::EmptyStore));
        assert!(matches!(
            Shape::new(16, 64, 30),
            Err(ShapeError::TooManyCachedLevels { .. })
        ));
        assert_eq!(
            Shape::default().with_schedule(0, 100),
            Err(ShapeError::EmptySchedule)
        );
    }

    #[test]
    fn mail_off_has_no_envelopes() {
        let s = Shape::default().with_mail(0, 0);
        assert!(!s.mail());
        assert_eq!(s.envelope_len, 0);
        assert_eq!(Shape::default().envelope_len as usize, ENVELOPE_LEN);
    }
}

//! The one store shape and schedule a proxy serves: the geometry every client's ORAM store
//! has, how many slots each client sends per epoch, and the mail rounds' sizes. Every wire
//! size in it is derived here, once, from the engine's own [`TreeGeometry`] and the PIR
//! crate's [`shroud_pir::Geometry`], so the proxy, the client and storage cannot disagree
//! about the length of a path, a bucket or a query.

use serde::{Deserialize, Serialize};
use shroud_oram::ring::RingConfig;
use shroud_oram::{Config, PositionMap, TreeGeometry};

use crate::board::write_len;

/// Slots per bucket (Z) of every shape: 4, the value for which Path ORAM's stash bound is
/// proven (Stefanov et al., CCS 2013, section 4).
pub const BUCKET_SLOTS: u32 = 4;

/// Which tree ORAM every store of a shape runs.
///
/// # Security
/// Public, like the whole shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Path ORAM: every slot reads a whole path and writes an earlier one back.
    Path,
    /// Ring ORAM ([`shroud_oram::ring`]): buckets of Z real and S dummy slots; every slot
    /// reads one slot of each bucket of a path, XORed into one; every A-th access evicts
    /// (its slots read one by one, its buckets rewritten by the next batch), and every
    /// `reshuffle_every`-th eviction also reshuffles one bucket.
    Ring {
        /// S: dummy slots per bucket.
        dummy_slots: u32,
        /// A: accesses per eviction.
        evict_every: u32,
        /// Evictions per scheduled reshuffle.
        reshuffle_every: u32,
    },
}

/// The one store shape and schedule a proxy serves, sent to every client in its hello.
///
/// Build one with [`Shape::new`] or [`Shape::ring`] (and [`Shape::with_schedule`], [`Shape::with_mail`]); the
/// fields after the chosen ones are derived and never set by hand.
///
/// # Security
/// Everything here is public: the proxy announces it, storage sees its consequences. It is
/// what makes every client's traffic the same size: a shape is the same for everyone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shape {
    /// Path or Ring ORAM.
    pub mode: Mode,
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
    /// Bytes of every sealed slot in Ring ORAM, 0 in Path ORAM (derived).
    pub slot_len: u32,
    /// Buckets of every store (derived).
    pub buckets: u64,
    /// Slots every client sends per epoch (K).
    pub slots_per_epoch: u32,
    /// Epoch length, milliseconds (E).
    pub epoch_ms: u32,
    /// Epochs per mail round; 0 turns mail off. Every client sends one round frame in the
    /// first epoch of every round (docs/mail-delivery.md).
    pub round_epochs: u32,
    /// PIR queries every client sends per round (Q).
    pub queries_per_round: u32,
    /// Rows of storage's mail board (a power of two from 2^8 to 2^16; storage's own).
    pub board_rows: u64,
    /// Rows of every outbox (R; storage's own).
    pub outbox_rows: u32,
    /// Bytes of a reader's PIR key, sent once per connection (derived).
    pub key_len: u32,
    /// Bytes of every PIR query (derived).
    pub query_len: u32,
    /// Bytes of every PIR answer (derived).
    pub answer_len: u32,
    /// Bytes of every sealed outbox write (derived).
    pub write_len: u32,
}

/// Every mail field off (the store and schedule fields are placeholders, always replaced).
const MAIL_OFF: Shape = Shape {
    mode: Mode::Path,
    capacity: 0,
    block_size: 0,
    bucket_slots: 0,
    cached_levels: 0,
    path_len: 0,
    bucket_len: 0,
    slot_len: 0,
    buckets: 0,
    slots_per_epoch: 0,
    epoch_ms: 0,
    round_epochs: 0,
    queries_per_round: 0,
    board_rows: 0,
    outbox_rows: 0,
    key_len: 0,
    query_len: 0,
    answer_len: 0,
    write_len: 0,
};

/// Epochs at the start of a round in which its round frames are taken; the round's writes
/// and queries go to storage at the boundary after the last of them.
pub const ROUND_WINDOW: u64 = 2;

/// The mail board storage runs by default: 2^13 rows of 1 KiB, in outboxes of 4 rows (one
/// Spiral record each, so one query fetches a whole outbox).
pub const DEFAULT_BOARD: (u64, u32) = (1 << 13, 4);

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
    /// A mail board PIR has no parameters for, or outboxes that do not fit one of its
    /// records.
    #[error("no mail board of {rows} rows in outboxes of {outbox_rows}")]
    Board {
        /// Rows asked for.
        rows: u64,
        /// Rows per outbox asked for.
        outbox_rows: u32,
    },
    /// Ring ORAM parameters the engine refuses.
    #[error("Ring ORAM parameters refused: {0}")]
    Ring(&'static str),
    /// More slots per epoch than one Ring ORAM batch may hold (at most A and S).
    #[error("{slots} slots per epoch is more than a Ring ORAM batch of at most {max}")]
    BatchTooLarge {
        /// Slots asked for.
        slots: u32,
        /// The most this Ring ORAM shape takes.
        max: u32,
    },
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
    /// The defaults the cost tables in docs/benchmarks.md argue for: N = 2^14 blocks of
    /// 1 KiB (16 MiB per user), Z = 4, 8 cached levels (about 1 MiB of client memory), one
    /// slot every 2 s; a mail round every 30 epochs (60 s) with 3 queries, on
    /// [`DEFAULT_BOARD`].
    fn default() -> Self {
        Shape::new(1 << 14, 1024, 8)
            .and_then(|s| s.with_schedule(1, 2000))
            .map(|s| s.with_mail(30, 3))
            .expect("the default shape is valid")
    }
}

impl Shape {
    /// A store of `capacity` blocks of `block_size` bytes, `cached_levels` of them held by
    /// the client; one slot every 2 s and the default mail rounds (every 30 epochs, 3
    /// queries, [`DEFAULT_BOARD`]).
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
            ..MAIL_OFF
        }
        .with_mail(30, 3))
    }

    /// A Ring ORAM store of `capacity` blocks of `block_size` bytes, `cached_levels` of
    /// them held by the client, with the engine's Z, S, A and reshuffle schedule
    /// ([`shroud_oram::ring`] argues for them); the schedule and mail as in [`Shape::new`].
    pub fn ring(capacity: u64, block_size: u32, cached_levels: u32) -> Result<Shape, ShapeError> {
        let c = RingConfig {
            cached_levels,
            ..RingConfig::new(capacity, block_size)
        };
        Shape::with_ring(c)
    }

    /// A Ring ORAM store of the configuration `c` (its batch size is the schedule's, set
    /// by [`Shape::with_schedule`]).
    pub fn with_ring(c: RingConfig) -> Result<Shape, ShapeError> {
        if c.capacity == 0 || c.block_size == 0 {
            return Err(ShapeError::EmptyStore);
        }
        RingConfig { max_batch: 1, ..c }
            .validate()
            .map_err(|e| match e {
                shroud_oram::Error::InvalidConfig(why) => ShapeError::Ring(why),
                _ => ShapeError::Ring("invalid"),
            })?;
        if c.cached_levels > c.height() {
            return Err(ShapeError::TooManyCachedLevels {
                cached: c.cached_levels,
                capacity: c.capacity,
            });
        }
        let len = |n: usize| u32::try_from(n).map_err(|_| ShapeError::Ring("buckets too long"));
        Ok(Shape {
            mode: Mode::Ring {
                dummy_slots: c.s,
                evict_every: c.a,
                reshuffle_every: c.reshuffle_every,
            },
            capacity: c.capacity,
            block_size: c.block_size,
            bucket_slots: c.z,
            cached_levels: c.cached_levels,
            path_len: c.height() + 1 - c.cached(),
            bucket_len: len(c.bucket_len())?,
            slot_len: len(c.slot_len())?,
            buckets: c.buckets(),
            slots_per_epoch: 1,
            epoch_ms: 2000,
            ..MAIL_OFF
        }
        .with_mail(30, 3))
    }

    /// The same store, `slots` slots every `epoch_ms` milliseconds.
    pub fn with_schedule(self, slots: u32, epoch_ms: u32) -> Result<Shape, ShapeError> {
        if slots == 0 || epoch_ms == 0 {
            return Err(ShapeError::EmptySchedule);
        }
        if let Mode::Ring {
            dummy_slots,
            evict_every,
            ..
        } = self.mode
        {
            let max = evict_every.min(dummy_slots).min(64);
            if slots > max {
                return Err(ShapeError::BatchTooLarge { slots, max });
            }
        }
        Ok(Shape {
            slots_per_epoch: slots,
            epoch_ms,
            ..self
        })
    }

    /// The same store and schedule with a mail round every `round_epochs` epochs of
    /// `queries` queries each (either 0: no mail), on the board this shape names
    /// ([`DEFAULT_BOARD`] unless [`Shape::with_board`] said otherwise).
    pub fn with_mail(self, round_epochs: u32, queries: u32) -> Shape {
        let (rows, outbox_rows) = if self.board_rows == 0 {
            DEFAULT_BOARD
        } else {
            (self.board_rows, self.outbox_rows)
        };
        let on = Shape {
            round_epochs,
            queries_per_round: queries,
            ..self
        };
        match on.with_board(rows, outbox_rows) {
            Ok(s) if round_epochs > 0 && queries > 0 => s,
            _ => Shape {
                mode: self.mode,
                capacity: self.capacity,
                block_size: self.block_size,
                bucket_slots: self.bucket_slots,
                cached_levels: self.cached_levels,
                path_len: self.path_len,
                bucket_len: self.bucket_len,
                slot_len: self.slot_len,
                buckets: self.buckets,
                slots_per_epoch: self.slots_per_epoch,
                epoch_ms: self.epoch_ms,
                ..MAIL_OFF
            },
        }
    }

    /// The same shape on a mail board of `rows` rows in outboxes of `outbox_rows` rows (the
    /// board storage runs: see `shroud storage --board-rows`). An outbox must fit one PIR
    /// record, so that one query fetches it whole.
    pub fn with_board(self, rows: u64, outbox_rows: u32) -> Result<Shape, ShapeError> {
        let refused = ShapeError::Board { rows, outbox_rows };
        let g = shroud_pir::Geometry::new(rows).map_err(|_| refused.clone())?;
        if outbox_rows == 0
            || !outbox_rows.is_power_of_two()
            || u64::from(outbox_rows) > g.rows_per_record()
        {
            return Err(refused);
        }
        let len = |n: usize| u32::try_from(n).map_err(|_| refused.clone());
        Ok(Shape {
            board_rows: rows,
            outbox_rows,
            key_len: len(g.key_len())?,
            query_len: len(g.query_len())?,
            answer_len: len(g.answer_len())?,
            write_len: len(write_len(outbox_rows, shroud_pir::ROW_LEN as u32))?,
            ..self
        })
    }

    /// True if clients send a round frame every round.
    pub fn mail(&self) -> bool {
        self.round_epochs > 0
    }

    /// The mail round `epoch` belongs to, if its round frames are taken in it: the first
    /// [`ROUND_WINDOW`] epochs of every round (a client whose frames land an epoch late still
    /// makes it).
    pub fn round_of(&self, epoch: u64) -> Option<u64> {
        let n = u64::from(self.round_epochs);
        (self.mail() && epoch % n < self.round_window()).then(|| epoch / n)
    }

    /// The epochs at the start of a round in which its frames are taken.
    pub fn round_window(&self) -> u64 {
        ROUND_WINDOW.min(u64::from(self.round_epochs))
    }

    /// True if `epoch` is the last epoch of a round's window (whose boundary closes it).
    pub fn closes_round(&self, epoch: u64) -> bool {
        self.mail() && epoch % u64::from(self.round_epochs) == self.round_window() - 1
    }

    /// The outboxes of the board.
    pub fn outboxes(&self) -> u64 {
        if self.outbox_rows == 0 {
            0
        } else {
            self.board_rows / u64::from(self.outbox_rows)
        }
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

    /// The Ring ORAM configuration of a client store of this shape (`None` in Path ORAM
    /// mode): batches of one epoch's slots.
    pub fn ring_config(&self) -> Option<RingConfig> {
        let Mode::Ring {
            dummy_slots,
            evict_every,
            reshuffle_every,
        } = self.mode
        else {
            return None;
        };
        Some(RingConfig {
            z: self.bucket_slots,
            s: dummy_slots,
            a: evict_every,
            reshuffle_every,
            cached_levels: self.cached_levels,
            max_batch: self.slots_per_epoch,
            ..RingConfig::new(self.capacity, self.block_size)
        })
    }

    /// True in Ring ORAM mode.
    pub fn is_ring(&self) -> bool {
        matches!(self.mode, Mode::Ring { .. })
    }

    /// The most buckets one slot may write: a path (Path ORAM); in Ring ORAM, the first
    /// slot of an epoch carries the last batch's rewritten buckets: an eviction path, the
    /// scheduled reshuffle, and at most every bucket the batch read reshuffled early.
    pub fn max_slot_writes(&self) -> usize {
        let n = self.path_len as usize;
        match self.mode {
            Mode::Path => n,
            Mode::Ring { .. } => n + 1 + n * self.slots_per_epoch as usize,
        }
    }

    /// The most slots one Ring ORAM slot may read one by one: Z of each bucket it
    /// rewrites ([`Shape::max_slot_writes`]); 0 in Path ORAM.
    pub fn max_slot_reads(&self) -> usize {
        match self.mode {
            Mode::Path => 0,
            Mode::Ring { .. } => self.max_slot_writes() * self.bucket_slots as usize,
        }
    }

    /// Ring ORAM's fixed public pattern: the buckets rewritten and the slots read one by
    /// one by the store's `batch`-th batch (0 from its creation; K accesses each), when the
    /// reshuffle schedule keeps up (a bucket that still reaches S reads adds one bucket
    /// and Z slots, by public read counts: [`shroud_oram::ring`]). `(0, 0)` in Path ORAM.
    pub fn ring_maintenance(&self, batch: u64) -> (usize, usize) {
        let Mode::Ring {
            evict_every,
            reshuffle_every,
            ..
        } = self.mode
        else {
            return (0, 0);
        };
        let (k, a) = (u64::from(self.slots_per_epoch), u64::from(evict_every));
        let before = batch * k;
        if (before + k) / a == before / a {
            return (0, 0);
        }
        let evictions = before / a;
        let every = u64::from(reshuffle_every);
        let buckets =
            self.path_len as usize + usize::from(every > 0 && evictions.is_multiple_of(every));
        (buckets, buckets * self.bucket_slots as usize)
    }

    /// Epochs between a client's evictions in Ring ORAM (its maintenance comes every A
    /// accesses, K a epoch); `None` in Path ORAM.
    pub fn eviction_period_epochs(&self) -> Option<u32> {
        match self.mode {
            Mode::Ring { evict_every, .. } => {
                Some(evict_every.div_ceil(self.slots_per_epoch.max(1)).max(1))
            }
            _ => None,
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
    fn ring_shapes_are_the_engines() {
        let s = Shape::ring(1 << 14, 1024, 8).unwrap();
        let c = s.ring_config().unwrap();
        assert!(s.is_ring() && !Shape::default().is_ring());
        assert_eq!(Shape::default().ring_config(), None);
        assert_eq!((c.z, c.s, c.a, c.max_batch), (32, 64, 46, 1));
        assert_eq!(s.path_len, c.height() + 1 - 8);
        assert_eq!(s.bucket_len as usize, c.bucket_len());
        assert_eq!(s.slot_len as usize, c.slot_len());
        assert_eq!(s.buckets, c.buckets());
        assert_eq!(
            s.with_schedule(4, 100)
                .unwrap()
                .ring_config()
                .unwrap()
                .max_batch,
            4
        );
        assert_eq!(
            s.with_schedule(47, 100),
            Err(ShapeError::BatchTooLarge { slots: 47, max: 46 })
        );
        assert!(matches!(
            Shape::ring(16, 64, 10),
            Err(ShapeError::TooManyCachedLevels { .. })
        ));
        assert!(matches!(Shape::ring(16, 8, 0), Err(ShapeError::Ring(_))));
    }

    #[test]
    fn the_ring_pattern_follows_the_access_count() {
        // K = 1, A = 46: batches 45, 91, 137... evict; every third eviction (the 1st, 4th,
        // ...) adds the scheduled reshuffle.
        let s = Shape::ring(1 << 14, 1024, 8).unwrap();
        let (n, z) = (s.path_len as usize, 32);
        let evicting: Vec<u64> = (0..460)
            .filter(|&b| s.ring_maintenance(b) != (0, 0))
            .collect();
        assert_eq!(evicting, (0..10).map(|e| 46 * e + 45).collect::<Vec<_>>());
        assert_eq!(s.ring_maintenance(45), (n + 1, (n + 1) * z));
        assert_eq!(s.ring_maintenance(91), (n, n * z));
        assert_eq!(s.ring_maintenance(183), (n + 1, (n + 1) * z));
        // K = 3: the batch holding access 46 (accesses 45..47) is batch 15.
        let k3 = s.with_schedule(3, 100).unwrap();
        assert_eq!(k3.ring_maintenance(15), (n + 1, (n + 1) * z));
        assert_eq!(k3.ring_maintenance(14), (0, 0));
        assert_eq!(Shape::default().ring_maintenance(45), (0, 0));
        assert!(k3.max_slot_writes() >= n + 1 + 3 * n);
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
    fn mail_off_has_no_pir_sizes() {
        let s = Shape::default().with_mail(0, 0);
        assert!(!s.mail());
        assert_eq!((s.query_len, s.key_len, s.write_len), (0, 0, 0));
        let on = Shape::default();
        assert_eq!(
            [59, 60, 61, 62].map(|e| on.round_of(e)),
            [None, Some(2), Some(2), None]
        );
        assert!(on.closes_round(61) && !on.closes_round(60));
        assert_eq!(Shape::default().with_mail(0, 0).round_of(5), None);
        assert!(!Shape::default().with_mail(0, 0).closes_round(5));
        let short = on.with_mail(1, 3);
        assert_eq!(short.round_of(7), Some(7));
        assert!(short.closes_round(7));
        assert_eq!(on.board_rows, DEFAULT_BOARD.0);
        assert!(on.query_len > 0 && on.answer_len > 0 && on.key_len > on.query_len);
    }

    #[test]
    fn boards_take_outboxes_that_fit_a_record() {
        let s = Shape::default();
        assert!(s.with_board(256, 2).is_ok());
        assert!(s.with_board(256, 4).is_err(), "2^8 rows: records of 2 rows");
        assert!(s.with_board(1 << 13, 4).is_ok());
        assert!(s.with_board(1 << 13, 3).is_err());
        assert!(s.with_board(1000, 2).is_err());
        let small = s.with_board(256, 2).unwrap().with_mail(5, 2);
        assert_eq!((small.board_rows, small.outbox_rows), (256, 2));
        assert_eq!(small.outboxes(), 128);
    }
}

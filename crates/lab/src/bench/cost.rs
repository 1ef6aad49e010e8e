//! `shroud bench cost`: what cover traffic costs one always-on client per day, from the
//! exact encoded sizes of its slot frames (plus TLS 1.3 record overhead; TCP/IP headers add
//! about 4% more).

use anyhow::Result;
use serde::Serialize;
use shroud_proto::proxy::{ClientMsg, ProxyMsg, Slot, SlotDone, SlotWrite};
use shroud_proto::{Capability, Grant, Limits, ReadResult, StoreId, encode};

use shroud_proto::Shape;

/// One row of the cost table.
#[derive(Clone, Debug, Serialize)]
pub struct Cost {
    /// Epoch length, ms (E).
    pub epoch_ms: u32,
    /// Slots per client per epoch (K).
    pub slots: u32,
    /// Blocks per store (N).
    pub capacity: u64,
    /// Bytes per block (B).
    pub block: u32,
    /// Levels cached by the client (T).
    pub cached_levels: u32,
    /// Buckets per path on the wire.
    pub path_len: u32,
    /// Bytes of one sealed bucket.
    pub bucket_bytes: u32,
    /// Client memory for the cached levels, bytes.
    pub cache_bytes: u64,
    /// Bytes up per slot (client to proxy), with TLS framing.
    pub up_per_slot: u64,
    /// Bytes down per slot.
    pub down_per_slot: u64,
    /// Bytes up per day.
    pub up_per_day: u64,
    /// Bytes down per day.
    pub down_per_day: u64,
}

/// TLS 1.3 adds a 5-byte header, a 16-byte tag and a content-type byte per record of at
/// most 16 KiB; frames add their 4-byte length.
fn on_the_wire(frame: usize) -> u64 {
    let with_len = frame + 4;
    (with_len + with_len.div_ceil(16 * 1024) * 22) as u64
}

/// The cost of one always-on client under `o`.
pub fn cost(s: Shape) -> Result<Cost> {
    let n = s.path_len as usize;
    let grant = Grant {
        store: StoreId([0; 16]),
        capability: Capability([0; 32]),
    };
    let slot = ClientMsg::Slot(Slot {
        seq: 0,
        grant,
        write: true,
        writes: vec![
            SlotWrite {
                bucket: 0,
                data: vec![0; s.bucket_len as usize]
            };
            n
        ],
        reads: vec![0; n],
    });
    let done = ProxyMsg::Done(SlotDone {
        seq: 0,
        epoch: 0,
        reads: vec![
            ReadResult {
                present: true,
                data: vec![0; s.bucket_len as usize]
            };
            n
        ],
    });
    let limits = Limits {
        max_frame: usize::MAX / 2,
    };
    let up = on_the_wire(encode(&slot, limits)?.len());
    let down = on_the_wire(encode(&done, limits)?.len());
    let per_day = 86_400_000 / u64::from(s.epoch_ms) * u64::from(s.slots_per_epoch);
    Ok(Cost {
        epoch_ms: s.epoch_ms,
        slots: s.slots_per_epoch,
        capacity: s.capacity,
        block: s.block_size,
        cached_levels: s.cached_levels,
        path_len: s.path_len,
        bucket_bytes: s.bucket_len,
        cache_bytes: ((1u64 << s.cached_levels) - 1) * u64::from(s.bucket_len),
        up_per_slot: up,
        down_per_slot: down,
        up_per_day: up * per_day,
        down_per_day: down * per_day,
    })
}

/// The settings in the cost table of docs/benchmarks.md: the default, and lighter and heavier ones.
pub fn settings() -> Result<Vec<Shape>> {
    let d = Shape::default();
    let every = |ms| d.with_schedule(d.slots_per_epoch, ms);
    let store = |capacity, block, cached| {
        Shape::new(capacity, block, cached)
            .map(|s| s.with_mail(d.round_epochs, d.queries_per_round))
    };
    Ok(vec![
        d,
        every(10_000)?,
        every(5_000)?,
        every(1_000)?,
        store(d.capacity, d.block_size, 6)?.with_schedule(1, 100)?,
        store(d.capacity, d.block_size, 4)?,
        store(1 << 10, 256, 4)?,
        store(1 << 16, 4096, 10)?,
        d.with_schedule(4, d.epoch_ms)?,
    ])
}

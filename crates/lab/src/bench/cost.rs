//! `shroud bench cost`: what cover traffic costs one always-on client per day, from the
//! exact encoded sizes of its slot frames (plus TLS 1.3 record overhead; TCP/IP headers add
//! about 4% more).

use anyhow::Result;
use serde::Serialize;
use shroud_proto::proxy::{ClientMsg, ProxyMsg, Reads, Slot, SlotDone, SlotWrite};
use shroud_proto::{Capability, Grant, Limits, Mode, ReadResult, Shape, SlotRef, StoreId, encode};

/// One row of the cost table.
#[derive(Clone, Debug, Serialize)]
pub struct Cost {
    /// "path" or "ring".
    pub mode: &'static str,
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
    /// Bytes up per slot (client to proxy), with TLS framing (Ring ORAM: the mean over
    /// its pattern of evictions and reshuffles).
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

/// The exact bytes on the wire of a slot with `writes` buckets written and `reads`, and of
/// its reply with `answers` answers of `answer_len` bytes.
fn slot_bytes(s: &Shape, writes: usize, reads: Reads, answer_len: usize) -> Result<(u64, u64)> {
    let grant = Grant {
        store: StoreId([0; 16]),
        capability: Capability([0; 32]),
    };
    let answers = reads.answers();
    let slot = ClientMsg::Slot(Slot {
        seq: 0,
        grant,
        write: writes > 0,
        writes: vec![
            SlotWrite {
                bucket: 0,
                data: vec![0; s.bucket_len as usize]
            };
            writes
        ],
        reads,
    });
    let done = ProxyMsg::Done(SlotDone {
        seq: 0,
        epoch: 0,
        reads: vec![
            ReadResult {
                present: true,
                data: vec![0; answer_len]
            };
            answers
        ],
    });
    let limits = Limits {
        max_frame: usize::MAX / 2,
    };
    Ok((
        on_the_wire(encode(&slot, limits)?.len()),
        on_the_wire(encode(&done, limits)?.len()),
    ))
}

/// Bytes up and down per slot, averaged over one period of Ring ORAM's pattern (A times
/// the reshuffle schedule's batches): every slot's online read, and the first slot of a
/// batch carrying the last batch's rewrites and this batch's maintenance reads.
fn ring_per_slot(s: &Shape) -> Result<(u64, u64)> {
    let Mode::Ring {
        evict_every,
        reshuffle_every,
        ..
    } = s.mode
    else {
        return Ok((0, 0));
    };
    let n = s.path_len as usize;
    let reads = |each: usize| Reads::Slots {
        online: vec![SlotRef { bucket: 0, slot: 0 }; n],
        each: vec![SlotRef { bucket: 0, slot: 0 }; each],
    };
    let period = u64::from(evict_every) * u64::from(reshuffle_every.max(1));
    let mut known = std::collections::HashMap::new();
    let rest = slot_bytes(s, 0, reads(0), s.slot_len as usize)?;
    let (mut up, mut down) = (0u64, 0u64);
    for b in period..2 * period {
        let (w, _) = s.ring_maintenance(b - 1);
        let (_, r) = s.ring_maintenance(b);
        let first = match known.get(&(w, r)) {
            Some(&v) => v,
            None => {
                let v = slot_bytes(s, w, reads(r), s.slot_len as usize)?;
                known.insert((w, r), v);
                v
            }
        };
        let k = u64::from(s.slots_per_epoch) - 1;
        up += first.0 + k * rest.0;
        down += first.1 + k * rest.1;
    }
    let slots = period * u64::from(s.slots_per_epoch);
    Ok((up.div_ceil(slots), down.div_ceil(slots)))
}

/// The cost of one always-on client under `s`.
pub fn cost(s: Shape) -> Result<Cost> {
    let n = s.path_len as usize;
    let (up, down) = if s.is_ring() {
        ring_per_slot(&s)?
    } else {
        slot_bytes(&s, n, Reads::Buckets(vec![0; n]), s.bucket_len as usize)?
    };
    let per_day = 86_400_000 / u64::from(s.epoch_ms) * u64::from(s.slots_per_epoch);
    // The cached levels: Path ORAM holds Z blocks of each cached bucket, sealed; Ring
    // ORAM holds at most Z blocks of each, as plaintext.
    let cached = (1u64 << s.cached_levels) - 1;
    let cache_bytes = if s.is_ring() {
        cached * u64::from(s.bucket_slots) * u64::from(s.block_size)
    } else {
        cached * u64::from(s.bucket_len)
    };
    Ok(Cost {
        mode: if s.is_ring() { "ring" } else { "path" },
        epoch_ms: s.epoch_ms,
        slots: s.slots_per_epoch,
        capacity: s.capacity,
        block: s.block_size,
        cached_levels: s.cached_levels,
        path_len: s.path_len,
        bucket_bytes: s.bucket_len,
        cache_bytes,
        up_per_slot: up,
        down_per_slot: down,
        up_per_day: up * per_day,
        down_per_day: down * per_day,
    })
}

/// The settings in the cost table of docs/benchmarks.md: the default, lighter and heavier
/// ones, each in Path ORAM and in Ring ORAM (the same N, B, T and schedule; Ring ORAM at
/// its own Z, S and A).
pub fn settings() -> Result<Vec<Shape>> {
    let d = Shape::default();
    let every = |ms| d.with_schedule(d.slots_per_epoch, ms);
    let store = |capacity, block, cached| {
        Shape::new(capacity, block, cached)
            .map(|s| s.with_mail(d.round_epochs, d.queries_per_round))
    };
    let path = vec![
        d,
        every(10_000)?,
        every(5_000)?,
        every(1_000)?,
        store(d.capacity, d.block_size, 6)?.with_schedule(1, 100)?,
        store(d.capacity, d.block_size, 4)?,
        store(1 << 10, 256, 4)?,
        store(1 << 16, 4096, 10)?,
        d.with_schedule(4, d.epoch_ms)?,
    ];
    let mut all = path.clone();
    for p in path {
        all.push(ring_of(&p)?);
    }
    Ok(all)
}

/// The Ring ORAM shape of `p`'s store, schedule and mail.
pub fn ring_of(p: &Shape) -> Result<Shape> {
    Ok(Shape::ring(p.capacity, p.block_size, p.cached_levels)?
        .with_schedule(p.slots_per_epoch, p.epoch_ms)?
        .with_board(p.board_rows, p.outbox_rows)?
        .with_mail(p.round_epochs, p.queries_per_round))
}

//! `shroud bench ring`: Ring ORAM against Path ORAM on the same N, B and cached levels:
//! bytes per access each way (counted from what the engines hand to their stores), the
//! stash, client memory and accesses per second, in one run over the in-memory stores;
//! and Ring ORAM with a recursive position map ([`RecursiveRing`], the default
//! [`Recursion`]) on the same accesses.
//!
//! Bytes are the engines' own (sealed buckets and slots, and 10 bytes per slot id for
//! Ring ORAM's reads); the wire adds frame and TLS overhead on top of either.

use std::convert::Infallible;
use std::time::Instant;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::Serialize;
use shroud_oram::Progress;
use shroud_oram::ring::{Recursion, RecursiveRing, RingConfig, RingOram, RingStore};
use shroud_oram::{BucketStore, Config, Fetch, Key, MemoryStore, Op, Oram, WriteBack};

/// One line of `shroud bench ring --json`.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Blocks per store (N).
    pub n: u64,
    /// Bytes per block (B).
    pub block: u32,
    /// Levels cached by the client (T).
    pub cached_levels: u32,
    /// Ring ORAM's Z, S and A.
    pub ring_zsa: [u32; 3],
    /// Accesses measured per engine.
    pub accesses: u64,
    /// Path ORAM (Z = 4): bytes up and down per access.
    pub path_up: f64,
    /// Path ORAM: bytes down per access.
    pub path_down: f64,
    /// Ring ORAM: bytes up per access (rewritten buckets and slot ids).
    pub ring_up: f64,
    /// Ring ORAM: bytes down per access (the XORed slot and the maintenance reads).
    pub ring_down: f64,
    /// Path ORAM's bytes per access over Ring ORAM's (both ways together).
    pub ratio: f64,
    /// Evictions per scheduled reshuffle (0: the paper's early reshuffles only).
    pub reshuffle_every: u32,
    /// Ring ORAM's reshuffles per access, scheduled or early.
    pub reshuffles_per_access: f64,
    /// Early reshuffles the schedule did not make, per access (each changes its request's
    /// shape).
    pub unscheduled_per_access: f64,
    /// Largest stash seen, Path ORAM and Ring ORAM.
    pub max_stash: [usize; 2],
    /// Client memory of each engine, bytes: the largest seen, sampled every
    /// [`MEMORY_EVERY`] accesses and at the end.
    pub memory: [usize; 2],
    /// Accesses per second of each engine, one core.
    pub accesses_per_s: [f64; 2],
    /// Each way, per day, at one access every 2 s (K = 1, E = 2 s), engine bytes only.
    pub ring_mb_per_day: [f64; 2],
    /// Ring ORAM with a recursive position map: trees (one round trip each per access).
    pub recursive_trees: usize,
    /// Its bytes up and down per access, all trees.
    pub recursive_bytes: [f64; 2],
    /// Its client memory, bytes, sampled as `memory`.
    pub recursive_memory: usize,
    /// Its accesses per second, one core.
    pub recursive_accesses_per_s: f64,
}

/// What [`measure_recursive`] found.
struct RecursiveRun {
    trees: usize,
    up: u64,
    down: u64,
    memory: usize,
    rate: f64,
}

/// Ring ORAM with the default recursive position map on `ops`, after writing every block.
fn measure_recursive(
    config: RingConfig,
    ops: &[Op<'_>],
    data: &[u8],
    rng: &mut StdRng,
) -> Result<RecursiveRun> {
    let mut oram = RecursiveRing::new(config, Recursion::default(), Key::generate(rng), rng)?;
    let mut store = MemoryStore::new();
    for a in 0..config.capacity {
        oram.run(&mut store, Op::Write(a, data), rng)?;
    }
    let (mut up, mut down, mut memory) = (0u64, 0u64, 0usize);
    let started = Instant::now();
    for (i, op) in ops.iter().enumerate() {
        if i % MEMORY_EVERY == 0 {
            memory = memory.max(oram.memory());
        }
        oram.begin_batch(&[*op], rng)?;
        loop {
            let slot_len = oram.slot_len();
            let req = oram
                .request()
                .ok_or_else(|| anyhow::anyhow!("no request out"))?;
            up += req.up_bytes() as u64;
            let reply = store.exchange(req, slot_len)?;
            down += reply.down_bytes() as u64;
            if oram.finish(&reply, rng)? == Progress::Done {
                break;
            }
        }
    }
    Ok(RecursiveRun {
        trees: oram.trees(),
        up,
        down,
        memory: memory.max(oram.memory()),
        rate: ops.len() as f64 / started.elapsed().as_secs_f64(),
    })
}

/// Counts the bytes a Path ORAM engine hands to and takes from its store.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    up: u64,
    down: u64,
}

impl BucketStore for Counting {
    type Error = Infallible;

    fn read_path(&mut self, fetch: &mut Fetch<'_>) -> Result<(), Infallible> {
        // An absent bucket travels as a flag, as it does on the wire.
        self.down += fetch
            .ids()
            .iter()
            .map(|id| self.inner.get(*id).map_or(1, <[u8]>::len) as u64)
            .sum::<u64>();
        self.inner.read_path(fetch)
    }

    fn write_path(&mut self, writes: &WriteBack<'_>) -> Result<(), Infallible> {
        self.up += writes.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        self.inner.write_path(writes)
    }
}

/// How often the client memory is sampled, in accesses.
pub const MEMORY_EVERY: usize = 1024;

/// Measures both engines on `accesses` random reads and writes (half each) of an `n`-block
/// store of `block`-byte blocks, `cached` levels held by the client, Ring ORAM at
/// `zsa` = (Z, S, A), after a warm-up that
/// writes every block once (the steady state, every bucket stored).
pub fn measure(
    n: u64,
    block: u32,
    cached: u32,
    zsa: [u32; 3],
    reshuffle_every: u32,
    accesses: u64,
) -> Result<Report> {
    let mut rng = StdRng::seed_from_u64(n ^ u64::from(block));
    let data = vec![7u8; block as usize];
    let ops: Vec<(bool, u64)> = (0..accesses)
        .map(|i| (i % 2 == 0, rng.random_range(0..n)))
        .collect();
    let op = |&(write, a): &(bool, u64)| {
        if write {
            Op::Write(a, &data)
        } else {
            Op::Read(a)
        }
    };

    let config = Config {
        cached_levels: cached,
        ..Config::new(n, block)
    };
    let mut path = Oram::new(config, Key::generate(&mut rng), &mut rng)?;
    let mut store = Counting::default();
    for a in 0..n {
        path.run(&mut store, &[Op::Write(a, &data)], &mut rng)?;
    }
    (store.up, store.down) = (0, 0);
    let mut peak = [0usize; 2];
    let started = Instant::now();
    for (i, o) in ops.iter().enumerate() {
        path.run(&mut store, &[op(o)], &mut rng)?;
        if i % MEMORY_EVERY == 0 {
            peak[0] = peak[0].max(path.memory());
        }
    }
    let path_rate = accesses as f64 / started.elapsed().as_secs_f64();

    let config = RingConfig {
        cached_levels: cached,
        z: zsa[0],
        s: zsa[1],
        a: zsa[2],
        reshuffle_every,
        // Measured, not enforced: the report gives the largest stash seen.
        stash_limit: 1 << 20,
        ..RingConfig::new(n, block)
    };
    let mut ring = RingOram::new(config, Key::generate(&mut rng), &mut rng)?;
    let mut rstore = MemoryStore::new();
    for a in 0..n {
        ring.run(&mut rstore, Op::Write(a, &data), &mut rng)?;
    }
    let before = ring.accesses();
    let (mut up, mut down, mut reads) = (0u64, 0u64, 0u64);
    let started = Instant::now();
    for (i, o) in ops.iter().enumerate() {
        if i % MEMORY_EVERY == 0 {
            peak[1] = peak[1].max(ring.memory());
        }
        let req = ring.begin(op(o), &mut rng)?;
        up += req.up_bytes() as u64;
        reads += req.reads.len() as u64;
        let reply = rstore.exchange(req, config.slot_len())?;
        down += reply.down_bytes() as u64;
        ring.finish(&reply, &mut rng)?;
    }
    let ring_rate = accesses as f64 / started.elapsed().as_secs_f64();
    let all: Vec<Op<'_>> = ops.iter().map(op).collect();
    let rec = measure_recursive(config, &all, &data, &mut rng)?;

    let per = |b: u64| b as f64 / accesses as f64;
    let fetched = u64::from(config.height() + 1 - config.cached());
    let evictions = (before + accesses) / u64::from(config.a) - before / u64::from(config.a);
    let reshuffles = (reads / u64::from(config.z)).saturating_sub(evictions * fetched);
    let per_day = 86_400.0 / 2.0 / 1e6;
    Ok(Report {
        n,
        block,
        cached_levels: cached,
        ring_zsa: [config.z, config.s, config.a],
        accesses,
        path_up: per(store.up),
        path_down: per(store.down),
        ring_up: per(up),
        ring_down: per(down),
        ratio: (store.up + store.down) as f64 / (up + down) as f64,
        reshuffle_every,
        reshuffles_per_access: reshuffles as f64 / accesses as f64,
        unscheduled_per_access: ring.unscheduled_reshuffles() as f64 / accesses as f64,
        max_stash: [path.max_stash(), ring.max_stash()],
        memory: [peak[0].max(path.memory()), peak[1].max(ring.memory())],
        accesses_per_s: [path_rate, ring_rate],
        ring_mb_per_day: [per(up) * per_day, per(down) * per_day],
        recursive_trees: rec.trees,
        recursive_bytes: [per(rec.up), per(rec.down)],
        recursive_memory: rec.memory,
        recursive_accesses_per_s: rec.rate,
    })
}

/// The cases of docs/benchmarks.md: the default store at the default and smaller caches,
/// and a larger one.
pub fn cases() -> Vec<(u64, u32, u32)> {
    vec![
        (1 << 14, 1024, 8),
        (1 << 14, 1024, 6),
        (1 << 14, 1024, 0),
        (1 << 16, 1024, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small case runs all three engines on the same accesses: Ring ORAM moves fewer
    /// bytes than Path ORAM, and the recursive store (one tree and a top map here) about as many as the
    /// flat one.
    #[test]
    fn a_small_case_measures_all_three_engines() {
        let r = measure(1 << 10, 64, 0, [4, 6, 3], 3, 600).expect("measure");
        assert!(r.ratio > 1.0, "Path / Ring {}", r.ratio);
        assert_eq!(
            r.recursive_trees, 1,
            "2^10 positions fit the default top map"
        );
        let flat = r.ring_up + r.ring_down;
        let rec = r.recursive_bytes[0] + r.recursive_bytes[1];
        assert!(rec > 0.5 * flat && rec < 2.0 * flat, "{rec} against {flat}");
        assert!(r.recursive_memory > 0 && r.recursive_accesses_per_s > 0.0);
    }
}

//! The stash stays small at the default Z, S and A, and Ring ORAM moves fewer bytes per
//! access than Path ORAM on the same N, B and cached levels (issue 14's bound: at most
//! 1/2.3). Bytes are counted from the requests and replies, not timed.

use rand::RngExt;
use shroud_oram::ring::{RingConfig, RingStore};
use shroud_oram::{MemoryStore, Op, TreeGeometry};

/// Bytes of a Path ORAM access (Z = 4), each way, at the same N, B and cached levels:
/// one path of sealed buckets down and the same up.
fn path_oram_bytes(capacity: u64, block: u32, cached: u32) -> usize {
    let g = TreeGeometry::for_blocks(capacity, 4, block, cached);
    2 * g.fetched_levels() * g.ciphertext_len()
}

/// Runs `accesses` random accesses; returns the largest stash, the early reshuffles and
/// the bytes moved per access (both ways).
fn run(config: RingConfig, accesses: usize, seed: u64) -> (usize, u64, f64) {
    let (mut oram, mut rng) = crate::engine(config, seed);
    let mut store = MemoryStore::new();
    let block = vec![1u8; config.block_size as usize];
    let (mut bytes, mut reads) = (0usize, 0u64);
    let z = config.z as usize;
    for i in 0..accesses {
        let a = rng.random_range(0..config.capacity);
        let op = if i % 2 == 0 {
            Op::Write(a, &block)
        } else {
            Op::Read(a)
        };
        let req = oram.begin(op, &mut rng).expect("begin").clone();
        let reply = store.exchange(&req, config.slot_len()).expect("store");
        oram.finish(&reply, &mut rng)
            .expect("stash within its bound");
        bytes += req.up_bytes() + reply.down_bytes();
        reads += (req.reads.len() / z) as u64;
    }
    let evicted =
        (accesses as u64 / u64::from(config.a)) * u64::from(config.height() + 1 - config.cached());
    (
        oram.max_stash(),
        reads - evicted,
        bytes as f64 / accesses as f64,
    )
}

#[test]
fn the_stash_stays_small_and_bytes_beat_path_oram() {
    for (capacity, cached, accesses) in [(1u64 << 12, 0u32, 60_000usize), (1 << 14, 6, 30_000)] {
        let config = RingConfig {
            cached_levels: cached,
            stash_limit: 100,
            ..RingConfig::new(capacity, 1024)
        };
        let (max_stash, reshuffles, per_access) = run(config, accesses, capacity);
        let path = path_oram_bytes(capacity, 1024, cached) as f64;
        println!(
            "N {capacity}, T {cached}: max stash {max_stash}, {:.3} reshuffles per \
             access, {per_access:.0} bytes per access (Path ORAM {path:.0}, ratio 1/{:.2})",
            reshuffles as f64 / accesses as f64,
            path / per_access
        );
        assert!(max_stash <= 100);
        assert!(
            per_access * 2.3 <= path,
            "Ring ORAM moves {per_access:.0} bytes per access, Path ORAM {path:.0}"
        );
    }
}

/// The reshuffle schedule keeps up: at the defaults (N = 2^14, T = 8, S = 64, a scheduled
/// reshuffle every third eviction), no bucket is read S times between its writes, so no
/// request changes shape. Long: `SHROUD_RING_ACCESSES` accesses (2,000,000 by default),
/// with 16-byte blocks to go fast (the schedule does not depend on B):
/// `cargo test --release -p shroud-oram --test ring -- --ignored --nocapture`.
#[test]
#[ignore = "long: SHROUD_RING_ACCESSES accesses (default 2,000,000)"]
fn the_reshuffle_schedule_keeps_up() {
    let accesses: u64 = std::env::var("SHROUD_RING_ACCESSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000_000);
    let config = RingConfig {
        cached_levels: 8,
        ..RingConfig::new(1 << 14, 16)
    };
    let (mut oram, mut rng) = crate::engine(config, 77);
    let mut store = MemoryStore::new();
    let block = [3u8; 16];
    for i in 0..accesses {
        let a = rng.random_range(0..config.capacity);
        let op = if i % 2 == 0 {
            Op::Write(a, &block)
        } else {
            Op::Read(a)
        };
        oram.run(&mut store, op, &mut rng).expect("access");
    }
    println!(
        "{accesses} accesses: {} unscheduled reshuffles, largest stash {}",
        oram.unscheduled_reshuffles(),
        oram.max_stash()
    );
    assert_eq!(oram.unscheduled_reshuffles(), 0);
}

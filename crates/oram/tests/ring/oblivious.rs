//! What storage sees. Two very different workloads (one block over and over, and random
//! reads, writes and dummies) are run, and from the requests alone, as storage would:
//! - every online read is one slot of each fetched bucket of one path, its leaf uniform;
//! - the slot read in a bucket is uniform among those not read since its last write;
//! - evictions come every A-th access along the reverse-lexicographic order, and the early
//!   reshuffles are exactly the buckets whose (public) read count reached S;
//! - every request's shape (slots, buckets, bytes) is what storage can predict from those.

use std::collections::HashMap;

use rand::RngExt;
use shroud_oram::MemoryStore;
use shroud_oram::ring::{RingConfig, RingRequest, RingStore};
use shroud_oram::{BucketId, Op};

const ACCESSES: usize = 12_000;

fn config() -> RingConfig {
    RingConfig {
        cached_levels: 2,
        ..RingConfig::new(1 << 10, 16)
    }
}

/// The requests of `ACCESSES` accesses of a workload: `hot` touches block 0 alone.
fn transcript(hot: bool, seed: u64) -> Vec<RingRequest> {
    let config = config();
    let (mut oram, mut rng) = crate::engine(config, seed);
    let mut store = MemoryStore::new();
    let mut out = Vec::with_capacity(ACCESSES);
    let b = vec![7u8; 16];
    for i in 0..ACCESSES {
        let a = if hot {
            0
        } else {
            rng.random_range(0..config.capacity)
        };
        let op = match (hot, i % 3) {
            (true, 0) | (false, 0) => Op::Write(a, &b),
            (true, _) | (false, 1) => Op::Read(a),
            _ => Op::Dummy,
        };
        let req = oram.begin(op, &mut rng).expect("begin").clone();
        let reply = store.exchange(&req, config.slot_len()).expect("store");
        oram.finish(&reply, &mut rng).expect("finish");
        out.push(req);
    }
    out
}

/// Storage's own bookkeeping: which slots of each bucket were read since it was written.
#[derive(Default)]
struct View {
    read: HashMap<u64, Vec<u16>>,
}

impl View {
    fn count(&self, b: u64) -> usize {
        self.read.get(&b).map_or(0, Vec::len)
    }
}

/// Leaf of a path given as its fetched buckets, top first.
pub fn leaf_of(path: &[BucketId], height: u32) -> u64 {
    let last = path.last().expect("a path").index;
    last + 1 - (1u64 << height)
}

/// Pearson's chi-square statistic of `counts` against `expected` counts.
pub fn chi_square(counts: &[u64], expected: &[f64]) -> f64 {
    counts
        .iter()
        .zip(expected)
        .map(|(&c, &e)| (c as f64 - e).powi(2) / e)
        .sum()
}

/// A chi-square threshold with `df` degrees of freedom: mean plus six standard deviations
/// (far beyond p = 1e-6 for the sizes here).
pub fn threshold(df: usize) -> f64 {
    df as f64 + 6.0 * (2.0 * df as f64).sqrt()
}

#[test]
fn storage_sees_the_same_thing_whatever_the_workload() {
    let config = config();
    let (z, s, a) = (config.z as usize, config.s as usize, config.a as usize);
    let height = config.height();
    let t = config.cached() as usize;
    let fetched = height as usize + 1 - t;
    let mut summaries = Vec::new();
    for (hot, seed) in [(true, 1u64), (false, 2u64)] {
        let reqs = transcript(hot, seed);
        let mut view = View::default();
        let mut leaves = vec![0u64; 1 << height];
        // Rank of the slot read among the unread ones, in tenths.
        let mut ranks = vec![0u64; 10];
        let mut expected_ranks = vec![0f64; 10];
        let mut evictions = Vec::new();
        let mut reshuffles = 0u64;
        let mut unscheduled = 0u64;
        let mut shapes = Vec::with_capacity(ACCESSES);
        let mut last_unscheduled = false;
        let mut pending_writes: Vec<u64> = Vec::new();
        for (i, req) in reqs.iter().enumerate() {
            // Writes: exactly the buckets storage was told to expect.
            let mut written: Vec<u64> = req.writes.iter().map(|(b, _)| b.index).collect();
            written.sort_unstable();
            assert_eq!(written, pending_writes, "access {i}: rewrites as predicted");
            for (b, bytes) in &req.writes {
                assert_eq!(bytes.len(), config.bucket_len());
                view.read.remove(&b.index);
            }
            // The online read: one slot of each fetched bucket of one path.
            assert_eq!(req.online.len(), 1, "one access a request");
            let path: Vec<BucketId> = req.online[0].iter().map(|s| s.bucket).collect();
            assert_eq!(path.len(), fetched);
            for (d, pair) in path.windows(2).enumerate() {
                let parent = pair[0].index;
                assert!(
                    pair[1].index == 2 * parent + 1 || pair[1].index == 2 * parent + 2,
                    "access {i}: level {d} is not a path"
                );
            }
            let top = path[0].index + 1;
            assert!(
                top >= 1 << t && top < 2 << t,
                "access {i}: first fetched level"
            );
            leaves[leaf_of(&path, height) as usize] += 1;
            for slot in &req.online[0] {
                let b = slot.bucket.index;
                let read = view.read.entry(b).or_default();
                assert!(!read.contains(&slot.slot), "access {i}: a slot read twice");
                let unread: Vec<u16> = (0..(z + s) as u16).filter(|j| !read.contains(j)).collect();
                let rank = unread.iter().position(|&j| j == slot.slot).expect("unread");
                let k = unread.len();
                ranks[rank * 10 / k] += 1;
                for r in 0..k {
                    expected_ranks[r * 10 / k] += 1.0 / k as f64;
                }
                read.push(slot.slot);
            }
            // Maintenance reads: the eviction on every A-th access, then the reshuffles
            // of the path's buckets read S times (not on the eviction path).
            let evict = (i + 1) % a == 0;
            let g = (i + 1) / a - 1;
            let evict_path: Vec<u64> = if evict {
                let e = (g as u64 % (1 << height)).reverse_bits() >> (64 - height);
                (t..=height as usize)
                    .map(|d| (1u64 << d) - 1 + (e >> (height as usize - d)))
                    .collect()
            } else {
                Vec::new()
            };
            // The scheduled reshuffle: the fetched bucket read most since its last write
            // (lowest index on a tie), off the eviction path, every `reshuffle_every`-th
            // eviction.
            let every = config.reshuffle_every as usize;
            let scheduled: Vec<u64> = if evict && every > 0 && g % every == 0 {
                let total = (2u64 << height) - 1;
                ((1u64 << t) - 1..total)
                    .filter(|b| !evict_path.contains(b))
                    .max_by_key(|&b| (view.count(b), std::cmp::Reverse(b)))
                    .into_iter()
                    .collect()
            } else {
                Vec::new()
            };
            let due: Vec<u64> = path
                .iter()
                .map(|b| b.index)
                .filter(|b| {
                    !evict_path.contains(b) && !scheduled.contains(b) && view.count(*b) >= s
                })
                .collect();
            unscheduled += due.len() as u64;
            let expected: Vec<u64> = evict_path
                .iter()
                .chain(&scheduled)
                .chain(&due)
                .copied()
                .collect();
            let mut got: Vec<u64> = req.reads.iter().map(|r| r.bucket.index).collect();
            got.dedup();
            assert_eq!(got, expected, "access {i}: maintenance as predicted");
            assert_eq!(
                req.reads.len(),
                z * expected.len(),
                "access {i}: Z slots a bucket"
            );
            for r in &req.reads {
                let read = view.read.entry(r.bucket.index).or_default();
                assert!(!read.contains(&r.slot), "access {i}: a slot read twice");
                read.push(r.slot);
            }
            if evict {
                evictions.push(evict_path[evict_path.len() - 1]);
            }
            reshuffles += (scheduled.len() + due.len()) as u64;
            // The shape, unless an unscheduled reshuffle (now, or owed from the last
            // access) changed it.
            let fixed = due.is_empty() && !last_unscheduled;
            shapes.push(fixed.then_some((req.writes.len(), req.online[0].len(), req.reads.len())));
            last_unscheduled = !due.is_empty();
            pending_writes = expected;
            pending_writes.sort_unstable();
        }
        let uniform = vec![ACCESSES as f64 / leaves.len() as f64; leaves.len()];
        let leaf_chi = chi_square(&leaves, &uniform);
        let rank_chi = chi_square(&ranks, &expected_ranks);
        println!(
            "hot {hot}: leaf chi-square {leaf_chi:.0} ({} bins), slot-rank chi-square \
             {rank_chi:.1} (10 bins), {} evictions, {reshuffles} reshuffles \
             ({unscheduled} unscheduled)",
            leaves.len(),
            evictions.len()
        );
        assert!(
            leaf_chi < threshold(leaves.len() - 1),
            "leaves not uniform: {leaf_chi}"
        );
        assert!(
            rank_chi < threshold(9),
            "slot ranks not uniform: {rank_chi}"
        );
        // With the schedule, a request's shape is the access count's: the eviction's Z
        // slots a bucket on every A-th access, and the scheduled reshuffle's on every
        // `reshuffle_every`-th of those.
        let every = config.reshuffle_every as usize;
        for (i, shape) in shapes.iter().enumerate() {
            if let Some((_, online, reads)) = *shape {
                let evicting = (i + 1) % a == 0;
                let scheduled = evicting && ((i + 1) / a - 1) % every == 0;
                let buckets = if evicting { fetched } else { 0 } + usize::from(scheduled);
                assert_eq!(online, fetched, "access {i}");
                assert_eq!(reads, z * buckets, "access {i}");
            }
        }
        assert!(
            unscheduled * 100 <= ACCESSES as u64,
            "{unscheduled} unscheduled reshuffles"
        );
        summaries.push((evictions, ranks, reshuffles));
    }
    // The eviction schedule is the same for both (it depends on the access count only).
    assert_eq!(summaries[0].0, summaries[1].0);
    // Early reshuffles come from the public read counts of random paths: about as many.
    let (r0, r1) = (summaries[0].2 as f64, summaries[1].2 as f64);
    assert!(
        (r0 - r1).abs() <= 5.0 * (r0 + r1).sqrt() + 5.0,
        "reshuffles {r0} vs {r1}"
    );
}

//! Property 3, obliviousness: what the server sees depends only on uniformly random leaves.
//!
//! - Every access fetches one full root-to-leaf path (minus cached levels) per tree and
//!   writes back exactly the ids it fetched, in buckets of one fixed size.
//! - Read, Write and Dummy produce the same number of ids and bytes.
//! - Leaves pass a chi-squared uniformity test.
//! - The leaf sequences of adversarial workloads (one address repeated, sequential, random,
//!   read-only, write-only) cannot be told apart: two-sample chi-squared and
//!   Kolmogorov-Smirnov tests on the leaves, and a chi-squared test on consecutive pairs,
//!   do not reject at the 0.1% level. Seeds are fixed, so the outcome is reproducible.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use shroud_lab::stats::{chi2_two_sample, chi2_uniform, ks_two_sample};
use shroud_oram::{
    BucketId, BucketStore, Config, Key, MemoryStore, Op, Oram, PositionMap, Progress,
};

const ALPHA: f64 = 0.001;

/// What the server saw of one batch: per round, the fetched ids; then the written ids and
/// the byte size of each written bucket.
struct Seen {
    fetched: Vec<Vec<BucketId>>,
    written: Vec<(BucketId, usize)>,
}

fn run(oram: &mut Oram, store: &mut MemoryStore, ops: &[Op<'_>], rng: &mut StdRng) -> Seen {
    oram.begin(ops, rng).unwrap();
    let mut fetched = Vec::new();
    loop {
        let mut f = oram.fetch().unwrap();
        fetched.push(f.ids().to_vec());
        store.read_path(&mut f).unwrap();
        if oram.advance().unwrap() == Progress::Done {
            break;
        }
    }
    let wb = oram.write_back().unwrap();
    let written = wb.iter().map(|(id, b)| (id, b.len())).collect();
    store.write_path(&wb).unwrap();
    Seen { fetched, written }
}

/// Checks that `ids` are `k` full paths of a tree of `height` minus `cached` levels, and
/// returns their leaves.
fn leaves_of(ids: &[BucketId], height: u32, cached: u32) -> Vec<u32> {
    let per = (height + 1 - cached) as usize;
    assert_eq!(ids.len() % per, 0, "a round fetches whole paths");
    ids.chunks(per)
        .map(|path| {
            let first = path[0].index;
            assert!(
                first >= (1 << cached) - 1 && first < (1 << (cached + 1)) - 1,
                "path starts below the cache"
            );
            for w in path.windows(2) {
                assert!(
                    w[1].index == 2 * w[0].index + 1 || w[1].index == 2 * w[0].index + 2,
                    "not a path: {path:?}"
                );
            }
            (path[per - 1].index - ((1 << height) - 1)) as u32
        })
        .collect()
}

#[derive(Clone, Copy, Debug)]
enum Workload {
    Repeat,
    Sequential,
    Random,
    ReadOnly,
    WriteOnly,
}

fn op(w: Workload, i: u64, n: u64, rng: &mut StdRng, data: &[u8]) -> Op<'static> {
    // Leaked on purpose: tests only, a handful of small buffers.
    let d: &'static [u8] = Box::leak(data.to_vec().into_boxed_slice());
    match w {
        Workload::Repeat => {
            if i.is_multiple_of(2) {
                Op::Read(3)
            } else {
                Op::Write(3, d)
            }
        }
        Workload::Sequential => Op::Write(i % n, d),
        Workload::Random => {
            let a = rng.random_range(0..n);
            if rng.random_bool(0.5) {
                Op::Read(a)
            } else {
                Op::Write(a, d)
            }
        }
        Workload::ReadOnly => Op::Read(rng.random_range(0..n)),
        Workload::WriteOnly => Op::Write(rng.random_range(0..n), d),
    }
}

/// Leaves of each tree over `accesses` accesses of workload `w`.
fn leaves(config: Config, w: Workload, accesses: u64, seed: u64) -> Vec<Vec<u32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut oram = Oram::new(config, Key::generate(&mut rng), &mut rng).unwrap();
    let mut store = MemoryStore::new();
    let geoms: Vec<_> = oram.trees().collect();
    let mut out = vec![Vec::new(); geoms.len()];
    let bucket_len: Vec<usize> = geoms.iter().map(|g| g.ciphertext_len()).collect();
    let data = vec![0xA5u8; config.block_size as usize];
    let ops: Vec<Op<'static>> = (0..1000)
        .map(|i| op(w, i, config.capacity, &mut rng, &data))
        .collect();
    for i in 0..accesses {
        let o = match w {
            Workload::Random | Workload::ReadOnly | Workload::WriteOnly => {
                op(w, i, config.capacity, &mut rng, &[])
            }
            _ => ops[(i % 1000) as usize],
        };
        let o = match o {
            Op::Write(a, _) => Op::Write(a, &data),
            other => other,
        };
        let seen = run(&mut oram, &mut store, &[o], &mut rng);
        // Rounds go from the last tree to the data tree.
        assert_eq!(seen.fetched.len(), geoms.len());
        let mut fetched_all = Vec::new();
        for (r, ids) in seen.fetched.iter().enumerate() {
            let t = geoms.len() - 1 - r;
            assert!(ids.iter().all(|id| id.tree as usize == t));
            out[t].extend(leaves_of(ids, geoms[t].height, geoms[t].cached_levels));
            fetched_all.extend_from_slice(ids);
        }
        let written_ids: Vec<BucketId> = seen.written.iter().map(|w| w.0).collect();
        assert_eq!(
            written_ids, fetched_all,
            "writes back exactly what it fetched"
        );
        assert!(
            seen.written
                .iter()
                .all(|(id, len)| *len == bucket_len[id.tree as usize])
        );
    }
    out
}

fn configs() -> Vec<Config> {
    vec![
        Config {
            cached_levels: 2,
            ..Config::new(1 << 10, 16)
        },
        Config {
            position_map: PositionMap::Recursive {
                pos_block: 16,
                flat_limit: 16,
            },
            ..Config::new(1 << 10, 16)
        },
    ]
}

fn histogram(leaves: &[u32], bins: usize) -> Vec<u64> {
    let mut h = vec![0u64; bins];
    for &l in leaves {
        h[l as usize] += 1;
    }
    h
}

/// Consecutive pairs of leaves, by their top three bits: 64 bins.
fn pairs(leaves: &[u32], height: u32) -> Vec<u64> {
    let shift = height.saturating_sub(3);
    let mut h = vec![0u64; 64];
    for w in leaves.windows(2) {
        h[(((w[0] >> shift) & 7) * 8 + ((w[1] >> shift) & 7)) as usize] += 1;
    }
    h
}

#[test]
fn workloads_are_indistinguishable() {
    let workloads = [
        Workload::Repeat,
        Workload::Sequential,
        Workload::Random,
        Workload::ReadOnly,
        Workload::WriteOnly,
    ];
    for (ci, config) in configs().into_iter().enumerate() {
        let geoms: Vec<_> = Config::trees(&config);
        let runs: Vec<Vec<Vec<u32>>> = workloads
            .iter()
            .enumerate()
            .map(|(wi, &w)| leaves(config, w, 30_000, 1000 + wi as u64))
            .collect();
        for (t, g) in geoms.iter().enumerate() {
            let bins = g.leaves() as usize;
            let base = &runs[2][t];
            for (wi, w) in workloads.iter().enumerate() {
                let l = &runs[wi][t];
                let u = chi2_uniform(&histogram(l, bins));
                println!(
                    "config {ci} tree {t} {w:?}: uniform chi2={:.1} df={} p={:.3}",
                    u.statistic, u.df, u.p_value
                );
                assert!(u.p_value > ALPHA, "{w:?} leaves are not uniform: {u:?}");
                if wi == 2 {
                    continue;
                }
                let c = chi2_two_sample(&histogram(l, bins), &histogram(base, bins));
                let mut a: Vec<f64> = l.iter().map(|&x| x as f64).collect();
                let mut b: Vec<f64> = base.iter().map(|&x| x as f64).collect();
                let k = ks_two_sample(&mut a, &mut b);
                let s = chi2_two_sample(&pairs(l, g.height), &pairs(base, g.height));
                println!(
                    "  vs Random: chi2 p={:.3}  KS p={:.3}  pairs p={:.3}",
                    c.p_value, k.p_value, s.p_value
                );
                assert!(
                    c.p_value > ALPHA && k.p_value > ALPHA && s.p_value > ALPHA,
                    "{w:?} differs from Random in tree {t}"
                );
            }
        }
    }
}

/// Read, Write and Dummy: same counts, ids of the same shape, same sizes.
#[test]
fn op_kinds_look_alike() {
    for config in configs().into_iter().chain([Config {
        max_batch: 3,
        ..Config::new(100, 32)
    }]) {
        let mut rng = StdRng::seed_from_u64(5);
        let mut oram = Oram::new(config, Key::generate(&mut rng), &mut rng).unwrap();
        let mut store = MemoryStore::new();
        let d = vec![1u8; config.block_size as usize];
        let k = config.max_batch as usize;
        let mut shapes = Vec::new();
        for kind in 0..3 {
            for i in 0..50u64 {
                let a = i % config.capacity;
                let o = [Op::Read(a), Op::Write(a, &d), Op::Dummy][kind];
                let seen = run(&mut oram, &mut store, &vec![o; k], &mut rng);
                let shape: Vec<(usize, u8)> =
                    seen.fetched.iter().map(|r| (r.len(), r[0].tree)).collect();
                let sizes: Vec<usize> = seen.written.iter().map(|w| w.1).collect();
                shapes.push((shape, sizes));
            }
        }
        assert!(
            shapes.windows(2).all(|w| w[0] == w[1]),
            "every access has the same shape"
        );
    }
}

//! `shroud bench all --report DIR`: the engine, storage, KV and end-to-end benchmarks in one
//! run, written as JSON and SVG plots: throughput against N, the latency distribution, and
//! shroud next to its baselines (the `oram` crate, raw sled, a plain sealed KV).

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use shroud_oram::PositionMap;

use super::{e2e, engine, kv, ring, storage};
use crate::plot::{Series, bars, lines};
use shroud_proto::Shape;

/// Everything measured.
#[derive(Serialize)]
pub struct AllReport {
    /// True for the quick sizes.
    pub quick: bool,
    /// The engine at each N (B = 1 KiB, T = 0), with the `oram` crate and the crypto bound.
    pub engine: Vec<engine::Report>,
    /// Ring ORAM against Path ORAM: bytes per access on the same N, B and T.
    pub ring: Vec<ring::Report>,
    /// The storage server against raw sled, per writer count.
    pub storage: Vec<storage::Report>,
    /// The KV store against a plain sealed KV.
    pub kv: Vec<kv::Report>,
    /// Clients through the whole stack.
    pub e2e: Vec<e2e::Report>,
    /// One busy client's operations through the whole stack.
    pub schedule: kv::ScheduleReport,
    /// Wall time, seconds.
    pub seconds: f64,
}

/// Runs them all (`quick`: smaller sizes, a few minutes), reporting progress on stderr.
pub fn run(quick: bool) -> Result<AllReport> {
    let started = std::time::Instant::now();
    let log_ns: &[u32] = if quick {
        &[10, 12, 14, 16]
    } else {
        &[10, 12, 14, 16, 18, 20]
    };
    let (accesses, crate_accesses) = if quick { (2_000, 500) } else { (20_000, 4_000) };
    let mut engine_reports = Vec::new();
    for &log_n in log_ns {
        let n = 1u64 << log_n;
        eprintln!("engine: N = 2^{log_n} ...");
        let oram_crate = engine::measure_oram_crate(n, 1024, crate_accesses);
        engine_reports.push(engine::run_case(
            engine::Case {
                n,
                block: 1024,
                cached_levels: 0,
                position_map: PositionMap::Flat,
                batch: 1,
                compare_stores: false,
            },
            accesses,
            oram_crate,
        ));
    }
    let mut ring_reports = Vec::new();
    for (n, block, cached) in ring::cases() {
        let n = if quick { n.min(1 << 12) } else { n };
        eprintln!("ring: N = 2^{}, T = {cached} ...", n.trailing_zeros());
        let zsa = [
            shroud_oram::ring::DEFAULT_Z,
            shroud_oram::ring::DEFAULT_S,
            shroud_oram::ring::DEFAULT_A,
        ];
        let every = shroud_oram::ring::DEFAULT_RESHUFFLE_EVERY;
        let ring_accesses = if quick { 4_000 } else { 40_000 };
        ring_reports.push(ring::measure(n, block, cached, zsa, every, ring_accesses)?);
    }
    eprintln!("storage ...");
    let (writers, secs): (&[usize], u64) = if quick {
        (&[1, 4, 16], 2)
    } else {
        (&[1, 4, 16, 64], 5)
    };
    let storage_reports = storage::run(writers, Duration::from_secs(secs), |_| {})?;
    let kv_cases: &[(u64, u32)] = if quick {
        &[(1 << 12, 0), (1 << 14, 0)]
    } else {
        &[(1 << 14, 0), (1 << 14, 6), (1 << 16, 0)]
    };
    let ops = if quick { 1_000 } else { 5_000 };
    let mut kv_reports = Vec::new();
    for ring in [false, true] {
        for &(n, cached) in kv_cases {
            eprintln!("kv: N = {n}, T = {cached}, Ring ORAM {ring} ...");
            kv_reports.push(kv::run(ring, n, 1024, cached, ops)?);
        }
    }
    let shape = Shape::default().with_schedule(1, 100)?.with_mail(0, 0);
    let (counts, secs): (&[usize], f64) = if quick {
        (&[16, 64], 8.0)
    } else {
        (&[32, 64, 128], 30.0)
    };
    eprintln!("e2e ...");
    let e2e_reports = e2e::run(counts, shape, secs, &e2e::StorageBackend::Sled, |_| {})?;
    eprintln!("one client's latency ...");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let schedule = rt.block_on(kv::schedule(shape, if quick { 10.0 } else { 30.0 }))?;
    Ok(AllReport {
        quick,
        engine: engine_reports,
        ring: ring_reports,
        storage: storage_reports,
        kv: kv_reports,
        e2e: e2e_reports,
        schedule,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Writes `bench.json` and the plots into `dir`; returns the files written.
pub fn write(r: &AllReport, dir: &Path) -> Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut files = Vec::new();
    let mut put = |name: &str, text: String| -> Result<()> {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        files.push(p);
        Ok(())
    };
    put("bench.json", serde_json::to_string_pretty(r)?)?;
    let ns: Vec<String> = r
        .engine
        .iter()
        .map(|e| format!("2^{}", e.n.trailing_zeros()))
        .collect();
    put(
        "throughput_vs_n.svg",
        lines(
            "Engine accesses/s vs N (B = 1 KiB, Z = 4, in memory)",
            "accesses per second",
            &ns,
            &[
                Series {
                    name: "shroud, one core",
                    values: r.engine.iter().map(|e| e.accesses_per_s).collect(),
                },
                Series {
                    name: "shroud, two cores",
                    values: r
                        .engine
                        .iter()
                        .map(|e| e.accesses_per_s_two_cores)
                        .collect(),
                },
                Series {
                    name: "oram crate",
                    values: r
                        .engine
                        .iter()
                        .map(|e| e.oram_crate_accesses_per_s.unwrap_or(0.0))
                        .collect(),
                },
                Series {
                    name: "AES-GCM crypto bound",
                    values: r
                        .engine
                        .iter()
                        .map(|e| e.crypto_bound_accesses_per_s)
                        .collect(),
                },
            ],
        ),
    )?;
    let rs: Vec<String> = r
        .ring
        .iter()
        .map(|x| format!("N=2^{} T={}", x.n.trailing_zeros(), x.cached_levels))
        .collect();
    put(
        "ring_vs_path.svg",
        bars(
            "Bytes per access, both ways: Ring ORAM vs Path ORAM (B = 1 KiB)",
            "bytes per access",
            &rs,
            &[
                Series {
                    name: "Path ORAM (Z = 4)",
                    values: r.ring.iter().map(|x| x.path_up + x.path_down).collect(),
                },
                Series {
                    name: "Ring ORAM (Z = 32, S = 64, A = 46)",
                    values: r.ring.iter().map(|x| x.ring_up + x.ring_down).collect(),
                },
            ],
        ),
    )?;
    let ws: Vec<String> = r
        .storage
        .iter()
        .map(|s| format!("{} writers", s.writers))
        .collect();
    put(
        "storage_vs_sled.svg",
        bars(
            "Durable ORAM paths/s: the storage server vs raw sled",
            "paths per second",
            &ws,
            &[
                Series {
                    name: "shroud storage (TCP, group commit)",
                    values: r.storage.iter().map(|s| s.paths_per_s).collect(),
                },
                Series {
                    name: "raw sled apply + flush",
                    values: r.storage.iter().map(|s| s.raw_sled_paths_per_s).collect(),
                },
            ],
        ),
    )?;
    let ks: Vec<String> =
        r.kv.iter()
            .map(|k| {
                format!(
                    "{} N=2^{} T={}",
                    k.oram,
                    k.n.trailing_zeros(),
                    k.cached_levels
                )
            })
            .collect();
    put(
        "kv_vs_plain.svg",
        bars(
            "KV gets/s: oblivious vs a plain sealed KV in sled",
            "gets per second",
            &ks,
            &[
                Series {
                    name: "shroud (ORAM)",
                    values: r.kv.iter().map(|k| k.oram_get_per_s).collect(),
                },
                Series {
                    name: "plain sealed KV",
                    values: r.kv.iter().map(|k| k.plain_get_per_s).collect(),
                },
            ],
        ),
    )?;
    // The latency distribution: operations per bucket of half an epoch.
    let e = f64::from(r.schedule.epoch_ms);
    let top = r
        .schedule
        .latencies_ms
        .iter()
        .copied()
        .fold(0.0f64, f64::max);
    let buckets = ((top / (e / 2.0)).ceil() as usize).clamp(1, 40);
    let mut h = vec![0.0; buckets];
    for &l in &r.schedule.latencies_ms {
        h[((l / (e / 2.0)) as usize).min(buckets - 1)] += 1.0;
    }
    let labels: Vec<String> = (0..buckets)
        .map(|i| format!("{:.1}", (i + 1) as f64 / 2.0))
        .collect();
    put(
        "latency.svg",
        bars(
            &format!(
                "One client's KV operation latency through the stack (E = {} ms, K = {}; p50 {:.0} ms, p99 {:.0} ms)",
                r.schedule.epoch_ms,
                r.schedule.slots_per_epoch,
                r.schedule.p50_latency_ms,
                r.schedule.p99_latency_ms
            ),
            "operations",
            &labels,
            &[Series {
                name: "operations finishing within this many epochs",
                values: h,
            }],
        ),
    )?;
    let cs: Vec<String> = r
        .e2e
        .iter()
        .map(|c| format!("{} clients", c.clients))
        .collect();
    put(
        "e2e.svg",
        bars(
            "End to end: storage round trip per epoch (E = 100 ms)",
            "milliseconds",
            &cs,
            &[
                Series {
                    name: "mean batch",
                    values: r.e2e.iter().map(|c| c.mean_batch_ms).collect(),
                },
                Series {
                    name: "p99.9 batch",
                    values: r.e2e.iter().map(|c| c.p999_batch_ms).collect(),
                },
                Series {
                    name: "slowest batch",
                    values: r.e2e.iter().map(|c| c.max_batch_ms).collect(),
                },
            ],
        ),
    )?;
    Ok(files)
}

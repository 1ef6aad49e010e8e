//! Criterion benchmarks of one ORAM access, next to the `oram` crate and the crypto bound,
//! at N = 2^14, 2^16, 2^20 and B = 64, 1024 (Z = 4, single thread, in-memory store).
//!
//! `cargo bench --bench engine` runs all; `cargo bench --bench engine -- 'n=16384'` filters.
//! `shroud bench engine` prints the same comparison as a table or JSON in one run.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shroud_lab::bench::engine::{self, Case, CryptoBound};
use shroud_oram::PositionMap;

fn bench(c: &mut Criterion) {
    for log_n in [14u32, 16, 20] {
        for block in [64u32, 1024] {
            for cached_levels in [0u32, 10] {
                let n = 1u64 << log_n;
                let case = Case {
                    n,
                    block,
                    cached_levels,
                    position_map: PositionMap::Flat,
                    batch: 1,
                    compare_stores: false,
                };
                let mut group =
                    c.benchmark_group(format!("access/n={n}/b={block}/t={cached_levels}"));
                group.throughput(Throughput::Elements(1));
                group.sample_size(20);
                let (mut oram, mut store, mut rng) = engine::setup(case, n.min(2_000), 1);
                let mut data = vec![0u8; block as usize];
                let mut i = 0u64;
                group.bench_function(BenchmarkId::new("shroud", ""), |b| {
                    b.iter(|| {
                        i += 1;
                        engine::access(&mut oram, &mut store, &mut rng, &mut data, i);
                    })
                });
                let mut crypto = CryptoBound::for_engine(&oram);
                drop((oram, store));
                group.bench_function(BenchmarkId::new("crypto-bound", ""), |b| {
                    b.iter(|| {
                        i += 1;
                        crypto.access(i);
                    })
                });
                group.finish();
            }
            let n = 1u64 << log_n;
            if let Some(mut o) = engine::OramCrate::new(n, block) {
                let mut group = c.benchmark_group(format!("access/n={n}/b={block}/t=0"));
                group.throughput(Throughput::Elements(1));
                group.sample_size(20);
                let mut i = 0u64;
                group.bench_function(BenchmarkId::new("oram-crate", ""), |b| {
                    b.iter(|| {
                        i += 1;
                        o.access(i)
                    })
                });
                group.finish();
            }
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Criterion benchmark of durable full-path writes (N = 2^16, B = 1 KiB, Z = 4) through the
//! storage server with 1 to 64 concurrent writers, and of raw sled `apply_batch` + `flush`
//! of the same bytes with as many threads. Throughput is in paths.
//!
//! `cargo bench --bench storage`; `shroud bench storage --json` prints the same comparison,
//! plus batches per flush and disk bytes per logical byte, in one run.

use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use shroud_lab::bench::storage::{Harness, RawSled};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("storage/path-writes");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for writers in [1usize, 4, 16, 64] {
        group.throughput(Throughput::Elements(writers as u64));
        let mut harness = rt.block_on(Harness::start(writers)).expect("server");
        group.bench_with_input(BenchmarkId::new("server", writers), &writers, |b, _| {
            b.iter_custom(|rounds| rt.block_on(harness.rounds(rounds)).expect("rounds"))
        });
        rt.block_on(harness.stop());
        let raw = RawSled::open(writers).expect("raw sled");
        group.bench_with_input(BenchmarkId::new("raw-sled", writers), &writers, |b, _| {
            b.iter_custom(|rounds| raw.rounds(rounds).expect("rounds"))
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

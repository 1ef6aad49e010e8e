//! Property 2: the stash stays within its bound, overflow is a typed error that changes
//! nothing, and (ignored in CI) the stash-size distribution over 10^6 accesses at N = 2^16.

use rand::RngExt;
use shroud_oram::{Config, Error, Op};

#[test]
fn overflow_is_typed_and_harmless() {
    // Z = 1 and a one-block stash overflow quickly.
    let config = Config {
        bucket_slots: 1,
        stash_limit: 1,
        ..Config::new(64, 16)
    };
    let (mut oram, mut store, mut rng) = crate::common::oram(config, 21);
    let mut written = std::collections::HashMap::new();
    let mut overflows = 0;
    for v in 0..2000u64 {
        let a = rng.random_range(0..64);
        let before = oram.snapshot().unwrap();
        let d = crate::common::block(16, a, v);
        match oram.run(&mut store, &[Op::Write(a, &d)], &mut rng) {
            Ok(()) => {
                written.insert(a, d);
            }
            Err(shroud_oram::DriverError::Oram(Error::StashOverflow { limit: 1 })) => {
                overflows += 1;
                assert_eq!(*oram.snapshot().unwrap(), *before);
            }
            Err(e) => panic!("{e}"),
        }
        assert!(oram.stash_len() <= 1);
    }
    assert!(overflows > 0, "the test should provoke overflows");
    for (a, d) in &written {
        // Reads may overflow too; retry until one goes through.
        loop {
            match oram.run(&mut store, &[Op::Read(*a)], &mut rng) {
                Ok(()) => break,
                Err(shroud_oram::DriverError::Oram(Error::StashOverflow { .. })) => continue,
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(oram.result(0).unwrap(), d.as_slice());
    }
}

/// Runs `accesses` uniformly random accesses on a full store of `n` blocks and returns the
/// histogram of the stash size after each access.
fn stash_histogram(n: u64, accesses: u64, seed: u64) -> Vec<u64> {
    let config = Config {
        stash_limit: 1000,
        ..Config::new(n, 16)
    };
    let (mut oram, mut store, mut rng) = crate::common::oram(config, seed);
    for a in 0..n {
        oram.run(&mut store, &[Op::Write(a, &[1; 16])], &mut rng)
            .unwrap();
    }
    let mut hist = vec![0u64; 1001];
    for _ in 0..accesses {
        let a = rng.random_range(0..n);
        oram.run(&mut store, &[Op::Read(a)], &mut rng).unwrap();
        hist[oram.stash_len()] += 1;
    }
    hist
}

fn report(n: u64, hist: &[u64]) -> usize {
    let total: u64 = hist.iter().sum();
    let max = hist.iter().rposition(|&c| c > 0).unwrap_or(0);
    println!(
        "stash size after each of {total} accesses, N = {n}, Z = 4, {} leaves:",
        n.next_power_of_two() / 2
    );
    let mut tail = total;
    for (s, &c) in hist.iter().enumerate().take(max + 1) {
        println!(
            "  size {s:>3}: {c:>8}   P(size >= {s:>3}) = {:.2e}",
            tail as f64 / total as f64
        );
        tail -= c;
    }
    max
}

#[test]
fn stash_stays_small() {
    let hist = stash_histogram(1 << 12, 100_000, 22);
    let max = report(1 << 12, &hist);
    assert!(max < 40, "max stash {max}");
}

/// `cargo test --release -p shroud-oram --test engine stash:: -- --ignored --nocapture`
#[test]
#[ignore = "long: 10^6 accesses; run by hand to refresh the stash table in docs/benchmarks.md"]
fn stash_distribution_n_2_pow_16() {
    let hist = stash_histogram(1 << 16, 1_000_000, 23);
    let max = report(1 << 16, &hist);
    assert!(max < 60, "max stash {max}");
}

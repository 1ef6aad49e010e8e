//! Time classes for a histogram of durations: exact below 8 µs, then eight classes per
//! doubling (each at most 1/8 wider than its lower edge), up to 2^35 µs (about 9.5 hours).
//! The proxy counts its batches' round trips in them ([`crate::proxy::ProxyStats`]), so that
//! a reader can tell the tail (p99.9, the slowest batch) of any window apart from the mean.

/// Classes in a histogram.
pub const CLASSES: usize = 8 + 32 * 8;

/// The class of a duration of `us` microseconds (the last class takes everything longer).
pub fn class(us: u64) -> usize {
    if us < 8 {
        return us as usize;
    }
    let e = 63 - us.leading_zeros() as usize; // 2^e <= us < 2^(e+1), e >= 3
    let sub = ((us >> (e - 3)) & 7) as usize;
    (8 + (e - 3) * 8 + sub).min(CLASSES - 1)
}

/// The first duration, microseconds, past class `i`: every duration in the class is shorter.
pub fn upper_us(i: usize) -> u64 {
    if i < 8 {
        return i as u64 + 1;
    }
    let (e, sub) = ((i - 8) / 8 + 3, (i - 8) % 8);
    (9 + sub as u64) << (e - 3)
}

/// The `q` quantile (0 to 1) of the durations counted in `counts`, as its class's upper edge
/// in microseconds: `None` when nothing was counted.
pub fn quantile_us(counts: &[u64], q: f64) -> Option<u64> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    // The rank of the quantile, 1-based: the smallest count of durations at or below it.
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, &n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(upper_us(i));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_duration_falls_below_its_class_edge_and_above_the_last() {
        let mut last = 0;
        for us in (0..100_000u64).chain([1 << 20, (1 << 34) - 1, 1 << 34, (1 << 35) - 1]) {
            let c = class(us);
            assert!(c < CLASSES);
            assert!(us < upper_us(c), "{us} in class {c}");
            if c > 0 {
                assert!(us >= upper_us(c - 1), "{us} in class {c}");
            }
            assert!(c >= last, "classes grow with the duration");
            last = c;
        }
        assert_eq!(class(u64::MAX), CLASSES - 1);
    }

    #[test]
    fn classes_are_at_most_an_eighth_wide() {
        for c in 9..CLASSES {
            let (lo, hi) = (upper_us(c - 1), upper_us(c));
            assert!((hi - lo) * 8 <= lo, "class {c}: {lo}..{hi}");
        }
    }

    #[test]
    fn quantiles_of_a_known_histogram() {
        let mut counts = vec![0u64; CLASSES];
        // 999 batches of 1 ms and one of 100 ms.
        counts[class(1000)] += 999;
        counts[class(100_000)] += 1;
        assert_eq!(quantile_us(&counts, 0.5), Some(upper_us(class(1000))));
        assert_eq!(quantile_us(&counts, 0.999), Some(upper_us(class(1000))));
        assert_eq!(quantile_us(&counts, 1.0), Some(upper_us(class(100_000))));
        assert!(upper_us(class(100_000)) <= 112_500);
        assert_eq!(quantile_us(&vec![0; CLASSES], 0.5), None);
    }
}

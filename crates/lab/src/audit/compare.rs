//! The audit's tests: what two clients' operator views must share, and the verdicts.

use serde::Serialize;

use super::observe::{ConnView, StoreView};
use crate::stats;

/// One test's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct Verdict {
    /// What was tested.
    pub test: String,
    /// True if no difference was detected.
    pub pass: bool,
    /// The p-value, for statistical tests.
    pub p_value: Option<f64>,
    /// What was compared, and any difference.
    pub detail: String,
}

fn exact(test: &str, compared: usize, differ: usize, what: &str) -> Verdict {
    Verdict {
        test: test.into(),
        pass: differ == 0 && compared > 0,
        p_value: None,
        detail: format!("{differ} of {compared} {what} differ"),
    }
}

/// The epochs both sides were in steady state: each side's own span without its first
/// epoch (connecting: no write-back yet) and its last two (stopping: the final write-back
/// goes alone), intersected. Those edges show presence, which every party sees anyway.
fn window<T: Copy + Ord + std::ops::Add<Output = T> + From<u8>>(a: &[T], b: &[T]) -> Vec<T> {
    let span = |v: &[T]| -> Option<(T, T)> {
        let (lo, hi) = (*v.iter().min()?, *v.iter().max()?);
        Some((lo + T::from(1), hi))
    };
    let (Some((la, ha)), Some((lb, hb))) = (span(a), span(b)) else {
        return Vec::new();
    };
    let (lo, hi) = (la.max(lb), ha.min(hb));
    let mut both: Vec<T> = a
        .iter()
        .filter(|&&e| e >= lo && e <= hi && b.contains(&e))
        .copied()
        .collect();
    both.sort();
    both.dedup();
    // Each side's last two epochs are out.
    let cut = |v: &[T]| -> Vec<T> {
        let mut s: Vec<T> = v.to_vec();
        s.sort();
        s.into_iter().rev().take(2).collect()
    };
    let (ca, cb) = (cut(a), cut(b));
    both.retain(|e| !ca.contains(e) && !cb.contains(e));
    both
}

/// Storage: in every batch both stores are in, the same slots (counts) and the same bytes
/// and reads (sizes).
pub fn storage(a: &StoreView, b: &StoreView) -> [Verdict; 2] {
    let ia: std::collections::BTreeMap<_, _> = a
        .epochs
        .iter()
        .map(|&(i, s, w, r)| (i, (s, w, r)))
        .collect();
    let ib: std::collections::BTreeMap<_, _> = b
        .epochs
        .iter()
        .map(|&(i, s, w, r)| (i, (s, w, r)))
        .collect();
    let ka: Vec<u64> = ia.keys().map(|&k| k as u64).collect();
    let kb: Vec<u64> = ib.keys().map(|&k| k as u64).collect();
    let window: Vec<usize> = window(&ka, &kb).into_iter().map(|k| k as usize).collect();
    let get = |m: &std::collections::BTreeMap<usize, (u64, u64, u64)>, i| {
        m.get(&i).copied().unwrap_or_default()
    };
    let counts = window
        .iter()
        .filter(|&&i| get(&ia, i).0 != get(&ib, i).0)
        .count();
    let sizes = window
        .iter()
        .filter(|&&i| get(&ia, i) != get(&ib, i))
        .count();
    [
        exact(
            "storage: slots per epoch identical",
            window.len(),
            counts,
            "epochs",
        ),
        exact(
            "storage: bytes written and buckets read per epoch identical",
            window.len(),
            sizes,
            "epochs",
        ),
    ]
}

/// The proxy: in every epoch both connections are in, the same number of frames each way
/// (counts) and the same kinds and sizes (sizes).
pub fn proxy(a: &ConnView, b: &ConnView) -> [Verdict; 2] {
    let ka: Vec<u64> = a.keys().copied().collect();
    let kb: Vec<u64> = b.keys().copied().collect();
    let window = window(&ka, &kb);
    let empty = Vec::new();
    let frames = |v: &ConnView, e: u64| v.get(&e).unwrap_or(&empty).clone();
    let counts = window
        .iter()
        .filter(|&&e| {
            let (fa, fb) = (frames(a, e), frames(b, e));
            fa.iter().filter(|f| f.0).count() != fb.iter().filter(|f| f.0).count()
                || fa.len() != fb.len()
        })
        .count();
    let differing: Vec<u64> = window
        .iter()
        .filter(|&&e| frames(a, e) != frames(b, e))
        .copied()
        .collect();
    let sizes = differing.len();
    let example = differing
        .first()
        .map(|&e| {
            let show = |f: Vec<(bool, shroud_proxy::transcript::FrameKind, u64)>| {
                f.iter()
                    .map(|(i, k, n)| format!("{}{k:?}:{n}", if *i { "<" } else { ">" }))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            format!(
                "; first at epoch {e}: [{}] vs [{}]",
                show(frames(a, e)),
                show(frames(b, e))
            )
        })
        .unwrap_or_default();
    let mut verdicts = [
        exact(
            "proxy: frames per epoch identical",
            window.len(),
            counts,
            "epochs",
        ),
        exact(
            "proxy: frame kinds and sizes per epoch identical",
            window.len(),
            sizes,
            "epochs",
        ),
    ];
    verdicts[1].detail.push_str(&example);
    verdicts
}

/// The leaves: each side uniform (chi-squared), and the two alike (two-sample chi-squared
/// and Kolmogorov-Smirnov), at significance `alpha`.
pub fn leaves(a: &[u64], b: &[u64], count: u64, bins: usize, alpha: f64) -> Vec<Verdict> {
    let ha = super::observe::histogram(a, count, bins);
    let hb = super::observe::histogram(b, count, bins);
    let stat = |test: &str, r: stats::TestResult| Verdict {
        test: test.into(),
        pass: r.p_value >= alpha,
        p_value: Some(r.p_value),
        detail: format!(
            "statistic {:.3}, df {:.0}; {} and {} paths",
            r.statistic,
            r.df,
            a.len(),
            b.len()
        ),
    };
    let mut fa: Vec<f64> = a.iter().map(|&x| x as f64).collect();
    let mut fb: Vec<f64> = b.iter().map(|&x| x as f64).collect();
    vec![
        stat(
            "leaves of A uniform (chi-squared)",
            stats::chi2_uniform(&ha),
        ),
        stat(
            "leaves of B uniform (chi-squared)",
            stats::chi2_uniform(&hb),
        ),
        stat(
            "leaves of A and B alike (two-sample chi-squared)",
            stats::chi2_two_sample(&ha, &hb),
        ),
        stat(
            "leaves of A and B alike (two-sample Kolmogorov-Smirnov)",
            stats::ks_two_sample(&mut fa, &mut fb),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(epochs: &[(usize, u64)]) -> StoreView {
        StoreView {
            epochs: epochs
                .iter()
                .map(|&(i, s)| (i, s, s * 100, s * 7))
                .collect(),
            leaves: Vec::new(),
        }
    }

    #[test]
    fn a_difference_in_any_observable_fails_its_test() {
        let same: Vec<(usize, u64)> = (0..20).map(|i| (i, 4)).collect();
        let mut late = same.clone();
        late[10].1 = 3;
        assert!(storage(&store(&same), &store(&same)).iter().all(|v| v.pass));
        assert!(
            storage(&store(&same), &store(&late))
                .iter()
                .all(|v| !v.pass)
        );
        // The edges (first epoch, last two) do not count.
        let mut edge = same.clone();
        edge[19].1 = 1;
        assert!(storage(&store(&same), &store(&edge)).iter().all(|v| v.pass));

        let conn = |big: bool| -> ConnView {
            (0..20u64)
                .map(|e| {
                    let n = if big && e == 9 { 200 } else { 100 };
                    (
                        e,
                        vec![(true, shroud_proxy::transcript::FrameKind::Slot, n)],
                    )
                })
                .collect()
        };
        assert!(proxy(&conn(false), &conn(false)).iter().all(|v| v.pass));
        let v = proxy(&conn(false), &conn(true));
        assert!(v[0].pass && !v[1].pass, "same count, another size");

        // Skewed leaves fail the uniformity and two-sample tests.
        let uniform: Vec<u64> = (0..20_000u64).map(|i| (i * 7919) % 1024).collect();
        let skewed: Vec<u64> = (0..20_000u64).map(|i| (i * 7919) % 512).collect();
        let v = leaves(&uniform, &skewed, 1024, 32, 1e-3);
        assert!(v[0].pass, "{:?}", v[0]);
        assert!(v.iter().skip(1).all(|v| !v.pass), "{v:?}");
    }
}

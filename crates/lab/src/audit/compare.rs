//! The audit's tests: what two clients' operator views must share, and the verdicts.

use std::collections::BTreeSet;

use serde::Serialize;

use super::observe::{ConnView, Frame, StoreView};
use crate::stats;
use shroud_proxy::transcript::FrameKind;

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

/// Storage: in every batch both stores are in, the same slots (counts); and batch by batch
/// of each store (the n-th of one against the n-th of the other, since Ring ORAM's sizes
/// follow a pattern of the client's batch count), the same bytes and reads (sizes), apart
/// from batches holding an early reshuffle, which storage's own counts announce.
pub fn storage(a: &StoreView, b: &StoreView) -> [Verdict; 2] {
    let ka: Vec<u64> = a.epochs.iter().map(|e| e.0 as u64).collect();
    let kb: Vec<u64> = b.epochs.iter().map(|e| e.0 as u64).collect();
    let slots = |v: &StoreView| -> std::collections::BTreeMap<usize, u64> {
        v.epochs.iter().map(|e| (e.0, e.1)).collect()
    };
    let (sa, sb) = (slots(a), slots(b));
    let window = window(&ka, &kb);
    let counts = window
        .iter()
        .filter(|&&i| sa.get(&(i as usize)) != sb.get(&(i as usize)))
        .count();
    // Each side's first batch (no write-back yet) and last two (stopping) are out.
    let last = a.epochs.len().min(b.epochs.len()).saturating_sub(2);
    let skip = reshuffled(a, b);
    let batches: Vec<usize> = (1..last).filter(|k| !skip.contains(k)).collect();
    let sizes = batches
        .iter()
        .filter(|&&k| {
            (a.epochs[k].1, a.epochs[k].2, a.epochs[k].3)
                != (b.epochs[k].1, b.epochs[k].2, b.epochs[k].3)
        })
        .count();
    let mut verdicts = [
        exact(
            "storage: slots per epoch identical",
            window.len(),
            counts,
            "epochs",
        ),
        exact(
            "storage: bytes written and buckets read per batch identical",
            batches.len(),
            sizes,
            "batches",
        ),
    ];
    if !skip.is_empty() {
        verdicts[1].detail += &format!("; {} with an early reshuffle compared apart", skip.len());
    }
    verdicts
}

/// The batches of either side whose sizes hold an early reshuffle.
pub fn reshuffled(a: &StoreView, b: &StoreView) -> BTreeSet<usize> {
    a.reshuffled.union(&b.reshuffled).copied().collect()
}

/// Ring ORAM: every batch of both sides has the sizes the public pattern gives
/// ([`shroud_proto::Shape::ring_maintenance`]), or one more early reshuffle where
/// storage's own counts show a bucket out of unread dummies.
pub fn ring_pattern(a: &StoreView, b: &StoreView) -> Verdict {
    let off = a.off_pattern.len() + b.off_pattern.len();
    Verdict {
        test: "storage: every batch in Ring ORAM's public pattern".into(),
        pass: off == 0 && !a.epochs.is_empty() && !b.epochs.is_empty(),
        p_value: None,
        detail: format!(
            "{off} of {} batches off the pattern (first: {:?}, {:?}); {} and {} with an early reshuffle",
            a.epochs.len() + b.epochs.len(),
            a.off_pattern.first(),
            b.off_pattern.first(),
            a.reshuffled.len(),
            b.reshuffled.len()
        ),
    }
}

/// The proxy: turn by turn, the same number of frames each way (counts) and the same kinds
/// and sizes (sizes), exactly; and epochs in which the client sent nothing (it was late:
/// its replies came late, or it took too long) equally often on both sides, at
/// significance `alpha` (a two-sample chi-squared test on missed and kept epochs). Which
/// epoch a frame falls in is timing, which varies from run to run with storage's batches;
/// `tests/timing.rs` measures the client's own part of it at the socket. The mail rounds
/// are compared apart: every round frame of one size, and every round's answers of one
/// size, on both sides, and as many round frames per turn.
pub fn proxy(a: &ConnView, b: &ConnView, alpha: f64, skip: &BTreeSet<usize>) -> [Verdict; 4] {
    // Each side's last two turns are out (stopping: the final write-back goes alone), and
    // turns carrying a batch with an early reshuffle (Ring ORAM; see [`storage`]).
    let last = a.turns.len().min(b.turns.len()).saturating_sub(2);
    let skipped = |v: &ConnView, i: usize| {
        v.batch_of_turn
            .get(i)
            .copied()
            .flatten()
            .is_some_and(|k| skip.contains(&k))
    };
    let kept: Vec<usize> = (0..last)
        .filter(|&i| !skipped(a, i) && !skipped(b, i))
        .collect();
    let compared = kept.len();
    let turns = |v: &ConnView| kept.iter().map(|&i| v.turns[i].clone()).collect::<Vec<_>>();
    let (ta, tb) = (turns(a), turns(b));
    let from_client = |t: &[Frame]| t.iter().filter(|f| f.0).count();
    let counts = ta
        .iter()
        .zip(&tb)
        .filter(|(x, y)| from_client(x) != from_client(y) || x.len() != y.len())
        .count();
    let differing: Vec<usize> = (0..compared).filter(|&i| ta[i] != tb[i]).collect();
    let example = differing
        .first()
        .map(|&i| {
            let show = |f: &[Frame]| {
                f.iter()
                    .map(|(i, k, n)| format!("{}{k:?}:{n}", if *i { "<" } else { ">" }))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            format!(
                "; first at turn {}: [{}] vs [{}]",
                kept[i],
                show(&ta[i]),
                show(&tb[i])
            )
        })
        .unwrap_or_default();
    let mut verdicts = [
        exact(
            "proxy: frames per turn identical",
            compared,
            counts,
            "turns",
        ),
        exact(
            "proxy: frame kinds and sizes per turn identical",
            compared,
            differing.len(),
            "turns",
        ),
        missed_epochs(a, b, alpha),
        round_answers(a, b),
    ];
    verdicts[1].detail.push_str(&example);
    verdicts
}

/// The round frames and round answers each side had: each of one size, the same on both,
/// and round frames as often per turn on both sides (within one: where the runs started on
/// the round clock); a run without mail has none on either side.
fn round_answers(a: &ConnView, b: &ConnView) -> Verdict {
    let sizes = |v: &ConnView, kind| -> std::collections::BTreeSet<u64> {
        v.rounds
            .iter()
            .filter(|f| f.1 == kind)
            .map(|f| f.2)
            .collect()
    };
    let count = |v: &ConnView| v.rounds.iter().filter(|f| f.1 == FrameKind::Round).count();
    let (fa, fb) = (sizes(a, FrameKind::Round), sizes(b, FrameKind::Round));
    let (da, db) = (
        sizes(a, FrameKind::RoundDone),
        sizes(b, FrameKind::RoundDone),
    );
    let turns = a.turns.len().min(b.turns.len()).max(1);
    // Round frames per turn, scaled to the shorter side's turns: alike within one and a
    // half (where the runs started on the round clock), or a tenth (the turns counted
    // include each run's setup, whose length varies: 22 against 24 round frames over 23
    // rounds was seen on clean-clone CI between two runs of one idle user).
    let per = |v: &ConnView| count(v) as f64 * turns as f64 / v.turns.len().max(1) as f64;
    let alike = (per(a) - per(b)).abs() <= (0.1 * per(a).max(per(b))).max(1.5);
    Verdict {
        test: "proxy: round frames and answers of one size each, as often, on both sides".into(),
        pass: fa == fb && da == db && fa.len() <= 1 && da.len() <= 1 && alike,
        p_value: None,
        detail: format!(
            "{} and {} round frames, sizes {fa:?} vs {fb:?}; answers of sizes {da:?} vs {db:?}",
            count(a),
            count(b)
        ),
    }
}

/// Epochs of the steady window in which the client sent no frame, as often on both sides.
fn missed_epochs(a: &ConnView, b: &ConnView, alpha: f64) -> Verdict {
    let ka: Vec<u64> = a.epochs.keys().copied().collect();
    let kb: Vec<u64> = b.epochs.keys().copied().collect();
    // Each side's own steady span: the window over its own epochs, every epoch in it.
    let missed = |v: &ConnView, keys: &[u64]| -> (u64, u64) {
        let own = window(keys, keys);
        let (Some(&lo), Some(&hi)) = (own.first(), own.last()) else {
            return (0, 0);
        };
        let missed = (lo..=hi)
            .filter(|e| !v.epochs.get(e).is_some_and(|f| f.iter().any(|f| f.0)))
            .count() as u64;
        (missed, hi - lo + 1)
    };
    let ((ma, na), (mb, nb)) = (missed(a, &ka), missed(b, &kb));
    let r = stats::chi2_two_sample(&[ma, na - ma], &[mb, nb - mb]);
    let p_value = if ma + mb == 0 { 1.0 } else { r.p_value };
    Verdict {
        test: "proxy: epochs without the client's frames as often on both sides".into(),
        pass: na > 0 && nb > 0 && p_value >= alpha,
        p_value: Some(p_value),
        detail: format!("{ma} of {na} vs {mb} of {nb} epochs"),
    }
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
            ..StoreView::default()
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
        // A batch storage's counts show an early reshuffle in (Ring ORAM) is compared
        // apart: a larger one there passes the sizes test, not elsewhere.
        let mut bigger = store(&same);
        bigger.epochs[12].3 += 16;
        assert!(!storage(&store(&same), &bigger)[1].pass);
        bigger.reshuffled = BTreeSet::from([12, 13]);
        let v = storage(&store(&same), &bigger);
        assert!(v.iter().all(|v| v.pass), "{v:?}");
        assert!(v[1].detail.contains("2 with an early reshuffle"), "{v:?}");

        use shroud_proxy::transcript::FrameKind::{Done, Slot};
        // Twenty turns of two slots and their replies, one per epoch; `late` skips epochs.
        let conn = |big: bool, late: &[u64]| -> ConnView {
            let mut v = ConnView::default();
            let mut e = 0;
            for t in 0..20u64 {
                while late.contains(&e) {
                    e += 1;
                }
                let n = if big && t == 9 { 200 } else { 100 };
                let turn = vec![(true, Slot, n), (true, Slot, 100), (false, Done, 50)];
                v.epochs.insert(e, turn.clone());
                v.turns.push(turn);
                e += 1;
            }
            v
        };
        let pass = |v: &[Verdict]| v.iter().map(|v| v.pass).collect::<Vec<_>>();
        let none = BTreeSet::new();
        assert_eq!(
            pass(&proxy(&conn(false, &[]), &conn(false, &[]), 1e-3, &none)),
            [true; 4]
        );
        let v = proxy(&conn(false, &[]), &conn(true, &[]), 1e-3, &none);
        assert_eq!(
            pass(&v),
            [true, false, true, true],
            "same count, another size"
        );
        // Unless storage saw an early reshuffle in that turn's batch.
        let mut numbered = conn(true, &[]);
        numbered.batch_of_turn = (0..20).map(Some).collect();
        let v = proxy(&conn(false, &[]), &numbered, 1e-3, &BTreeSet::from([9]));
        assert_eq!(pass(&v), [true; 4], "{v:?}");
        // A frame fewer in one turn.
        let mut fewer = conn(false, &[]);
        fewer.turns[5].pop();
        let v = proxy(&conn(false, &[]), &fewer, 1e-3, &none);
        assert_eq!(pass(&v), [false, false, true, true]);
        // Late once: the same turns, an epoch skipped; late every other epoch: a difference.
        let v = proxy(&conn(false, &[]), &conn(false, &[7]), 1e-3, &none);
        assert_eq!(pass(&v), [true; 4], "{v:?}");
        let often: Vec<u64> = (0..40).filter(|e| e % 2 == 1).collect();
        let v = proxy(&conn(false, &[]), &conn(false, &often), 1e-3, &none);
        assert_eq!(pass(&v), [true, true, false, true], "{v:?}");
        // Mail rounds: a round frame or an answer of another size, or round frames half as
        // often, fail the rounds' test and nothing else.
        use shroud_proxy::transcript::FrameKind::{Round, RoundDone};
        let rounds = |frame: u64, answer: u64, every: u64| {
            let mut v = conn(false, &[]);
            for _ in (0..20).step_by(every as usize) {
                v.rounds.push((true, Round, frame));
                v.rounds.push((false, RoundDone, answer));
            }
            v
        };
        let base = rounds(500, 300, 4);
        assert!(pass(&proxy(&base, &rounds(500, 300, 4), 1e-3, &none))[3]);
        for other in [
            rounds(501, 300, 4),
            rounds(500, 299, 4),
            rounds(500, 300, 8),
        ] {
            assert_eq!(
                pass(&proxy(&base, &other, 1e-3, &none)),
                [true, true, true, false]
            );
        }

        // Skewed leaves fail the uniformity and two-sample tests.
        let uniform: Vec<u64> = (0..20_000u64).map(|i| (i * 7919) % 1024).collect();
        let skewed: Vec<u64> = (0..20_000u64).map(|i| (i * 7919) % 512).collect();
        let v = leaves(&uniform, &skewed, 1024, 32, 1e-3);
        assert!(v[0].pass, "{:?}", v[0]);
        assert!(v.iter().skip(1).all(|v| !v.pass), "{v:?}");
    }
}

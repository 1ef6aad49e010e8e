//! Statistical tests used to check that what the server sees does not depend on the
//! workload: Pearson's chi-squared goodness-of-fit and homogeneity tests, and the two-sample
//! Kolmogorov-Smirnov test (as in Press et al., "Numerical Recipes", 3rd ed., sections 14.3
//! and 6.14), and a randomization test for measurements whose noise comes in bursts. The
//! special functions come from `puruspe`.

/// A test statistic and its p-value (the probability, under the null hypothesis, of a
/// statistic at least this extreme).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TestResult {
    /// The statistic (chi-squared, or the KS distance D).
    pub statistic: f64,
    /// Degrees of freedom (chi-squared) or the effective sample size (KS).
    pub df: f64,
    /// The p-value.
    pub p_value: f64,
}

/// Chi-squared test that `counts` come from the uniform distribution over its bins.
pub fn chi2_uniform(counts: &[u64]) -> TestResult {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    let statistic: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expected).powi(2) / expected)
        .sum();
    let df = (counts.len() - 1) as f64;
    TestResult {
        statistic,
        df,
        p_value: chi2_sf(statistic, df),
    }
}

/// Chi-squared test that two histograms over the same bins come from one distribution.
/// Bins empty in both are skipped.
pub fn chi2_two_sample(a: &[u64], b: &[u64]) -> TestResult {
    let (ra, rb) = (a.iter().sum::<u64>() as f64, b.iter().sum::<u64>() as f64);
    let (ka, kb) = ((rb / ra).sqrt(), (ra / rb).sqrt());
    let mut statistic = 0.0;
    let mut bins = 0usize;
    for (&x, &y) in a.iter().zip(b) {
        if x + y == 0 {
            continue;
        }
        bins += 1;
        statistic += (ka * x as f64 - kb * y as f64).powi(2) / (x + y) as f64;
    }
    let df = bins.saturating_sub(1) as f64;
    TestResult {
        statistic,
        df,
        p_value: chi2_sf(statistic, df),
    }
}

/// Two-sample Kolmogorov-Smirnov test on values (sorted in place).
pub fn ks_two_sample(a: &mut [f64], b: &mut [f64]) -> TestResult {
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    let (n, m) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0f64);
    while i < a.len() && j < b.len() {
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / n - j as f64 / m).abs());
    }
    let ne = n * m / (n + m);
    let lambda = (ne.sqrt() + 0.12 + 0.11 / ne.sqrt()) * d;
    TestResult {
        statistic: d,
        df: ne,
        p_value: ks_sf(lambda),
    }
}

/// A randomization test (Fisher's; Edgington and Onghena, "Randomization Tests", 4th ed.,
/// ch. 1): `labels` is a treatment the experiment assigned at random by shuffling (which of
/// two conditions each block of time ran under), `statistic` measures how much the
/// measurements differ between the conditions under a labelling. The p-value is the share
/// of `shuffles` reshuffled labellings (plus the observed one) whose statistic is at least
/// the observed one.
///
/// Unlike the KS p-value, this one stays exact when the noise is autocorrelated (a busy
/// second shifts every sample in it): the test assumes nothing about the samples, only that
/// the labels were drawn by this same shuffle, independently of the measurements.
pub fn randomization_test<R: rand::Rng + ?Sized>(
    labels: &[bool],
    shuffles: usize,
    rng: &mut R,
    statistic: impl Fn(&[bool]) -> f64,
) -> TestResult {
    use rand::seq::SliceRandom;
    let observed = statistic(labels);
    let mut shuffled = labels.to_vec();
    let mut as_extreme = 1usize;
    for _ in 0..shuffles {
        shuffled.shuffle(rng);
        if statistic(&shuffled) >= observed {
            as_extreme += 1;
        }
    }
    TestResult {
        statistic: observed,
        df: shuffles as f64,
        p_value: as_extreme as f64 / (shuffles + 1) as f64,
    }
}

/// Where two sets of byte strings differ most, bit by bit: for every bit position, the
/// two-sample z statistic of the proportions of ones (pooled variance), and the largest |z|.
///
/// Strings are compared position by position up to the shortest string's length (callers
/// check lengths on their own). A position constant and equal in both sets has z = 0.
///
/// With few strings a side the z test cannot reach a family-wise threshold, however
/// different a position is; `opposite` is the exact test for that case: a position
/// constant in each set but with different values (a flag that marks one workload), which
/// a fair coin does by chance with probability [`BitDifference::opposite_chance`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BitDifference {
    /// The largest |z| over all positions.
    pub max_z: f64,
    /// The bit position (byte * 8 + bit, least significant first) where it is.
    pub position: usize,
    /// Bit positions compared.
    pub positions: usize,
    /// The first position constant in each set with a different value, if any.
    pub opposite: Option<usize>,
    /// Strings compared, per side.
    pub samples: [usize; 2],
}

impl BitDifference {
    /// The chance that some position is constant in each set with a different value when
    /// no position differs (each bit is a coin of one bias in both sets; a fair one is the
    /// worst case): at most `positions * 2 * 2^-(na + nb)`, capped at 1.
    pub fn opposite_chance(&self) -> f64 {
        let n = (self.samples[0] + self.samples[1]) as i32;
        (self.positions as f64 * 2.0 * 0.5f64.powi(n)).min(1.0)
    }
}

/// The per-bit two-sample test of [`BitDifference`] over `a` and `b` (both non-empty).
pub fn bit_difference<A: AsRef<[u8]>, B: AsRef<[u8]>>(a: &[A], b: &[B]) -> BitDifference {
    let len = a
        .iter()
        .map(|x| x.as_ref().len())
        .chain(b.iter().map(|x| x.as_ref().len()))
        .min()
        .unwrap_or(0);
    let ones = |set: &mut dyn Iterator<Item = &[u8]>| {
        let mut counts = vec![0u32; len * 8];
        for s in set {
            for (i, byte) in s[..len].iter().enumerate() {
                for bit in 0..8 {
                    counts[i * 8 + bit] += u32::from(byte >> bit & 1);
                }
            }
        }
        counts
    };
    let ca = ones(&mut a.iter().map(AsRef::as_ref));
    let cb = ones(&mut b.iter().map(AsRef::as_ref));
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let mut out = BitDifference {
        max_z: 0.0,
        position: 0,
        positions: len * 8,
        opposite: None,
        samples: [a.len(), b.len()],
    };
    for (i, (&x, &y)) in ca.iter().zip(&cb).enumerate() {
        let (xa, yb) = (f64::from(x), f64::from(y));
        let constant_a = x == 0 || xa == na;
        let constant_b = y == 0 || yb == nb;
        if out.opposite.is_none() && constant_a && constant_b && (x == 0) != (y == 0) {
            out.opposite = Some(i);
        }
        let (pa, pb) = (f64::from(x) / na, f64::from(y) / nb);
        let p = (f64::from(x) + f64::from(y)) / (na + nb);
        let se = (p * (1.0 - p) * (1.0 / na + 1.0 / nb)).sqrt();
        let z = if pa == pb {
            0.0
        } else if se == 0.0 {
            f64::INFINITY
        } else {
            ((pa - pb) / se).abs()
        };
        if z > out.max_z {
            out.max_z = z;
            out.position = i;
        }
    }
    out
}

/// The |z| that one of `positions` independent two-sided tests exceeds by chance with
/// probability about `family_p` (Bonferroni over the normal tail), never below `floor`.
pub fn bonferroni_z(positions: usize, family_p: f64, floor: f64) -> f64 {
    let per = family_p / positions.max(1) as f64;
    // Bisect erfc(z / sqrt 2) = per.
    let (mut lo, mut hi) = (0.0f64, 40.0f64);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if puruspe::erfc(mid / std::f64::consts::SQRT_2) > per {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi.max(floor)
}

/// Upper tail of the chi-squared distribution.
pub fn chi2_sf(x: f64, df: f64) -> f64 {
    if df <= 0.0 {
        return 1.0;
    }
    let q = puruspe::gammq(df / 2.0, x / 2.0);
    if q.is_finite() {
        return q;
    }
    // puruspe 0.4.4's quadrature for large shape parameters returns NaN below the mean; the
    // Wilson-Hilferty cube-root normal approximation is accurate to about 1e-4 there
    // (Wilson and Hilferty, PNAS 1931).
    let h = 2.0 / (9.0 * df);
    let z = ((x / df).powf(1.0 / 3.0) - (1.0 - h)) / h.sqrt();
    0.5 * puruspe::erfc(z / std::f64::consts::SQRT_2)
}

/// Kolmogorov's Q_KS(lambda) = 2 * sum_{k>=1} (-1)^(k-1) exp(-2 k^2 lambda^2).
fn ks_sf(lambda: f64) -> f64 {
    if lambda < 0.2 {
        return 1.0;
    }
    let mut sum = 0.0;
    for k in 1..=100 {
        let k = k as f64;
        let term = (-2.0 * k * k * lambda * lambda).exp();
        sum += if k as u64 % 2 == 1 { term } else { -term };
        if term < 1e-12 {
            break;
        }
    }
    (2.0 * sum).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn chi2_known_values() {
        // chi2 = 3.84 with 1 df is the 5% point.
        assert!((chi2_sf(3.841, 1.0) - 0.05).abs() < 1e-3);
        assert!((chi2_sf(18.307, 10.0) - 0.05).abs() < 1e-3);
        // Large df, both sides of the mean (where puruspe alone returns NaN).
        assert!((chi2_sf(511.0, 511.0) - 0.4917).abs() < 2e-3);
        assert!((chi2_sf(564.696, 511.0) - 0.05).abs() < 2e-3);
        assert!((chi2_sf(459.9, 511.0) - 0.95).abs() < 2e-3);
        let r = chi2_uniform(&[100, 100, 100, 100]);
        assert_eq!(r.statistic, 0.0);
        assert!((r.p_value - 1.0).abs() < 1e-9);
        assert!(chi2_uniform(&[400, 0, 0, 0]).p_value < 1e-6);
    }

    #[test]
    fn bit_differences_are_found_where_they_are() {
        use rand::RngExt;
        let mut rng = rand::rng();
        let random = |n: usize, rng: &mut rand::rngs::ThreadRng| -> Vec<Vec<u8>> {
            (0..n)
                .map(|_| (0..16).map(|_| rng.random()).collect())
                .collect()
        };
        let a = random(2000, &mut rng);
        let mut b = random(2000, &mut rng);
        let same = bit_difference(&a, &b);
        assert_eq!(same.positions, 128);
        assert!(same.max_z < 5.0, "{same:?}");
        // Bit 7 of byte 3 always 0 in b: found there.
        for x in &mut b {
            x[3] &= 0x7f;
        }
        let d = bit_difference(&a, &b);
        assert_eq!(d.position, 3 * 8 + 7);
        assert!(d.max_z > 20.0, "{d:?}");
        assert_eq!(same.opposite, None);
        // Twelve strings a side, 1,000 bytes each: a flag bit (set in every b) is past what
        // the z test can show at that family size, and the exact test finds it.
        let mut seeded = rand::rngs::StdRng::seed_from_u64(5);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for _ in 0..12 {
            a.push(
                (0..1_000)
                    .map(|_| seeded.random::<u8>())
                    .collect::<Vec<u8>>(),
            );
            b.push(
                (0..1_000)
                    .map(|_| seeded.random::<u8>())
                    .collect::<Vec<u8>>(),
            );
        }
        let same = bit_difference(&a, &b);
        assert_eq!(same.opposite, None, "{same:?}");
        assert!(same.opposite_chance() < 1e-3);
        for (x, y) in a.iter_mut().zip(&mut b) {
            x[432] &= !0x10;
            y[432] |= 0x10;
        }
        let d = bit_difference(&a, &b);
        assert!(d.max_z < bonferroni_z(d.positions, 1e-3, 5.0), "{d:?}");
        assert_eq!(d.opposite, Some(432 * 8 + 4));
        assert!((bonferroni_z(1, 0.05, 0.0) - 1.96).abs() < 0.01);
        assert!(bonferroni_z(100_000, 1e-4, 5.0) > 6.0);
    }

    #[test]
    fn two_sample_tests_separate_and_agree() {
        assert!(chi2_two_sample(&[50, 50], &[50, 50]).p_value > 0.99);
        assert!(chi2_two_sample(&[90, 10], &[10, 90]).p_value < 1e-6);
        let mut a: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let mut b: Vec<f64> = (0..1000).map(|i| i as f64 + 0.5).collect();
        assert!(ks_two_sample(&mut a, &mut b).p_value > 0.9);
        let mut c: Vec<f64> = (0..1000).map(|i| i as f64 + 300.0).collect();
        assert!(ks_two_sample(&mut a, &mut c).p_value < 1e-6);
    }

    /// Blocks of samples that share a burst of noise: the KS p-value, which takes the samples
    /// as independent, is fooled by the bursts; the randomization test over blocks is not,
    /// and still finds a real shift.
    #[test]
    fn randomization_test_holds_under_bursts_and_finds_shifts() {
        use rand::seq::SliceRandom;
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let (blocks, per) = (20, 50);
        // Block b's samples: its burst (shared by all of them) plus their own noise.
        let bursts: Vec<f64> = (0..blocks).map(|_| rng.random::<f64>() * 5.0).collect();
        let samples = |shift: f64, treated: &[bool], rng: &mut rand::rngs::StdRng| {
            (0..blocks)
                .map(|b| {
                    let s = if treated[b] { shift } else { 0.0 };
                    (0..per)
                        .map(|_| bursts[b] + s + rng.random::<f64>())
                        .collect::<Vec<f64>>()
                })
                .collect::<Vec<_>>()
        };
        let mut labels: Vec<bool> = (0..blocks).map(|b| b % 2 == 0).collect();
        labels.shuffle(&mut rng);
        let d = |data: &[Vec<f64>], l: &[bool]| {
            let pick = |want: bool| -> Vec<f64> {
                (0..blocks)
                    .filter(|&b| l[b] == want)
                    .flat_map(|b| data[b].iter().copied())
                    .collect()
            };
            ks_two_sample(&mut pick(true), &mut pick(false)).statistic
        };
        let null = samples(0.0, &labels, &mut rng);
        let naive = d(&null, &labels);
        let (mut t, mut u) = (Vec::new(), Vec::new());
        for b in 0..blocks {
            if labels[b] { &mut t } else { &mut u }.extend(&null[b]);
        }
        assert!(
            ks_two_sample(&mut t, &mut u).p_value < 0.01,
            "the bursts fool KS (D {naive})"
        );
        let p = randomization_test(&labels, 999, &mut rng, |l| d(&null, l)).p_value;
        assert!(p > 0.01, "no effect, p {p}");
        let shifted = samples(5.0, &labels, &mut rng);
        let p = randomization_test(&labels, 999, &mut rng, |l| d(&shifted, l)).p_value;
        assert!(p < 0.01, "a shift of 5, p {p}");
    }
}

//! The statistics behind the verdict: paired tests, their estimates and confidence intervals,
//! the cluster bootstrap and the multiple-comparison adjustment. Pure functions, no I/O.
//!
//! - [`sign_test_greater`]: the exact one-sided sign test on discordant units. On binary
//!   outcomes with one pass it is McNemar's exact test; with `--loop` it is the same test on
//!   exchanges (clusters), each counted once by the sign of its summed difference.
//! - [`wilcoxon_greater`]: the Wilcoxon signed-rank test of "the centre of the paired
//!   differences exceeds `shift`" (exact distribution for small samples without ties, normal
//!   approximation with tie and continuity corrections otherwise), and
//!   [`hodges_lehmann`], the matching estimate of the centre with its confidence interval.
//! - [`bootstrap_quantile_log_ratio`]: a cluster (pair) bootstrap of the log ratio of two
//!   paired samples' quantiles, giving its standard error.
//! - [`tarone_bonferroni`]: family-wise error control for a family of (mostly discrete)
//!   tests.
//!
//! - [`fisher_greater`]: Fisher's exact test, one-sided, of "the candidate's rate of an event
//!   exceeds the reference's" on two independent samples (the live gate's test).
//!
//! The normal and hypergeometric distributions come from `statrs`; the binomial tail is ours
//! ([`binomial_sf`], statrs's is wrong at large n); ranks, the bootstrap and the
//! adjustment are ours. The verdict engine (`shadowtap-analyzer`) and the control plane's live
//! gate (`shadowtap-control`) both use these.

pub mod splitmix;

use statrs::distribution::{ContinuousCDF, DiscreteCDF, Hypergeometric, Normal};

fn std_normal() -> Normal {
    Normal::standard()
}

/// P(Z > z) for a standard normal Z.
pub fn normal_sf(z: f64) -> f64 {
    if z.is_nan() {
        return 1.0;
    }
    std_normal().sf(z)
}

/// The standard normal quantile.
pub fn normal_quantile(p: f64) -> f64 {
    std_normal().inverse_cdf(p.clamp(1e-300, 1.0 - 1e-16))
}

/// Exact one-sided sign test: P(X >= pos) for X ~ Binomial(pos + neg, 1/2). Ties (units with
/// no difference) carry no information and are not passed in. 1 when there is no discordant
/// unit.
pub fn sign_test_greater(pos: u64, neg: u64) -> f64 {
    binomial_sf(pos, pos + neg, 0.5)
}

/// The exact upper tail of a binomial distribution: P(X >= k) for X ~ Binomial(n, p).
///
/// Summed in log space from the tail's nearer end outwards, term by term (each term from the
/// last by the ratio of successive probabilities), until the terms no longer change the sum:
/// exact to about 1e-12 relative at any n. (statrs's `Binomial::sf` goes through a continued
/// fraction that stops unconverged past n ~ 1.5e4, statrs#434: at n = 2e6 it was off by 0.009.)
pub fn binomial_sf(k: u64, n: u64, p: f64) -> f64 {
    if k == 0 || p >= 1.0 {
        return 1.0;
    }
    if k > n || p <= 0.0 || p.is_nan() {
        return 0.0;
    }
    let mean = n as f64 * p;
    if k as f64 > mean {
        // The upper tail from k up: its terms fall from the first.
        binomial_run(k, n, p, true).min(1.0)
    } else {
        // 1 - P(X <= k - 1), that lower tail summed from k - 1 down.
        (1.0 - binomial_run(k - 1, n, p, false)).clamp(0.0, 1.0)
    }
}

/// The sum of the binomial probabilities from `start` upwards (`up`) or downwards, stopped
/// once a term is below 1e-17 of the sum (the terms only fall beyond the mode).
fn binomial_run(start: u64, n: u64, p: f64, up: bool) -> f64 {
    use statrs::function::gamma::ln_gamma;
    let (nf, q) = (n as f64, 1.0 - p);
    let ln_pmf = |j: u64| {
        let j = j as f64;
        ln_gamma(nf + 1.0) - ln_gamma(j + 1.0) - ln_gamma(nf - j + 1.0)
            + j * p.ln()
            + (nf - j) * q.ln()
    };
    let mut term = ln_pmf(start).exp();
    let mut sum = term;
    let mut j = start;
    loop {
        if up {
            if j >= n {
                break;
            }
            term *= (n - j) as f64 / (j + 1) as f64 * (p / q);
            j += 1;
        } else {
            if j == 0 {
                break;
            }
            term *= j as f64 / (n - j + 1) as f64 * (q / p);
            j -= 1;
        }
        sum += term;
        if term < sum * 1e-17 || term == 0.0 {
            break;
        }
    }
    sum
}

/// Fisher's exact test, one-sided: does the candidate's event rate exceed the reference's, on
/// two independent samples (`x` events in `n` candidate trials, `y` in `m` reference trials)?
/// Under equal rates, conditional on the `x + y` events, the candidate's count is
/// hypergeometric; the p value is P(X >= x). 1 without events or trials.
pub fn fisher_greater(x: u64, n: u64, y: u64, m: u64) -> f64 {
    if x == 0 || n == 0 || m == 0 || x > n || y > m {
        return 1.0;
    }
    match Hypergeometric::new(n + m, x + y, n) {
        Ok(h) => h.sf(x - 1).clamp(0.0, 1.0),
        Err(_) => 1.0,
    }
}

/// The smallest p value a sign test on `n` discordant units can give (all of them one way).
pub fn sign_test_min_p(n: u64) -> f64 {
    0.5f64.powi(n.min(2000) as i32)
}

/// Result of a signed-rank test.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct SignedRank {
    /// Differences that were not zero (after the shift).
    pub n: usize,
    /// Sum of the ranks of the positive differences.
    pub w_plus: f64,
    /// z score of `w_plus` (0 for the exact test).
    pub z: f64,
    /// One-sided p value for "centre greater than the shift".
    pub p_greater: f64,
    /// Whether the exact distribution was used.
    pub exact: bool,
}

/// Wilcoxon signed-rank test of H0 "the differences are symmetric about `shift`" against
/// "they are centred above it", one-sided. Zero differences are dropped (Wilcoxon's rule).
pub fn wilcoxon_greater(d: &[f64], shift: f64) -> SignedRank {
    let mut a: Vec<(f64, bool)> = d
        .iter()
        .map(|&x| x - shift)
        .filter(|x| *x != 0.0 && !x.is_nan())
        .map(|x| (x.abs(), x > 0.0))
        .collect();
    let n = a.len();
    if n == 0 {
        return SignedRank {
            n,
            w_plus: 0.0,
            z: 0.0,
            p_greater: 1.0,
            exact: true,
        };
    }
    a.sort_by(|x, y| x.0.total_cmp(&y.0));
    let mut w_plus = 0.0;
    let mut tie_term = 0.0;
    let mut ties = false;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && a[j + 1].0 == a[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        if t > 1.0 {
            ties = true;
            tie_term += t * t * t - t;
        }
        w_plus += a[i..=j].iter().filter(|x| x.1).count() as f64 * rank;
        i = j + 1;
    }
    if n <= 30 && !ties {
        return SignedRank {
            n,
            w_plus,
            z: 0.0,
            p_greater: exact_signed_rank_sf(n, w_plus.round() as usize),
            exact: true,
        };
    }
    let nf = n as f64;
    let mean = nf * (nf + 1.0) / 4.0;
    let var = nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0 - tie_term / 48.0;
    if var <= 0.0 {
        return SignedRank {
            n,
            w_plus,
            z: 0.0,
            p_greater: if w_plus > mean { 0.0 } else { 1.0 },
            exact: false,
        };
    }
    let z = (w_plus - mean - 0.5) / var.sqrt();
    SignedRank {
        n,
        w_plus,
        z,
        p_greater: normal_sf(z),
        exact: false,
    }
}

/// P(W+ >= w) under H0 for n untied differences (the distribution of sums of subsets of
/// 1..=n, each subset equally likely).
fn exact_signed_rank_sf(n: usize, w: usize) -> f64 {
    let max = n * (n + 1) / 2;
    if w > max {
        return 0.0;
    }
    let mut counts = vec![0f64; max + 1];
    counts[0] = 1.0;
    for k in 1..=n {
        for s in (k..=max).rev() {
            counts[s] += counts[s - k];
        }
    }
    let total = 2f64.powi(n as i32);
    counts[w..].iter().sum::<f64>() / total
}

/// The smallest p value a one-sided signed-rank test on `n` units can give.
pub fn signed_rank_min_p(n: usize) -> f64 {
    0.5f64.powi(n.min(2000) as i32)
}

/// An estimate with a two-sided confidence interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Interval {
    /// Point estimate.
    pub estimate: f64,
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// Walsh averages computed exactly up to this many; above, a seeded uniform sample of them.
const MAX_WALSH: usize = 200_000;

/// Hodges–Lehmann estimate of the centre of `d` (the median of the Walsh averages
/// (d_i + d_j) / 2, i <= j) with the distribution-free confidence interval at level
/// `1 - 2 * tail` that inverts the signed-rank test (normal approximation for the ranks).
/// Large samples use a uniform random sample of 400,000 Walsh averages (seeded): the
/// quantiles of the sample estimate those of all n(n+1)/2.
pub fn hodges_lehmann(d: &[f64], tail: f64, seed: u64) -> Option<Interval> {
    let n = d.len();
    if n == 0 {
        return None;
    }
    let total = n * (n + 1) / 2;
    let mut w: Vec<f64> = if total <= MAX_WALSH {
        let mut w = Vec::with_capacity(total);
        for i in 0..n {
            for j in i..n {
                w.push((d[i] + d[j]) / 2.0);
            }
        }
        w
    } else {
        let mut rng = SplitMix(seed);
        (0..MAX_WALSH)
            .map(|_| {
                let (i, j) = (rng.below(n), rng.below(n));
                (d[i] + d[j]) / 2.0
            })
            .collect()
    };
    let nf = n as f64;
    let z = normal_quantile(1.0 - tail.clamp(1e-12, 0.5));
    // Rank of the lower bound among all Walsh averages (1-based), as a share of them.
    let k = (nf * (nf + 1.0) / 4.0 - z * (nf * (nf + 1.0) * (2.0 * nf + 1.0) / 24.0).sqrt())
        .floor()
        .max(1.0);
    let share = ((k - 1.0) / total as f64).clamp(0.0, 0.5);
    // Three order statistics by selection (O(n) each), not a sort.
    let low = quantile_select(&mut w, share).unwrap_or(0.0);
    let high = quantile_select(&mut w, 1.0 - share).unwrap_or(0.0);
    let estimate = quantile_select(&mut w, 0.5).unwrap_or(0.0);
    Some(Interval {
        estimate,
        low,
        high,
    })
}

pub use crate::splitmix::SplitMix;

/// The q-quantile of sorted values (linear interpolation between order statistics).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    let (a, b) = (sorted[lo], sorted[hi]);
    if a == b || !(a.is_finite() && b.is_finite()) {
        return Some(if pos - lo as f64 > 0.5 { b } else { a });
    }
    Some(a + (b - a) * (pos - lo as f64))
}

/// The q-quantile of unsorted values, reordering them (O(n)).
pub fn quantile_select(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let k = ((q.clamp(0.0, 1.0) * (v.len() - 1) as f64).round()) as usize;
    let (_, x, _) = v.select_nth_unstable_by(k, f64::total_cmp);
    Some(*x)
}

/// Log ratio of two latencies (or quantiles), with censored values (`+inf`: no answer)
/// worse than any answer: a censored candidate against an answered baseline is
/// `CENSORED_LOG_RATIO`, the reverse its negative, both censored 0.
pub fn log_ratio(candidate: f64, baseline: f64) -> f64 {
    match (candidate.is_finite(), baseline.is_finite()) {
        (true, true) => (candidate.max(1.0)).ln() - (baseline.max(1.0)).ln(),
        (false, true) => CENSORED_LOG_RATIO,
        (true, false) => -CENSORED_LOG_RATIO,
        (false, false) => 0.0,
    }
}

/// The log ratio given to a request one side did not answer: e^30, beyond any real ratio.
pub const CENSORED_LOG_RATIO: f64 = 30.0;

/// Result of a bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Bootstrap {
    /// The statistic on the data.
    pub estimate: f64,
    /// Bootstrap standard error.
    pub se: f64,
    /// Resamples drawn.
    pub resamples: usize,
}

/// Log ratio of the q-quantiles of two paired samples (`candidate[i]` and `baseline[i]` are one
/// pair; `clusters` gives the end of each cluster of pairs, so with `--loop` an exchange's
/// passes are resampled together), with its standard error from `resamples` cluster
/// bootstrap draws.
pub fn bootstrap_quantile_log_ratio(
    baseline: &[f64],
    candidate: &[f64],
    cluster_ends: &[usize],
    q: f64,
    resamples: usize,
    seed: u64,
) -> Option<Bootstrap> {
    let n = baseline.len().min(candidate.len());
    if n == 0 || cluster_ends.is_empty() {
        return None;
    }
    let stat = |b: &mut Vec<f64>, c: &mut Vec<f64>| -> f64 {
        let qb = quantile_select(b, q).unwrap_or(0.0);
        let qc = quantile_select(c, q).unwrap_or(0.0);
        log_ratio(qc, qb)
    };
    let (mut b, mut c) = (baseline[..n].to_vec(), candidate[..n].to_vec());
    let estimate = stat(&mut b, &mut c);
    let k = cluster_ends.len();
    let mut rng = SplitMix(seed);
    let mut sum = 0.0;
    let mut sum2 = 0.0;
    for _ in 0..resamples {
        b.clear();
        c.clear();
        for _ in 0..k {
            let j = rng.below(k);
            let start = if j == 0 { 0 } else { cluster_ends[j - 1] };
            b.extend_from_slice(&baseline[start..cluster_ends[j]]);
            c.extend_from_slice(&candidate[start..cluster_ends[j]]);
        }
        let s = stat(&mut b, &mut c);
        sum += s;
        sum2 += s * s;
    }
    let r = resamples.max(1) as f64;
    let var = (sum2 / r - (sum / r).powi(2)).max(0.0) * r / (r - 1.0).max(1.0);
    Some(Bootstrap {
        estimate,
        se: var.sqrt(),
        resamples,
    })
}

/// One-sided p value of "the statistic exceeds `bound`" from an estimate and its standard
/// error (normal approximation); a zero standard error gives 0 or 1.
pub fn wald_greater(estimate: f64, se: f64, bound: f64) -> f64 {
    if se > 0.0 {
        normal_sf((estimate - bound) / se)
    } else if estimate > bound {
        0.0
    } else {
        1.0
    }
}

/// Family-wise error control at `alpha` for tests with raw p values `p` and smallest
/// attainable p values `min_p` (0 for continuous tests): Tarone's procedure. Tests that could
/// not reach significance even with all their evidence one way (a sign test on 3 discordant
/// pairs cannot go below 1/8) are left out of the count K, and the others are compared with
/// alpha / K (Bonferroni over the K that could). Returns the adjusted p values (min(1, K p)
/// for the tests counted, 1 for the others) and K. Valid under any dependence.
pub fn tarone_bonferroni(p: &[f64], min_p: &[f64], alpha: f64) -> (Vec<f64>, usize) {
    let m = p.len();
    if m == 0 {
        return (Vec::new(), 0);
    }
    let mut mins: Vec<f64> = min_p.to_vec();
    mins.sort_by(f64::total_cmp);
    // The smallest K such that at most K tests can reach alpha / K.
    let mut k = m;
    for cand in 1..=m {
        let testable = mins
            .iter()
            .take_while(|&&x| x <= alpha / cand as f64)
            .count();
        if testable <= cand {
            k = cand;
            break;
        }
    }
    let k = k.max(1);
    let adjusted = p
        .iter()
        .zip(min_p)
        .map(|(&pv, &mp)| {
            if mp <= alpha / k as f64 {
                (pv * k as f64).min(1.0)
            } else {
                1.0
            }
        })
        .collect();
    (adjusted, k)
}

/// A p value as people read it: `0.032`, `2.1e-7`.
pub fn fmt_p(p: f64) -> String {
    if p < 1e-16 {
        "<1e-16".to_owned()
    } else if p < 0.001 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_binomial_tail_matches_scipy_at_every_size() {
        // scipy 1.x `binom.sf(k - 1, n, p)`, i.e. P(X >= k).
        let cases: [(u64, u64, f64, f64); 14] = [
            (5, 10, 0.5, 0.623046875),
            (8, 10, 0.5, 0.0546875),
            (10, 10, 0.5, 0.0009765625),
            (520, 1000, 0.5, 0.10872414660207075),
            (600, 1000, 0.5, 1.3642320780329735e-10),
            (50200, 100_000, 0.5, 0.10351948588211125),
            (51000, 100_000, 0.5, 1.2943580191734472e-10),
            (1_000_000, 2_000_000, 0.5, 0.5002820947565123),
            (1_001_000, 2_000_000, 0.5, 0.07875342366146737),
            (1_003_000, 2_000_000, 0.5, 1.1079965708222746e-05),
            (5, 5, 0.05, 3.125000000000001e-07),
            (3, 5, 0.05, 0.001158125),
            (1, 15, 0.05, 0.5367087698402466),
            (60, 1000, 0.05, 0.08673217838486103),
        ];
        for (k, n, p, want) in cases {
            let got = binomial_sf(k, n, p);
            assert!(
                ((got - want) / want).abs() < 1e-7,
                "P(X >= {k}) for Binomial({n}, {p}): {got}, scipy {want}"
            );
        }
        assert_eq!(binomial_sf(0, 10, 0.3), 1.0);
        assert_eq!(binomial_sf(11, 10, 0.3), 0.0);
        assert_eq!(binomial_sf(3, 10, 0.0), 0.0);
        // The sign test is its p = 1/2 case.
        assert!((sign_test_greater(1_001_000, 999_000) - 0.07875342366146737).abs() < 1e-9);
    }

    #[test]
    fn fishers_exact_test_on_known_tables() {
        // 3 of 3 events on the candidate's side, 3 of 6 trials its own: C(3,3)C(3,0)/C(6,3).
        assert!((fisher_greater(3, 3, 0, 3) - 0.05).abs() < 1e-12);
        // The lady tasting tea (4 of 4 right out of 8 cups): 1/70.
        assert!((fisher_greater(4, 4, 0, 4) - 1.0 / 70.0).abs() < 1e-12);
        assert_eq!(fisher_greater(0, 100, 5, 100), 1.0);
        // Fewer events on the candidate's side than expected: no evidence.
        assert!(fisher_greater(1, 100, 9, 100) > 0.99);
    }

    #[test]
    fn sign_test_is_mcnemar_exact() {
        // 20 candidate-only failures, none baseline-only: 2^-20.
        assert!((sign_test_greater(20, 0) - 0.5f64.powi(20)).abs() < 1e-15);
        // 8 vs 2: P(X >= 8 | n = 10) = (45 + 10 + 1) / 1024.
        assert!((sign_test_greater(8, 2) - 56.0 / 1024.0).abs() < 1e-12);
        assert_eq!(sign_test_greater(0, 5), 1.0);
        assert_eq!(sign_test_greater(0, 0), 1.0);
        assert!((sign_test_greater(5, 5) - 0.623_046_875).abs() < 1e-9);
    }

    #[test]
    fn signed_rank_matches_hand_computed_cases() {
        // n = 3, all positive: W+ = 6, P = 1/8.
        let r = wilcoxon_greater(&[1.0, 2.0, 3.0], 0.0);
        assert!(r.exact && (r.p_greater - 0.125).abs() < 1e-12, "{r:?}");
        // Ranks 1..4 of |d|; positives have ranks 2 and 4: W+ = 6; P(W+ >= 6 | n=4) = 7/16.
        let r = wilcoxon_greater(&[-1.0, 2.0, -3.0, 4.0], 0.0);
        assert_eq!(r.w_plus, 6.0);
        assert!((r.p_greater - 7.0 / 16.0).abs() < 1e-12, "{r:?}");
        // The shift: the same data against 10 is strongly below.
        assert!(wilcoxon_greater(&[1.0, 2.0, 3.0], 10.0).p_greater > 0.8);
        // Large sample, normal approximation, symmetric data: p near 0.5.
        let d: Vec<f64> = (0..1000).map(|i| f64::from(i) - 499.5).collect();
        let r = wilcoxon_greater(&d, 0.0);
        assert!(!r.exact && (r.p_greater - 0.5).abs() < 0.05, "{r:?}");
        assert_eq!(wilcoxon_greater(&[], 0.0).p_greater, 1.0);
        assert_eq!(wilcoxon_greater(&[0.0, 0.0], 0.0).n, 0);
    }

    #[test]
    fn hodges_lehmann_centres_and_covers() {
        let d: Vec<f64> = (0..101).map(|i| f64::from(i) / 100.0 + 1.0).collect();
        let hl = hodges_lehmann(&d, 0.025, 1).unwrap();
        assert!((hl.estimate - 1.5).abs() < 0.006, "{hl:?}");
        assert!(
            hl.low < hl.estimate && hl.high > hl.estimate && hl.low > 1.4,
            "{hl:?}"
        );
        // Sampled Walsh averages for a large sample land close to the exact value.
        let big: Vec<f64> = (0..3000).map(|i| f64::from(i % 100)).collect();
        let hl = hodges_lehmann(&big, 0.025, 7).unwrap();
        assert!((hl.estimate - 49.5).abs() < 0.6, "{hl:?}");
        assert!(hodges_lehmann(&[], 0.025, 1).is_none());
    }

    #[test]
    fn tarone_leaves_out_tests_that_cannot_reach_significance() {
        // 100 tests with 2 discordant pairs each (min p 0.25) and one with 20: only one counts.
        let mut p = vec![0.25; 100];
        let mut min_p = vec![0.25; 100];
        p.push(0.5f64.powi(20));
        min_p.push(0.5f64.powi(20));
        let (adj, k) = tarone_bonferroni(&p, &min_p, 0.05);
        assert_eq!(k, 1);
        assert!((adj[100] - 0.5f64.powi(20)).abs() < 1e-15, "{}", adj[100]);
        assert!(adj[..100].iter().all(|&a| a == 1.0));
        // Continuous tests (min p 0): plain Bonferroni.
        let (adj, k) = tarone_bonferroni(&[0.01, 0.02], &[0.0, 0.0], 0.05);
        assert_eq!((adj, k), (vec![0.02, 0.04], 2));
        assert!(tarone_bonferroni(&[], &[], 0.05).0.is_empty());
    }

    #[test]
    fn bootstrap_gives_a_standard_error_and_censoring_is_worst() {
        let b: Vec<f64> = (1..=2000).map(f64::from).collect();
        // The candidate's values are the baseline's doubled, in another order: the pairing
        // is loose, so resamples vary.
        let c: Vec<f64> = (0..2000).map(|i| b[(i * 7919) % 2000] * 2.0).collect();
        let ends: Vec<usize> = (1..=2000).collect();
        let r = bootstrap_quantile_log_ratio(&b, &c, &ends, 0.9, 200, 3).unwrap();
        assert!((r.estimate - 2f64.ln()).abs() < 1e-3, "{r:?}");
        assert!(r.se > 0.0 && r.se < 0.1, "{r:?}");
        assert_eq!(log_ratio(f64::INFINITY, 5.0), CENSORED_LOG_RATIO);
        assert_eq!(log_ratio(f64::INFINITY, f64::INFINITY), 0.0);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.5));
        assert_eq!(quantile(&[1.0, f64::INFINITY], 0.9), Some(f64::INFINITY));
    }
}

//! The statistical tests behind the verdict, with their assumptions stated.
//!
//! - Mann–Whitney U (two-sided p from the normal approximation with tie correction and
//!   continuity correction; good above ~20 per side, which the minimum sample size enforces).
//!   The verdict pairs it with an effect-size bound on the ratio of medians (Kayenta's judge
//!   bounds the ratio of means the same way), so a significant but tiny shift does not fail.
//! - Two-proportion z test (pooled) for rates with enough events, and Fisher's exact test
//!   (one-sided: candidate higher) when any expected cell count is below 5.

/// Standard normal upper tail, P(Z > z), from `erfc` (absolute error below 1.2e-7).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// Complementary error function (Numerical Recipes' Chebyshev fit, |error| < 1.2e-7).
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, n = 9; relative error ~1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = G[0];
    let t = x + 7.5;
    for (i, g) in G.iter().enumerate().skip(1) {
        a += g / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

fn ln_choose(n: u64, k: u64) -> f64 {
    ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
}

/// Result of a rank test.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct MannWhitney {
    /// U statistic of the candidate sample.
    pub u: f64,
    /// z score (positive: candidate ranks higher, i.e. slower for latency).
    pub z: f64,
    /// Two-sided p value.
    pub p_two_sided: f64,
    /// One-sided p value for "candidate higher".
    pub p_greater: f64,
}

/// Mann–Whitney U test of `candidate` against `baseline`.
pub fn mann_whitney(baseline: &[f64], candidate: &[f64]) -> Option<MannWhitney> {
    let (n1, n2) = (baseline.len(), candidate.len());
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let mut all: Vec<(f64, bool)> = baseline
        .iter()
        .map(|&v| (v, false))
        .chain(candidate.iter().map(|&v| (v, true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let mut rank_sum_c = 0.0;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        let t = (j - i + 1) as f64;
        tie_term += t * t * t - t;
        for item in &all[i..=j] {
            if item.1 {
                rank_sum_c += rank;
            }
        }
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u = rank_sum_c - n2f * (n2f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)).max(1.0));
    if var <= 0.0 {
        return Some(MannWhitney {
            u,
            z: 0.0,
            p_two_sided: 1.0,
            p_greater: 0.5,
        });
    }
    let sd = var.sqrt();
    let diff = u - mean;
    let z = if diff > 0.5 {
        (diff - 0.5) / sd
    } else if diff < -0.5 {
        (diff + 0.5) / sd
    } else {
        0.0
    };
    Some(MannWhitney {
        u,
        z,
        p_two_sided: (2.0 * normal_sf(z.abs())).min(1.0),
        p_greater: normal_sf(z),
    })
}

/// Result of comparing two rates.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RateTest {
    /// Which test: `two_proportion_z` or `fisher_exact`.
    pub test: &'static str,
    /// One-sided p value for "candidate rate higher".
    pub p_greater: f64,
    /// z score, for the z test.
    pub z: Option<f64>,
}

/// Compares `x2/n2` (candidate) with `x1/n1` (baseline): is the candidate's rate higher?
pub fn rate_higher(x1: u64, n1: u64, x2: u64, n2: u64) -> Option<RateTest> {
    if n1 == 0 || n2 == 0 {
        return None;
    }
    let n = n1 + n2;
    let x = x1 + x2;
    // Expected counts in the 2x2 table under the null.
    let expected = [
        x as f64 * n1 as f64 / n as f64,
        x as f64 * n2 as f64 / n as f64,
        (n - x) as f64 * n1 as f64 / n as f64,
        (n - x) as f64 * n2 as f64 / n as f64,
    ];
    if expected.iter().any(|&e| e < 5.0) {
        return Some(RateTest {
            test: "fisher_exact",
            p_greater: fisher_greater(x1, n1, x2, n2),
            z: None,
        });
    }
    let (p1, p2, p) = (
        x1 as f64 / n1 as f64,
        x2 as f64 / n2 as f64,
        x as f64 / n as f64,
    );
    let se = (p * (1.0 - p) * (1.0 / n1 as f64 + 1.0 / n2 as f64)).sqrt();
    let z = if se > 0.0 { (p2 - p1) / se } else { 0.0 };
    Some(RateTest {
        test: "two_proportion_z",
        p_greater: normal_sf(z),
        z: Some(z),
    })
}

/// Fisher's exact test, one-sided: P(candidate successes >= x2) given the margins.
pub fn fisher_greater(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    let k = x1 + x2;
    let n = n1 + n2;
    let denom = ln_choose(n, k);
    let hi = k.min(n2);
    let mut p = 0.0;
    for j in x2..=hi {
        if k - j > n1 {
            continue;
        }
        p += (ln_choose(n2, j) + ln_choose(n1, k - j) - denom).exp();
    }
    p.min(1.0)
}

/// A p value as people read it: `0.032`, `2.1e-7`.
pub fn fmt_p(p: f64) -> String {
    if p < 0.001 {
        format!("{p:.1e}")
    } else {
        format!("{p:.3}")
    }
}

/// The q-quantile of sorted values (nearest rank, interpolated).
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_tail_and_gamma() {
        assert!((normal_sf(0.0) - 0.5).abs() < 1e-7);
        assert!((normal_sf(1.959_964) - 0.025).abs() < 1e-6);
        assert!((normal_sf(-1.644_854) - 0.95).abs() < 1e-6);
        assert!((ln_gamma(5.0) - 24f64.ln()).abs() < 1e-10);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-10);
    }

    #[test]
    fn mann_whitney_matches_a_textbook_case() {
        // Identical samples: no evidence either way.
        let a: Vec<f64> = (0..50).map(f64::from).collect();
        let r = mann_whitney(&a, &a).unwrap();
        assert!(r.p_two_sided > 0.9, "{r:?}");
        // Candidate shifted up by 30%: strong evidence it is higher.
        let b: Vec<f64> = a.iter().map(|v| v * 1.3 + 10.0).collect();
        let r = mann_whitney(&a, &b).unwrap();
        assert!(r.p_greater < 0.01 && r.z > 0.0, "{r:?}");
        // Hand-checked small case: U = 3 for [1,2,3] vs [2.5,4,5]... candidate ranks: 3,5,6.
        let r = mann_whitney(&[1.0, 2.0, 3.0], &[2.5, 4.0, 5.0]).unwrap();
        assert_eq!(r.u, 8.0);
    }

    #[test]
    fn rates_use_fisher_when_counts_are_small() {
        // 0/1000 vs 30/1000 errors: z test, clearly higher.
        let r = rate_higher(0, 1000, 30, 1000).unwrap();
        assert_eq!(r.test, "two_proportion_z");
        assert!(r.p_greater < 1e-6, "{r:?}");
        // 0/20 vs 2/20: Fisher, not significant (p = 0.244).
        let r = rate_higher(0, 20, 2, 20).unwrap();
        assert_eq!(r.test, "fisher_exact");
        assert!((r.p_greater - 0.243_589_7).abs() < 1e-4, "{r:?}");
        // Equal rates.
        assert!(rate_higher(50, 1000, 50, 1000).unwrap().p_greater > 0.4);
        assert_eq!(quantile(&[1.0, 2.0, 3.0, 4.0], 0.5), Some(2.5));
    }
}

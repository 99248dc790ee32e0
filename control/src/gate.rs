//! The live gate: on one window, is the new version *significantly* worse than what it is
//! compared with? Thresholds say whether a window is bad in absolute terms; the gate says
//! whether the difference from the stable version is more than chance, with the verdict
//! engine's tests (`shadowtap-stats`):
//!
//! - **paired** (the shadow phase: production and the shadow answered the *same* requests):
//!   errors by McNemar's exact test on the discordant pairs, latency by the Wilcoxon
//!   signed-rank test of "the shadow is more than `latency_tolerance` slower" on the pairs'
//!   log ratios;
//! - **unpaired** (testing: users are split, each request answered once): errors by Fisher's
//!   exact test; latency by Fisher's exact test on the requests slower than the pooled 90th
//!   percentile of the window, after the candidate's latencies are divided by
//!   `1 + latency_tolerance` (its histogram shifted down by that many log-scale buckets,
//!   rounded up), so the null hypothesis is "at most that much slower", not "identical".
//!
//! **The unit** is the request (paired: the mirrored request). **False alarms** across the
//! rollout: the monitor looks once per interval, so look `k` (1, 2, …) is tested at
//! `alpha · 6 / (π² k²)`, which sums to `alpha` over any number of looks (a Bonferroni bound
//! valid whatever the looks' dependence), split evenly between the two checks. A failure also
//! needs a practical effect (`min_error_increase`, `latency_tolerance`), so a huge window does
//! not stop a rollout over a trivial difference. **A tiny window** allows no conclusion: the
//! gate then says `NotEnough`, which neither passes nor fails (the thresholds and
//! `min_requests` still apply). Calibrated in this module's tests (A/A false alarms across a
//! whole rollout, detection of a real regression).

use serde::{Deserialize, Serialize};
use shadowtap_stats::{fisher_greater, sign_test_greater, wilcoxon_greater};

use crate::shift::{Decision, Policy, Progress};

/// The gate's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GateConfig {
    /// Family-wise false-alarm rate over the whole rollout.
    pub alpha: f64,
    /// Slower than this ratio − 1 (0.1: 10% slower) is a latency regression.
    pub latency_tolerance: f64,
    /// An error rate higher by less than this is not a regression, however significant.
    pub min_error_increase: f64,
    /// Latency higher by less than this (ms: the 90th percentiles' difference unpaired, the
    /// median paired difference paired) is not a regression, however significant.
    pub min_latency_increase_ms: f64,
    /// Fewer units than this on either side: not enough to conclude.
    pub min_units: u64,
}

impl Default for GateConfig {
    fn default() -> Self {
        GateConfig {
            alpha: 0.05,
            latency_tolerance: 0.1,
            min_error_increase: 0.002,
            min_latency_increase_ms: 5.0,
            min_units: 20,
        }
    }
}

/// One mirrored request: production's outcome and the shadow's.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairOutcome {
    /// Production erred (5xx or no response).
    pub production_error: bool,
    /// The shadow erred.
    pub shadow_error: bool,
    /// Production's latency, ms (when it answered).
    pub production_ms: Option<f64>,
    /// The shadow's, ms.
    pub shadow_ms: Option<f64>,
}

/// One side of an unpaired comparison on a window.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Sample {
    /// Requests.
    pub requests: u64,
    /// Of them, errors.
    pub errors: u64,
    /// Latency histogram: count per bucket, the same buckets on both sides.
    pub latency: Vec<u64>,
    /// Bucket `k + 1`'s bounds are this times bucket `k`'s (log-scale buckets, e.g. 1.05).
    pub bucket_growth: f64,
}

/// The gate's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "gate", rename_all = "snake_case")]
pub enum Gate {
    /// No significant regression.
    Pass {
        /// The checks' p values, for the record.
        why: String,
    },
    /// A significant, practically large regression.
    Fail {
        /// Which check, its effect and p value against the look's level.
        why: String,
    },
    /// Too few units to conclude anything.
    NotEnough {
        /// How many there were.
        why: String,
    },
}

/// Folds the gate's answer on a window into the monitor's decision on it
/// ([`crate::shift::tick`]'s, from `before` to `after`): a failed gate turns a shift or a
/// promotion into a breach — held with an alert, and rolled back once `failure_limit`
/// windows in a row breach; a gate with too little data to compare turns it into a hold (a
/// silent window, alerting every `silent_limit`) — a promotion stands, since every shift to
/// the target passed. Holds and rollbacks stand as they are.
pub fn fold(
    policy: &Policy,
    before: Progress,
    decision: Decision,
    after: Progress,
    gate: &Gate,
) -> (Decision, Progress) {
    if !matches!(decision, Decision::Shift { .. } | Decision::Promote) {
        return (decision, after);
    }
    let why = match gate {
        Gate::Pass { .. } => return (decision, after),
        Gate::Fail { why } => why,
        // At the target the stable pool may have no traffic left (at 100% it has none): the
        // shifts that led there each passed the gate, so the promotion stands.
        Gate::NotEnough { .. } if matches!(decision, Decision::Promote) => {
            return (decision, after)
        }
        Gate::NotEnough { why } => {
            // The comparison has nothing to compare: never advance on no data.
            let next = Progress {
                silent: before.silent + 1,
                steps: before.steps,
                ..after
            };
            let limit = policy.silent_limit.max(1);
            return (
                Decision::Hold {
                    why: format!(
                        "too little traffic to compare with the stable pool: {why}; {} such windows in a row",
                        next.silent
                    ),
                    alert: next.silent.is_multiple_of(limit),
                },
                next,
            );
        }
    };
    let next = Progress {
        breaches: before.breaches + 1,
        steps: before.steps,
        ..after
    };
    if next.breaches >= policy.failure_limit.max(1) {
        (
            Decision::Rollback {
                why: format!(
                    "{} windows in a row significantly worse than the stable pool: {why}",
                    next.breaches
                ),
            },
            next,
        )
    } else {
        (
            Decision::Hold {
                why: format!(
                    "significantly worse than the stable pool (breach {} of {}): {why}",
                    next.breaches, policy.failure_limit
                ),
                alert: true,
            },
            next,
        )
    }
}

/// The level of look `k` (1-based) of a rollout tested at `alpha` overall.
pub fn look_alpha(alpha: f64, k: u32) -> f64 {
    let k = f64::from(k.max(1));
    alpha * 6.0 / (std::f64::consts::PI.powi(2) * k * k)
}

/// The paired gate (the shadow phase) on look `k`.
pub fn paired(pairs: &[PairOutcome], c: &GateConfig, k: u32) -> Gate {
    let n = pairs.len() as u64;
    if n < c.min_units {
        return Gate::NotEnough {
            why: format!("{n} mirrored pairs (at least {})", c.min_units),
        };
    }
    let level = look_alpha(c.alpha, k) / 2.0;
    let worse = pairs
        .iter()
        .filter(|p| p.shadow_error && !p.production_error)
        .count() as u64;
    let better = pairs
        .iter()
        .filter(|p| p.production_error && !p.shadow_error)
        .count() as u64;
    let p_err = sign_test_greater(worse, better);
    let increase = (worse as f64 - better as f64) / n as f64;
    if p_err < level && increase >= c.min_error_increase {
        return Gate::Fail {
            why: format!(
                "the shadow errs where production did not on {worse} of {n} pairs (the reverse on {better}): +{:.2} points, McNemar p = {p_err:.2e} < {level:.2e}",
                increase * 100.0
            ),
        };
    }
    let d: Vec<f64> = pairs
        .iter()
        .filter_map(|p| match (p.production_ms, p.shadow_ms) {
            (Some(a), Some(b)) if a > 0.0 && b > 0.0 => Some((b / a).ln()),
            _ => None,
        })
        .collect();
    let rank = wilcoxon_greater(&d, (1.0 + c.latency_tolerance).ln());
    let mut ms: Vec<f64> = pairs
        .iter()
        .filter_map(|p| Some(p.shadow_ms? - p.production_ms?))
        .collect();
    ms.sort_by(f64::total_cmp);
    let median_ms = ms.get(ms.len() / 2).copied().unwrap_or(0.0);
    if (d.len() as u64) >= c.min_units
        && rank.p_greater < level
        && median_ms >= c.min_latency_increase_ms
    {
        return Gate::Fail {
            why: format!(
                "the shadow is more than {:.0}% slower than production on the same requests ({} pairs, median +{median_ms:.1} ms): signed-rank p = {:.2e} < {level:.2e}",
                c.latency_tolerance * 100.0,
                d.len(),
                rank.p_greater
            ),
        };
    }
    Gate::Pass {
        why: format!(
            "{n} pairs: errors p = {p_err:.3}, latency p = {:.3} (level {level:.2e})",
            rank.p_greater
        ),
    }
}

/// The bucket at or above which the pooled sample's top tenth lies.
fn pooled_p90_bucket(a: &[u64], b: &[u64]) -> Option<usize> {
    let len = a.len().max(b.len());
    let at = |v: &[u64], k: usize| v.get(k).copied().unwrap_or(0);
    let total: u64 = (0..len).map(|k| at(a, k) + at(b, k)).sum();
    if total == 0 {
        return None;
    }
    let mut seen = 0;
    for k in 0..len {
        seen += at(a, k) + at(b, k);
        if seen as f64 >= 0.9 * total as f64 {
            return Some(k);
        }
    }
    None
}

/// The unpaired gate (testing) on look `k`: `candidate` against `stable` on the same window.
pub fn unpaired(candidate: &Sample, stable: &Sample, c: &GateConfig, k: u32) -> Gate {
    if candidate.requests < c.min_units || stable.requests < c.min_units {
        return Gate::NotEnough {
            why: format!(
                "{} candidate and {} stable requests (at least {} each)",
                candidate.requests, stable.requests, c.min_units
            ),
        };
    }
    let level = look_alpha(c.alpha, k) / 2.0;
    let p_err = fisher_greater(
        candidate.errors,
        candidate.requests,
        stable.errors,
        stable.requests,
    );
    let increase = candidate.errors as f64 / candidate.requests as f64
        - stable.errors as f64 / stable.requests as f64;
    if p_err < level && increase >= c.min_error_increase {
        return Gate::Fail {
            why: format!(
                "error rate {:.4} against the stable pool's {:.4} on the same window: Fisher p = {p_err:.2e} < {level:.2e}",
                candidate.errors as f64 / candidate.requests as f64,
                stable.errors as f64 / stable.requests as f64
            ),
        };
    }
    let mut p_slow = 1.0;
    // The candidate's latencies divided by 1 + tolerance: its histogram moved down.
    let growth = candidate.bucket_growth.max(1.000_001);
    let shift = ((1.0 + c.latency_tolerance.max(0.0)).ln() / growth.ln()).ceil() as usize;
    let shifted: Vec<u64> = (0..candidate.latency.len())
        .map(|k| match k {
            0 => candidate.latency.iter().take(shift + 1).sum(),
            _ => candidate.latency.get(k + shift).copied().unwrap_or(0),
        })
        .collect();
    if let Some(cut) = pooled_p90_bucket(&shifted, &stable.latency) {
        let above = |v: &[u64]| v.iter().skip(cut + 1).sum::<u64>();
        let (n_c, n_s) = (
            shifted.iter().sum::<u64>(),
            stable.latency.iter().sum::<u64>(),
        );
        let (x, y) = (above(&shifted), above(&stable.latency));
        if n_c >= c.min_units && n_s >= c.min_units {
            p_slow = fisher_greater(x, n_c, y, n_s);
            let (share_c, share_s) = (x as f64 / n_c as f64, y as f64 / n_s as f64);
            let p90 = |v: &[u64]| {
                pooled_p90_bucket(v, &[]).map_or(0.0, |k| growth.powf(k as f64 + 0.5) / 1000.0)
            };
            let increase_ms = p90(&candidate.latency) - p90(&stable.latency);
            if p_slow < level && increase_ms >= c.min_latency_increase_ms {
                return Gate::Fail {
                    why: format!(
                        "even allowing {:.0}% slower, {:.1}% of the candidate's requests are in the window's slowest tenth against {:.1}% of the stable pool's: Fisher p = {p_slow:.2e} < {level:.2e}",
                        c.latency_tolerance * 100.0,
                        share_c * 100.0,
                        share_s * 100.0
                    ),
                };
            }
        }
    }
    Gate::Pass {
        why: format!("errors p = {p_err:.3}, slow tail p = {p_slow:.3} (level {level:.2e})"),
    }
}

#[cfg(test)]
mod tests;

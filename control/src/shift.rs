//! Traffic shifting in the testing phase, as pure functions: the next weight of the new version
//! from the current one, the target and the last window's measurements, by algorithm; and the
//! monitor's [`tick`], which turns a window into a decision (shift, hold, roll back, promote)
//! with its reason and numbers.
//!
//! `seed` is the design documents' formula, exactly:
//! ```text
//! if errorRate > errorRateThreshold or latency > latencyThreshold: hold
//! increment = min(0.01 * (target - current), 0.1)        (fractions of all traffic)
//! ```
//! It closes 1% of the remaining gap per interval, so it is slow: 99% of the way takes
//! ln(0.01)/ln(0.99) ≈ 458 intervals (7.6 h at one-minute intervals), and it never lands on the
//! target, so the weight snaps to it once the gap is under one basis point; [`seed_eta`] says
//! how many intervals are left. `linear` adds `step` points per interval, `exponential` doubles
//! from `step`, `metric` scales `step` by the headroom left under both thresholds.

use serde::{Deserialize, Serialize};

/// How the weight grows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case")]
pub enum Algorithm {
    /// The design documents' formula.
    Seed,
    /// `step` percentage points per interval.
    Linear {
        /// Points per interval (default 10).
        step: f64,
    },
    /// Doubling from `step`.
    Exponential {
        /// The first step.
        step: f64,
    },
    /// `step` scaled by the headroom under the thresholds.
    Metric {
        /// The step at full headroom.
        step: f64,
    },
}

/// One interval's measurements of the new version.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Window {
    /// (5xx + transport errors) / requests.
    pub error_rate: f64,
    /// Latency at the policy's percentile, ms.
    pub latency_ms: f64,
    /// Requests in the window.
    pub request_count: u64,
}

/// The limits a window is held to.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Error rate above which the shift holds.
    pub error_rate: f64,
    /// Latency (ms) above which the shift holds.
    pub latency_ms: f64,
}

impl Thresholds {
    /// Whether `w` breaches either limit.
    pub fn breached_by(&self, w: &Window) -> bool {
        w.error_rate > self.error_rate || w.latency_ms > self.latency_ms
    }
}

/// The design documents' formula, verbatim, on fractions of traffic (0–1).
pub fn seed_formula(
    current: f64,
    target: f64,
    error_rate: f64,
    latency: f64,
    error_rate_threshold: f64,
    latency_threshold: f64,
) -> f64 {
    if error_rate > error_rate_threshold || latency > latency_threshold {
        return current;
    }
    let increment = (0.01 * (target - current)).min(0.1);
    current + increment
}

/// One basis point of traffic, in percent: the weight's unit.
pub const UNIT: f64 = 0.01;

/// The next weight (percent) from `current` toward `target` after a window that did not breach;
/// `k` is the number of steps taken so far (for `exponential`).
pub fn next_weight(
    alg: Algorithm,
    current: f64,
    target: f64,
    w: &Window,
    t: &Thresholds,
    k: u32,
) -> f64 {
    if current >= target {
        return current;
    }
    let next = match alg {
        Algorithm::Seed => {
            let f = seed_formula(
                current / 100.0,
                target / 100.0,
                w.error_rate,
                w.latency_ms,
                t.error_rate,
                t.latency_ms,
            ) * 100.0;
            // It never lands on the target: snap once under a basis point away.
            if target - f < UNIT {
                target
            } else {
                f
            }
        }
        Algorithm::Linear { step } => current + step.max(UNIT),
        Algorithm::Exponential { step } => {
            let s = step.max(UNIT) * 2f64.powi(k.min(30) as i32);
            current + s
        }
        Algorithm::Metric { step } => {
            let headroom = (1.0 - w.error_rate / t.error_rate.max(f64::MIN_POSITIVE))
                .min(1.0 - w.latency_ms / t.latency_ms.max(f64::MIN_POSITIVE))
                .clamp(0.0, 1.0);
            current + step.max(UNIT) * headroom
        }
    };
    next.min(target)
}

/// Intervals the seed formula needs from `current` to `target` (percent) with no breach, the
/// snap included; `None` when already there.
pub fn seed_eta(current: f64, target: f64) -> Option<u64> {
    if current >= target {
        return None;
    }
    // The gap shrinks by 1% per interval: gap_n = gap_0 * 0.99^n; done once under a unit.
    let gap = target - current;
    if gap < UNIT {
        return Some(1);
    }
    Some(((UNIT / gap).ln() / 0.99f64.ln()).ceil() as u64 + 1)
}

/// What the monitor does with the testing policy.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// How the weight grows.
    pub algorithm: Algorithm,
    /// Where it stops (percent).
    pub target: f64,
    /// Breach limits: over them the shift holds; `failure_limit` in a row rolls back.
    pub thresholds: Thresholds,
    /// Critical limits: one window over them rolls back at once.
    pub critical: Thresholds,
    /// Consecutive breaching windows that roll back.
    pub failure_limit: u32,
    /// Fewer requests than this in a window: no judgement, hold.
    pub min_requests: u64,
    /// Consecutive windows without enough data before an alert.
    pub silent_limit: u32,
    /// Consecutive windows with no request at all on the new version after which it is rolled
    /// back (Flagger's treatment of "no values"); none: held for ever, alerting.
    #[serde(default)]
    pub no_data_limit: Option<u32>,
}

/// What the monitor remembers between windows (stored with the rollout).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Consecutive breaching windows.
    pub breaches: u32,
    /// Consecutive windows with too little traffic.
    pub silent: u32,
    /// Steps taken.
    pub steps: u32,
    /// Windows the statistical gate has judged (its looks; each spends part of its alpha).
    #[serde(default)]
    pub looks: u32,
    /// Requests of the run of windows in a row that each had too few to judge by rate (their
    /// evidence adds up, see [`small_sample`]).
    #[serde(default)]
    pub small_requests: u64,
    /// Errors among those requests.
    #[serde(default)]
    pub small_errors: u64,
    /// Consecutive windows with no request at all.
    #[serde(default)]
    pub empty: u32,
    /// An operator asked for `live` with `maxStepPercentage` set: the weight steps up to 100%
    /// at every interval whatever the judgement, except a rollback.
    #[serde(default)]
    pub promote: bool,
}

/// The false-alarm rate of the exact test on windows too small to judge by rate: the chance
/// that a version whose true error rate is exactly at a limit shows that many failures.
pub const SMALL_SAMPLE_ALPHA: f64 = 0.001;

/// What `errors` failures of `requests` show when there are too few requests to judge the
/// window's rate against the thresholds: the exact binomial test of "the true error rate is at
/// most the limit", at [`SMALL_SAMPLE_ALPHA`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SmallSample {
    /// Significantly above the critical error rate (p given): roll back now.
    Critical(f64),
    /// Significantly above the error-rate threshold (p given): a breach like any other.
    Breach(f64),
    /// Consistent with both limits: too little traffic to say anything.
    Nothing,
}

/// The exact test behind [`SmallSample`]: five failures out of five is evidence, not silence.
pub fn small_sample(p: &Policy, errors: u64, requests: u64) -> SmallSample {
    if requests == 0 || errors == 0 {
        return SmallSample::Nothing;
    }
    let critical = shadowtap_stats::binomial_sf(errors, requests, p.critical.error_rate);
    if critical <= SMALL_SAMPLE_ALPHA {
        return SmallSample::Critical(critical);
    }
    let breach = shadowtap_stats::binomial_sf(errors, requests, p.thresholds.error_rate);
    if breach <= SMALL_SAMPLE_ALPHA {
        return SmallSample::Breach(breach);
    }
    SmallSample::Nothing
}

impl Window {
    /// The errors the window counted (its rate times its requests).
    pub fn errors(&self) -> u64 {
        (self.error_rate * self.request_count as f64).round() as u64
    }
}

/// The monitor's decision on one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Move the weight to `to`.
    Shift {
        /// The new weight.
        to: f64,
    },
    /// Keep the weight; `alert` when the hold should be told.
    Hold {
        /// Why.
        why: String,
        /// Tell someone.
        alert: bool,
    },
    /// Back to stable now.
    Rollback {
        /// Why, with the numbers.
        why: String,
    },
    /// The target is reached on a good window.
    Promote,
}

/// One monitor step for a rollout in testing at `current` percent.
pub fn tick(p: &Policy, current: f64, progress: Progress, w: &Window) -> (Decision, Progress) {
    let mut next = progress;
    let numbers = format!(
        "error rate {:.4} (threshold {}, critical {}), latency {:.1} ms (threshold {}, critical {}), {} requests",
        w.error_rate,
        p.thresholds.error_rate,
        p.critical.error_rate,
        w.latency_ms,
        p.thresholds.latency_ms,
        p.critical.latency_ms,
        w.request_count
    );
    if w.request_count == 0 {
        next.empty += 1;
        if let Some(limit) = p.no_data_limit.filter(|l| *l > 0 && next.empty >= *l) {
            return (
                Decision::Rollback {
                    why: format!(
                        "no request reached the new version in {} windows in a row (noDataLimit {limit})",
                        next.empty
                    ),
                },
                next,
            );
        }
    } else {
        next.empty = 0;
    }
    // A window without a request is never judged by rate, whatever `min_requests` says (0
    // would otherwise shift on empty windows).
    if w.request_count < p.min_requests.max(1) {
        // Too few requests to judge the rate; their failures still count, added up over the
        // run of such windows.
        next.small_requests += w.request_count;
        next.small_errors += w.errors();
        let (k, n) = (next.small_errors, next.small_requests);
        match small_sample(p, k, n) {
            SmallSample::Critical(pv) => {
                return (
                    Decision::Rollback {
                        why: format!(
                            "critical breach: {k} of {n} requests failed over the last windows \
                             (p = {pv:.1e} at the critical error rate {}; too few requests \
                             to judge by rate, the exact test at {SMALL_SAMPLE_ALPHA})",
                            p.critical.error_rate
                        ),
                    },
                    Progress {
                        small_requests: 0,
                        small_errors: 0,
                        ..next
                    },
                )
            }
            SmallSample::Breach(pv) => {
                next.small_requests = 0;
                next.small_errors = 0;
                next.silent = 0;
                let why = format!(
                    "{k} of {n} requests failed over the last windows (p = {pv:.1e} at the \
                     error-rate threshold {}; too few requests to judge by rate)",
                    p.thresholds.error_rate
                );
                return breach(p, next, &why);
            }
            SmallSample::Nothing => {}
        }
        next.silent += 1;
        let alert = next.silent >= p.silent_limit.max(1)
            && next.silent.is_multiple_of(p.silent_limit.max(1));
        return (
            Decision::Hold {
                why: format!(
                    "too little traffic to judge: {} requests (at least {}); {} such windows in a row",
                    w.request_count, p.min_requests, next.silent
                ),
                alert,
            },
            next,
        );
    }
    next.silent = 0;
    next.small_requests = 0;
    next.small_errors = 0;
    // A critical breach rolls back at once, whatever the count.
    if p.critical.breached_by(w) {
        return (
            Decision::Rollback {
                why: format!("critical breach: {numbers}"),
            },
            next,
        );
    }
    if p.thresholds.breached_by(w) {
        return breach(p, next, &numbers);
    }
    next.breaches = 0;
    if current >= p.target {
        return (Decision::Promote, next);
    }
    let to = next_weight(
        p.algorithm,
        current,
        p.target,
        w,
        &p.thresholds,
        progress.steps,
    );
    next.steps += 1;
    (Decision::Shift { to }, next)
}

/// One more breaching window (`why` gives its numbers): a hold with an alert, or a rollback
/// once `failure_limit` windows in a row breached.
fn breach(p: &Policy, mut next: Progress, why: &str) -> (Decision, Progress) {
    next.breaches += 1;
    if next.breaches >= p.failure_limit.max(1) {
        return (
            Decision::Rollback {
                why: format!("{} breaching windows in a row: {why}", next.breaches),
            },
            next,
        );
    }
    (
        Decision::Hold {
            why: format!("breach {} of {}: {why}", next.breaches, p.failure_limit),
            alert: true,
        },
        next,
    )
}

/// Caps a shift's increase at `max_step` points (the traffic a transition may move at once,
/// so the new version is not overwhelmed); a promotion from further than `max_step` below 100%
/// becomes a shift towards 100% (promoted once there, not by a jump from the target). A
/// rollback is never stepped: it is instant. Other decisions stand.
pub fn cap_step(decision: Decision, current: f64, max_step: Option<f64>) -> Decision {
    match (decision, max_step) {
        (Decision::Shift { to }, Some(m)) if m > 0.0 && to - current > m => {
            Decision::Shift { to: current + m }
        }
        (Decision::Promote, Some(m)) if m > 0.0 && 100.0 - current > m => {
            Decision::Shift { to: current + m }
        }
        (d, _) => d,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OK: Window = Window {
        error_rate: 0.0,
        latency_ms: 10.0,
        request_count: 1000,
    };
    const T: Thresholds = Thresholds {
        error_rate: 0.02,
        latency_ms: 250.0,
    };

    #[test]
    fn a_step_is_capped() {
        assert_eq!(
            cap_step(Decision::Shift { to: 80.0 }, 40.0, Some(25.0)),
            Decision::Shift { to: 65.0 }
        );
        assert_eq!(
            cap_step(Decision::Shift { to: 50.0 }, 40.0, Some(25.0)),
            Decision::Shift { to: 50.0 }
        );
        // A promotion from further than the cap below 100% steps towards it.
        assert_eq!(
            cap_step(Decision::Promote, 40.0, Some(1.0)),
            Decision::Shift { to: 41.0 }
        );
        assert_eq!(
            cap_step(Decision::Shift { to: 80.0 }, 40.0, None),
            Decision::Shift { to: 80.0 }
        );
    }

    #[test]
    fn the_seed_formula_on_known_values() {
        // 0 → 0.5: +0.005; hold on a breach; the 10% cap never binds (0.01 × gap ≤ 0.01).
        assert!((seed_formula(0.0, 0.5, 0.0, 10.0, 0.02, 250.0) - 0.005).abs() < 1e-15);
        assert!((seed_formula(0.1, 0.5, 0.0, 10.0, 0.02, 250.0) - 0.104).abs() < 1e-15);
        assert_eq!(seed_formula(0.1, 0.5, 0.03, 10.0, 0.02, 250.0), 0.1);
        assert_eq!(seed_formula(0.1, 0.5, 0.0, 300.0, 0.02, 250.0), 0.1);
        assert!((seed_formula(0.0, 1.0, 0.0, 0.0, 1.0, 1.0) - 0.01).abs() < 1e-15);
        // In percent through next_weight: 0% → 50% gives 0.5 points.
        let w = next_weight(Algorithm::Seed, 0.0, 50.0, &OK, &T, 0);
        assert!((w - 0.5).abs() < 1e-9, "{w}");
    }

    #[test]
    fn the_seed_is_slow_and_its_eta_says_how_slow() {
        // 99% of the way: ≈ 458 intervals.
        let mut w = 0.0;
        let mut n = 0;
        while w < 49.5 {
            w = next_weight(Algorithm::Seed, w, 50.0, &OK, &T, n);
            n += 1;
        }
        assert!((455..=461).contains(&n), "{n}");
        let eta = seed_eta(0.0, 50.0).unwrap();
        let mut w = 0.0;
        let mut steps = 0;
        while w < 50.0 {
            w = next_weight(Algorithm::Seed, w, 50.0, &OK, &T, steps);
            steps += 1;
        }
        assert!(eta.abs_diff(steps as u64) <= 1, "eta {eta}, took {steps}");
    }

    #[test]
    fn linear_exponential_and_metric_steps() {
        assert_eq!(
            next_weight(Algorithm::Linear { step: 10.0 }, 20.0, 50.0, &OK, &T, 2),
            30.0
        );
        assert_eq!(
            next_weight(Algorithm::Linear { step: 10.0 }, 45.0, 50.0, &OK, &T, 2),
            50.0
        );
        let e = |k| next_weight(Algorithm::Exponential { step: 1.0 }, 0.0, 100.0, &OK, &T, k);
        assert_eq!((e(0), e(1), e(2), e(3)), (1.0, 2.0, 4.0, 8.0));
        let half = Window {
            error_rate: 0.01,
            latency_ms: 10.0,
            request_count: 1000,
        };
        assert_eq!(
            next_weight(Algorithm::Metric { step: 10.0 }, 0.0, 100.0, &half, &T, 0),
            5.0
        );
    }

    fn policy(alg: Algorithm) -> Policy {
        Policy {
            algorithm: alg,
            target: 50.0,
            thresholds: T,
            critical: Thresholds {
                error_rate: 0.1,
                latency_ms: 1000.0,
            },
            failure_limit: 3,
            min_requests: 100,
            silent_limit: 5,
            no_data_limit: None,
        }
    }

    #[test]
    fn no_data_rolls_back_only_past_the_no_data_limit() {
        let empty = Window {
            error_rate: 0.0,
            latency_ms: 0.0,
            request_count: 0,
        };
        let mut p = policy(Algorithm::Linear { step: 10.0 });
        let mut pr = Progress::default();
        for _ in 0..20 {
            let (d, next) = tick(&p, 10.0, pr, &empty);
            assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
            pr = next;
        }
        p.no_data_limit = Some(3);
        let mut pr = Progress::default();
        let decisions: Vec<Decision> = (0..3)
            .map(|_| {
                let (d, next) = tick(&p, 10.0, pr, &empty);
                pr = next;
                d
            })
            .collect();
        assert!(matches!(decisions[1], Decision::Hold { .. }));
        assert!(matches!(&decisions[2], Decision::Rollback { why } if why.contains("noDataLimit")));
        // One request in between starts the count again.
        let one = Window {
            request_count: 1,
            ..empty
        };
        let (_, pr) = tick(&p, 10.0, Progress::default(), &empty);
        let (_, pr) = tick(&p, 10.0, pr, &empty);
        let (_, pr) = tick(&p, 10.0, pr, &one);
        assert_eq!(pr.empty, 0);
    }

    #[test]
    fn an_empty_window_never_shifts_even_with_min_requests_zero() {
        let mut p = policy(Algorithm::Linear { step: 10.0 });
        p.min_requests = 0;
        let empty = Window {
            request_count: 0,
            ..OK
        };
        let (d, _) = tick(&p, 10.0, Progress::default(), &empty);
        assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
        let (d, _) = tick(
            &p,
            10.0,
            Progress::default(),
            &Window {
                request_count: 1,
                ..OK
            },
        );
        assert_eq!(
            d,
            Decision::Shift { to: 20.0 },
            "one good request is a window with 0"
        );
    }

    #[test]
    fn no_data_holds_and_alerts_after_the_silent_limit() {
        let p = policy(Algorithm::Linear { step: 10.0 });
        let quiet = Window {
            request_count: 3,
            ..OK
        };
        let mut pr = Progress::default();
        for i in 1..=5 {
            let (d, next) = tick(&p, 10.0, pr, &quiet);
            pr = next;
            match d {
                Decision::Hold { alert, .. } => assert_eq!(alert, i == 5),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn failures_in_windows_too_small_to_judge_add_up_to_a_rollback() {
        // min_requests 100; critical error rate 0.1, threshold 0.02.
        let p = policy(Algorithm::Linear { step: 10.0 });
        let failing = |n| Window {
            error_rate: 1.0,
            latency_ms: 10.0,
            request_count: n,
        };
        // 1 of 1 failing: P = 0.1 at the critical rate, 0.02 at the threshold, not evidence
        // yet; 3 more: 4 of 4, P = 0.1^4 = 1e-4 at the critical rate.
        let (d, pr) = tick(&p, 10.0, Progress::default(), &failing(1));
        assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
        assert_eq!((pr.small_requests, pr.small_errors), (1, 1));
        let (d, pr) = tick(&p, 10.0, pr, &failing(3));
        match d {
            Decision::Rollback { why } => assert!(why.contains("4 of 4"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert_eq!((pr.small_requests, pr.small_errors), (0, 0));
        // 3 failures of 15 (p = 0.0030 at the 2% threshold: not yet evidence); twice (6 of
        // 30, p = 2.5e-5): a breach, not critical (p = 0.073 at 10%).
        let some = Window {
            error_rate: 0.2,
            latency_ms: 10.0,
            request_count: 15,
        };
        let (d, pr) = tick(&p, 10.0, Progress::default(), &some);
        assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
        let (d, pr) = tick(&p, 10.0, pr, &some);
        match d {
            Decision::Hold { why, alert } => {
                assert!(
                    alert && why.starts_with("breach 1 of 3") && why.contains("6 of 30"),
                    "{why}"
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(pr.breaches, 1);
        // Healthy small windows never breach, however many.
        let healthy = Window {
            error_rate: 0.0,
            latency_ms: 10.0,
            request_count: 10,
        };
        let mut pr = Progress::default();
        for _ in 0..50 {
            let (d, next) = tick(&p, 10.0, pr, &healthy);
            assert!(matches!(d, Decision::Hold { .. }), "{d:?}");
            pr = next;
        }
        assert_eq!(pr.breaches, 0);
    }

    #[test]
    fn the_small_sample_test_keeps_its_false_alarm_rate_at_the_limit() {
        // A version failing at exactly the critical rate is called critical with probability
        // at most SMALL_SAMPLE_ALPHA on any one window, at every size.
        let p = policy(Algorithm::Linear { step: 10.0 });
        for n in 1..100u64 {
            let alarm: f64 = (0..=n)
                .filter(|&k| matches!(small_sample(&p, k, n), SmallSample::Critical(_)))
                .map(|k| {
                    shadowtap_stats::binomial_sf(k, n, 0.1)
                        - shadowtap_stats::binomial_sf(k + 1, n, 0.1)
                })
                .sum();
            assert!(alarm <= SMALL_SAMPLE_ALPHA * 1.000_001, "n {n}: {alarm}");
        }
    }

    #[test]
    fn a_promotion_steps_to_100_under_the_max_step_and_a_rollback_never_steps() {
        assert_eq!(
            cap_step(Decision::Promote, 50.0, Some(20.0)),
            Decision::Shift { to: 70.0 }
        );
        assert_eq!(
            cap_step(Decision::Promote, 90.0, Some(20.0)),
            Decision::Promote
        );
        assert_eq!(cap_step(Decision::Promote, 50.0, None), Decision::Promote);
        let back = Decision::Rollback { why: "x".into() };
        assert_eq!(cap_step(back.clone(), 100.0, Some(5.0)), back);
    }

    fn algorithm() -> impl Strategy<Value = Algorithm> {
        prop_oneof![
            Just(Algorithm::Seed),
            (0.5f64..30.0).prop_map(|step| Algorithm::Linear { step }),
            (0.5f64..10.0).prop_map(|step| Algorithm::Exponential { step }),
            (0.5f64..30.0).prop_map(|step| Algorithm::Metric { step }),
        ]
    }

    fn window() -> impl Strategy<Value = Window> {
        (0.0f64..0.3, 0.0f64..2000.0, 0u64..5000).prop_map(|(e, l, n)| Window {
            error_rate: e,
            latency_ms: l,
            request_count: n,
        })
    }

    proptest! {
        /// Over any run of windows: the weight never rises on a breaching or silent window,
        /// never passes the target, never rises more than the algorithm's step allows; a
        /// critical breach rolls back on that very window.
        #[test]
        fn the_monitor_never_advances_on_a_breach_and_rolls_back_on_a_critical_one(
            alg in algorithm(),
            windows in proptest::collection::vec(window(), 1..80),
        ) {
            let p = policy(alg);
            let (mut weight, mut pr) = (1.0f64, Progress::default());
            for w in windows {
                let (d, next) = tick(&p, weight, pr, &w);
                let breach = p.thresholds.breached_by(&w) && w.request_count >= p.min_requests;
                match d {
                    Decision::Shift { to } => {
                        prop_assert!(!breach && w.request_count >= p.min_requests);
                        prop_assert!(to >= weight && to <= p.target + 1e-9);
                        let max_step = match alg {
                            Algorithm::Seed => 10.0,
                            Algorithm::Linear { step } | Algorithm::Metric { step } => step.max(UNIT),
                            Algorithm::Exponential { step } => step.max(UNIT) * 2f64.powi(pr.steps.min(30) as i32),
                        };
                        prop_assert!(to - weight <= max_step + 1e-9, "{} -> {}", weight, to);
                        weight = to;
                    }
                    Decision::Rollback { .. } => {
                        // A full window over a limit, or the failures of windows too small
                        // to judge by rate (the exact test on them).
                        let small_evidence = w.request_count < p.min_requests && w.errors() > 0;
                        prop_assert!(breach || p.critical.breached_by(&w) || small_evidence);
                        weight = 0.0;
                        pr = Progress::default();
                        continue;
                    }
                    Decision::Hold { .. } | Decision::Promote => {}
                }
                if w.request_count >= p.min_requests && p.critical.breached_by(&w) {
                    prop_assert!(false, "a critical breach must roll back at once");
                }
                pr = next;
                if weight == 0.0 { weight = 1.0; }
            }
        }
    }
}

//! The gate's calibration: false alarms across whole A/A rollouts (every look of each), and
//! detection of real regressions, by simulation with seeded draws.

use super::*;
use shadowtap_stats::SplitMix;

const GROWTH: f64 = 1.05;

fn bucket(ms: f64) -> usize {
    let us = (ms * 1000.0).max(1.0);
    (us.ln() / GROWTH.ln()) as usize
}

fn normal(r: &mut SplitMix) -> f64 {
    let (u, v) = (r.unit().max(1e-12), r.unit());
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// A window of `n` requests: error rate `e`, log-normal latency of median `median_ms`.
fn sample(r: &mut SplitMix, n: u64, e: f64, median_ms: f64) -> Sample {
    let mut s = Sample {
        requests: n,
        errors: 0,
        latency: vec![0; 430],
        bucket_growth: GROWTH,
    };
    for _ in 0..n {
        if r.unit() < e {
            s.errors += 1;
        }
        let ms = median_ms * (0.4 * normal(r)).exp();
        let b = bucket(ms).min(429);
        s.latency[b] += 1;
    }
    s
}

/// Fraction of `rollouts` rollouts of `looks` looks with at least one failure.
fn unpaired_alarms(seed: u64, rollouts: u32, looks: u32, cand: (f64, f64), n_c: u64) -> f64 {
    let c = GateConfig::default();
    let mut r = SplitMix(seed);
    let mut failed = 0;
    for _ in 0..rollouts {
        for k in 1..=looks {
            let a = sample(&mut r, n_c, cand.0, cand.1);
            let b = sample(&mut r, n_c * 4, 0.01, 50.0);
            if matches!(unpaired(&a, &b, &c, k), Gate::Fail { .. }) {
                failed += 1;
                break;
            }
        }
    }
    f64::from(failed) / f64::from(rollouts)
}

#[test]
fn the_looks_levels_sum_to_alpha() {
    let total: f64 = (1..100_000).map(|k| look_alpha(0.05, k)).sum();
    assert!(total <= 0.05 && total > 0.0499, "{total}");
}

#[test]
fn identical_versions_raise_almost_no_alarm_over_a_whole_rollout() {
    // 400 A/A rollouts of 15 looks, 200 candidate requests a window.
    let rate = unpaired_alarms(1, 400, 15, (0.01, 50.0), 200);
    eprintln!("unpaired A/A: {rate}");
    assert!(rate <= 0.05, "A/A false alarms across rollouts: {rate}");
}

#[test]
fn real_regressions_are_caught() {
    // Errors 1% → 5%, and latency 40% slower, 300 candidate requests a window, 10 looks.
    let errors = unpaired_alarms(2, 200, 10, (0.05, 50.0), 300);
    assert!(
        errors >= 0.95,
        "error regression caught in {errors} of rollouts"
    );
    let slower = unpaired_alarms(3, 200, 10, (0.01, 70.0), 300);
    assert!(
        slower >= 0.95,
        "latency regression caught in {slower} of rollouts"
    );
    // A slowdown within the tolerance (5% < 10%) is not a regression.
    let within = unpaired_alarms(4, 200, 10, (0.01, 52.5), 300);
    eprintln!("unpaired: errors {errors}, 40% slower {slower}, 5% slower {within}");
    // 40% slower, but 0.2 ms: significant, not a regression anyone would stop a rollout for.
    let tiny = unpaired_alarms(10, 100, 10, (0.01, 0.7), 300);
    assert!(tiny <= 0.05, "sub-millisecond: {tiny}");
    assert!(within <= 0.05, "{within}");
}

#[test]
fn a_tiny_window_concludes_nothing() {
    let mut r = SplitMix(5);
    let a = sample(&mut r, 5, 1.0, 500.0);
    let b = sample(&mut r, 500, 0.0, 50.0);
    assert!(matches!(
        unpaired(&a, &b, &GateConfig::default(), 1),
        Gate::NotEnough { .. }
    ));
    assert!(matches!(
        paired(&[], &GateConfig::default(), 1),
        Gate::NotEnough { .. }
    ));
}

fn pairs(r: &mut SplitMix, n: usize, shadow_error: f64, slowdown: f64) -> Vec<PairOutcome> {
    (0..n)
        .map(|_| {
            // The request's own cost, shared by both answers, and each side's noise.
            let base = 40.0 * (0.5 * normal(r)).exp();
            let prod = base * (0.1 * normal(r)).exp();
            let shadow = base * slowdown * (0.1 * normal(r)).exp();
            PairOutcome {
                production_error: r.unit() < 0.01,
                shadow_error: r.unit() < shadow_error,
                production_ms: Some(prod),
                shadow_ms: Some(shadow),
            }
        })
        .collect()
}

fn paired_alarms(seed: u64, rollouts: u32, looks: u32, err: f64, slowdown: f64) -> f64 {
    let c = GateConfig::default();
    let mut r = SplitMix(seed);
    let mut failed = 0;
    for _ in 0..rollouts {
        for k in 1..=looks {
            if matches!(
                paired(&pairs(&mut r, 200, err, slowdown), &c, k),
                Gate::Fail { .. }
            ) {
                failed += 1;
                break;
            }
        }
    }
    f64::from(failed) / f64::from(rollouts)
}

#[test]
fn the_paired_gate_is_calibrated_and_has_power() {
    let aa = paired_alarms(6, 300, 15, 0.01, 1.0);
    assert!(aa <= 0.05, "A/A: {aa}");
    // 5% slower is within the 10% tolerance: no alarm.
    let small = paired_alarms(7, 300, 15, 0.01, 1.05);
    assert!(small <= 0.05, "5% slower: {small}");
    let slow = paired_alarms(8, 200, 5, 0.01, 1.3);
    assert!(slow >= 0.95, "30% slower: {slow}");
    let errs = paired_alarms(9, 200, 5, 0.06, 1.0);
    eprintln!("paired: A/A {aa}, 5% slower {small}, 30% slower {slow}, 6% errors {errs}");
    assert!(errs >= 0.95, "6% errors: {errs}");
}

#[test]
fn a_failed_gate_holds_a_shift_and_rolls_back_after_the_failure_limit() {
    use crate::shift::{Algorithm, Thresholds};
    let t = Thresholds {
        error_rate: 0.05,
        latency_ms: 500.0,
    };
    let policy = Policy {
        algorithm: Algorithm::Linear { step: 10.0 },
        target: 100.0,
        thresholds: t,
        critical: t,
        failure_limit: 2,
        min_requests: 10,
        silent_limit: 3,
        no_data_limit: None,
    };
    let fail = Gate::Fail { why: "x".into() };
    let before = Progress::default();
    let after = Progress { steps: 1, ..before };
    let (d, p) = fold(&policy, before, Decision::Shift { to: 20.0 }, after, &fail);
    assert!(matches!(d, Decision::Hold { alert: true, .. }), "{d:?}");
    assert_eq!((p.breaches, p.steps), (1, 0));
    let (d, _) = fold(&policy, p, Decision::Promote, p, &fail);
    assert!(matches!(d, Decision::Rollback { .. }), "{d:?}");
    let none = Gate::NotEnough {
        why: "0 stable requests".into(),
    };
    let (d, p) = fold(&policy, before, Decision::Shift { to: 20.0 }, after, &none);
    assert!(matches!(d, Decision::Hold { alert: false, .. }), "{d:?}");
    assert_eq!((p.silent, p.steps), (1, 0));
    let (d, _) = fold(&policy, before, Decision::Promote, after, &none);
    assert_eq!(
        d,
        Decision::Promote,
        "at 100% the stable pool has no traffic to compare"
    );
    let pass = Gate::Pass { why: String::new() };
    let (d, _) = fold(&policy, before, Decision::Shift { to: 20.0 }, after, &pass);
    assert_eq!(d, Decision::Shift { to: 20.0 });
}

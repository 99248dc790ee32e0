//! Unit tests of the judge on hand-built measurements.

use super::*;
use crate::measure::{LatencyMeasure, RateMeasure};
use crate::stats::{sign_test_greater, sign_test_min_p, Interval};
use crate::verdict::Health;

fn rate(reference: &str, n: u64, cand: u64, refe: u64, worse: u64, better: u64) -> RateMeasure {
    RateMeasure {
        reference: reference.into(),
        n,
        units: n,
        candidate_events: cand,
        reference_events: refe,
        worse,
        better,
        p: sign_test_greater(worse, better),
        min_p: sign_test_min_p(worse + better),
        difference: Interval {
            estimate: (cand as f64 - refe as f64) / n.max(1) as f64,
            low: 0.0,
            high: 0.0,
        },
    }
}

fn latency(reference: &str, n: u64, p_centre: f64) -> LatencyMeasure {
    LatencyMeasure {
        reference: reference.into(),
        units: n,
        n,
        centre: Some(Interval::default()),
        p_centre,
        p_centre_zero: 0.5,
        min_p: 0.0,
        tails: Vec::new(),
        slow: rate(reference, n, 0, 0, 0, 0),
        reference_ms: [Some(5.0); 3],
        candidate_ms: [Some(5.0); 3],
    }
}

fn endpoint(name: &str, n: u64, errors: Vec<RateMeasure>) -> EndpointMeasure {
    let refs: Vec<String> = errors.iter().map(|e| e.reference.clone()).collect();
    EndpointMeasure {
        name: name.into(),
        pairs: n,
        units: n,
        errors,
        latency: refs.iter().map(|r| latency(r, n, 0.9)).collect(),
        differs: rate("noise (baseline2)", n, 0, 0, 0, 0),
        targets: BTreeMap::new(),
    }
}

fn healthy(pairs: u64) -> Health {
    let mut mix = BTreeMap::new();
    mix.insert("2xx".to_owned(), 1.0);
    Health {
        pairs,
        both_answered: pairs,
        candidate_answered: pairs,
        recorded_error_rate: Some(0.0),
        baseline_status_mix: mix.clone(),
        recorded_status_mix: Some(mix),
        status_mix_distance: Some(0.0),
        calibrated: false,
        ..Health::default()
    }
}

/// 30 quiet endpoints and one rare endpoint.
fn service(rare: RateMeasure) -> Measurements {
    let mut endpoints: Vec<EndpointMeasure> = (0..30)
        .map(|i| {
            endpoint(
                &format!("GET /e{i}"),
                200,
                vec![rate("baseline", 200, 6, 6, 3, 3)],
            )
        })
        .collect();
    endpoints.push(endpoint("GET /rare", 20, vec![rare]));
    Measurements {
        baseline: "baseline".into(),
        candidate: "candidate".into(),
        baseline2: None,
        noise: NoiseSource::Baseline2,
        endpoints,
        overall: endpoint(
            "overall",
            6020,
            vec![rate("baseline", 6020, 200, 180, 100, 80)],
        ),
        fields: Vec::new(),
        service_fields: Vec::new(),
        field_names: Vec::new(),
        health: healthy(6020),
        positions: Vec::new(),
        clustered: false,
    }
}

fn check<'a>(j: &'a Judgement, metric: &str, ep: &str) -> &'a Check {
    j.checks
        .iter()
        .find(|c| c.metric == metric && c.endpoint == ep && c.quantity.as_deref() != Some("p90"))
        .unwrap()
}

#[test]
fn a_small_endpoint_fails_on_overwhelming_evidence_and_is_otherwise_not_judged() {
    let p = Policy::default();
    let j = judge(&service(rate("baseline", 20, 20, 0, 20, 0)), &p);
    assert_eq!(j.decision, Decision::NoGo, "{:?}", j.reasons);
    assert_eq!(
        check(&j, "error_rate", "GET /rare").result,
        CheckResult::Fail
    );
    assert!(j.reasons[0].contains("GET /rare"), "{:?}", j.reasons);
    // The same endpoint with 2 of 20: not enough to fail, too small to pass.
    let j = judge(&service(rate("baseline", 20, 2, 0, 2, 0)), &p);
    assert_eq!(j.decision, Decision::Go, "{:?}", j.reasons);
    assert_eq!(
        check(&j, "error_rate", "GET /rare").result,
        CheckResult::Inconclusive
    );
    assert_eq!(j.not_judged.len(), 1);
    assert!(
        j.not_judged[0].why.contains("fewer than 30"),
        "{:?}",
        j.not_judged
    );
    assert!(
        j.notes.iter().any(|n| n.contains("GET /rare")),
        "{:?}",
        j.notes
    );
    // An endpoint with enough pairs but no answers to compare (a 5xx on a side of each) is
    // listed with why, not dropped from the diff tests in silence.
    let mut m = service(rate("baseline", 20, 2, 0, 2, 0));
    m.endpoints[0].differs.n = 0;
    let j = judge(&m, &p);
    let e0 = j
        .not_judged
        .iter()
        .find(|n| n.endpoint == "GET /e0")
        .expect("GET /e0 listed");
    assert!(e0.why.contains("not compared"), "{e0:?}");
}

#[test]
fn an_increase_needs_significance_and_both_bounds() {
    let p = Policy::default();
    let mut m = service(rate("baseline", 20, 0, 0, 0, 0));
    // 3.0% -> 3.1% on 60,000 pairs, significant only by sheer size: within the bounds.
    m.overall.errors = vec![rate("baseline", 60_000, 1860, 1800, 400, 340)];
    let j = judge(&m, &p);
    let c = check(&j, "error_rate", "overall");
    assert_eq!(c.result, CheckResult::Pass, "{}", c.explanation);
    // 0 -> 0.5%: fails.
    m.overall.errors = vec![rate("baseline", 6000, 30, 0, 30, 0)];
    let j = judge(&m, &p);
    assert_eq!(check(&j, "error_rate", "overall").result, CheckResult::Fail);
}

#[test]
fn with_a_second_baseline_the_candidate_must_be_worse_than_both() {
    let p = Policy::default();
    let mut m = service(rate("baseline", 20, 0, 0, 0, 0));
    m.baseline2 = Some("baseline2".into());
    // Worse than the baseline, not than baseline2: passes.
    m.overall.errors = vec![
        rate("baseline", 6000, 60, 0, 60, 0),
        rate("baseline2", 6000, 60, 60, 30, 30),
    ];
    let j = judge(&m, &p);
    let c = check(&j, "error_rate", "overall");
    assert_eq!(c.result, CheckResult::Pass, "{}", c.explanation);
    assert_eq!(c.tests.len(), 2);
    m.overall.errors[1] = rate("baseline2", 6000, 60, 0, 60, 0);
    assert_eq!(
        check(&judge(&m, &p), "error_rate", "overall").result,
        CheckResult::Fail
    );
}

#[test]
fn health_guards_make_vacuous_comparisons_inconclusive() {
    let p = Policy::default();
    let mut m = service(rate("baseline", 20, 0, 0, 0, 0));
    m.health.baseline_error_rate = 1.0;
    let j = judge(&m, &p);
    assert_eq!(j.decision, Decision::Inconclusive);
    assert!(j.reasons[0].contains("unhealthy"), "{:?}", j.reasons);
    let mut m = service(rate("baseline", 20, 0, 0, 0, 0));
    m.health.status_mix_distance = Some(1.0);
    assert!(judge(&m, &p).reasons[0].contains("do not resemble production"));
    let mut m = service(rate("baseline", 20, 0, 0, 0, 0));
    m.health.candidate_answered = 0;
    assert_eq!(judge(&m, &p).decision, Decision::NoGo);
    // One failed request is no evidence: the baseline must have succeeded on enough of the
    // same requests (7 at the default alpha 0.01: 2^-7 < 0.01).
    let mut m = service(rate("baseline", 1, 0, 0, 0, 0));
    m.health.pairs = 1;
    m.health.candidate_answered = 0;
    assert_ne!(judge(&m, &p).decision, Decision::NoGo);
    // A recording of an outage: production, the baseline and the candidate all fail alike.
    let mut m = service(rate("baseline", 20, 0, 0, 0, 0));
    m.health.candidate_answered = 0;
    m.health.candidate_error_rate = 1.0;
    m.health.baseline_error_rate = 1.0;
    m.health.recorded_error_rate = Some(1.0);
    m.health.both_answered = 0;
    assert_eq!(judge(&m, &p).decision, Decision::Inconclusive);
    let mut m = service(rate("baseline", 20, 0, 0, 0, 0));
    m.health.both_answered = 10;
    assert_eq!(judge(&m, &p).decision, Decision::Inconclusive);
}

#[test]
fn every_valid_policy_runs_on_empty_and_tiny_measurements() {
    let mut p = Policy::default();
    p.samples.min_endpoint = 0;
    p.samples.min_overall = 0;
    p.score.pass = 0.0;
    p.score.marginal = 0.0;
    p.check().unwrap();
    let mut m = service(rate("baseline", 0, 0, 0, 0, 0));
    m.endpoints.clear();
    m.overall = endpoint("overall", 0, vec![rate("baseline", 0, 0, 0, 0, 0)]);
    m.health = Health::default();
    let j = judge(&m, &p);
    assert_eq!(j.decision, Decision::Inconclusive, "{:?}", j.reasons);
    // Every metric disabled: nothing judged, inconclusive, no panic.
    let mut q = Policy::default();
    q.metrics.error_rate.enabled = false;
    q.metrics.latency.enabled = false;
    q.metrics.diff_rate.enabled = false;
    let j = judge(&service(rate("baseline", 20, 0, 0, 0, 0)), &q);
    assert_eq!(j.decision, Decision::Inconclusive, "{:?}", j.reasons);
    // Nonsense is refused with the key named.
    let mut bad = Policy::default();
    bad.metrics.latency.max_ratio = 0.5;
    assert!(bad.check().unwrap_err().contains("max_ratio"));
    let bad = Policy {
        baseline2: "candidate".into(),
        ..Policy::default()
    };
    assert!(bad.check().is_err());
    let mut bad = Policy::default();
    bad.noise.absolute = f64::NAN;
    assert!(bad.check().is_err());
}

mod properties {
    use super::*;
    use crate::units::{Obs, Pair, PairSet};
    use proptest::prelude::*;

    /// One target's drawn outcome: status class, latency in ms.
    type Drawn = (u8, u16);

    /// A small pair set from drawn (endpoint, pass count, baseline, candidate, baseline2)
    /// outcomes.
    fn pair_set(draws: &[(u8, u8, Drawn, Drawn, Option<Drawn>)]) -> PairSet {
        let b2 = draws.iter().any(|d| d.4.is_some());
        let mut set = PairSet::new(
            "baseline",
            "candidate",
            b2.then_some("baseline2"),
            if b2 {
                NoiseSource::Baseline2
            } else {
                NoiseSource::None
            },
        );
        let obs = |(s, ms): Drawn| match s % 4 {
            0 => Obs::no_answer(i64::from(ms) * 1000),
            1 => Obs::answer(500, i64::from(ms) * 1000),
            2 => Obs::answer(404, i64::from(ms) * 1000),
            _ => Obs::answer(200, i64::from(ms) * 1000),
        };
        for (i, d) in draws.iter().enumerate() {
            let ep = set.endpoint_id(&format!("GET /e{}", d.0 % 4));
            let cluster = set.cluster_id(&format!("x{i}"));
            for _ in 0..=(d.1 % 3) {
                set.pairs.push(Pair {
                    endpoint: ep,
                    cluster,
                    baseline: obs(d.2),
                    candidate: obs(d.3),
                    baseline2: if b2 {
                        Some(obs(d.4.unwrap_or(d.2)))
                    } else {
                        None
                    },
                    recorded_status: Some(200),
                    candidate_diff: Some(Vec::new()),
                    noise_diff: b2.then(Vec::new),
                });
            }
        }
        set.group_by_cluster();
        set
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any pairs under any valid policy: no panic, a decision whose exit code is one of
        /// the four, and never go when nothing was compared.
        #[test]
        fn measure_and_judge_never_panic(
            draws in proptest::collection::vec(
                (any::<u8>(), any::<u8>(), (any::<u8>(), 1u16..5000), (any::<u8>(), 1u16..5000),
                 proptest::option::of((any::<u8>(), 1u16..5000))),
                0..120),
            min_endpoint in 0u64..50,
            min_overall in 0u64..100,
            alpha in 0.0001f64..0.5,
            max_ratio in 1.0f64..3.0,
            tail_min in 1u64..20,
        ) {
            let mut p = Policy::default();
            p.samples.min_endpoint = min_endpoint;
            p.samples.min_overall = min_overall;
            p.metrics.error_rate.alpha = alpha;
            p.metrics.latency.alpha = alpha;
            p.metrics.latency.max_ratio = max_ratio;
            p.metrics.latency.tail_min_pairs = tail_min;
            p.metrics.latency.bootstrap_resamples = 20;
            prop_assert!(p.check().is_ok());
            let set = pair_set(&draws);
            let m = crate::measure::measure(&set, &p);
            let j = judge(&m, &p);
            if set.pairs.is_empty() {
                prop_assert_eq!(j.decision, Decision::Inconclusive);
            }
            for c in &j.checks {
                if let Some(t) = &c.test {
                    let pv = t.p_value.unwrap_or(0.5);
                    prop_assert!((0.0..=1.0).contains(&pv), "{:?}", t);
                }
            }
        }

        /// A candidate that answered exactly as the baseline did, request by request, is never
        /// NO-GO, whatever the policy, the second baseline or the sample (through the whole
        /// pipeline, references checked).
        #[test]
        fn a_candidate_identical_to_the_baseline_is_never_no_go(
            draws in proptest::collection::vec(
                (any::<u8>(), any::<u8>(), (any::<u8>(), 1u16..5000), (any::<u8>(), 1u16..5000),
                 proptest::option::of((any::<u8>(), 1u16..5000))),
                0..120),
            min_endpoint in 0u64..50,
            alpha in 0.0001f64..0.5,
        ) {
            let mut p = Policy::default();
            p.samples.min_endpoint = min_endpoint;
            p.metrics.error_rate.alpha = alpha;
            p.metrics.latency.alpha = alpha;
            p.metrics.latency.bootstrap_resamples = 20;
            let same: Vec<_> = draws.iter().map(|d| (d.0, d.1, d.2, d.2, d.4)).collect();
            let (_, j) = crate::references::judge_set(&pair_set(&same), &p);
            prop_assert!(j.decision != Decision::NoGo, "{:?}", j.reasons);
        }

        /// Monotonicity: a candidate made worse on some requests (a success turned into a 5xx
        /// or no answer, or slower) is never judged better: what was NO-GO stays NO-GO, and
        /// what is GO now was GO before (through the whole pipeline, references checked).
        #[test]
        fn a_worse_candidate_is_never_judged_better(
            // Mostly successes (so GO is common), sometimes anything.
            draws in proptest::collection::vec(
                (any::<u8>(), any::<u8>(),
                 (prop_oneof![20 => Just(3u8), 1 => any::<u8>()], 5u16..200),
                 (prop_oneof![20 => Just(3u8), 1 => any::<u8>()], 5u16..200),
                 proptest::option::of((prop_oneof![20 => Just(3u8), 1 => any::<u8>()], 5u16..200))),
                0..300),
            worsen in proptest::collection::vec(
                (prop_oneof![3 => Just(false), 1 => Just(true)], 0u8..3), 300),
        ) {
            let mut p = Policy::default();
            p.metrics.latency.bootstrap_resamples = 50;
            let worse: Vec<_> = draws
                .iter()
                .zip(&worsen)
                .map(|(d, &(on, how))| {
                    let (s, ms) = d.3;
                    // Status classes (see `pair_set`): 0 no answer, 1 5xx, 2 404, 3 200.
                    let succeeded = s % 4 >= 2;
                    let c = if !on {
                        (s, ms)
                    } else {
                        match how {
                            // A success turned into a 5xx or into no answer.
                            0 if succeeded => (1, ms),
                            1 if succeeded => (0, ms),
                            0 | 1 => (s, ms),
                            // The same answer, slower.
                            _ => (s, ms.saturating_mul(2).min(60_000)),
                        }
                    };
                    (d.0, d.1, d.2, c, d.4)
                })
                .collect();
            let (_, before) = crate::references::judge_set(&pair_set(&draws), &p);
            let (_, after) = crate::references::judge_set(&pair_set(&worse), &p);
            if before.decision == Decision::NoGo {
                prop_assert_eq!(after.decision, Decision::NoGo, "{:?}", after.reasons);
            }
            if after.decision == Decision::Go {
                prop_assert_eq!(before.decision, Decision::Go, "{:?}", before.reasons);
            }
        }
    }
}

#[test]
fn a_field_changed_thinly_on_every_endpoint_fails_across_the_service() {
    use crate::measure::{FieldMeasure, EVERY_ENDPOINT};
    let field = |endpoint, pairs, worse| FieldMeasure {
        endpoint,
        field: 0,
        pairs,
        candidate: worse,
        noise: 0,
        worse,
        better: 0,
        p: sign_test_greater(worse, 0),
        min_p: sign_test_min_p(worse),
    };
    let p = Policy::default();
    let mut m = service(rate("baseline", 20, 0, 0, 0, 0));
    m.field_names = vec![("status".into(), "status".into())];
    // 2% of every endpoint's 200 pairs answer another status: 4 each, nothing alone.
    m.fields = (0..30).map(|e| field(e, 200, 4)).collect();
    let j = judge(&m, &p);
    assert_eq!(j.decision, Decision::Go, "{:?}", j.reasons);
    // The same 120 pairs counted over the service are no accident.
    m.service_fields = vec![field(EVERY_ENDPOINT, 6000, 120)];
    let j = judge(&m, &p);
    assert_eq!(j.decision, Decision::NoGo, "{:?}", j.reasons);
    let overall = check(&j, "diff_rate", "overall");
    assert_eq!(overall.result, CheckResult::Fail);
    assert!(
        overall
            .explanation
            .contains("across the service: status (status)"),
        "{}",
        overall.explanation
    );
    assert!(j
        .fields
        .iter()
        .any(|f| f.endpoint == "overall" && f.field == "status" && !f.noise));
    // No endpoint's own check fails for it.
    assert_eq!(check(&j, "diff_rate", "GET /e0").result, CheckResult::Pass);
}

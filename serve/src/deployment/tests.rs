use super::*;
use proptest::prelude::*;

fn lb() -> LoadBalancerConfig {
    LoadBalancerConfig {
        sticky: "request".into(),
        ..LoadBalancerConfig::new("web", "127.0.0.1:0", vec!["http://127.0.0.1:9001".into()])
    }
}

fn spec() -> TestingSpec {
    serde_json::from_value(serde_json::json!({
        "targetTrafficPercentage": 50, "errorRateThreshold": 0.02, "latencyThreshold": 250,
        "algorithm": "linear", "interval": "1s"
    }))
    .unwrap()
}

fn shadow(pool: &str) -> Action {
    Action::Shadow {
        pool: vec![pool.into()],
        mirror_percentage: 5.0,
        criteria: vec!["header:X-Shadow-Test=true".into()],
        metrics_urls: Default::default(),
    }
}

fn go(d: &Deployment, a: Action) -> Outcome {
    act(d, &a, "test", None, 1.0e9).unwrap()
}

#[test]
fn shadow_then_testing_then_a_rollback_and_the_proxy_config_of_each() {
    let d = Deployment::new(&lb(), 1.0e9);
    let c = proxy_config(&lb(), &d);
    assert_eq!(c.canary.as_ref().unwrap().weight, 0.0);
    assert!(c.shadows.is_empty());
    let o = go(&d, shadow("http://127.0.0.1:9002"));
    assert_eq!(o.history.len(), 1);
    assert_eq!(o.alerts.len(), 1);
    let c = proxy_config(&lb(), &o.deployment);
    assert_eq!(c.shadows[0].urls, ["http://127.0.0.1:9002"]);
    assert_eq!(c.mirror.percent, 5.0);
    assert_eq!(c.mirror.criteria.match_header, ["X-Shadow-Test: true"]);
    assert_eq!(c.canary.as_ref().unwrap().weight, 0.0);
    let o = go(&o.deployment, Action::Testing(Box::new(spec())));
    let d = o.deployment;
    assert_eq!(d.rollout.state, State::Testing);
    assert_eq!(
        d.rollout.traffic_percentage, 10.0,
        "linear starts at its first step"
    );
    let c = proxy_config(&lb(), &d);
    assert_eq!(c.canary.as_ref().unwrap().urls, ["http://127.0.0.1:9002"]);
    assert_eq!(c.canary.as_ref().unwrap().weight, 10.0);
    assert!(
        c.shadows.is_empty(),
        "the candidate is not mirrored to as well"
    );
    let o = act(&d, &Action::Rollback, "ops", Some("bad"), 1.0e9).unwrap();
    assert_eq!(o.history[0].reason, "bad");
    assert_eq!(o.history[0].actor, "ops");
    let c = proxy_config(&lb(), &o.deployment);
    assert_eq!(c.canary.as_ref().unwrap().weight, 0.0);
    assert!(c.shadows.is_empty());
    let gone = go(&o.deployment, Action::Removed).deployment;
    assert_eq!(gone.rollout.state, State::Removed);
    assert_eq!(gone.stable_pool, ["http://127.0.0.1:9001"]);
    assert!(gone.candidate_pool.is_empty());
}

#[test]
fn a_promotion_ends_with_the_new_version_as_the_stable_pool() {
    let d = Deployment::new(&lb(), 1.0e9);
    let d = go(&d, shadow("http://127.0.0.1:9002")).deployment;
    let d = go(&d, Action::Testing(Box::new(spec()))).deployment;
    let d = go(&d, Action::Live).deployment;
    assert_eq!(proxy_config(&lb(), &d).canary.unwrap().weight, 100.0);
    let d = go(&d, Action::Remove).deployment;
    assert_eq!(d.rollout.state, State::Removing);
    assert_eq!(proxy_config(&lb(), &d).canary.unwrap().weight, 100.0);
    let d = go(&d, Action::Removed).deployment;
    assert_eq!(d.stable_pool, ["http://127.0.0.1:9002"]);
    let c = proxy_config(&lb(), &d);
    assert_eq!(c.production, ["http://127.0.0.1:9002"]);
    assert_eq!(c.canary.unwrap().weight, 0.0);
}

/// With `maxStepPercentage`, an operator's `live` and a recovery step up like a promotion:
/// never more than the cap at once; a rollback is never stepped.
#[test]
fn live_and_recovery_step_under_the_max_step() {
    let mut capped = spec();
    capped.max_step_percentage = Some(30.0);
    let d = Deployment::new(&lb(), 1.0e9);
    let d = go(&d, shadow("http://127.0.0.1:9002")).deployment;
    let d = go(&d, Action::Testing(Box::new(capped))).deployment;
    assert_eq!(d.rollout.traffic_percentage, 10.0);
    let o = go(&d, Action::Live);
    assert_eq!(
        (
            o.deployment.rollout.state,
            o.deployment.rollout.traffic_percentage
        ),
        (State::Testing, 40.0),
        "the first step at once"
    );
    assert!(o.deployment.progress.promote, "the monitor steps on");
    assert!(
        o.history[0].reason.contains("stepping"),
        "{:?}",
        o.history[0]
    );
    // Paused: `live` resumes, keeping the request to promote.
    let paused = go(&o.deployment, Action::Pause).deployment;
    let resumed = go(&paused, Action::Live).deployment;
    assert_eq!(resumed.rollout.state, State::Testing);
    assert!(resumed.progress.promote);
    // Within a step of 100%: live at once.
    let mut near = o.deployment.clone();
    near.rollout.traffic_percentage = 75.0;
    let live = go(&near, Action::Live).deployment;
    assert_eq!(
        (live.rollout.state, live.rollout.traffic_percentage),
        (State::Live, 100.0)
    );
    assert!(!live.progress.promote, "a new state starts afresh");
    // Degraded to 50%, then recovered in steps of at most 30 points.
    let degraded = go(
        &live,
        Action::Degrade {
            to: 50.0,
            metrics: serde_json::Value::Null,
        },
    )
    .deployment;
    let up = |d: &Deployment, to: f64| {
        go(
            d,
            Action::Recover {
                to,
                metrics: serde_json::Value::Null,
            },
        )
        .deployment
    };
    let step1 = up(&degraded, 80.0);
    assert_eq!(
        (step1.rollout.state, step1.rollout.traffic_percentage),
        (State::Degraded, 80.0)
    );
    let step2 = up(&step1, 100.0);
    assert_eq!(
        (step2.rollout.state, step2.rollout.traffic_percentage),
        (State::Live, 100.0)
    );
    let back = go(&step1, Action::Rollback).deployment;
    assert_eq!(back.rollout.traffic_percentage, 0.0, "never stepped");
}

#[test]
fn refusals_and_bad_values() {
    let d = Deployment::new(&lb(), 1.0e9);
    assert!(matches!(
        act(&d, &Action::Live, "t", None, 0.0),
        Err(ActError::Refused(_))
    ));
    assert!(matches!(
        act(&d, &Action::Testing(Box::new(spec())), "t", None, 0.0),
        Err(ActError::Invalid(m)) if m.contains("candidatePool")
    ));
    let mut bad = spec();
    bad.error_rate_threshold = 2.0;
    bad.candidate_pool = Some(vec!["http://127.0.0.1:9002".into()]);
    assert!(matches!(
        act(&d, &Action::Testing(Box::new(bad)), "t", None, 0.0),
        Err(ActError::Invalid(m)) if m.contains("errorRateThreshold")
    ));
    for criteria in [vec!["color:blue".to_owned()], vec!["header:".to_owned()]] {
        let a = Action::Shadow {
            pool: vec!["http://127.0.0.1:9002".into()],
            mirror_percentage: 5.0,
            criteria,
            metrics_urls: Default::default(),
        };
        assert!(matches!(
            act(&d, &a, "t", None, 0.0),
            Err(ActError::Invalid(_))
        ));
    }
    let a = Action::Shadow {
        pool: vec!["not a url".into()],
        mirror_percentage: 5.0,
        criteria: vec![],
        metrics_urls: Default::default(),
    };
    assert!(matches!(
        act(&d, &a, "t", None, 0.0),
        Err(ActError::Invalid(_))
    ));
    // A new version arriving mid-rollout is refused, not a silent restart.
    let d = go(&d, shadow("http://127.0.0.1:9002")).deployment;
    assert!(matches!(
        act(&d, &shadow("http://127.0.0.1:9003"), "t", None, 0.0),
        Err(ActError::Refused(_))
    ));
    let d = go(&d, Action::Testing(Box::new(spec()))).deployment;
    assert!(matches!(
        act(&d, &shadow("http://127.0.0.1:9003"), "t", None, 0.0),
        Err(ActError::Refused(_))
    ));
}

#[test]
fn relative_thresholds_tighten_on_the_stable_pools_window() {
    let mut s = spec();
    s.max_error_rate_increase = Some(0.005);
    s.max_latency_ratio = Some(1.5);
    let p = s
        .policy(&Defaults {
            interval_s: 1.0,
            min_requests: 10,
            silent_limit: 3,
            failure_limit: 3,
        })
        .unwrap();
    let stable = Window {
        error_rate: 0.001,
        latency_ms: 100.0,
        request_count: 500,
    };
    let t = effective_thresholds(&s, &p, &stable);
    assert!((t.error_rate - 0.006).abs() < 1e-12);
    assert_eq!(t.latency_ms, 150.0);
    let none = Window {
        request_count: 0,
        ..stable
    };
    assert_eq!(effective_thresholds(&s, &p, &none), p.thresholds);
}

fn any_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(shadow("http://127.0.0.1:9002")),
        Just(Action::Testing(Box::new(TestingSpec {
            candidate_pool: Some(vec!["http://127.0.0.1:9002".into()]),
            ..spec()
        }))),
        Just(Action::Live),
        Just(Action::Rollback),
        Just(Action::Pause),
        Just(Action::Resume),
        Just(Action::Remove),
        Just(Action::Removed),
        (0.0..100.0f64).prop_map(|to| Action::Judged {
            decision: Decision::Shift { to },
            progress: Progress::default(),
            metrics: serde_json::Value::Null,
        }),
        Just(Action::Judged {
            decision: Decision::Hold {
                why: "breach".into(),
                alert: true
            },
            progress: Progress::default(),
            metrics: serde_json::Value::Null,
        }),
    ]
}

proptest! {
    /// Whatever the sequence: the version rises by one per accepted action, refused ones change
    /// nothing, every change of state or weight has exactly one history row (a hold has none),
    /// and the proxy configuration of every deployment reached checks.
    #[test]
    fn every_change_has_one_history_row_and_a_valid_proxy_config(actions in proptest::collection::vec(any_action(), 1..40)) {
        let mut d = Deployment::new(&lb(), 1.0e9);
        let mut rows = 0usize;
        for a in &actions {
            if let Ok(o) = act(&d, a, "p", None, 1.0e9) {
                prop_assert_eq!(o.deployment.rollout.version, d.rollout.version + 1);
                let changed = o.deployment.rollout.state != d.rollout.state
                    || o.deployment.rollout.traffic_percentage != d.rollout.traffic_percentage
                    || o.deployment.rollout.mirror_percentage != d.rollout.mirror_percentage;
                let is_note = matches!(a, Action::Judged { decision: Decision::Hold { .. }, .. });
                prop_assert_eq!(o.history.len(), usize::from(!is_note));
                if changed { prop_assert_eq!(o.history.len(), 1); }
                rows += o.history.len();
                let c = proxy_config(&lb(), &o.deployment);
                prop_assert!(c.check().is_ok(), "{:?}", c.check());
                d = o.deployment;
            }
        }
        prop_assert!(rows as u64 <= d.rollout.version);
    }
}

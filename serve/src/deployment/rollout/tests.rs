use super::*;
use crate::deployment::{act, Deployment};

const TOML: &str = r#"
loadbalancer = "web"
version = "v2"
pool = ["http://127.0.0.1:10"]

[analysis]
errorRateThreshold = 0.05
latencyThreshold = 500

[[steps]]
shadow = { percentage = 10, duration = "10m" }

[[steps]]
setWeight = 10

[[steps]]
pause = { duration = "5m" }

[[steps]]
shift = { algorithm = "linear", target = 50, step = 20 }

[[steps]]
pause = {}

[[steps]]
analysis = { windows = 3 }

[[steps]]
promote = {}
"#;

const YAML: &str = r#"
loadbalancer: web
version: v2
pool: ["http://127.0.0.1:10"]
analysis: {errorRateThreshold: 0.05, latencyThreshold: 500}
steps:
  - shadow: {percentage: 10, duration: 10m}
  - setWeight: 10
  - pause: {duration: 5m}
  - shift: {algorithm: linear, target: 50, step: 20}
  - pause: {}
  - analysis: {windows: 3}
  - promote: {}
"#;

fn idle() -> Deployment {
    let lb: crate::config::LoadBalancerConfig = toml::from_str(
        "id = \"web\"\nlisten = \"127.0.0.1:0\"\nproduction = [\"http://127.0.0.1:9\"]",
    )
    .unwrap();
    Deployment::new(&lb, 0.0)
}

#[test]
fn toml_and_yaml_say_the_same_and_check() {
    let a = parse(TOML, false).unwrap();
    let b = parse(YAML, true).unwrap();
    assert_eq!(a, b);
    a.check().unwrap();
    assert_eq!(a.steps.len(), 7);
    assert_eq!(a.steps[4].name(), "pause (until promote)");
}

#[test]
fn errors_name_the_line_or_the_step() {
    let typo = TOML.replace("setWeight = 10", "setWieght = 10");
    let e = parse(&typo, false).unwrap_err();
    assert!(e.contains("line 14") && e.contains("setWieght"), "{e}");
    let e = parse(&YAML.replace("windows: 3", "windows: three"), true).unwrap_err();
    assert!(
        e.contains("line 12") && e.contains("steps[5].analysis.windows"),
        "{e}"
    );
    let bad = TOML.replace("setWeight = 10", "setWeight = 60");
    let e = parse(&bad, false).unwrap().check().unwrap_err();
    assert!(e.contains("steps[3]") && e.contains("below the 60%"), "{e}");
    let bad = TOML.replace("errorRateThreshold = 0.05", "errorRateThreshhold = 0.05");
    let e = parse(&bad, false).unwrap().check().unwrap_err();
    assert!(
        e.contains("steps[1]") && e.contains("errorRateThreshhold"),
        "{e}"
    );
    let bad = TOML.replace("[[steps]]\npromote = {}\n", "").replace(
        "[[steps]]\nshadow = { percentage = 10, duration = \"10m\" }",
        "[[steps]]\npromote = {}\n[[steps]]\nshadow = { percentage = 10 }",
    );
    let e = parse(&bad, false).unwrap().check().unwrap_err();
    assert!(e.contains("steps[0]"), "{e}");
}

/// Walks the plan with the deployment as `act` changes it, judging nothing: every step waits
/// for what it needs (time, judged windows, a promote) and acts once.
#[test]
fn the_steps_act_in_order_and_wait_for_evidence() {
    let spec = parse(TOML, false).unwrap();
    let mut d = idle();
    let mut p = Plan::new(spec, 0.0, 0);
    // Shadow starts.
    let Next::Act(a, _) = next(&d, &p, 1.0, 3) else {
        panic!()
    };
    d = act(&d, &a, "monitor", None, 1.0).unwrap().deployment;
    assert_eq!(d.rollout.state, State::Shadow);
    // Time is up but nothing judged: never advanced on no data.
    assert!(matches!(next(&d, &p, 700.0, 3), Next::Wait(w) if w.contains("no data")));
    d.progress.looks = 2;
    assert!(matches!(next(&d, &p, 100.0, 3), Next::Wait(_)));
    // A deviation holds, then rolls back at the limit.
    d.progress.breaches = 1;
    assert!(matches!(next(&d, &p, 700.0, 3), Next::Wait(w) if w.contains("deviates")));
    d.progress.breaches = 3;
    assert!(matches!(
        next(&d, &p, 700.0, 3),
        Next::Act(Action::Rollback, _)
    ));
    d.progress.breaches = 0;
    assert!(matches!(next(&d, &p, 700.0, 3), Next::Advance(_)));
    p.step = 1;
    p.step_started = 700.0;
    // setWeight 10 starts testing at 10%, held there.
    let Next::Act(a, _) = next(&d, &p, 701.0, 3) else {
        panic!()
    };
    let Action::Testing(t) = &a else {
        panic!("{a:?}")
    };
    assert_eq!(t.promotion.as_deref(), Some("hold"));
    d = act(&d, &a, "monitor", None, 701.0).unwrap().deployment;
    assert_eq!(
        (d.rollout.state, d.rollout.traffic_percentage),
        (State::Testing, 10.0)
    );
    assert!(matches!(next(&d, &p, 702.0, 3), Next::Advance(_)));
    // The timed pause.
    p.step = 2;
    p.step_started = 702.0;
    assert!(matches!(next(&d, &p, 800.0, 3), Next::Wait(_)));
    assert!(matches!(next(&d, &p, 1003.0, 3), Next::Advance(_)));
    // The shift to 50 updates the policy; the monitor shifts; at 50 it is done.
    p.step = 3;
    let Next::Act(a @ Action::Update(_), _) = next(&d, &p, 1004.0, 3) else {
        panic!()
    };
    d = act(&d, &a, "monitor", None, 1004.0).unwrap().deployment;
    assert_eq!(d.testing.as_ref().unwrap().target_traffic_percentage, 50.0);
    assert!(matches!(next(&d, &p, 1005.0, 3), Next::Wait(w) if w.contains("shifting")));
    d.rollout.traffic_percentage = 50.0;
    assert!(matches!(next(&d, &p, 1006.0, 3), Next::Advance(_)));
    // Pause until promote.
    p.step = 4;
    assert_eq!(p.phase(&d), "paused");
    assert!(matches!(next(&d, &p, 5000.0, 3), Next::Wait(w) if w.contains("promote")));
    p.promoted_step = Some(4);
    assert!(matches!(next(&d, &p, 5000.0, 3), Next::Advance(_)));
    // Three more judged windows.
    p.step = 5;
    p.looks_at_step = d.progress.looks;
    d.progress.looks += 2;
    assert!(matches!(next(&d, &p, 5001.0, 3), Next::Wait(_)));
    d.progress.looks += 1;
    assert!(matches!(next(&d, &p, 5002.0, 3), Next::Advance(_)));
    // Promote.
    p.step = 6;
    let Next::Act(Action::Live, _) = next(&d, &p, 5003.0, 3) else {
        panic!()
    };
    d = act(&d, &Action::Live, "monitor", None, 5003.0)
        .unwrap()
        .deployment;
    assert!(matches!(next(&d, &p, 5004.0, 3), Next::Advance(_)));
    p.step = 7;
    assert!(matches!(next(&d, &p, 5005.0, 3), Next::End("completed", _)));
}

#[test]
fn a_rollback_ends_the_plan_as_aborted() {
    let spec = parse(TOML, false).unwrap();
    let d = idle();
    let p = Plan::new(spec, 0.0, 0);
    let Next::Act(a, _) = next(&d, &p, 1.0, 3) else {
        panic!()
    };
    let d = act(&d, &a, "monitor", None, 1.0).unwrap().deployment;
    let d = act(&d, &Action::Rollback, "ops", None, 2.0)
        .unwrap()
        .deployment;
    assert!(matches!(next(&d, &p, 3.0, 3), Next::End("aborted", _)));
}

//! End to end on loopback: `serve` (API over HTTP, the monitor, the proxy, SQLite, alerts to a
//! webhook receiver) with a stable and a canary backend and a traffic generator. Shadow →
//! testing → the canary fails → rolled back within two intervals, all traffic back on stable
//! (counted at the backends); and a healthy canary promoted to live while the old pool goes
//! removing → removed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shadowtap_serve::Server;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadow_then_testing_then_a_failing_canary_is_rolled_back_within_two_intervals() {
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, stable) = backend().await;
    let (canary_url, canary) = backend().await;
    let (hook, received) = receiver().await;
    let server = Server::start(config(dir.path(), &stable_url, None, Some(&hook)))
        .await
        .unwrap();
    let api = server.api;
    let proxy = server.plane.balancers["web"].addr;

    // Shadow: half the requests are copied to the canary; users are answered by stable.
    post_ok(
        api,
        "/loadbalancer/web/shadow",
        serde_json::json!({
            "shadowPool": [canary_url], "mirrorPercentage": 50, "mirrorCriteria": ["random"]
        }),
    )
    .await;
    let statuses = traffic(proxy, 200, &[]).await;
    assert!(statuses.iter().all(|&s| s == 200));
    assert_eq!(stable.real.load(Ordering::Relaxed), 200);
    assert_eq!(
        canary.real.load(Ordering::Relaxed),
        0,
        "no user is answered by the shadow"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while canary.mirrored.load(Ordering::Relaxed) < 60 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mirrored = canary.mirrored.load(Ordering::Relaxed);
    assert!(
        (60..=140).contains(&mirrored),
        "50% of 200 mirrored: {mirrored}"
    );

    // Testing: real traffic to the canary, shifted every 1 s interval.
    post_ok(
        api,
        "/loadbalancer/web/testing",
        serde_json::json!({
            "targetTrafficPercentage": 100, "errorRateThreshold": 0.05, "latencyThreshold": 500,
            "algorithm": "linear", "stepPercentage": 10, "initialPercentage": 20, "interval": "1s"
        }),
    )
    .await;
    let (stop, load) = steady(proxy);
    // The first shift comes with the first judgement after a whole second of testing.
    let t0 = Instant::now();
    let v = loop {
        let (_, v) = call(api, "GET", "/loadbalancer/web", None).await;
        if v["trafficPercentage"].as_f64().unwrap() > 20.0 {
            break v;
        }
        assert!(t0.elapsed() < Duration::from_secs(6), "not shifted: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(v["state"], "testing", "{v}");
    assert!(canary.real.load(Ordering::Relaxed) > 0);

    // The canary starts failing: rolled back within two intervals.
    canary.failing.store(true, Ordering::Relaxed);
    let (v, took) = wait_for(api, &["removing", "removed"], Duration::from_secs(6)).await;
    assert!(
        took <= Duration::from_millis(2600),
        "rolled back after {took:?}"
    );
    assert_eq!(v["trafficPercentage"], 0.0);
    assert_eq!(v["mirrorPercentage"], 0.0);
    // Let requests in flight end, then everything is on stable.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = canary.real.load(Ordering::Relaxed) + canary.mirrored.load(Ordering::Relaxed);
    let statuses = traffic(proxy, 100, &[]).await;
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
    let after = canary.real.load(Ordering::Relaxed) + canary.mirrored.load(Ordering::Relaxed);
    assert_eq!(
        before, after,
        "nothing reaches the canary after the rollback"
    );
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    wait_for(api, &["removed"], Duration::from_secs(5)).await;

    let (_, h) = call(api, "GET", "/loadbalancer/web/history", None).await;
    let h = h.as_array().unwrap().clone();
    let rollback = h
        .iter()
        .find(|r| r["event"] == "rollback")
        .expect("a rollback row");
    assert_eq!(rollback["actor"], "monitor");
    assert_eq!(rollback["from"], "testing");
    assert!(
        rollback["reason"].as_str().unwrap().contains("error rate"),
        "{rollback}"
    );
    let rate = rollback["metrics"]["pools"]["candidate"]["errorRate"]
        .as_f64()
        .unwrap();
    assert!(rate > 0.05, "{rollback}");
    assert!(h
        .iter()
        .any(|r| r["event"] == "shift" && r["actor"] == "monitor"));
    assert_eq!(h.last().unwrap()["to"], "removed");

    // Every transition reached the webhook, once, signed (the receiver checks signatures):
    // one alert per state transition, a shift only when it crosses 25, 50 or 75%.
    let summary = shadowtap_serve::deployment::alerted;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let all = {
            let got = received.lock().unwrap();
            h.iter().filter(|r| summary(r)).all(|r| {
                got.iter()
                    .any(|(id, _, _)| r["transitionId"] == id.as_str())
            })
        };
        if all || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = received.lock().unwrap().clone();
    let (slack, got): (Vec<_>, Vec<_>) = all.into_iter().partition(|(_, sig, _)| sig == "slack");
    let mut ids: Vec<&str> = got.iter().map(|(id, _, _)| id.as_str()).collect();
    ids.sort_unstable();
    let n = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), n, "no alert twice");
    for row in &h {
        let id = row["transitionId"].as_str().unwrap();
        if summary(row) {
            assert!(ids.contains(&id), "alert for {id} missing; got {ids:?}");
        } else {
            assert!(
                !ids.contains(&id),
                "a shift within a quarter alerted: {row}"
            );
        }
    }
    assert!(got.iter().any(|(_, _, v)| v["kind"] == "rollback"));
    // The Slack-compatible webhook got the same alerts as one line of text each.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut slack = slack;
    while !slack
        .iter()
        .any(|(_, _, v)| v["text"].as_str().is_some_and(|t| t.contains("rollback")))
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        slack = received
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, s, _)| s == "slack")
            .cloned()
            .collect();
    }
    let text = slack
        .iter()
        .filter_map(|(_, _, v)| v["text"].as_str())
        .find(|t| t.contains("rollback"))
        .unwrap_or_else(|| panic!("no rollback on Slack: {slack:?}"));
    assert!(text.contains("testing → removing"), "{text}");
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_reaches_live_and_the_old_pool_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, stable) = backend().await;
    let (canary_url, canary) = backend().await;
    let server = Server::start(config(dir.path(), &stable_url, None, None))
        .await
        .unwrap();
    let api = server.api;
    let proxy = server.plane.balancers["web"].addr;
    let (stop, load) = steady(proxy);
    post_ok(api, "/loadbalancer/web/testing", serde_json::json!({
        "candidatePool": [canary_url], "targetTrafficPercentage": 100,
        "errorRateThreshold": 0.05, "latencyThreshold": 500,
        "algorithm": "exponential", "stepPercentage": 20, "initialPercentage": 20, "interval": "1s"
    })).await;
    let (v, _) = wait_for(api, &["removed"], Duration::from_secs(20)).await;
    assert_eq!(v["stablePool"], serde_json::json!([canary_url]));
    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(statuses.iter().all(|&s| s == 200), "no user saw an error");
    let (_, h) = call(api, "GET", "/loadbalancer/web/history", None).await;
    let path: Vec<String> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["event"].as_str().unwrap(),
                r["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(path.first().unwrap(), "testing:testing");
    let tail: Vec<&str> = path
        .iter()
        .rev()
        .take(3)
        .rev()
        .map(String::as_str)
        .collect();
    assert_eq!(
        tail,
        ["live:live", "remove:removing", "removed:removed"],
        "{path:?}"
    );
    // The weights rose 20 → 40 → 80 → 100 (doubling steps, capped at the target).
    let weights: Vec<f64> = h
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["event"] == "shift")
        .map(|r| r["trafficPercentage"].as_f64().unwrap())
        .collect();
    assert_eq!(weights, [40.0, 80.0, 100.0], "{path:?}");
    // Everything now goes to the new version.
    let s_before = stable.real.load(Ordering::Relaxed);
    let c_before = canary.real.load(Ordering::Relaxed);
    traffic(proxy, 50, &[]).await;
    assert_eq!(stable.real.load(Ordering::Relaxed), s_before);
    assert_eq!(canary.real.load(Ordering::Relaxed), c_before + 50);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_regression_under_the_thresholds_is_caught_by_the_gate() {
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, _stable) = backend().await;
    let (canary_url, canary) = backend().await;
    // One request in four fails: 25%, under the 30% threshold, far over the stable 0%.
    canary.fail_one_in.store(4, Ordering::Relaxed);
    let server = Server::start(config(dir.path(), &stable_url, None, None))
        .await
        .unwrap();
    let api = server.api;
    let proxy = server.plane.balancers["web"].addr;
    let (stop, load) = steady(proxy);
    post_ok(
        api,
        "/loadbalancer/web/testing",
        serde_json::json!({
            "candidatePool": [canary_url], "targetTrafficPercentage": 100,
            "errorRateThreshold": 0.3, "criticalErrorRate": 0.9, "latencyThreshold": 2000,
            "algorithm": "linear", "stepPercentage": 5, "initialPercentage": 50, "interval": "1s"
        }),
    )
    .await;
    let (v, _) = wait_for(api, &["removing", "removed"], Duration::from_secs(12)).await;
    assert_eq!(v["trafficPercentage"], 0.0);
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let (_, h) = call(api, "GET", "/loadbalancer/web/history", None).await;
    let rollback = h
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == "rollback")
        .expect("rolled back")
        .clone();
    assert_eq!(rollback["actor"], "monitor");
    let why = rollback["reason"].as_str().unwrap();
    assert!(
        why.contains("significantly worse") && why.contains("Fisher"),
        "{why}"
    );
    assert_eq!(rollback["metrics"]["gate"]["gate"], "fail", "{rollback}");
    // The weight never rose: every window failed the gate.
    assert!(
        !h.as_array().unwrap().iter().any(|r| r["event"] == "shift"),
        "{h}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_slower_on_the_same_requests_raises_one_deviation_alert() {
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, _) = backend().await;
    let (shadow_url, shadow) = backend().await;
    shadow.delay_ms.store(30, Ordering::Relaxed);
    let (hook, received) = receiver().await;
    let server = Server::start(config(dir.path(), &stable_url, None, Some(&hook)))
        .await
        .unwrap();
    let api = server.api;
    let proxy = server.plane.balancers["web"].addr;
    post_ok(
        api,
        "/loadbalancer/web/shadow",
        serde_json::json!({
            "shadowPool": [shadow_url], "mirrorPercentage": 100
        }),
    )
    .await;
    let (stop, load) = steady(proxy);
    let t0 = Instant::now();
    let v = loop {
        let (_, v) = call(api, "GET", "/loadbalancer/web", None).await;
        if v["lastJudgement"]["decision"] == "deviation" {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no deviation found: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        v["state"], "shadow",
        "a deviation alerts, it does not stop the shadow"
    );
    assert!(
        v["lastJudgement"]["why"]
            .as_str()
            .unwrap()
            .contains("mirrored pairs"),
        "{v}"
    );
    // Two more windows: still deviating, no second alert.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let deviations = received
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, sig, a)| sig != "slack" && a["kind"] == "deviation")
        .count();
    assert_eq!(deviations, 1);
    server.shutdown().await;
}

/// A Prometheus endpoint whose resident memory the test sets; CPU seconds grow 0.5 a second.
async fn metrics_endpoint(memory: Arc<std::sync::atomic::AtomicU64>) -> String {
    let started = Instant::now();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let memory = memory.clone();
            async move {
                format!(
                    "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {}\nprocess_resident_memory_bytes {}\n",
                    started.elapsed().as_secs_f64() * 0.5,
                    memory.load(Ordering::Relaxed)
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/metrics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_over_its_memory_limit_is_held_then_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, _) = backend().await;
    let (canary_url, _) = backend().await;
    let memory = Arc::new(std::sync::atomic::AtomicU64::new(100 << 20));
    let metrics = metrics_endpoint(memory.clone()).await;
    let server = Server::start(config(dir.path(), &stable_url, None, None))
        .await
        .unwrap();
    let api = server.api;
    let proxy = server.plane.balancers["web"].addr;
    let (stop, load) = steady(proxy);
    post_ok(
        api,
        "/loadbalancer/web/testing",
        serde_json::json!({
            "candidatePool": [canary_url], "targetTrafficPercentage": 100,
            "errorRateThreshold": 0.05, "latencyThreshold": 500, "memoryThreshold": 1.0e9,
            "metricsUrls": {canary_url.clone(): metrics},
            "algorithm": "linear", "stepPercentage": 5, "initialPercentage": 50, "interval": "1s"
        }),
    )
    .await;
    // Within its limit: it shifts, and the figures are shown (CPU is a rate: two scrapes, one
    // judgement apart, after the first whole second of testing).
    let t0 = Instant::now();
    let m = loop {
        let (_, m) = call(api, "GET", "/loadbalancer/web/metrics", None).await;
        if m["resources"]["candidate"]["cpuCores"].is_number() {
            break m;
        }
        assert!(t0.elapsed() < Duration::from_secs(8), "no CPU figure: {m}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let used = m["resources"]["candidate"]["memoryBytes"].as_f64();
    assert_eq!(used, Some((100u64 << 20) as f64), "{m}");
    let cores = m["resources"]["candidate"]["cpuCores"].as_f64().unwrap();
    assert!((0.3..0.7).contains(&cores), "{m}");
    let (_, v) = call(api, "GET", "/loadbalancer/web", None).await;
    assert!(v["trafficPercentage"].as_f64().unwrap() > 50.0, "{v}");
    // Over it: held, then rolled back (failureLimit 2), the reason naming the memory.
    memory.store(2 << 30, Ordering::Relaxed);
    wait_for(api, &["removing", "removed"], Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let (_, h) = call(api, "GET", "/loadbalancer/web/history", None).await;
    let rollback = h
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == "rollback")
        .unwrap()
        .clone();
    assert!(
        rollback["reason"]
            .as_str()
            .unwrap()
            .contains("memoryThreshold"),
        "{rollback}"
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_version_that_breaches_is_degraded_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, stable) = backend().await;
    let (canary_url, canary) = backend().await;
    let mut c = config(dir.path(), &stable_url, None, None);
    // A long drain keeps the old pool while live.
    c.monitor.drain = "30s".into();
    let server = Server::start(c).await.unwrap();
    let api = server.api;
    let proxy = server.plane.balancers["web"].addr;
    let (stop, load) = steady(proxy);
    post_ok(
        api,
        "/loadbalancer/web/testing",
        serde_json::json!({
            "candidatePool": [canary_url], "targetTrafficPercentage": 100,
            "errorRateThreshold": 0.05, "criticalErrorRate": 0.9, "latencyThreshold": 500,
            "algorithm": "linear", "stepPercentage": 50, "initialPercentage": 30, "interval": "1s",
            "maxStepPercentage": 30
        }),
    )
    .await;
    wait_for(api, &["live"], Duration::from_secs(10)).await;
    // One request in five fails: over the 5% threshold, under the critical 90%.
    canary.fail_one_in.store(5, Ordering::Relaxed);
    let (v, _) = wait_for(api, &["degraded"], Duration::from_secs(6)).await;
    // Healthy again as soon as it is degraded: the windows judged from now on begin after
    // the degradation, so at most one of them (the one this switch falls in) still shows
    // failures, under the failure limit of 2.
    canary.fail_one_in.store(0, Ordering::Relaxed);
    assert_eq!(v["trafficPercentage"], 50.0, "{v}");
    let before = stable.real.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        stable.real.load(Ordering::Relaxed) > before,
        "the old pool takes traffic back"
    );
    let (v, _) = wait_for(api, &["live"], Duration::from_secs(8)).await;
    assert_eq!(v["trafficPercentage"], 100.0);
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let (_, h) = call(api, "GET", "/loadbalancer/web/history", None).await;
    let events: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    let degrade = events
        .iter()
        .position(|e| *e == "degrade")
        .expect("degrade recorded");
    // Promoted (30 → 60 → 90 → 100) and recovered (50 → 80 → 100) under maxStepPercentage 30,
    // never more at once.
    let rows = h.as_array().unwrap();
    for r in rows {
        let (from, to) = (
            r["trafficFrom"].as_f64().unwrap(),
            r["trafficPercentage"].as_f64().unwrap(),
        );
        assert!(to - from <= 30.0 + 1e-9, "{r}");
    }
    let recovered: Vec<(&str, f64)> = rows[degrade..]
        .iter()
        .filter(|r| r["event"] == "recover")
        .map(|r| {
            (
                r["to"].as_str().unwrap(),
                r["trafficPercentage"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        recovered,
        [("degraded", 80.0), ("live", 100.0)],
        "{events:?}"
    );
    let row = &h.as_array().unwrap()[degrade];
    assert_eq!(row["actor"], "monitor");
    assert!(
        row["metrics"]["pools"]["candidate"]["errorRate"]
            .as_f64()
            .unwrap()
            > 0.05
    );
    // A rollback while live (the old pool still drains) puts everything back on it.
    let v = post_ok(
        api,
        "/loadbalancer/web/rollback",
        serde_json::json!({"reason": "test"}),
    )
    .await;
    assert_eq!(v["state"], "removing");
    assert_eq!(v["trafficPercentage"], 0.0);
    server.shutdown().await;
}

/// Five requests a second, half of them to a canary that fails every one: too few in any
/// window to judge a rate, but failures add up over the windows to an exact-test critical
/// breach, and the canary is rolled back (it was held for ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_every_request_at_low_traffic_is_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, _) = backend().await;
    let (canary_url, canary) = backend().await;
    let server = Server::start(config(dir.path(), &stable_url, None, None))
        .await
        .unwrap();
    let api = server.api;
    let proxy = server.plane.balancers["web"].addr;
    canary.failing.store(true, Ordering::Relaxed);
    post_ok(
        api,
        "/loadbalancer/web/testing",
        serde_json::json!({
            "candidatePool": [canary_url], "targetTrafficPercentage": 100,
            "errorRateThreshold": 0.05, "latencyThreshold": 500,
            "algorithm": "linear", "stepPercentage": 10, "initialPercentage": 50, "interval": "1s"
        }),
    )
    .await;
    let client = reqwest::Client::new();
    let t0 = Instant::now();
    let mut sent = 0;
    let v = loop {
        let _ = client
            .get(format!("http://{proxy}/slow/{sent}"))
            .send()
            .await;
        sent += 1;
        let (_, v) = call(api, "GET", "/loadbalancer/web", None).await;
        if matches!(v["state"].as_str(), Some("removing" | "removed")) {
            break v;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "still {} after {sent} requests: {v}",
            v["state"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(v["trafficPercentage"], 0.0);
    let failed = canary.real.load(Ordering::Relaxed);
    assert!(failed <= 12, "{failed} users hit the failing canary");
    let (_, h) = call(api, "GET", "/loadbalancer/web/history", None).await;
    let reason = h
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == "rollback")
        .map(|r| r["reason"].as_str().unwrap().to_owned())
        .unwrap();
    // Rolled back on the failures of windows each too small to judge by rate (a critical
    // breach, or breaches up to the failure limit, whichever the counts reach first).
    assert!(reason.contains("requests failed"), "{reason}");
    server.shutdown().await;
}

/// A metrics endpoint that accepts and never answers on one load balancer does not delay
/// another's rollback: each load balancer is judged on a task of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_metrics_endpoint_on_one_balancer_never_delays_anothers_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, _) = backend().await;
    let (canary_url, canary) = backend().await;
    let (slow_stable, _) = backend().await;
    let (slow_canary, _) = backend().await;
    // Accepts connections and never answers.
    let hole = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hole_addr = hole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = hole.accept().await {
            held.push(s);
        }
    });
    let mut c = config(dir.path(), &stable_url, None, None);
    let mut other = c.loadbalancers[0].clone();
    other.id = "slow".into();
    other.production = vec![slow_stable];
    c.loadbalancers.push(other);
    let server = Server::start(c).await.unwrap();
    let api = server.api;
    let spec = |pool: &str, metrics: Option<String>| {
        let mut v = serde_json::json!({
            "candidatePool": [pool], "targetTrafficPercentage": 100,
            "errorRateThreshold": 0.05, "latencyThreshold": 500,
            "algorithm": "linear", "stepPercentage": 1, "initialPercentage": 50, "interval": "1s"
        });
        if let Some(m) = metrics {
            v["metricsUrls"] = serde_json::json!({ pool: m });
            v["memoryThreshold"] = serde_json::json!(1.0e12);
        }
        v
    };
    post_ok(
        api,
        "/loadbalancer/slow/testing",
        spec(&slow_canary, Some(format!("http://{hole_addr}/metrics"))),
    )
    .await;
    post_ok(api, "/loadbalancer/web/testing", spec(&canary_url, None)).await;
    let (stop, load) = steady(server.plane.balancers["web"].addr);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    canary.failing.store(true, Ordering::Relaxed);
    let (v, took) = wait_for(api, &["removing", "removed"], Duration::from_secs(8)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(v["trafficPercentage"], 0.0);
    assert!(
        took <= Duration::from_millis(3000),
        "rolled back after {took:?} (interval 1 s; the other balancer's scrape takes 2 s)"
    );
    server.shutdown().await;
}

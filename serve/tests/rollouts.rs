//! Declarative rollouts end to end: a spec `PUT` on the API (what `ctl apply` sends), walked by
//! the monitor over real backends and the real proxy: shadow for a while, a weight, a pause
//! until promote, the promotion; the same spec twice is a no-op, another version mid-rollout a
//! 409; thresholds changed mid-rollout.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shadowtap_serve::Server;

use crate::common::*;

fn spec(version: &str, canary: &str) -> serde_json::Value {
    serde_json::json!({
        "loadbalancer": "web",
        "name": "web-v2",
        "version": version,
        "pool": [canary],
        "analysis": {"errorRateThreshold": 0.05, "latencyThreshold": 500, "interval": "1s"},
        "steps": [
            {"shadow": {"percentage": 100, "duration": "2s"}},
            {"setWeight": 50},
            {"pause": {}},
            {"promote": {}}
        ]
    })
}

async fn put(api: std::net::SocketAddr, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .put(format!("http://{api}/loadbalancer/web/rollout"))
        .bearer_auth(TOKEN)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn until(
    api: std::net::SocketAddr,
    what: &str,
    within: Duration,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let (_, v) = call(api, "GET", "/loadbalancer/web/analysis", None).await;
        if ok(&v) {
            return v;
        }
        assert!(t0.elapsed() < within, "never {what}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_file_walks_shadow_weight_pause_and_promote() {
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, _) = backend().await;
    let (canary_url, canary) = backend().await;
    let server = Server::start(config(dir.path(), &stable_url, None, None))
        .await
        .unwrap();
    let api = server.api;
    let proxy = server.plane.balancers["web"].addr;
    let (stop, load) = steady(proxy);
    let s = spec("v2", &canary_url);
    let (code, v) = put(api, &s).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["unchanged"], false);
    // The same file again: nothing changes.
    let (code, v) = put(api, &s).await;
    assert_eq!((code, &v["unchanged"]), (200, &true.into()), "{v}");
    // Another version while this one runs: refused.
    let (code, v) = put(api, &spec("v3", &canary_url)).await;
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("--replace"), "{v}");
    // A spec for another load balancer, or with a bad step: 400 naming it.
    let mut bad = s.clone();
    bad["steps"][1] = serde_json::json!({"setWeight": 150});
    let (code, v) = put(api, &bad).await;
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("steps[1]"), "{v}");

    let v = until(api, "in shadow", Duration::from_secs(10), |v| {
        v["state"] == "shadow"
    })
    .await;
    assert_eq!(v["rollout"]["current"], "shadow 100%", "{v}");
    // Two seconds of agreeing mirrored pairs, then 50% of real traffic, then the pause.
    let v = until(api, "paused at 50%", Duration::from_secs(20), |v| {
        v["rollout"]["phase"] == "paused"
    })
    .await;
    assert_eq!(
        (&v["state"], &v["trafficPercentage"]),
        (&"testing".into(), &50.0.into()),
        "{v}"
    );
    assert_eq!(v["rollout"]["current"], "pause (until promote)");
    // Held there, judged, until promoted.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    let (_, v) = call(api, "GET", "/loadbalancer/web/analysis", None).await;
    assert_eq!(
        (&v["state"], &v["rollout"]["step"]),
        (&"testing".into(), &2.into()),
        "{v}"
    );
    assert!(
        canary.real.load(Ordering::Relaxed) > 0,
        "the canary took real traffic"
    );
    // Thresholds can change mid-rollout; the weight stays.
    let v = post_ok(
        api,
        "/loadbalancer/web/thresholds",
        serde_json::json!({"errorRateThreshold": 0.02, "reason": "tighter"}),
    )
    .await;
    assert_eq!(v["thresholds"]["errorRate"], 0.02, "{v}");
    assert_eq!(v["trafficPercentage"], 50.0);
    post_ok(api, "/loadbalancer/web/promote", serde_json::json!({})).await;
    let v = until(api, "completed", Duration::from_secs(20), |v| {
        v["rollout"]["phase"] == "completed"
    })
    .await;
    assert_eq!(v["completion"], "promoted", "{v}");
    stop.store(true, Ordering::Relaxed);
    assert!(
        load.await.unwrap().iter().all(|s| *s == 200),
        "no user saw an error"
    );
    let (_, h) = call(api, "GET", "/loadbalancer/web/history", None).await;
    let events: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["event"].as_str().unwrap())
        .collect();
    for want in [
        "apply",
        "shadow",
        "step",
        "testing",
        "update",
        "promote-step",
        "live",
        "end",
    ] {
        assert!(events.contains(&want), "{want} missing from {events:?}");
    }
    server.shutdown().await;
}

/// The issue's scenario: the candidate's one endpoint returns a changed JSON field. The shadow
/// phase compares the mirrored answers field by field: the deviation holds the rollout, names
/// the endpoint and the field with an example (timestamps, which differ on every answer, are
/// not a deviation), shows in `…/diffs` and `/metrics`, and after `failureLimit` deviating
/// windows rolls the candidate back before it ever took real traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_whose_answers_differ_in_one_field_is_held_then_rolled_back() {
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, stable) = backend().await;
    let (canary_url, canary) = backend().await;
    *stable.json.lock().unwrap() = Some(r#"{"id":7,"tier":"gold","at":"{now}"}"#.into());
    *canary.json.lock().unwrap() = Some(r#"{"id":7,"tier":"silver","at":"{now}"}"#.into());
    let server = Server::start(config(dir.path(), &stable_url, None, None))
        .await
        .unwrap();
    let api = server.api;
    let proxy = server.plane.balancers["web"].addr;
    let (stop, load) = steady(proxy);
    let spec = serde_json::json!({
        "loadbalancer": "web",
        "version": "v2",
        "pool": [canary_url],
        "analysis": {"errorRateThreshold": 0.05, "latencyThreshold": 500, "failureLimit": 2},
        "steps": [
            {"shadow": {"percentage": 100, "duration": "1h"}},
            {"setWeight": 50},
            {"promote": {}}
        ]
    });
    let (code, v) = put(api, &spec).await;
    assert_eq!(code, 200, "{v}");
    let v = until(api, "a deviation", Duration::from_secs(20), |v| {
        v["verdict"] == "no-go"
    })
    .await;
    assert!(v["reason"].as_str().unwrap().contains("/tier"), "{v}");
    let (_, diffs) = call(api, "GET", "/loadbalancer/web/diffs", None).await;
    let fields: Vec<&str> = diffs["bodies"]["deviations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        ["/tier"],
        "the timestamp is not a deviation: {diffs}"
    );
    let d = &diffs["bodies"]["deviations"][0];
    assert_eq!(
        (&d["endpoint"], &d["production"], &d["shadow"]),
        (&"GET /item/{id}".into(), &"gold".into(), &"silver".into()),
        "{diffs}"
    );
    let metrics = reqwest::Client::new()
        .get(format!("http://{api}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("shadowtap_shadow_deviating_fields{lb=\"web\"} 1"),
        "{metrics}"
    );
    let v = until(api, "rolled back", Duration::from_secs(20), |v| {
        v["rollout"]["phase"] == "aborted"
    })
    .await;
    assert_eq!(v["completion"], "rolledBack", "{v}");
    stop.store(true, Ordering::Relaxed);
    assert!(load.await.unwrap().iter().all(|s| *s == 200));
    assert_eq!(
        canary.real.load(Ordering::Relaxed),
        0,
        "no user ever reached the candidate"
    );
    let (_, h) = call(api, "GET", "/loadbalancer/web/history", None).await;
    let rollback = h
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == "rollback")
        .cloned()
        .unwrap();
    assert!(
        rollback["reason"].as_str().unwrap().contains("deviated"),
        "{rollback}"
    );
    server.shutdown().await;
}

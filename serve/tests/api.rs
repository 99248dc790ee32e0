//! The API through `tower::ServiceExt::oneshot` on the real router over a real plane (SQLite
//! store, a running proxy): auth, validation errors, 409s naming the state and the moves, and
//! 50 concurrent POSTs on one load balancer ending consistent.

use std::sync::Arc;

use axum::body::Body;
use http_body_util::BodyExt;
use shadowtap_serve::api::{router, Api};
use shadowtap_serve::plane::Plane;
use tower::ServiceExt;

use crate::common::*;

async fn send(
    app: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, serde_json::Value) {
    let mut req = http::Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = req
        .header("content-type", "application/json")
        .body(Body::from(body.to_owned()))
        .unwrap();
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::Value::String(String::from_utf8_lossy(&bytes).into_owned())
        }),
    )
}

async fn app() -> (axum::Router, Arc<Plane>, tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let (prod, _) = backend().await;
    let (canary, _) = backend().await;
    let c = config(dir.path(), &prod, None, None);
    let plane = Plane::start(c).await.unwrap();
    let app = router(Api {
        plane: plane.clone(),
        tokens: Arc::new(vec![("ops".into(), TOKEN.into())]),
    });
    (app, plane, dir, canary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_validation_and_refusals() {
    let (app, plane, _dir, canary) = app().await;
    assert_eq!(send(&app, "GET", "/healthz", None, "").await.0, 200);
    for path in [
        "/loadbalancer",
        "/loadbalancer/web",
        "/metrics",
        "/openapi.json",
    ] {
        assert_eq!(send(&app, "GET", path, None, "").await.0, 401, "{path}");
        assert_eq!(
            send(&app, "GET", path, Some("wrong-token-wrong-token"), "")
                .await
                .0,
            401
        );
        assert_eq!(
            send(&app, "GET", path, Some(TOKEN), "").await.0,
            200,
            "{path}"
        );
    }
    let (s, v) = send(&app, "POST", "/loadbalancer/web/live", None, "").await;
    assert_eq!((s, v["error"].is_string()), (401, true));
    let (s, v) = send(&app, "GET", "/loadbalancer/web", Some(TOKEN), "").await;
    assert_eq!(s, 200);
    assert_eq!(v["state"], "stable");
    assert_eq!(v["trafficPercentage"], 0.0);
    assert_eq!(
        send(&app, "GET", "/loadbalancer/nope", Some(TOKEN), "")
            .await
            .0,
        404
    );
    // 409: the state and the allowed moves are named.
    let (s, v) = send(&app, "POST", "/loadbalancer/web/live", Some(TOKEN), "").await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["state"], "stable");
    assert_eq!(v["allowed"], serde_json::json!(["shadow", "testing"]));
    // 400s: not JSON, unknown fields, bad values.
    for body in [
        "{not json",
        r#"{"shadowPool": ["http://x"], "mirrorPercentage": 5, "colour": 1}"#,
        r#"{"shadowPool": [], "mirrorPercentage": 5}"#,
        r#"{"shadowPool": ["http://127.0.0.1:1"], "mirrorPercentage": 500}"#,
        r#"{"shadowPool": ["http://127.0.0.1:1"], "mirrorPercentage": 5, "mirrorCriteria": ["colour:blue"]}"#,
    ] {
        let (s, v) = send(&app, "POST", "/loadbalancer/web/shadow", Some(TOKEN), body).await;
        assert_eq!(s, 400, "{body}: {v}");
        assert!(v["error"].is_string());
    }
    let prod = plane.balancers["web"].config.production[0].clone();
    let (s, v) = send(
        &app,
        "POST",
        "/loadbalancer/web/shadow",
        Some(TOKEN),
        &format!(r#"{{"shadowPool": ["{prod}"], "mirrorPercentage": 5}}"#),
    )
    .await;
    assert_eq!(s, 400, "production as the shadow is refused: {v}");
    let (s, v) = send(
        &app,
        "POST",
        "/loadbalancer/web/shadow",
        Some(TOKEN),
        &format!(r#"{{"shadowPool": ["{canary}"], "mirrorPercentage": 5, "mirrorCriteria": ["header:X-Shadow-Test=true"]}}"#),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "shadow");
    assert_eq!(v["mirrorPercentage"], 5.0);
    for body in [
        r#"{"errorRateThreshold": 2, "latencyThreshold": 250}"#,
        r#"{"errorRateThreshold": 0.02, "latencyThreshold": 250, "algorithm": "magic"}"#,
        r#"{"errorRateThreshold": 0.02, "latencyThreshold": 250, "interval": "soon"}"#,
        r#"{"errorRateThreshold": 0.02}"#,
    ] {
        let (s, v) = send(&app, "POST", "/loadbalancer/web/testing", Some(TOKEN), body).await;
        assert_eq!(s, 400, "{body}: {v}");
    }
    let (s, v) = send(
        &app,
        "POST",
        "/loadbalancer/web/testing",
        Some(TOKEN),
        r#"{"targetTrafficPercentage": 50, "errorRateThreshold": 0.02, "latencyThreshold": 250, "algorithm": "seed", "interval": "30s"}"#,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["state"], "testing");
    assert!(v["eta"]["intervals"].as_u64().unwrap() > 400, "{v}");
    let (s, v) = send(&app, "POST", "/loadbalancer/web/resume", Some(TOKEN), "").await;
    assert_eq!(s, 409);
    assert_eq!(v["state"], "testing");
    let (s, _) = send(
        &app,
        "POST",
        "/loadbalancer/web/pause",
        Some(TOKEN),
        r#"{"reason": "lunch"}"#,
    )
    .await;
    assert_eq!(s, 200);
    let (_, h) = send(&app, "GET", "/loadbalancer/web/history", Some(TOKEN), "").await;
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h[2]["event"], "pause");
    assert_eq!(h[2]["reason"], "lunch");
    assert_eq!(h[2]["actor"], "ops");
    // An operator's transition keeps the windows it was made on too.
    assert!(
        h[2]["metrics"]["pools"]["stable"]["requestCount"].is_u64(),
        "{}",
        h[2]
    );
    let (_, m) = send(&app, "GET", "/metrics", Some(TOKEN), "").await;
    let m = m.as_str().unwrap().to_owned();
    assert!(
        m.contains("shadowtap_lb_state{lb=\"web\",state=\"paused\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("shadowtap_lb_threshold{lb=\"web\",limit=\"error_rate\"} 0.02"),
        "{m}"
    );
    let (_, spec) = send(&app, "GET", "/openapi.json", Some(TOKEN), "").await;
    assert_eq!(spec["openapi"], "3.0.3");
    plane.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_posts_on_one_id_end_consistent() {
    let (app, plane, _dir, canary) = app().await;
    let mut tasks = Vec::new();
    for k in 0..50 {
        let app = app.clone();
        let canary = canary.clone();
        tasks.push(tokio::spawn(async move {
            let (path, body) = match k % 5 {
                0 | 1 => (
                    "/loadbalancer/web/shadow".to_owned(),
                    format!(
                        r#"{{"shadowPool": ["{canary}"], "mirrorPercentage": {}}}"#,
                        k % 7
                    ),
                ),
                2 => (
                    "/loadbalancer/web/testing".to_owned(),
                    r#"{"errorRateThreshold": 0.02, "latencyThreshold": 250, "interval": "1h"}"#
                        .to_owned(),
                ),
                3 => ("/loadbalancer/web/pause".to_owned(), String::new()),
                _ => ("/loadbalancer/web/rollback".to_owned(), String::new()),
            };
            send(&app, "POST", &path, Some(TOKEN), &body).await.0
        }));
    }
    let mut ok = 0u64;
    for t in tasks {
        let s = t.await.unwrap();
        assert!(s == 200 || s == 409 || s == 400, "{s}");
        ok += u64::from(s == 200);
    }
    assert!(ok >= 1);
    let (_, v) = send(&app, "GET", "/loadbalancer/web", Some(TOKEN), "").await;
    let (_, h) = send(&app, "GET", "/loadbalancer/web/history", Some(TOKEN), "").await;
    let h = h.as_array().unwrap();
    assert_eq!(h.len() as u64, ok, "one history row per accepted change");
    assert_eq!(v["version"].as_u64().unwrap(), ok);
    // The history is a chain: each row starts where the previous ended.
    for (k, pair) in h.windows(2).enumerate() {
        assert_eq!(pair[0]["to"], pair[1]["from"], "row {k}");
        assert_eq!(
            pair[0]["version"].as_u64().unwrap() + 1,
            pair[1]["version"].as_u64().unwrap()
        );
    }
    assert_eq!(h.last().unwrap()["to"], v["state"]);
    // The proxy runs what the store says.
    let routing = plane.balancers["web"].state.routing();
    let weight = routing.config.canary.as_ref().unwrap().weight;
    assert_eq!(weight, v["trafficPercentage"].as_f64().unwrap());
    plane.shutdown().await;
}

/// `/metrics` with two load balancers, one of them testing, passes `promtool check metrics`
/// (the Prometheus project's own linter): every family once, typed, its samples together.
/// It used to interleave families between load balancers and leave most untyped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_exposition_passes_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let (prod, _) = backend().await;
    let (canary, _) = backend().await;
    let mut c = config(dir.path(), &prod, None, None);
    let mut second = c.loadbalancers[0].clone();
    second.id = "api".into();
    c.loadbalancers.push(second);
    let plane = Plane::start(c).await.unwrap();
    let app = router(Api {
        plane: plane.clone(),
        tokens: Arc::new(vec![("ops".into(), TOKEN.into())]),
    });
    let body = format!(
        r#"{{"candidatePool": ["{canary}"], "errorRateThreshold": 0.02, "latencyThreshold": 250}}"#
    );
    let (status, v) = send(
        &app,
        "POST",
        "/loadbalancer/web/testing",
        Some(TOKEN),
        &body,
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, m) = send(&app, "GET", "/metrics", Some(TOKEN), "").await;
    assert_eq!(status, 200);
    let text = m.as_str().unwrap().to_owned();
    for lb in ["web", "api"] {
        assert!(
            text.contains(&format!("shadowtap_lb_traffic_percentage{{lb=\"{lb}\"}}")),
            "{text}"
        );
    }
    let mut promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; scripts/deps.sh installs it)");
    use std::io::Write as _;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    plane.shutdown().await;
}

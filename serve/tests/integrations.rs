//! shadowtap as the judge of controllers that run the rollout themselves, against what they
//! really send: Argo Rollouts' `web` metric provider (a GET with the template's headers, no
//! body) and Flagger's webhook runner (a POST of `{name, namespace, phase, checksum,
//! metadata}`, 200–202 = go on), both from their documentation; and a real Prometheus
//! Alertmanager (Debian's `prometheus-alertmanager`, started by the test) receiving the
//! rollback.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use shadowtap_serve::Server;

use crate::common::*;

/// An Alertmanager on loopback, killed on drop.
struct Alertmanager {
    url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn alertmanager() -> Alertmanager {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("am.yml"),
        "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n",
    )
    .unwrap();
    // A free port (Alertmanager cannot report the one it took).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("prometheus-alertmanager")
        .arg(format!(
            "--config.file={}",
            dir.path().join("am.yml").display()
        ))
        .arg(format!("--storage.path={}", dir.path().display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus-alertmanager (Debian's package; scripts/test.sh installs it)");
    let am = Alertmanager {
        url: format!("http://127.0.0.1:{port}"),
        child,
        _dir: dir,
    };
    let t0 = Instant::now();
    loop {
        let ready = reqwest::get(format!("{}/-/ready", am.url))
            .await
            .is_ok_and(|r| r.status().is_success());
        if ready {
            return am;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "Alertmanager never got ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What Argo Rollouts' web provider sends: a GET with the AnalysisTemplate's headers.
async fn argo(api: std::net::SocketAddr) -> serde_json::Value {
    let r = reqwest::Client::new()
        .get(format!("http://{api}/loadbalancer/web/analysis"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the provider errors on anything but a 2xx");
    r.json().await.unwrap()
}

/// What Flagger's webhook runner sends: a JSON POST, the token in `metadata` (it cannot send
/// headers); the status code.
async fn flagger(api: std::net::SocketAddr, hook: &str, token: &str) -> (u16, serde_json::Value) {
    let payload = serde_json::json!({
        "name": "podinfo",
        "namespace": "test",
        "phase": "Progressing",
        "checksum": "6c6f4b7b5d",
        "metadata": {"token": token, "loadbalancer": "web"}
    });
    let r = reqwest::Client::new()
        .post(format!("http://{api}/loadbalancer/web/flagger/{hook}"))
        .header("Content-Type", "application/json")
        .body(payload.to_string())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

async fn canary_status(api: std::net::SocketAddr) -> f64 {
    let text = reqwest::Client::new()
        .get(format!("http://{api}/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with("shadowtap_canary_status{"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no shadowtap_canary_status: {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn argo_and_flagger_follow_the_shadow_verdict_and_alertmanager_gets_the_rollback() {
    let am = alertmanager().await;
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, _) = backend().await;
    let (shadow_url, shadow) = backend().await;
    let mut c = config(dir.path(), &stable_url, None, None);
    c.alerts.alertmanager_url = Some(am.url.clone());
    let server = Server::start(c).await.unwrap();
    let api = server.api;
    let proxy = server.plane.balancers["web"].addr;
    post_ok(
        api,
        "/loadbalancer/web/shadow",
        serde_json::json!({"shadowPool": [shadow_url], "mirrorPercentage": 100}),
    )
    .await;

    // Nothing judged yet: pending; no gate opens, no rollback asked.
    let a = argo(api).await;
    assert_eq!(a["verdict"], "pending", "{a}");
    assert_eq!(flagger(api, "confirm-promotion", TOKEN).await.0, 412);
    assert_eq!(flagger(api, "rollback", TOKEN).await.0, 412);
    assert_eq!(flagger(api, "rollout", TOKEN).await.0, 200);

    // The hooks check their token and their payload.
    assert_eq!(
        flagger(api, "confirm-promotion", "not-a-token").await.0,
        401
    );
    let r = reqwest::Client::new()
        .post(format!("http://{api}/loadbalancer/web/flagger/rollback"))
        .body("{\"name\": 1}")
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let (code, v) = flagger(api, "confirm-everything", TOKEN).await;
    assert_eq!(code, 404, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("confirm-promotion"),
        "{v}"
    );
    let r = reqwest::get(format!("http://{api}/loadbalancer/web/analysis"))
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "the analysis needs the token too");

    // The shadow answers as production does: go once a window is judged.
    let (stop, load) = steady(proxy);
    let t0 = Instant::now();
    let a = loop {
        let a = argo(api).await;
        if a["verdict"] != "pending" {
            break a;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "never judged: {a}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(a["verdict"], "go", "{a}");
    assert_eq!(a["ok"], true);
    let (code, v) = flagger(api, "confirm-promotion", TOKEN).await;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["canary"], "podinfo.test");
    assert_eq!(flagger(api, "rollback", TOKEN).await.0, 412);
    assert_eq!(canary_status(api).await, 0.0, "running");

    // The shadow starts failing every copy: rolled back; both controllers are told.
    shadow.failing.store(true, Ordering::Relaxed);
    let (v, _) = wait_for(api, &["removing", "removed"], Duration::from_secs(15)).await;
    stop.store(true, Ordering::Relaxed);
    let statuses = load.await.unwrap();
    assert!(
        statuses.iter().all(|s| *s == 200),
        "users never saw the failing shadow"
    );
    assert_eq!(v["mirrorPercentage"], 0.0);
    let a = argo(api).await;
    assert_eq!(
        (&a["verdict"], &a["failed"]),
        (&"no-go".into(), &true.into()),
        "{a}"
    );
    assert!(a["reason"].as_str().unwrap().contains("rolled back"), "{a}");
    let (code, v) = flagger(api, "rollback", TOKEN).await;
    assert_eq!(code, 200, "Flagger rolls back on a 2xx: {v}");
    assert_eq!(flagger(api, "confirm-rollout", TOKEN).await.0, 412);
    assert_eq!(canary_status(api).await, 2.0, "failed");

    // Alertmanager holds the rollback, labelled.
    let t0 = Instant::now();
    let alert = loop {
        let alerts: serde_json::Value = reqwest::get(format!("{}/api/v2/alerts", am.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let found = alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == "ShadowtapRollback")
            .cloned();
        if let Some(a) = found {
            break a;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "Alertmanager has no rollback: {alerts}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(alert["labels"]["loadbalancer"], "web", "{alert}");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("shadow fails"),
        "{alert}"
    );
    server.shutdown().await;
}

/// The stop before live: with `promotion: manual` a canary that passes every window is held
/// (paused) at its target instead of promoted, and stays there until an operator's `live`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_promotion_pauses_at_the_target_until_live() {
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, _) = backend().await;
    let (canary_url, canary) = backend().await;
    let server = Server::start(config(dir.path(), &stable_url, None, None))
        .await
        .unwrap();
    let api = server.api;
    let proxy = server.plane.balancers["web"].addr;
    let (code, v) = call(
        api,
        "POST",
        "/loadbalancer/web/testing",
        Some(serde_json::json!({
            "candidatePool": [canary_url], "errorRateThreshold": 0.05, "latencyThreshold": 500,
            "promotion": "later"
        })),
    )
    .await;
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("auto or manual"),
        "{v}"
    );
    let (stop, load) = steady(proxy);
    post_ok(
        api,
        "/loadbalancer/web/testing",
        serde_json::json!({
            "candidatePool": [canary_url], "targetTrafficPercentage": 50,
            "errorRateThreshold": 0.05, "latencyThreshold": 500, "promotion": "manual",
            "algorithm": "linear", "stepPercentage": 25, "initialPercentage": 25, "interval": "1s"
        }),
    )
    .await;
    let (v, _) = wait_for(api, &["paused", "live"], Duration::from_secs(20)).await;
    assert_eq!(v["state"], "paused", "held before live: {v}");
    assert_eq!(v["trafficPercentage"], 50.0);
    // Windows keep passing; it stays at the target.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, v) = call(api, "GET", "/loadbalancer/web", None).await;
    assert_eq!(
        (&v["state"], &v["trafficPercentage"]),
        (&"paused".into(), &50.0.into())
    );
    let (_, h) = call(api, "GET", "/loadbalancer/web/history", None).await;
    let pause = h
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["event"] == "pause")
        .cloned()
        .unwrap();
    assert_eq!(pause["actor"], "monitor");
    assert!(
        pause["reason"]
            .as_str()
            .unwrap()
            .contains("promotion = manual"),
        "{pause}"
    );
    post_ok(
        api,
        "/loadbalancer/web/live",
        serde_json::json!({"reason": "looks good"}),
    )
    .await;
    let (v, _) = wait_for(
        api,
        &["live", "removing", "removed"],
        Duration::from_secs(5),
    )
    .await;
    assert!(
        v["trafficPercentage"].as_f64().unwrap() >= 100.0 || v["state"] != "live",
        "{v}"
    );
    stop.store(true, Ordering::Relaxed);
    assert!(load.await.unwrap().iter().all(|s| *s == 200));
    assert!(canary.real.load(Ordering::Relaxed) > 0);
    server.shutdown().await;
}

/// A load balancer's hooks act on the shadow copies and the shadow's answers: a rules file
/// that normalises the one field where the candidate is known to differ (`set_json` on the
/// shadow's response) makes the body comparison agree; production's answers are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_load_balancers_hooks_normalise_the_shadows_answers_before_the_comparison() {
    let dir = tempfile::tempdir().unwrap();
    let (stable_url, stable) = backend().await;
    let (shadow_url, shadow) = backend().await;
    *stable.json.lock().unwrap() = Some(r#"{"id":7,"tier":"gold"}"#.into());
    *shadow.json.lock().unwrap() = Some(r#"{"id":7,"tier":"silver"}"#.into());
    std::fs::write(
        dir.path().join("shadow-rules.toml"),
        "[[response]]\nset_json = { \"/tier\" = \"gold\" }\n",
    )
    .unwrap();
    let mut c = config(dir.path(), &stable_url, None, None);
    c.loadbalancers[0].hooks.rules = Some(dir.path().join("shadow-rules.toml"));
    let server = Server::start(c).await.unwrap();
    let api = server.api;
    let proxy = server.plane.balancers["web"].addr;
    post_ok(
        api,
        "/loadbalancer/web/shadow",
        serde_json::json!({"shadowPool": [shadow_url], "mirrorPercentage": 100}),
    )
    .await;
    let (stop, load) = steady(proxy);
    let t0 = Instant::now();
    let diffs = loop {
        let (_, d) = call(api, "GET", "/loadbalancer/web/diffs", None).await;
        if d["bodies"]["compared"].as_u64().unwrap_or(0) >= 20 {
            break d;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "nothing compared: {d}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        diffs["bodies"]["deviations"],
        serde_json::json!([]),
        "{diffs}"
    );
    let a = argo(api).await;
    assert_eq!(a["verdict"], "go", "{a}");
    stop.store(true, Ordering::Relaxed);
    let _ = load.await.unwrap();
    // Users got production's answer as it was.
    let body = reqwest::get(format!("http://{proxy}/item/1"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, r#"{"id":7,"tier":"gold"}"#);
    assert!(shadow.mirrored.load(Ordering::Relaxed) > 0);
    server.shutdown().await;
}

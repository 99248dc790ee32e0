//! Shares, criteria and stickiness measured through a running proxy; the canary split while
//! its weight rises under load; the admin API; a mirrored run recorded and judged.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shadowtap_proxy::config::ShadowConfig;
use shadowtap_proxy::config::{CanaryConfig, KeySource};

use crate::common::*;

/// `n` GETs of `/item/{k}` from `tasks` keep-alive clients; the answers by index.
async fn load(
    addr: SocketAddr,
    n: usize,
    tasks: usize,
    headers: fn(usize) -> Vec<(String, String)>,
) -> Vec<Answer> {
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let next = next.clone();
        handles.push(tokio::spawn(async move {
            let c = client();
            let mut out = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                if k >= n {
                    break;
                }
                let h = headers(k);
                let h: Vec<(&str, &str)> =
                    h.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
                let a = get_url(&c, &format!("http://{addr}/item/{k}"), &h)
                    .await
                    .unwrap();
                out.push((k, a));
            }
            out
        }));
    }
    let mut all: Vec<(usize, Answer)> = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap());
    }
    all.sort_by_key(|(k, _)| *k);
    all.into_iter().map(|(_, a)| a).collect()
}

fn no_headers(_: usize) -> Vec<(String, String)> {
    Vec::new()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_shares_hold_per_shadow_and_criteria_select() {
    let (prod, _) = backend(Behaviour::default()).await;
    let (sh, _) = backend(Behaviour::default()).await;
    let mut cfg = config(prod);
    let mut ten = shadow("ten", sh);
    ten.percent = Some(10.0);
    ten.queue = 10_000;
    let mut half = shadow("half", sh);
    half.percent = Some(50.0);
    half.queue = 10_000;
    let mut tagged = shadow("tagged", sh);
    tagged.criteria = Some(shadowtap_proxy::config::Criteria {
        match_header: vec!["X-Shadow-Test: true".into()],
        ..Default::default()
    });
    tagged.queue = 10_000;
    cfg.shadows = vec![ten, half, tagged];
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let n = 5000;
    fn every_fifth_tagged(k: usize) -> Vec<(String, String)> {
        if k.is_multiple_of(5) {
            vec![("X-Shadow-Test".into(), "true".into())]
        } else {
            Vec::new()
        }
    }
    let answers = load(running.addr, n, 8, every_fifth_tagged).await;
    assert!(answers.iter().all(|a| a.status == 200));
    let chosen = |i: usize| {
        running.state.routing().sinks[i]
            .counters
            .chosen
            .load(Ordering::Relaxed)
    };
    let pct = |c: u64| c as f64 * 100.0 / n as f64;
    assert!(
        (8.0..=12.0).contains(&pct(chosen(0))),
        "10%: {}",
        pct(chosen(0))
    );
    assert!(
        (48.0..=52.0).contains(&pct(chosen(1))),
        "50%: {}",
        pct(chosen(1))
    );
    assert_eq!(
        chosen(2),
        (n / 5) as u64,
        "only the tagged requests, all of them"
    );
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_by_client_is_the_same_choice_for_every_request_of_a_client() {
    let (prod, _) = backend(Behaviour::default()).await;
    let (sh, seen) = backend(Behaviour::default()).await;
    let mut cfg = config(prod);
    cfg.mirror.percent = 50.0;
    cfg.mirror.by = KeySource::Client;
    let mut s = shadow("shadow", sh);
    s.queue = 10_000;
    cfg.shadows = vec![s];
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let clients = 40u8;
    for c in 0..clients {
        // Each client its own loopback address.
        let mut connector = HttpConnector::new();
        connector.set_local_address(Some(std::net::IpAddr::from([127, 0, 0, 10 + c])));
        let http: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(connector);
        for k in 0..10 {
            let id = u32::from(c) * 1000 + k;
            let a = get_url(&http, &format!("http://{}/item/{id}", running.addr), &[])
                .await
                .unwrap();
            assert_eq!(a.status, 200);
        }
    }
    running.shutdown();
    running.wait().await.unwrap();
    let mut per_client: BTreeMap<u32, usize> = BTreeMap::new();
    for (path, _) in seen.marked.lock().unwrap().iter() {
        let id: u32 = path.trim_start_matches("/item/").parse().unwrap();
        *per_client.entry(id / 1000).or_default() += 1;
    }
    assert!(
        per_client.values().all(|&n| n == 10),
        "all or none per client: {per_client:?}"
    );
    let mirrored = per_client.len();
    assert!(
        (8..=32).contains(&mirrored),
        "{mirrored} of 40 clients mirrored at 50%"
    );
}

fn user_header(k: usize) -> Vec<(String, String)> {
    vec![("X-User".into(), format!("user-{}", k % 2000))]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_canary_weight_holds_users_stay_and_rising_it_under_load_drops_nothing() {
    let (prod, _) = backend(Behaviour {
        label: "stable",
        ..Default::default()
    })
    .await;
    let (can, _) = backend(Behaviour {
        label: "canary",
        ..Default::default()
    })
    .await;
    let mut cfg = config(prod);
    cfg.canary = Some(CanaryConfig {
        name: "canary".into(),
        urls: vec![format!("http://{can}")],
        weight: 10.0,
        sticky: KeySource::Header("X-User".into()),
        pin_cookie: None,
    });
    let running = shadowtap_proxy::start(cfg.clone(), None).await.unwrap();
    // The share: 5,000 distinct users.
    fn distinct(k: usize) -> Vec<(String, String)> {
        vec![("X-User".into(), format!("u{k}"))]
    }
    let answers = load(running.addr, 5000, 8, distinct).await;
    let on_canary = answers
        .iter()
        .filter(|a| a.backend.as_deref() == Some("canary"))
        .count();
    let pct = on_canary as f64 * 100.0 / 5000.0;
    assert!((8.0..=12.0).contains(&pct), "canary share at 10%: {pct}");
    // Stickiness while the weight rises, with clients hammering the proxy throughout.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let mut hammer = Vec::new();
    for t in 0..4 {
        let (stop, errors, done, addr) = (stop.clone(), errors.clone(), done.clone(), running.addr);
        hammer.push(tokio::spawn(async move {
            let c = client();
            let mut k = t;
            while !stop.load(Ordering::Relaxed) {
                match get_url(&c, &format!("http://{addr}/item/{k}"), &[]).await {
                    Ok(a) if a.status == 200 => {}
                    _ => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
                k += 4;
            }
        }));
    }
    let mut previous: Option<BTreeSet<usize>> = None;
    for weight in [5.0, 20.0, 50.0] {
        let mut new = running.state.routing().config.clone();
        new.canary.as_mut().unwrap().weight = weight;
        running.state.apply(new, "test").await.unwrap();
        let answers = load(running.addr, 4000, 4, user_header).await;
        let mut canary_users = BTreeSet::new();
        let mut by_user: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        for (k, a) in answers.iter().enumerate() {
            let label = a.backend.clone().unwrap_or_default();
            if label == "canary" {
                canary_users.insert(k % 2000);
            }
            by_user.entry(k % 2000).or_default().insert(label);
        }
        assert!(
            by_user.values().all(|s| s.len() == 1),
            "a user flipped between stable and canary at weight {weight}"
        );
        if let Some(p) = &previous {
            assert!(
                p.is_subset(&canary_users),
                "raising the weight moved a user back to stable"
            );
        }
        let share = canary_users.len() as f64 * 100.0 / 2000.0;
        assert!(
            (weight - 3.0..=weight + 3.0).contains(&share),
            "weight {weight}: {share}"
        );
        previous = Some(canary_users);
    }
    stop.store(true, Ordering::Relaxed);
    for h in hammer {
        h.await.unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 100);
    assert_eq!(
        errors.load(Ordering::Relaxed),
        0,
        "a request failed while the weight changed"
    );
    running.shutdown();
    let summary = running.wait().await.unwrap();
    assert_eq!(summary.config_version, 4);
}

/// `/metrics` (with a shadow, so every family has samples) is valid OpenMetrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the test virtualenv's prometheus_client (scripts/test.sh creates it and runs ignored tests)"]
async fn the_metrics_are_valid_openmetrics() {
    let (prod, _) = backend(Behaviour::default()).await;
    let (sh, _) = backend(Behaviour::default()).await;
    let mut cfg = config(prod);
    cfg.shadows = vec![shadow("candidate", sh)];
    cfg.admin = Some("127.0.0.1:0".into());
    let running = shadowtap_proxy::start(cfg, Some("s3cret-token".into()))
        .await
        .unwrap();
    let c = client();
    for _ in 0..5 {
        get_url(&c, &format!("http://{}/item/1", running.addr), &[])
            .await
            .unwrap();
    }
    let req = http::Request::builder()
        .uri(format!("http://{}/metrics", running.admin.unwrap()))
        .header("authorization", "Bearer s3cret-token")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = c.request(req).await.unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        shadowtap_proxy::exposition::CONTENT_TYPE
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let metrics = String::from_utf8(body.to_vec()).unwrap();
    // The OpenMetrics parser of the Prometheus project's Python client reads it whole (it
    // refuses a family twice, a sample outside its family, a counter sample without `_total`,
    // a missing `# EOF`). The virtualenv is scripts/test.sh's.
    let python = std::env::var_os("SHADOWTAP_NOTEBOOK_PYTHON").expect(
        "SHADOWTAP_NOTEBOOK_PYTHON names the test virtualenv's python (scripts/test.sh creates it)",
    );
    let mut parser = std::process::Command::new(python)
        .args([
            "-c",
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\nfams = list(p(sys.stdin.read()))\nprint(len(fams), sum(len(f.samples) for f in fams))",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = parser.stdin.take().unwrap();
        stdin.write_all(metrics.as_bytes()).unwrap();
    }
    let out = parser.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "OpenMetrics parser: {}\n{metrics}",
        String::from_utf8_lossy(&out.stderr)
    );
    let families: usize = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(families >= 8, "{families} families\n{metrics}");
    running.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_its_token_and_applies_changes_atomically() {
    let (prod, _) = backend(Behaviour::default()).await;
    let (sh, _) = backend(Behaviour::default()).await;
    let mut cfg = config(prod);
    cfg.shadows = vec![shadow("candidate", sh)];
    cfg.admin = Some("127.0.0.1:0".into());
    assert!(
        shadowtap_proxy::start(cfg.clone(), None).await.is_err(),
        "an admin API without a token is refused"
    );
    let running = shadowtap_proxy::start(cfg.clone(), Some("s3cret-token".into()))
        .await
        .unwrap();
    let admin = running.admin.unwrap();
    let c = client();
    for _ in 0..20 {
        get_url(&c, &format!("http://{}/item/1", running.addr), &[])
            .await
            .unwrap();
    }
    let call = |method: &str, path: &str, token: Option<&str>, body: Option<String>| {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("http://{admin}{path}"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let c = c.clone();
        async move {
            let resp = c.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, String::from_utf8_lossy(&body).into_owned())
        }
    };
    assert_eq!(call("GET", "/stats", None, None).await.0, 401);
    assert_eq!(call("GET", "/stats", Some("wrong"), None).await.0, 401);
    let (status, stats) = call("GET", "/stats", Some("s3cret-token"), None).await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["pools"]["production"]["total"], 20);
    assert_eq!(
        stats["pools"]["production"]["windows"]["10s"]["requests"],
        20
    );
    assert_eq!(stats["mirror"]["candidate"]["chosen"], 20);
    let (_, metrics) = call("GET", "/metrics", Some("s3cret-token"), None).await;
    assert!(
        metrics
            .contains("shadowtap_proxy_requests_total{pool=\"production\",role=\"production\"} 20"),
        "{metrics}"
    );
    assert!(metrics.contains("reason=\"queue_full\""));
    let (_, current) = call("GET", "/config", Some("s3cret-token"), None).await;
    let current: serde_json::Value = serde_json::from_str(&current).unwrap();
    assert_eq!(current["version"], 1);
    let mut new = cfg.clone();
    new.mirror.percent = 0.0;
    let (status, answer) = call(
        "PUT",
        "/config",
        Some("s3cret-token"),
        Some(serde_json::to_string(&new).unwrap()),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("\"version\":2"));
    for _ in 0..10 {
        get_url(&c, &format!("http://{}/item/2", running.addr), &[])
            .await
            .unwrap();
    }
    assert_eq!(
        running.state.routing().sinks[0]
            .counters
            .chosen
            .load(Ordering::Relaxed),
        20,
        "share 0 applies to new requests"
    );
    let mut moved = new.clone();
    moved.listen = "127.0.0.1:1".into();
    let (status, answer) = call(
        "PUT",
        "/config",
        Some("s3cret-token"),
        Some(serde_json::to_string(&moved).unwrap()),
    )
    .await;
    assert_eq!(status, 409, "{answer}");
    assert!(answer.contains("listen"));
    let (status, _) = call(
        "PUT",
        "/config",
        Some("s3cret-token"),
        Some("{not json".into()),
    )
    .await;
    assert_eq!(status, 400);
    // Production repointed to a host nobody configured: refused, nothing applied.
    let mut elsewhere = new.clone();
    elsewhere.production = vec!["http://127.0.0.1:9".into()];
    let (status, answer) = call(
        "PUT",
        "/config",
        Some("s3cret-token"),
        Some(serde_json::to_string(&elsewhere).unwrap()),
    )
    .await;
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("127.0.0.1:9"), "{answer}");
    // Every duration range-checked, the field named: no panic from any number.
    for (field, value) in [
        ("eject_s", 1e20),
        ("rotate_s", 1e20),
        ("idle_timeout_s", -1.0),
        ("header_timeout_s", 0.0),
    ] {
        let mut v = serde_json::to_value(&new).unwrap();
        v["limits"][field] = serde_json::json!(value);
        let (status, answer) =
            call("PUT", "/config", Some("s3cret-token"), Some(v.to_string())).await;
        assert_eq!(status, 400, "{field} {value}: {answer}");
        assert!(answer.contains(field), "{answer}");
    }
    let (_, current) = call("GET", "/config", Some("s3cret-token"), None).await;
    let current: serde_json::Value = serde_json::from_str(&current).unwrap();
    assert_eq!(current["version"], 2, "nothing refused was applied");
    let (_, changes) = call("GET", "/changes", Some("s3cret-token"), None).await;
    assert!(changes.contains("\"source\":\"admin API\""));
    running.shutdown();
    running.wait().await.unwrap();

    // Off loopback the admin API needs TLS or an explicit --admin-insecure.
    let mut open = cfg.clone();
    open.admin = Some("0.0.0.0:0".into());
    let e = match shadowtap_proxy::start(open.clone(), Some("s3cret-token".into())).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("an admin API on 0.0.0.0 without TLS was started"),
    };
    assert!(e.contains("not a loopback address"), "{e}");
    open.admin_insecure = true;
    let running = shadowtap_proxy::start(open, Some("s3cret-token".into()))
        .await
        .unwrap();
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_that_is_production_is_refused() {
    let (prod, _) = backend(Behaviour::default()).await;
    let mut cfg = config(prod);
    cfg.shadows = vec![shadow("candidate", prod)];
    let e = shadowtap_proxy::start(cfg.clone(), None)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("is production") && e.contains("--allow-target 127.0.0.1"),
        "{e}"
    );
    // By name, whatever the port.
    let mut named =
        shadowtap_proxy::ProxyConfig::new("127.0.0.1:0", vec!["http://localhost:9".into()]);
    named.shadows = vec![shadow("candidate", "127.0.0.1:1".parse().unwrap())];
    named.shadows[0].urls = vec!["http://LocalHost:8080".into()];
    assert!(shadowtap_proxy::server::guard_targets(&named).is_err());
    named.allow_targets = vec!["localhost".into()];
    assert!(shadowtap_proxy::server::guard_targets(&named).is_ok());
    cfg.allow_targets = vec!["127.0.0.1".into()];
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    running.shutdown();
    running.wait().await.unwrap();
}

/// A mirrored run recorded and judged by the analyzer: a shadow that changed a field is no-go,
/// one that did not is go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_mirror_run_is_judged_right() {
    let (prod, _) = backend(Behaviour {
        label: "prod",
        ..Default::default()
    })
    .await;
    let (b2, _) = backend(Behaviour {
        label: "b2",
        ..Default::default()
    })
    .await;
    let (same, _) = backend(Behaviour {
        label: "same",
        ..Default::default()
    })
    .await;
    let (changed, _) = backend(Behaviour {
        label: "changed",
        price: Some(-1),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(prod);
    cfg.record = Some(dir.path().join("rec"));
    cfg.shadows = vec![
        shadow("baseline2", b2),
        shadow("same", same),
        shadow("changed", changed),
    ];
    for s in &mut cfg.shadows {
        s.queue = 1000;
    }
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let answers = load(running.addr, 300, 4, no_headers).await;
    assert!(answers
        .iter()
        .all(|a| a.status == 200 && a.backend.as_deref() == Some("prod")));
    running.shutdown();
    let summary = running.wait().await.unwrap();
    assert_eq!(summary.recorded, 300);
    for (name, s) in &summary.shadows {
        assert_eq!(s.sender.as_ref().unwrap().targets[name].rows, 300, "{name}");
    }
    let rec = dir.path().join("rec");
    for (candidate, want) in [
        ("same", shadowtap_analyzer::Decision::Go),
        ("changed", shadowtap_analyzer::Decision::NoGo),
    ] {
        let policy = shadowtap_analyzer::Policy {
            baseline: "production".into(),
            candidate: candidate.into(),
            baseline2: "baseline2".into(),
            ..Default::default()
        };
        let v = shadowtap_analyzer::analyze(&shadowtap_analyzer::AnalyzeOptions {
            capture: Some(rec.clone()),
            replay: rec.clone(),
            run: None,
            policy,
            out: dir.path().join(format!("out-{candidate}")),
            fail_on_marginal: false,
            engine: Default::default(),
            recorded: Default::default(),
            pending_bytes: shadowtap_analyzer::pending::DEFAULT_PENDING_BYTES,
        })
        .await
        .unwrap();
        assert_eq!(v.verdict, want, "{candidate}: {:?}", v.reasons);
    }
    let _ = Duration::ZERO;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_pool_of_two_members_shares_the_copies_under_one_name() {
    let (prod, _) = backend(Behaviour::default()).await;
    let (m1, seen1) = backend(Behaviour::default()).await;
    let (m2, seen2) = backend(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(prod);
    cfg.record = Some(dir.path().to_path_buf());
    let mut pool = shadow("candidate", m1);
    pool.urls.push(format!("http://{m2}"));
    cfg.shadows = vec![pool];
    cfg.mirror.pair_outcomes = true;
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let c = client();
    for k in 0..100 {
        get_url(&c, &format!("http://{}/item/{k}", running.addr), &[])
            .await
            .unwrap();
    }
    // Each request's two answers are joined, production's and the shadow's.
    let shadow = running.state.routing().sinks[0].pairs.clone().unwrap();
    let t0 = std::time::Instant::now();
    while shadow.window(60).len() < 100 && t0.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pairs = shadow.window(60);
    assert_eq!(pairs.len(), 100);
    assert!(pairs.iter().all(|p| matches!(
        (p.production, p.shadow),
        (
            shadowtap_proxy::stats::Outcome::Status(200, _),
            shadowtap_proxy::stats::Outcome::Status(200, _)
        )
    )));
    running.shutdown();
    let summary = running.wait().await.unwrap();
    let (a, b) = (
        seen1.requests.load(Ordering::Relaxed),
        seen2.requests.load(Ordering::Relaxed),
    );
    assert_eq!(a + b, 100);
    assert!((40..=60).contains(&a), "{a} and {b}");
    let sender = summary.shadows["candidate"].sender.as_ref().unwrap();
    assert_eq!(sender.targets["candidate"].rows, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_pool_changed_at_runtime_gets_the_copies_and_the_old_one_sends_what_it_had() {
    let (prod, _) = backend(Behaviour::default()).await;
    let (old, seen_old) = backend(Behaviour::default()).await;
    let (new_member, seen_new) = backend(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(prod);
    cfg.record = Some(dir.path().to_path_buf());
    // Queues long enough for every copy of the test: a new sender that starts slowly on a
    // loaded machine would otherwise drop copies (counted, by design) and the counts below
    // would say nothing about the hand-over.
    let roomy = |name: &str, addr| ShadowConfig {
        queue: 128,
        ..shadow(name, addr)
    };
    cfg.shadows = vec![roomy("candidate", old)];
    let running = shadowtap_proxy::start(cfg.clone(), None).await.unwrap();
    let c = client();
    for k in 0..30 {
        get_url(&c, &format!("http://{}/item/{k}", running.addr), &[])
            .await
            .unwrap();
    }
    let mut changed = cfg.clone();
    changed.shadows = vec![roomy("candidate", new_member)];
    assert_eq!(running.state.apply(changed, "test").await.unwrap(), 2);
    for k in 30..70 {
        get_url(&c, &format!("http://{}/item/{k}", running.addr), &[])
            .await
            .unwrap();
    }
    running.shutdown();
    let summary = running.wait().await.unwrap();
    assert_eq!(seen_old.requests.load(Ordering::Relaxed), 30);
    assert_eq!(seen_new.requests.load(Ordering::Relaxed), 40);
    let rows: u64 = summary
        .shadows
        .values()
        .map(|s| s.sender.as_ref().unwrap().targets["candidate"].rows)
        .sum();
    assert_eq!(rows, 70, "{:?}", summary.shadows.keys());
    // Each set wrote its own files: 70 replays rows for the shadow, none overwritten.
    let files: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("replays-") && n.contains("candidate"))
        .collect();
    assert!(files.len() >= 2, "{files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replayer_hooks_change_the_copies_not_production() {
    let (prod, prod_seen) = backend(Behaviour::default()).await;
    let (sh, seen) = backend(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[request]]\npath = { from = \"^/item/(.*)\", to = \"/item/9$1\" }\n",
    )
    .unwrap();
    let mut cfg = config(prod);
    cfg.shadows = vec![shadow("candidate", sh)];
    cfg.hooks.rules = Some(rules);
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let c = client();
    for k in 0..5 {
        let a = get_url(&c, &format!("http://{}/item/{k}", running.addr), &[])
            .await
            .unwrap();
        assert!(String::from_utf8_lossy(&a.body).contains(&format!("\"n\":{k},")));
    }
    running.shutdown();
    running.wait().await.unwrap();
    let paths: Vec<String> = seen
        .marked
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(paths.len(), 5);
    assert!(paths.iter().all(|p| p.starts_with("/item/9")), "{paths:?}");
    assert!(
        seen.marked
            .lock()
            .unwrap()
            .iter()
            .all(|(_, marker)| marker.is_some()),
        "every copy carries the marker header"
    );
    let prod_paths: Vec<String> = prod_seen
        .marked
        .lock()
        .unwrap()
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert!(
        prod_paths.iter().all(|p| !p.starts_with("/item/9")),
        "{prod_paths:?}"
    );
    assert!(
        prod_seen
            .marked
            .lock()
            .unwrap()
            .iter()
            .all(|(_, m)| m.is_none()),
        "production gets no marker"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_member_is_passed_over_and_a_pinned_user_stays_on_the_canary() {
    let (good, seen) = backend(Behaviour {
        label: "good",
        ..Default::default()
    })
    .await;
    let dead = closed_port();
    let mut cfg = shadowtap_proxy::ProxyConfig::new(
        "127.0.0.1:0",
        vec![format!("http://{dead}"), format!("http://{good}")],
    );
    cfg.limits.shutdown_grace_s = 5.0;
    let (can, _) = backend(Behaviour {
        label: "canary",
        ..Default::default()
    })
    .await;
    cfg.canary = Some(CanaryConfig {
        name: "canary".into(),
        urls: vec![format!("http://{can}")],
        weight: 0.01,
        sticky: KeySource::Header("X-User".into()),
        pin_cookie: Some("pin".into()),
    });
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let c = client();
    // A body-less request that met the refusing member is tried at the other: every one is
    // answered, and the refusing member is left out afterwards.
    for k in 0..20 {
        let a = get_url(
            &c,
            &format!("http://{}/item/{k}", running.addr),
            &[("X-User", "u")],
        )
        .await
        .unwrap();
        assert_eq!(a.status, 200);
    }
    assert_eq!(seen.requests.load(Ordering::Relaxed), 20);
    // The pin cookie keeps a user on the canary whatever its bucket.
    let a = get_url(
        &c,
        &format!("http://{}/item/1", running.addr),
        &[("X-User", "u"), ("Cookie", "pin=1")],
    )
    .await
    .unwrap();
    assert_eq!(a.backend.as_deref(), Some("canary"));
    running.shutdown();
    running.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_criteria_pick_the_shadow_by_the_client_country() {
    let (prod, _) = backend(Behaviour::default()).await;
    let (here, seen_here) = backend(Behaviour::default()).await;
    let (elsewhere, seen_elsewhere) = backend(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let geo = dir.path().join("geo.txt");
    std::fs::write(&geo, "127.0.0.0/8 ZZ\n10.0.0.0/8 US\n").unwrap();
    let mut cfg = config(prod);
    let criteria = |cc: &str| shadowtap_proxy::config::Criteria {
        match_geo: vec![cc.into()],
        geo_file: Some(geo.clone()),
        ..Default::default()
    };
    let mut a = shadow("loopback-country", here);
    a.criteria = Some(criteria("ZZ"));
    let mut b = shadow("us", elsewhere);
    b.criteria = Some(criteria("US"));
    cfg.shadows = vec![a, b];
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let c = client();
    for k in 0..10 {
        get_url(&c, &format!("http://{}/item/{k}", running.addr), &[])
            .await
            .unwrap();
    }
    running.shutdown();
    running.wait().await.unwrap();
    assert_eq!(
        seen_here.requests.load(Ordering::Relaxed),
        10,
        "127.0.0.1 is ZZ here"
    );
    assert_eq!(seen_elsewhere.requests.load(Ordering::Relaxed), 0);
}

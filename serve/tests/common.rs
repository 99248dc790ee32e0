//! Real parts for the control plane's tests: backends with switches (5xx, latency) that count
//! what they get, a webhook receiver, and a `serve` config in a temporary directory.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::routing::{any, post};
use axum::Router;
use shadowtap_serve::config::{LoadBalancerConfig, ServeConfig};

/// A backend's switches and counters.
#[derive(Default)]
pub struct Backend {
    /// Answer 503.
    pub failing: AtomicBool,
    /// Wait this many ms first.
    pub delay_ms: AtomicU64,
    /// Answer 503 to one request in this many (0: never).
    pub fail_one_in: AtomicU64,
    /// Requests from users (no mirror marker).
    pub real: AtomicU64,
    /// Mirrored copies (with the marker).
    pub mirrored: AtomicU64,
    /// Answer this JSON (`{now}` replaced by the time, which differs on every answer) instead
    /// of `{"ok":true}`.
    pub json: Mutex<Option<String>>,
}

async fn answer(
    State(b): State<Arc<Backend>>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    let n = if headers.contains_key("x-shadowtap-replay") {
        b.mirrored.fetch_add(1, Ordering::Relaxed)
    } else {
        b.real.fetch_add(1, Ordering::Relaxed)
    };
    let one_in = b.fail_one_in.load(Ordering::Relaxed);
    let delay = b.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = if b.failing.load(Ordering::Relaxed) || (one_in > 0 && n % one_in == 0) {
        503
    } else {
        200
    };
    let body = match b.json.lock().unwrap().as_deref() {
        Some(j) => j.replace(
            "{now}",
            &shadowtap_serve::deployment::rfc3339(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64(),
            ),
        ),
        None => "{\"ok\":true}".to_owned(),
    };
    axum::response::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
        .unwrap()
}

/// Starts a backend; its URL and switches.
pub async fn backend() -> (String, Arc<Backend>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let b = Arc::new(Backend::default());
    let app = Router::new().fallback(any(answer)).with_state(b.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), b)
}

/// What a webhook receiver got: (delivery id, signature, body).
pub type Received = Arc<Mutex<Vec<(String, String, serde_json::Value)>>>;

async fn receive(
    State(r): State<Received>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> &'static str {
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let sig = h("x-shadowtap-signature");
    assert_eq!(
        sig,
        shadowtap_serve::alerts::signature(WEBHOOK_SECRET.as_bytes(), &body),
        "the signature is the body's HMAC"
    );
    r.lock().unwrap().push((h("x-shadowtap-delivery"), sig, v));
    "ok"
}

/// The webhook's secret in the test configs.
pub const WEBHOOK_SECRET: &str = "webhook-secret-for-tests";
/// The API token in the test configs (named `ops`).
pub const TOKEN: &str = "test-token-0123456789abcdef";

async fn receive_slack(
    State(r): State<Received>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> &'static str {
    let id = headers
        .get("x-shadowtap-delivery")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let v = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    r.lock().unwrap().push((id, "slack".into(), v));
    "ok"
}

/// Starts a webhook receiver (`/hook`: the signed JSON webhook, signatures checked; `/slack`:
/// the Slack-compatible one, recorded with the signature `slack`); its `/hook` URL and what it
/// got.
pub async fn receiver() -> (String, Received) {
    let got: Received = Arc::default();
    let app = Router::new()
        .route("/hook", post(receive))
        .route("/slack", post(receive_slack))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}/hook"), got)
}

/// A config with one load balancer `web` over `production`, in `dir`; the store `store`
/// (default SQLite in `dir`); alerts to `webhook`.
pub fn config(
    dir: &std::path::Path,
    production: &str,
    store: Option<String>,
    webhook: Option<&str>,
) -> ServeConfig {
    std::fs::write(dir.join("api.tokens"), format!("ops {TOKEN}\n")).unwrap();
    std::fs::write(dir.join("webhook.secret"), WEBHOOK_SECRET).unwrap();
    let text = format!(
        r#"
[api]
listen = "127.0.0.1:0"
token_file = "api.tokens"
[store]
url = "{}"
[monitor]
interval = "1s"
min_requests = 5
silent_limit = 3
failure_limit = 2
drain = "1s"
[alerts]
{}
[[loadbalancer]]
id = "web"
listen = "127.0.0.1:0"
production = ["{production}"]
"#,
        store.unwrap_or_else(|| "sqlite://state.db".into()),
        webhook
            .map(|w| format!(
                "webhook_url = \"{w}\"\nwebhook_secret_file = \"webhook.secret\"\nslack_url = \"{}\"",
                w.replace("/hook", "/slack")
            ))
            .unwrap_or_default()
    );
    let path = dir.join("shadowtap.toml");
    std::fs::write(&path, text).unwrap();
    let c = ServeConfig::load(&path).unwrap();
    let _: &LoadBalancerConfig = &c.loadbalancers[0];
    c
}

/// Sends `n` GETs to `addr` from 4 tasks, bounded by a 20 s total; statuses seen.
pub async fn traffic(addr: SocketAddr, n: usize, headers: &[(&str, &str)]) -> Vec<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let next = Arc::new(AtomicU64::new(0));
    let headers: Vec<(String, String)> = headers
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, next, headers) = (client.clone(), next.clone(), headers.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let k = next.fetch_add(1, Ordering::Relaxed) as usize;
                if k >= n {
                    break;
                }
                let mut req = client.get(format!("http://{addr}/item/{k}"));
                for (a, b) in &headers {
                    req = req.header(a, b);
                }
                out.push(req.send().await.map_or(0, |r| r.status().as_u16()));
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .unwrap()
                .unwrap(),
        );
    }
    all
}

/// The API client: (status, JSON).
pub async fn call(
    api: SocketAddr,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let c = reqwest::Client::new();
    let mut req = c
        .request(method.parse().unwrap(), format!("http://{api}{path}"))
        .bearer_auth(TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let v = resp.json().await.unwrap_or(serde_json::Value::Null);
    (status, v)
}

/// POSTs `body` to `path` and asserts a 200; the answer.
pub async fn post_ok(api: SocketAddr, path: &str, body: serde_json::Value) -> serde_json::Value {
    let (status, v) = call(api, "POST", path, Some(body)).await;
    assert_eq!(status, 200, "POST {path}: {v}");
    v
}

/// Waits (at most 5 s) until `server` holds the monitor's lease.
pub async fn wait_leader(server: &shadowtap_serve::Server) {
    let t0 = std::time::Instant::now();
    while !server.plane.is_leader() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "never took the monitor's lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Requests at a steady pace until stopped (at most 60 s, at most 20,000 requests).
pub fn steady(addr: SocketAddr) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<u16>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let c = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let started = std::time::Instant::now();
        let mut out = Vec::new();
        while !s.load(Ordering::Relaxed)
            && out.len() < 20_000
            && started.elapsed() < Duration::from_secs(60)
        {
            let st = c
                .get(format!("http://{addr}/item/{}", out.len()))
                .send()
                .await
                .map_or(0, |r| r.status().as_u16());
            out.push(st);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        out
    });
    (stop, task)
}

pub async fn wait_for(
    api: SocketAddr,
    states: &[&str],
    within: Duration,
) -> (serde_json::Value, Duration) {
    let t0 = std::time::Instant::now();
    loop {
        let (_, v) = call(api, "GET", "/loadbalancer/web", None).await;
        if states.iter().any(|s| v["state"] == *s) {
            return (v, t0.elapsed());
        }
        assert!(
            t0.elapsed() < within,
            "still {} after {within:?}: {v}",
            v["state"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

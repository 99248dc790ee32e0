//! `shadowtap demo-service`: a small JSON API for the README's end-to-end demo and the canary
//! scenario tests. Two copies with different flags play baseline and candidate; flags inject
//! the regressions a canary analysis must catch (slower endpoint, extra 500s, a changed JSON
//! field) and the noise it must ignore (a fresh timestamp and request id in every body).
//! Listens on loopback only.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use clap::Args;
use serde_json::{json, Value};

/// Flags of `shadowtap demo-service` (hidden: a demo and test fixture, not a product feature).
#[derive(Debug, Args, Clone)]
pub struct DemoArgs {
    /// Address to listen on (loopback; port 0 picks a free one, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Label reported by `/health` (`baseline`, `candidate`).
    #[arg(long, default_value = "v1")]
    label: String,
    /// Add this many ms to requests whose path starts with --slow-path.
    #[arg(long, default_value_t = 0)]
    slow_ms: u64,
    /// Path prefix slowed down by --slow-ms.
    #[arg(long, default_value = "/api/orders")]
    slow_path: String,
    /// Answer this percentage of API requests with a 500 (chosen by a hash of the URL).
    #[arg(long, default_value_t = 0.0)]
    error_percent: f64,
    /// Set a field of the user JSON to another value (`tier=platinum`).
    #[arg(long, value_name = "FIELD=VALUE")]
    change_field: Option<String>,
    /// Put a fresh `generated_at` timestamp and `request_id` in every JSON body.
    #[arg(long)]
    noise: bool,
    /// Base latency of every request, ms.
    #[arg(long, default_value_t = 1)]
    base_ms: u64,
    /// Slow down only this percentage of the requests --slow-path matches (chosen at random
    /// per request).
    #[arg(long, default_value_t = 100.0)]
    slow_percent: f64,
    /// Answer this percentage of API requests with a 500, chosen at random per request (not
    /// by URL: the same request may fail once and not the next time).
    #[arg(long, default_value_t = 0.0)]
    random_error_percent: f64,
    /// Answer every request whose path starts with this with a 500.
    #[arg(long, value_name = "PREFIX")]
    fail_path: Option<String>,
    /// Answer every request with this status (as a misconfigured or unauthorised target does).
    #[arg(long, value_name = "CODE")]
    status: Option<u16>,
    /// Send JSON bodies gzip-coded (`Content-Encoding: gzip`).
    #[arg(long)]
    gzip: bool,
    /// With --noise: `request_id` is a number instead of a string.
    #[arg(long)]
    noise_number: bool,
    /// `/api/search` answers an HTML page with a fresh nonce and timestamp in every response.
    #[arg(long)]
    html: bool,
    /// With --html: the page's text changes.
    #[arg(long)]
    html_change: bool,
    /// Add this many KiB of padding to `/api/search` bodies (a large response).
    #[arg(long, default_value_t = 0)]
    pad_kib: usize,
}

struct App {
    args: DemoArgs,
    counter: AtomicU64,
}

fn hash(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

impl App {
    /// A random draw in [0, 100) per call.
    fn percent(&self) -> f64 {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        (hash(&format!("{n}/{now:?}/{}", std::process::id())) % 10_000) as f64 / 100.0
    }

    /// The answer forced by --status or --fail-path, if any.
    fn forced(&self, path: &str) -> Option<Response> {
        if let Some(code) = self.args.status {
            let code = StatusCode::from_u16(code).unwrap_or(StatusCode::UNAUTHORIZED);
            return Some((code, Json(json!({"error": code.as_str()}))).into_response());
        }
        if self
            .args
            .fail_path
            .as_deref()
            .is_some_and(|p| path.starts_with(p))
        {
            return Some(
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Json(json!({"error": "internal"})),
                )
                    .into_response(),
            );
        }
        None
    }

    fn json(&self, body: Value) -> Response {
        if !self.args.gzip {
            return Json(body).into_response();
        }
        use std::io::Write as _;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let _ = enc.write_all(body.to_string().as_bytes());
        let bytes = enc.finish().unwrap_or_default();
        (
            [
                (axum::http::header::CONTENT_TYPE, "application/json"),
                (axum::http::header::CONTENT_ENCODING, "gzip"),
                (axum::http::header::VARY, "Accept-Encoding"),
            ],
            bytes,
        )
            .into_response()
    }

    async fn shape(&self, uri: &Uri, mut body: Value) -> Response {
        let path = uri.path();
        let mut wait = self.args.base_ms;
        if self.args.slow_ms > 0
            && path.starts_with(&self.args.slow_path)
            && (self.args.slow_percent >= 100.0 || self.percent() < self.args.slow_percent)
        {
            wait += self.args.slow_ms;
        }
        tokio::time::sleep(Duration::from_millis(wait)).await;
        if let Some(r) = self.forced(path) {
            return r;
        }
        if self.args.random_error_percent > 0.0 && self.percent() < self.args.random_error_percent {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "internal"})),
            )
                .into_response();
        }
        if self.args.error_percent > 0.0
            && ((hash(&uri.to_string()) % 10_000) as f64) < self.args.error_percent * 100.0
        {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                Json(json!({"error": "internal"})),
            )
                .into_response();
        }
        if self.args.noise {
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            body["generated_at"] = json!(format!("{}.{:06}", now.as_secs(), now.subsec_micros()));
            body["request_id"] = if self.args.noise_number {
                json!(hash(&format!("{n}{now:?}")) >> 12)
            } else {
                json!(format!(
                    "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                    hash(&format!("{n}{now:?}")) as u32,
                    n & 0xffff,
                    n & 0xfff,
                    (n >> 12) & 0xfff,
                    hash(&format!("{now:?}")) & 0xffff_ffff_ffff
                ))
            };
        }
        self.json(body)
    }
}

async fn user(State(app): State<Arc<App>>, Path(id): Path<u64>, uri: Uri) -> Response {
    let tier = ["bronze", "silver", "gold"][(id % 3) as usize];
    let mut body =
        json!({"id": id, "name": format!("user-{id}"), "tier": tier, "active": id % 5 != 0});
    if let Some((k, v)) = app
        .args
        .change_field
        .as_deref()
        .and_then(|c| c.split_once('='))
    {
        body[k] = json!(v);
    }
    app.shape(&uri, body).await
}

async fn orders(
    State(app): State<Arc<App>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    uri: Uri,
) -> Response {
    let user: u64 = q.get("user").and_then(|u| u.parse().ok()).unwrap_or(0);
    let items: Vec<Value> = (0..(user % 4 + 1))
        .map(|i| json!({"id": user * 10 + i, "total": (user * 7 + i * 3) as f64 + 0.99}))
        .collect();
    app.shape(&uri, json!({"user": user, "orders": items}))
        .await
}

async fn search(
    State(app): State<Arc<App>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
    uri: Uri,
) -> Response {
    let term = q.get("q").cloned().unwrap_or_default();
    if app.args.html {
        return search_page(&app, &uri, &term).await;
    }
    let results: Vec<Value> = (0..3).map(|i| json!(format!("{term}-{i}"))).collect();
    let mut body = json!({"q": term, "results": results});
    if app.args.pad_kib > 0 {
        body["pad"] = json!("x".repeat(app.args.pad_kib * 1024));
    }
    app.shape(&uri, body).await
}

/// An HTML page with a per-request nonce and time, as server-rendered pages have.
async fn search_page(app: &App, uri: &Uri, term: &str) -> Response {
    tokio::time::sleep(Duration::from_millis(app.args.base_ms)).await;
    if let Some(r) = app.forced(uri.path()) {
        return r;
    }
    let nonce = format!(
        "{:016x}{:08x}",
        hash(&format!("{}", app.percent())),
        hash(uri.path()) as u32 ^ (app.percent() * 1000.0) as u32
    );
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let text = if app.args.html_change {
        "Results for your search, now sorted by relevance"
    } else {
        "Results for your search"
    };
    let page = format!(
        "<!doctype html>\n<html>\n<head><script nonce=\"{nonce}\">var t = {};</script></head>\n<body>\n<h1>{text}</h1>\n<p>{}</p>\n</body>\n</html>\n",
        now.as_millis(),
        term.replace('<', "&lt;")
    );
    (
        [(axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page,
    )
        .into_response()
}

async fn health(State(app): State<Arc<App>>) -> Response {
    if let Some(r) = app.forced("/health") {
        return r;
    }
    format!("ok {}\n", app.args.label).into_response()
}

async fn missing() -> Response {
    (StatusCode::NOT_FOUND, Json(json!({"error": "not found"}))).into_response()
}

/// Runs the service until killed.
pub fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    if !args.listen.ip().is_loopback() {
        anyhow::bail!(
            "demo-service listens on loopback only (got {})",
            args.listen
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("listening on http://{}", listener.local_addr()?);
        use std::io::Write as _;
        std::io::stdout().flush()?;
        let app = Arc::new(App {
            args,
            counter: AtomicU64::new(0),
        });
        let router = Router::new()
            .route("/api/users/{id}", get(user))
            .route("/api/orders", get(orders))
            .route("/api/search", get(search))
            .route("/health", get(health))
            .fallback(missing)
            .with_state(app);
        axum::serve(listener, router).await?;
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(ExitCode::SUCCESS)
}

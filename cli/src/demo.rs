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
}

struct App {
    args: DemoArgs,
    counter: AtomicU64,
}

fn hash(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

impl App {
    async fn shape(&self, uri: &Uri, mut body: Value) -> Response {
        let path = uri.path();
        let mut wait = self.args.base_ms;
        if self.args.slow_ms > 0 && path.starts_with(&self.args.slow_path) {
            wait += self.args.slow_ms;
        }
        tokio::time::sleep(Duration::from_millis(wait)).await;
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
            body["request_id"] = json!(format!(
                "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
                hash(&format!("{n}{now:?}")) as u32,
                n & 0xffff,
                n & 0xfff,
                (n >> 12) & 0xfff,
                hash(&format!("{now:?}")) & 0xffff_ffff_ffff
            ));
        }
        Json(body).into_response()
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
    let results: Vec<Value> = (0..3).map(|i| json!(format!("{term}-{i}"))).collect();
    app.shape(&uri, json!({"q": term, "results": results}))
        .await
}

async fn health(State(app): State<Arc<App>>) -> String {
    format!("ok {}\n", app.args.label)
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

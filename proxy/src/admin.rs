//! The admin API, on its own listener, every endpoint behind a bearer token:
//! `GET /config` (the configuration in force and its version), `PUT /config` (a new one, as
//! JSON, applied atomically to new requests; connections are not touched), `GET /changes` (the
//! last 100 changes), `GET /stats` (per pool: requests, error rate, latency over 10 s / 1 min /
//! 5 min; mirror copies sent and dropped by reason; the recording's counts) and `GET /metrics`
//! (the same in the Prometheus text format). This is what the control plane reads and drives.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State as AxState};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::sync::watch;

use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::state::State;
use crate::stats::{DropReason, PoolStats};

#[derive(Clone)]
struct Admin {
    state: Arc<State>,
    token: Arc<str>,
}

/// Compares in time independent of where the strings differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(AxState(admin): AxState<Admin>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(given.trim().as_bytes(), admin.token.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            "a bearer token is needed (Authorization: Bearer TOKEN)\n",
        )
            .into_response();
    }
    next.run(req).await
}

async fn get_config(AxState(admin): AxState<Admin>) -> Json<serde_json::Value> {
    let r = admin.state.routing();
    Json(serde_json::json!({ "version": r.version, "config": r.config }))
}

async fn put_config(AxState(admin): AxState<Admin>, body: axum::body::Bytes) -> Response {
    let new: ProxyConfig = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("not a proxy configuration: {e}\n"),
            )
                .into_response()
        }
    };
    match admin.state.apply(new, "admin API").await {
        Ok(version) => Json(serde_json::json!({ "version": version })).into_response(),
        Err(e @ ProxyError::Config { .. }) if e.to_string().contains("restart") => {
            (StatusCode::CONFLICT, format!("{e}\n")).into_response()
        }
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

async fn get_changes(AxState(admin): AxState<Admin>) -> Json<serde_json::Value> {
    let changes = admin
        .state
        .changes
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Json(serde_json::Value::Array(changes))
}

/// Every pool's statistics: production, the canary, each shadow.
fn pools(state: &State) -> Vec<(String, &'static str, Arc<PoolStats>)> {
    let r = state.routing();
    let mut out = vec![(
        "production".to_owned(),
        "production",
        state.production.clone(),
    )];
    if let Some(c) = &r.canary {
        out.push((c.pool.name.clone(), "canary", state.canary.clone()));
    }
    for s in &r.sinks {
        out.push((s.name.clone(), "shadow", s.stats.clone()));
    }
    out
}

/// The `/stats` document.
pub fn stats_json(state: &State) -> serde_json::Value {
    let pools: serde_json::Map<String, serde_json::Value> = pools(state)
        .into_iter()
        .map(|(name, role, s)| {
            (
                name,
                serde_json::json!({ "role": role, "total": s.total(), "windows": s.windows() }),
            )
        })
        .collect();
    let mirror: serde_json::Map<String, serde_json::Value> = state
        .routing()
        .sinks
        .iter()
        .map(|s| (s.name.clone(), s.counters.json()))
        .collect();
    let recording = state.sinks.recorder.as_ref().map(|r| {
        serde_json::json!({
            "written": r.counts.written.load(Ordering::Relaxed),
            "dropped": r.counts.dropped.load(Ordering::Relaxed),
        })
    });
    serde_json::json!({
        "run_id": state.run_id,
        "config_version": state.routing().version,
        "pools": pools,
        "mirror": mirror,
        "mirror_memory_bytes": state.budget.used(),
        "recording": recording,
    })
}

async fn get_stats(AxState(admin): AxState<Admin>) -> Json<serde_json::Value> {
    Json(stats_json(&admin.state))
}

/// The `/metrics` text.
pub fn metrics_text(state: &State) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# TYPE shadowtap_proxy_requests_total counter");
    for (name, role, s) in pools(state) {
        let _ = writeln!(
            out,
            "shadowtap_proxy_requests_total{{pool=\"{name}\",role=\"{role}\"}} {}",
            s.total()
        );
    }
    for (metric, help) in [
        ("requests", "requests that ended in the window"),
        (
            "error_rate",
            "5xx and transport errors over requests in the window",
        ),
        ("latency_p50_seconds", "median latency in the window"),
        (
            "latency_p90_seconds",
            "90th percentile latency in the window",
        ),
        (
            "latency_p99_seconds",
            "99th percentile latency in the window",
        ),
    ] {
        let _ = writeln!(out, "# HELP shadowtap_proxy_{metric} {help}");
        let _ = writeln!(out, "# TYPE shadowtap_proxy_{metric} gauge");
        for (name, role, s) in pools(state) {
            for (window, w) in s.windows() {
                let v = match metric {
                    "requests" => Some(w.requests as f64),
                    "error_rate" => Some(w.error_rate),
                    "latency_p50_seconds" => w.p50_ms.map(|ms| ms / 1000.0),
                    "latency_p90_seconds" => w.p90_ms.map(|ms| ms / 1000.0),
                    _ => w.p99_ms.map(|ms| ms / 1000.0),
                };
                if let Some(v) = v {
                    let _ = writeln!(
                        out,
                        "shadowtap_proxy_{metric}{{pool=\"{name}\",role=\"{role}\",window=\"{window}\"}} {v}"
                    );
                }
            }
        }
    }
    let _ = writeln!(out, "# TYPE shadowtap_proxy_mirror_copies_total counter");
    for s in &state.routing().sinks {
        let _ = writeln!(
            out,
            "shadowtap_proxy_mirror_copies_total{{shadow=\"{}\",result=\"sent\"}} {}",
            s.name,
            s.counters.sent.load(Ordering::Relaxed)
        );
        for r in DropReason::ALL {
            let _ = writeln!(
                out,
                "shadowtap_proxy_mirror_copies_total{{shadow=\"{}\",result=\"dropped\",reason=\"{}\"}} {}",
                s.name,
                r.as_str(),
                s.counters.dropped(r)
            );
        }
    }
    if let Some(r) = &state.sinks.recorder {
        let _ = writeln!(out, "# TYPE shadowtap_proxy_recorded_total counter");
        let _ = writeln!(
            out,
            "shadowtap_proxy_recorded_total{{result=\"written\"}} {}",
            r.counts.written.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "shadowtap_proxy_recorded_total{{result=\"dropped\"}} {}",
            r.counts.dropped.load(Ordering::Relaxed)
        );
    }
    out
}

async fn get_metrics(AxState(admin): AxState<Admin>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        metrics_text(&admin.state),
    )
        .into_response()
}

/// Serves the admin API on `addr` until `stop` turns true; the address bound.
pub async fn serve(
    addr: &str,
    token: String,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) -> Result<SocketAddr, ProxyError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ProxyError::Listen {
            what: "--admin",
            addr: addr.to_owned(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ProxyError::Listen {
        what: "--admin",
        addr: addr.to_owned(),
        source,
    })?;
    let admin = Admin {
        state,
        token: token.trim().into(),
    };
    let app = Router::new()
        .route("/config", get(get_config).put(put_config))
        .route("/changes", get(get_changes))
        .route("/stats", get(get_stats))
        .route("/metrics", get(get_metrics))
        .layer(axum::middleware::from_fn_with_state(admin.clone(), auth))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(admin);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await;
    });
    Ok(local)
}

//! The admin API, on its own listener, every endpoint behind a bearer token:
//! `GET /config` (the configuration in force and its version), `PUT /config` (a new one, as
//! JSON, applied atomically to new requests; connections are not touched), `GET /changes` (the
//! last 100 changes), `GET /stats` (per pool: requests, error rate, latency over 10 s / 1 min /
//! 5 min; mirror copies sent and dropped by reason; the recording's counts) and `GET /metrics`
//! (the same in the Prometheus text format). This is what the control plane reads and drives.

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
    /// Production and canary members a new configuration may name.
    allowed: Arc<Allowed>,
}

/// The members `PUT /config` may send users to: those at start, and the operator's list.
#[derive(Debug)]
struct Allowed {
    any: bool,
    members: std::collections::BTreeSet<String>,
}

impl Allowed {
    fn new(start: &ProxyConfig) -> Allowed {
        let mut members = std::collections::BTreeSet::new();
        let canary = start.canary.iter().flat_map(|c| c.urls.iter());
        for u in start
            .production
            .iter()
            .chain(canary)
            .chain(&start.admin_allow_production)
        {
            members.insert(normal(u));
        }
        Allowed {
            any: start.admin_allow_production.iter().any(|u| u == "*"),
            members,
        }
    }

    /// The first production or canary member of `c` not allowed.
    fn refuses<'a>(&self, c: &'a ProxyConfig) -> Option<&'a str> {
        if self.any {
            return None;
        }
        let canary = c.canary.iter().flat_map(|c| c.urls.iter());
        c.production
            .iter()
            .chain(canary)
            .find(|u| !self.members.contains(&normal(u)))
            .map(String::as_str)
    }
}

fn normal(url: &str) -> String {
    url.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// Compares in time independent of where the strings differ (`subtle`).
fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
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
    if let Some(member) = admin.allowed.refuses(&new) {
        return (
            StatusCode::FORBIDDEN,
            format!(
                "production or canary member {member}: not one the proxy started with; allow it with admin_allow_production (--admin-allow-production) at start\n"
            ),
        )
            .into_response();
    }
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
                serde_json::json!({
                    "role": role,
                    "total": s.total(),
                    "clientFaults": s.client_faults(),
                    "windows": s.windows()
                }),
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

/// The `/metrics` text (OpenMetrics, by [`crate::exposition`]).
pub fn metrics_text(state: &State) -> String {
    let mut e = crate::exposition::Exposition::default();
    for (name, role, s) in pools(state) {
        let labels = [("pool", name.as_str()), ("role", role)];
        e.count(
            "shadowtap_proxy_requests",
            "Requests answered by the pool",
            &labels,
            s.total(),
        );
        e.count(
            "shadowtap_proxy_client_faults",
            "Requests ended by their client (gone, or a malformed body), not counted as the pool's errors",
            &labels,
            s.client_faults(),
        );
    }
    for (metric, help) in [
        (
            "shadowtap_proxy_requests",
            "Requests that ended in the window",
        ),
        (
            "shadowtap_proxy_error_rate",
            "5xx and transport errors over requests in the window",
        ),
        (
            "shadowtap_proxy_latency_p50_seconds",
            "Median latency in the window",
        ),
        (
            "shadowtap_proxy_latency_p90_seconds",
            "90th percentile latency in the window",
        ),
        (
            "shadowtap_proxy_latency_p99_seconds",
            "99th percentile latency in the window",
        ),
    ] {
        for (name, role, s) in pools(state) {
            for (window, w) in s.windows() {
                let v = match metric {
                    "shadowtap_proxy_requests" => Some(w.requests as f64),
                    "shadowtap_proxy_error_rate" => Some(w.error_rate),
                    "shadowtap_proxy_latency_p50_seconds" => w.p50_ms.map(|ms| ms / 1000.0),
                    "shadowtap_proxy_latency_p90_seconds" => w.p90_ms.map(|ms| ms / 1000.0),
                    _ => w.p99_ms.map(|ms| ms / 1000.0),
                };
                if let Some(v) = v {
                    // The windowed request count is a gauge of its own name (the counter
                    // above is `shadowtap_proxy_requests_total`).
                    let metric = if metric == "shadowtap_proxy_requests" {
                        "shadowtap_proxy_window_requests"
                    } else {
                        metric
                    };
                    e.set(
                        metric,
                        help,
                        &[("pool", name.as_str()), ("role", role), ("window", window)],
                        v,
                    );
                }
            }
        }
    }
    for s in &state.routing().sinks {
        e.count(
            "shadowtap_proxy_mirror_copies",
            "Copies of requests for a shadow, sent or dropped by reason",
            &[("shadow", s.name.as_str()), ("result", "sent")],
            s.counters.sent.load(Ordering::Relaxed),
        );
        for r in DropReason::ALL {
            e.count(
                "shadowtap_proxy_mirror_copies",
                "Copies of requests for a shadow, sent or dropped by reason",
                &[
                    ("shadow", s.name.as_str()),
                    ("result", "dropped"),
                    ("reason", r.as_str()),
                ],
                s.counters.dropped(r),
            );
        }
    }
    if let Some(r) = &state.sinks.recorder {
        e.count(
            "shadowtap_proxy_recorded",
            "Exchanges for the recording, written or dropped",
            &[("result", "written")],
            r.counts.written.load(Ordering::Relaxed),
        );
        e.count(
            "shadowtap_proxy_recorded",
            "Exchanges for the recording, written or dropped",
            &[("result", "dropped")],
            r.counts.dropped.load(Ordering::Relaxed),
        );
    }
    e.encode()
}

async fn get_metrics(AxState(admin): AxState<Admin>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::exposition::CONTENT_TYPE)],
        metrics_text(&admin.state),
    )
        .into_response()
}

/// The admin API's listener, bound before anything else starts: loopback, TLS
/// (`admin_tls`), or `admin_insecure` — it can repoint production, so it is not served in the
/// clear on a network by accident.
pub struct Bound {
    listener: tokio::net::TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    /// The address bound.
    pub local: SocketAddr,
}

/// Binds the admin API of `config` at `addr`, or says why it may not be served there.
pub async fn bind(addr: &str, config: &ProxyConfig) -> Result<Bound, ProxyError> {
    let acceptor = match &config.admin_tls {
        Some(t) => Some(crate::tls::acceptor(&[(
            t.cert.as_path(),
            t.key.as_path(),
        )])?),
        None => None,
    };
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
    if !local.ip().is_loopback() && acceptor.is_none() && !config.admin_insecure {
        return Err(ProxyError::config(
            "--admin",
            format!(
                "{local} is not a loopback address: the admin API can repoint production, so off loopback it needs TLS (--admin-tls-cert and --admin-tls-key) or an explicit --admin-insecure"
            ),
        ));
    }
    Ok(Bound {
        listener,
        acceptor,
        local,
    })
}

/// Serves the admin API on `bound` until `stop` turns true; the address bound.
pub fn serve(
    bound: Bound,
    token: String,
    state: Arc<State>,
    stop: watch::Receiver<bool>,
) -> SocketAddr {
    let Bound {
        listener,
        acceptor,
        local,
    } = bound;
    let config = state.routing().config.clone();
    let admin = Admin {
        state,
        token: token.trim().into(),
        allowed: Arc::new(Allowed::new(&config)),
    };
    let app = Router::new()
        .route("/config", get(get_config).put(put_config))
        .route("/changes", get(get_changes))
        .route("/stats", get(get_stats))
        .route("/metrics", get(get_metrics))
        .layer(axum::middleware::from_fn_with_state(admin.clone(), auth))
        .layer(axum::extract::DefaultBodyLimit::max(1 << 20))
        .with_state(admin);
    match acceptor {
        None => {
            let mut stop = stop;
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await;
            });
        }
        Some(acceptor) => {
            tokio::spawn(serve_tls(listener, acceptor, app, stop));
        }
    }
    local
}

/// The admin API over TLS: each connection's handshake within 10 s, then HTTP/1.1 or HTTP/2.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    app: Router,
    mut stop: watch::Receiver<bool>,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = async { let _ = stop.wait_for(|s| *s).await; } => return,
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let handshake =
                tokio::time::timeout(std::time::Duration::from_secs(10), acceptor.accept(stream));
            let Ok(Ok(tls)) = handshake.await else { return };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

//! The control API (axum): the load balancers' state, the moves (`shadow`, `testing`, `live`,
//! `rollback`, `pause`, `resume`, `remove`), their metrics and history, Prometheus `/metrics`,
//! `/healthz` and `/openapi.json`. Every route but `/healthz` needs `Authorization: Bearer
//! <token>`; the token's name is the actor in the history. Errors are JSON: `{"error": …}`, and
//! a refused move (409) adds the current `state` and the `allowed` moves.

use std::sync::Arc;

use axum::extract::{Path, Request, State as AxState};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use shadowtap_control::shift::{seed_eta, Algorithm};

use crate::exposition::{self, Exposition};

use crate::deployment::{ActError, Action, Deployment, TestingSpec};

mod rollouts;
use crate::plane::{ChangeError, Plane};

/// What the handlers share.
#[derive(Clone)]
pub struct Api {
    /// The control plane.
    pub plane: Arc<Plane>,
    /// `(name, token)`.
    pub tokens: Arc<Vec<(String, String)>>,
}

/// The token's name, for the history.
#[derive(Clone)]
struct Actor(String);

impl Api {
    /// The name of the token `given`, when it is one (every token compared, in constant time).
    fn actor(&self, given: &str) -> Option<String> {
        let mut actor = None;
        for (name, token) in self.tokens.iter() {
            if equal(given.as_bytes(), token.as_bytes()) {
                actor = Some(name.clone());
            }
        }
        actor
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({ "error": msg.into() }))).into_response()
}

/// Whether two tokens are equal, in time that depends on neither (`subtle`'s constant-time
/// compare of their SHA-256 digests, so not on their lengths either).
fn equal(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq;
    Sha256::digest(a).ct_eq(&Sha256::digest(b)).into()
}

async fn auth(AxState(api): AxState<Api>, mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some(given) = given else {
        return error(StatusCode::UNAUTHORIZED, "a bearer token is needed");
    };
    match api.actor(given) {
        Some(a) => {
            req.extensions_mut().insert(Actor(a));
            next.run(req).await
        }
        None => error(StatusCode::UNAUTHORIZED, "the bearer token is not valid"),
    }
}

fn change_error(e: ChangeError) -> Response {
    match e {
        ChangeError::NotFound(id) => {
            error(StatusCode::NOT_FOUND, format!("no load balancer {id:?}"))
        }
        ChangeError::Act(ActError::Refused(r)) => (
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "error": r.to_string(),
                "state": r.current,
                "allowed": r.allowed,
            })),
        )
            .into_response(),
        ChangeError::Act(ActError::Invalid(m)) => error(StatusCode::BAD_REQUEST, m),
        ChangeError::Act(ActError::Stale(m)) => error(StatusCode::CONFLICT, m),
        ChangeError::Serve(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// A deployment as the API shows it.
pub fn view(plane: &Plane, d: &Deployment) -> serde_json::Value {
    let spec = d.testing.as_ref();
    let interval_s = spec.map_or(plane.defaults.interval_s, |t| t.interval_s(&plane.defaults));
    let policy = spec.and_then(|t| t.policy(&plane.defaults).ok());
    let eta = match (spec, policy.map(|p| p.algorithm)) {
        (Some(t), Some(Algorithm::Seed)) => {
            seed_eta(d.rollout.traffic_percentage, t.target_traffic_percentage)
                .map(|n| serde_json::json!({ "intervals": n, "seconds": n as f64 * interval_s }))
        }
        _ => None,
    };
    serde_json::json!({
        "id": d.id,
        "state": d.rollout.state.as_str(),
        "stablePool": d.stable_pool,
        "candidatePool": d.candidate_pool,
        "shadowPool": d.shadow_pool,
        "trafficPercentage": d.rollout.traffic_percentage,
        "mirrorPercentage": d.rollout.mirror_percentage,
        "mirrorCriteria": d.mirror_criteria,
        "thresholds": policy.map(|p| serde_json::json!({
            "errorRate": p.thresholds.error_rate,
            "latency": p.thresholds.latency_ms,
            "latencyPercentile": spec.map(|t| t.latency_percentile),
            "criticalErrorRate": p.critical.error_rate,
            "criticalLatency": p.critical.latency_ms,
            "maxErrorRateIncrease": spec.and_then(|t| t.max_error_rate_increase),
            "maxLatencyRatio": spec.and_then(|t| t.max_latency_ratio),
            "failureLimit": p.failure_limit,
            "minRequests": p.min_requests,
            "cpuThreshold": spec.and_then(|t| t.cpu_threshold),
            "memoryThreshold": spec.and_then(|t| t.memory_threshold),
            "judge": spec.and_then(|t| t.gate(p.min_requests)).map(|g| serde_json::json!({
                "alpha": g.alpha,
                "latencyTolerance": g.latency_tolerance,
                "minErrorIncrease": g.min_error_increase,
                "minLatencyIncreaseMs": g.min_latency_increase_ms,
                "minUnits": g.min_units,
            })),
        })),
        "algorithm": spec.map(|t| t.algorithm.clone()),
        "targetTrafficPercentage": spec.map(|t| t.target_traffic_percentage),
        "interval": interval_s,
        "eta": eta,
        "version": d.rollout.version,
        "updatedAt": d.updated_at,
        "lastJudgement": d.last_judgement,
    })
}

async fn list(AxState(api): AxState<Api>) -> Response {
    let mut out = Vec::new();
    for id in api.plane.balancers.keys() {
        match api.plane.get(id).await {
            Ok(d) => out.push(view(&api.plane, &d)),
            Err(e) => return change_error(e),
        }
    }
    Json(out).into_response()
}

async fn one(AxState(api): AxState<Api>, Path(id): Path<String>) -> Response {
    match api.plane.get(&id).await {
        Ok(d) => Json(view(&api.plane, &d)).into_response(),
        Err(e) => change_error(e),
    }
}

async fn history(AxState(api): AxState<Api>, Path(id): Path<String>) -> Response {
    match api.plane.history(&id).await {
        Ok(h) => Json(h).into_response(),
        Err(e) => change_error(e),
    }
}

async fn metrics_of(AxState(api): AxState<Api>, Path(id): Path<String>) -> Response {
    let d = match api.plane.get(&id).await {
        Ok(d) => d,
        Err(e) => return change_error(e),
    };
    let v = view(&api.plane, &d);
    let secs = v["interval"].as_f64().unwrap_or(30.0).ceil().max(1.0) as u64;
    let windows = api.plane.windows(&id, secs).await.unwrap_or_default();
    let pools = crate::plane::pools_json(&windows);
    let resources = api.plane.resources(&id);
    Json(serde_json::json!({
        "window": format!("{secs}s"),
        "pools": pools,
        "resources": resources,
        "thresholds": v["thresholds"],
        "trafficPercentage": d.rollout.traffic_percentage,
        "mirrorPercentage": d.rollout.mirror_percentage,
        "lastJudgement": d.last_judgement,
    }))
    .into_response()
}

/// `POST …/shadow`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ShadowBody {
    shadow_pool: Vec<String>,
    mirror_percentage: f64,
    #[serde(default)]
    mirror_criteria: Option<Vec<String>>,
    #[serde(default)]
    metrics_urls: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    reason: Option<String>,
}

/// The other moves.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReasonBody {
    #[serde(default)]
    reason: Option<String>,
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8], empty_ok: bool) -> Result<T, String> {
    let text = if body.iter().all(u8::is_ascii_whitespace) && empty_ok {
        &b"{}"[..]
    } else {
        body
    };
    serde_json::from_slice(text).map_err(|e| format!("the body: {e}"))
}

async fn act_route(
    api: &Api,
    id: &str,
    actor: &str,
    action: Action,
    reason: Option<String>,
) -> Response {
    match api.plane.change(id, action, actor, reason.as_deref()).await {
        Ok((d, _)) => Json(view(&api.plane, &d)).into_response(),
        Err(e) => change_error(e),
    }
}

async fn shadow(
    AxState(api): AxState<Api>,
    Path(id): Path<String>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    body: axum::body::Bytes,
) -> Response {
    let b: ShadowBody = match parse(&body, false) {
        Ok(b) => b,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let action = Action::Shadow {
        pool: b.shadow_pool,
        mirror_percentage: b.mirror_percentage,
        criteria: b.mirror_criteria.unwrap_or_else(|| vec!["random".into()]),
        metrics_urls: b.metrics_urls.unwrap_or_default(),
    };
    act_route(&api, &id, &actor, action, b.reason).await
}

async fn testing(
    AxState(api): AxState<Api>,
    Path(id): Path<String>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    body: axum::body::Bytes,
) -> Response {
    let spec: TestingSpec = match parse(&body, false) {
        Ok(b) => b,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let reason = spec.reason.clone();
    act_route(&api, &id, &actor, Action::Testing(Box::new(spec)), reason).await
}

async fn simple(
    api: Api,
    id: String,
    actor: String,
    body: axum::body::Bytes,
    action: Action,
) -> Response {
    let b: ReasonBody = match parse(&body, true) {
        Ok(b) => b,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    act_route(&api, &id, &actor, action, b.reason).await
}

macro_rules! simple_route {
    ($name:ident, $action:expr) => {
        async fn $name(
            AxState(api): AxState<Api>,
            Path(id): Path<String>,
            axum::Extension(Actor(actor)): axum::Extension<Actor>,
            body: axum::body::Bytes,
        ) -> Response {
            simple(api, id, actor, body, $action).await
        }
    };
}

simple_route!(live, Action::Live);
simple_route!(rollback, Action::Rollback);
simple_route!(pause, Action::Pause);
simple_route!(resume, Action::Resume);
simple_route!(remove, Action::Remove);

/// `GET …/analysis`: the verdict for Argo Rollouts' `web` metric provider (and anyone who
/// polls): always 200 for a known load balancer, so the template's conditions, not a provider
/// error, decide.
async fn analysis(AxState(api): AxState<Api>, Path(id): Path<String>) -> Response {
    match api.plane.get(&id).await {
        Ok(d) => {
            let mut v = serde_json::to_value(crate::analysis::analyse(&d)).unwrap_or_default();
            v["lastJudgement"] = serde_json::to_value(&d.last_judgement).unwrap_or_default();
            v["rollout"] = d.plan.as_ref().map(|p| p.view(&d)).unwrap_or_default();
            Json(v).into_response()
        }
        Err(e) => change_error(e),
    }
}

/// `GET …/diffs`: the shadow phase's last body comparison: pairs compared, fields tested and
/// those that deviate, per endpoint and field, with an example each.
async fn diffs(AxState(api): AxState<Api>, Path(id): Path<String>) -> Response {
    match api.plane.get(&id).await {
        Ok(d) => {
            let j = d.last_judgement.as_ref();
            let bodies = j.map(|j| j.metrics["bodies"].clone()).unwrap_or_default();
            Json(serde_json::json!({
                "loadbalancer": d.id,
                "state": d.rollout.state.as_str(),
                "at": j.filter(|_| !bodies.is_null()).map(|j| j.at.clone()),
                "bodies": bodies,
            }))
            .into_response()
        }
        Err(e) => change_error(e),
    }
}

/// What Flagger's webhook runner POSTs (`CanaryWebhookPayload`); other fields are ignored, as
/// Flagger adds some over its versions.
#[derive(Deserialize)]
struct FlaggerPayload {
    name: String,
    namespace: String,
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    metadata: std::collections::BTreeMap<String, String>,
}

/// `POST …/flagger/{hook}`: a Flagger webhook, answered 200 or 412 from the verdict
/// ([`crate::analysis::flagger_allows`]). Flagger cannot send headers, so besides the bearer
/// token its payload's `metadata.token` is accepted.
async fn flagger_hook(
    AxState(api): AxState<Api>,
    Path((id, hook)): Path<(String, String)>,
    headers: http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let payload: Result<FlaggerPayload, String> = parse(&body, false);
    let bearer = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let given = bearer.or_else(|| {
        payload
            .as_ref()
            .ok()
            .and_then(|p| p.metadata.get("token"))
            .map(String::as_str)
    });
    let Some(given) = given else {
        return error(
            StatusCode::UNAUTHORIZED,
            "a token is needed: the bearer header, or metadata.token in the webhook",
        );
    };
    if api.actor(given).is_none() {
        return error(StatusCode::UNAUTHORIZED, "the token is not valid");
    }
    let payload = match payload {
        Ok(p) => p,
        Err(m) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("{m} (Flagger sends name, namespace, phase, metadata)"),
            )
        }
    };
    let d = match api.plane.get(&id).await {
        Ok(d) => d,
        Err(e) => return change_error(e),
    };
    let a = crate::analysis::analyse(&d);
    let Some(allowed) = crate::analysis::flagger_allows(&hook, a.verdict) else {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "no Flagger hook {hook:?}: {}",
                crate::analysis::FLAGGER_HOOKS.join(", ")
            ),
        );
    };
    let code = if allowed {
        StatusCode::OK
    } else {
        StatusCode::PRECONDITION_FAILED
    };
    let answer = serde_json::json!({
        "hook": hook,
        "canary": format!("{}.{}", payload.name, payload.namespace),
        "phase": payload.phase,
        "allowed": allowed,
        "verdict": a.verdict,
        "reason": a.reason,
        "state": a.state,
    });
    (code, Json(answer)).into_response()
}

const STATES: [&str; 8] = [
    "stable", "shadow", "testing", "paused", "live", "degraded", "removing", "removed",
];

async fn prometheus(AxState(api): AxState<Api>) -> Response {
    let mut e = Exposition::default();
    for id in api.plane.balancers.keys() {
        let lb = [("lb", id.as_str())];
        let Ok(d) = api.plane.get(id).await else {
            continue;
        };
        for s in STATES {
            e.set(
                "shadowtap_lb_state",
                "1 for the load balancer's current state",
                &[("lb", id), ("state", s)],
                f64::from(u8::from(d.rollout.state.as_str() == s)),
            );
        }
        e.set(
            "shadowtap_lb_traffic_percentage",
            "Share of real traffic on the new version, 0-100",
            &lb,
            d.rollout.traffic_percentage,
        );
        e.set(
            "shadowtap_lb_mirror_percentage",
            "Share of traffic mirrored to the new version, 0-100",
            &lb,
            d.rollout.mirror_percentage,
        );
        e.set(
            "shadowtap_lb_version",
            "The deployment's version (bumped by every change)",
            &lb,
            d.rollout.version as f64,
        );
        // Named and coded as Flagger's `flagger_canary_weight` and `flagger_canary_status`,
        // so dashboards and alert rules written for it carry over.
        e.set(
            "shadowtap_canary_weight",
            "Share of real traffic on the new version, 0-100 (as flagger_canary_weight)",
            &lb,
            d.rollout.traffic_percentage,
        );
        if let Some(b) = d
            .last_judgement
            .as_ref()
            .map(|j| &j.metrics["bodies"])
            .filter(|b| b.is_object())
        {
            e.set(
                "shadowtap_shadow_compared_pairs",
                "Mirrored pairs whose answers were compared on the last shadow window",
                &lb,
                b["compared"].as_f64().unwrap_or(0.0),
            );
            e.set(
                "shadowtap_shadow_deviating_fields",
                "Fields (per endpoint) whose answers deviated on the last shadow window",
                &lb,
                b["deviations"].as_array().map_or(0, Vec::len) as f64,
            );
        }
        let a = crate::analysis::analyse(&d);
        e.set(
            "shadowtap_canary_status",
            "0 running, 1 promoted, 2 failed (rolled back or degraded), as flagger_canary_status",
            &lb,
            f64::from(crate::analysis::canary_status(&a)),
        );
        e.set(
            "shadowtap_lb_local_rollback",
            "1 while the load balancer's proxy runs a rollback the store does not have yet",
            &lb,
            f64::from(u8::from(api.plane.rolled_back_locally(id))),
        );
        let v = view(&api.plane, &d);
        if let Some(t) = v["thresholds"].as_object() {
            for (k, name) in [
                ("errorRate", "error_rate"),
                ("latency", "latency_ms"),
                ("criticalErrorRate", "critical_error_rate"),
                ("criticalLatency", "critical_latency_ms"),
            ] {
                if let Some(x) = t.get(k).and_then(serde_json::Value::as_f64) {
                    e.set(
                        "shadowtap_lb_threshold",
                        "The rollout's limits (error rates as fractions, latencies in ms)",
                        &[("lb", id), ("limit", name)],
                        x,
                    );
                }
            }
        }
        let secs = v["interval"].as_f64().unwrap_or(30.0).ceil().max(1.0) as u64;
        for (pool, w) in api.plane.windows(id, secs).await.unwrap_or_default() {
            let labels = [("lb", id.as_str()), ("pool", pool)];
            e.set(
                "shadowtap_lb_pool_requests",
                "Requests answered by the pool over the current window",
                &labels,
                w.requests as f64,
            );
            e.set(
                "shadowtap_lb_pool_error_rate",
                "The pool's error rate over the current window (5xx and transport errors)",
                &labels,
                w.error_rate,
            );
            for (q, x) in [("0.5", w.p50_ms), ("0.9", w.p90_ms), ("0.99", w.p99_ms)] {
                if let Some(x) = x {
                    e.set(
                        "shadowtap_lb_pool_latency_ms",
                        "The pool's latency quantiles over the current window, ms",
                        &[("lb", id), ("pool", pool), ("quantile", q)],
                        x,
                    );
                }
            }
        }
        let res = api.plane.resources(id);
        for (pool, u) in res.as_object().into_iter().flatten() {
            let labels = [("lb", id.as_str()), ("pool", pool)];
            if let Some(c) = u["cpuCores"].as_f64() {
                e.set(
                    "shadowtap_lb_pool_cpu_cores",
                    "Cores busy on the pool's busiest member",
                    &labels,
                    c,
                );
            }
            if let Some(m) = u["memoryBytes"].as_f64() {
                e.set(
                    "shadowtap_lb_pool_memory_bytes",
                    "Memory in use on the pool's busiest member, bytes",
                    &labels,
                    m,
                );
            }
        }
    }
    if let Ok(n) = api.plane.store.call(|s| s.undelivered()).await {
        e.set(
            "shadowtap_alerts_undelivered",
            "Alerts not delivered yet (dead letters excepted)",
            &[],
            n as f64,
        );
    }
    if let Ok(n) = api.plane.store.call(|s| s.dead_letters()).await {
        e.set(
            "shadowtap_alerts_dead_letters",
            "Alerts no longer retried (a sink this instance lacks, or about an hour of failures)",
            &[],
            n as f64,
        );
    }
    let health = api.plane.store.health();
    e.set(
        "shadowtap_store_up",
        "1 when the last call on the store succeeded",
        &[],
        f64::from(u8::from(health.failing_since.is_none())),
    );
    e.set(
        "shadowtap_store_failing_seconds",
        "How long every call on the store has failed (0: it answers)",
        &[],
        health
            .failing_since
            .map_or(0.0, |t| (crate::plane::now() - t).max(0.0)),
    );
    (
        [(http::header::CONTENT_TYPE, exposition::CONTENT_TYPE)],
        e.encode(),
    )
        .into_response()
}

/// `{"ok", "monitor", "store", "localRollbacks"}`: the store's health (`ok`, `degraded`, or `failed`
/// for longer than a lease: 503), whether this instance runs the monitor, and how many load
/// balancers run a rollback not yet stored (no token; no names or addresses).
async fn healthz(AxState(api): AxState<Api>) -> Response {
    let health = api.plane.store.health();
    let lease = api.plane.lease.as_secs_f64();
    let store = health.status(crate::plane::now(), lease);
    let body = Json(serde_json::json!({
        "ok": store == "ok",
        "monitor": api.plane.is_leader(),
        "store": store,
        "localRollbacks": api.plane.balancers.keys().filter(|id| api.plane.rolled_back_locally(id)).count(),
    }));
    // Failed for longer than a lease: this instance advances nothing, only its own guard acts.
    let code = if store == "failed" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (code, body).into_response()
}

async fn openapi() -> Response {
    (
        [(http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
        .into_response()
}

/// The router.
pub fn router(api: Api) -> Router {
    let guarded = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(prometheus))
        .route("/loadbalancer", get(list))
        .route("/loadbalancer/{id}", get(one))
        .route("/loadbalancer/{id}/metrics", get(metrics_of))
        .route("/loadbalancer/{id}/history", get(history))
        .route("/loadbalancer/{id}/analysis", get(analysis))
        .route("/loadbalancer/{id}/diffs", get(diffs))
        .route("/loadbalancer/{id}/shadow", post(shadow))
        .route("/loadbalancer/{id}/testing", post(testing))
        .route("/loadbalancer/{id}/live", post(live))
        .route("/loadbalancer/{id}/rollback", post(rollback))
        .route("/loadbalancer/{id}/pause", post(pause))
        .route("/loadbalancer/{id}/resume", post(resume))
        .route("/loadbalancer/{id}/remove", post(remove))
        .route(
            "/loadbalancer/{id}/rollout",
            axum::routing::put(rollouts::apply).get(rollouts::get),
        )
        .route("/loadbalancer/{id}/promote", post(rollouts::promote))
        .route("/loadbalancer/{id}/retry", post(rollouts::retry))
        .route("/loadbalancer/{id}/thresholds", post(rollouts::thresholds))
        .route_layer(axum::middleware::from_fn_with_state(api.clone(), auth));
    // Flagger cannot send headers: its webhooks may carry the token in `metadata.token`.
    let flagger = Router::new().route("/loadbalancer/{id}/flagger/{hook}", post(flagger_hook));
    Router::new()
        .route("/healthz", get(healthz))
        .merge(flagger)
        .merge(guarded)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such route; see /openapi.json") })
        .with_state(api)
}

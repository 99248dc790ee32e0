//! The routes of declarative rollouts and of changes within a rollout: `PUT …/rollout`
//! (apply), `GET …/rollout`, `POST …/promote` (the current step, or all traffic without a
//! plan), `POST …/retry` (an aborted plan from its first step), `POST …/thresholds` (a new
//! policy for the rollout under way).

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use shadowtap_control::machine::State;

use super::{change_error, error, parse, Actor, Api, ReasonBody};
use crate::deployment::{Action, TestingSpec};
use crate::rollout::{Plan, RolloutSpec};

/// After a change to a plan: its first move now when this instance runs the monitor (else
/// the leader's next tick does it).
async fn walk(api: &Api, id: &str) {
    if api.plane.is_leader() {
        if let Err(e) = crate::monitor::walk_plan(&api.plane, id).await {
            tracing::debug!(id, "rollout: {e}");
        }
    }
}

/// Stores a plan change, takes its first move, and answers with the load balancer and its plan.
async fn store_plan(
    api: &Api,
    id: &str,
    action: Action,
    actor: &str,
    why: &str,
    extra: serde_json::Value,
) -> Response {
    if let Err(e) = api.plane.change(id, action, actor, Some(why)).await {
        return change_error(e);
    }
    walk(api, id).await;
    match api.plane.get(id).await {
        Ok(d) => plan_answer(api, &d, extra),
        Err(e) => change_error(e),
    }
}

fn plan_answer(api: &Api, d: &crate::deployment::Deployment, extra: serde_json::Value) -> Response {
    let mut v = super::view(&api.plane, d);
    v["rollout"] = d.plan.as_ref().map(|p| p.view(d)).unwrap_or_default();
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    Json(v).into_response()
}

/// `PUT …/rollout`: the same spec again is a no-op; the same version with other steps or
/// thresholds updates the plan at its current step; another version while one runs is a 409.
pub(super) async fn apply(
    AxState(api): AxState<Api>,
    Path(id): Path<String>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    body: axum::body::Bytes,
) -> Response {
    let spec: RolloutSpec = match parse(&body, false) {
        Ok(s) => s,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    if spec.loadbalancer != id {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "loadbalancer {:?} in the spec, {id:?} in the path",
                spec.loadbalancer
            ),
        );
    }
    if let Err(m) = spec.check() {
        return error(StatusCode::BAD_REQUEST, m);
    }
    let d = match api.plane.get(&id).await {
        Ok(d) => d,
        Err(e) => return change_error(e),
    };
    // A plan whose rollout was rolled back is over, whether or not the monitor has marked it.
    let rolled_back = d.completion == Some(crate::deployment::Completion::RolledBack)
        && matches!(d.rollout.state, State::Removing | State::Removed);
    let running = d
        .plan
        .as_ref()
        .filter(|p| p.ended.is_none() && !rolled_back);
    let plan = match running {
        Some(p) if p.spec == spec => {
            return plan_answer(&api, &d, serde_json::json!({"unchanged": true}));
        }
        Some(p) if p.spec.version == spec.version && p.spec.pool == spec.pool => {
            let mut p = p.clone();
            p.spec = spec;
            p.step = p.step.min(p.spec.steps.len());
            p
        }
        Some(p) => {
            return (
                StatusCode::CONFLICT,
                Json(serde_json::json!({
                    "error": format!(
                        "version {:?} is being rolled out: a new version mid-rollout is refused; `ctl apply --replace` rolls the running one back first",
                        p.spec.version
                    ),
                    "state": d.rollout.state.as_str(),
                    "allowed": ["rollback", "apply once removed"],
                })),
            )
                .into_response();
        }
        None if d.rollout.state == State::Removing => {
            return (
                StatusCode::CONFLICT,
                Json(serde_json::json!({
                    "error": "the last version is being removed: apply once removed",
                    "state": "removing",
                    "allowed": ["apply once removed"],
                })),
            )
                .into_response();
        }
        None if !matches!(d.rollout.state, State::Stable | State::Removed) => {
            return (
                StatusCode::CONFLICT,
                Json(serde_json::json!({
                    "error": format!(
                        "a rollout started by hand is {}: roll it back or remove it first",
                        d.rollout.state.as_str()
                    ),
                    "state": d.rollout.state.as_str(),
                    "allowed": ["rollback", "remove"],
                })),
            )
                .into_response();
        }
        None => Plan::new(spec, crate::plane::now(), d.progress.looks),
    };
    let why = format!(
        "rollout {} of version {}",
        plan.view(&d)["name"],
        plan.spec.version
    );
    let action = Action::Plan {
        plan: Some(Box::new(plan)),
        event: "apply",
    };
    store_plan(
        &api,
        &id,
        action,
        &actor,
        &why,
        serde_json::json!({"unchanged": false}),
    )
    .await
}

/// `GET …/rollout`.
pub(super) async fn get(AxState(api): AxState<Api>, Path(id): Path<String>) -> Response {
    match api.plane.get(&id).await {
        Ok(d) => match &d.plan {
            Some(p) => Json(p.view(&d)).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                format!("no rollout applied to {id:?}"),
            ),
        },
        Err(e) => change_error(e),
    }
}

/// `POST …/promote`: with a plan, its current step is done (a pause, a shadow phase); without
/// one, all traffic to the new version (`live`).
pub(super) async fn promote(
    AxState(api): AxState<Api>,
    Path(id): Path<String>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    body: axum::body::Bytes,
) -> Response {
    let b: ReasonBody = match parse(&body, true) {
        Ok(b) => b,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let d = match api.plane.get(&id).await {
        Ok(d) => d,
        Err(e) => return change_error(e),
    };
    let Some(mut plan) = d.plan.clone().filter(|p| p.ended.is_none()) else {
        return super::act_route(&api, &id, &actor, Action::Live, b.reason).await;
    };
    plan.promoted_step = Some(plan.step);
    let why = b.reason.unwrap_or_else(|| {
        format!(
            "promote: step {} ({})",
            plan.step + 1,
            plan.spec
                .steps
                .get(plan.step)
                .map_or_else(String::new, crate::rollout::Step::name)
        )
    });
    let action = Action::Plan {
        plan: Some(Box::new(plan)),
        event: "promote-step",
    };
    store_plan(&api, &id, action, &actor, &why, serde_json::json!({})).await
}

/// `POST …/retry`: an aborted plan again from its first step, once the old version is out.
pub(super) async fn retry(
    AxState(api): AxState<Api>,
    Path(id): Path<String>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    body: axum::body::Bytes,
) -> Response {
    let b: ReasonBody = match parse(&body, true) {
        Ok(b) => b,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let d = match api.plane.get(&id).await {
        Ok(d) => d,
        Err(e) => return change_error(e),
    };
    let Some(old) = d
        .plan
        .clone()
        .filter(|p| p.ended.as_deref() == Some("aborted"))
    else {
        return error(StatusCode::CONFLICT, "no aborted rollout to retry");
    };
    if !matches!(d.rollout.state, State::Stable | State::Removed) {
        return error(
            StatusCode::CONFLICT,
            format!("{}: retry once removed", d.rollout.state.as_str()),
        );
    }
    let plan = Plan::new(old.spec, crate::plane::now(), d.progress.looks);
    let why = b
        .reason
        .unwrap_or_else(|| "retry from the first step".into());
    let action = Action::Plan {
        plan: Some(Box::new(plan)),
        event: "apply",
    };
    store_plan(&api, &id, action, &actor, &why, serde_json::json!({})).await
}

/// `POST …/thresholds`: the testing fields given replace the running policy's (thresholds,
/// limits, the target, the algorithm); the state, the weight and the counters stay.
pub(super) async fn thresholds(
    AxState(api): AxState<Api>,
    Path(id): Path<String>,
    axum::Extension(Actor(actor)): axum::Extension<Actor>,
    body: axum::body::Bytes,
) -> Response {
    let changes: serde_json::Map<String, serde_json::Value> = match parse(&body, false) {
        Ok(m) => m,
        Err(m) => return error(StatusCode::BAD_REQUEST, m),
    };
    let d = match api.plane.get(&id).await {
        Ok(d) => d,
        Err(e) => return change_error(e),
    };
    let Some(current) = &d.testing else {
        return error(
            StatusCode::CONFLICT,
            format!("{}: no testing policy to change", d.rollout.state.as_str()),
        );
    };
    let mut merged = match serde_json::to_value(current) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the policy does not serialise",
            )
        }
    };
    let reason = changes
        .get("reason")
        .and_then(|r| r.as_str())
        .map(str::to_owned);
    merged.extend(changes);
    let spec: TestingSpec = match serde_json::from_value(serde_json::Value::Object(merged)) {
        Ok(s) => s,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("the body: {e}")),
    };
    super::act_route(&api, &id, &actor, Action::Update(Box::new(spec)), reason).await
}

//! The background monitor: every interval, for each load balancer, it reads its proxy's windows
//! and turns them into a change through [`Plane::change`], as the actor `monitor`:
//! - **shadow**: the shadow pool against production: a shadow failing critically (error rate
//!   at least `SHADOW_CRITICAL` on the window) stops mirroring (a rollback, with the numbers as
//!   its reason); the paired gate ([`shadowtap_control::gate::paired`], on the mirrored pairs:
//!   the same requests answered by both) finding it significantly worse raises a deviation
//!   alert on the first such window;
//! - **testing** (and paused, which only rolls back): the candidate's window against the
//!   policy's thresholds (tightened by the relative ones on the stable pool's window), through
//!   the pure [`shadowtap_control::shift::tick`]: shift, hold (never on no data), roll back, or
//!   promote at the target; a shift or a promotion must also pass the unpaired gate against
//!   the stable pool on the same window ([`shadowtap_control::gate::unpaired`], unless the
//!   policy says `"judge": false`): a significant regression is a breach;
//! - **live**: after the drain, the old stable pool is removed; before that, a critical breach
//!   rolls back and a breach degrades (half the traffic back to the old pool); **degraded**
//!   recovers on a good window and rolls back on a critical one or after `failureLimit`;
//! - **removing**: removed once the drain has passed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use shadowtap_control::gate::{self, Gate, GateConfig};
use shadowtap_control::machine::State;
use shadowtap_control::shift::{self, tick, Decision, Progress, Window};
use shadowtap_proxy::stats::Window as ProxyWindow;
use tokio::sync::watch;

use crate::deployment::{effective_thresholds, Action, Deployment};
use crate::plane::{fresh_seconds, now, ChangeError, Plane};

/// A shadow with at least this error rate (and enough copies) stops being mirrored to.
pub const SHADOW_CRITICAL: f64 = 0.5;

/// The share of mirrored pairs a field may differ in by chance when production's own repeats
/// say nothing about it (see `crate::bodies`).
pub const BODY_TOLERANCE: f64 = 0.01;

/// Mirrored pairs whose answers are compared per window, at most (a sample spread over it).
pub const BODY_PAIRS: usize = 2_000;

/// The monitor's actor name in the history.
pub use crate::plane::MONITOR as ACTOR;

fn window(w: &ProxyWindow, percentile: u8) -> Window {
    let latency = match percentile {
        50 => w.p50_ms,
        90 => w.p90_ms,
        _ => w.p99_ms,
    };
    Window {
        error_rate: w.error_rate,
        latency_ms: latency.unwrap_or(0.0),
        request_count: w.requests,
    }
}

fn numbers(
    windows: &BTreeMap<&'static str, ProxyWindow>,
    d: &Deployment,
    extra: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "pools": crate::plane::pools_json(windows),
        "trafficPercentage": d.rollout.traffic_percentage,
        "mirrorPercentage": d.rollout.mirror_percentage,
        "limits": extra,
    })
}

/// The candidate's resource use over the policy's limits, when it is.
fn resource_breach(
    spec: &crate::deployment::TestingSpec,
    usage: Option<crate::resources::Usage>,
) -> Option<String> {
    let u = usage?;
    if let (Some(limit), Some(v)) = (spec.cpu_threshold, u.cpu_cores) {
        if v > limit {
            return Some(format!(
                "the candidate pool uses {v:.2} CPU cores (cpuThreshold {limit})"
            ));
        }
    }
    if let (Some(limit), Some(v)) = (spec.memory_threshold, u.memory_bytes) {
        if v > limit {
            return Some(format!(
                "the candidate pool uses {v:.0} bytes of memory (memoryThreshold {limit})"
            ));
        }
    }
    None
}

/// Rolls `id` back as the monitor, `what` and the window's numbers as the reason.
async fn roll_back(plane: &Plane, id: &str, what: &str, w: &Window) -> Result<(), ChangeError> {
    let why = format!(
        "{what}: error rate {:.4}, latency {:.1} ms, {} requests",
        w.error_rate, w.latency_ms, w.request_count
    );
    plane
        .change_monitor(id, Action::Rollback, Some(&why))
        .await
        .map(|_| ())
}

/// Live or degraded with too few requests to judge by rate: only a critical breach shown by
/// the exact test on this window's requests acts (it rolls back); anything else waits.
async fn small_window(
    plane: &Plane,
    id: &str,
    policy: &shift::Policy,
    cand: &Window,
) -> Result<(), ChangeError> {
    match shift::small_sample(policy, cand.errors(), cand.request_count) {
        shift::SmallSample::Critical(p) => {
            let what = format!(
                "critical breach while live (exact test: p = {p:.1e} at the critical error rate {})",
                policy.critical.error_rate
            );
            roll_back(plane, id, &what, cand).await
        }
        _ => Ok(()),
    }
}

/// The longest the statistical gate looks back while windows are too small to judge (the
/// proxies keep five minutes of figures).
const GATE_MAX_SECONDS: u64 = 290;

/// Judges load balancer `id` once.
pub async fn judge(plane: &Plane, id: &str) -> Result<(), ChangeError> {
    let d = plane.get(id).await?;
    let defaults = plane.defaults;
    let interval_s = d
        .testing
        .as_ref()
        .map_or(defaults.interval_s, |t| t.interval_s(&defaults));
    // A window is the interval's last whole seconds, and never a second that began before
    // the deployment entered its state: what happened under the old state or weight is not
    // this state's evidence.
    let fresh = fresh_seconds(now(), d.entered_at);
    let secs = (interval_s.ceil().max(1.0) as u64).min(fresh.max(1));
    let Some(windows) = plane.windows(id, secs).await else {
        return Ok(());
    };
    let empty = ProxyWindow::default();
    let get = |k: &str| windows.get(k).unwrap_or(&empty);
    let since = now() - d.entered_at;
    let drained = d.rollout.state == State::Live && since >= plane.live_watch_s(&d);
    let judging = !(d.rollout.state == State::Removing || drained);
    if judging && fresh == 0 {
        return Ok(());
    }
    let action = match d.rollout.state {
        State::Testing | State::Paused | State::Degraded | State::Live => {
            let Some(spec) = d.testing.clone() else {
                return Ok(());
            };
            let mut policy = spec
                .policy(&defaults)
                .map_err(crate::deployment::ActError::Invalid)?;
            let stable = window(get("stable"), spec.latency_percentile);
            let cand = window(get("candidate"), spec.latency_percentile);
            policy.thresholds = effective_thresholds(&spec, &policy, &stable);
            // With the gate on, a window it cannot judge is a window with too little data:
            // never advance on it.
            if let Some(g) = spec.gate(policy.min_requests) {
                policy.min_requests = g.min_units;
            }
            let limits = serde_json::json!({
                "errorRate": policy.thresholds.error_rate,
                "latency": policy.thresholds.latency_ms,
                "latencyPercentile": spec.latency_percentile,
                "criticalErrorRate": policy.critical.error_rate,
                "criticalLatency": policy.critical.latency_ms,
                "minRequests": policy.min_requests,
            });
            let metrics = numbers(&windows, &d, limits);
            match d.rollout.state {
                State::Testing | State::Paused => {
                    let (decision, mut progress) =
                        tick(&policy, d.rollout.traffic_percentage, d.progress, &cand);
                    let mut metrics = metrics;
                    let judged = matches!(decision, Decision::Shift { .. } | Decision::Promote);
                    let (decision, progress) = match (spec.gate(policy.min_requests), judged) {
                        (Some(config), true) => {
                            // Windows the gate found too small add up (since the state began,
                            // within the proxies' five minutes): at 90% on the new version
                            // the stable pool's tenth needs several windows to say anything,
                            // and one window at a time it never would.
                            let gate_secs = (secs * (1 + u64::from(d.progress.silent)))
                                .min(fresh.max(1))
                                .min(GATE_MAX_SECONDS);
                            let (c, s) = plane.samples(id, gate_secs).await.unwrap_or_default();
                            let g = gate::unpaired(&c, &s, &config, d.progress.looks + 1);
                            if !matches!(g, Gate::NotEnough { .. }) {
                                progress.looks += 1;
                            }
                            metrics["gate"] = serde_json::to_value(&g).unwrap_or_default();
                            gate::fold(&policy, d.progress, decision, progress, &g)
                        }
                        _ => (decision, progress),
                    };
                    // The candidate pool's resources against their limits: a breach like the
                    // others.
                    let usage = plane.pool_usage(id, "candidate");
                    metrics["resources"] = serde_json::to_value(usage).unwrap_or_default();
                    let over = resource_breach(&spec, usage);
                    let (decision, progress) = match over {
                        Some(why) => {
                            gate::fold(&policy, d.progress, decision, progress, &Gate::Fail { why })
                        }
                        None => (decision, progress),
                    };
                    // An operator asked for live: up a step whatever the judgement, unless it
                    // says roll back.
                    let decision = match decision {
                        Decision::Rollback { .. } => decision,
                        _ if d.progress.promote => Decision::Promote,
                        other => other,
                    };
                    let decision = shift::cap_step(
                        decision,
                        d.rollout.traffic_percentage,
                        spec.max_step_percentage,
                    );
                    if d.rollout.state == State::Paused
                        && matches!(decision, Decision::Shift { .. } | Decision::Promote)
                    {
                        return Ok(());
                    }
                    // A rollout's traffic step: held at its weight (judged) until the next.
                    let decision = match decision {
                        Decision::Promote if spec.holds_at_target() && !d.progress.promote => {
                            Decision::Hold {
                                why: format!(
                                    "at the step's weight ({:.2}%): every window passed",
                                    d.rollout.traffic_percentage
                                ),
                                alert: false,
                            }
                        }
                        other => other,
                    };
                    // The stop before live: at the target, wait for an operator's `live`.
                    if matches!(decision, Decision::Promote)
                        && spec.manual_promotion()
                        && !d.progress.promote
                    {
                        let why = format!(
                            "the target ({:.2}%) is reached and every window passed: waiting for `live` (promotion = manual)",
                            d.rollout.traffic_percentage
                        );
                        return plane
                            .change_monitor(id, Action::Pause, Some(&why))
                            .await
                            .map(|_| ());
                    }
                    Action::Judged {
                        decision,
                        progress,
                        metrics,
                    }
                }
                State::Live if since >= plane.live_watch_s(&d) => {
                    let r = "the old stable pool is drained after the promotion";
                    return plane
                        .change_monitor(id, Action::Remove, Some(r))
                        .await
                        .map(|_| ());
                }
                State::Live => {
                    if cand.request_count < policy.min_requests {
                        return small_window(plane, id, &policy, &cand).await;
                    }
                    if policy.critical.breached_by(&cand) {
                        return roll_back(plane, id, "critical breach while live", &cand).await;
                    }
                    if policy.thresholds.breached_by(&cand) {
                        Action::Degrade { to: 50.0, metrics }
                    } else {
                        return Ok(());
                    }
                }
                _ => {
                    // Degraded.
                    if cand.request_count < policy.min_requests {
                        return small_window(plane, id, &policy, &cand).await;
                    }
                    let breaches = d.progress.breaches + 1;
                    if policy.critical.breached_by(&cand)
                        || (policy.thresholds.breached_by(&cand)
                            && breaches >= policy.failure_limit.max(1))
                    {
                        return roll_back(plane, id, "degraded and still breaching", &cand).await;
                    }
                    if policy.thresholds.breached_by(&cand) {
                        Action::Note {
                            decision: "hold".into(),
                            why: format!("degraded: breach {breaches}"),
                            alert: None,
                            progress: Progress {
                                breaches,
                                ..d.progress
                            },
                            metrics,
                        }
                    } else {
                        // Back up under maxStepPercentage, as a promotion steps.
                        let to = spec
                            .max_step_percentage
                            .map_or(100.0, |m| (d.rollout.traffic_percentage + m).min(100.0));
                        Action::Recover { to, metrics }
                    }
                }
            }
        }
        State::Shadow => {
            let prod = get("stable");
            let Some(sh) = windows.get("shadow") else {
                return Ok(());
            };
            let metrics = numbers(
                &windows,
                &d,
                serde_json::json!({"critical": SHADOW_CRITICAL}),
            );
            if sh.requests < defaults.min_requests {
                return Ok(());
            }
            if sh.error_rate >= SHADOW_CRITICAL {
                let why = format!(
                    "the shadow fails: error rate {:.4} on {} copies (production {:.4}); mirroring stopped",
                    sh.error_rate, sh.requests, prod.error_rate
                );
                return plane
                    .change_monitor(id, Action::Rollback, Some(&why))
                    .await
                    .map(|_| ());
            }
            // The same requests answered by both: the paired gate.
            let config = GateConfig {
                min_units: defaults.min_requests.max(GateConfig::default().min_units),
                ..GateConfig::default()
            };
            let g = gate::paired(&plane.pairs(id, secs).await, &config, d.progress.looks + 1);
            // What the shadow answers, field by field, at the same look's level.
            // At most BODY_PAIRS pairs a window (spread over it), compared off the runtime's
            // threads: a busy shadow must not stall the monitor.
            let mut pairs = plane.body_pairs(id, secs);
            if pairs.len() > BODY_PAIRS {
                let stride = pairs.len().div_ceil(BODY_PAIRS);
                pairs = pairs.into_iter().step_by(stride).collect();
            }
            let level = gate::look_alpha(config.alpha, d.progress.looks + 1);
            let bodies = tokio::task::spawn_blocking(move || {
                crate::bodies::judge(&pairs, level, BODY_TOLERANCE)
            })
            .await
            .unwrap_or_default();
            let judged =
                !matches!(g, Gate::NotEnough { .. }) || bodies.compared >= config.min_units;
            let looks = d.progress.looks + u32::from(judged);
            let mut metrics = metrics;
            metrics["gate"] = serde_json::to_value(&g).unwrap_or_default();
            let mut shown = bodies.clone();
            shown.deviations.truncate(20);
            metrics["bodies"] = serde_json::to_value(&shown).unwrap_or_default();
            let g = match (g, bodies.summary()) {
                (Gate::Fail { why }, _) => Gate::Fail { why },
                (_, Some(summary)) if bodies.compared >= config.min_units => Gate::Fail {
                    why: format!("the answers differ: {summary}"),
                },
                (g, _) => g,
            };
            match (g, d.progress.breaches) {
                (Gate::Fail { why }, n) => Action::Note {
                    decision: "deviation".into(),
                    why: format!(
                        "the shadow deviates from production on the mirrored pairs: {why}"
                    ),
                    // Once per run of deviating windows.
                    alert: (n == 0).then(|| "deviation".to_owned()),
                    progress: Progress {
                        breaches: n + 1,
                        looks,
                        ..d.progress
                    },
                    metrics,
                },
                (_, 0) => {
                    if looks == d.progress.looks {
                        return Ok(());
                    }
                    // Only the looks moved: stored so the alpha spent survives a restart.
                    Action::Note {
                        decision: "ok".into(),
                        why: "the shadow agrees with production on the mirrored pairs".into(),
                        alert: None,
                        progress: Progress {
                            looks,
                            ..d.progress
                        },
                        metrics,
                    }
                }
                (_, _) => Action::Note {
                    decision: "ok".into(),
                    why: "the shadow agrees with production again".into(),
                    alert: None,
                    progress: Progress {
                        looks,
                        ..Progress::default()
                    },
                    metrics,
                },
            }
        }
        State::Removing if since >= plane.drain.as_secs_f64() => Action::Removed,
        _ => return Ok(()),
    };
    plane
        .change_monitor_on(id, action, d.rollout.version)
        .await
        .map(|_| ())
}

/// Runs the monitor until `stop`: leadership (the store's lease), following the store, and the
/// judgements while this instance leads.
pub async fn run(plane: Arc<Plane>, mut stop: watch::Receiver<bool>) {
    let mut last: BTreeMap<String, f64> =
        plane.balancers.keys().map(|k| (k.clone(), now())).collect();
    let ttl = plane.lease.as_secs_f64();
    let (mut renewed, mut followed) = (0.0, 0.0);
    // Each load balancer's state, state change time and interval, from the last read.
    let mut known: BTreeMap<String, (State, f64, f64)> = BTreeMap::new();
    let mut leader = plane.lead(ttl).await;
    let mut changes = plane.changes.lock().await.take();
    let mut judging: BTreeMap<String, tokio::task::JoinHandle<()>> = BTreeMap::new();
    let mut pending_last: BTreeMap<String, Arc<std::sync::Mutex<Option<f64>>>> = BTreeMap::new();
    tokio::spawn(guard(plane.clone(), stop.clone()));
    loop {
        let notified = async {
            match changes.as_mut() {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            Some(_) = notified => {
                // Another instance committed a change: apply it now rather than at the poll.
                plane.follow().await;
            }
            _ = stop.changed() => return,
        }
        // Once a second every instance reads the deployments (one read serves both): it
        // applies what another instance changed, and the monitor plans its judgements on them.
        if now() - followed >= 1.0 {
            followed = now();
            let stored = plane.deployments().await;
            plane.follow_from(&stored).await;
            plane.publish().await;
            known = stored
                .into_iter()
                .map(|d| {
                    let interval = d
                        .testing
                        .as_ref()
                        .map_or(plane.defaults.interval_s, |t| t.interval_s(&plane.defaults));
                    (d.id.clone(), (d.rollout.state, d.entered_at, interval))
                })
                .collect();
        }
        if now() - renewed >= ttl / 3.0 {
            renewed = now();
            let was = leader;
            leader = plane.lead(ttl).await;
            if leader && !was {
                // A new leader starts each interval afresh.
                for v in last.values_mut() {
                    *v = now();
                }
            }
        }
        if !leader {
            continue;
        }
        // A judgement that ran (not one that waited for a whole second) restarts the interval.
        pending_last.retain(|id, started| {
            match *started.lock().unwrap_or_else(|p| p.into_inner()) {
                Some(at) => {
                    last.insert(id.clone(), at);
                    false
                }
                None => judging.get(id).is_some_and(|h| !h.is_finished()),
            }
        });
        for (id, &(state, _, interval)) in &known {
            let due = match state {
                // Drains are checked often; judgements once per interval.
                State::Removing => true,
                _ => now() - last[id] >= interval,
            };
            // Each load balancer is judged on a task of its own: a slow scrape or store call
            // on one never delays another; one still running is not started again.
            if !due || judging.get(id).is_some_and(|h| !h.is_finished()) {
                continue;
            }
            let (p, key) = (plane.clone(), id.clone());
            let started = Arc::new(std::sync::Mutex::new(None::<f64>));
            let judged_at = started.clone();
            judging.insert(
                id.clone(),
                tokio::spawn(async move { judge_when_fresh(&p, &key, &judged_at).await }),
            );
            pending_last.insert(id.clone(), started);
        }
    }
}

/// The fail-safe guard ([`Plane::guard`]) of every load balancer once per interval (at most
/// five seconds apart), on every instance, leader or not, and never waiting for the store:
/// a loop of its own, each load balancer on a task of its own. Stores the rollbacks it made
/// once the store answers.
async fn guard(plane: Arc<Plane>, mut stop: watch::Receiver<bool>) {
    let mut guards: BTreeMap<String, (f64, tokio::task::JoinHandle<()>)> = BTreeMap::new();
    let mut storing: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = stop.changed() => return,
        }
        for id in plane.balancers.keys() {
            let interval = plane.known_interval_s(id).min(5.0);
            if let Some((at, h)) = guards.get(id) {
                if now() - at < interval || !h.is_finished() {
                    continue;
                }
            }
            let (p, key) = (plane.clone(), id.clone());
            let task = tokio::spawn(async move { p.guard(&key).await });
            guards.insert(id.clone(), (now(), task));
        }
        if plane
            .balancers
            .keys()
            .any(|id| plane.rolled_back_locally(id))
            && storing.as_ref().is_none_or(|h| h.is_finished())
        {
            let p = plane.clone();
            storing = Some(tokio::spawn(async move { p.store_local_rollbacks().await }));
        }
    }
}

/// Walks `id`'s declarative rollout one move: its current step's change, the next step, or
/// its end ([`crate::rollout::next`]). Nothing without a plan.
pub async fn walk_plan(plane: &Plane, id: &str) -> Result<(), ChangeError> {
    use crate::rollout::{next, Next};
    let d = plane.get(id).await?;
    let Some(p) = d.plan.clone().filter(|p| p.ended.is_none()) else {
        return Ok(());
    };
    let failure_limit = p
        .spec
        .analysis
        .get("failureLimit")
        .and_then(serde_json::Value::as_u64)
        .map_or(plane.defaults.failure_limit, |n| n as u32);
    let name = p
        .spec
        .steps
        .get(p.step)
        .map_or_else(String::new, crate::rollout::Step::name);
    let (action, why) = match next(&d, &p, now(), failure_limit) {
        Next::Wait(_) => return Ok(()),
        Next::Act(action, why) => (action, why),
        Next::Advance(why) => {
            let mut p = p;
            p.step += 1;
            p.step_started = now();
            p.looks_at_step = d.progress.looks;
            p.promoted_step = None;
            let why = format!("step {} ({name}) done: {why}", p.step);
            let action = Action::Plan {
                plan: Some(Box::new(p)),
                event: "step",
            };
            (action, why)
        }
        Next::End(how, why) => {
            let mut p = p;
            p.ended = Some(how.into());
            let why = format!("the rollout {how}: {why}");
            let action = Action::Plan {
                plan: Some(Box::new(p)),
                event: "end",
            };
            (action, why)
        }
    };
    plane
        .change_monitor(id, action, Some(&why))
        .await
        .map(|_| ())
}

/// One judgement of `id` as the monitor: read afresh, wait if no whole second of its state has
/// passed, scrape its members, judge. `started` is set when it judged.
async fn judge_when_fresh(plane: &Arc<Plane>, id: &str, started: &std::sync::Mutex<Option<f64>>) {
    // Judging reads the deployment afresh; the plan may be a second old.
    let Ok(d) = plane.get(id).await else { return };
    let drained = d.rollout.state == State::Live && now() - d.entered_at >= plane.live_watch_s(&d);
    if !matches!(d.rollout.state, State::Removing)
        && !drained
        && fresh_seconds(now(), d.entered_at) == 0
    {
        // No whole second of the new state yet: judge as soon as there is one.
        return;
    }
    if !matches!(d.rollout.state, State::Removing) {
        *started.lock().unwrap_or_else(|p| p.into_inner()) = Some(now());
        plane.scrape(&d).await;
    }
    // A judgement runs as a task of its own: a bug in one never stops the monitor.
    let (p, key) = (plane.clone(), id.to_owned());
    let judged = match tokio::spawn(async move { judge(&p, &key).await }).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shadowtap serve: monitor: {id}: the judgement failed: {e}");
            return;
        }
    };
    // Then the declarative rollout's step, on what the judgement stored.
    let judged = match judged {
        Ok(()) => walk_plan(plane, id).await,
        e => e,
    };
    match judged {
        Ok(()) | Err(ChangeError::Act(crate::deployment::ActError::Stale(_))) => {}
        Err(ChangeError::Act(crate::deployment::ActError::Refused(r))) => {
            // An API call moved the deployment between the read and the change.
            tracing::debug!(id, "monitor: {r}");
        }
        Err(e) => eprintln!("shadowtap serve: monitor: {id}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use crate::plane::fresh_seconds;

    #[test]
    fn a_window_never_reaches_back_before_the_state_began() {
        // Entered at 100.9: second 100 is partly the old state's, 101 is the first whole one.
        assert_eq!(fresh_seconds(101.5, 100.9), 0);
        assert_eq!(fresh_seconds(102.0, 100.9), 1);
        assert_eq!(fresh_seconds(105.3, 100.9), 4);
        // Entered exactly on a second: that second is whole.
        assert_eq!(fresh_seconds(101.0, 100.0), 1);
        // A clock that went back never gives a window.
        assert_eq!(fresh_seconds(90.0, 100.0), 0);
    }
}

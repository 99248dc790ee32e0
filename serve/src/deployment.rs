//! One load balancer's deployment as the store keeps it, and the one pure function every change
//! goes through, API call or monitor decision alike: [`act`] takes the stored [`Deployment`] and
//! an [`Action`] and returns the new deployment, the history rows and the alerts to write in the
//! same transaction, or why it is refused (409) or invalid (400). [`proxy_config`] derives the
//! proxy's configuration from a deployment, so applying it again after a restart gives the same
//! routing.

use serde::{Deserialize, Serialize};
use shadowtap_control::machine::{self, Event, Rollout, State};
use shadowtap_control::shift::{Decision, Policy, Progress, Thresholds, Window};
use shadowtap_proxy::config::{CanaryConfig, Criteria, ShadowConfig};
use shadowtap_proxy::ProxyConfig;

use crate::config::LoadBalancerConfig;

pub use spec::{check_metrics_urls, check_pool, Defaults, TestingSpec};

/// The last window's judgement, shown by `GET /loadbalancer/{id}` and `…/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Judgement {
    /// When.
    pub at: String,
    /// `shift`, `hold`, `rollback`, `promote`, `removed`, `degrade`, `recover`, `alert`.
    pub decision: String,
    /// Why, with the numbers.
    pub why: String,
    /// The measurements.
    pub metrics: serde_json::Value,
}

/// One load balancer's deployment, as stored (one JSON document and its version).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Deployment {
    /// The load balancer.
    pub id: String,
    /// State, weights, version.
    pub rollout: Rollout,
    /// The monitor's counters.
    pub progress: Progress,
    /// The pool users are served by.
    pub stable_pool: Vec<String>,
    /// The new version's pool taking real traffic.
    pub candidate_pool: Vec<String>,
    /// The pool mirrored to.
    pub shadow_pool: Vec<String>,
    /// Which requests are mirrored.
    pub mirror_criteria: Vec<String>,
    /// The testing policy.
    pub testing: Option<TestingSpec>,
    /// The last change (RFC 3339).
    pub updated_at: String,
    /// The last state change, Unix seconds.
    pub entered_at: f64,
    /// The last monitor judgement.
    pub last_judgement: Option<Judgement>,
    /// Member URL → Prometheus endpoint, for members given through the API.
    #[serde(default)]
    pub metrics_urls: std::collections::BTreeMap<String, String>,
    /// How the last rollout ended, or is ending: `promoted` (live, and after the drain the
    /// stable pool) or `rolledBack`; none while one runs or before the first.
    #[serde(default)]
    pub completion: Option<Completion>,
    /// The declarative rollout being walked (`ctl apply`), if any.
    #[serde(default)]
    pub plan: Option<crate::rollout::Plan>,
}

/// How a rollout ended (Argo Rollouts' `completionStatus`, in short).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Completion {
    /// The new version took all traffic.
    Promoted,
    /// The new version was taken out after a rollback.
    RolledBack,
}

impl Deployment {
    /// A load balancer's first deployment: the stable pool only.
    pub fn new(lb: &LoadBalancerConfig, now: f64) -> Deployment {
        Deployment {
            id: lb.id.clone(),
            rollout: Rollout::default(),
            progress: Progress::default(),
            stable_pool: lb.production.clone(),
            candidate_pool: Vec::new(),
            shadow_pool: Vec::new(),
            mirror_criteria: vec!["random".into()],
            testing: None,
            updated_at: rfc3339(now),
            entered_at: now,
            last_judgement: None,
            metrics_urls: Default::default(),
            completion: None,
            plan: None,
        }
    }
}

/// A change asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// `POST …/shadow`.
    Shadow {
        /// The new version's members.
        pool: Vec<String>,
        /// Share mirrored.
        mirror_percentage: f64,
        /// Which requests.
        criteria: Vec<String>,
        /// Member URL → Prometheus endpoint.
        metrics_urls: std::collections::BTreeMap<String, String>,
    },
    /// `POST …/testing`.
    Testing(Box<TestingSpec>),
    /// `POST …/live`.
    Live,
    /// `POST …/rollback` or the monitor.
    Rollback,
    /// `POST …/pause`.
    Pause,
    /// `POST …/resume`.
    Resume,
    /// `POST …/remove`.
    Remove,
    /// The monitor: a drain ended.
    Removed,
    /// The monitor's judgement of a window.
    Judged {
        /// Its decision.
        decision: Decision,
        /// The monitor's counters after it.
        progress: Progress,
        /// The numbers.
        metrics: serde_json::Value,
    },
    /// The monitor: an observation that changes neither state nor weight (the shadow phase's
    /// comparison, a hold): its judgement and counters are stored, an alert sent when `alert`
    /// names its kind.
    Note {
        /// `hold`, `deviation`, `ok`.
        decision: String,
        /// Why, with the numbers.
        why: String,
        /// The alert's kind, when one is sent.
        alert: Option<String>,
        /// The monitor's counters after it.
        progress: Progress,
        /// The numbers.
        metrics: serde_json::Value,
    },
    /// The monitor: a live version breaches (its weight goes to `to`).
    Degrade {
        /// The reduced weight.
        to: f64,
        /// The numbers.
        metrics: serde_json::Value,
    },
    /// A new testing policy for the rollout under way (new thresholds, a new target): its
    /// state, weight and counters stay (`POST …/thresholds`, a rollout's next step).
    Update(Box<TestingSpec>),
    /// Stores a declarative rollout's plan (`apply`: a new one; `step`: the next step;
    /// `end`: over), with a history row naming it.
    Plan {
        /// The plan after the change (none: no plan any more).
        plan: Option<Box<crate::rollout::Plan>>,
        /// `apply`, `step`, `promote-step` or `end`.
        event: &'static str,
    },
    /// The monitor: a degraded version recovered; its weight steps up to `to` (100: live).
    Recover {
        /// The new weight.
        to: f64,
        /// The numbers.
        metrics: serde_json::Value,
    },
}

/// One history row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// `{lb}-{version}`: unique, the alerts' delivery id.
    pub transition_id: String,
    /// The deployment's version after the change.
    pub version: u64,
    /// RFC 3339.
    pub at: String,
    /// State before.
    pub from: String,
    /// State after.
    pub to: String,
    /// The event (`shadow`, `shift`, `rollback`, …).
    pub event: String,
    /// New-version traffic before.
    pub traffic_from: f64,
    /// After.
    pub traffic_percentage: f64,
    /// Mirror share after.
    pub mirror_percentage: f64,
    /// The API token's name or `monitor`.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// The measurements that caused it (monitor changes).
    pub metrics: serde_json::Value,
}

/// An alert to send (written to the outbox with the change).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// Delivery id: the same on every retry; receivers deduplicate on it.
    pub id: String,
    /// The load balancer.
    pub loadbalancer: String,
    /// `rollback`, `degraded`, `breach`, `silent`, `live`, `removed`, `transition`.
    pub kind: String,
    /// One line for people.
    pub text: String,
    /// The history row, when a change.
    pub transition: Option<HistoryEntry>,
}

/// What [`act`] returns.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The deployment to store.
    pub deployment: Deployment,
    /// Its history rows (one per state or weight change; none for a hold).
    pub history: Vec<HistoryEntry>,
    /// Alerts to queue.
    pub alerts: Vec<Alert>,
}

/// Why an action was not taken.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ActError {
    /// Not allowed in the current state (HTTP 409).
    #[error(transparent)]
    Refused(#[from] machine::Refused),
    /// A bad value (HTTP 400).
    #[error("{0}")]
    Invalid(String),
    /// Nothing to do (a monitor decision on a deployment that moved on).
    #[error("stale: {0}")]
    Stale(String),
}

/// Whether a weight change from `from` to `to` (percent) crosses 25, 50 or 75%.
fn crosses_quarter(from: f64, to: f64) -> bool {
    let q = |x: f64| (x / 25.0).floor().clamp(0.0, 4.0) as i64;
    q(from) != q(to)
}

/// Whether a history row (as the API shows it: `event`, `trafficFrom`, `trafficPercentage`)
/// was alerted: every state transition, and a shift only when it crosses 25, 50 or 75%.
pub fn alerted(row: &serde_json::Value) -> bool {
    let f = |k: &str| row[k].as_f64().unwrap_or(0.0);
    row["event"] != "shift" || crosses_quarter(f("trafficFrom"), f("trafficPercentage"))
}

/// A change of neither state nor weight that the history keeps (a new policy, a plan's step):
/// one row, no alert.
fn note_row(
    d: &Deployment,
    mut next: Deployment,
    event: &str,
    actor: &str,
    why: &str,
    now: f64,
) -> Outcome {
    next.rollout.version += 1;
    next.updated_at = rfc3339(now);
    let entry = HistoryEntry {
        transition_id: format!("{}-{}", d.id, next.rollout.version),
        version: next.rollout.version,
        at: next.updated_at.clone(),
        from: d.rollout.state.as_str().into(),
        to: d.rollout.state.as_str().into(),
        event: event.into(),
        traffic_from: d.rollout.traffic_percentage,
        traffic_percentage: d.rollout.traffic_percentage,
        mirror_percentage: d.rollout.mirror_percentage,
        actor: actor.into(),
        reason: why.into(),
        metrics: serde_json::Value::Null,
    };
    Outcome {
        deployment: next,
        history: vec![entry],
        alerts: Vec::new(),
    }
}

/// `2026-12-01T10:15:00.250Z` from Unix seconds.
pub fn rfc3339(now: f64) -> String {
    shadowtap_core::id::rfc3339_millis(now)
}

/// Applies `action` by `actor` to `d` at `now`.
pub fn act(
    d: &Deployment,
    action: &Action,
    actor: &str,
    reason: Option<&str>,
    now: f64,
) -> Result<Outcome, ActError> {
    let mut next = d.clone();
    let mut metrics = serde_json::Value::Null;
    let mut why = reason.unwrap_or("").to_owned();
    let event = match action {
        Action::Shadow {
            pool,
            mirror_percentage,
            criteria,
            metrics_urls,
        } => {
            check_pool("shadowPool", pool).map_err(ActError::Invalid)?;
            check_metrics_urls(metrics_urls).map_err(ActError::Invalid)?;
            next.metrics_urls.extend(metrics_urls.clone());
            if !(0.0..=100.0).contains(mirror_percentage) {
                return Err(ActError::Invalid(format!(
                    "mirrorPercentage {mirror_percentage}: 0 to 100"
                )));
            }
            parse_criteria(criteria, true).map_err(ActError::Invalid)?;
            if d.rollout.state == State::Shadow && d.shadow_pool != *pool {
                return Err(ActError::Refused(machine::Refused {
                    event: "shadow",
                    current: "shadow",
                    allowed: vec!["shadow (same shadowPool)", "testing", "rollback", "remove"],
                }));
            }
            next.shadow_pool = pool.clone();
            next.candidate_pool = pool.clone();
            next.mirror_criteria = criteria.clone();
            Event::Shadow {
                mirror_percentage: *mirror_percentage,
            }
        }
        Action::Testing(spec) => {
            spec.check().map_err(ActError::Invalid)?;
            let pool = match &spec.candidate_pool {
                Some(p) => p.clone(),
                None if !d.shadow_pool.is_empty() && d.rollout.state == State::Shadow => {
                    d.shadow_pool.clone()
                }
                None => {
                    return Err(ActError::Invalid(
                        "candidatePool: needed when testing does not follow a shadow phase".into(),
                    ))
                }
            };
            next.candidate_pool = pool;
            if let Some(m) = &spec.metrics_urls {
                next.metrics_urls.extend(m.clone());
            }
            next.testing = Some((**spec).clone());
            next.progress = Progress::default();
            if why.is_empty() {
                why = spec.reason.clone().unwrap_or_default();
            }
            Event::Testing {
                initial_percentage: spec.initial(),
            }
        }
        Action::Live => {
            // Under maxStepPercentage an operator's `live` steps like the monitor's promotion:
            // the first step now (or, when paused, resuming), the rest at each interval.
            let max_step = d.testing.as_ref().and_then(|t| t.max_step_percentage);
            let current = d.rollout.traffic_percentage;
            match (max_step, d.rollout.state) {
                (Some(m), State::Testing | State::Paused) if 100.0 - current > m => {
                    next.progress.promote = true;
                    if why.is_empty() {
                        why = format!("live asked: stepping to 100% by at most {m}% an interval");
                    }
                    if d.rollout.state == State::Paused {
                        Event::Resume
                    } else {
                        Event::Shift { to: current + m }
                    }
                }
                _ => Event::Live,
            }
        }
        Action::Rollback => Event::Rollback,
        Action::Pause => Event::Pause,
        Action::Resume => Event::Resume,
        Action::Remove => Event::Remove,
        Action::Removed => Event::Removed,
        Action::Degrade { to, metrics: m } => {
            metrics = m.clone();
            Event::Degrade { to: *to }
        }
        Action::Recover { to, metrics: m } => {
            metrics = m.clone();
            Event::Recover { to: *to }
        }
        Action::Update(spec) => {
            if !matches!(
                d.rollout.state,
                State::Testing | State::Paused | State::Live | State::Degraded
            ) {
                return Err(ActError::Refused(machine::Refused {
                    event: "update",
                    current: d.rollout.state.as_str(),
                    allowed: vec!["testing (to start one)"],
                }));
            }
            spec.check().map_err(ActError::Invalid)?;
            if spec
                .candidate_pool
                .as_ref()
                .is_some_and(|p| *p != d.candidate_pool)
            {
                return Err(ActError::Invalid(
                    "candidatePool: a new pool is a new version: roll back or remove first".into(),
                ));
            }
            let mut spec = (**spec).clone();
            spec.candidate_pool = Some(d.candidate_pool.clone());
            next.testing = Some(spec);
            return Ok(note_row(d, next, "update", actor, &why, now));
        }
        Action::Plan { plan, event } => {
            if *event == "apply" {
                if matches!(d.rollout.state, State::Removing) {
                    return Err(ActError::Refused(machine::Refused {
                        event: "apply",
                        current: "removing",
                        allowed: vec!["apply once removed"],
                    }));
                }
                // A new rollout on an idle load balancer: the last one's end is history.
                if matches!(d.rollout.state, State::Stable | State::Removed) {
                    next.completion = None;
                }
            }
            next.plan = plan.as_deref().cloned();
            return Ok(note_row(d, next, event, actor, &why, now));
        }
        Action::Note {
            decision,
            why: text,
            alert,
            progress,
            metrics: m,
        } => {
            next.progress = *progress;
            next.rollout.version += 1;
            next.updated_at = rfc3339(now);
            next.last_judgement = Some(Judgement {
                at: rfc3339(now),
                decision: decision.clone(),
                why: text.clone(),
                metrics: m.clone(),
            });
            let alerts = alert
                .iter()
                .map(|kind| Alert {
                    id: format!("{}-{}", d.id, next.rollout.version),
                    loadbalancer: d.id.clone(),
                    kind: kind.clone(),
                    text: format!("{}: {text}", d.id),
                    transition: None,
                })
                .collect();
            return Ok(Outcome {
                deployment: next,
                history: Vec::new(),
                alerts,
            });
        }
        Action::Judged {
            decision,
            progress,
            metrics: m,
        } => {
            if !matches!(d.rollout.state, State::Testing | State::Paused) {
                return Err(ActError::Stale(format!(
                    "the deployment is {} now",
                    d.rollout.state.as_str()
                )));
            }
            metrics = m.clone();
            next.progress = *progress;
            let (name, text) = match decision {
                Decision::Shift { to } => ("shift", format!("shift to {to:.2}%")),
                Decision::Hold { why, .. } => ("hold", why.clone()),
                Decision::Rollback { why } => ("rollback", why.clone()),
                Decision::Promote => ("promote", "the target is reached".into()),
            };
            next.last_judgement = Some(Judgement {
                at: rfc3339(now),
                decision: name.into(),
                why: text.clone(),
                metrics: metrics.clone(),
            });
            why = text;
            match decision {
                Decision::Shift { to } => Event::Shift { to: *to },
                Decision::Rollback { .. } => Event::Rollback,
                Decision::Promote => Event::Live,
                Decision::Hold { alert, .. } => {
                    // No change of state or weight: the counters and the judgement only.
                    next.rollout.version += 1;
                    next.updated_at = rfc3339(now);
                    let alerts = if *alert {
                        vec![Alert {
                            id: format!("{}-{}", d.id, next.rollout.version),
                            loadbalancer: d.id.clone(),
                            kind: if progress.silent > 0 {
                                "silent".into()
                            } else {
                                "breach".into()
                            },
                            text: format!(
                                "{}: holding at {:.2}%: {why}",
                                d.id, d.rollout.traffic_percentage
                            ),
                            transition: None,
                        }]
                    } else {
                        Vec::new()
                    };
                    return Ok(Outcome {
                        deployment: next,
                        history: Vec::new(),
                        alerts,
                    });
                }
            }
        }
    };
    let (rollout, t) = machine::step(&d.rollout, &event)?;
    next.rollout = rollout;
    next.completion = match (t.from, t.to, t.event.as_str()) {
        (_, _, "rollback") => Some(Completion::RolledBack),
        (_, State::Live, _) => Some(Completion::Promoted),
        // A new rollout.
        (State::Stable | State::Removed, _, _) => None,
        _ => next.completion,
    };
    // A new state starts its counters afresh (a new shadow phase must not inherit breaches);
    // pausing and resuming a shift keep its steps and looks.
    let paused_or_resumed = matches!(
        (t.from, t.to),
        (State::Testing, State::Paused) | (State::Paused, State::Testing)
    );
    if t.from != t.to && !paused_or_resumed {
        next.progress = Progress::default();
    }
    // The end of a drain after a promotion: the new version is the stable pool now.
    if t.to == State::Removed && t.traffic_to >= 100.0 {
        next.stable_pool = std::mem::take(&mut next.candidate_pool);
        next.rollout.traffic_percentage = 0.0;
    }
    if t.to == State::Removed {
        next.candidate_pool.clear();
        next.shadow_pool.clear();
        next.testing = None;
    }
    next.updated_at = rfc3339(now);
    if t.from != t.to {
        next.entered_at = now;
    }
    let entry = HistoryEntry {
        transition_id: format!("{}-{}", d.id, next.rollout.version),
        version: next.rollout.version,
        at: next.updated_at.clone(),
        from: t.from.as_str().into(),
        to: t.to.as_str().into(),
        event: t.event.clone(),
        traffic_from: t.traffic_from,
        traffic_percentage: next.rollout.traffic_percentage,
        mirror_percentage: t.mirror_to,
        actor: actor.into(),
        reason: why.clone(),
        metrics,
    };
    let kind = match (t.event.as_str(), t.to) {
        ("rollback", _) => "rollback",
        ("degrade", _) => "degraded",
        ("recover", _) => "recovered",
        (_, State::Live) => "live",
        (_, State::Removed) => "removed",
        ("shift", _) => "shift",
        _ => "transition",
    };
    let text = format!(
        "{}: {} → {} ({}, new version at {:.2}%){}",
        d.id,
        t.from.as_str(),
        t.to.as_str(),
        t.event,
        next.rollout.traffic_percentage,
        if why.is_empty() {
            String::new()
        } else {
            format!(": {why}")
        }
    );
    // One alert per state transition; a shift within testing only as a progress summary, when
    // it crosses a quarter of the traffic (25, 50, 75%): the seed formula's ~458 steps would
    // otherwise be ~458 messages. Every shift is in the history either way.
    let summary = kind != "shift" || crosses_quarter(t.traffic_from, t.traffic_to);
    let alerts = if summary {
        vec![Alert {
            id: entry.transition_id.clone(),
            loadbalancer: d.id.clone(),
            kind: kind.into(),
            text,
            transition: Some(entry.clone()),
        }]
    } else {
        Vec::new()
    };
    Ok(Outcome {
        deployment: next,
        history: vec![entry],
        alerts,
    })
}

/// Parses `mirrorCriteria` (`random`, `header:Name=value`, `cookie:name=value`, `geo:US`,
/// `useragent:REGEX`, `path:REGEX`) into the proxy's criteria.
pub fn parse_criteria(list: &[String], geo_ok: bool) -> Result<Criteria, String> {
    let mut c = Criteria::default();
    for item in list {
        let item = item.trim();
        if item == "random" {
            continue;
        }
        let Some((kind, value)) = item.split_once(':') else {
            return Err(format!(
                "mirrorCriteria {item:?}: random, header:NAME=VALUE, cookie:NAME=VALUE, geo:CC, useragent:REGEX or path:REGEX"
            ));
        };
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("mirrorCriteria {item:?}: no value"));
        }
        match kind.trim().to_ascii_lowercase().as_str() {
            "header" => c.match_header.push(match value.split_once('=') {
                Some((n, v)) => format!("{}: {}", n.trim(), v.trim()),
                None => value.to_owned(),
            }),
            "cookie" => c.match_cookie.push(value.to_owned()),
            "geo" if geo_ok => c.match_geo.push(value.to_ascii_uppercase()),
            "useragent" => c.match_user_agent = Some(value.to_owned()),
            "path" => c.match_path = Some(value.to_owned()),
            other => return Err(format!("mirrorCriteria {item:?}: unknown kind {other:?}")),
        }
    }
    let spec = c.spec();
    if c.match_geo.is_empty() || geo_ok {
        let mut probe = spec.clone();
        probe.geo.clear();
        shadowtap_core::criteria::MatchCriteria::new(&probe)
            .map_err(|e| format!("mirrorCriteria: {e}"))?;
    }
    Ok(c)
}

/// The name of the canary pool in every load balancer's proxy (and its recordings).
pub const CANDIDATE: &str = "candidate";
/// The name of the shadow pool.
pub const SHADOW: &str = "shadow";

/// The proxy configuration of `d` behind `lb`: production is the stable pool; the canary is
/// always configured (weight 0 when there is no new version, so adding one needs no restart);
/// the shadow pool is mirrored to in the shadow phase, and in testing when it is not the pool
/// taking the real traffic.
pub fn proxy_config(lb: &LoadBalancerConfig, d: &Deployment) -> ProxyConfig {
    let mut c = ProxyConfig::new(lb.listen.clone(), d.stable_pool.clone());
    c.record = lb.record.clone();
    c.allow_targets = lb.allow_targets.clone();
    c.trusted_proxies = lb.trusted_proxies.clone();
    c.hooks = lb.hooks.clone();
    // The shadow phase's gate compares the same requests' answers.
    c.mirror.pair_outcomes = true;
    // …and what they answer, for the body comparison (`crate::bodies`).
    c.mirror.pair_bodies = true;
    let state = d.rollout.state;
    let weight = match state {
        State::Testing | State::Paused | State::Live | State::Degraded | State::Removing => {
            d.rollout.traffic_percentage
        }
        _ => 0.0,
    };
    // No new version (or it is gone): a weight-0 canary over the stable members.
    let candidate = if d.candidate_pool.is_empty() {
        d.stable_pool.clone()
    } else {
        d.candidate_pool.clone()
    };
    c.canary = Some(CanaryConfig {
        name: CANDIDATE.into(),
        urls: candidate,
        weight,
        sticky: lb
            .sticky
            .parse()
            .unwrap_or(shadowtap_proxy::config::KeySource::Client),
        pin_cookie: None,
    });
    let mirroring = d.rollout.mirror_percentage > 0.0
        && !d.shadow_pool.is_empty()
        && match state {
            State::Shadow => true,
            State::Testing | State::Paused => d.shadow_pool != d.candidate_pool,
            _ => false,
        };
    if mirroring {
        let mut criteria = parse_criteria(&d.mirror_criteria, true).unwrap_or_default();
        criteria.geo_file = lb.geo_file.clone();
        c.mirror.percent = d.rollout.mirror_percentage;
        c.mirror.criteria = criteria;
        c.shadows = vec![ShadowConfig {
            name: SHADOW.into(),
            urls: d.shadow_pool.clone(),
            percent: None,
            by: None,
            criteria: None,
            concurrency: 64,
            queue: 256,
        }];
    }
    c
}

/// The limits a window is judged against: the absolute thresholds, tightened by the relative
/// ones on the stable pool's figures of the same window when those are set and measured.
pub fn effective_thresholds(spec: &TestingSpec, policy: &Policy, stable: &Window) -> Thresholds {
    let mut t = policy.thresholds;
    if stable.request_count > 0 {
        if let Some(inc) = spec.max_error_rate_increase {
            t.error_rate = t.error_rate.min(stable.error_rate + inc);
        }
        if let Some(r) = spec.max_latency_ratio {
            if stable.latency_ms > 0.0 {
                t.latency_ms = t.latency_ms.min(stable.latency_ms * r);
            }
        }
    }
    t
}

pub mod rollout;
mod spec;
#[cfg(test)]
mod tests;

//! One load balancer's deployment as the store keeps it, and the one pure function every change
//! goes through, API call or monitor decision alike: [`act`] takes the stored [`Deployment`] and
//! an [`Action`] and returns the new deployment, the history rows and the alerts to write in the
//! same transaction, or why it is refused (409) or invalid (400). [`proxy_config`] derives the
//! proxy's configuration from a deployment, so applying it again after a restart gives the same
//! routing.

use serde::{Deserialize, Serialize};
use shadowtap_control::machine::{self, Event, Rollout, State};
use shadowtap_control::shift::{Algorithm, Decision, Policy, Progress, Thresholds, Window};
use shadowtap_proxy::config::{CanaryConfig, Criteria, ShadowConfig};
use shadowtap_proxy::ProxyConfig;

use crate::config::{parse_duration, LoadBalancerConfig};

/// The testing policy as the API takes it (`POST /loadbalancer/{id}/testing`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestingSpec {
    /// Where the shift stops (percent of real traffic).
    #[serde(default = "hundred")]
    pub target_traffic_percentage: f64,
    /// Error rate over which a window breaches.
    pub error_rate_threshold: f64,
    /// Latency (ms, at `latencyPercentile`) over which a window breaches.
    pub latency_threshold: f64,
    /// 50, 90 or 99 (default).
    #[serde(default = "p99")]
    pub latency_percentile: u8,
    /// `seed`, `linear`, `exponential` or `metric`.
    #[serde(default = "linear")]
    pub algorithm: String,
    /// The step of linear, exponential and metric (percentage points, default 10).
    #[serde(default)]
    pub step_percentage: Option<f64>,
    /// The monitor's interval for this rollout (default: the config's).
    #[serde(default)]
    pub interval: Option<String>,
    /// At most this many points per interval, whatever the algorithm says (default: no cap;
    /// the seed formula caps itself at 10).
    #[serde(default)]
    pub max_step_percentage: Option<f64>,
    /// `auto` (default): promoted once the target is reached; `manual`: paused at the target
    /// until an operator's `live` (`ctl promote`), the stop before live.
    #[serde(default)]
    pub promotion: Option<String>,
    /// The weight testing starts at (default: the first step; 1 for seed).
    #[serde(default)]
    pub initial_percentage: Option<f64>,
    /// Breaching windows in a row that roll back (default: the config's).
    #[serde(default)]
    pub failure_limit: Option<u32>,
    /// Fewer requests on the new version in a window: hold (default: the config's).
    #[serde(default)]
    pub min_requests: Option<u64>,
    /// Silent windows in a row before an alert (default: the config's).
    #[serde(default)]
    pub silent_limit: Option<u32>,
    /// Windows in a row with no request at all on the new version after which it is rolled
    /// back (none: held, alerting every `silentLimit`).
    #[serde(default)]
    pub no_data_limit: Option<u32>,
    /// Error rate that rolls back at once (default: 5 × the threshold, at least 0.1, at most 1).
    #[serde(default)]
    pub critical_error_rate: Option<f64>,
    /// Latency (ms) that rolls back at once (default: 4 × the threshold).
    #[serde(default)]
    pub critical_latency: Option<f64>,
    /// Relative limit: breach when the new version's error rate exceeds the stable pool's on
    /// the same window by more than this.
    #[serde(default)]
    pub max_error_rate_increase: Option<f64>,
    /// Relative limit: breach when the new version's latency exceeds the stable pool's on the
    /// same window times this.
    #[serde(default)]
    pub max_latency_ratio: Option<f64>,
    /// Gate each step with the statistical comparison against the stable pool on the same
    /// window (`shadowtap_control::gate`; default on).
    #[serde(default)]
    pub judge: Option<bool>,
    /// The gate's false-alarm rate over the whole rollout (default 0.05).
    #[serde(default)]
    pub judge_alpha: Option<f64>,
    /// Slower than this fraction is a latency regression for the gate (default 0.1).
    #[serde(default)]
    pub latency_tolerance: Option<f64>,
    /// CPU (cores busy, the candidate pool's busiest member) over which a window breaches.
    #[serde(default)]
    pub cpu_threshold: Option<f64>,
    /// Memory (bytes in use, the busiest member) over which a window breaches.
    #[serde(default)]
    pub memory_threshold: Option<f64>,
    /// Member URL → its Prometheus endpoint, for the members given here.
    #[serde(default)]
    pub metrics_urls: Option<std::collections::BTreeMap<String, String>>,
    /// The pool that takes the real traffic (default: the shadow pool).
    #[serde(default)]
    pub candidate_pool: Option<Vec<String>>,
    /// Why (kept in the history).
    #[serde(default)]
    pub reason: Option<String>,
}

fn hundred() -> f64 {
    100.0
}
fn p99() -> u8 {
    99
}
fn linear() -> String {
    "linear".into()
}

/// The monitor's defaults from the config file.
#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    /// Interval, seconds.
    pub interval_s: f64,
    /// See [`crate::config::MonitorConfig`].
    pub min_requests: u64,
    /// Silent windows before an alert.
    pub silent_limit: u32,
    /// Breaching windows that roll back.
    pub failure_limit: u32,
}

impl TestingSpec {
    /// Whether the target waits for an operator's `live` instead of promoting.
    pub fn manual_promotion(&self) -> bool {
        self.promotion.as_deref() == Some("manual")
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Result<Algorithm, String> {
        let step = self.step_percentage.unwrap_or(10.0);
        if !(step > 0.0 && step <= 100.0) {
            return Err(format!("stepPercentage {step}: over 0, at most 100"));
        }
        Ok(match self.algorithm.as_str() {
            "seed" => Algorithm::Seed,
            "linear" => Algorithm::Linear { step },
            "exponential" => Algorithm::Exponential { step },
            "metric" => Algorithm::Metric { step },
            other => {
                return Err(format!(
                    "algorithm {other:?}: seed, linear, exponential or metric"
                ))
            }
        })
    }

    /// The monitor's policy with the defaults filled in.
    pub fn policy(&self, d: &Defaults) -> Result<Policy, String> {
        let algorithm = self.algorithm()?;
        let t = Thresholds {
            error_rate: self.error_rate_threshold,
            latency_ms: self.latency_threshold,
        };
        Ok(Policy {
            algorithm,
            target: self.target_traffic_percentage,
            thresholds: t,
            critical: Thresholds {
                error_rate: self
                    .critical_error_rate
                    .unwrap_or((t.error_rate * 5.0).clamp(0.1, 1.0)),
                latency_ms: self.critical_latency.unwrap_or(t.latency_ms * 4.0),
            },
            failure_limit: self.failure_limit.unwrap_or(d.failure_limit),
            min_requests: self.min_requests.unwrap_or(d.min_requests),
            silent_limit: self.silent_limit.unwrap_or(d.silent_limit),
            no_data_limit: self.no_data_limit,
        })
    }

    /// The weight testing starts at: `initialPercentage`, else the first step (`stepPercentage`,
    /// 10 by default) for linear, exponential and metric, and 1 for seed; never past the target.
    pub fn initial(&self) -> f64 {
        let first = match self.algorithm.as_str() {
            "seed" => 1.0,
            _ => self.step_percentage.unwrap_or(10.0),
        };
        self.initial_percentage
            .unwrap_or(first.min(self.max_step_percentage.unwrap_or(100.0)))
            .min(self.target_traffic_percentage)
    }

    /// The interval, seconds.
    pub fn interval_s(&self, d: &Defaults) -> f64 {
        self.interval
            .as_deref()
            .and_then(|i| parse_duration(i).ok())
            .map_or(d.interval_s, |d| d.as_secs_f64())
    }

    /// Checks the values; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        let pct = |name: &str, v: f64| {
            if (0.0..=100.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("{name} {v}: 0 to 100"))
            }
        };
        pct("targetTrafficPercentage", self.target_traffic_percentage)?;
        if let Some(p) = self.promotion.as_deref() {
            if p != "auto" && p != "manual" {
                return Err(format!("promotion {p:?}: auto or manual"));
            }
        }
        if self.no_data_limit == Some(0) {
            return Err("noDataLimit 0: at least 1 (leave it out for none)".into());
        }
        if self.target_traffic_percentage <= 0.0 {
            return Err("targetTrafficPercentage must be over 0".into());
        }
        if let Some(i) = self.initial_percentage {
            pct("initialPercentage", i)?;
            if i <= 0.0 || i > self.target_traffic_percentage {
                return Err(format!(
                    "initialPercentage {i}: over 0 and at most targetTrafficPercentage"
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.error_rate_threshold) {
            return Err(format!(
                "errorRateThreshold {}: a fraction, 0 to 1 (0.02 is 2%)",
                self.error_rate_threshold
            ));
        }
        if !(self.latency_threshold > 0.0 && self.latency_threshold.is_finite()) {
            return Err(format!(
                "latencyThreshold {}: milliseconds, over 0",
                self.latency_threshold
            ));
        }
        if ![50, 90, 99].contains(&self.latency_percentile) {
            return Err(format!(
                "latencyPercentile {}: 50, 90 or 99",
                self.latency_percentile
            ));
        }
        if let Some(i) = &self.interval {
            parse_duration(i).map_err(|w| format!("interval: {w}"))?;
        }
        if let Some(c) = self.critical_error_rate {
            if !(self.error_rate_threshold..=1.0).contains(&c) {
                return Err(format!(
                    "criticalErrorRate {c}: from errorRateThreshold to 1"
                ));
            }
        }
        if let Some(c) = self.critical_latency {
            if c < self.latency_threshold {
                return Err(format!("criticalLatency {c}: at least latencyThreshold"));
            }
        }
        if let Some(r) = self.max_latency_ratio {
            if !(r >= 1.0 && r.is_finite()) {
                return Err(format!("maxLatencyRatio {r}: at least 1"));
            }
        }
        if let Some(r) = self.max_error_rate_increase {
            if !(0.0..=1.0).contains(&r) {
                return Err(format!("maxErrorRateIncrease {r}: 0 to 1"));
            }
        }
        if let Some(p) = &self.candidate_pool {
            check_pool("candidatePool", p)?;
        }
        for (name, v) in [
            ("cpuThreshold", self.cpu_threshold),
            ("memoryThreshold", self.memory_threshold),
        ] {
            if let Some(v) = v {
                if !(v > 0.0 && v.is_finite()) {
                    return Err(format!("{name} {v}: over 0"));
                }
            }
        }
        if let Some(m) = &self.metrics_urls {
            check_metrics_urls(m)?;
        }
        if let Some(m) = self.max_step_percentage {
            if !(m > 0.0 && m <= 100.0) {
                return Err(format!("maxStepPercentage {m}: over 0, at most 100"));
            }
            if let Some(i) = self.initial_percentage.filter(|i| *i > m) {
                return Err(format!(
                    "initialPercentage {i}: over maxStepPercentage {m} (the first step is an increase too)"
                ));
            }
        }
        if let Some(a) = self.judge_alpha {
            if !(a > 0.0 && a < 0.5) {
                return Err(format!("judgeAlpha {a}: over 0, under 0.5"));
            }
        }
        if let Some(t) = self.latency_tolerance {
            if !(0.0..=10.0).contains(&t) {
                return Err(format!("latencyTolerance {t}: 0 to 10 (0.1 is 10% slower)"));
            }
        }
        self.algorithm().map(|_| ())
    }

    /// The statistical gate's settings, when it is on.
    pub fn gate(&self, min_units: u64) -> Option<shadowtap_control::gate::GateConfig> {
        if self.judge == Some(false) {
            return None;
        }
        let d = shadowtap_control::gate::GateConfig::default();
        Some(shadowtap_control::gate::GateConfig {
            alpha: self.judge_alpha.unwrap_or(d.alpha),
            latency_tolerance: self.latency_tolerance.unwrap_or(d.latency_tolerance),
            min_units: min_units.max(d.min_units),
            ..d
        })
    }
}

/// Metrics endpoints must be `http://` or `https://` URLs.
pub fn check_metrics_urls(m: &std::collections::BTreeMap<String, String>) -> Result<(), String> {
    for (member, url) in m {
        shadowtap_proxy::upstream::Member::parse(url)
            .map_err(|e| format!("metricsUrls: {member}: {url}: {e}"))?;
    }
    Ok(())
}

/// Members must be `http://` or `https://` URLs with a host.
pub fn check_pool(field: &str, pool: &[String]) -> Result<(), String> {
    if pool.is_empty() {
        return Err(format!("{field}: at least one member"));
    }
    for u in pool {
        shadowtap_proxy::upstream::Member::parse(u).map_err(|e| format!("{field}: {u}: {e}"))?;
    }
    Ok(())
}

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
    // The shadow phase's gate compares the same requests' answers.
    c.mirror.pair_outcomes = true;
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

#[cfg(test)]
mod tests;

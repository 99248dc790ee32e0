//! The testing policy as the API takes it ([`TestingSpec`]): its checks, the pure policy and
//! gate it gives, and the checks of pools and metrics endpoints.

use serde::{Deserialize, Serialize};
use shadowtap_control::shift::{Algorithm, Policy, Thresholds};

use crate::config::parse_duration;

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
    /// until an operator's `live` (`ctl promote`), the stop before live; `hold` (a declarative
    /// rollout's traffic steps): held at the target, judged, until its next step.
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

    /// Whether the target holds for a rollout's next step instead of promoting.
    pub fn holds_at_target(&self) -> bool {
        self.promotion.as_deref() == Some("hold")
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
            if !matches!(p, "auto" | "manual" | "hold") {
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

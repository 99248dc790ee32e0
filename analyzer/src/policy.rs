//! The canary policy (`--policy FILE`, TOML): which targets, how to diff, what counts as noise,
//! which metrics, their thresholds and weights. Every field has a default fit for ordinary
//! JSON/HTML APIs, so no file is needed to start.
//!
//! ```toml
//! baseline = "baseline"
//! candidate = "candidate"
//! baseline2 = "baseline2"          # a second copy of the current version (noise), optional
//! routes = ["/shop/products/{id}.json"]  # endpoint templates (also --route); see template.rs
//! # openapi = "openapi.yaml"       # endpoints by an OpenAPI document's operations (also --openapi)
//!
//! [score]
//! pass = 95.0                      # score >= pass: go
//! marginal = 75.0                  # score >= marginal: marginal; below: no-go
//!
//! [samples]
//! min_overall = 50                 # fewer pairs where both answered: inconclusive
//! min_endpoint = 30                # endpoints with fewer pairs cannot pass (they can still fail)
//!
//! [noise]                          # a field (and kind of difference) counts against the candidate
//! relative = 0.20                  # when it differs significantly more often than in the noise
//! absolute = 0.005                 # comparison, by more than 20% relative AND 0.5 points
//!
//! [health]                         # guards: the verdict is inconclusive when
//! max_baseline_error_excess = 0.20 # the baseline's error rate exceeds production's by this
//! max_status_mix_distance = 0.50   # its status-class mix is this far (total variation) from production's
//!
//! [diff]
//! ignore_headers = ["x-trace"]     # added to the built-in list (Date, Server, …)
//! compare_headers = true
//! ignore_fields = ["/meta/*"]      # JSON pointers, * for any segment
//! unordered_arrays = ["/tags"]     # arrays compared as multisets
//! numeric_tolerance = 0.0          # relative
//!
//! [metrics.error_rate]             # 5xx and transport errors, McNemar's exact test on pairs
//! critical = true
//! weight = 1.0
//! alpha = 0.01                     # family-wise: half over the endpoints, half overall
//! max_increase = 0.002             # the increase must exceed 0.2 points
//! max_relative = 0.25              # and 25% of the baseline's rate to fail
//!
//! [metrics.latency]                # paired log ratios; higher is worse
//! critical = true
//! weight = 1.0
//! alpha = 0.0025
//! max_ratio = 1.2                  # centre (Hodges-Lehmann ratio) bound
//! max_ratio_p90 = 1.5              # p90 ratio bound
//! max_ratio_p99 = 2.0              # p99 ratio bound
//! slow_ratio = 10.0                # "much slower", for the slow share
//! max_increase = 0.01              # the slow share's excess (points) to fail
//! tail_min_pairs = 10              # a quantile is judged with this many pairs beyond it
//! bootstrap_resamples = 200
//!
//! [metrics.diff_rate]              # differences beyond noise, per field and kind
//! critical = true
//! weight = 1.0
//! alpha = 0.0025
//! max_increase = 0.01              # overall "differs at all" bound (points)
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::diff::{DiffOptions, DEFAULT_IGNORED_HEADERS};

/// The whole policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// Baseline target name.
    pub baseline: String,
    /// Candidate target name.
    pub candidate: String,
    /// Second baseline (noise twin), used when present in the replay.
    pub baseline2: String,
    /// Score thresholds.
    pub score: Score,
    /// Minimum samples.
    pub samples: Samples,
    /// Noise rule.
    pub noise: Noise,
    /// Diff settings.
    pub diff: DiffSettings,
    /// Metric settings.
    pub metrics: Metrics,
    /// Health guards.
    pub health: HealthPolicy,
    /// Endpoint templates (`/shop/products/{id}.json`): requests matching one are judged as
    /// that endpoint (see [`crate::template`]).
    pub routes: Vec<String>,
    /// An OpenAPI document (JSON or YAML) whose operations name endpoints, after `routes`
    /// (see [`crate::template::Routes::from_openapi`]).
    pub openapi: Option<std::path::PathBuf>,
}

/// When the comparison itself is not valid (the verdict is then inconclusive).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthPolicy {
    /// The baseline's error rate (5xx and transport errors) may exceed production's recorded
    /// 5xx rate (0 when unknown) by at most this.
    pub max_baseline_error_excess: f64,
    /// The baseline's status-class mix may be at most this far (total variation distance)
    /// from production's for the same requests.
    pub max_status_mix_distance: f64,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            max_baseline_error_excess: 0.20,
            max_status_mix_distance: 0.50,
        }
    }
}

/// Score thresholds, in percent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Score {
    /// Go at or above.
    pub pass: f64,
    /// Marginal at or above.
    pub marginal: f64,
}

/// Minimum sample sizes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Samples {
    /// Requests per target overall.
    pub min_overall: u64,
    /// Requests per target for an endpoint to be judged.
    pub min_endpoint: u64,
}

/// The noise rule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Noise {
    /// Relative excess over the noise rate that counts.
    pub relative: f64,
    /// Absolute excess that counts.
    pub absolute: f64,
}

/// Diff settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DiffSettings {
    /// Extra headers to ignore.
    pub ignore_headers: Vec<String>,
    /// Compare headers at all.
    pub compare_headers: bool,
    /// JSON fields to ignore.
    pub ignore_fields: Vec<String>,
    /// Arrays compared as multisets.
    pub unordered_arrays: Vec<String>,
    /// Relative numeric tolerance.
    pub numeric_tolerance: f64,
}

/// One metric's judgement settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricPolicy {
    /// A failure is no-go whatever the score.
    pub critical: bool,
    /// Weight in the score.
    pub weight: f64,
    /// Significance level.
    pub alpha: f64,
    /// Rates: the candidate's rate must exceed the baseline's by more than this to fail.
    pub max_increase: f64,
    /// Rates: and exceed the baseline's rate by more than this share of it.
    pub max_relative: f64,
    /// Latency: the centre of the candidate/baseline ratios must exceed this to fail.
    pub max_ratio: f64,
    /// Latency: the p90 ratio bound.
    pub max_ratio_p90: f64,
    /// Latency: the p99 ratio bound.
    pub max_ratio_p99: f64,
    /// Latency: a request this many times slower on one side is "much slower" (slow share).
    pub slow_ratio: f64,
    /// Latency: pairs needed beyond a quantile for it to be judged.
    pub tail_min_pairs: u64,
    /// Latency: bootstrap resamples for the tail ratios.
    pub bootstrap_resamples: u64,
    /// Judge this metric at all.
    pub enabled: bool,
}

/// All metrics.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Metrics {
    /// 5xx and transport errors.
    pub error_rate: MetricPolicy,
    /// Total time.
    pub latency: MetricPolicy,
    /// Non-noise differences.
    pub diff_rate: MetricPolicy,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            baseline: "baseline".into(),
            candidate: "candidate".into(),
            baseline2: "baseline2".into(),
            score: Score::default(),
            samples: Samples::default(),
            noise: Noise::default(),
            diff: DiffSettings::default(),
            metrics: Metrics::default(),
            health: HealthPolicy::default(),
            routes: Vec::new(),
            openapi: None,
        }
    }
}

impl Default for Score {
    fn default() -> Self {
        Score {
            pass: 95.0,
            marginal: 75.0,
        }
    }
}

impl Default for Samples {
    fn default() -> Self {
        Samples {
            min_overall: 50,
            min_endpoint: 30,
        }
    }
}

impl Default for Noise {
    fn default() -> Self {
        Noise {
            relative: 0.20,
            absolute: 0.005,
        }
    }
}

impl Default for DiffSettings {
    fn default() -> Self {
        DiffSettings {
            ignore_headers: Vec::new(),
            compare_headers: true,
            ignore_fields: Vec::new(),
            unordered_arrays: Vec::new(),
            numeric_tolerance: 0.0,
        }
    }
}

impl Default for MetricPolicy {
    fn default() -> Self {
        MetricPolicy {
            critical: true,
            weight: 1.0,
            alpha: 0.0025,
            max_increase: 0.01,
            max_relative: 0.25,
            max_ratio: 1.2,
            max_ratio_p90: 1.5,
            max_ratio_p99: 2.0,
            slow_ratio: 10.0,
            tail_min_pairs: 10,
            bootstrap_resamples: 200,
            enabled: true,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            error_rate: MetricPolicy {
                alpha: 0.01,
                max_increase: 0.002,
                ..MetricPolicy::default()
            },
            latency: MetricPolicy::default(),
            diff_rate: MetricPolicy::default(),
        }
    }
}

impl Policy {
    /// The routes endpoints are named by: `routes`, then the `openapi` document's operations.
    pub fn endpoint_routes(&self) -> Result<crate::template::Routes, String> {
        let mut routes = crate::template::Routes::new(&self.routes)?;
        if let Some(f) = &self.openapi {
            let text = std::fs::read_to_string(f)
                .map_err(|e| format!("--openapi {}: {e}", f.display()))?;
            routes.extend(
                crate::template::Routes::from_openapi(&text)
                    .map_err(|e| format!("--openapi {}: {e}", f.display()))?,
            );
        }
        Ok(routes)
    }

    /// Loads a policy file; unknown keys are errors. An `openapi` path is relative to the
    /// policy file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut p: Policy =
            toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if let (Some(f), Some(dir)) = (&p.openapi, path.parent()) {
            if f.is_relative() {
                p.openapi = Some(dir.join(f));
            }
        }
        p.check().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(p)
    }

    /// Parses a policy file's text; unknown keys and values out of range are errors.
    pub fn parse(text: &str) -> Result<Self, String> {
        let p: Policy = toml::from_str(text).map_err(|e| e.to_string())?;
        p.check()?;
        Ok(p)
    }

    /// Checks value ranges.
    pub fn check(&self) -> Result<(), String> {
        self.endpoint_routes()?;
        if !(0.0..=100.0).contains(&self.score.pass)
            || !(0.0..=100.0).contains(&self.score.marginal)
            || self.score.marginal > self.score.pass
        {
            return Err("[score] needs 0 <= marginal <= pass <= 100".into());
        }
        for (name, m) in [
            ("error_rate", &self.metrics.error_rate),
            ("latency", &self.metrics.latency),
            ("diff_rate", &self.metrics.diff_rate),
        ] {
            if !(m.alpha > 0.0 && m.alpha < 1.0) {
                return Err(format!("[metrics.{name}] alpha must be in (0, 1)"));
            }
            let finite = [m.weight, m.max_increase, m.max_relative]
                .iter()
                .all(|v| v.is_finite() && *v >= 0.0);
            if !finite {
                return Err(format!(
                    "[metrics.{name}] weight, max_increase and max_relative must be finite and >= 0"
                ));
            }
            let ratios = [m.max_ratio, m.max_ratio_p90, m.max_ratio_p99, m.slow_ratio];
            if !ratios.iter().all(|r| r.is_finite() && *r >= 1.0) {
                return Err(format!(
                    "[metrics.{name}] max_ratio, max_ratio_p90, max_ratio_p99 and slow_ratio must be finite and >= 1"
                ));
            }
            if m.bootstrap_resamples < 20 || m.bootstrap_resamples > 100_000 {
                return Err(format!(
                    "[metrics.{name}] bootstrap_resamples must be between 20 and 100000"
                ));
            }
            if m.tail_min_pairs == 0 {
                return Err(format!("[metrics.{name}] tail_min_pairs must be >= 1"));
            }
        }
        let noise_ok = self.noise.relative.is_finite()
            && self.noise.relative >= 0.0
            && (0.0..1.0).contains(&self.noise.absolute);
        if !noise_ok {
            return Err("[noise] relative must be >= 0 and absolute in [0, 1)".into());
        }
        let h = &self.health;
        let health_ok = h.max_baseline_error_excess.is_finite()
            && h.max_baseline_error_excess >= 0.0
            && (0.0..=1.0).contains(&h.max_status_mix_distance);
        if !health_ok {
            return Err("[health] max_baseline_error_excess must be >= 0 and max_status_mix_distance in [0, 1]".into());
        }
        if !(self.diff.numeric_tolerance.is_finite() && self.diff.numeric_tolerance >= 0.0) {
            return Err("[diff] numeric_tolerance must be >= 0".into());
        }
        if self.baseline.is_empty() || self.candidate.is_empty() {
            return Err("baseline and candidate names must not be empty".into());
        }
        if self.baseline == self.candidate {
            return Err("baseline and candidate must be different targets".into());
        }
        if self.baseline2 == self.baseline || self.baseline2 == self.candidate {
            return Err("baseline2 must differ from baseline and candidate".into());
        }
        Ok(())
    }

    /// Diff options from the policy.
    pub fn diff_options(&self) -> DiffOptions {
        let mut ignore: Vec<String> = DEFAULT_IGNORED_HEADERS
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        ignore.extend(
            self.diff
                .ignore_headers
                .iter()
                .map(|h| h.to_ascii_lowercase()),
        );
        DiffOptions {
            ignore_headers: ignore,
            compare_headers: self.diff.compare_headers,
            numeric_tolerance: self.diff.numeric_tolerance,
            unordered_arrays: self.diff.unordered_arrays.clone(),
            ignore_fields: self.diff.ignore_fields.clone(),
            ..DiffOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses_and_typos_do_not() {
        let doc = include_str!("policy.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| !l.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|l| !l.starts_with("//! ```"))
            .map(|l| l.trim_start_matches("//!").trim_start_matches(' '))
            .collect::<Vec<_>>()
            .join("\n");
        let p: Policy = toml::from_str(&example).unwrap();
        p.check().unwrap();
        assert_eq!(p.diff.unordered_arrays, ["/tags"]);
        assert!(toml::from_str::<Policy>("[score]\npas = 1\n").is_err());
        let bad: Policy = toml::from_str("[score]\npass = 50\nmarginal = 80\n").unwrap();
        assert!(bad.check().is_err());
    }
}

//! The canary policy (`--policy FILE`, TOML): which targets, how to diff, what counts as noise,
//! which metrics, their thresholds and weights. Every field has a default fit for ordinary
//! JSON/HTML APIs, so no file is needed to start.
//!
//! ```toml
//! baseline = "baseline"
//! candidate = "candidate"
//! baseline2 = "baseline2"          # a second copy of the current version (noise), optional
//!
//! [score]
//! pass = 95.0                      # score >= pass: go
//! marginal = 75.0                  # score >= marginal: marginal; below: no-go
//!
//! [samples]
//! min_overall = 50                 # fewer requests per target: inconclusive
//! min_endpoint = 30                # endpoints with fewer are reported, not judged
//!
//! [noise]                          # Diffy's rule: a field counts against the candidate when its
//! relative = 0.20                  # difference rate exceeds the noise rate by more than 20%
//! absolute = 0.0003                # relative AND 0.03% absolute
//!
//! [diff]
//! ignore_headers = ["x-trace"]     # added to the built-in list (Date, Server, Set-Cookie, …)
//! compare_headers = true
//! ignore_fields = ["/meta/*"]      # JSON pointers, * for any segment
//! unordered_arrays = ["/tags"]     # arrays compared as multisets
//! numeric_tolerance = 0.0          # relative
//!
//! [metrics.error_rate]             # 5xx and transport errors
//! critical = true
//! weight = 1.0
//! alpha = 0.05                     # significance level of the one-sided test
//! max_increase = 0.01              # and the increase must exceed this (absolute) to fail
//!
//! [metrics.latency]                # total time, Mann–Whitney U; higher is worse
//! critical = true
//! weight = 1.0
//! alpha = 0.01
//! max_ratio = 1.2                  # fail only when the candidate's median is > 1.2x baseline's
//!
//! [metrics.diff_rate]              # share of pairs with a non-noise difference
//! critical = true
//! weight = 1.0
//! alpha = 0.05
//! max_increase = 0.01
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
    /// Latency: the candidate's median must exceed the baseline's times this to fail.
    pub max_ratio: f64,
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
            absolute: 0.0003,
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
            alpha: 0.05,
            max_increase: 0.01,
            max_ratio: 1.2,
            enabled: true,
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            error_rate: MetricPolicy::default(),
            latency: MetricPolicy {
                alpha: 0.01,
                ..MetricPolicy::default()
            },
            diff_rate: MetricPolicy::default(),
        }
    }
}

impl Policy {
    /// Loads a policy file; unknown keys are errors.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let p: Policy = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        p.check().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(p)
    }

    /// Checks value ranges.
    pub fn check(&self) -> Result<(), String> {
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
            if m.weight < 0.0 || m.max_increase < 0.0 || m.max_ratio < 1.0 {
                return Err(format!(
                    "[metrics.{name}] weight and max_increase must be >= 0, max_ratio >= 1"
                ));
            }
        }
        if self.baseline == self.candidate {
            return Err("baseline and candidate must be different targets".into());
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

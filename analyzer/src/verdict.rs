//! The verdict and everything behind it, as `verdict.json` gives it: the types shared by the
//! judge ([`crate::judge`]), the analysis ([`crate::analyze`]) and the reports
//! ([`crate::report`]).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use crate::policy::Policy;

/// Version of `verdict.json`. Version 2: checks are paired tests with raw and adjusted p
/// values; latency has centre and tail checks; fields carry their difference kind; health,
/// not-judged endpoints and per-position latency were added.
pub const VERDICT_SCHEMA_VERSION: u32 = 2;

/// The decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Roll out.
    Go,
    /// Do not roll out.
    NoGo,
    /// Between the thresholds: a human decides.
    Marginal,
    /// Not enough data, or nothing valid to compare.
    Inconclusive,
}

impl Decision {
    /// Exit code for CI: 0 go, 1 no-go, 2 marginal (1 with `fail_on_marginal`), 3 inconclusive.
    pub fn exit_code(self, fail_on_marginal: bool) -> u8 {
        match self {
            Decision::Go => 0,
            Decision::NoGo => 1,
            Decision::Marginal if fail_on_marginal => 1,
            Decision::Marginal => 2,
            Decision::Inconclusive => 3,
        }
    }

    /// As written in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Go => "go",
            Decision::NoGo => "no-go",
            Decision::Marginal => "marginal",
            Decision::Inconclusive => "inconclusive",
        }
    }
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckResult {
    /// Within the policy.
    Pass,
    /// Outside the policy.
    Fail,
    /// Too little data to judge (never counted as a pass).
    Inconclusive,
}

/// One side of a check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SideValue {
    /// Target name.
    pub target: String,
    /// Sample size (pairs).
    pub n: u64,
    /// The metric's value (a rate, or the median in ms).
    pub value: Option<f64>,
    /// Events counted (errors, differing pairs), for rates.
    pub events: Option<u64>,
    /// p90 in ms, for latency.
    pub p90_ms: Option<f64>,
    /// p99 in ms, for latency.
    pub p99_ms: Option<f64>,
}

/// One test behind a check: candidate against one reference (the baseline, or the second
/// baseline when it ran).
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    /// `mcnemar_exact` (a sign test on exchanges with `--loop`), `wilcoxon_signed_rank`,
    /// `cluster_bootstrap`.
    pub name: String,
    /// The reference target.
    pub reference: String,
    /// One-sided p value (candidate worse), raw.
    pub p_value: Option<f64>,
    /// The p value adjusted for the other checks of its family (see `family`).
    pub p_adjusted: Option<f64>,
    /// z score, when the test has one.
    pub z: Option<f64>,
    /// The effect: a rate difference (points as a share), or a ratio for latency.
    pub effect: Option<f64>,
    /// Its confidence interval, when computed.
    pub effect_low: Option<f64>,
    /// Upper end.
    pub effect_high: Option<f64>,
    /// Discordant units: candidate worse, reference worse (rates).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub discordant: Option<(u64, u64)>,
}

/// One metric judged on one endpoint (or overall).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `error_rate`, `latency`, `diff_rate`.
    pub metric: String,
    /// For latency: `centre` (Hodges–Lehmann ratio), `p90` or `p99`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<String>,
    /// Endpoint (`GET /users/{id}`) or `overall`.
    pub endpoint: String,
    /// Outcome.
    pub result: CheckResult,
    /// Critical metric.
    pub critical: bool,
    /// Weight in the score.
    pub weight: f64,
    /// Baseline side.
    pub baseline: SideValue,
    /// Candidate side (for `diff_rate`, the candidate-vs-baseline pairs; the baseline side is
    /// the noise comparison).
    pub candidate: SideValue,
    /// The deciding test (with a second baseline, the weaker of the two: the candidate must
    /// be worse than both copies of the current version).
    pub test: Option<TestOutcome>,
    /// Every test made for this check.
    pub tests: Vec<TestOutcome>,
    /// The multiple-comparison family: `<metric>/endpoints` or `<metric>/overall`, its size
    /// after Tarone's exclusion and its alpha.
    pub family: String,
    /// The thresholds applied.
    pub threshold: String,
    /// Why, in words.
    pub explanation: String,
    /// The SQL that gives the inputs (run it with `shadowtap query`).
    pub sql: String,
    /// For `diff_rate`: the fields counted against the candidate.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<String>,
}

/// A field (and kind of difference) tested as noise or as a real difference.
#[derive(Debug, Clone, Serialize)]
pub struct FieldClass {
    /// Endpoint.
    pub endpoint: String,
    /// Field pattern (`/items/*/price`, `status`, `header:etag`, `body`, `body:hunk:…`).
    pub field: String,
    /// Kind of difference (`value_changed`, `type_changed`, `text`, …).
    pub kind: String,
    /// Share of candidate-vs-baseline pairs where it differs.
    pub candidate_rate: f64,
    /// Share of noise pairs where it differs.
    pub noise_rate: f64,
    /// Pairs compared (both comparisons made).
    pub pairs: u64,
    /// One-sided p value of the paired test (candidate differs more often than noise), raw.
    pub p_value: f64,
    /// Adjusted for the whole family of fields.
    pub p_adjusted: f64,
    /// Noise (does not count against the candidate).
    pub noise: bool,
    /// Why.
    pub reason: String,
    /// An example: exchange id, kind, baseline value, candidate value.
    pub example: Option<(String, String, Option<String>, Option<String>)>,
}

/// Per-endpoint summary for the reports.
#[derive(Debug, Clone, Serialize)]
pub struct EndpointSummary {
    /// Endpoint.
    pub endpoint: String,
    /// Per target: requests, errors, p50/p90/p99 ms.
    pub targets: BTreeMap<String, TargetMetrics>,
    /// Candidate pairs compared.
    pub pairs: u64,
    /// Pairs with a difference counted against the candidate.
    pub differing_pairs: u64,
    /// Share of all compared requests.
    pub traffic_share: f64,
    /// A unified diff excerpt (text bodies).
    pub text_diff: Option<String>,
}

/// One target's numbers on one endpoint.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetMetrics {
    /// Requests.
    pub requests: u64,
    /// 5xx and transport errors.
    pub errors: u64,
    /// Latency percentiles of the answered requests, ms.
    pub p50_ms: Option<f64>,
    /// p90.
    pub p90_ms: Option<f64>,
    /// p99.
    pub p99_ms: Option<f64>,
    /// Latency samples (ms) for plots, at most 2,000.
    #[serde(skip)]
    pub samples_ms: Vec<f64>,
}

/// An endpoint whose checks could not be judged (too little traffic), by name.
#[derive(Debug, Clone, Serialize)]
pub struct NotJudged {
    /// Endpoint.
    pub endpoint: String,
    /// Pairs.
    pub pairs: u64,
    /// Share of all pairs.
    pub traffic_share: f64,
    /// Why (too few pairs; or no pair whose answers could be compared).
    pub why: String,
}

/// Median latency of one target by the position it was sent in (0: first). With the random
/// order the replayer uses, the positions of a target should not differ much; a strong
/// position effect means the machine sending (or the targets sharing it) was saturated.
#[derive(Debug, Clone, Serialize)]
pub struct PositionLatency {
    /// Target.
    pub target: String,
    /// Position (0-based).
    pub position: u32,
    /// Requests sent in this position.
    pub requests: u64,
    /// Median total time, ms.
    pub p50_ms: Option<f64>,
}

/// What the health guards saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Health {
    /// Pairs (exchange and pass) with a baseline and a candidate row.
    pub pairs: u64,
    /// Pairs where both answered.
    pub both_answered: u64,
    /// Baseline 5xx and transport errors, share of pairs.
    pub baseline_error_rate: f64,
    /// Candidate 5xx and transport errors, share of pairs.
    pub candidate_error_rate: f64,
    /// Candidate requests answered at all.
    pub candidate_answered: u64,
    /// 5xx share of the recorded production responses of the same exchanges (when known).
    pub recorded_error_rate: Option<f64>,
    /// Status classes (`2xx`, …, `none`) of the baseline.
    pub baseline_status_mix: BTreeMap<String, f64>,
    /// Status classes of the recorded production responses (when known).
    pub recorded_status_mix: Option<BTreeMap<String, f64>>,
    /// Total variation distance between the two mixes (0 same, 1 disjoint).
    pub status_mix_distance: Option<f64>,
    /// Whether a second baseline calibrated the comparison.
    pub calibrated: bool,
}

/// The verdict and everything behind it (`verdict.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// Schema version of this document.
    pub schema_version: u32,
    /// The decision.
    pub verdict: Decision,
    /// Exit code the CLI returns for it.
    pub exit_code: u8,
    /// Weighted share of judged checks that passed, in percent (None when nothing was judged).
    pub score: Option<f64>,
    /// Score thresholds.
    pub thresholds: BTreeMap<String, f64>,
    /// Baseline target.
    pub baseline: String,
    /// Candidate target.
    pub candidate: String,
    /// The replay run judged.
    pub run_id: String,
    /// Where noise was measured: `baseline2` (a second baseline), `recorded` (production
    /// responses in the capture), or `none`.
    pub noise_source: String,
    /// The reasons for the decision, most important first.
    pub reasons: Vec<String>,
    /// Notes that do not decide (what was not calibrated or not checked).
    pub notes: Vec<String>,
    /// What the health guards saw.
    pub health: Health,
    /// Every check.
    pub checks: Vec<Check>,
    /// Endpoints left unjudged, with their traffic share.
    pub not_judged: Vec<NotJudged>,
    /// Fields that differ between candidate and baseline, real or noise.
    pub fields: Vec<FieldClass>,
    /// Per endpoint.
    pub endpoints: Vec<EndpointSummary>,
    /// Median latency per target and send position.
    pub positions: Vec<PositionLatency>,
    /// Rows of `diffs` written.
    pub diff_rows: u64,
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// The policy applied.
    pub policy: Policy,
}

//! `analyze`: pairs and diffs the replayed responses, classifies noise, computes metrics with
//! DataFusion SQL, judges each metric candidate vs baseline with a statistical test, and
//! returns a verdict that explains itself.
//!
//! Verdict rules, in order:
//! 1. The baseline or candidate target is missing from the replay: an input error.
//! 2. The candidate answered no request at all (unreachable, or every request failed): no-go.
//! 3. Fewer than `samples.min_overall` requests on either side: inconclusive.
//! 4. A failed check of a critical metric: no-go.
//! 5. No check could be judged (all short of samples): inconclusive.
//! 6. Otherwise the score, the weighted share of judged checks that pass, against
//!    `score.pass` (go) and `score.marginal` (marginal; below it, no-go).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use serde::Serialize;

use crate::error::AnalyzeError;
use crate::pairs::{
    diff_replays, load_recorded, ComparisonKind, DiffStats, PairTargets, DIFFS_SCHEMA_VERSION,
};
use crate::policy::{MetricPolicy, Policy};
use crate::stats::{mann_whitney, quantile, rate_higher};
use crate::tables::{register, run_sql, session};

/// Version of `verdict.json`.
pub const VERDICT_SCHEMA_VERSION: u32 = 1;

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
    /// Not enough data to judge.
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
#[derive(Debug, Clone, Serialize)]
pub struct SideValue {
    /// Target name.
    pub target: String,
    /// Sample size.
    pub n: u64,
    /// The metric's value (a rate, or the median in ms).
    pub value: Option<f64>,
    /// Events counted (errors, differing pairs), for rates.
    pub events: Option<u64>,
    /// p90 and p99 in ms, for latency.
    pub p90_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
}

/// The test a check used.
#[derive(Debug, Clone, Serialize)]
pub struct TestOutcome {
    /// `mann_whitney_u`, `two_proportion_z`, `fisher_exact`.
    pub name: String,
    /// One-sided p value (candidate worse).
    pub p_value: Option<f64>,
    /// z score, when the test has one.
    pub z: Option<f64>,
}

/// One metric judged on one endpoint (or overall).
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// `error_rate`, `latency`, `diff_rate`.
    pub metric: String,
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
    /// The test.
    pub test: Option<TestOutcome>,
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

/// A field classified as noise or as a real difference.
#[derive(Debug, Clone, Serialize)]
pub struct FieldClass {
    /// Endpoint.
    pub endpoint: String,
    /// Field pattern (`/items/*/price`, `status`, `header:etag`, `body`).
    pub field: String,
    /// Share of candidate-vs-baseline pairs where it differs.
    pub candidate_rate: f64,
    /// Share of noise pairs where it differs.
    pub noise_rate: f64,
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
    /// Candidate pairs compared, and how many had a non-noise difference.
    pub pairs: u64,
    /// Pairs with a non-noise difference.
    pub differing_pairs: u64,
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
    /// Latency percentiles, ms.
    pub p50_ms: Option<f64>,
    /// p90.
    pub p90_ms: Option<f64>,
    /// p99.
    pub p99_ms: Option<f64>,
    /// Latency samples (ms) for plots, at most 2,000.
    #[serde(skip)]
    pub samples_ms: Vec<f64>,
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
    /// Where noise was measured: `baseline2` (a second baseline), `recorded` (production
    /// responses in the capture), or `none`.
    pub noise_source: String,
    /// The reasons for the decision, most important first.
    pub reasons: Vec<String>,
    /// Every check.
    pub checks: Vec<Check>,
    /// Fields that differ between candidate and baseline, real or noise.
    pub fields: Vec<FieldClass>,
    /// Per endpoint.
    pub endpoints: Vec<EndpointSummary>,
    /// Rows of `diffs` written.
    pub diff_rows: u64,
    /// Files written.
    pub outputs: Vec<PathBuf>,
    /// The policy applied.
    pub policy: Policy,
}

/// Inputs of an analysis.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// Capture output (exchanges).
    pub capture: Option<PathBuf>,
    /// Replay output (replays).
    pub replay: PathBuf,
    /// Policy.
    pub policy: Policy,
    /// Output directory.
    pub out: PathBuf,
    /// Marginal counts as no-go for the exit code.
    pub fail_on_marginal: bool,
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Requests that count for the metrics: not the ones never sent because of the capture or a
/// hook (those are the same on every target).
const COUNTED: &str =
    "(error_kind IS NULL OR error_kind NOT IN ('dropped', 'unreplayable', 'hook'))";

/// Runs the analysis.
pub async fn analyze(opts: &AnalyzeOptions) -> Result<Verdict, AnalyzeError> {
    let p = &opts.policy;
    p.check().map_err(AnalyzeError::Input)?;
    std::fs::create_dir_all(&opts.out).map_err(|source| AnalyzeError::Io {
        path: opts.out.clone(),
        source,
    })?;
    let ctx = session();
    // Foreign or other-version files are input errors here, never panics or SQL puzzles later.
    crate::pairs::check_files(&opts.replay, "replays")?;
    if let Some(c) = &opts.capture {
        crate::pairs::check_files(c, "exchanges")?;
    }
    if register(&ctx, "replays", &opts.replay).await? == 0 {
        return Err(AnalyzeError::Input(format!(
            "{}: no replays-*.parquet files (is this the --out directory of `shadowtap replay`?)",
            opts.replay.display()
        )));
    }
    if let Some(c) = &opts.capture {
        if register(&ctx, "exchanges", c).await? == 0 {
            return Err(AnalyzeError::Input(format!("{}: no exchanges-*.parquet files (is this the --out directory of `shadowtap capture`?)", c.display())));
        }
    }
    let targets_batches =
        run_sql(&ctx, "SELECT DISTINCT target FROM replays ORDER BY target").await?;
    let mut targets: Vec<String> = Vec::new();
    for b in &targets_batches {
        let c = b.column(0);
        let c = arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8)
            .map_err(|e| AnalyzeError::Sql(e.to_string()))?;
        let s = c.as_string::<i32>();
        targets.extend((0..s.len()).map(|i| s.value(i).to_owned()));
    }
    for (role, name) in [("baseline", &p.baseline), ("candidate", &p.candidate)] {
        if !targets.contains(name) {
            return Err(AnalyzeError::Input(format!(
                "the {role} target `{name}` is not in the replay (targets: {}); name it with --{role}",
                targets.join(", ")
            )));
        }
    }
    let baseline2 = targets
        .contains(&p.baseline2)
        .then_some(p.baseline2.as_str());
    let recorded = match &opts.capture {
        Some(c) => Some(load_recorded(c, 200_000)?),
        None => None,
    };
    let noise_source = if baseline2.is_some() {
        "baseline2"
    } else if recorded.as_ref().is_some_and(|r| !r.is_empty()) {
        "recorded"
    } else {
        "none"
    };
    let run_id = shadowtap_core::id::new_run_id();
    // Old diffs in the output directory would be read as this run's.
    for old in crate::pairs::parquet_files(&opts.out, "diffs") {
        let _ = std::fs::remove_file(old);
    }
    let pair_targets = PairTargets {
        baseline: &p.baseline,
        candidate: &p.candidate,
        baseline2,
    };
    let stats = diff_replays(
        &opts.replay,
        &pair_targets,
        recorded.as_ref(),
        &p.diff_options(),
        &opts.out,
        &run_id,
    )?;
    let noise_kind = if baseline2.is_some() {
        ComparisonKind::Noise
    } else {
        ComparisonKind::Recorded
    };

    // Per target and endpoint: requests, errors, latency samples (SQL).
    let metrics_sql = format!(
        "SELECT target, method || ' ' || path_template(path) AS endpoint, count(*) AS requests, \
         sum(CASE WHEN error_kind IS NOT NULL OR status >= 500 THEN 1 ELSE 0 END) AS errors, \
         array_agg(total_us) FILTER (WHERE status IS NOT NULL) AS latencies_us \
         FROM replays WHERE target IN ({}, {}) AND {COUNTED} GROUP BY 1, 2 ORDER BY 2, 1",
        q(&p.baseline),
        q(&p.candidate)
    );
    let batches = run_sql(&ctx, &metrics_sql).await?;
    let mut per: BTreeMap<String, BTreeMap<String, TargetMetrics>> = BTreeMap::new();
    let mut lat: HashMap<(String, String), Vec<f64>> = HashMap::new();
    for b in &batches {
        let t = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)
            .map_err(|e| AnalyzeError::Sql(e.to_string()))?;
        let e = arrow::compute::cast(b.column(1), &arrow::datatypes::DataType::Utf8)
            .map_err(|e| AnalyzeError::Sql(e.to_string()))?;
        let (t, e) = (t.as_string::<i32>(), e.as_string::<i32>());
        let n = b.column(2).as_primitive::<Int64Type>();
        let errs = b.column(3).as_primitive::<Int64Type>();
        let lists = b.column(4).as_list::<i32>();
        for i in 0..b.num_rows() {
            let mut samples: Vec<f64> = Vec::new();
            if lists.is_valid(i) {
                let v = lists.value(i);
                let v = v.as_primitive::<Int64Type>();
                samples.extend(v.iter().flatten().map(|us| us as f64 / 1000.0));
            }
            samples.sort_by(f64::total_cmp);
            let m = TargetMetrics {
                requests: n.value(i).max(0) as u64,
                errors: if errs.is_valid(i) {
                    errs.value(i).max(0) as u64
                } else {
                    0
                },
                p50_ms: quantile(&samples, 0.5),
                p90_ms: quantile(&samples, 0.9),
                p99_ms: quantile(&samples, 0.99),
                samples_ms: thin(&samples, 2000),
            };
            per.entry(e.value(i).to_owned())
                .or_default()
                .insert(t.value(i).to_owned(), m);
            lat.insert((t.value(i).to_owned(), e.value(i).to_owned()), samples);
        }
    }

    // Noise classification per (endpoint, field).
    let fields = classify(&stats, noise_kind, noise_source != "none", p);
    let real: BTreeSet<(String, String)> = fields
        .iter()
        .filter(|f| !f.noise)
        .map(|f| (f.endpoint.clone(), f.field.clone()))
        .collect();
    let (cand_pairs, noise_pairs) = pair_counts(&stats, noise_kind, &real);

    let mut checks = Vec::new();
    let endpoints: Vec<String> = per.keys().cloned().collect();
    let overall = "overall".to_owned();
    for ep in endpoints.iter().chain(std::iter::once(&overall)) {
        let get = |t: &str| -> (u64, u64, Vec<f64>) {
            if ep == "overall" {
                let mut all: Vec<f64> = Vec::new();
                let (mut n, mut x) = (0, 0);
                for (e, m) in &per {
                    if let Some(tm) = m.get(t) {
                        n += tm.requests;
                        x += tm.errors;
                    }
                    if let Some(s) = lat.get(&(t.to_owned(), e.clone())) {
                        all.extend_from_slice(s);
                    }
                }
                all.sort_by(f64::total_cmp);
                (n, x, all)
            } else {
                let tm = per
                    .get(ep)
                    .and_then(|m| m.get(t))
                    .cloned()
                    .unwrap_or_default();
                (
                    tm.requests,
                    tm.errors,
                    lat.get(&(t.to_owned(), ep.clone()))
                        .cloned()
                        .unwrap_or_default(),
                )
            }
        };
        let (bn, bx, bl) = get(&p.baseline);
        let (cn, cx, cl) = get(&p.candidate);
        let min = if ep == "overall" {
            p.samples.min_overall
        } else {
            p.samples.min_endpoint
        };
        let ep_filter = if ep == "overall" {
            String::new()
        } else {
            format!(" AND method || ' ' || path_template(path) = {}", q(ep))
        };
        if p.metrics.error_rate.enabled {
            let sql = format!(
                "SELECT target, count(*) AS requests, sum(CASE WHEN error_kind IS NOT NULL OR status >= 500 THEN 1 ELSE 0 END) AS errors FROM replays WHERE target IN ({}, {}) AND {COUNTED}{ep_filter} GROUP BY target",
                q(&p.baseline),
                q(&p.candidate)
            );
            checks.push(rate_check(
                "error_rate",
                ep,
                &p.metrics.error_rate,
                (&p.baseline, bn, bx),
                (&p.candidate, cn, cx),
                min,
                sql,
                Vec::new(),
            ));
        }
        if p.metrics.latency.enabled {
            let sql = format!(
                "SELECT target, count(*) AS n, approx_percentile_cont(total_us / 1000.0, 0.5) AS p50_ms FROM replays WHERE target IN ({}, {}) AND status IS NOT NULL AND {COUNTED}{ep_filter} GROUP BY target",
                q(&p.baseline),
                q(&p.candidate)
            );
            checks.push(latency_check(
                ep,
                &p.metrics.latency,
                (&p.baseline, &bl),
                (&p.candidate, &cl),
                min,
                sql,
            ));
        }
        if p.metrics.diff_rate.enabled {
            let key = if ep == "overall" {
                None
            } else {
                Some(ep.as_str())
            };
            let sum = |m: &BTreeMap<String, (u64, u64)>| -> (u64, u64) {
                m.iter()
                    .filter(|(e, _)| key.is_none_or(|k| k == e.as_str()))
                    .fold((0, 0), |a, (_, v)| (a.0 + v.0, a.1 + v.1))
            };
            let (c_n, c_x) = sum(&cand_pairs);
            let (mut n_n, mut n_x) = sum(&noise_pairs);
            if noise_source == "none" {
                (n_n, n_x) = (c_n, 0);
            }
            let flds: Vec<String> = fields
                .iter()
                .filter(|f| !f.noise && key.is_none_or(|k| k == f.endpoint))
                .map(|f| format!("{} {}", f.endpoint, f.field))
                .collect();
            let ep_filter = if ep == "overall" {
                String::new()
            } else {
                format!(" AND endpoint = {}", q(ep))
            };
            let sql = format!(
                "SELECT comparison, count(*) AS pairs, sum(CASE WHEN differs THEN 1 ELSE 0 END) AS differing FROM diffs WHERE comparison IN ('candidate', '{}'){ep_filter} GROUP BY comparison  -- noise fields are then set aside per endpoint and field (see fields)",
                noise_kind.as_str()
            );
            let noise_name = if noise_source == "none" {
                "no noise source".to_owned()
            } else {
                format!("noise ({noise_source})")
            };
            let min_pairs = min;
            checks.push(rate_check(
                "diff_rate",
                ep,
                &p.metrics.diff_rate,
                (&noise_name, n_n, n_x),
                (&p.candidate, c_n, c_x),
                min_pairs,
                sql,
                flds,
            ));
        }
    }

    // The decision.
    let mut reasons = Vec::new();
    let overall_of = |t: &str| {
        per.values()
            .filter_map(|m| m.get(t))
            .fold((0u64, 0u64), |a, m| (a.0 + m.requests, a.1 + m.errors))
    };
    let (bn, _) = overall_of(&p.baseline);
    let (cn, cx) = overall_of(&p.candidate);
    let judged: Vec<&Check> = checks
        .iter()
        .filter(|c| c.result != CheckResult::Inconclusive)
        .collect();
    let wsum: f64 = judged.iter().map(|c| c.weight).sum();
    let score = (wsum > 0.0).then(|| {
        100.0
            * judged
                .iter()
                .filter(|c| c.result == CheckResult::Pass)
                .map(|c| c.weight)
                .sum::<f64>()
            / wsum
    });
    let critical_fails: Vec<&Check> = checks
        .iter()
        .filter(|c| c.critical && c.result == CheckResult::Fail)
        .collect();
    let decision = if cn > 0 && cx == cn {
        reasons.push(format!(
            "the candidate `{}` answered none of its {cn} requests (unreachable or failing)",
            p.candidate
        ));
        Decision::NoGo
    } else if cn == 0 {
        reasons.push(format!(
            "the candidate `{}` has no replayed requests",
            p.candidate
        ));
        Decision::Inconclusive
    } else if bn < p.samples.min_overall || cn < p.samples.min_overall {
        reasons.push(format!(
            "too few requests to judge: baseline {bn}, candidate {cn} (the policy needs {} on each side)",
            p.samples.min_overall
        ));
        Decision::Inconclusive
    } else if !critical_fails.is_empty() {
        for c in &critical_fails {
            reasons.push(format!(
                "critical metric {} failed on {}: {}",
                c.metric, c.endpoint, c.explanation
            ));
        }
        Decision::NoGo
    } else if let Some(s) = score {
        if s >= p.score.pass {
            reasons.push(format!("score {s:.1} >= {:.1}", p.score.pass));
            Decision::Go
        } else if s >= p.score.marginal {
            reasons.push(format!(
                "score {s:.1} is between {:.1} and {:.1}",
                p.score.marginal, p.score.pass
            ));
            Decision::Marginal
        } else {
            reasons.push(format!("score {s:.1} < {:.1}", p.score.marginal));
            Decision::NoGo
        }
    } else {
        reasons.push("no metric had enough data to be judged".into());
        Decision::Inconclusive
    };
    for c in checks
        .iter()
        .filter(|c| !c.critical && c.result == CheckResult::Fail)
    {
        reasons.push(format!(
            "metric {} failed on {}: {}",
            c.metric, c.endpoint, c.explanation
        ));
    }
    if noise_source == "none" {
        reasons.push("no noise source (no second baseline and no recorded responses): every difference counts".into());
    }
    if stats.incomplete_groups > 0 {
        reasons.push(format!(
            "{} requests lack a row for some target; they were compared where possible",
            stats.incomplete_groups
        ));
    }

    let endpoints_summary = endpoints
        .iter()
        .map(|ep| EndpointSummary {
            endpoint: ep.clone(),
            targets: per.get(ep).cloned().unwrap_or_default(),
            pairs: cand_pairs.get(ep).map_or(0, |v| v.0),
            differing_pairs: cand_pairs.get(ep).map_or(0, |v| v.1),
            text_diff: stats
                .text_examples
                .get(&(ComparisonKind::Candidate, ep.clone()))
                .map(|t| t.1.clone()),
        })
        .collect();
    let mut thresholds = BTreeMap::new();
    thresholds.insert("pass".to_owned(), p.score.pass);
    thresholds.insert("marginal".to_owned(), p.score.marginal);
    Ok(Verdict {
        schema_version: VERDICT_SCHEMA_VERSION,
        verdict: decision,
        exit_code: decision.exit_code(opts.fail_on_marginal),
        score,
        thresholds,
        baseline: p.baseline.clone(),
        candidate: p.candidate.clone(),
        noise_source: noise_source.into(),
        reasons,
        checks,
        fields,
        endpoints: endpoints_summary,
        diff_rows: stats.rows,
        outputs: crate::pairs::parquet_files(&opts.out, "diffs"),
        policy: p.clone(),
    })
}

fn thin(sorted: &[f64], max: usize) -> Vec<f64> {
    if sorted.len() <= max {
        return sorted.to_vec();
    }
    (0..max)
        .map(|i| sorted[i * (sorted.len() - 1) / (max - 1)])
        .collect()
}

/// Classifies every field that differs between candidate and baseline.
fn classify(
    stats: &DiffStats,
    noise_kind: ComparisonKind,
    have_noise: bool,
    p: &Policy,
) -> Vec<FieldClass> {
    let mut out = Vec::new();
    for ((kind, ep, field), &n) in &stats.field_pairs {
        if *kind != ComparisonKind::Candidate {
            continue;
        }
        let pairs = stats
            .pairs
            .get(&(ComparisonKind::Candidate, ep.clone()))
            .copied()
            .unwrap_or(0)
            .max(1);
        let cand = n as f64 / pairs as f64;
        let noise_pairs = stats
            .pairs
            .get(&(noise_kind, ep.clone()))
            .copied()
            .unwrap_or(0);
        let noise_n = stats
            .field_pairs
            .get(&(noise_kind, ep.clone(), field.clone()))
            .copied()
            .unwrap_or(0);
        let noise = if noise_pairs > 0 {
            noise_n as f64 / noise_pairs as f64
        } else {
            0.0
        };
        let exceeds_rel = cand > noise * (1.0 + p.noise.relative);
        let exceeds_abs = cand - noise > p.noise.absolute;
        let is_noise = have_noise && noise_pairs > 0 && !(exceeds_rel && exceeds_abs);
        let reason = if !have_noise || noise_pairs == 0 {
            format!(
                "differs in {:.2}% of pairs; no noise measured for this endpoint, so it counts",
                cand * 100.0
            )
        } else if is_noise {
            format!(
                "differs in {:.2}% of candidate pairs and {:.2}% of noise pairs: within {:.0}% relative or {:.3}% absolute",
                cand * 100.0,
                noise * 100.0,
                p.noise.relative * 100.0,
                p.noise.absolute * 100.0
            )
        } else {
            format!(
                "differs in {:.2}% of candidate pairs but only {:.2}% of noise pairs (more than {:.0}% relative and {:.3}% absolute)",
                cand * 100.0,
                noise * 100.0,
                p.noise.relative * 100.0,
                p.noise.absolute * 100.0
            )
        };
        let example = stats
            .examples
            .get(&(ComparisonKind::Candidate, ep.clone(), field.clone()))
            .map(|(id, l, r, k)| (id.clone(), k.clone(), l.clone(), r.clone()));
        out.push(FieldClass {
            endpoint: ep.clone(),
            field: field.clone(),
            candidate_rate: cand,
            noise_rate: noise,
            noise: is_noise,
            reason,
            example,
        });
    }
    out.sort_by(|a, b| {
        (
            a.noise,
            -(a.candidate_rate * 1e9) as i64,
            &a.endpoint,
            &a.field,
        )
            .cmp(&(
                b.noise,
                -(b.candidate_rate * 1e9) as i64,
                &b.endpoint,
                &b.field,
            ))
    });
    out
}

/// Per endpoint: (pairs compared, pairs with a real difference).
type PairCounts = BTreeMap<String, (u64, u64)>;

/// Per endpoint: (pairs, pairs with a real difference) for the candidate and the noise
/// comparisons, counting only fields classified as real.
fn pair_counts(
    stats: &DiffStats,
    noise_kind: ComparisonKind,
    real: &BTreeSet<(String, String)>,
) -> (PairCounts, PairCounts) {
    let count = |kind: ComparisonKind| {
        let mut m: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for (e, ps) in stats
            .pair_fields
            .get(&kind)
            .map(Vec::as_slice)
            .unwrap_or(&[])
        {
            let ep = &stats.endpoints[*e as usize];
            let entry = m.entry(ep.clone()).or_default();
            entry.0 += 1;
            if ps
                .iter()
                .any(|p| real.contains(&(ep.clone(), stats.patterns[*p as usize].clone())))
            {
                entry.1 += 1;
            }
        }
        m
    };
    (count(ComparisonKind::Candidate), count(noise_kind))
}

#[allow(clippy::too_many_arguments)]
fn rate_check(
    metric: &str,
    ep: &str,
    mp: &MetricPolicy,
    base: (&str, u64, u64),
    cand: (&str, u64, u64),
    min: u64,
    sql: String,
    fields: Vec<String>,
) -> Check {
    let (bname, bn, bx) = base;
    let (cname, cn, cx) = cand;
    let rate = |x: u64, n: u64| (n > 0).then(|| x as f64 / n as f64);
    let side = |t: &str, n: u64, x: u64| SideValue {
        target: t.to_owned(),
        n,
        value: rate(x, n),
        events: Some(x),
        p90_ms: None,
        p99_ms: None,
    };
    let threshold = format!(
        "fails when one-sided p < {} and the increase exceeds {:.2} percentage points",
        mp.alpha,
        mp.max_increase * 100.0
    );
    let mut check = Check {
        metric: metric.into(),
        endpoint: ep.into(),
        result: CheckResult::Inconclusive,
        critical: mp.critical,
        weight: mp.weight,
        baseline: side(bname, bn, bx),
        candidate: side(cname, cn, cx),
        test: None,
        threshold,
        explanation: String::new(),
        sql,
        fields,
    };
    if bn < min || cn < min {
        check.explanation = format!("too few samples ({bn} and {cn}; {min} needed on each side)");
        return check;
    }
    let t = rate_higher(bx, bn, cx, cn).expect("non-empty");
    check.test = Some(TestOutcome {
        name: t.test.into(),
        p_value: Some(t.p_greater),
        z: t.z,
    });
    let (rb, rc) = (bx as f64 / bn as f64, cx as f64 / cn as f64);
    let fail = t.p_greater < mp.alpha && rc - rb > mp.max_increase;
    check.result = if fail {
        CheckResult::Fail
    } else {
        CheckResult::Pass
    };
    check.explanation = format!(
        "{:.2}% ({cx}/{cn}) vs {:.2}% ({bx}/{bn}); {} p = {}{}",
        rc * 100.0,
        rb * 100.0,
        t.test,
        crate::stats::fmt_p(t.p_greater),
        if fail {
            format!(
                ", and +{:.2} points exceeds {:.2}",
                (rc - rb) * 100.0,
                mp.max_increase * 100.0
            )
        } else if t.p_greater < mp.alpha {
            format!(
                ", but +{:.2} points is within {:.2}",
                (rc - rb) * 100.0,
                mp.max_increase * 100.0
            )
        } else {
            String::new()
        }
    );
    if metric == "diff_rate" && !check.fields.is_empty() && fail {
        check
            .explanation
            .push_str(&format!("; fields: {}", check.fields.join(", ")));
    }
    check
}

fn latency_check(
    ep: &str,
    mp: &MetricPolicy,
    base: (&str, &[f64]),
    cand: (&str, &[f64]),
    min: u64,
    sql: String,
) -> Check {
    let side = |t: &str, s: &[f64]| SideValue {
        target: t.to_owned(),
        n: s.len() as u64,
        value: quantile(s, 0.5),
        events: None,
        p90_ms: quantile(s, 0.9),
        p99_ms: quantile(s, 0.99),
    };
    let mut check = Check {
        metric: "latency".into(),
        endpoint: ep.into(),
        result: CheckResult::Inconclusive,
        critical: mp.critical,
        weight: mp.weight,
        baseline: side(base.0, base.1),
        candidate: side(cand.0, cand.1),
        test: None,
        threshold: format!("fails when Mann-Whitney one-sided p < {} and the candidate's median exceeds {:.2}x the baseline's (higher is worse)", mp.alpha, mp.max_ratio),
        explanation: String::new(),
        sql,
        fields: Vec::new(),
    };
    let (bn, cn) = (base.1.len() as u64, cand.1.len() as u64);
    if bn < min || cn < min {
        check.explanation = format!("too few responses ({bn} and {cn}; {min} needed on each side)");
        return check;
    }
    let mw = mann_whitney(base.1, cand.1).expect("non-empty");
    check.test = Some(TestOutcome {
        name: "mann_whitney_u".into(),
        p_value: Some(mw.p_greater),
        z: Some(mw.z),
    });
    let (mb, mc) = (
        quantile(base.1, 0.5).unwrap_or(0.0),
        quantile(cand.1, 0.5).unwrap_or(0.0),
    );
    let ratio = if mb > 0.0 {
        mc / mb
    } else if mc > 0.0 {
        f64::INFINITY
    } else {
        1.0
    };
    let fail = mw.p_greater < mp.alpha && ratio > mp.max_ratio;
    check.result = if fail {
        CheckResult::Fail
    } else {
        CheckResult::Pass
    };
    check.explanation = format!(
        "median {mc:.2} ms vs {mb:.2} ms ({ratio:.2}x); Mann-Whitney p = {}{}",
        crate::stats::fmt_p(mw.p_greater),
        if fail {
            format!(", and {ratio:.2}x exceeds {:.2}x", mp.max_ratio)
        } else {
            String::new()
        }
    );
    check
}

/// Writes `verdict.json`, `report.md`, `junit.xml` and `report.html` into `out`.
pub fn write_reports(v: &mut Verdict, out: &Path) -> Result<(), AnalyzeError> {
    let files = [
        ("report.md", crate::report::markdown(v)),
        ("junit.xml", crate::report::junit(v)),
        ("report.html", crate::report::html(v)),
    ];
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|source| AnalyzeError::Io {
            path: path.clone(),
            source,
        })?;
        v.outputs.push(path);
    }
    let path = out.join("verdict.json");
    v.outputs.push(path.clone());
    let text = serde_json::to_string_pretty(v).map_err(|e| AnalyzeError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&path, text).map_err(|source| AnalyzeError::Io { path, source })?;
    let _ = DIFFS_SCHEMA_VERSION;
    Ok(())
}

//! The judge: measurements and a policy in, a decision with its reasons out. A pure function
//! (no I/O), unit-tested on hand-built measurements and calibrated by
//! `analyzer/tests/calibration.rs`.
//!
//! Rules, in order:
//! 1. No pair at all: inconclusive.
//! 2. Health guards: the baseline errs far more than production did, or its status-class mix
//!    is far from production's (or, with nothing recorded, it answered almost nothing 2xx/3xx):
//!    inconclusive, since the comparison compared nothing valid.
//! 3. The candidate answered no request (or only errors) while the baseline is healthy: no-go.
//! 4. Fewer than `samples.min_overall` pairs where both answered: inconclusive.
//! 5. A failed check of a critical metric: no-go.
//! 6. No check judged: inconclusive.
//! 7. Otherwise the score (weighted share of judged checks that pass) against the thresholds.
//!
//! Checks are one-sided (the candidate worse) and family-wise controlled: each metric has an
//! `alpha`; half goes to its endpoint checks, half to its overall checks, each half adjusted by
//! [`tarone_bonferroni`]. With a second baseline every check is made against both copies of the
//! current version and fails only when both fail (an intersection–union test: the candidate
//! must be worse than what two copies of the current version show between them).

use std::collections::BTreeMap;

use crate::measure::{EndpointMeasure, LatencyMeasure, Measurements, RateMeasure};
use crate::policy::{MetricPolicy, Policy};
use crate::stats::{fmt_p, tarone_bonferroni};
use crate::units::NoiseSource;
use crate::verdict::{Check, CheckResult, Decision, FieldClass, NotJudged, SideValue, TestOutcome};

mod decide;
use decide::decide;

/// What the judge decided.
#[derive(Debug, Clone)]
pub struct Judgement {
    /// The decision.
    pub decision: Decision,
    /// The score, when something was judged.
    pub score: Option<f64>,
    /// Why, most important first.
    pub reasons: Vec<String>,
    /// What was not calibrated or not checked.
    pub notes: Vec<String>,
    /// Every check.
    pub checks: Vec<Check>,
    /// Every field tested.
    pub fields: Vec<FieldClass>,
    /// Endpoints not judged.
    pub not_judged: Vec<NotJudged>,
    /// Per endpoint: pairs with a difference counted against the candidate.
    pub differing_pairs: BTreeMap<String, u64>,
}

/// A check before the family adjustment.
struct Pending {
    check: Check,
    /// Raw p (the largest over references), smallest attainable p.
    p: f64,
    min_p: f64,
    /// The effect is beyond the policy's bounds against every reference.
    large: bool,
    /// Enough units to pass.
    enough: bool,
    overall: bool,
}

fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn ep_filter(ep: &str) -> String {
    if ep == "overall" {
        String::new()
    } else {
        format!(" AND method || ' ' || path_template(path) = {}", q(ep))
    }
}

/// Judges measurements under a policy.
pub fn judge(m: &Measurements, p: &Policy) -> Judgement {
    let mut pending: Vec<Pending> = Vec::new();
    let all: Vec<&EndpointMeasure> = m.endpoints.iter().chain([&m.overall]).collect();
    for e in &all {
        let overall = e.name == "overall";
        let min = if overall {
            p.samples.min_overall
        } else {
            p.samples.min_endpoint
        };
        if p.metrics.error_rate.enabled {
            pending.push(error_check(m, e, &p.metrics.error_rate, min, overall));
        }
        if p.metrics.latency.enabled {
            pending.extend(latency_checks(m, e, &p.metrics.latency, min, overall));
        }
    }
    let (field_classes, mut diff_checks, differing) = if p.metrics.diff_rate.enabled {
        diff_checks(m, p)
    } else {
        (Vec::new(), Vec::new(), BTreeMap::new())
    };
    // Families: per metric, endpoints and overall, each at alpha / 2.
    for (metric, mp) in [
        ("error_rate", &p.metrics.error_rate),
        ("latency", &p.metrics.latency),
    ] {
        for overall in [false, true] {
            let idx: Vec<usize> = (0..pending.len())
                .filter(|&i| pending[i].check.metric == metric && pending[i].overall == overall)
                .collect();
            let alpha = mp.alpha / 2.0;
            let ps: Vec<f64> = idx.iter().map(|&i| pending[i].p).collect();
            let mins: Vec<f64> = idx.iter().map(|&i| pending[i].min_p).collect();
            let (adj, k) = tarone_bonferroni(&ps, &mins, alpha);
            for (j, &i) in idx.iter().enumerate() {
                let c = &mut pending[i];
                c.check.family = format!(
                    "{metric}/{} (alpha {alpha}, Tarone-Bonferroni over {k} of {} checks)",
                    if overall { "overall" } else { "endpoints" },
                    idx.len()
                );
                // A check Tarone left out (it could never reach alpha / K) is not adjusted by
                // K: it is not tested, and its adjusted p is 1.
                let excluded = mins[j] > alpha / k as f64;
                for t in c.check.tests.iter_mut() {
                    t.p_adjusted = t.p_value.map(|pv| {
                        if excluded {
                            1.0
                        } else {
                            (pv * k as f64).min(1.0)
                        }
                    });
                }
                if let Some(t) = c.check.test.as_mut() {
                    t.p_adjusted = Some(adj[j]);
                }
                let fail = adj[j] < alpha && c.large;
                c.check.result = if fail {
                    CheckResult::Fail
                } else if c.enough {
                    CheckResult::Pass
                } else {
                    CheckResult::Inconclusive
                };
                finish_explanation(&mut c.check, fail, c.enough, adj[j], alpha);
            }
        }
    }
    let mut checks: Vec<Check> = pending.into_iter().map(|c| c.check).collect();
    checks.append(&mut diff_checks);
    decide(m, p, checks, field_classes, differing)
}

fn finish_explanation(c: &mut Check, fail: bool, enough: bool, adj: f64, alpha: f64) {
    let verdict = if fail {
        format!("; adjusted p = {} < {alpha}: fails", fmt_p(adj))
    } else if adj < alpha {
        format!(
            "; adjusted p = {} < {alpha} but the effect is within the bounds",
            fmt_p(adj)
        )
    } else if enough {
        format!("; adjusted p = {}: passes", fmt_p(adj))
    } else {
        format!(
            "; adjusted p = {}: too few pairs to pass ({} on this side)",
            fmt_p(adj),
            c.candidate.n
        )
    };
    c.explanation.push_str(&verdict);
}

fn side(target: &str, n: u64, value: Option<f64>, events: Option<u64>) -> SideValue {
    SideValue {
        target: target.to_owned(),
        n,
        value,
        events,
        p90_ms: None,
        p99_ms: None,
    }
}

/// The paired test on rates: McNemar's exact test, which with `--loop` is the sign test on
/// exchanges.
fn rate_test_name(m: &Measurements) -> &'static str {
    if m.clustered {
        "sign_test_on_exchanges"
    } else {
        "mcnemar_exact"
    }
}

/// Both sides of a paired rate check: the reference, and the candidate on the same pairs.
fn rate_sides(m: &Measurements, r: &RateMeasure) -> (SideValue, SideValue) {
    (
        side(
            &r.reference,
            r.n,
            Some(r.reference_rate()),
            Some(r.reference_events),
        ),
        side(
            &m.candidate,
            r.n,
            Some(r.candidate_rate()),
            Some(r.candidate_events),
        ),
    )
}

fn rate_test(name: &str, r: &RateMeasure) -> TestOutcome {
    TestOutcome {
        name: name.into(),
        reference: r.reference.clone(),
        p_value: Some(r.p),
        p_adjusted: None,
        z: None,
        effect: Some(r.difference.estimate),
        effect_low: Some(r.difference.low),
        effect_high: Some(r.difference.high),
        discordant: Some((r.worse, r.better)),
    }
}

/// An increase is large when it exceeds the absolute bound and the relative one.
fn large_increase(r: &RateMeasure, abs: f64, rel: f64) -> bool {
    let (c, b) = (r.candidate_rate(), r.reference_rate());
    c - b > abs && c > b * (1.0 + rel)
}

fn error_check(
    m: &Measurements,
    e: &EndpointMeasure,
    mp: &MetricPolicy,
    min: u64,
    overall: bool,
) -> Pending {
    let name = rate_test_name(m);
    let tests: Vec<TestOutcome> = e.errors.iter().map(|r| rate_test(name, r)).collect();
    let deciding = e
        .errors
        .iter()
        .max_by(|a, b| a.p.total_cmp(&b.p))
        .cloned()
        .unwrap_or_default();
    let p_max = deciding.p;
    let min_p = e.errors.iter().map(|r| r.min_p).fold(0.0, f64::max);
    let large = !e.errors.is_empty()
        && e.errors
            .iter()
            .all(|r| large_increase(r, mp.max_increase, mp.max_relative));
    let base = &e.errors[0];
    let (baseline, candidate) = rate_sides(m, base);
    let explanation = format!(
        "{:.2}% ({}/{}) vs {:.2}% ({}/{}); {} candidate-only and {} {}-only error units; raw p = {}",
        base.candidate_rate() * 100.0,
        base.candidate_events,
        base.n,
        base.reference_rate() * 100.0,
        base.reference_events,
        base.n,
        base.worse,
        base.better,
        base.reference,
        fmt_p(p_max)
    );
    let check = Check {
        metric: "error_rate".into(),
        quantity: None,
        endpoint: e.name.clone(),
        result: CheckResult::Inconclusive,
        critical: mp.critical,
        weight: mp.weight,
        baseline,
        candidate,
        test: Some(rate_test(name, &deciding)),
        tests,
        family: String::new(),
        threshold: format!(
            "fails when the adjusted one-sided p < alpha and the increase exceeds {:.2} points and {:.0}% of the reference's rate",
            mp.max_increase * 100.0,
            mp.max_relative * 100.0
        ),
        explanation,
        sql: format!(
            "SELECT target, count(*) AS requests, sum(CASE WHEN status IS NULL OR status >= 500 THEN 1 ELSE 0 END) AS errors FROM replays WHERE (error_kind IS NULL OR error_kind NOT IN ('dropped', 'unreplayable', 'hook')){} GROUP BY target",
            ep_filter(&e.name)
        ),
        fields: Vec::new(),
    };
    Pending {
        check,
        p: p_max,
        min_p,
        large,
        enough: base.units >= min.max(1),
        overall,
    }
}

fn latency_checks(
    m: &Measurements,
    e: &EndpointMeasure,
    mp: &MetricPolicy,
    min: u64,
    overall: bool,
) -> Vec<Pending> {
    let mut out = Vec::new();
    let Some(base) = e.latency.first() else {
        return out;
    };
    let ms_side = |target: &str, l: &LatencyMeasure, cand: bool| {
        let v = if cand { l.candidate_ms } else { l.reference_ms };
        SideValue {
            target: target.to_owned(),
            n: l.n,
            value: v[0],
            events: None,
            p90_ms: v[1],
            p99_ms: v[2],
        }
    };
    let sql = format!(
        "SELECT target, count(*) AS n, approx_percentile_cont(total_us / 1000.0, 0.5) AS p50_ms FROM replays WHERE (error_kind IS NULL OR error_kind NOT IN ('dropped', 'unreplayable', 'hook')){} GROUP BY target  -- the test uses per-request log ratios candidate/baseline; unanswered requests are censored (worse than any answer)",
        ep_filter(&e.name)
    );
    // The centre.
    let centre_test = |l: &LatencyMeasure| TestOutcome {
        name: "wilcoxon_signed_rank".into(),
        reference: l.reference.clone(),
        p_value: Some(l.p_centre),
        p_adjusted: None,
        z: None,
        effect: l.centre.map(|c| c.estimate.exp()),
        effect_low: l.centre.map(|c| c.low.exp()),
        effect_high: l.centre.map(|c| c.high.exp()),
        discordant: None,
    };
    let tests: Vec<TestOutcome> = e.latency.iter().map(centre_test).collect();
    let deciding = e
        .latency
        .iter()
        .max_by(|a, b| a.p_centre.total_cmp(&b.p_centre))
        .unwrap_or(base);
    let ratio = base.centre.map_or(1.0, |c| c.estimate.exp());
    let explanation = format!(
        "per-request ratio centre (Hodges-Lehmann) {} [95% CI {}-{}] against {}; medians {} ms vs {} ms; raw p (ratio > {:.2}) = {}",
        fmt_ratio(ratio),
        fmt_ratio(base.centre.map_or(1.0, |c| c.low.exp())),
        fmt_ratio(base.centre.map_or(1.0, |c| c.high.exp())),
        base.reference,
        fmt_ms(base.candidate_ms[0]),
        fmt_ms(base.reference_ms[0]),
        mp.max_ratio,
        fmt_p(deciding.p_centre)
    );
    out.push(Pending {
        check: Check {
            metric: "latency".into(),
            quantity: Some("centre".into()),
            endpoint: e.name.clone(),
            result: CheckResult::Inconclusive,
            critical: mp.critical,
            weight: mp.weight,
            baseline: ms_side(&base.reference, base, false),
            candidate: ms_side(&m.candidate, base, true),
            test: Some(centre_test(deciding)),
            tests,
            family: String::new(),
            threshold: format!(
                "fails when the adjusted one-sided p of \"the centre of candidate/baseline ratios exceeds {:.2}\" < alpha",
                mp.max_ratio
            ),
            explanation,
            sql: sql.clone(),
            fields: Vec::new(),
        },
        p: deciding.p_centre,
        min_p: e.latency.iter().map(|l| l.min_p).fold(0.0, f64::max),
        large: true,
        enough: base.units >= min.max(1),
        overall,
    });
    // A share of requests much slower (sign test on pairs beyond max_ratio_p99 either way).
    {
        let tests: Vec<TestOutcome> = e
            .latency
            .iter()
            .map(|l| rate_test(rate_test_name(m), &l.slow))
            .collect();
        let deciding = e
            .latency
            .iter()
            .max_by(|a, b| a.slow.p.total_cmp(&b.slow.p))
            .unwrap_or(base);
        let s = &base.slow;
        let (baseline, candidate) = rate_sides(m, s);
        let explanation = format!(
            "{:.2}% of requests more than {:.1}x slower on the candidate ({}/{}), {:.2}% more than {:.1}x slower on {} ({}); raw p = {}",
            s.candidate_rate() * 100.0,
            mp.slow_ratio,
            s.candidate_events,
            s.n,
            s.reference_rate() * 100.0,
            mp.slow_ratio,
            s.reference,
            s.reference_events,
            fmt_p(deciding.slow.p)
        );
        out.push(Pending {
            check: Check {
                metric: "latency".into(),
                quantity: Some("slow_share".into()),
                endpoint: e.name.clone(),
                result: CheckResult::Inconclusive,
                critical: mp.critical,
                weight: mp.weight,
                baseline,
                candidate,
                test: Some(rate_test(rate_test_name(m), &deciding.slow)),
                tests,
                family: String::new(),
                threshold: format!(
                    "fails when requests more than {:.1}x slower on the candidate outnumber those more than {:.1}x slower on the reference (adjusted p < alpha) by more than {:.2} points",
                    mp.slow_ratio, mp.slow_ratio, mp.max_increase * 100.0
                ),
                explanation,
                sql: sql.clone(),
                fields: Vec::new(),
            },
            p: deciding.slow.p,
            min_p: e.latency.iter().map(|l| l.slow.min_p).fold(0.0, f64::max),
            large: e.latency.iter().all(|l| {
                l.slow.candidate_rate() - l.slow.reference_rate() > mp.max_increase
            }),
            enough: base.units >= min.max(1),
            overall,
        });
    }
    // The tails, where every reference has them.
    for (i, tail) in base.tails.iter().enumerate() {
        let per: Vec<_> = e
            .latency
            .iter()
            .filter_map(|l| l.tails.get(i).map(|t| (l, t)))
            .collect();
        if per.len() != e.latency.len() {
            continue;
        }
        let bound = if tail.q > 0.95 {
            mp.max_ratio_p99
        } else {
            mp.max_ratio_p90
        };
        let label = if tail.q > 0.95 { "p99" } else { "p90" };
        let tests: Vec<TestOutcome> = per
            .iter()
            .map(|(l, t)| TestOutcome {
                name: "cluster_bootstrap".into(),
                reference: l.reference.clone(),
                p_value: Some(t.p),
                p_adjusted: None,
                z: (t.se > 0.0).then(|| (t.log_ratio - bound.ln()) / t.se),
                effect: Some(t.log_ratio.exp()),
                effect_low: Some((t.log_ratio - 1.96 * t.se).exp()),
                effect_high: Some((t.log_ratio + 1.96 * t.se).exp()),
                discordant: None,
            })
            .collect();
        let p = per.iter().map(|(_, t)| t.p).fold(0.0, f64::max);
        let deciding = tests
            .iter()
            .max_by(|a, b| {
                a.p_value
                    .unwrap_or(1.0)
                    .total_cmp(&b.p_value.unwrap_or(1.0))
            })
            .cloned();
        let explanation = format!(
            "{label} {} ms vs {} ms ({} [95% CI {}-{}]) against {}; raw p (ratio > {bound:.2}) = {}",
            fmt_ms(base.candidate_ms[if tail.q > 0.95 { 2 } else { 1 }]),
            fmt_ms(base.reference_ms[if tail.q > 0.95 { 2 } else { 1 }]),
            fmt_ratio(tail.log_ratio.exp()),
            fmt_ratio((tail.log_ratio - 1.96 * tail.se).exp()),
            fmt_ratio((tail.log_ratio + 1.96 * tail.se).exp()),
            base.reference,
            fmt_p(p)
        );
        out.push(Pending {
            check: Check {
                metric: "latency".into(),
                quantity: Some(label.into()),
                endpoint: e.name.clone(),
                result: CheckResult::Inconclusive,
                critical: mp.critical,
                weight: mp.weight,
                baseline: ms_side(&base.reference, base, false),
                candidate: ms_side(&m.candidate, base, true),
                test: deciding,
                tests,
                family: String::new(),
                threshold: format!(
                    "fails when the adjusted one-sided p of \"the {label} ratio exceeds {bound:.2}\" < alpha (pair bootstrap standard error)"
                ),
                explanation,
                sql: sql.clone(),
                fields: Vec::new(),
            },
            p,
            min_p: 0.0,
            large: true,
            enough: base.units >= min.max(1),
            overall,
        });
    }
    out
}

fn fmt_ratio(r: f64) -> String {
    if r > 1e6 {
        "censored (no answer)".into()
    } else {
        format!("{r:.2}x")
    }
}

fn fmt_ms(v: Option<f64>) -> String {
    match v {
        Some(x) if x.is_finite() => format!("{x:.2}"),
        Some(_) => "no answer".into(),
        None => "-".into(),
    }
}

/// Field tests (one family over every endpoint) and the overall "differs at all" check.
fn diff_checks(
    m: &Measurements,
    p: &Policy,
) -> (Vec<FieldClass>, Vec<Check>, BTreeMap<String, u64>) {
    let mp = &p.metrics.diff_rate;
    let alpha = mp.alpha / 2.0;
    // One family: every field on every endpoint, and every field over the whole service.
    let tests: Vec<&crate::measure::FieldMeasure> =
        m.fields.iter().chain(&m.service_fields).collect();
    let ps: Vec<f64> = tests.iter().map(|f| f.p).collect();
    let mins: Vec<f64> = tests.iter().map(|f| f.min_p).collect();
    let (adj, k) = tarone_bonferroni(&ps, &mins, alpha);
    let mut classes = Vec::new();
    let mut failing: BTreeMap<u32, Vec<(String, f64)>> = BTreeMap::new();
    // Fields failing on some endpoint: the same field over the service adds nothing to them.
    let mut failing_fields = std::collections::BTreeSet::new();
    let noise_name = noise_name(m.noise);
    for (f, &a) in tests.iter().zip(&adj) {
        let service = f.endpoint == crate::measure::EVERY_ENDPOINT;
        if service && failing_fields.contains(&f.field) {
            continue;
        }
        let rate = |x: u64| {
            if f.pairs == 0 {
                0.0
            } else {
                x as f64 / f.pairs as f64
            }
        };
        let (c, n) = (rate(f.candidate), rate(f.noise));
        let large = c - n > p.noise.absolute && c > n * (1.0 + p.noise.relative);
        let fail = a < alpha && large;
        let (name, kind) = &m.field_names[f.field as usize];
        let ep = if service {
            &m.overall.name
        } else {
            &m.endpoints[f.endpoint as usize].name
        };
        let reason = format!(
            "differs in {:.2}% of candidate pairs and {:.2}% of {noise_name} pairs ({} exchanges only in the candidate, {} only in noise); raw p = {}, adjusted p = {}{}",
            c * 100.0,
            n * 100.0,
            f.worse,
            f.better,
            fmt_p(f.p),
            fmt_p(a),
            if fail {
                ": counts against the candidate".to_owned()
            } else if a < alpha {
                format!(": significant but within {:.0}% relative and {:.2} points", p.noise.relative * 100.0, p.noise.absolute * 100.0)
            } else {
                ": noise".to_owned()
            }
        );
        if fail {
            failing
                .entry(f.endpoint)
                .or_default()
                .push((format!("{name} ({kind})"), a));
            failing_fields.insert(f.field);
        }
        if service && !fail {
            // The per-endpoint rows already say what is noise; a service-wide one is shown
            // when it is what fails.
            continue;
        }
        classes.push(FieldClass {
            endpoint: ep.clone(),
            field: name.clone(),
            kind: kind.clone(),
            candidate_rate: c,
            noise_rate: n,
            pairs: f.pairs,
            p_value: f.p,
            p_adjusted: a,
            noise: !fail,
            reason,
            example: None,
        });
    }
    classes.sort_by(|a, b| {
        (a.noise, a.p_adjusted.to_bits(), &a.endpoint, &a.field).cmp(&(
            b.noise,
            b.p_adjusted.to_bits(),
            &b.endpoint,
            &b.field,
        ))
    });
    let mut checks = Vec::new();
    let mut differing = BTreeMap::new();
    for (i, e) in m.endpoints.iter().enumerate() {
        let fails = failing.get(&(i as u32)).cloned().unwrap_or_default();
        differing.insert(
            e.name.clone(),
            if fails.is_empty() {
                0
            } else {
                e.differs.candidate_events
            },
        );
        let best = fails.iter().map(|f| f.1).fold(1.0, f64::min);
        let enough = e.differs.units >= p.samples.min_endpoint.max(1);
        let result = if !fails.is_empty() {
            CheckResult::Fail
        } else if enough {
            CheckResult::Pass
        } else {
            CheckResult::Inconclusive
        };
        let fields: Vec<String> = fails
            .iter()
            .map(|f| format!("{} {}", e.name, f.0))
            .collect();
        let explanation = if fails.is_empty() {
            format!(
                "no field differs beyond noise ({} pairs compared{})",
                e.differs.n,
                if enough { "" } else { "; too few to pass" }
            )
        } else {
            format!("fields differing beyond noise: {}", names(&fails))
        };
        checks.push(diff_check(
            m,
            e,
            mp,
            result,
            explanation,
            fields,
            best,
            &format!(
                "diff_rate/fields (alpha {alpha}, Tarone-Bonferroni over {k} of {} field tests)",
                tests.len()
            ),
        ));
    }
    // Overall: does the candidate differ at all more often than noise does, or does one field
    // across the service?
    let o = &m.overall.differs;
    let service_fails = failing
        .remove(&crate::measure::EVERY_ENDPOINT)
        .unwrap_or_default();
    let oa = service_fails
        .iter()
        .map(|f| f.1)
        .fold(o.p.min(1.0), f64::min);
    let large = large_increase(o, mp.max_increase, p.noise.relative);
    let any_field = o.p < alpha && large;
    let fail = any_field || !service_fails.is_empty();
    let enough = o.units >= p.samples.min_overall.max(1);
    let result = if fail {
        CheckResult::Fail
    } else if enough {
        CheckResult::Pass
    } else {
        CheckResult::Inconclusive
    };
    let mut explanation = format!(
        "{:.2}% of candidate pairs differ in some field vs {:.2}% of {noise_name} pairs ({} exchanges only in the candidate, {} only in noise); p = {}{}",
        o.candidate_rate() * 100.0,
        o.reference_rate() * 100.0,
        o.worse,
        o.better,
        fmt_p(o.p),
        if any_field { ": fails" } else { "" }
    );
    if !service_fails.is_empty() {
        explanation.push_str(&format!(
            "; fields differing beyond noise across the service: {}",
            names(&service_fails)
        ));
    }
    checks.push(diff_check(
        m,
        &m.overall,
        mp,
        result,
        explanation,
        service_fails
            .iter()
            .map(|f| format!("overall {}", f.0))
            .collect(),
        oa,
        &format!(
            "diff_rate/overall (alpha {alpha}; its fields in the Tarone-Bonferroni family above)"
        ),
    ));
    (classes, checks, differing)
}

/// The names of failing fields, comma-separated.
fn names(fails: &[(String, f64)]) -> String {
    fails
        .iter()
        .map(|f| f.0.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The noise comparison, as the reports name it.
fn noise_name(n: NoiseSource) -> String {
    match n {
        NoiseSource::None => "no noise source".to_owned(),
        n => format!("noise ({})", n.as_str()),
    }
}

#[allow(clippy::too_many_arguments)]
fn diff_check(
    m: &Measurements,
    e: &EndpointMeasure,
    mp: &MetricPolicy,
    result: CheckResult,
    explanation: String,
    fields: Vec<String>,
    p_adj: f64,
    family: &str,
) -> Check {
    let d = &e.differs;
    let (mut baseline, candidate) = rate_sides(m, d);
    baseline.target = noise_name(m.noise);
    let mut test = rate_test("mcnemar_exact", d);
    test.reference = baseline.target.clone();
    test.p_adjusted = Some(p_adj);
    Check {
        metric: "diff_rate".into(),
        quantity: None,
        endpoint: e.name.clone(),
        result,
        critical: mp.critical,
        weight: mp.weight,
        baseline,
        candidate,
        test: Some(test),
        tests: Vec::new(),
        family: family.to_owned(),
        threshold: "per field and kind of difference: fails when the candidate differs significantly more often than noise on the same exchanges (adjusted p < alpha) by more than noise.relative and noise.absolute".into(),
        explanation,
        sql: format!(
            "SELECT comparison, d.pattern, d.kind, count(*) FROM (SELECT comparison, endpoint, unnest(differences) AS d FROM diffs{}) GROUP BY 1, 2, 3 ORDER BY 4 DESC",
            if e.name == "overall" { String::new() } else { format!(" WHERE endpoint = {}", q(&e.name)) }
        ),
        fields,
    }
}

#[cfg(test)]
#[path = "judge_tests.rs"]
mod tests;

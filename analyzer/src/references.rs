//! The references checked before they are trusted.
//!
//! Every error and latency check asks the candidate to be worse than each reference (the
//! baseline, and the second baseline when it ran), so one reference that is dead, failing or
//! slow makes the candidate look no worse than it and hides a regression: with the second
//! baseline refusing connections, a candidate answering 500 to 10% of requests was GO.
//!
//! So the two references are first compared with each other, as an A/A test in both directions
//! ([`disagreements`]): per endpoint and over the service, their error rates (McNemar's exact
//! test on the pairs, the effect beyond the policy's rate bounds) and the centre of their
//! latency ratios (signed-rank test against the policy's centre bound), Bonferroni over every
//! test at [`REFERENCE_ALPHA`]. The second baseline stands for the current version where the
//! candidate runs (another host, the mirror's path): slower than the baseline *and* than the
//! candidate on the same endpoint, it stands for nothing the candidate shares. Then
//! ([`judge_set`]):
//! - the second baseline worse than both: it is not a reference; the candidate is judged
//!   against the baseline alone on errors and latency (its fields, calibrated by the second
//!   baseline's noise, are not judged). A NO-GO there stands; anything else is INCONCLUSIVE,
//!   naming the reference and the figure;
//! - the baseline worse than the second baseline: the baseline is suspect (the health guards
//!   against the recording did not catch it); a NO-GO (worse than both) stands, a GO or a
//!   MARGINAL becomes INCONCLUSIVE.
//!
//! Never GO on references that disagree.

use crate::judge::{judge, Judgement};
use crate::measure::{measure, Measurements};
use crate::policy::Policy;
use crate::stats::{log_ratio, quantile, sign_test_greater, wilcoxon_greater};
use crate::units::{NoiseSource, Pair, PairSet};
use crate::Decision;

/// The family-wise false-alarm rate of the reference comparison: the share of runs with two
/// healthy references that are called INCONCLUSIVE for it (at most).
pub const REFERENCE_ALPHA: f64 = 0.01;

/// One way one reference is worse than the other.
#[derive(Debug, Clone, PartialEq)]
pub struct Disagreement {
    /// The worse reference.
    pub worse: String,
    /// The other.
    pub than: String,
    /// An endpoint, or `overall`.
    pub endpoint: String,
    /// What, with the figures.
    pub figure: String,
}

/// (worse, other) for each pair where both sides answered.
type Sides = fn(&Pair) -> Option<(crate::units::Obs, crate::units::Obs)>;

/// The metric a [`Disagreement`] is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// 5xx and transport errors.
    Errors,
    /// The centre of the latency ratios.
    Latency,
}

/// Where and how one side is significantly worse than another.
fn worse_on(
    set: &PairSet,
    policy: &Policy,
    sides: Sides,
    level: f64,
) -> Vec<(String, Metric, String)> {
    let mut groups: Vec<(String, Vec<usize>)> = set
        .endpoints
        .iter()
        .map(|e| (e.clone(), Vec::new()))
        .collect();
    for (i, p) in set.pairs.iter().enumerate() {
        groups[p.endpoint as usize].1.push(i);
    }
    groups.push(("overall".to_owned(), (0..set.pairs.len()).collect()));
    let er = &policy.metrics.error_rate;
    let lat = &policy.metrics.latency;
    let mut out = Vec::new();
    for (endpoint, idx) in &groups {
        // The unit is the exchange, as in `measure`: the passes of one exchange (`--loop`)
        // are one cluster, counted once (sign of its summed errors, median latency ratio).
        let mut clusters: Vec<Vec<(crate::units::Obs, crate::units::Obs)>> = Vec::new();
        let mut last = None;
        for &i in idx {
            let Some(o) = sides(&set.pairs[i]) else {
                continue;
            };
            let c = set.pairs[i].cluster;
            if last != Some(c) {
                clusters.push(Vec::new());
                last = Some(c);
            }
            if let Some(v) = clusters.last_mut() {
                v.push(o);
            }
        }
        let pairs: usize = clusters.iter().map(Vec::len).sum();
        if pairs == 0 {
            continue;
        }
        let n = pairs as f64;
        // Errors: discordant exchanges, and the effect beyond the policy's bounds.
        let (mut w, mut t, mut ea, mut eb) = (0u64, 0u64, 0u64, 0u64);
        for c in &clusters {
            let a = c.iter().filter(|(a, _)| a.error()).count() as u64;
            let b = c.iter().filter(|(_, b)| b.error()).count() as u64;
            ea += a;
            eb += b;
            match a.cmp(&b) {
                std::cmp::Ordering::Greater => w += 1,
                std::cmp::Ordering::Less => t += 1,
                std::cmp::Ordering::Equal => {}
            }
        }
        let (ra, rb) = (ea as f64 / n, eb as f64 / n);
        let p_err = sign_test_greater(w, t);
        if er.enabled
            && p_err <= level
            && ra - rb > er.max_increase
            && ra - rb > er.max_relative * rb
        {
            out.push((
                endpoint.clone(),
                Metric::Errors,
                format!(
                    "error rate {:.2}% against {:.2}% on the same {pairs} requests (p = {})",
                    ra * 100.0,
                    rb * 100.0,
                    crate::stats::fmt_p(p_err)
                ),
            ));
        }
        // Latency: the centre of the exchanges' median log ratios against the policy's bound.
        let d: Vec<f64> = clusters
            .iter()
            .filter_map(|c| {
                let mut r: Vec<f64> = c
                    .iter()
                    .filter(|(a, b)| a.answered() && b.answered())
                    .map(|(a, b)| log_ratio(a.latency(), b.latency()))
                    .collect();
                r.sort_by(f64::total_cmp);
                quantile(&r, 0.5)
            })
            .collect();
        if !lat.enabled || d.len() < 10 {
            continue;
        }
        let p_lat = wilcoxon_greater(&d, lat.max_ratio.ln()).p_greater;
        if p_lat <= level {
            let mut sorted = d.clone();
            sorted.sort_by(f64::total_cmp);
            let median = quantile(&sorted, 0.5).unwrap_or(0.0).exp();
            out.push((
                endpoint.clone(),
                Metric::Latency,
                format!(
                    "latency {median:.2}x on the same {} requests (bound {:.2}x, p = {})",
                    d.len(),
                    lat.max_ratio,
                    crate::stats::fmt_p(p_lat)
                ),
            ));
        }
    }
    out
}

/// Every significant way one reference is worse than the other that matters (empty without a
/// second baseline): the baseline worse than the second baseline; the second baseline worse
/// than the baseline *and* than the candidate on the same endpoint and metric. (The second
/// baseline stands for the current version where the candidate runs: slower than the baseline
/// like the candidate is, it calibrates a difference of host or path, as it should; slower
/// than the candidate too, it stands for nothing the candidate shares.)
pub fn disagreements(set: &PairSet, policy: &Policy) -> Vec<Disagreement> {
    let Some(b2) = set.baseline2.clone() else {
        return Vec::new();
    };
    let b = set.baseline.clone();
    // Two metrics, three comparisons, every endpoint and overall.
    let level = REFERENCE_ALPHA / (6 * (set.endpoints.len() + 1)) as f64;
    let b2_than_b = worse_on(set, policy, |p| p.baseline2.map(|o| (o, p.baseline)), level);
    let b2_than_c = worse_on(
        set,
        policy,
        |p| p.baseline2.map(|o| (o, p.candidate)),
        level,
    );
    let b_than_b2 = worse_on(set, policy, |p| p.baseline2.map(|o| (p.baseline, o)), level);
    let mut out: Vec<Disagreement> = b2_than_b
        .into_iter()
        .filter(|(e, m, _)| b2_than_c.iter().any(|(e2, m2, _)| e2 == e && m2 == m))
        .map(|(endpoint, _, figure)| Disagreement {
            worse: b2.clone(),
            than: b.clone(),
            endpoint,
            figure,
        })
        .collect();
    out.extend(
        b_than_b2
            .into_iter()
            .map(|(endpoint, _, figure)| Disagreement {
                worse: b.clone(),
                than: b2.clone(),
                endpoint,
                figure,
            }),
    );
    out
}

/// The pair set without its second baseline: judged against the baseline alone. The fields'
/// noise came from the second baseline, so the fields are not compared.
fn without_baseline2(set: &PairSet) -> PairSet {
    let mut s = set.clone();
    let drop_fields = s.noise == NoiseSource::Baseline2;
    s.baseline2 = None;
    if drop_fields {
        s.noise = NoiseSource::None;
    }
    for p in &mut s.pairs {
        p.baseline2 = None;
        if drop_fields {
            p.candidate_diff = None;
            p.noise_diff = None;
        }
    }
    s
}

fn listed(d: &[Disagreement]) -> String {
    let shown: Vec<String> = d
        .iter()
        .take(3)
        .map(|x| format!("{}: {}", x.endpoint, x.figure))
        .collect();
    let more = d.len().saturating_sub(3);
    if more > 0 {
        format!("{} (and {more} more)", shown.join("; "))
    } else {
        shown.join("; ")
    }
}

/// Measures and judges `set` after checking its references against each other (see the
/// module docs). The measurements returned are those the judgement was made on.
pub fn judge_set(set: &PairSet, policy: &Policy) -> (Measurements, Judgement) {
    let m = measure(set, policy);
    let mut j = judge(&m, policy);
    let found = disagreements(set, policy);
    if found.is_empty() {
        return (m, j);
    }
    let b2 = set.baseline2.clone().unwrap_or_default();
    let (b2_worse, b_worse): (Vec<Disagreement>, Vec<Disagreement>) =
        found.into_iter().partition(|d| d.worse == b2);
    if !b2_worse.is_empty() {
        let alone = without_baseline2(set);
        let m2 = measure(&alone, policy);
        let mut j2 = judge(&m2, policy);
        let why = format!(
            "the second baseline `{b2}` is worse than the baseline `{}`, so it is no reference: {}",
            set.baseline,
            listed(&b2_worse)
        );
        j2.notes.insert(
            0,
            format!(
                "{why}; the candidate was judged against `{}` alone",
                set.baseline
            ),
        );
        if j2.decision != Decision::NoGo {
            j2.reasons.insert(
                0,
                format!(
                    "{why}. Against `{}` alone the candidate shows no error or latency regression, but its answers' fields were not judged and one reference is unhealthy: fix or remove `{b2}` and run again",
                    set.baseline
                ),
            );
            j2.decision = Decision::Inconclusive;
        }
        return (m2, j2);
    }
    let why = format!(
        "the baseline `{}` is worse than the second baseline `{b2}`: {}",
        set.baseline,
        listed(&b_worse)
    );
    if matches!(j.decision, Decision::Go | Decision::Marginal) {
        j.reasons.insert(
            0,
            format!("{why}; the references disagree, so the candidate's passing means nothing: check `{}`", set.baseline),
        );
        j.decision = Decision::Inconclusive;
    } else {
        j.notes.insert(0, why);
    }
    (m, j)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Obs;

    fn set(b2: impl Fn(usize) -> Obs, cand: impl Fn(usize) -> Obs) -> PairSet {
        let mut s = PairSet::new(
            "baseline",
            "candidate",
            Some("baseline2"),
            NoiseSource::Baseline2,
        );
        for e in 0..3 {
            let ep = s.endpoint_id(&format!("GET /e{e}"));
            for i in 0..200 {
                let k = e * 200 + i;
                let jitter = 1000 + ((k * 7919) % 400) as i64;
                s.pairs.push(Pair {
                    endpoint: ep,
                    cluster: k as u32,
                    baseline: Obs::answer(200, jitter),
                    candidate: cand(k),
                    baseline2: Some(b2(k)),
                    recorded_status: Some(200),
                    candidate_diff: Some(Vec::new()),
                    noise_diff: Some(Vec::new()),
                });
            }
        }
        s
    }

    fn healthy(k: usize) -> Obs {
        Obs::answer(200, 1000 + ((k * 104_729) % 400) as i64)
    }

    #[test]
    fn healthy_references_agree() {
        let s = set(healthy, healthy);
        assert!(disagreements(&s, &Policy::default()).is_empty());
    }

    #[test]
    fn a_dead_second_baseline_is_no_reference_and_a_failing_candidate_is_still_no_go() {
        let dead = |_| Obs::no_answer(50);
        // 10% of the candidate's answers are 500s.
        let failing = |k: usize| {
            if k.is_multiple_of(10) {
                Obs::answer(500, 1000)
            } else {
                healthy(k)
            }
        };
        let s = set(dead, failing);
        let d = disagreements(&s, &Policy::default());
        assert!(d.iter().all(|x| x.worse == "baseline2"), "{d:?}");
        let (_, j) = judge_set(&s, &Policy::default());
        assert_eq!(j.decision, Decision::NoGo, "{:?}", j.reasons);
        assert!(j.notes[0].contains("baseline2"), "{:?}", j.notes);
        // A healthy candidate with a dead second baseline: not GO.
        let (_, j) = judge_set(&set(dead, healthy), &Policy::default());
        assert_eq!(j.decision, Decision::Inconclusive, "{:?}", j.reasons);
        assert!(j.reasons[0].contains("`baseline2`"), "{:?}", j.reasons);
    }

    #[test]
    fn a_slow_second_baseline_does_not_hide_a_slow_candidate() {
        // baseline2 2 s slower on one endpoint, the candidate 1 s slower there.
        let slow_b2 = |k: usize| {
            if k < 200 {
                Obs::answer(200, 2_000_000 + healthy(k).latency_us.unwrap())
            } else {
                healthy(k)
            }
        };
        let slow_c = |k: usize| {
            if k < 200 {
                Obs::answer(200, 1_000_000 + healthy(k).latency_us.unwrap())
            } else {
                healthy(k)
            }
        };
        let (_, j) = judge_set(&set(slow_b2, slow_c), &Policy::default());
        assert_eq!(j.decision, Decision::NoGo, "{:?}", j.reasons);
    }

    #[test]
    fn a_second_baseline_slower_like_the_candidate_calibrates_and_is_kept() {
        // The mirror's path (or another host): baseline2 and the candidate both 3x slower
        // than the baseline. That is what the second baseline is for: GO.
        let path = |k: usize| Obs::answer(200, 3 * healthy(k).latency_us.unwrap());
        let s = set(path, |k| {
            Obs::answer(200, 3 * healthy(k + 1).latency_us.unwrap())
        });
        assert!(disagreements(&s, &Policy::default()).is_empty());
        let (_, j) = judge_set(&s, &Policy::default());
        assert_eq!(j.decision, Decision::Go, "{:?}", j.reasons);
    }

    #[test]
    fn a_slow_baseline_makes_a_pass_inconclusive() {
        // The baseline is the slow one (3x on every request of one endpoint): the references
        // disagree, and a candidate like baseline2 cannot be called GO.
        let mut s = set(healthy, healthy);
        for p in s.pairs.iter_mut().take(200) {
            p.baseline.latency_us = p.baseline.latency_us.map(|l| l * 3);
        }
        let (_, j) = judge_set(&s, &Policy::default());
        assert_ne!(j.decision, Decision::Go, "{:?}", j.reasons);
    }
}

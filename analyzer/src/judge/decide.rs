//! The decision from the checks: the health guards in their order, the score, the notes
//! (endpoints not judged, what was not calibrated, send positions).

use super::*;

pub(super) fn decide(
    m: &Measurements,
    p: &Policy,
    checks: Vec<Check>,
    fields: Vec<FieldClass>,
    differing_pairs: BTreeMap<String, u64>,
) -> Judgement {
    let h = &m.health;
    let mut reasons = Vec::new();
    let mut notes = Vec::new();
    let total_pairs = m.overall.pairs.max(1) as f64;
    let not_judged: Vec<NotJudged> = m
        .endpoints
        .iter()
        .filter(|e| e.units < p.samples.min_endpoint.max(1))
        .filter(|e| {
            !checks
                .iter()
                .any(|c| c.endpoint == e.name && c.result == CheckResult::Fail)
        })
        .map(|e| NotJudged {
            endpoint: e.name.clone(),
            pairs: e.pairs,
            traffic_share: e.pairs as f64 / total_pairs,
            why: format!(
                "{} pairs, fewer than {}: it can fail, not pass",
                e.units,
                p.samples.min_endpoint
            ),
        })
        .chain(
            // Enough pairs, but none whose answers could be compared (a 5xx or no answer on a
            // side of every one): its errors and latency were judged, its answers were not.
            m.endpoints
                .iter()
                .filter(|e| e.units >= p.samples.min_endpoint.max(1) && e.differs.n == 0)
                .map(|e| NotJudged {
                    endpoint: e.name.clone(),
                    pairs: e.pairs,
                    traffic_share: e.pairs as f64 / total_pairs,
                    why: "no pair where both sides answered without a 5xx: its answers were not compared (errors and latency were)".into(),
                }),
        )
        .collect();
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
    let recorded_err = h.recorded_error_rate.unwrap_or(0.0);
    let baseline_ok = ((1.0 - h.baseline_error_rate) * h.pairs as f64).round() as u64;
    // The fewest discordant pairs whose all-one-way sign test reaches the error rate's level.
    let dead_min = (1.0 / p.metrics.error_rate.alpha.clamp(1e-12, 0.5))
        .log2()
        .ceil() as u64;
    let good_share = |mix: &BTreeMap<String, f64>| {
        mix.get("2xx").copied().unwrap_or(0.0) + mix.get("3xx").copied().unwrap_or(0.0)
    };
    let decision = if h.pairs == 0 {
        reasons.push(format!(
            "no request has rows for both `{}` and `{}`: nothing to compare",
            m.baseline, m.candidate
        ));
        Decision::Inconclusive
    } else if h.baseline_error_rate > recorded_err + p.health.max_baseline_error_excess {
        reasons.push(format!(
            "the baseline `{}` is unhealthy: {:.1}% of its requests failed (5xx or no answer) against {:.1}% in the recording; nothing valid to compare",
            m.baseline,
            h.baseline_error_rate * 100.0,
            recorded_err * 100.0
        ));
        Decision::Inconclusive
    } else if h
        .status_mix_distance
        .is_some_and(|d| d > p.health.max_status_mix_distance)
    {
        reasons.push(format!(
            "the baseline's answers do not resemble production's: status classes {} against {} recorded (distance {:.2} > {:.2}); check the targets' configuration and credentials",
            fmt_mix(&h.baseline_status_mix),
            h.recorded_status_mix.as_ref().map_or("-".into(), fmt_mix),
            h.status_mix_distance.unwrap_or(0.0),
            p.health.max_status_mix_distance
        ));
        Decision::Inconclusive
    } else if h.recorded_status_mix.is_none() && good_share(&h.baseline_status_mix) < 0.05 {
        reasons.push(format!(
            "the baseline answered 2xx or 3xx to fewer than 5% of requests ({}) and no recording says production did the same: nothing valid to compare",
            fmt_mix(&h.baseline_status_mix)
        ));
        Decision::Inconclusive
    } else if (h.candidate_answered == 0 || h.candidate_error_rate >= 1.0)
        && baseline_ok >= dead_min
    {
        // Evidence, not one request: the baseline succeeded on at least `dead_min` of the
        // same requests the candidate failed (McNemar's exact p = 2^-k at the error rate's
        // level); a recording of an outage where the baseline fails alike is no evidence.
        reasons.push(format!(
            "the candidate `{}` answered none of its {} requests without an error (unreachable or failing) while the baseline succeeded on {baseline_ok} of them",
            m.candidate, h.pairs
        ));
        Decision::NoGo
    } else if h.both_answered < p.samples.min_overall.max(1) && critical_fails.is_empty() {
        reasons.push(format!(
            "too few requests answered by both sides to judge: {} (the policy needs {})",
            h.both_answered, p.samples.min_overall
        ));
        Decision::Inconclusive
    } else if !critical_fails.is_empty() {
        for c in &critical_fails {
            reasons.push(format!(
                "critical metric {}{} failed on {}: {}",
                c.metric,
                c.quantity
                    .as_ref()
                    .map_or(String::new(), |q| format!(" ({q})")),
                c.endpoint,
                c.explanation
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
    if !not_judged.is_empty() {
        // The largest few by traffic, then a count: every one is in `not_judged`.
        let share: f64 = not_judged.iter().map(|n| n.traffic_share).sum();
        let mut by_share: Vec<&NotJudged> = not_judged.iter().collect();
        by_share.sort_by(|a, b| b.traffic_share.total_cmp(&a.traffic_share));
        let names: Vec<String> = by_share
            .iter()
            .take(5)
            .map(|n| format!("{} ({:.1}%)", n.endpoint, n.traffic_share * 100.0))
            .collect();
        let more = not_judged.len().saturating_sub(names.len());
        notes.push(format!(
            "not judged or not wholly (fewer than {} pairs: they can fail but not pass; or no answers to compare; each one's reason is in verdict.json): {}{}{}",
            p.samples.min_endpoint,
            names.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            },
            if not_judged.len() > 1 {
                format!(": {:.1}% of traffic in all", share * 100.0)
            } else {
                String::new()
            }
        ));
    }
    if !h.calibrated {
        notes.push("no second baseline: differences between hosts are not calibrated (a candidate on a slower host looks slower); run a `baseline2` target to calibrate".into());
    }
    if m.noise == NoiseSource::None {
        notes.push("no noise source (no second baseline and no recorded responses): every difference counts".into());
    }
    if h.recorded_status_mix.is_none() {
        notes.push(
            "no recording given: the baseline's answers were not checked against production's"
                .into(),
        );
    }
    if let Some(note) = position_note(&m.positions) {
        notes.push(note);
    }
    if m.clustered {
        notes.push(
            "several passes per exchange: each exchange is one unit (clustered), not one per pass"
                .into(),
        );
    }
    Judgement {
        decision,
        score,
        reasons,
        notes,
        checks,
        fields,
        not_judged,
        differing_pairs,
    }
}

/// A note when a target's median latency depends strongly on its send position (the sending
/// machine or the targets' shared host was saturated): the random order keeps that from
/// biasing the comparison, but it widens every latency interval.
fn position_note(positions: &[crate::verdict::PositionLatency]) -> Option<String> {
    let mut worst: Option<(String, f64)> = None;
    let targets: std::collections::BTreeSet<&str> =
        positions.iter().map(|p| p.target.as_str()).collect();
    for t in targets {
        let medians: Vec<f64> = positions
            .iter()
            .filter(|p| p.target == t && p.requests >= 30)
            .filter_map(|p| p.p50_ms)
            .filter(|v| *v > 0.0)
            .collect();
        if medians.len() < 2 {
            continue;
        }
        let (lo, hi) = medians
            .iter()
            .fold((f64::INFINITY, 0f64), |(a, b), &v| (a.min(v), b.max(v)));
        let r = hi / lo;
        if r > 1.5 && worst.as_ref().is_none_or(|w| r > w.1) {
            worst = Some((t.to_owned(), r));
        }
    }
    worst.map(|(t, r)| {
        format!(
            "the median latency of `{t}` differs {r:.1}x between send positions: the replay saturated this machine or the targets' host (the random order keeps this from favouring a target, but latency checks lose power; lower --concurrency or --rate)"
        )
    })
}

fn fmt_mix(m: &BTreeMap<String, f64>) -> String {
    m.iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| format!("{k} {:.0}%", v * 100.0))
        .collect::<Vec<_>>()
        .join(", ")
}

//! Measurements: from the pairs to per-endpoint, per-metric, per-comparison statistics with
//! their raw p values. Pure: no I/O, so the calibration harness runs it on synthetic pairs.
//!
//! The unit is the exchange: with one pass it is one pair; with `--loop` the passes of one
//! exchange form a cluster, summarised once (sign of the summed difference for rates, median
//! log ratio for latency; the bootstrap resamples whole clusters), so N passes are not taken
//! for N independent samples.
//!
//! Every comparison is candidate against a reference: the baseline, and also the second
//! baseline when it ran ([`crate::judge`] then asks the candidate to be worse than both).

use std::collections::{BTreeMap, HashMap};

use crate::policy::Policy;
use crate::stats::{
    bootstrap_quantile_log_ratio, hodges_lehmann, log_ratio, quantile, sign_test_greater,
    sign_test_min_p, signed_rank_min_p, wald_greater, wilcoxon_greater, Interval,
};
use crate::units::{NoiseSource, Obs, Pair, PairSet};
use crate::verdict::{Health, PositionLatency, TargetMetrics};

/// A paired rate comparison (errors, or "differs" against noise).
#[derive(Debug, Clone, Default)]
pub struct RateMeasure {
    /// The reference (a target name, or `noise (baseline2)`).
    pub reference: String,
    /// Pairs.
    pub n: u64,
    /// Units (exchanges).
    pub units: u64,
    /// Events on the candidate side.
    pub candidate_events: u64,
    /// Events on the reference side.
    pub reference_events: u64,
    /// Units where the candidate had more events.
    pub worse: u64,
    /// Units where the reference had more.
    pub better: u64,
    /// One-sided exact p value (sign test / McNemar).
    pub p: f64,
    /// Smallest p the test could give with these discordant units.
    pub min_p: f64,
    /// Candidate rate minus reference rate, with a 95% cluster-robust interval.
    pub difference: Interval,
}

impl RateMeasure {
    /// Candidate rate.
    pub fn candidate_rate(&self) -> f64 {
        ratio(self.candidate_events, self.n)
    }

    /// Reference rate.
    pub fn reference_rate(&self) -> f64 {
        ratio(self.reference_events, self.n)
    }
}

fn ratio(x: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        x as f64 / n as f64
    }
}

/// A latency tail: the log ratio of a quantile of candidate against reference.
#[derive(Debug, Clone)]
pub struct TailMeasure {
    /// The quantile (0.9, 0.99).
    pub q: f64,
    /// Log ratio, with its bootstrap standard error.
    pub log_ratio: f64,
    /// Standard error.
    pub se: f64,
    /// One-sided p value of "the ratio exceeds the policy's bound".
    pub p: f64,
}

/// Paired latency, candidate against one reference.
#[derive(Debug, Clone)]
pub struct LatencyMeasure {
    /// The reference target.
    pub reference: String,
    /// Units (exchanges).
    pub units: u64,
    /// Pairs.
    pub n: u64,
    /// Hodges–Lehmann centre of the per-unit log ratios, with its 95% interval.
    pub centre: Option<Interval>,
    /// Signed-rank p value of "the centre exceeds log(max_ratio)".
    pub p_centre: f64,
    /// Signed-rank p value of "the centre exceeds 0" (for reading).
    pub p_centre_zero: f64,
    /// Smallest p the signed-rank test could give.
    pub min_p: f64,
    /// Tails judged (enough pairs beyond the quantile).
    pub tails: Vec<TailMeasure>,
    /// Pairs where the candidate was more than `slow_ratio` times slower than the reference
    /// (`candidate_events`) against pairs where the reference was (`reference_events`): a
    /// paired sign test that sees "a few percent of requests much slower" even when there are
    /// too few pairs to estimate a p99.
    pub slow: RateMeasure,
    /// Reference p50, p90, p99 (ms; infinite when censored).
    pub reference_ms: [Option<f64>; 3],
    /// Candidate p50, p90, p99.
    pub candidate_ms: [Option<f64>; 3],
}

/// The `endpoint` of a [`FieldMeasure`] taken over every endpoint.
pub const EVERY_ENDPOINT: u32 = u32::MAX;

/// One field (pattern and kind) on one endpoint: does the candidate differ from the baseline
/// more often than the noise comparison does, on the same exchanges?
#[derive(Debug, Clone)]
pub struct FieldMeasure {
    /// Endpoint index.
    pub endpoint: u32,
    /// Field index into [`PairSet::fields`].
    pub field: u32,
    /// Pairs compared both ways.
    pub pairs: u64,
    /// Pairs where the candidate differs on it.
    pub candidate: u64,
    /// Pairs where the noise comparison differs on it.
    pub noise: u64,
    /// Units where the candidate differs more (less) often than noise.
    pub worse: u64,
    /// Units where noise differs more often.
    pub better: u64,
    /// One-sided exact p value.
    pub p: f64,
    /// Smallest attainable p.
    pub min_p: f64,
}

/// Everything measured on one endpoint (or overall).
#[derive(Debug, Clone)]
pub struct EndpointMeasure {
    /// Endpoint name, or `overall`.
    pub name: String,
    /// Pairs.
    pub pairs: u64,
    /// Units (exchanges).
    pub units: u64,
    /// Error rate against each reference.
    pub errors: Vec<RateMeasure>,
    /// Latency against each reference.
    pub latency: Vec<LatencyMeasure>,
    /// "Differs in any field" against noise.
    pub differs: RateMeasure,
    /// Per target numbers for the reports.
    pub targets: BTreeMap<String, TargetMetrics>,
}

/// All measurements of one analysis.
#[derive(Debug, Clone)]
pub struct Measurements {
    /// Baseline name.
    pub baseline: String,
    /// Candidate name.
    pub candidate: String,
    /// Second baseline name.
    pub baseline2: Option<String>,
    /// Noise source.
    pub noise: NoiseSource,
    /// Per endpoint.
    pub endpoints: Vec<EndpointMeasure>,
    /// Over all endpoints.
    pub overall: EndpointMeasure,
    /// Per field and endpoint.
    pub fields: Vec<FieldMeasure>,
    /// Per field over every endpoint (`endpoint` is [`EVERY_ENDPOINT`]): a change spread thinly
    /// over many endpoints (2% of all requests answered 404) is too rare on each to be seen
    /// there, and plain across the service.
    pub service_fields: Vec<FieldMeasure>,
    /// Field names and kinds.
    pub field_names: Vec<(String, String)>,
    /// Health guard inputs.
    pub health: Health,
    /// Latency by send position.
    pub positions: Vec<PositionLatency>,
    /// Whether some exchange was sent more than once (`--loop`).
    pub clustered: bool,
}

/// Measures a pair set under a policy (its bounds define the hypotheses tested).
pub fn measure(set: &PairSet, policy: &Policy) -> Measurements {
    let clusters = cluster_ranges(&set.pairs);
    let clustered = clusters.iter().any(|(a, b)| b - a > 1);
    let mut by_endpoint: Vec<Vec<(usize, usize)>> = vec![Vec::new(); set.endpoints.len()];
    for &(a, b) in &clusters {
        by_endpoint[set.pairs[a].endpoint as usize].push((a, b));
    }
    let refs = references(set);
    let seed = 0x5eed_u64;
    let endpoints: Vec<EndpointMeasure> = by_endpoint
        .iter()
        .enumerate()
        .map(|(e, cs)| endpoint_measure(set, &set.endpoints[e], cs, &refs, policy, seed + e as u64))
        .collect();
    let overall = endpoint_measure(set, "overall", &clusters, &refs, policy, seed);
    let (fields, service_fields) = field_measures(set, &clusters);
    Measurements {
        baseline: set.baseline.clone(),
        candidate: set.candidate.clone(),
        baseline2: set.baseline2.clone(),
        noise: set.noise,
        endpoints,
        overall,
        fields,
        service_fields,
        field_names: set
            .fields
            .iter()
            .map(|(f, k)| (f.clone(), k.as_str().to_owned()))
            .collect(),
        health: health(set),
        positions: positions(set),
        clustered,
    }
}

/// How to read one side of a pair.
type SideOf = fn(&Pair) -> Option<Obs>;

/// The reference sides: the baseline, and the second baseline when it ran.
type Reference = (String, SideOf);

fn references(set: &PairSet) -> Vec<Reference> {
    targets(set)
        .into_iter()
        .filter(|(name, _)| *name != set.candidate)
        .map(|(name, get)| (name.to_owned(), get))
        .collect()
}

/// Every target of the pairs, with how to read its side: baseline, candidate, baseline2.
fn targets(set: &PairSet) -> Vec<(&str, SideOf)> {
    let mut sides: Vec<(&str, SideOf)> = vec![
        (&set.baseline, |p| Some(p.baseline)),
        (&set.candidate, |p| Some(p.candidate)),
    ];
    if let Some(b2) = &set.baseline2 {
        sides.push((b2, |p| p.baseline2));
    }
    sides
}

/// Consecutive runs of pairs of one cluster.
fn cluster_ranges(pairs: &[Pair]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=pairs.len() {
        if i == pairs.len() || pairs[i].cluster != pairs[start].cluster {
            if i > start {
                out.push((start, i));
            }
            start = i;
        }
    }
    out
}

fn endpoint_measure(
    set: &PairSet,
    name: &str,
    clusters: &[(usize, usize)],
    refs: &[Reference],
    policy: &Policy,
    seed: u64,
) -> EndpointMeasure {
    let pairs: u64 = clusters.iter().map(|(a, b)| (b - a) as u64).sum();
    let errors = refs
        .iter()
        .map(|(rname, get)| {
            rate_measure(rname, clusters, |i| {
                let p = &set.pairs[i];
                get(p).map(|r| (p.candidate.error(), r.error()))
            })
        })
        .collect();
    let latency = refs
        .iter()
        .map(|(rname, get)| latency_measure(set, rname, *get, clusters, policy, seed))
        .collect();
    let with_noise = set.noise != NoiseSource::None;
    let differs = rate_measure(&format!("noise ({})", set.noise.as_str()), clusters, |i| {
        let p = &set.pairs[i];
        match (&p.candidate_diff, &p.noise_diff) {
            (Some(c), Some(n)) => Some((!c.is_empty(), !n.is_empty())),
            (Some(c), None) if !with_noise => Some((!c.is_empty(), false)),
            _ => None,
        }
    });
    EndpointMeasure {
        name: name.to_owned(),
        pairs,
        units: clusters.len() as u64,
        errors,
        latency,
        differs,
        targets: target_metrics(set, clusters),
    }
}

/// A paired rate over clusters; `outcome(i)` gives (candidate event, reference event) for
/// pair `i`, or `None` when the pair does not count.
fn rate_measure(
    reference: &str,
    clusters: &[(usize, usize)],
    outcome: impl Fn(usize) -> Option<(bool, bool)>,
) -> RateMeasure {
    let mut m = RateMeasure {
        reference: reference.to_owned(),
        ..RateMeasure::default()
    };
    // Per cluster: (pairs, summed candidate - reference).
    let mut per: Vec<(f64, f64)> = Vec::with_capacity(clusters.len());
    for &(a, b) in clusters {
        let (mut n, mut s) = (0u64, 0i64);
        for i in a..b {
            if let Some((c, r)) = outcome(i) {
                n += 1;
                m.candidate_events += u64::from(c);
                m.reference_events += u64::from(r);
                s += i64::from(c) - i64::from(r);
            }
        }
        if n == 0 {
            continue;
        }
        m.n += n;
        m.units += 1;
        match s.cmp(&0) {
            std::cmp::Ordering::Greater => m.worse += 1,
            std::cmp::Ordering::Less => m.better += 1,
            std::cmp::Ordering::Equal => {}
        }
        per.push((n as f64, s as f64));
    }
    m.p = sign_test_greater(m.worse, m.better);
    m.min_p = sign_test_min_p(m.worse + m.better);
    let nf = m.n.max(1) as f64;
    let diff = (m.candidate_events as f64 - m.reference_events as f64) / nf;
    let var: f64 = per.iter().map(|(n, s)| (s - diff * n).powi(2)).sum::<f64>() / (nf * nf);
    let half = 1.96 * var.sqrt();
    m.difference = Interval {
        estimate: diff,
        low: diff - half,
        high: diff + half,
    };
    m
}

fn latency_measure(
    set: &PairSet,
    reference: &str,
    get: SideOf,
    clusters: &[(usize, usize)],
    policy: &Policy,
    seed: u64,
) -> LatencyMeasure {
    let lp = &policy.metrics.latency;
    let mut d: Vec<f64> = Vec::with_capacity(clusters.len());
    let (mut bl, mut cl) = (Vec::new(), Vec::new());
    let mut ends = Vec::with_capacity(clusters.len());
    let mut per_cluster: Vec<f64> = Vec::new();
    let much = lp.slow_ratio.ln();
    let slow = rate_measure(reference, clusters, |i| {
        let p = &set.pairs[i];
        get(p).map(|r| {
            let d = log_ratio(p.candidate.latency(), r.latency());
            (d > much, d < -much)
        })
    });
    for &(a, b) in clusters {
        per_cluster.clear();
        for p in &set.pairs[a..b] {
            let Some(r) = get(p) else { continue };
            let (c, r) = (p.candidate.latency(), r.latency());
            per_cluster.push(log_ratio(c, r));
            bl.push(r);
            cl.push(c);
        }
        if per_cluster.is_empty() {
            continue;
        }
        ends.push(bl.len());
        per_cluster.sort_by(f64::total_cmp);
        d.push(quantile(&per_cluster, 0.5).unwrap_or(0.0));
    }
    let n = bl.len() as u64;
    let ms = |v: &mut Vec<f64>| -> [Option<f64>; 3] {
        v.sort_by(f64::total_cmp);
        [0.5, 0.9, 0.99].map(|q| quantile(v, q).map(|x| x / 1000.0))
    };
    let (mut bs, mut cs) = (bl.clone(), cl.clone());
    let (reference_ms, candidate_ms) = (ms(&mut bs), ms(&mut cs));
    let mut tails = Vec::new();
    for (q, bound) in [(0.9, lp.max_ratio_p90), (0.99, lp.max_ratio_p99)] {
        // A quantile is judged only with enough pairs beyond it.
        if (n as f64) * (1.0 - q) < lp.tail_min_pairs as f64 {
            continue;
        }
        if let Some(bt) = bootstrap_quantile_log_ratio(
            &bl,
            &cl,
            &ends,
            q,
            lp.bootstrap_resamples as usize,
            seed ^ (q * 1000.0) as u64,
        ) {
            // A bootstrap that never varies (the quantile sits on a mass point: 1% of requests
            // at exactly a timeout on every target) has no normal approximation; there the
            // exact binomial test of the share of candidate requests beyond `bound` times the
            // reference's quantile (at most 1 - q under the bound) decides.
            let p = if bt.se > 0.0 {
                wald_greater(bt.estimate, bt.se, bound.ln())
            } else {
                tail_count_p(&bs, &cl, q, bound)
            };
            tails.push(TailMeasure {
                q,
                log_ratio: bt.estimate,
                se: bt.se,
                p,
            });
        }
    }
    LatencyMeasure {
        reference: reference.to_owned(),
        units: d.len() as u64,
        n,
        centre: hodges_lehmann(&d, 0.025, seed),
        p_centre: wilcoxon_greater(&d, lp.max_ratio.ln()).p_greater,
        p_centre_zero: wilcoxon_greater(&d, 0.0).p_greater,
        min_p: signed_rank_min_p(d.len()),
        tails,
        slow,
        reference_ms,
        candidate_ms,
    }
}

/// The exact test of "more than 1 - q of the candidate's requests are beyond `bound` times the
/// reference's q-quantile" (`reference` sorted).
fn tail_count_p(reference: &[f64], candidate: &[f64], q: f64, bound: f64) -> f64 {
    let Some(rq) = quantile(reference, q) else {
        return 1.0;
    };
    let beyond = candidate.iter().filter(|&&c| c > bound * rq).count() as u64;
    crate::stats::binomial_sf(beyond, candidate.len() as u64, 1.0 - q)
}

/// Per field and endpoint, and per field over every endpoint ([`EVERY_ENDPOINT`]), in one
/// pass. The unit is the exchange (a cluster of passes) either way: a cluster belongs to one
/// endpoint, so its sign on a field counts the same in both.
fn field_measures(
    set: &PairSet,
    clusters: &[(usize, usize)],
) -> (Vec<FieldMeasure>, Vec<FieldMeasure>) {
    let with_noise = set.noise != NoiseSource::None;
    // (endpoint or EVERY_ENDPOINT, field) -> measure under construction.
    let mut acc: HashMap<(u32, u32), FieldMeasure> = HashMap::new();
    let mut compared: HashMap<u32, u64> = HashMap::new();
    let mut signs: HashMap<u32, i64> = HashMap::new();
    for &(a, b) in clusters {
        signs.clear();
        let keys = [set.pairs[a].endpoint, EVERY_ENDPOINT];
        for p in &set.pairs[a..b] {
            let empty = Vec::new();
            let (c, n) = match (&p.candidate_diff, &p.noise_diff) {
                (Some(c), Some(n)) => (c, n),
                (Some(c), None) if !with_noise => (c, &empty),
                _ => continue,
            };
            for ep in keys {
                *compared.entry(ep).or_default() += 1;
                for &f in c {
                    acc.entry((ep, f))
                        .or_insert_with(|| new_field(ep, f))
                        .candidate += 1;
                }
                for &f in n {
                    acc.entry((ep, f)).or_insert_with(|| new_field(ep, f)).noise += 1;
                }
            }
            for &f in c {
                *signs.entry(f).or_default() += 1;
            }
            for &f in n {
                *signs.entry(f).or_default() -= 1;
            }
        }
        for (&f, &s) in &signs {
            for ep in keys {
                if let Some(m) = acc.get_mut(&(ep, f)) {
                    match s.cmp(&0) {
                        std::cmp::Ordering::Greater => m.worse += 1,
                        std::cmp::Ordering::Less => m.better += 1,
                        std::cmp::Ordering::Equal => {}
                    }
                }
            }
        }
    }
    let (mut service, mut per_endpoint): (Vec<FieldMeasure>, Vec<FieldMeasure>) = acc
        .into_values()
        .map(|mut m| {
            m.pairs = compared.get(&m.endpoint).copied().unwrap_or(0);
            m.p = sign_test_greater(m.worse, m.better);
            m.min_p = sign_test_min_p(m.worse + m.better);
            m
        })
        .partition(|m| m.endpoint == EVERY_ENDPOINT);
    per_endpoint.sort_by_key(|m| (m.endpoint, m.field));
    service.sort_by_key(|m| m.field);
    (per_endpoint, service)
}

fn new_field(endpoint: u32, field: u32) -> FieldMeasure {
    FieldMeasure {
        endpoint,
        field,
        pairs: 0,
        candidate: 0,
        noise: 0,
        worse: 0,
        better: 0,
        p: 1.0,
        min_p: 1.0,
    }
}

fn target_metrics(set: &PairSet, clusters: &[(usize, usize)]) -> BTreeMap<String, TargetMetrics> {
    let mut out = BTreeMap::new();
    for (name, get) in targets(set) {
        let mut m = TargetMetrics::default();
        let mut lat = Vec::new();
        for &(a, b) in clusters {
            for p in &set.pairs[a..b] {
                let Some(o) = get(p) else { continue };
                m.requests += 1;
                m.errors += u64::from(o.error());
                if o.answered() {
                    lat.push(o.latency() / 1000.0);
                }
            }
        }
        lat.sort_by(f64::total_cmp);
        m.p50_ms = quantile(&lat, 0.5);
        m.p90_ms = quantile(&lat, 0.9);
        m.p99_ms = quantile(&lat, 0.99);
        m.samples_ms = thin(&lat, 2000);
        out.insert(name.to_owned(), m);
    }
    out
}

fn thin(sorted: &[f64], max: usize) -> Vec<f64> {
    if sorted.len() <= max {
        return sorted.to_vec();
    }
    (0..max)
        .map(|i| sorted[i * (sorted.len() - 1) / (max - 1)])
        .collect()
}

/// The status class of a response: `2xx` … `5xx`, `none` for no response.
pub fn status_class(s: Option<u16>) -> &'static str {
    match s {
        None => "none",
        Some(100..=199) => "1xx",
        Some(200..=299) => "2xx",
        Some(300..=399) => "3xx",
        Some(400..=499) => "4xx",
        Some(_) => "5xx",
    }
}

fn mix(it: impl Iterator<Item = Option<u16>>) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    let mut n = 0.0;
    for s in it {
        *counts.entry(status_class(s).to_owned()).or_default() += 1.0;
        n += 1.0;
    }
    counts.values_mut().for_each(|v| *v /= f64::max(n, 1.0));
    counts
}

fn health(set: &PairSet) -> Health {
    let n = set.pairs.len() as u64;
    let count = |f: &dyn Fn(&Pair) -> bool| set.pairs.iter().filter(|p| f(p)).count() as u64;
    let recorded: Vec<Option<u16>> = set
        .pairs
        .iter()
        .filter(|p| p.recorded_status.is_some())
        .map(|p| p.recorded_status)
        .collect();
    let baseline_status_mix = mix(set.pairs.iter().map(|p| p.baseline.status));
    let recorded_status_mix = (!recorded.is_empty()).then(|| mix(recorded.iter().copied()));
    // 2xx and 3xx are one class for the distance: a recorded 304 (a conditional request
    // production could answer from cache) replayed as a 200 is still a success.
    let merged = |m: &BTreeMap<String, f64>| -> BTreeMap<&'static str, f64> {
        let mut out = BTreeMap::new();
        for (k, v) in m {
            let key = match k.as_str() {
                "2xx" | "3xx" => "2xx/3xx",
                "1xx" => "1xx",
                "4xx" => "4xx",
                "5xx" => "5xx",
                _ => "none",
            };
            *out.entry(key).or_default() += v;
        }
        out
    };
    let status_mix_distance = recorded_status_mix.as_ref().map(|r| {
        let (r, b) = (merged(r), merged(&baseline_status_mix));
        let keys: std::collections::BTreeSet<&&str> = r.keys().chain(b.keys()).collect();
        keys.iter()
            .map(|k| (r.get(*k).copied().unwrap_or(0.0) - b.get(*k).copied().unwrap_or(0.0)).abs())
            .sum::<f64>()
            / 2.0
    });
    Health {
        pairs: n,
        both_answered: count(&|p| p.baseline.answered() && p.candidate.answered()),
        baseline_error_rate: ratio(count(&|p| p.baseline.error()), n),
        candidate_error_rate: ratio(count(&|p| p.candidate.error()), n),
        candidate_answered: count(&|p| p.candidate.answered()),
        recorded_error_rate: (!recorded.is_empty()).then(|| {
            recorded
                .iter()
                .filter(|s| s.is_some_and(|s| s >= 500))
                .count() as f64
                / recorded.len() as f64
        }),
        baseline_status_mix,
        recorded_status_mix,
        status_mix_distance,
        calibrated: set.baseline2.is_some(),
    }
}

fn positions(set: &PairSet) -> Vec<PositionLatency> {
    let mut by: BTreeMap<(String, u32), Vec<f64>> = BTreeMap::new();
    for (name, get) in targets(set) {
        for p in &set.pairs {
            let Some(o) = get(p) else { continue };
            if let (Some(pos), true) = (o.position, o.answered()) {
                by.entry((name.to_owned(), pos))
                    .or_default()
                    .push(o.latency() / 1000.0);
            }
        }
    }
    by.into_iter()
        .map(|((target, position), mut v)| PositionLatency {
            target,
            position,
            requests: v.len() as u64,
            p50_ms: crate::stats::quantile_select(&mut v, 0.5),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::tail_count_p;

    #[test]
    fn the_exact_tail_test_holds_at_a_mass_point() {
        // 1% of every target's requests at exactly a 500 ms timeout: no evidence.
        let with_mass = |share: f64| -> Vec<f64> {
            (0..6000)
                .map(|i| {
                    if (i as f64) < share * 6000.0 {
                        500_000.0
                    } else {
                        1000.0 + (i % 97) as f64
                    }
                })
                .collect()
        };
        let mut reference = with_mass(0.01);
        reference.sort_by(f64::total_cmp);
        assert!(tail_count_p(&reference, &with_mass(0.01), 0.99, 2.0) > 0.3);
        // A new 2% tail far beyond: found. (Against the reference's own p99, which sits on
        // its mass at 500 ms: the candidate's 2% at 2 s are beyond 2 x 500 ms.)
        let mut candidate = with_mass(0.01);
        for c in candidate.iter_mut().skip(100).take(120) {
            *c = 2_000_000.0;
        }
        assert!(tail_count_p(&reference, &candidate, 0.99, 2.0) < 1e-6);
    }
}

//! The calibration harness: synthetic canaries with fixed seeds, judged by the real
//! measure → judge pipeline (bodies go through the real differ), to measure the judge's false
//! no-go rate on identical versions (A/A) and its detection rate for each kind of regression.
//!
//! `cargo test -p shadowtap-analyzer --test tests calibration -- --nocapture` prints the
//! table; `SHADOWTAP_CALIBRATION_SEEDS=N` runs N seeds per row (default 200 for A/A rows, 40
//! for regressions; `bench/calibrate.sh` runs the full table for docs/analyze.md).

use shadowtap_analyzer::diff::{compare, DiffOptions, Side};
use shadowtap_analyzer::references::judge_set;
use shadowtap_analyzer::stats::SplitMix;
use shadowtap_analyzer::units::{NoiseSource, Obs, Pair, PairSet};
use shadowtap_analyzer::{Decision, Policy};

/// A synthetic service and what the candidate does differently.
#[derive(Clone, Debug)]
struct Shape {
    name: &'static str,
    endpoints: usize,
    requests: usize,
    /// Per target, independent 5xx probability.
    random_errors: f64,
    /// Per request, 5xx on every target.
    fixed_errors: f64,
    /// Lognormal sigma of the request's latency.
    sigma: f64,
    /// Systematic slowdown of baseline2's host (and of the candidate's, drawn in [0, offset]).
    host_offset: f64,
    /// Share of pairs where the `ts` field differs between any two responses.
    partial_noise: f64,
    /// HTML bodies with a nonce instead of JSON.
    html: bool,
    baseline2: bool,
    regression: Regression,
    /// Passes over the recording (`--loop`).
    passes: usize,
    /// Without a second baseline: production's own random 5xx rate in the recording (the
    /// targets' is `random_errors`).
    recorded_errors: Option<f64>,
    /// Sigma of a per exchange and target latency effect that persists over the passes (a
    /// cache, a slow shard), and the chance of a per exchange and target error that persists.
    persistent: (f64, f64),
    /// What is wrong with the second baseline.
    b2_fault: B2Fault,
    /// Share of requests answered at exactly 500 ms on every target (a timeout, a mass point).
    fixed_tail: f64,
}

/// A second baseline that is not a good reference.
#[derive(Clone, Copy, Debug, PartialEq)]
enum B2Fault {
    None,
    /// Refuses every connection.
    Dead,
    /// 2 s slower on the first three endpoints.
    SlowOnThree,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Regression {
    None,
    /// A rarely used endpoint (20 requests) answering 500 to all of them.
    RareEndpointDown,
    /// 0.8% new 5xx, spread over all requests.
    NewErrors,
    /// 5% of candidate requests 1 s slower.
    SlowTail,
    /// One endpoint 50% slower (the centre bound is 1.2x).
    SlowEndpoint,
    /// The always-different trace id becomes a number.
    TraceIdType,
    /// The HTML page's content changes (its nonce still varies).
    HtmlContent,
    /// One JSON field changes on one endpoint.
    FieldChanged,
    /// One JSON field wrong in 10% of one endpoint's responses (a bug in a subset; at 5%,
    /// 10 of 200, the evidence does not survive the correction over ~35 field tests).
    RareFieldChanged,
    /// One endpoint answers 404 (not a 5xx) to every request.
    EndpointNotFound,
    /// 2% of all requests answered 404 (not a 5xx).
    NewClientErrors,
    /// Every endpoint 30% slower.
    SlowEverywhere,
    /// 10% of all requests answered 500.
    TenPercentErrors,
    /// 1 s slower on the first three endpoints.
    SecondSlowerOnThree,
    /// A new 2% of candidate requests at 2 s.
    NewTwoPercentTail,
}

fn normal(r: &mut SplitMix) -> f64 {
    // Box-Muller.
    let (u, v) = (r.unit().max(1e-12), r.unit());
    (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

struct Body {
    text: String,
    ct: &'static str,
}

fn body(s: &Shape, ep: usize, i: usize, r: &mut SplitMix, candidate: bool, ts_epoch: u64) -> Body {
    let nonce = format!("{:016x}{:08x}", r.next_u64(), r.next_u64() as u32);
    if s.html {
        let content = if candidate && s.regression == Regression::HtmlContent {
            "<p>Welcome back to the new store</p>"
        } else {
            "<p>Welcome back</p>"
        };
        return Body {
            text: format!(
                "<html>\n<head><script nonce=\"{nonce}\"></script></head>\n<body>\n<h1>Item {i}</h1>\n{content}\n<footer>rendered at 2026-12-01T10:{:02}:{:02}Z</footer>\n</body>\n</html>\n",
                r.below(60),
                r.below(60)
            ),
            ct: "text/html",
        };
    }
    let trace = if candidate && s.regression == Regression::TraceIdType {
        format!("{}", r.next_u64() >> 12)
    } else {
        format!("\"{nonce}\"")
    };
    let name = if candidate && s.regression == Regression::FieldChanged && ep == 0 {
        format!("m{i}")
    } else {
        format!("n{i}")
    };
    let cents =
        if candidate && s.regression == Regression::RareFieldChanged && ep == 0 && i % 10 == 7 {
            0
        } else {
            5
        };
    Body {
        text: format!(
            "{{\"id\":{i},\"endpoint\":{ep},\"name\":\"{name}\",\"price\":{}.{cents},\"trace\":{trace},\"ts\":{ts_epoch}}}",
            i % 97
        ),
        ct: "application/json",
    }
}

/// Generates one canary's pairs.
fn generate(s: &Shape, seed: u64) -> PairSet {
    let mut r = SplitMix(seed.wrapping_mul(0x9E37_79B9) ^ 0xabc);
    let b2 = s.baseline2.then_some("baseline2");
    // Without a second baseline, the noise comparison is the production response recorded
    // in the capture against the baseline (another answer of the current version).
    let noise = if s.baseline2 {
        NoiseSource::Baseline2
    } else {
        NoiseSource::Recorded
    };
    let mut set = PairSet::new("baseline", "candidate", b2, noise);
    set.recorded_known = true;
    let opts = DiffOptions::default();
    let cand_offset = 1.0 + s.host_offset * r.unit();
    let b2_offset = 1.0 + s.host_offset;
    let mut endpoints: Vec<(String, usize)> = (0..s.endpoints)
        .map(|e| (format!("GET /api/svc{e}/items"), s.requests))
        .collect();
    if s.regression == Regression::RareEndpointDown {
        endpoints.push(("GET /api/rare".to_owned(), 20));
    }
    let mut cluster = 0u32;
    for (e, (name, n)) in endpoints.iter().enumerate() {
        let ep = set.endpoint_id(name);
        let mu = (2.0 + e as f64 * 0.05).ln() + 1.5; // a few ms
        for i in 0..*n {
            let base = (mu + s.sigma * normal(&mut r)).exp() * 1000.0; // µs
            let fixed = r.unit() < s.fixed_errors;
            // Drawn only where used: the other shapes keep their seeds' data.
            let timeout = s.fixed_tail > 0.0 && r.unit() < s.fixed_tail;
            let ts = 1_700_000_000 + i as u64;
            // Per target (baseline, candidate, baseline2): what persists over the passes.
            let persist: Vec<(f64, bool)> = (0..3)
                .map(|_| {
                    (
                        (s.persistent.0 * normal(&mut r)).exp(),
                        r.unit() < s.persistent.1,
                    )
                })
                .collect();
            for _pass in 0..s.passes {
                let obs = |offset: f64, cand: bool, who: usize, r: &mut SplitMix| -> Obs {
                    let jitter = (0.15 * normal(r)).exp();
                    let mut lat = if timeout {
                        500_000.0
                    } else {
                        base * offset * jitter * persist[who].0
                    };
                    let mut err = fixed || persist[who].1 || r.unit() < s.random_errors;
                    let mut not_found = false;
                    if cand {
                        match s.regression {
                            Regression::EndpointNotFound if e == 0 => not_found = true,
                            Regression::NewClientErrors if r.unit() < 0.02 => not_found = true,
                            Regression::SlowEverywhere => lat *= 1.3,
                            Regression::SlowTail if r.unit() < 0.05 => lat += 1_000_000.0,
                            Regression::SlowEndpoint if e == 0 => lat *= 1.5,
                            Regression::NewErrors if r.unit() < 0.008 => err = true,
                            Regression::RareEndpointDown if name == "GET /api/rare" => err = true,
                            Regression::TenPercentErrors if r.unit() < 0.10 => err = true,
                            Regression::SecondSlowerOnThree if e < 3 => lat += 1_000_000.0,
                            Regression::NewTwoPercentTail if r.unit() < 0.02 => lat = 2_000_000.0,
                            _ => {}
                        }
                    }
                    let status = match (err, not_found) {
                        (true, _) => 500,
                        (false, true) => 404,
                        _ => 200,
                    };
                    Obs::answer(status, lat as i64)
                };
                let b = obs(1.0, false, 0, &mut r);
                let c = obs(cand_offset, true, 1, &mut r);
                let b2o = s.baseline2.then(|| match s.b2_fault {
                    B2Fault::Dead => Obs::no_answer(100),
                    B2Fault::SlowOnThree if e < 3 => {
                        let o = obs(b2_offset, false, 2, &mut r);
                        Obs::answer(
                            o.status.unwrap_or(200),
                            o.latency_us.unwrap_or(0) + 2_000_000,
                        )
                    }
                    _ => obs(b2_offset, false, 2, &mut r),
                });
                let recorded = (!s.baseline2).then(|| {
                    let o = obs(1.0, false, 2, &mut r);
                    match s.recorded_errors {
                        // Production's own error rate, not the targets'.
                        Some(rate) => Obs::answer(
                            if fixed || r.unit() < rate { 500 } else { 200 },
                            o.latency_us.unwrap_or(0),
                        ),
                        None => o,
                    }
                });
                // `ts` differs between two responses in `partial_noise` of pairs.
                let ts_of = |r: &mut SplitMix| {
                    if r.unit() < s.partial_noise {
                        ts + 1
                    } else {
                        ts
                    }
                };
                let mut tr = SplitMix(r.next_u64());
                let (tb, tc, t2) = (ts, ts_of(&mut tr), ts_of(&mut tr));
                let bb = body(s, e, i, &mut r, false, tb);
                let cb = body(s, e, i, &mut r, true, tc);
                let b2b = body(s, e, i, &mut r, false, t2);
                fn side<'a>(o: &Obs, b: &'a Body) -> Side<'a> {
                    Side {
                        status: o.status,
                        headers: &[],
                        body: b.text.as_bytes(),
                        content_type: Some(b.ct),
                    }
                }
                let cd = compare(&side(&b, &bb), &side(&c, &cb), &opts);
                // As the analyzer does: a 5xx side keeps a pair out of the difference tests.
                let candidate_diff = set.judged_fields(&cd, (b.status, c.status), ep, Some("x"));
                let noise_diff = b2o.or(recorded).and_then(|o| {
                    let nd = compare(&side(&b, &bb), &side(&o, &b2b), &opts);
                    set.judged_fields(&nd, (b.status, o.status), ep, None)
                });
                set.pairs.push(Pair {
                    endpoint: ep,
                    cluster,
                    baseline: b,
                    candidate: c,
                    baseline2: b2o,
                    recorded_status: Some(if fixed { 500 } else { 200 }),
                    candidate_diff,
                    noise_diff,
                });
            }
            cluster += 1;
        }
    }
    set
}

fn shapes() -> Vec<Shape> {
    let base = Shape {
        name: "30 JSON endpoints x 200, 3% random 5xx, sigma 0.5, host offset 5%",
        endpoints: 30,
        requests: 200,
        random_errors: 0.03,
        fixed_errors: 0.0,
        sigma: 0.5,
        host_offset: 0.05,
        partial_noise: 0.2,
        html: false,
        baseline2: true,
        regression: Regression::None,
        passes: 1,
        persistent: (0.0, 0.0),
        recorded_errors: None,
        b2_fault: B2Fault::None,
        fixed_tail: 0.0,
    };
    vec![
        base.clone(),
        Shape {
            name: "1 endpoint x 20 (tiny)",
            endpoints: 1,
            requests: 20,
            ..base.clone()
        },
        Shape {
            name: "100 endpoints x 50, 10% fixed + 1% random 5xx, sigma 1.5, offset 10%",
            endpoints: 100,
            requests: 50,
            random_errors: 0.01,
            fixed_errors: 0.10,
            sigma: 1.5,
            host_offset: 0.10,
            partial_noise: 0.5,
            ..base.clone()
        },
        Shape {
            name: "3 endpoints x 3000, no errors, sigma 0.3, offset 10%, 1% partial noise",
            endpoints: 3,
            requests: 3000,
            random_errors: 0.0,
            sigma: 0.3,
            host_offset: 0.10,
            partial_noise: 0.01,
            ..base.clone()
        },
        Shape {
            name: "1 endpoint x 10000, 1% random 5xx, sigma 1.0, offset 10%",
            endpoints: 1,
            requests: 10_000,
            random_errors: 0.01,
            sigma: 1.0,
            host_offset: 0.10,
            ..base.clone()
        },
        Shape {
            name: "5 HTML pages with nonces x 200",
            endpoints: 5,
            requests: 200,
            html: true,
            ..base.clone()
        },
        Shape {
            name: "10 endpoints x 60, --loop 10, persistent per-exchange effects (sigma 0.3, 2% errors)",
            endpoints: 10,
            requests: 60,
            passes: 10,
            persistent: (0.3, 0.02),
            random_errors: 0.0,
            ..base.clone()
        },
        Shape {
            name: "30 JSON endpoints x 200, recorded noise, 3% random 5xx on the targets, 0.5% in production",
            baseline2: false,
            recorded_errors: Some(0.005),
            ..base.clone()
        },
        Shape {
            name: "30 JSON endpoints x 200, noise from the recording (no second baseline), no errors",
            baseline2: false,
            random_errors: 0.0,
            partial_noise: 0.0,
            ..base.clone()
        },
        Shape {
            name: "3 endpoints x 2000, 1% of requests at exactly 500 ms on every target",
            endpoints: 3,
            requests: 2000,
            fixed_tail: 0.01,
            ..base.clone()
        },
        Shape {
            name: "5 endpoints x 200, the second baseline refusing connections",
            endpoints: 5,
            b2_fault: B2Fault::Dead,
            ..base.clone()
        },
        Shape {
            name: "5 endpoints x 200, the second baseline 2 s slower on three endpoints",
            endpoints: 5,
            b2_fault: B2Fault::SlowOnThree,
            ..base.clone()
        },
    ]
}

fn regressions() -> Vec<Shape> {
    let aa = shapes();
    let with = |i: usize, r: Regression| Shape {
        regression: r,
        ..aa[i].clone()
    };
    vec![
        with(0, Regression::RareEndpointDown),
        Shape {
            random_errors: 0.0,
            ..with(0, Regression::NewErrors)
        },
        with(0, Regression::SlowTail),
        Shape {
            name: "3 endpoints x 200 (600 requests, too few for a p99)",
            endpoints: 3,
            requests: 200,
            ..with(0, Regression::SlowTail)
        },
        with(0, Regression::SlowEndpoint),
        with(0, Regression::TraceIdType),
        with(
            aa.iter().position(|s| s.html).expect("an HTML shape"),
            Regression::HtmlContent,
        ),
        with(0, Regression::FieldChanged),
        with(0, Regression::RareFieldChanged),
        with(0, Regression::EndpointNotFound),
        with(0, Regression::NewClientErrors),
        with(0, Regression::SlowEverywhere),
        with(
            aa.iter()
                .position(|s| s.fixed_tail > 0.0)
                .expect("a mass-point tail shape"),
            Regression::NewTwoPercentTail,
        ),
        with(
            aa.iter()
                .position(|s| s.b2_fault == B2Fault::Dead)
                .expect("a dead second baseline shape"),
            Regression::TenPercentErrors,
        ),
        with(
            aa.iter()
                .position(|s| s.b2_fault == B2Fault::SlowOnThree)
                .expect("a slow second baseline shape"),
            Regression::SecondSlowerOnThree,
        ),
    ]
}

fn seeds(default: u64) -> u64 {
    std::env::var("SHADOWTAP_CALIBRATION_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (no-go, inconclusive, runs, a few no-go reasons) over seeds 1..=n, on every core.
fn run(shape: &Shape, n: u64) -> (u64, u64, u64, Vec<String>) {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get()) as u64;
    let results: Vec<(u64, u64, Vec<String>)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let policy = Policy::default();
                    let (mut nogo, mut inconclusive, mut why) = (0, 0, Vec::new());
                    for seed in (1..=n).filter(|s| s % threads == t) {
                        let set = generate(shape, seed);
                        let (_, j) = judge_set(&set, &policy);
                        match j.decision {
                            Decision::NoGo => {
                                nogo += 1;
                                if why.len() < 3 {
                                    why.push(format!("seed {seed}: {}", j.reasons.join(" | ")));
                                }
                            }
                            Decision::Inconclusive => inconclusive += 1,
                            _ => {}
                        }
                    }
                    (nogo, inconclusive, why)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("calibration thread"))
            .collect()
    });
    let mut out = (0, 0, n, Vec::new());
    for (a, b, w) in results {
        out.0 += a;
        out.1 += b;
        out.3.extend(w);
    }
    out
}

#[test]
fn calibration_false_alarms_on_identical_versions_and_detection_of_regressions() {
    let mut table = String::from(
        "| scenario | runs | no-go | inconclusive | no-go rate |\n|---|---|---|---|---|\n",
    );
    let mut failures = Vec::new();
    let only = std::env::var("SHADOWTAP_CALIBRATION_ONLY").unwrap_or_default();
    for s in shapes().into_iter().filter(|s| s.name.contains(&only)) {
        let t = std::time::Instant::now();
        let (nogo, inc, n, why) = run(&s, seeds(200));
        eprintln!("{}: {:.1} s", s.name, t.elapsed().as_secs_f64());
        let rate = nogo as f64 / n as f64;
        table.push_str(&format!(
            "| A/A: {} | {n} | {nogo} | {inc} | {:.1}% |\n",
            s.name,
            rate * 100.0
        ));
        if nogo > 0 {
            println!("A/A {}: {why:?}", s.name);
        }
        if rate > 0.05 {
            failures.push(format!(
                "A/A {}: false no-go {:.1}% > 5%: {why:?}",
                s.name,
                rate * 100.0
            ));
        }
        // A judge that hides behind INCONCLUSIVE is no judge: identical versions with sound
        // references and enough traffic get a verdict; the rows built to be unjudgeable (too
        // few requests, a dead or disagreeing second baseline) must say so nearly always.
        let designed = s.b2_fault != B2Fault::None || s.endpoints * s.requests * s.passes < 50;
        let inc_rate = inc as f64 / n as f64;
        if designed && inc_rate < 0.95 {
            failures.push(format!(
                "A/A {}: built to be inconclusive, but only {:.1}% were",
                s.name,
                inc_rate * 100.0
            ));
        }
        if !designed && inc_rate > 0.05 {
            failures.push(format!(
                "A/A {}: inconclusive {:.1}% > 5% on identical versions",
                s.name,
                inc_rate * 100.0
            ));
        }
    }
    for s in regressions().into_iter().filter(|s| s.name.contains(&only)) {
        let (nogo, inc, n, _) = run(&s, seeds(40));
        let rate = nogo as f64 / n as f64;
        table.push_str(&format!(
            "| {:?} on: {} | {n} | {nogo} | {inc} | {:.1}% detected |\n",
            s.regression,
            s.name,
            rate * 100.0
        ));
        if rate < 0.95 {
            failures.push(format!(
                "{:?}: detected {:.1}% < 95%",
                s.regression,
                rate * 100.0
            ));
        }
    }
    println!("{table}");
    assert!(failures.is_empty(), "{failures:#?}\n{table}");
}

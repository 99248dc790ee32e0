//! Labelled canary scenarios for the verdict (issue 16), end to end through the binary with
//! demo services on loopback: false alarms that must be go, regressions that must be no-go,
//! and vacuous comparisons that must be inconclusive, each asserting the exit code and the
//! reason named in verdict.json.

use crate::canary::{scenario_with, service, Outcome};

fn failed(o: &Outcome) -> Vec<String> {
    o.verdict["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "fail")
        .map(|c| {
            format!(
                "{}{} {} {}",
                c["metric"].as_str().unwrap(),
                c["quantity"]
                    .as_str()
                    .map(|q| format!("/{q}"))
                    .unwrap_or_default(),
                c["endpoint"].as_str().unwrap(),
                c["fields"]
            )
        })
        .collect()
}

fn reasons(o: &Outcome) -> String {
    o.verdict["reasons"].to_string()
}

/// Three identical versions each answering 3% of requests with a random 500 (over 10 passes of
/// the recording): go. It used to be no-go on some endpoint every time.
#[test]
fn identical_versions_with_random_500s_go() {
    let flags = ["--random-error-percent", "3"];
    let (b, b2, c) = (service(&flags), service(&flags), service(&flags));
    let o = scenario_with(
        &[
            ("baseline", &b.url),
            ("baseline2", &b2.url),
            ("candidate", &c.url),
        ],
        &["--loop", "10"],
    );
    assert_eq!(o.code, 0, "{:?}\n{}", failed(&o), o.stderr);
    assert_eq!(o.verdict["health"]["calibrated"], true);
}

/// The same content with and without gzip: go (Content-Encoding and Vary are transport).
#[test]
fn the_same_content_without_gzip_goes() {
    let (b, c) = (service(&["--gzip"]), service(&[]));
    let o = scenario_with(&[("baseline", &b.url), ("candidate", &c.url)], &[]);
    assert_eq!(o.code, 0, "{:?}\n{}", failed(&o), o.stderr);
}

/// 5% of the candidate's requests 1 s slower (median unchanged): no-go on the latency tail,
/// over 5 passes of the fixture (1,200 pairs: enough for a p99; once, 240 requests hold about
/// 12 slow ones, too few to be sure at the family-wise level).
#[test]
fn five_percent_of_requests_one_second_slower_is_no_go_on_the_tail() {
    let b = service(&[]);
    let c = service(&[
        "--slow-ms",
        "1000",
        "--slow-path",
        "/",
        "--slow-percent",
        "5",
    ]);
    let o = scenario_with(
        &[("baseline", &b.url), ("candidate", &c.url)],
        &["--loop", "5", "--concurrency", "64"],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    let f = failed(&o);
    assert!(
        f.iter().any(|c| c.starts_with("latency/p99 overall")),
        "{f:?}"
    );
    assert!(
        f.iter()
            .any(|c| c.starts_with("latency/slow_share overall")),
        "{f:?}"
    );
}

/// A rarely used endpoint (/health, 4% of the traffic) answering 500 to all of its requests:
/// no-go on that endpoint although it is below min_endpoint.
#[test]
fn a_rare_endpoint_failing_every_request_is_no_go() {
    let (b, c) = (service(&[]), service(&["--fail-path", "/health"]));
    let o = scenario_with(&[("baseline", &b.url), ("candidate", &c.url)], &[]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let f = failed(&o);
    assert!(
        f.iter().any(|c| c.starts_with("error_rate GET /health")),
        "{f:?}"
    );
}

/// 0 -> 0.8% new random 5xx over 40 passes (no errors before): no-go on the overall error rate,
/// though it is below the old 1-point bound. (The unit is the exchange, not the pass: over 10
/// passes only about 1 exchange in 13 of the small recording meets an error, and one fresh-clone
/// run in about 6 this session saw too few to tell (0 of 12 local runs did); over 40 passes
/// about 1 in 4 does.)
#[test]
fn new_errors_on_a_service_that_had_none_are_no_go() {
    let b = service(&[]);
    let c = service(&["--random-error-percent", "0.8"]);
    let o = scenario_with(
        &[("baseline", &b.url), ("candidate", &c.url)],
        &["--loop", "40"],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    let f = failed(&o);
    assert!(
        f.iter().any(|c| c.starts_with("error_rate overall")),
        "{f:?}"
    );
}

/// A field that always differs (a request id) changing type from string to number: no-go
/// naming the field and the kind.
#[test]
fn an_always_different_field_changing_type_is_no_go() {
    let (b, b2) = (service(&["--noise"]), service(&["--noise"]));
    let c = service(&["--noise", "--noise-number"]);
    let o = scenario_with(
        &[
            ("baseline", &b.url),
            ("baseline2", &b2.url),
            ("candidate", &c.url),
        ],
        &[],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    let f = failed(&o);
    assert!(
        f.iter().any(|c| c.contains("/request_id (type_changed)")),
        "{f:?}"
    );
    // The same field's value differing everywhere stays noise.
    let fields = o.verdict["fields"].as_array().unwrap();
    assert!(fields
        .iter()
        .any(|x| x["field"] == "/generated_at" && x["noise"] == true));
}

/// An HTML page with a per-request nonce whose text changed: no-go on a text hunk; the same
/// page unchanged: go.
#[test]
fn an_html_page_with_a_nonce_is_judged_by_its_content() {
    let (b, b2) = (service(&["--html"]), service(&["--html"]));
    let same = service(&["--html"]);
    let o = scenario_with(
        &[
            ("baseline", &b.url),
            ("baseline2", &b2.url),
            ("candidate", &same.url),
        ],
        &[],
    );
    assert_eq!(o.code, 0, "{:?}\n{}", failed(&o), o.stderr);
    let changed = service(&["--html", "--html-change"]);
    let o = scenario_with(
        &[
            ("baseline", &b.url),
            ("baseline2", &b2.url),
            ("candidate", &changed.url),
        ],
        &[],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    let f = failed(&o);
    assert!(
        f.iter()
            .any(|c| c.starts_with("diff_rate GET /api/search") && c.contains("body:hunk:")),
        "{f:?}"
    );
}

/// Every target answering 401 where production answered 200: inconclusive, naming the status
/// mix (it used to be go).
#[test]
fn every_target_answering_401_is_inconclusive() {
    let (b, c) = (service(&["--status", "401"]), service(&["--status", "401"]));
    let o = scenario_with(&[("baseline", &b.url), ("candidate", &c.url)], &[]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert!(
        reasons(&o).contains("do not resemble production"),
        "{}",
        reasons(&o)
    );
}

/// Three identical versions serving a 1.5 MB response, replayed with 32 requests in flight on
/// this (loaded, 2-core) machine: go. Sending each exchange in a random order keeps any
/// target from always being the last one served; the report shows latency by position.
#[test]
fn identical_versions_with_large_responses_go_under_load() {
    let flags = ["--pad-kib", "1536"];
    let (b, b2, c) = (service(&flags), service(&flags), service(&flags));
    let o = scenario_with(
        &[
            ("baseline", &b.url),
            ("baseline2", &b2.url),
            ("candidate", &c.url),
        ],
        &["--concurrency", "32"],
    );
    assert_eq!(o.code, 0, "{:?}\n{}", failed(&o), o.stderr);
    let positions = o.verdict["positions"].as_array().unwrap();
    assert_eq!(positions.len(), 9, "3 targets x 3 positions: {positions:?}");
}

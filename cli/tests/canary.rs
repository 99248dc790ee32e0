//! Labelled canary scenarios, end to end through the binary: the demo fixture capture is
//! decoded, two demo services (baseline and candidate, with or without a regression) are
//! started on loopback, the recording is replayed at both, and the verdict is checked.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shadowtap"))
}

/// A demo service child, killed on drop.
pub(crate) struct Service {
    child: Child,
    pub(crate) url: String,
}

impl Service {
    /// The service process's id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn service(flags: &[&str]) -> Service {
    let base: &[&str] = if flags.contains(&"--base-ms") {
        &[]
    } else {
        &["--base-ms", "5"]
    };
    let mut child = bin()
        .arg("demo-service")
        .args(base)
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .expect("service address")
        .to_owned();
    Service { child, url }
}

/// Captures the demo fixture into `dir/cap` (once per test).
pub(crate) fn capture(dir: &Path) -> PathBuf {
    let cap = dir.join("cap");
    let pcap = Path::new(
        &std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"),
    )
    .join("../fixtures/demo/api.pcap");
    let o = bin()
        .args([
            "capture",
            "--quiet",
            "--read",
            pcap.to_str().unwrap(),
            "--out",
            cap.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    cap
}

pub(crate) struct Outcome {
    pub(crate) code: i32,
    pub(crate) verdict: serde_json::Value,
    pub(crate) stderr: String,
}

/// Replays the fixture at the two URLs (`extra` flags for replay) and analyzes.
fn scenario(baseline: &str, candidate: &str, extra: &[&str]) -> Outcome {
    scenario_with(&[("baseline", baseline), ("candidate", candidate)], extra)
}

/// Replays the fixture at the named targets (`extra` flags for replay) and analyzes.
pub(crate) fn scenario_with(targets: &[(&str, &str)], extra: &[&str]) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path());
    let rep = dir.path().join("rep");
    let o = bin()
        .args([
            "replay",
            "--quiet",
            "--from",
            cap.to_str().unwrap(),
            "--out",
            rep.to_str().unwrap(),
            "--rate",
            "max",
            "--timeout",
            "5s",
        ])
        .args(
            targets
                .iter()
                .flat_map(|(n, u)| ["--target".to_owned(), format!("{n}={u}")]),
        )
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "replay: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let out = dir.path().join("verdict");
    let o: Output = bin()
        .args([
            "analyze",
            "--capture",
            cap.to_str().unwrap(),
            "--replay",
            rep.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    let verdict: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("verdict.json"))
            .unwrap_or_else(|_| panic!("verdict.json: {stderr}")),
    )
    .unwrap();
    for f in ["report.md", "junit.xml", "report.html"] {
        assert!(out.join(f).is_file(), "{f}");
    }
    Outcome {
        code: o.status.code().unwrap_or(-1),
        verdict,
        stderr,
    }
}

fn failed_checks(v: &serde_json::Value) -> Vec<(String, String)> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["result"] == "fail")
        .map(|c| {
            (
                c["metric"].as_str().unwrap().to_owned(),
                c["endpoint"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[test]
fn identical_versions_go() {
    let (b, c) = (service(&[]), service(&[]));
    let o = scenario(&b.url, &c.url, &["--loop", "2"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.verdict["verdict"], "go");
    assert!(
        failed_checks(&o.verdict).is_empty(),
        "{:?}",
        failed_checks(&o.verdict)
    );
}

/// The demo service picks its 500s by a hash of the URL, so with `--loop 4` the same exchanges
/// fail on every pass: each exchange is one unit. 3% (3 of the fixture's 240 exchanges, p =
/// 1/8) is not evidence enough; 10% (about 20 exchanges) is.
#[test]
fn ten_percent_extra_500s_over_four_passes_is_no_go() {
    let (b, c) = (service(&[]), service(&["--error-percent", "10"]));
    let o = scenario(&b.url, &c.url, &["--loop", "4"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(o.verdict["verdict"], "no-go");
    assert!(
        failed_checks(&o.verdict).contains(&("error_rate".into(), "overall".into())),
        "{:?}",
        failed_checks(&o.verdict)
    );
}

#[test]
fn one_endpoint_thirty_percent_slower_is_no_go_and_named() {
    let (b, c) = (
        service(&["--base-ms", "20"]),
        service(&[
            "--base-ms",
            "20",
            "--slow-ms",
            "7",
            "--slow-path",
            "/api/orders",
        ]),
    );
    let o = scenario(&b.url, &c.url, &["--loop", "2"]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let failed = failed_checks(&o.verdict);
    assert!(
        failed.contains(&("latency".into(), "GET /api/orders".into())),
        "{failed:?}"
    );
    assert!(
        !failed
            .iter()
            .any(|(m, e)| m == "latency" && e.starts_with("GET /api/users")),
        "only the slow endpoint: {failed:?}"
    );
}

#[test]
fn a_changed_json_field_is_no_go_and_its_path_named() {
    let (b, c) = (
        service(&["--noise"]),
        service(&["--noise", "--change-field", "tier=platinum"]),
    );
    let o = scenario(&b.url, &c.url, &[]);
    assert_eq!(o.code, 1, "{}", o.stderr);
    let failed = failed_checks(&o.verdict);
    assert!(
        failed.contains(&("diff_rate".into(), "GET /api/users/{id}".into())),
        "{failed:?}"
    );
    let real: Vec<(&str, &str)> = o.verdict["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["noise"] == false)
        .map(|f| {
            (
                f["endpoint"].as_str().unwrap(),
                f["field"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        real,
        [("GET /api/users/{id}", "/tier")],
        "only the changed field counts"
    );
}

#[test]
fn fresh_timestamps_and_uuids_are_noise_and_go() {
    let (b, c) = (service(&["--noise"]), service(&["--noise"]));
    let o = scenario(&b.url, &c.url, &["--loop", "2"]);
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert_eq!(o.verdict["verdict"], "go");
    let noise: Vec<&str> = o.verdict["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["noise"] == true)
        .map(|f| f["field"].as_str().unwrap())
        .collect();
    assert!(
        noise.contains(&"/generated_at") && noise.contains(&"/request_id"),
        "{noise:?}"
    );
    assert!(
        o.verdict["fields"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["noise"] == true),
        "nothing else counts"
    );
    assert!(o.stderr.contains("noise"), "{}", o.stderr);
}

#[test]
fn too_few_requests_is_inconclusive_exit_3() {
    let (b, c) = (service(&[]), service(&[]));
    let o = scenario(&b.url, &c.url, &["--sample", "8%"]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert_eq!(o.verdict["verdict"], "inconclusive");
    assert!(
        o.verdict["reasons"][0]
            .as_str()
            .unwrap()
            .contains("too few requests"),
        "{}",
        o.verdict["reasons"]
    );
}

#[test]
fn an_unreachable_candidate_is_never_go() {
    let b = service(&[]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = scenario(
        &b.url,
        &format!("http://{closed}"),
        &["--connect-timeout", "1s"],
    );
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert_eq!(o.verdict["verdict"], "no-go");
    assert!(
        o.verdict["reasons"][0]
            .as_str()
            .unwrap()
            .contains("answered none"),
        "{}",
        o.verdict["reasons"]
    );
}

#[test]
fn gate_runs_replay_and_analyze_and_usage_errors_are_64() {
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path());
    let (b, c) = (
        service(&[]),
        service(&["--change-field", "name=someone-else"]),
    );
    let out = dir.path().join("gate");
    let o = bin()
        .args([
            "gate",
            "--capture",
            cap.to_str().unwrap(),
            "--baseline-url",
            &b.url,
            "--candidate-url",
            &c.url,
            "--rate",
            "max",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.join("verdict.json").is_file() && out.join("replay").is_dir());
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(
        junit.contains("<testsuite name=\"diff_rate\"") && junit.contains("<failure"),
        "{junit}"
    );
    // Usage and input errors: 64, never a verdict code.
    let o = bin()
        .args([
            "analyze",
            "--replay",
            "/nonexistent",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(64),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = bin().args(["analyze", "--bogus-flag"]).output().unwrap();
    assert_eq!(o.status.code(), Some(64));
    let o = bin()
        .args([
            "analyze",
            "--replay",
            out.join("replay").to_str().unwrap(),
            "--candidate",
            "nosuch",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("targets: baseline, candidate"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A baseline that refuses every connection compared nothing: inconclusive with the reason,
/// never go (it used to be go with score 100).
#[test]
fn a_baseline_refusing_every_connection_is_inconclusive() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let c = service(&[]);
    let o = scenario(&closed, &c.url, &[]);
    assert_eq!(o.code, 3, "{}", o.stderr);
    assert_eq!(o.verdict["verdict"], "inconclusive");
    let reasons = o.verdict["reasons"].to_string();
    assert!(
        reasons.contains("baseline") && reasons.contains("unhealthy"),
        "{reasons}"
    );
}

/// Two replay runs in one directory are not judged together: exit 64 naming the runs, and
/// `--run` picks one.
#[test]
fn a_replay_directory_with_two_runs_needs_run() {
    let (b, c) = (service(&[]), service(&[]));
    let dir = tempfile::tempdir().unwrap();
    let cap = capture(dir.path());
    let rep = dir.path().join("rep");
    for _ in 0..2 {
        let o = bin()
            .args(["replay", "--quiet", "--rate", "max", "--from"])
            .arg(&cap)
            .arg("--out")
            .arg(&rep)
            .args(["--target", &format!("baseline={}", b.url)])
            .args(["--target", &format!("candidate={}", c.url)])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let out = dir.path().join("v");
    let o = bin()
        .args(["analyze", "--replay"])
        .arg(&rep)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(
        err.contains("2 replay runs") && err.contains("--run"),
        "{err}"
    );
    let run = std::fs::read_dir(&rep)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.strip_prefix("replay-")
                .and_then(|r| r.strip_suffix(".summary.json"))
                .map(str::to_owned)
        })
        .next()
        .expect("a summary");
    let o = bin()
        .args(["analyze", "--replay"])
        .arg(&rep)
        .arg("--out")
        .arg(&out)
        .args(["--run", &run])
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("verdict.json")).unwrap()).unwrap();
    assert_eq!(v["run_id"], run.as_str());
    assert_eq!(v["schema_version"], 2);
}

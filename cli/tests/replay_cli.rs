//! `shadowtap replay`: a fixture capture replayed through the binary at real loopback servers;
//! exit codes, signals and the summary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray};

use crate::live_cli::server;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shadowtap"))
}

fn fixture() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
        .join("../fixtures/pcaps/nDPI__1kxun.pcap")
}

/// Captures the fixture into `dir/cap`.
fn recording(dir: &Path) -> PathBuf {
    let cap = dir.join("cap");
    let o = bin()
        .args([
            "capture",
            "--quiet",
            "--read",
            fixture().to_str().unwrap(),
            "--out",
            cap.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    cap
}

/// (target, status, error_kind) of every replays row under `dir`.
fn rows(dir: &Path) -> Vec<(String, Option<i32>, Option<String>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.contains("inprogress"),
            "a half-written file was left: {name}"
        );
        if !name.ends_with(".parquet") {
            continue;
        }
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&p).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for b in reader {
            let b = b.unwrap();
            let t = b
                .column_by_name("target")
                .unwrap()
                .as_string::<i32>()
                .clone();
            let s = b
                .column_by_name("status")
                .unwrap()
                .as_primitive::<arrow::datatypes::Int32Type>()
                .clone();
            let k = b
                .column_by_name("error_kind")
                .unwrap()
                .as_string::<i32>()
                .clone();
            for i in 0..b.num_rows() {
                out.push((
                    t.value(i).to_owned(),
                    s.is_valid(i).then(|| s.value(i)),
                    k.is_valid(i).then(|| k.value(i).to_owned()),
                ));
            }
        }
    }
    out
}

fn replay(args: &[&str]) -> Output {
    bin().arg("replay").args(args).output().unwrap()
}

#[test]
fn replays_a_capture_at_two_targets_and_prints_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let cap = recording(dir.path());
    let (pa, served_a) = server();
    let (pb, served_b) = server();
    let out = dir.path().join("out");
    let o = replay(&[
        "--from",
        cap.to_str().unwrap(),
        "--target",
        &format!("baseline=http://127.0.0.1:{pa}"),
        "--target",
        &format!("candidate=http://127.0.0.1:{pb}"),
        "--out",
        out.to_str().unwrap(),
        "--rate",
        "max",
        "--json",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let selected = summary["selected"].as_u64().unwrap();
    assert!(selected > 100, "{summary}");
    assert_eq!(
        summary["refused_methods"]["POST"].as_u64(),
        Some(9),
        "POSTs in the capture are refused by default"
    );
    assert_eq!(served_a.load(Ordering::SeqCst) as u64, selected);
    assert_eq!(served_b.load(Ordering::SeqCst) as u64, selected);
    let rows = rows(&out);
    assert_eq!(rows.len() as u64, 2 * selected);
    assert!(rows.iter().all(|(_, s, k)| *s == Some(200) && k.is_none()));
    assert!(err.contains("target       baseline"), "{err}");
    assert!(err.contains("allow them with --allow-methods"), "{err}");
}

#[test]
fn sigint_stops_sending_and_keeps_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let cap = recording(dir.path());
    let (port, served) = server();
    let out = dir.path().join("out");
    let mut child = bin()
        .args([
            "replay",
            "--from",
            cap.to_str().unwrap(),
            "--target",
            &format!("t=http://127.0.0.1:{port}"),
            "--out",
            out.to_str().unwrap(),
        ])
        .args(["--rate", "20/s", "--progress-interval", "200ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "replay did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{status:?} {err}");
    assert!(err.contains("stopped by signal"), "{err}");
    assert!(
        err.contains("replay: "),
        "plain progress lines when stderr is not a terminal: {err}"
    );
    let n = served.load(Ordering::SeqCst);
    assert!(n > 5 && n < 100, "{n} sent before the signal");
    assert_eq!(rows(&out).len(), n, "every request sent has its row");
}

#[test]
fn bad_input_is_exit_2_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "--from".into(),
                "/nonexistent".into(),
                "--target".into(),
                "t=http://127.0.0.1:9".into(),
            ],
            "/nonexistent",
        ),
        (
            vec![
                "--from".into(),
                ".".into(),
                "--target".into(),
                "no-equals-sign".into(),
            ],
            "NAME=URL",
        ),
        (
            vec![
                "--from".into(),
                ".".into(),
                "--target".into(),
                "t=ftp://x/".into(),
            ],
            "http:// or https://",
        ),
        (
            vec![
                "--from".into(),
                ".".into(),
                "--target".into(),
                "t=http://127.0.0.1:9".into(),
                "--rate".into(),
                "fast".into(),
            ],
            "not a rate",
        ),
    ];
    for (args, needle) in cases {
        let mut a: Vec<&str> = args.iter().map(String::as_str).collect();
        a.extend(["--out", out.to_str().unwrap()]);
        let o = replay(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{a:?}: {err}");
        assert!(err.contains(needle), "{a:?}: {err}");
    }
    let rules = dir.path().join("rules.toml");
    std::fs::write(&rules, "[[request]]\nset_header = 1\n").unwrap();
    let cap = recording(dir.path());
    let o = replay(&[
        "--from",
        cap.to_str().unwrap(),
        "--target",
        "t=http://127.0.0.1:9",
        "--out",
        out.to_str().unwrap(),
        "--rules",
        rules.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("set_header"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // A host the fixture was captured from (by its Host name), on a port it never used: the
    // name alone refuses it (and it is never looked up).
    let o = replay(&[
        "--from",
        cap.to_str().unwrap(),
        "--target",
        "prod=https://MangaWeb.1kxun.mobi:8443",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(
        err.contains("the Host name mangaweb.1kxun.mobi")
            && err.contains("--allow-target mangaweb.1kxun.mobi"),
        "{err}"
    );
}

#[test]
fn help_explains_safety_and_hooks() {
    let o = bin().args(["replay", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "--allow-methods",
        "--rules",
        "--middleware",
        "--speed",
        "--rate",
        "X-Shadowtap-Replay",
        "Exit status",
    ] {
        assert!(text.contains(needle), "{needle} in --help");
    }
}

/// The binary turns transparent huge pages off for itself (see `main.rs`: with them, the
/// allocator's returned memory came back as whole zeroed 2 MiB pages, 5-8% of a replay's CPU).
/// Read from the kernel's view of a running `shadowtap` process.
#[cfg(target_os = "linux")]
#[test]
fn the_binary_runs_without_transparent_huge_pages() {
    let thp = |pid: &str| {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("THP_enabled:"))?;
        line.split_whitespace().nth(1).map(str::to_owned)
    };
    // The setting is inherited: only a test process that has it on can see the binary's doing.
    assert_eq!(
        thp("self").as_deref(),
        Some("1"),
        "this test needs THP_enabled 1 in the test process (Linux >= 5.0, not disabled by a parent): \
         only then can it see the binary turn it off"
    );
    let service = crate::canary::service(&[]);
    assert_eq!(thp(&service.pid().to_string()).as_deref(), Some("0"));
}

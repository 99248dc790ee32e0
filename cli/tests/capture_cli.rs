//! `shadowtap capture` and `shadowtap inspect` as a user runs them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use arrow::array::{Array, AsArray};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shadowtap"))
}

fn pcap(name: &str) -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
        .join("../fixtures/pcaps")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run shadowtap")
}

/// Runs `shadowtap capture --quiet --read FILE --out OUT EXTRA…` and checks it succeeded.
fn capture_ok(file: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "capture",
        "--quiet",
        "--read",
        file.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = run(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    o
}

/// (exchange_id, connection_id) of every row in `dir`.
fn ids(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "parquet") {
            for b in ParquetRecordBatchReaderBuilder::try_new(File::open(&p).unwrap())
                .unwrap()
                .build()
                .unwrap()
            {
                let b = b.unwrap();
                let e = b
                    .column_by_name("exchange_id")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                let c = b
                    .column_by_name("connection_id")
                    .unwrap()
                    .as_string::<i32>()
                    .clone();
                for i in 0..b.num_rows() {
                    out.push((e.value(i).to_owned(), c.value(i).to_owned()));
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn capture_writes_parquet_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "capture",
        "--quiet",
        "--read",
        pcap("zeek__wikipedia.pcap").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("15 written"), "{stderr}");
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().any(|n| n.ends_with(".summary.json")),
        "{names:?}"
    );
    assert!(!names.iter().any(|n| n.contains("inprogress")), "{names:?}");
    let summary = names.iter().find(|n| n.ends_with(".summary.json")).unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join(summary)).unwrap()).unwrap();
    assert_eq!(json["exchanges_written"], 15);
    assert_eq!(
        json["schema_version"], 4,
        "the exchanges schema (docs/schema.md)"
    );
    assert_eq!(ids(&out).len(), 15);
}

#[test]
fn sampling_is_deterministic_and_keeps_units_whole() {
    let dir = tempfile::tempdir().unwrap();
    let f = pcap("nDPI__1kxun.pcap");
    let capture = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        capture_ok(&f, &out, extra);
        ids(&out)
    };
    let all = capture("all", &[]);
    let a = capture("a", &["--sample", "25"]);
    let b = capture("b", &["--sample", "25%"]);
    assert_eq!(a, b, "same input and percentage keep the same exchanges");
    assert!(a.len() > 10 && a.len() < 60, "{} of {}", a.len(), all.len());
    assert!(a.iter().all(|x| all.contains(x)));
    let by_conn = capture("c", &["--sample", "30", "--sample-by", "connection"]);
    let per_conn = |rows: &[(String, String)]| {
        let mut m: BTreeMap<String, usize> = BTreeMap::new();
        for (_, c) in rows {
            *m.entry(c.clone()).or_default() += 1;
        }
        m
    };
    let all_conns = per_conn(&all);
    for (conn, n) in per_conn(&by_conn) {
        assert_eq!(n, all_conns[&conn], "connection {conn} kept whole");
    }
    let kept: BTreeSet<_> = by_conn.iter().map(|r| &r.1).collect();
    assert!(!kept.is_empty() && kept.len() < all_conns.len());
}

#[test]
fn files_roll_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let o = run(&[
        "capture",
        "--quiet",
        "--max-file-size",
        "1K",
        "--read",
        pcap("nDPI__1kxun.pcap").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success());
    let files = std::fs::read_dir(&out)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "parquet")
        })
        .count();
    assert!(files >= 1);
    assert_eq!(ids(&out).len(), 133, "rolling loses nothing");
}

#[test]
fn errors_have_clear_messages_and_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let missing = dir.path().join("missing.pcap");
    let o = run(&[
        "capture",
        "--read",
        missing.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("missing.pcap") && err.contains("cannot open capture"),
        "{err}"
    );
    assert!(!err.contains("panicked"));

    let o = run(&[
        "capture",
        "--read",
        pcap("zeek__wikipedia.pcap").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--sample",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(2), "bad flag value is a usage error");
    assert!(String::from_utf8_lossy(&o.stderr).contains("--sample"));

    let o = run(&[
        "capture",
        "--read",
        pcap("zeek__wikipedia.pcap").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--filter",
        "port (((",
    ]);
    assert_eq!(
        o.status.code(),
        Some(2),
        "an invalid filter is a usage error"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("invalid --filter"));
}

#[test]
fn help_explains_itself() {
    let o = run(&["capture", "--help"]);
    let text = String::from_utf8_lossy(&o.stdout);
    for needle in [
        "--read",
        "--out",
        "--filter",
        "--sample",
        "--sample-by",
        "--max-body",
        "Examples",
        "Exit status",
    ] {
        assert!(text.contains(needle), "missing {needle} in --help");
    }
}

#[test]
fn inspect_shows_rows_and_counts_without_bodies() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    assert!(run(&[
        "capture",
        "--quiet",
        "--read",
        pcap("zeek__cooper-grill-dvwa.pcapng").to_str().unwrap(),
        "--out",
        out.to_str().unwrap()
    ])
    .status
    .success());
    let o = run(&["inspect", out.to_str().unwrap()]);
    assert!(o.status.success());
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("3 exchanges in 1 file(s)"), "{text}");
    assert!(text.contains("by status: 200=3"), "{text}");
    assert!(
        !text.to_lowercase().contains("<html"),
        "bodies are never printed"
    );
    let o = run(&["inspect", dir.path().join("nothing").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn match_criteria_select_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let f = pcap("nDPI__1kxun.pcap");
    let out = dir.path().join("host");
    let o = run(&[
        "capture",
        "--quiet",
        "--read",
        f.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--match-host",
        "pic.1kxun.com",
        "--match-path",
        "^/video_kankan/",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("110 not matched"), "{err}");
    assert_eq!(ids(&out).len(), 133 - 110);
    let o = run(&[
        "capture",
        "--read",
        f.to_str().unwrap(),
        "--out",
        dir.path().join("x").to_str().unwrap(),
        "--match-path",
        "(unclosed",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--match-path"));
    let o = run(&[
        "capture",
        "--read",
        f.to_str().unwrap(),
        "--out",
        dir.path().join("y").to_str().unwrap(),
        "--match-geo",
        "US",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--geo-file"));
}

/// Every Authorization header value in `dir`.
fn authorizations(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "parquet") {
            for b in ParquetRecordBatchReaderBuilder::try_new(File::open(&p).unwrap())
                .unwrap()
                .build()
                .unwrap()
            {
                let b = b.unwrap();
                let list = b
                    .column_by_name("request_headers")
                    .unwrap()
                    .as_list::<i32>()
                    .clone();
                for i in 0..list.len() {
                    let v = list.value(i);
                    let s = v.as_struct();
                    let (n, val) = (
                        s.column(0).as_string::<i32>(),
                        s.column(1).as_string::<i32>(),
                    );
                    for j in 0..n.len() {
                        if n.value(j).eq_ignore_ascii_case("authorization") {
                            out.push(val.value(j).to_owned());
                        }
                    }
                }
            }
        }
    }
    out.sort();
    out
}

#[test]
fn credentials_are_redacted_by_default() {
    // The WebDAV capture carries NTLM Authorization headers.
    let dir = tempfile::tempdir().unwrap();
    let f = pcap("nDPI__webdav.pcap");
    let cap = |name: &str, extra: &[&str]| {
        let out = dir.path().join(name);
        capture_ok(&f, &out, extra);
        authorizations(&out)
    };
    let raw = cap("raw", &["--no-redact"]);
    assert!(
        !raw.is_empty()
            && raw
                .iter()
                .all(|a| a.starts_with("NTLM ") && !a.contains("hmac:")),
        "{raw:?}"
    );
    let default = cap("default", &[]);
    assert_eq!(default.len(), raw.len());
    assert!(
        default.iter().all(|a| a.starts_with("NTLM hmac:")),
        "{default:?}"
    );
    for secret in &raw {
        let cred = secret.trim_start_matches("NTLM ");
        assert!(default.iter().all(|a| !a.contains(cred)));
    }
    let key = dir.path().join("key");
    std::fs::write(&key, b"shared key").unwrap();
    let a = cap("a", &["--redact-key-file", key.to_str().unwrap()]);
    let b = cap("b", &["--redact-key-file", key.to_str().unwrap()]);
    assert_eq!(a, b, "the same key redacts alike across captures");
    assert_ne!(a, default, "a random key differs");
}

/// Every Parquet file under `dir`, recursively.
fn parquet_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(parquet_files(&p));
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
    out
}

#[test]
fn hive_partitions_by_request_hour() {
    // The WebDAV capture merges sessions about 1.4 years apart: several partitions.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let f = pcap("nDPI__webdav.pcap");
    let o = run(&[
        "capture",
        "--quiet",
        "--read",
        f.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--partition-by",
        "hour",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let files = parquet_files(&out);
    let mut total = 0;
    let mut partitions = BTreeSet::new();
    for file in &files {
        let rel = file
            .strip_prefix(&out)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let parts: Vec<&str> = rel.split('/').collect();
        assert!(
            parts.len() == 3 && parts[0].starts_with("date=") && parts[1].starts_with("hour="),
            "{rel}"
        );
        partitions.insert((parts[0].to_owned(), parts[1].to_owned()));
        for b in ParquetRecordBatchReaderBuilder::try_new(File::open(file).unwrap())
            .unwrap()
            .build()
            .unwrap()
        {
            let b = b.unwrap();
            let ts = b
                .column_by_name("request_start")
                .unwrap()
                .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .clone();
            for i in 0..b.num_rows() {
                let secs = ts.value(i) / 1_000_000;
                let hour = (secs.rem_euclid(86_400)) / 3600;
                assert_eq!(parts[1], format!("hour={hour:02}"), "{rel}");
                total += 1;
            }
        }
    }
    assert_eq!(total, 16, "nothing lost to partitioning");
    assert!(partitions.len() >= 2, "{partitions:?}");
}

#[test]
fn config_file_holds_criteria_sampling_and_redaction() {
    let dir = tempfile::tempdir().unwrap();
    let f = pcap("nDPI__1kxun.pcap");
    // The printed sample is a valid configuration (its header criterion matches nothing here).
    let sample = run(&["capture", "--print-sample-config"]);
    assert!(sample.status.success());
    let sample_path = dir.path().join("sample.toml");
    std::fs::write(&sample_path, &sample.stdout).unwrap();
    let o = run(&[
        "capture",
        "--quiet",
        "--config",
        sample_path.to_str().unwrap(),
        "--read",
        f.to_str().unwrap(),
        "--out",
        dir.path().join("s").to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("133 not matched"));

    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        "[match]\nhost = [\"pic.1kxun.com\"]\n[redact]\nenabled = false\n",
    )
    .unwrap();
    let out = dir.path().join("c");
    let o = run(&[
        "capture",
        "--quiet",
        "--config",
        cfg.to_str().unwrap(),
        "--read",
        f.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("110 not matched") && err.contains("redaction    off"),
        "{err}"
    );
    assert_eq!(ids(&out).len(), 23);
    // A flag adds to the file's list.
    let o = run(&[
        "capture",
        "--quiet",
        "--config",
        cfg.to_str().unwrap(),
        "--match-host",
        "kankan.1kxun.com",
        "--read",
        f.to_str().unwrap(),
        "--out",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert!(o.status.success());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("110 not matched"));

    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[match]\nhots = [\"x\"]\n").unwrap();
    let o = run(&[
        "capture",
        "--config",
        bad.to_str().unwrap(),
        "--read",
        f.to_str().unwrap(),
        "--out",
        dir.path().join("e").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("bad.toml") && err.contains("hots"), "{err}");
}

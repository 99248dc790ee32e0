//! `shadowtap proxy` as an operator runs it: help, usage errors, the production guard, then a
//! real run in front of the demo service, mirrored and recorded, ended by SIGTERM and judged by
//! `shadowtap analyze`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::canary::service;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_shadowtap"))
}

#[test]
fn help_explains_the_proxy_and_the_sample_config_is_valid() {
    let o = bin().args(["proxy", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&o.stdout);
    for want in [
        "--production",
        "--shadow",
        "--mirror-by",
        "--canary-weight",
        "--record",
        "--admin",
        "never waits for a shadow",
        "shadowtap analyze --capture DIR --replay DIR",
    ] {
        assert!(help.contains(want), "--help lacks {want:?}");
    }
    let o = bin()
        .args(["proxy", "--print-sample-config"])
        .output()
        .unwrap();
    assert!(o.status.success());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    std::fs::write(&file, &o.stdout).unwrap();
    // The sample names production members nothing listens on: it parses and checks, and the
    // run fails only at the guard or later, never on the file.
    let o = bin()
        .args([
            "proxy",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:1",
            "--mirror",
            "150",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("150"));
}

#[test]
fn usage_errors_and_the_production_guard_exit_before_anything_is_sent() {
    let o = bin()
        .args(["proxy", "--production", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--listen"));
    let o = bin()
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--production",
            "http://127.0.0.1:9",
            "--mirror-for",
            "x=5",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    let o = bin()
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--production",
            "http://api.example.test:8080",
            "--shadow",
            "candidate=http://api.example.test:9090",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--allow-target api.example.test"), "{err}");
}

fn get(port: u16, path: &str) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

#[test]
fn a_mirrored_run_ends_on_sigterm_recorded_and_judged() {
    let prod = service(&["--label", "prod"]);
    let b2 = service(&["--label", "b2"]);
    let cand = service(&["--label", "cand", "--change-field", "total=0"]);
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let mut child = bin()
        .args([
            "proxy",
            "--listen",
            "127.0.0.1:0",
            "--production",
            &prod.url,
            "--shadow",
            &format!("baseline2={}", b2.url),
            "--shadow",
            &format!("candidate={}", cand.url),
            "--record",
            rec.to_str().unwrap(),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let port: u16 = line
        .split("listening on 127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    for i in 0..80 {
        assert_eq!(get(port, &format!("/api/users/{i}")), 200);
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(status.success(), "{rest}");
    assert!(rest.contains("production   80 requests"), "{rest}");
    assert!(rest.contains("recorded     80 exchanges"), "{rest}");
    let out = dir.path().join("verdict");
    let o = bin()
        .args([
            "analyze",
            "--replay",
            rec.to_str().unwrap(),
            "--baseline",
            "production",
            "--candidate",
            "candidate",
            "--baseline2",
            "baseline2",
            "--out",
            out.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(1),
        "the changed field is a no-go: {text}"
    );
    assert!(text.contains("/total"), "{text}");
}

#[test]
fn sighup_reloads_the_config_file_and_a_bad_one_is_refused() {
    let prod = service(&["--label", "prod"]);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.toml");
    let write = |percent: &str| {
        std::fs::write(
            &file,
            format!(
                "listen = \"127.0.0.1:0\"\nproduction = [\"{}\"]\n[mirror]\npercent = {percent}\n",
                prod.url
            ),
        )
        .unwrap()
    };
    write("0.0");
    let mut child = bin()
        .args(["proxy", "--config", file.to_str().unwrap()])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("listening on"), "{line}");
    let hup = |pid: u32| {
        let _ = Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status();
    };
    write("50.0");
    hup(child.id());
    line.clear();
    err.read_line(&mut line).unwrap();
    assert!(
        line.contains("configuration version 2 applied (SIGHUP)"),
        "{line}"
    );
    write("500.0");
    hup(child.id());
    line.clear();
    err.read_line(&mut line).unwrap();
    assert!(
        line.contains("not applied") && line.contains("500"),
        "{line}"
    );
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(child.wait().unwrap().success(), "{rest}");
}

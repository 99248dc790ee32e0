//! `shadowtap capture --interface lo` against a real HTTP server and client on loopback.
//! Needs root (CAP_NET_RAW), as CI has. Ignored by a plain `cargo test` (reported as such); `scripts/test.sh` runs them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A keep-alive HTTP/1.1 server answering every request with its path; counts requests.
pub(crate) fn server() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut w = conn;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
                    let mut len = 0usize;
                    loop {
                        let mut h = String::new();
                        r.read_line(&mut h).unwrap();
                        if h == "\r\n" || h.is_empty() {
                            break;
                        }
                        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; len];
                    if r.read_exact(&mut body).is_err() {
                        return; // a client that hung up mid-body
                    }
                    let resp = format!("served {path}");
                    write!(
                        w,
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{resp}",
                        resp.len()
                    )
                    .unwrap();
                    count.fetch_add(1, Ordering::SeqCst);
                }
            });
        }
    });
    (port, served)
}

/// Sends `n` requests on one keep-alive connection, reading each response.
fn client(port: u16, n: usize, tag: &str) {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut w = s;
    for i in 0..n {
        let body = format!("{{\"i\":{i}}}");
        write!(
            w,
            "POST /{tag}/{i} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut len = 0;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut b = vec![0; len];
        r.read_exact(&mut b).unwrap();
    }
}

fn rows(dir: &std::path::Path) -> Vec<(String, Option<i32>)> {
    use arrow::array::{Array, AsArray};
    let mut out = Vec::new();
    for p in walk(dir) {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            !name.contains("inprogress"),
            "a half-written file was left: {name}"
        );
        if name.ends_with(".parquet") {
            let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                std::fs::File::open(&p).unwrap(),
            )
            .unwrap()
            .build()
            .unwrap();
            for b in reader {
                let b = b.unwrap();
                let uri = b.column_by_name("uri").unwrap().as_string::<i32>().clone();
                let st = b
                    .column_by_name("status")
                    .unwrap()
                    .as_primitive::<arrow::datatypes::Int32Type>()
                    .clone();
                for i in 0..b.num_rows() {
                    out.push((uri.value(i).to_owned(), st.is_valid(i).then(|| st.value(i))));
                }
            }
        }
    }
    out.sort();
    out
}

/// Kills the capture if a test fails before it stops.
struct Capture(std::process::Child);

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_capture(
    port: u16,
    out: &std::path::Path,
    extra: &[&str],
) -> (Capture, BufReader<std::process::ChildStderr>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shadowtap"))
        .args([
            "capture",
            "--interface",
            "lo",
            "--filter",
            &format!("tcp port {port}"),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let child = Capture(child);
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    assert!(line.contains("capturing on lo"), "{line}");
    (child, err)
}

fn wait(child: &mut std::process::Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(start.elapsed() < limit, "capture did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root (CAP_NET_RAW) and capture tools: scripts/test.sh runs it (--include-ignored)"]
fn sigterm_mid_capture_loses_no_finished_exchange() {
    let (port, served) = server();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut cap, mut err) = spawn_capture(port, &out, &[]);
    let child = &mut cap.0;
    let clients: Vec<_> = (0..4)
        .map(|c| std::thread::spawn(move || client(port, 50, &format!("c{c}"))))
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let st = wait(child, Duration::from_secs(20));
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(st.success(), "exit {st:?}: {rest}");
    assert!(rest.contains("200 written"), "{rest}");
    assert!(
        rest.contains("dropped by the kernel"),
        "live counters reported: {rest}"
    );
    let got = rows(&out);
    assert_eq!(got.len(), served.load(Ordering::SeqCst));
    assert_eq!(got.len(), 200);
    assert!(got.iter().all(|(_, s)| *s == Some(200)));
}

#[test]
#[ignore = "needs root (CAP_NET_RAW) and capture tools: scripts/test.sh runs it (--include-ignored)"]
fn max_exchanges_stops_the_capture() {
    let (port, _served) = server();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut cap, _err) = spawn_capture(
        port,
        &out,
        &[
            "--max-exchanges",
            "5",
            "--duration",
            "20s",
            "--immediate-mode",
        ],
    );
    let child = &mut cap.0;
    // Each connection closes after its requests, so its exchanges are emitted promptly.
    for i in 0..10 {
        client(port, 1, &format!("m{i}"));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let st = wait(child, Duration::from_secs(20));
    assert!(st.success());
    assert!(rows(&out).len() >= 5);
}

#[test]
fn unknown_interface_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_shadowtap"))
        .args([
            "capture",
            "--interface",
            "nosuch0",
            "--out",
            dir.path().to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("nosuch0") && err.contains("no such interface"),
        "{err}"
    );
}

#[test]
fn list_interfaces_includes_loopback() {
    let o = Command::new(env!("CARGO_BIN_EXE_shadowtap"))
        .args(["capture", "--list-interfaces"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stdout)
        .lines()
        .any(|l| l.starts_with("lo ")));
}

#[test]
#[ignore = "needs root (CAP_NET_RAW) and capture tools: scripts/test.sh runs it (--include-ignored)"]
fn duration_stops_an_idle_capture() {
    // Regression: on an idle link libpcap's poll has no timeout; the stop must not wait for
    // traffic.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut cap, _err) = spawn_capture(1, &out, &["--duration", "1s", "--immediate-mode"]);
    let st = wait(&mut cap.0, Duration::from_secs(10));
    assert!(st.success());
    assert!(rows(&out).is_empty());
}

#[test]
#[ignore = "needs root (CAP_NET_RAW) and capture tools: scripts/test.sh runs it (--include-ignored)"]
fn stats_lines_records_and_prometheus_metrics() {
    let (port, _served) = server();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut cap, mut err) = spawn_capture(
        port,
        &out,
        &[
            "--stats-interval",
            "200ms",
            "--metrics-listen",
            "127.0.0.1:0",
        ],
    );
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let url = line
        .trim()
        .strip_prefix("metrics on http://")
        .expect("metrics address printed")
        .trim_end_matches("/metrics")
        .to_owned();
    client(port, 20, "s");
    // A request whose body is still on its way: its bytes are held, and counted as buffered.
    let mut held = TcpStream::connect(("127.0.0.1", port)).unwrap();
    held.write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
        .unwrap();
    held.write_all(&[b'a'; 30_000]).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let mut conn = TcpStream::connect(&url).unwrap();
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text}");
    let value = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(&format!("{name} ")))
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {text}"))
    };
    assert!(value("shadowtap_packets_total") >= 40, "{text}");
    assert!(text.contains("# TYPE shadowtap_pcap_kernel_dropped_total counter"));
    assert!(
        value("shadowtap_bytes_buffered") >= 30_000,
        "the held body: {text}"
    );
    assert_eq!(value("shadowtap_flows_shed_total"), 0);
    drop(held);
    let _ = Command::new("kill")
        .args(["-TERM", &cap.0.id().to_string()])
        .status();
    assert!(wait(&mut cap.0, Duration::from_secs(20)).success());
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(rest.contains("stats: "), "{rest}");
    let jsonl = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".stats.jsonl"))
        .expect("stats file");
    let records: Vec<serde_json::Value> = std::fs::read_to_string(jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(records.len() >= 3, "{records:?}");
    assert!(records.last().unwrap()["packets"].as_u64().unwrap() >= 40);
    assert!(records[0]["pcap"]["kernel_dropped"].is_u64());
    assert!(
        records
            .iter()
            .any(|r| r["bytes_buffered"].as_u64().unwrap() >= 30_000),
        "{records:?}"
    );
    assert_eq!(
        records.last().unwrap()["new_flows_kept_percent"].as_f64(),
        Some(100.0)
    );
}

#[test]
#[ignore = "needs root (CAP_NET_RAW) and capture tools: scripts/test.sh runs it (--include-ignored)"]
fn rotation_publishes_complete_files_while_running() {
    let (port, _served) = server();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (mut cap, _err) = spawn_capture(port, &out, &["--rotate-interval", "1s"]);
    client(port, 10, "r");
    // While the capture runs, a complete file appears in a date=/hour= partition.
    let deadline = Instant::now() + Duration::from_secs(10);
    let found = loop {
        let files: Vec<_> = walk(&out)
            .into_iter()
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
        if let Some(f) = files.first() {
            break f.clone();
        }
        assert!(Instant::now() < deadline, "no file published while running");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(cap.0.try_wait().unwrap().is_none(), "still capturing");
    let rel = found
        .strip_prefix(&out)
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert!(rel.starts_with("date=") && rel.contains("/hour="), "{rel}");
    let n: usize = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(&found).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap()
    .map(|b| b.unwrap().num_rows())
    .sum();
    assert!(n >= 1, "the published file is complete and readable");
    let _ = Command::new("kill")
        .args(["-TERM", &cap.0.id().to_string()])
        .status();
    assert!(wait(&mut cap.0, Duration::from_secs(20)).success());
    assert_eq!(rows(&out).len(), 10, "rotation loses nothing");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

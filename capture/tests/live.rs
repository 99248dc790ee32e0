//! Real traffic: nginx on loopback, real clients (curl and a raw pipelining socket client),
//! captured at the same time by shadowtap's live capture on `lo` and by tcpdump (whose file
//! shadowtap then decodes offline); both are checked against nginx's access log.
//!
//! Needs root (for tcpdump), nginx, tcpdump and curl, all installed by `.ci/run`. Set
//! A plain `cargo test` ignores it (reported as such); `scripts/test.sh` runs it.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use shadowtap_capture::live::LiveOptions;
use shadowtap_capture::pipeline::{capture_live, CaptureOptions, LiveLimits};

use crate::common::{capture, nginx_conf, read_rows, spawn_nginx, spawn_tcpdump, Row};

struct Nginx {
    child: Child,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM lets the master stop its workers; SIGKILL would orphan them.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_nginx(dir: &Path) -> Nginx {
    let port = free_port();
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("small.txt"), "hello shadowtap\n".repeat(200)).unwrap();
    let big: Vec<u8> = (0..(2u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(www.join("big.bin"), &big).unwrap();
    std::fs::write(
        www.join("data.json"),
        format!(
            "{{\"items\":[{}]}}",
            (0..300)
                .map(|i| i.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    )
    .unwrap();
    std::fs::write(dir.join("nginx.conf"), nginx_conf(dir, port)).unwrap();
    let child = spawn_nginx(Command::new("nginx"), dir);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Nginx { child, port }
}

struct Tcpdump(Child);

fn start_tcpdump(port: u16, out: &Path) -> Tcpdump {
    let mut tcpdump = Command::new("tcpdump");
    tcpdump
        .args([
            "-i",
            "lo",
            "--immediate-mode",
            "-U",
            "-s",
            "0",
            "-B",
            "16384",
            "-w",
        ])
        .arg(out)
        .arg(format!("tcp port {port}"));
    Tcpdump(spawn_tcpdump(tcpdump))
}

impl Tcpdump {
    fn stop(mut self) {
        // Let the last packets reach the capture buffer, then stop cleanly so the file is whole.
        std::thread::sleep(Duration::from_millis(1500));
        let _ = Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

pub(crate) fn curl(args: &[&str]) {
    let st = Command::new("curl")
        .args(["-s", "-S", "--max-time", "20"])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("run curl");
    assert!(st.success(), "curl {args:?}");
}

/// Sends `requests` in one write (HTTP pipelining) and reads until the server closes.
fn pipeline(port: u16, requests: &[String]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(requests.concat().as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    out
}

fn sorted_triples(rows: &[Row]) -> Vec<(String, String, i32)> {
    let mut seen: Vec<(String, String, i32)> = rows
        .iter()
        .map(|r| (r.method.clone(), r.uri.clone(), r.status.unwrap_or(-1)))
        .collect();
    seen.sort();
    seen
}

/// shadowtap's own live capture on `lo`, running in a thread of the test.
pub(crate) struct LiveCapture {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<String>,
}

impl LiveCapture {
    pub(crate) fn start(port: u16, out: &Path) -> LiveCapture {
        Self::start_with(port, out, None)
    }

    /// With a TLS key log (`--tls-keylog`).
    pub(crate) fn start_with(
        port: u16,
        out: &Path,
        tls_keys: Option<Arc<shadowtap_tls::KeyLog>>,
    ) -> LiveCapture {
        let mut opts = CaptureOptions::new(Vec::new(), out.to_path_buf());
        opts.progress = false;
        opts.reassembly.tls_keys = tls_keys;
        let live = LiveOptions {
            interface: "lo".into(),
            promisc: false,
            snaplen: 0,
            buffer_bytes: 16 << 20,
            filter: Some(format!("tcp port {port}")),
            immediate: true,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let stop_thread = stop.clone();
        let handle = std::thread::spawn(move || {
            let summary = capture_live(&opts, &live, &LiveLimits::default(), &stop_thread, |_| {
                tx.send(()).unwrap()
            })
            .expect("live capture on lo (needs root)");
            summary.render()
        });
        rx.recv_timeout(Duration::from_secs(10))
            .expect("live capture started");
        LiveCapture { stop, handle }
    }

    pub(crate) fn stop(self) -> String {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().expect("live capture thread")
    }
}

#[test]
#[ignore = "needs root (CAP_NET_RAW) and capture tools: scripts/test.sh runs it (--include-ignored)"]
fn nginx_traffic_on_loopback_matches_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = start_nginx(dir.path());
    let port = nginx.port;
    let pcap = dir.path().join("lo.pcap");
    let dump = start_tcpdump(port, &pcap);
    let live_out = dir.path().join("live");
    let live = LiveCapture::start(port, &live_out);
    let base = format!("http://127.0.0.1:{port}");

    // Keep-alive: several requests on one connection, gzip (chunked) and plain bodies, HEAD, 404.
    curl(&[
        "--compressed",
        "-o",
        "/dev/null",
        &format!("{base}/small.txt"),
        "-o",
        "/dev/null",
        &format!("{base}/big.bin"),
        "-o",
        "/dev/null",
        &format!("{base}/data.json?page=2&sort=asc"),
        "-o",
        "/dev/null",
        &format!("{base}/missing"),
    ]);
    curl(&["-I", &format!("{base}/small.txt")]);
    // HTTP/1.0.
    curl(&["--http1.0", "-o", "/dev/null", &format!("{base}/small.txt")]);
    // POST bodies: Content-Length and chunked.
    let body_file = dir.path().join("body.json");
    let post_body = format!("{{\"user\":\"u1\",\"pad\":\"{}\"}}", "x".repeat(100_000));
    std::fs::write(&body_file, &post_body).unwrap();
    curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "--data-binary",
        &format!("@{}", body_file.display()),
        &format!("{base}/post"),
    ]);
    curl(&[
        "-X",
        "POST",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", body_file.display()),
        &format!("{base}/post?chunked=1"),
    ]);
    // Pipelining: five requests in one segment.
    let mut reqs: Vec<String> = (0..4)
        .map(|i| format!("GET /small.txt?p={i} HTTP/1.1\r\nHost: t\r\n\r\n"))
        .collect();
    reqs.push("GET /data.json HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".into());
    let answer = pipeline(port, &reqs);
    assert_eq!(
        answer
            .windows(15)
            .filter(|w| w == b"HTTP/1.1 200 OK")
            .count(),
        5
    );

    dump.stop();
    let live_summary = live.stop();
    drop(nginx);

    let log = std::fs::read_to_string(dir.path().join("access.log")).unwrap();
    let mut logged: Vec<(String, String, i32)> = log
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            (f[0].to_owned(), f[1].to_owned(), f[2].parse().unwrap())
        })
        .collect();
    logged.sort();
    assert_eq!(logged.len(), 13, "{log}");

    if let Some(keep) = std::env::var_os("SHADOWTAP_KEEP_PCAP") {
        std::fs::copy(&pcap, keep).unwrap();
    }
    // Live: shadowtap on `lo` while the traffic ran.
    let live_rows = read_rows(&live_out);
    assert_eq!(
        sorted_triples(&live_rows),
        logged,
        "live capture: every exchange in nginx's log, and nothing else"
    );
    assert!(
        live_rows
            .iter()
            .all(|r| !r.gap && !r.incomplete && !r.parse_error && !r.no_response),
        "{live_summary}"
    );
    let live_big = live_rows.iter().find(|r| r.path == "/big.bin").unwrap();
    assert_eq!(
        live_big.response_body,
        std::fs::read(dir.path().join("www/big.bin")).unwrap(),
        "live: 2 MiB body byte for byte"
    );

    // Offline: tcpdump's file decoded by shadowtap.
    let (_d, summary, rows) = capture(&[pcap]);
    assert_eq!(
        sorted_triples(&rows),
        logged,
        "every exchange in nginx's log, and nothing else"
    );
    assert!(
        rows.iter()
            .all(|r| !r.gap && !r.incomplete && !r.parse_error && !r.no_response),
        "{summary:#?}"
    );

    let big = rows.iter().find(|r| r.path == "/big.bin").unwrap();
    assert_eq!(
        big.response_body,
        std::fs::read(dir.path().join("www/big.bin")).unwrap(),
        "2 MiB body byte for byte"
    );
    let small = rows
        .iter()
        .find(|r| r.uri == "/small.txt" && r.response_body_decoded.is_some())
        .expect("a gzip response");
    assert_eq!(
        small.response_body_decoded.as_deref().unwrap(),
        "hello shadowtap\n".repeat(200).as_bytes()
    );
    let head = rows.iter().find(|r| r.method == "HEAD").unwrap();
    assert!(head.response_body.is_empty() && head.status == Some(200));
    for r in rows.iter().filter(|r| r.method == "POST") {
        assert_eq!(r.request_body, post_body.as_bytes(), "{}", r.uri);
    }
    let json = rows
        .iter()
        .find(|r| r.path == "/data.json" && r.query.is_some())
        .unwrap();
    assert_eq!(json.query.as_deref(), Some("page=2&sort=asc"));
    // The five pipelined requests share one connection, in order.
    let piped: Vec<&crate::common::Row> = rows
        .iter()
        .filter(|r| r.uri.starts_with("/small.txt?p=") || (r.uri == "/data.json"))
        .collect();
    assert_eq!(piped.len(), 5);
    assert!(piped
        .iter()
        .all(|r| r.connection_id == piped[0].connection_id));
}

/// A pipeline that stops taking packets for a moment (a writer rolling a file, a slow disk)
/// costs nothing: once the reader queue is full the reader waits and the kernel buffer holds
/// the traffic, so every packet still arrives, in order, and the wait is counted.
#[test]
#[ignore = "needs root (CAP_NET_RAW) and capture tools: scripts/test.sh runs it (--include-ignored)"]
fn a_stalled_pipeline_loses_no_packets() {
    use shadowtap_capture::live::LiveSource;
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sink.local_addr().unwrap().port();
    let source = LiveSource::start(&LiveOptions {
        interface: "lo".into(),
        promisc: false,
        snaplen: 128,
        buffer_bytes: 64 << 20,
        filter: Some(format!("udp and dst port {port}")),
        immediate: false,
    })
    .unwrap();
    // More packets than the reader queue holds (256 batches of 256), sent while nobody reads
    // the queue.
    const N: u32 = 100_000;
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..N {
        client
            .send_to(&i.to_be_bytes(), ("127.0.0.1", port))
            .unwrap();
        if i % 1000 == 999 {
            // Let the socket buffer of `sink` drain into nowhere: nothing reads it, and a full
            // socket buffer does not stop loopback delivery to the capture.
            std::thread::yield_now();
        }
    }
    std::thread::sleep(Duration::from_millis(800));
    let backlog = source.backlog();
    // The payload is the packet's last 4 bytes (Ethernet/IPv4/UDP on lo).
    let sequence = |p: &shadowtap_capture::live::OwnedPacket| {
        u32::from_be_bytes(p.data[p.data.len() - 4..].try_into().unwrap())
    };
    let mut seen = Vec::with_capacity(N as usize);
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < N as usize && Instant::now() < deadline {
        if let Ok(Some(batch)) = source.next_batch(Duration::from_millis(200)) {
            seen.extend(batch.iter().map(sequence));
        }
    }
    let (rest, stats) = source.stop();
    seen.extend(rest.iter().map(sequence));
    let stats = stats.unwrap();
    assert_eq!(
        backlog, 1.0,
        "the queue was full while the pipeline stalled"
    );
    assert_eq!(stats.queue_dropped, 0, "{stats:?}");
    assert_eq!(stats.kernel_dropped, 0, "{stats:?}");
    assert!(stats.queue_waited_ms > 0, "{stats:?}");
    assert_eq!(seen.len(), N as usize, "{stats:?}");
    assert!(seen.iter().copied().eq(0..N), "every packet, in order");
    drop(sink);
}

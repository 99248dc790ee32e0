//! HTTPS captured live on `lo` and decrypted with a key log that curl writes while the capture
//! runs (the file starts empty): the key log is followed as it grows, and records that came
//! before their keys are opened once the keys are there. nginx with TLS 1.3 and 1.2, HTTP/1.1
//! and HTTP/2, curl with SSLKEYLOGFILE.
//!
//! Needs root (a live capture), nginx, curl and openssl, installed by `scripts/test.sh`. A plain
//! `cargo test` ignores it (reported as such); `scripts/test.sh` runs it.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{read_rows, spawn_nginx};
use crate::live::LiveCapture;

fn conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log off;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  types {{ text/plain txt; application/json json; }}
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {d}/cert.pem;
    ssl_certificate_key {d}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    root {d}/www;
  }}
}}
"#
    )
}

fn curl(keylog: &Path, args: &[&str]) {
    let st = Command::new("curl")
        .env("SSLKEYLOGFILE", keylog)
        .args(["-s", "-S", "-k", "--max-time", "20", "-o", "/dev/null"])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .expect("run curl");
    assert!(st.success(), "curl {args:?}");
}

#[test]
#[ignore = "needs root (CAP_NET_RAW) and nginx, curl, openssl: scripts/test.sh runs it (--include-ignored)"]
fn https_is_decrypted_live_with_a_key_log_written_during_the_capture() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("www")).unwrap();
    std::fs::write(d.join("www/a.txt"), "hello over tls\n").unwrap();
    std::fs::write(d.join("www/b.json"), "{\"ok\":true}\n").unwrap();
    let st = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=shadowtap.test",
        ])
        .args(["-days", "2", "-keyout"])
        .arg(d.join("key.pem"))
        .arg("-out")
        .arg(d.join("cert.pem"))
        .stderr(Stdio::null())
        .status()
        .expect("openssl (apt-get install openssl)");
    assert!(st.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    std::fs::write(d.join("nginx.conf"), conf(d, port)).unwrap();
    let mut nginx = spawn_nginx(Command::new("nginx"), d);
    let up = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "nginx did not start");
    // Empty when the capture starts: every key comes while it runs.
    let keylog = d.join("keys.log");
    std::fs::write(&keylog, "").unwrap();
    let keys = Arc::new(shadowtap_tls::KeyLog::open(&keylog).unwrap());
    let out = d.join("out");
    let live = LiveCapture::start_with(port, &out, Some(keys));
    let url = |p: &str| format!("https://127.0.0.1:{port}{p}");
    curl(&keylog, &["--http1.1", "--tlsv1.3", &url("/a.txt")]);
    curl(
        &keylog,
        &[
            "--http2",
            "--tls-max",
            "1.2",
            &url("/b.json"),
            &url("/missing"),
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let summary = live.stop();
    let _ = Command::new("kill")
        .args(["-TERM", &nginx.id().to_string()])
        .status();
    let _ = nginx.wait();
    assert!(
        summary.contains("tls          2 connections: 2 decrypted"),
        "{summary}"
    );
    let mut seen: Vec<(String, String, Option<i32>)> = read_rows(&out)
        .into_iter()
        .map(|r| (r.method, r.uri, r.status))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("GET".into(), "/a.txt".into(), Some(200)),
            ("GET".into(), "/b.json".into(), Some(200)),
            ("GET".into(), "/missing".into(), Some(404)),
        ]
    );
}

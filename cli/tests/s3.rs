//! A real S3-compatible server for the tests: `moto_server` (PyPI) on 127.0.0.1, started by
//! the test and killed on drop. `scripts/test.sh` installs it in the test virtualenv and
//! names it in `SHADOWTAP_MOTO_SERVER`; without it the tests that use it fail (a plain
//! `cargo test` reports them ignored).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running moto server.
pub struct S3 {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    port: u16,
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3 {
    /// Starts moto on a free loopback port and waits until it answers (at most 60 s).
    pub fn start() -> Self {
        let exe = std::env::var("SHADOWTAP_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&exe)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("{exe}: {e} (scripts/test.sh installs moto in its virtualenv and sets SHADOWTAP_MOTO_SERVER)")
            });
        let s3 = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            port,
        };
        let start = Instant::now();
        loop {
            if s3
                .request("GET", "/", "")
                .is_some_and(|r| r.starts_with("HTTP/1.1 200"))
            {
                return s3;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto_server did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// One plain HTTP request (moto does not check signatures); the whole response.
    fn request(&self, method: &str, path: &str, body: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.port,
            body.len()
        )
        .ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// Creates a bucket.
    pub fn bucket(&self, name: &str) {
        let r = self
            .request("PUT", &format!("/{name}"), "")
            .expect("moto answers");
        assert!(r.starts_with("HTTP/1.1 200"), "creating bucket {name}: {r}");
    }

    /// The keys under `prefix` in `bucket`, sorted.
    pub fn keys(&self, bucket: &str, prefix: &str) -> Vec<String> {
        let r = self
            .request(
                "GET",
                &format!("/{bucket}?list-type=2&prefix={prefix}&max-keys=1000"),
                "",
            )
            .expect("moto answers");
        let mut keys: Vec<String> = r
            .split("<Key>")
            .skip(1)
            .filter_map(|k| k.split("</Key>").next())
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    /// The environment that points shadowtap at this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }
}

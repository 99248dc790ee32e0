//! Idle HTTP/1.1 connections to one `host:port`, and opening new ones.
//!
//! Idle connections are kept in a stack (the most recently used first, so a quiet caller uses
//! few). A connection is only put back after its response was read to the end; one that
//! failed or timed out is dropped, never reused.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::{io_kind, Connection, Failure, FailureKind};

/// Connections to one `host:port`.
pub struct Pool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    max_idle: usize,
    max_body: u64,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    /// A pool for `host:port` (a name, or an address; IPv6 with or without brackets) keeping
    /// at most `max_idle` idle connections whose responses keep at most `max_body` body bytes.
    pub fn new(
        host: &str,
        port: u16,
        connect_timeout: Duration,
        max_idle: usize,
        max_body: u64,
    ) -> Self {
        Pool {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            connect_timeout,
            max_idle: max_idle.max(1),
            max_body,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The host connected to (without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port connected to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connect timeout.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// A connection ready to send, and how long opening it took (µs) when this call opened
    /// it. An idle connection is first checked (one non-blocking read) for a close by the
    /// server, or for bytes nobody asked for: a stray or overlong response left there would
    /// otherwise be read as the answer to the next request.
    pub async fn checkout(&self) -> Result<(Connection, Option<i64>), Failure> {
        loop {
            let Some(conn) = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop()
            else {
                break;
            };
            if !conn.closed_while_idle() {
                return Ok((conn, None));
            }
        }
        self.open().await
    }

    /// A new connection, and how long opening it took (µs).
    pub async fn open(&self) -> Result<(Connection, Option<i64>), Failure> {
        let started = Instant::now();
        let stream = connect(&self.host, self.port, self.connect_timeout).await?;
        let opened = started.elapsed().as_micros() as i64;
        Ok((Connection::new(stream, self.max_body), Some(opened)))
    }

    /// Puts a connection whose response was read to the end back (dropped when the pool
    /// already holds `max_idle`).
    pub fn checkin(&self, conn: Connection) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }
}

/// A TCP connection to `host:port` (every address the name resolves to, in turn) within
/// `timeout`, with Nagle's algorithm off.
pub async fn connect(host: &str, port: u16, timeout: Duration) -> Result<TcpStream, Failure> {
    let host = host.trim_matches(['[', ']']);
    let target = format!("{host}:{port}");
    let fail = |kind, message| Failure::before_sending(kind, message);
    let connecting = async {
        let addrs = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| fail(FailureKind::Connect, format!("resolving {host}: {e}")))?;
        let mut last = None;
        for addr in addrs {
            match TcpStream::connect(addr).await {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => fail(
                io_kind(&e).unwrap_or(FailureKind::Connect),
                format!("connecting to {target}: {e}"),
            ),
            None => fail(
                FailureKind::Connect,
                format!("{host} resolves to no address"),
            ),
        })
    };
    match tokio::time::timeout(timeout, connecting).await {
        Ok(r) => r,
        Err(_) => Err(fail(
            FailureKind::Timeout,
            format!("connecting to {target}: no connection within {timeout:?}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::RequestHead;
    use std::io::{Read, Write};

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn a_connection_is_reused_and_refusals_and_timeouts_are_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            for _ in 0..2 {
                let mut got = Vec::new();
                while !got.ends_with(b"\r\n\r\n") {
                    let n = conn.read(&mut buf).unwrap();
                    assert!(n > 0);
                    got.extend_from_slice(&buf[..n]);
                }
                conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .unwrap();
            }
            // A second connection would be accepted by nobody: the test fails on a hang.
        });
        runtime().block_on(async {
            let pool = Pool::new("127.0.0.1", port, Duration::from_secs(5), 4, 1024);
            let head = RequestHead {
                method: "GET",
                target: "/",
                headers: &[],
            };
            for round in 0..2 {
                let (mut c, opened) = pool.checkout().await.unwrap();
                assert_eq!(opened.is_some(), round == 0, "round {round}");
                let a = c.exchange(&head, b"", &mut None).await.unwrap();
                assert_eq!((a.response.status, &a.response.body[..]), (200, &b"ok"[..]));
                assert!(a.reusable);
                pool.checkin(c);
            }
        });
        server.join().unwrap();

        // Nothing listens on a port just released.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = free.local_addr().unwrap().port();
        drop(free);
        let f = runtime()
            .block_on(connect("127.0.0.1", port, Duration::from_secs(5)))
            .unwrap_err();
        assert_eq!(f.kind, FailureKind::Refused, "{}", f.message);
        assert!(!f.written && !f.answered);
    }
}

//! Connections to one plain-HTTP target (`http://`): HTTP/1.1 ([`crate::h1`]) or h2c (hyper).
//!
//! Replay at `--rate max` spends most of its time per request in the client, so plain-HTTP
//! targets skip the general-purpose client (URL parsing, proxy and redirect layers, a pool keyed
//! by URL) and keep their own: idle HTTP/1.1 connections in a stack (the most recently used
//! first, so a quiet replay uses few), one shared multiplexed connection for h2c. A connection
//! is only put back after its response was read to the end; one that failed or timed out is
//! dropped, never reused. `https://` targets go through reqwest (TLS, ALPN) instead.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use shadowtap_core::replays::ErrorKind;

use crate::client::{classify_hyper, io_kind, Protocol};
use crate::h1::H1Conn;

/// The request body type sent to h2c targets.
pub(crate) type ReqBody = Full<Bytes>;

/// A handle on the shared h2c connection.
pub(crate) struct H2Conn(http2::SendRequest<ReqBody>);

impl H2Conn {
    /// Sends `req`; when the connection closed before the request was written (a server that
    /// dropped an idle connection just as it was reused), the request comes back unsent with
    /// the error.
    pub(crate) async fn send(
        &mut self,
        req: http::Request<ReqBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, (hyper::Error, Option<http::Request<ReqBody>>)>
    {
        self.0.try_send_request(req).await.map_err(|mut e| {
            let unsent = e.take_message();
            (e.into_error(), unsent)
        })
    }
}

/// Connections to one `host:port`.
pub(crate) struct PlainPool {
    host: String,
    port: u16,
    protocol: Protocol,
    connect_timeout: Duration,
    max_idle: usize,
    max_body: u64,
    idle: Mutex<Vec<H1Conn>>,
    h2: tokio::sync::Mutex<Option<http2::SendRequest<ReqBody>>>,
}

impl PlainPool {
    pub(crate) fn new(
        host: &str,
        port: u16,
        protocol: Protocol,
        connect_timeout: Duration,
        max_idle: usize,
        max_body: u64,
    ) -> Self {
        PlainPool {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            protocol,
            connect_timeout,
            max_idle: max_idle.max(1),
            max_body,
            idle: Mutex::new(Vec::new()),
            h2: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// An HTTP/1.1 connection ready to send, and how long opening it took when this call
    /// opened it. An idle connection is first checked (one non-blocking read) for a close by
    /// the server, or for bytes nobody asked for: a stray or overlong response left there would
    /// otherwise be read as the answer to the next request.
    pub(crate) async fn checkout_h1(&self) -> Result<(H1Conn, Option<i64>), (ErrorKind, String)> {
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
        self.open_h1().await
    }

    /// A new HTTP/1.1 connection, and how long opening it took.
    pub(crate) async fn open_h1(&self) -> Result<(H1Conn, Option<i64>), (ErrorKind, String)> {
        let started = Instant::now();
        let stream = self.connect().await?;
        let opened = started.elapsed().as_micros() as i64;
        Ok((H1Conn::new(stream, self.max_body), Some(opened)))
    }

    /// Puts an HTTP/1.1 connection whose response was read to the end back.
    pub(crate) fn checkin_h1(&self, conn: H1Conn) {
        let mut idle = self
            .idle
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < self.max_idle {
            idle.push(conn);
        }
    }

    /// A handle on the shared h2c connection (opened when there is none or it closed), and
    /// how long opening it took when this call opened it.
    pub(crate) async fn checkout_h2(&self) -> Result<(H2Conn, Option<i64>), (ErrorKind, String)> {
        let mut shared = self.h2.lock().await;
        if let Some(s) = shared.as_mut() {
            if !s.is_closed() && s.ready().await.is_ok() {
                return Ok((H2Conn(s.clone()), None));
            }
        }
        let (conn, opened) = self.open_h2().await?;
        *shared = Some(conn.0.clone());
        Ok((conn, opened))
    }

    /// A new h2c connection (not shared), and how long opening it took.
    pub(crate) async fn open_h2(&self) -> Result<(H2Conn, Option<i64>), (ErrorKind, String)> {
        let started = Instant::now();
        let io = TokioIo::new(self.connect().await?);
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| classify_hyper(&e, "h2c handshake"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((H2Conn(sender), Some(started.elapsed().as_micros() as i64)))
    }

    async fn connect(&self) -> Result<tokio::net::TcpStream, (ErrorKind, String)> {
        let target = format!("{}:{}", self.host, self.port);
        let connecting = async {
            let addrs = tokio::net::lookup_host((self.host.as_str(), self.port))
                .await
                .map_err(|e| (ErrorKind::Connect, format!("resolving {}: {e}", self.host)))?;
            let mut last = None;
            for addr in addrs {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(s);
                    }
                    Err(e) => last = Some(e),
                }
            }
            Err(match last {
                Some(e) => (
                    io_kind(&e).unwrap_or(ErrorKind::Connect),
                    format!("connecting to {target}: {e}"),
                ),
                None => (
                    ErrorKind::Connect,
                    format!("{} resolves to no address", self.host),
                ),
            })
        };
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(r) => r,
            Err(_) => Err((
                ErrorKind::Timeout,
                format!(
                    "connecting to {target}: no connection within {:?}",
                    self.connect_timeout
                ),
            )),
        }
    }
}

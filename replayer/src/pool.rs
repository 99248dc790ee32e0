//! Connections to one plain-HTTP target (`http://`), HTTP/1.1 or h2c, straight over hyper.
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
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use shadowtap_core::replays::ErrorKind;

use crate::client::{classify_hyper, io_kind, Protocol};

/// The request body type sent to plain targets.
pub(crate) type ReqBody = Full<Bytes>;

/// A connection ready for one request.
pub(crate) enum Conn {
    /// HTTP/1.1: one request at a time; back to the pool after the response.
    H1(http1::SendRequest<ReqBody>),
    /// h2c: a handle on the shared connection.
    H2(http2::SendRequest<ReqBody>),
}

impl Conn {
    /// Sends `req`; when the connection closed before the request was written (a server that
    /// dropped an idle keep-alive connection just as it was reused), the request comes back
    /// unsent with the error.
    pub(crate) async fn send(
        &mut self,
        req: http::Request<ReqBody>,
    ) -> Result<http::Response<hyper::body::Incoming>, (hyper::Error, Option<http::Request<ReqBody>>)>
    {
        let r = match self {
            Conn::H1(s) => s.try_send_request(req).await,
            Conn::H2(s) => s.try_send_request(req).await,
        };
        r.map_err(|mut e| {
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
    idle: Mutex<Vec<http1::SendRequest<ReqBody>>>,
    h2: tokio::sync::Mutex<Option<http2::SendRequest<ReqBody>>>,
}

impl PlainPool {
    pub(crate) fn new(
        host: &str,
        port: u16,
        protocol: Protocol,
        connect_timeout: Duration,
        max_idle: usize,
    ) -> Self {
        PlainPool {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            protocol,
            connect_timeout,
            max_idle: max_idle.max(1),
            idle: Mutex::new(Vec::new()),
            h2: tokio::sync::Mutex::new(None),
        }
    }

    pub(crate) fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// A connection ready to send, and how long opening it took when this call opened it.
    pub(crate) async fn checkout(&self) -> Result<(Conn, Option<i64>), (ErrorKind, String)> {
        match self.protocol {
            Protocol::Http1 => {
                loop {
                    let Some(mut s) = self
                        .idle
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .pop()
                    else {
                        break;
                    };
                    // The connection task marks it ready once the last response is finished;
                    // a closed one (the server hung up while idle) fails here and is dropped.
                    if !s.is_closed() && s.ready().await.is_ok() {
                        return Ok((Conn::H1(s), None));
                    }
                }
                self.open().await
            }
            Protocol::H2c => {
                let mut shared = self.h2.lock().await;
                if let Some(s) = shared.as_mut() {
                    if !s.is_closed() && s.ready().await.is_ok() {
                        return Ok((Conn::H2(s.clone()), None));
                    }
                }
                let (conn, opened) = self.open().await?;
                if let Conn::H2(s) = &conn {
                    *shared = Some(s.clone());
                }
                Ok((conn, opened))
            }
        }
    }

    /// A new connection (for h2c it becomes the shared one at the next checkout only if
    /// `checkout` opened it), and how long opening it took.
    pub(crate) async fn open(&self) -> Result<(Conn, Option<i64>), (ErrorKind, String)> {
        let started = Instant::now();
        let io = self.connect().await?;
        let conn = match self.protocol {
            Protocol::Http1 => {
                let (sender, conn) = http1::handshake(io)
                    .await
                    .map_err(|e| classify_hyper(&e, "handshake"))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Conn::H1(sender)
            }
            Protocol::H2c => {
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|e| classify_hyper(&e, "h2c handshake"))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Conn::H2(sender)
            }
        };
        Ok((conn, Some(started.elapsed().as_micros() as i64)))
    }

    /// Puts a connection whose response was read to the end back.
    pub(crate) fn checkin(&self, conn: Conn) {
        if let Conn::H1(s) = conn {
            if s.is_closed() {
                return;
            }
            let mut idle = self
                .idle
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if idle.len() < self.max_idle {
                idle.push(s);
            }
        }
    }

    async fn connect(&self) -> Result<TokioIo<tokio::net::TcpStream>, (ErrorKind, String)> {
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
                        return Ok(TokioIo::new(s));
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

//! The shared h2c (HTTP/2 without TLS, by prior knowledge) connection to one plain-HTTP target,
//! over hyper.
//!
//! One multiplexed connection per target and sending thread, opened when there is none or it
//! closed. HTTP/1.1 targets use [`shadowtap_http1::client::Pool`] instead, and `https://`
//! targets reqwest (TLS, ALPN).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use shadowtap_core::replays::ErrorKind;

use crate::transport::{classify_hyper, failure};

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

/// The h2c connection to one `host:port`.
pub(crate) struct H2Shared {
    host: String,
    port: u16,
    connect_timeout: Duration,
    shared: tokio::sync::Mutex<Option<http2::SendRequest<ReqBody>>>,
}

impl H2Shared {
    pub(crate) fn new(host: &str, port: u16, connect_timeout: Duration) -> Self {
        H2Shared {
            host: host.trim_matches(['[', ']']).to_owned(),
            port,
            connect_timeout,
            shared: tokio::sync::Mutex::new(None),
        }
    }

    /// A handle on the shared connection (opened when there is none or it closed), and how
    /// long opening it took when this call opened it.
    pub(crate) async fn checkout(&self) -> Result<(H2Conn, Option<i64>), (ErrorKind, String)> {
        let mut shared = self.shared.lock().await;
        if let Some(s) = shared.as_mut() {
            if !s.is_closed() && s.ready().await.is_ok() {
                return Ok((H2Conn(s.clone()), None));
            }
        }
        let (conn, opened) = self.open().await?;
        *shared = Some(conn.0.clone());
        Ok((conn, opened))
    }

    /// A new connection (not shared), and how long opening it took.
    pub(crate) async fn open(&self) -> Result<(H2Conn, Option<i64>), (ErrorKind, String)> {
        let started = Instant::now();
        let stream = shadowtap_http1::client::connect(&self.host, self.port, self.connect_timeout)
            .await
            .map_err(failure)?;
        let (sender, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|e| classify_hyper(&e, "h2c handshake"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((H2Conn(sender), Some(started.elapsed().as_micros() as i64)))
    }
}

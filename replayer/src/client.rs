//! One client per target: connection reuse, HTTP/1.1 or h2c, timing of connect / first byte /
//! total, bodies capped, and transport errors sorted into kinds ([`crate::transport`]).
//!
//! Replay at `--rate max` spends most of its time per request in the client, so plain-HTTP
//! targets skip the general-purpose client (URL parsing, proxy and redirect layers, a pool keyed
//! by URL): HTTP/1.1 goes through [`shadowtap_http1::client`] (requests exactly as recorded),
//! h2c through one shared hyper connection ([`crate::h2c`]). `https://` targets use reqwest
//! (TLS, ALPN).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use shadowtap_core::replays::ErrorKind;
use shadowtap_core::{CompactString, Header};

use shadowtap_http1::client::{Pool, RequestHead};

use crate::h2c::{H2Shared, ReqBody};
pub use crate::transport::Protocol;
use crate::transport::{classify, classify_hyper, error_chain, failure, kind};

/// Client settings shared by every target.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Whole-request timeout (connect, send, response and body).
    pub timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// HTTP version.
    pub protocol: Protocol,
    /// Idle connections kept per target.
    pub pool_size: usize,
    /// Accept any TLS certificate (staging pools with self-signed certificates).
    pub insecure: bool,
    /// Response body bytes kept per response.
    pub max_body: u64,
}

tokio::task_local! {
    /// Where the connector writes how long the connection it opened for this request took.
    static CONNECT_US: Arc<AtomicI64>;
}

/// A tower layer around reqwest's connector that times connection setup (TCP and TLS) and
/// reports it to the request that caused it.
#[derive(Clone)]
struct ConnectTiming;

impl<S> tower::Layer<S> for ConnectTiming {
    type Service = Timed<S>;
    fn layer(&self, inner: S) -> Timed<S> {
        Timed(inner)
    }
}

#[derive(Clone)]
struct Timed<S>(S);

impl<S, R> tower::Service<R> for Timed<S>
where
    S: tower::Service<R>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        // The connector is called while the request's own future is polled, so the request's
        // slot is in scope; a connection opened in the background for the pool has none.
        let slot = CONNECT_US.try_with(Arc::clone).ok();
        let start = Instant::now();
        let fut = self.0.call(req);
        Box::pin(async move {
            let out = fut.await;
            if let (Some(slot), true) = (slot, out.is_ok()) {
                slot.store(start.elapsed().as_micros() as i64, Ordering::Relaxed);
            }
            out
        })
    }
}

/// Installs the process-wide TLS crypto provider (ring) once.
fn install_crypto() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// How requests reach one target.
pub struct TargetClient {
    inner: Transport,
    timeout: std::time::Duration,
}

enum Transport {
    /// `http://`: connections kept by us (see the module docs).
    Plain(PlainPool),
    /// `https://`: reqwest (TLS, HTTP/2 by ALPN).
    Tls(reqwest::Client),
}

/// Connections to one plain-HTTP target.
struct PlainPool {
    protocol: Protocol,
    h1: Pool,
    h2: H2Shared,
}

/// Builds the client for one target.
pub fn build_client(url: &reqwest::Url, o: &ClientOptions) -> Result<TargetClient, String> {
    if url.scheme() == "http" {
        let host = url.host_str().ok_or_else(|| format!("{url}: no host"))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let pool = PlainPool {
            protocol: o.protocol,
            h1: Pool::new(host, port, o.connect_timeout, o.pool_size, o.max_body),
            h2: H2Shared::new(host, port, o.connect_timeout),
        };
        return Ok(TargetClient {
            inner: Transport::Plain(pool),
            timeout: o.timeout,
        });
    }
    install_crypto();
    let mut b = reqwest::Client::builder()
        .timeout(o.timeout)
        .connect_timeout(o.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(o.pool_size)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .connector_layer(ConnectTiming)
        .tls_danger_accept_invalid_certs(o.insecure);
    b = match o.protocol {
        Protocol::Http1 => b.http1_only(),
        Protocol::H2c => b.http2_prior_knowledge(),
    };
    let client = b
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))?;
    Ok(TargetClient {
        inner: Transport::Tls(client),
        timeout: o.timeout,
    })
}

/// One request as it leaves: `url` is the whole URL (`http://host:port/path?query`), `authority`
/// and `path_and_query` its parts.
pub struct Outgoing<'a> {
    /// Whole URL.
    pub url: &'a str,
    /// `host[:port]`.
    pub authority: &'a str,
    /// Path and query, percent-encoded where needed.
    pub path_and_query: &'a str,
    /// Method.
    pub method: &'a str,
    /// Header lines in order.
    pub headers: &'a [Header],
    /// Body (shared: the row keeps the same bytes).
    pub body: Bytes,
}

/// Sends one request and reads the whole response (up to the body cap).
pub async fn send(client: &TargetClient, req: Outgoing<'_>, max_body: u64) -> Exchanged {
    match &client.inner {
        Transport::Plain(pool) => send_plain(pool, client.timeout, req, max_body).await,
        Transport::Tls(c) => match reqwest::Url::parse(req.url) {
            // Boxed, as is h2c below: their futures are large, and the HTTP/1.1 path (the
            // common one) would otherwise copy their size into every request task it spawns.
            Ok(url) => {
                Box::pin(send_reqwest(
                    c,
                    url,
                    req.method,
                    req.headers,
                    req.body,
                    max_body,
                ))
                .await
            }
            Err(e) => Exchanged {
                error: Some((ErrorKind::Other, format!("{}: {e}", req.url))),
                ..Exchanged::default()
            },
        },
    }
}

async fn send_plain(
    pool: &PlainPool,
    timeout: Duration,
    req: Outgoing<'_>,
    max_body: u64,
) -> Exchanged {
    let start = Instant::now();
    let mut out = Exchanged::default();
    let mut connect_us = None;
    let mut first_byte = None;
    let work = async {
        match pool.protocol {
            Protocol::Http1 => send_h1(pool, &req, &mut connect_us, &mut first_byte).await,
            Protocol::H2c => {
                Box::pin(send_h2(
                    pool,
                    &req,
                    max_body,
                    &mut connect_us,
                    &mut first_byte,
                ))
                .await
            }
        }
    };
    let result = match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err((
            ErrorKind::Timeout,
            format!("no complete response within {timeout:?}"),
        )),
    };
    out.total_us = start.elapsed().as_micros() as i64;
    out.connect_us = connect_us;
    out.ttfb_us = first_byte.map(|t: Instant| t.duration_since(start).as_micros() as i64);
    match result {
        Ok(raw) => out.response = Some(raw),
        Err(e) => out.error = Some(e),
    }
    out
}

/// One exchange over HTTP/1.1 ([`shadowtap_http1::client`]); `first_byte` is when the
/// response began.
async fn send_h1(
    pool: &PlainPool,
    req: &Outgoing<'_>,
    connect_us: &mut Option<i64>,
    first_byte: &mut Option<Instant>,
) -> Result<RawResponse, (ErrorKind, String)> {
    let head = RequestHead {
        method: req.method,
        target: req.path_and_query,
        headers: req.headers,
    };
    let idempotent = is_idempotent(req.method);
    let (mut conn, opened) = pool.h1.checkout().await.map_err(failure)?;
    *connect_us = opened;
    let answer = match conn.exchange(&head, &req.body, first_byte).await {
        Ok(a) => a,
        Err(f) => {
            // A reused keep-alive connection the server closed just as it was reused (its idle
            // timeout): the request either never went out, or went out and met the close
            // before any response byte came back. It is sent once more on a new connection
            // when that cannot duplicate anything: it was never written, or its method is
            // idempotent (RFC 9110 9.2.2, as browsers retry).
            let retry = conn.reused()
                && !f.answered
                && kind(f.kind) == ErrorKind::Reset
                && (!f.written || idempotent);
            if !retry {
                return Err(failure(f));
            }
            drop(conn);
            let (fresh, opened) = pool.h1.open().await.map_err(failure)?;
            *connect_us = opened;
            conn = fresh;
            conn.exchange(&head, &req.body, first_byte)
                .await
                .map_err(failure)?
        }
    };
    if answer.reusable {
        pool.h1.checkin(conn);
    }
    let m = answer.response;
    Ok(RawResponse {
        status: m.status,
        version: m.version,
        headers: m.headers,
        body: m.body,
        body_len: m.body_len,
        truncated: m.body_truncated,
    })
}

/// One exchange over the shared h2c connection (hyper); `first_byte` is when the response
/// head arrived.
async fn send_h2(
    pool: &PlainPool,
    req: &Outgoing<'_>,
    max_body: u64,
    connect_us: &mut Option<i64>,
    first_byte: &mut Option<Instant>,
) -> Result<RawResponse, (ErrorKind, String)> {
    let request = h2_request(req)?;
    let (mut conn, opened) = pool.h2.checkout().await?;
    *connect_us = opened;
    let resp = match conn.send(request).await {
        Ok(resp) => resp,
        Err((e, unsent)) => {
            let failed = classify_hyper(&e, "request");
            // As for HTTP/1.1 (see `send_h1`): resent once on a new connection when that
            // cannot duplicate anything.
            let retry = match unsent {
                Some(r) => Some(r),
                None if failed.0 == ErrorKind::Reset && is_idempotent(req.method) => {
                    Some(h2_request(req)?)
                }
                None => None,
            };
            match retry {
                Some(again) if opened.is_none() => {
                    let (mut fresh, opened) = pool.h2.open().await?;
                    *connect_us = opened;
                    fresh
                        .send(again)
                        .await
                        .map_err(|(e, _)| classify_hyper(&e, "request"))?
                }
                _ => return Err(failed),
            }
        }
    };
    *first_byte = Some(Instant::now());
    let (parts, mut body) = resp.into_parts();
    let mut raw = RawResponse {
        status: parts.status.as_u16(),
        version: compact_str::format_compact!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| Header::from_bytes(n.as_str().as_bytes(), v.as_bytes()))
            .collect(),
        ..RawResponse::default()
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| classify_hyper(&e, "reading the body"))?;
        if let Ok(chunk) = frame.into_data() {
            raw.body_len += chunk.len() as u64;
            let room = max_body.saturating_sub(raw.body.len() as u64) as usize;
            if chunk.len() > room {
                raw.truncated = true;
            }
            raw.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        }
    }
    Ok(raw)
}

/// Methods a client may resend after a connection failure (RFC 9110 9.2.2).
fn is_idempotent(method: &str) -> bool {
    ["GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"]
        .iter()
        .any(|m| m.eq_ignore_ascii_case(method))
}

/// The hyper request for an h2c target: the URI carries the authority (`:authority`, from
/// the Host header when there is one) and Host itself is not sent.
fn h2_request(req: &Outgoing<'_>) -> Result<http::Request<ReqBody>, (ErrorKind, String)> {
    let bad = |what: &str, e: &dyn std::fmt::Display| (ErrorKind::Other, format!("{what}: {e}"));
    let method = http::Method::from_bytes(req.method.as_bytes()).map_err(|e| bad("method", &e))?;
    let authority = crate::request::header(req.headers, "host").unwrap_or(req.authority);
    let mut b = http::Request::builder()
        .method(method)
        .version(http::Version::HTTP_2)
        .uri(format!("http://{authority}{}", req.path_and_query));
    let map = b.headers_mut().ok_or_else(|| {
        (
            ErrorKind::Other,
            format!("{}: not a valid request target", req.path_and_query),
        )
    })?;
    map.reserve(req.headers.len());
    for h in req.headers {
        if h.name.eq_ignore_ascii_case("host") {
            continue;
        }
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|e| bad(&format!("header name {:?}", h.name), &e))?;
        let value = HeaderValue::from_bytes(h.value.as_bytes())
            .map_err(|e| bad(&format!("header {:?}", h.name), &e))?;
        map.append(name, value);
    }
    b.body(Full::new(req.body.clone()))
        .map_err(|e| bad(req.path_and_query, &e))
}

/// What came back from one target.
#[derive(Debug, Clone, Default)]
pub struct Exchanged {
    /// Status, headers, body (when a response came).
    pub response: Option<RawResponse>,
    /// Transport error.
    pub error: Option<(ErrorKind, String)>,
    /// Connection setup time, when this request opened the connection.
    pub connect_us: Option<i64>,
    /// Time to the response head.
    pub ttfb_us: Option<i64>,
    /// Time to the end of the body (or the error).
    pub total_us: i64,
}

/// A response as received.
#[derive(Debug, Clone, Default)]
pub struct RawResponse {
    /// Status code.
    pub status: u16,
    /// `HTTP/1.1`, `HTTP/2.0`.
    pub version: CompactString,
    /// Header lines in order.
    pub headers: Vec<Header>,
    /// Body bytes kept (at most the cap).
    pub body: Vec<u8>,
    /// Body length received.
    pub body_len: u64,
    /// The body was longer than the cap.
    pub truncated: bool,
}

/// Sends one request through reqwest and reads the whole response (up to the body cap).
async fn send_reqwest(
    client: &reqwest::Client,
    url: reqwest::Url,
    method: &str,
    headers: &[Header],
    body: Bytes,
    max_body: u64,
) -> Exchanged {
    let slot = Arc::new(AtomicI64::new(-1));
    let start = Instant::now();
    let mut out = Exchanged::default();
    let result = CONNECT_US
        .scope(slot.clone(), async {
            let method = reqwest::Method::from_bytes(method.as_bytes())
                .map_err(|e| (ErrorKind::Other, format!("method: {e}")))?;
            let mut map = HeaderMap::with_capacity(headers.len());
            for h in headers {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|e| (ErrorKind::Other, format!("header name {:?}: {e}", h.name)))?;
                let value = HeaderValue::from_bytes(h.value.as_bytes())
                    .map_err(|e| (ErrorKind::Other, format!("header {:?}: {e}", h.name)))?;
                map.append(name, value);
            }
            let mut resp = client
                .request(method, url)
                .headers(map)
                .body(body)
                .send()
                .await
                .map_err(|e| classify(&e))?;
            let ttfb = start.elapsed().as_micros() as i64;
            let mut raw = RawResponse {
                status: resp.status().as_u16(),
                version: compact_str::format_compact!("{:?}", resp.version()),
                headers: resp
                    .headers()
                    .iter()
                    .map(|(n, v)| Header::from_bytes(n.as_str().as_bytes(), v.as_bytes()))
                    .collect(),
                ..RawResponse::default()
            };
            loop {
                match resp.chunk().await {
                    Ok(Some(chunk)) => {
                        raw.body_len += chunk.len() as u64;
                        let room = max_body.saturating_sub(raw.body.len() as u64) as usize;
                        if chunk.len() > room {
                            raw.truncated = true;
                        }
                        raw.body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                    }
                    Ok(None) => break,
                    Err(e) => return Err(classify(&e)),
                }
            }
            Ok((ttfb, raw))
        })
        .await;
    out.total_us = start.elapsed().as_micros() as i64;
    let c = slot.load(Ordering::Relaxed);
    out.connect_us = (c >= 0).then_some(c);
    match result {
        Ok((ttfb, raw)) => {
            out.ttfb_us = Some(ttfb);
            out.response = Some(raw);
        }
        Err(e) => out.error = Some(e),
    }
    out
}

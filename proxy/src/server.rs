//! The data plane: accepts client connections (HTTP/1.1 and h2c, keep-alive), forwards each
//! request to a production member (or, in the split, a canary member) streamed in both
//! directions through body tees, answers with that response and nothing else, and hands the
//! copies and the recording their parts ([`crate::assembly`]). `Upgrade` requests (WebSocket)
//! are passed through as a byte tunnel, never mirrored.
//!
//! Shutdown ([`Running::shutdown`], SIGTERM in the binary): the listener closes, connections
//! finish the requests in flight (bounded by `limits.shutdown_grace_s`), the shadows send or
//! count what is queued, the recording is closed; nothing recorded is lost.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Either, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use shadowtap_core::replays::ErrorKind;
use shadowtap_core::{Body, Exchange, ExchangeFlags};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::assembly::{headers_of, Assembly, Sinks};
use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::mirror::Shadows;
use crate::record::Recorder;
use crate::route::{decide, Routing};
pub use crate::state::{guard_targets, State};
use crate::tee::{Budget, Kept, Tee};
use crate::upstream::Member;

/// The body sent to the client: production's, teed, or one the proxy wrote (an error).
pub type DownBody = Either<Tee<Incoming>, Full<Bytes>>;

/// The hop-by-hop headers of RFC 9110 section 7.6.1, and those `Connection` names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // `TE: trailers` says the sender takes trailers: kept (alone), so that production's
    // trailers come back (the `Trailer` field, end to end, names them).
    let trailers = headers
        .get_all(http::header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
    let named: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in [
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(n);
    }
    if trailers {
        headers.insert(http::header::TE, HeaderValue::from_static("trailers"));
    }
}

/// RFC 9112 section 3.2: exactly one valid `Host` (none only in HTTP/1.0), and an
/// absolute-form target's authority replaces it. What fails is answered 400 by the caller:
/// production, the copies, the recording and the canary's sticky key all read this one host.
fn settle_host(req: &mut Request<Incoming>) -> Result<(), &'static str> {
    let mut hosts = req.headers().get_all(http::header::HOST).iter();
    let first = hosts.next().cloned();
    if hosts.next().is_some() {
        return Err("more than one Host header");
    }
    if let Some(a) = req.uri().authority() {
        if a.as_str().contains('@') {
            // `http://user@host/`: userinfo is not allowed in an HTTP target (RFC 9110 4.2.4),
            // and a proxy and its backend may each read another host out of it.
            return Err("bad request target: userinfo");
        }
        let v = HeaderValue::from_str(a.as_str()).map_err(|_| "bad request target")?;
        req.headers_mut().insert(http::header::HOST, v);
        return Ok(());
    }
    match first {
        Some(v) => {
            let valid = v.is_empty()
                || v.to_str()
                    .ok()
                    .filter(|h| !h.contains('@'))
                    .and_then(|h| h.parse::<http::uri::Authority>().ok())
                    .is_some();
            if valid {
                Ok(())
            } else {
                Err("bad Host header")
            }
        }
        None if req.version() == http::Version::HTTP_11 => {
            Err("an HTTP/1.1 request needs a Host header")
        }
        None => Ok(()),
    }
}

fn version_str(v: http::Version) -> &'static str {
    match v {
        http::Version::HTTP_10 => "HTTP/1.0",
        http::Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

fn local_response(status: StatusCode, text: &str) -> Response<DownBody> {
    let mut r = Response::new(Either::Right(Full::new(Bytes::from(format!("{text}\n")))));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Finishes an assembly abandoned by the handler (a client gone before the response).
struct Abandon(Option<Arc<Assembly>>);

impl Drop for Abandon {
    fn drop(&mut self) {
        if let Some(a) = self.0.take() {
            a.abandoned();
        }
    }
}

/// The request head as an exchange (no bodies yet).
fn head_exchange(
    state: &State,
    req: &Request<Incoming>,
    client: SocketAddr,
    conn_id: &str,
    conn_seq: u32,
    seq: u64,
    full: bool,
) -> Exchange {
    let uri = req.uri();
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let host = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| uri.authority().map(|a| a.to_string()));
    Exchange {
        grpc: None,
        tls: None,
        protocol: None,
        stream_id: None,
        // Ids and headers only when a copy, the recording or the routing reads them.
        exchange_id: if full {
            shadowtap_core::id::stable_id(&[state.run_id.as_bytes(), &seq.to_le_bytes()])
        } else {
            String::new()
        },
        connection_id: if full { conn_id.into() } else { String::new() },
        connection_seq: conn_seq,
        source: if full { "proxy".into() } else { String::new() },
        request_start_us: now_us(),
        request_end_us: None,
        response_start_us: None,
        response_end_us: None,
        client_ip: client.ip(),
        client_port: client.port(),
        server_ip: state.local.ip(),
        server_port: state.local.port(),
        method: req.method().as_str().into(),
        uri: if full {
            path_and_query.into()
        } else {
            String::new()
        },
        host: host.map(Into::into),
        path: uri.path().into(),
        query: uri.query().map(Into::into),
        http_version: version_str(req.version()).into(),
        request_headers: if full {
            headers_of(req.headers())
        } else {
            Vec::new()
        },
        request_trailers: Vec::new(),
        request_body: Body::default(),
        status: None,
        reason: None,
        response_version: None,
        interim_statuses: Vec::new(),
        response_headers: Vec::new(),
        response_trailers: Vec::new(),
        response_body: Body::default(),
        flags: ExchangeFlags::default(),
        error_detail: None,
    }
}

/// What an `Upgrade` request gets.
#[derive(Debug, PartialEq, Eq)]
enum Upgrade {
    /// Not an upgrade (or one of a protocol not listed): an ordinary request, its `Upgrade`
    /// dropped as hop-by-hop. `h2c` is one: a raw HTTP/2 channel to production would skip
    /// every check, the split, mirroring and the recording.
    No,
    /// A listed protocol: tunnelled.
    Tunnel,
    /// An upgrade with a body: refused, as the backend may answer without reading it and
    /// leave its connection expecting bytes that come from the next user's request (0.CL).
    WithBody,
}

fn upgrade(req: &Request<Incoming>, allowed: &[String]) -> Upgrade {
    let connection_upgrade = req
        .headers()
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let mut tokens = req
        .headers()
        .get_all(http::header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().split('/').next().unwrap_or(""));
    let listed = tokens.any(|t| allowed.iter().any(|a| a.eq_ignore_ascii_case(t)));
    if !connection_upgrade || !listed || req.version() != http::Version::HTTP_11 {
        return Upgrade::No;
    }
    let body = req.headers().contains_key(http::header::TRANSFER_ENCODING)
        || req
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0");
    if body {
        Upgrade::WithBody
    } else {
        Upgrade::Tunnel
    }
}

fn error_kind(e: &hyper_util::client::legacy::Error) -> ErrorKind {
    let text = format!("{e:?}").to_ascii_lowercase();
    if e.is_connect() {
        if text.contains("refused") {
            ErrorKind::Refused
        } else if text.contains("timed out") || text.contains("timeout") {
            ErrorKind::Timeout
        } else {
            ErrorKind::Connect
        }
    } else if text.contains("reset") || text.contains("closed") || text.contains("incomplete") {
        ErrorKind::Reset
    } else {
        ErrorKind::Protocol
    }
}

/// A WebSocket or other upgrade: the head to production, the response back, then the two
/// connections joined byte for byte. Never mirrored, never recorded.
async fn tunnel(
    state: Arc<State>,
    mut req: Request<Incoming>,
    client: SocketAddr,
    tls: bool,
) -> Response<DownBody> {
    let routing = state.routing();
    let lease = routing.production.pick(None);
    let member = lease.member().clone();
    let pq = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let Ok(uri) = member.uri_for(&pq) else {
        return local_response(StatusCode::BAD_REQUEST, "bad request target");
    };
    // A tunnel holds a connection slot of its own until it closes.
    let Ok(slot) = state.slots.clone().try_acquire_owned() else {
        return local_response(StatusCode::SERVICE_UNAVAILABLE, "too many connections");
    };
    let client_upgrade = hyper::upgrade::on(&mut req);
    let (mut parts, _) = req.into_parts();
    parts.uri = uri;
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let upgrade_to = parts.headers.get(http::header::UPGRADE).cloned();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(u) = upgrade_to {
        parts.headers.insert(http::header::UPGRADE, u);
        parts.headers.insert(
            http::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
    }
    let trusted_peer = routing.trusted.contains(client.ip());
    crate::forwarded::set_headers(
        &mut parts.headers,
        client,
        trusted_peer,
        host.as_deref(),
        tls,
    );
    let up = Request::from_parts(parts, Either::Right(Empty::new()));
    let limit = Duration::from_secs_f64(routing.config.limits.upstream_timeout_s);
    let mut resp = match tokio::time::timeout(limit, state.client.request(up)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            if e.is_connect() {
                member.eject(Duration::from_secs_f64(routing.config.limits.eject_s));
            }
            return local_response(StatusCode::BAD_GATEWAY, "production did not answer");
        }
        Err(_) => return local_response(StatusCode::GATEWAY_TIMEOUT, "production timed out"),
    };
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = resp.into_parts();
        let body = Tee::new(body, 0, None, Box::new(|_| {}));
        return Response::from_parts(parts, Either::Left(body));
    }
    let upstream_upgrade = hyper::upgrade::on(&mut resp);
    let idle = Duration::from_secs_f64(routing.config.limits.idle_timeout_s);
    let mut stop = state.stopping.subscribe();
    state.tunnels.spawn(async move {
        let (_lease, _slot) = (lease, slot);
        if let (Ok(a), Ok(b)) = (client_upgrade.await, upstream_upgrade.await) {
            let activity = crate::lifecycle::Activity::new();
            let mut a = crate::lifecycle::Watched::new(TokioIo::new(a), activity.clone());
            let mut b = TokioIo::new(b);
            // Closed when both sides are silent for the idle timeout (nginx closes a WebSocket
            // after proxy_read_timeout the same way), or at shutdown after the grace.
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                _ = activity.silent_for(idle) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
    });
    let (parts, _) = resp.into_parts();
    Response::from_parts(parts, Either::Right(Full::new(Bytes::new())))
}

/// One request.
async fn handle(
    state: Arc<State>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    conn_id: Arc<str>,
    conn_seq: u32,
    tls: bool,
) -> Result<Response<DownBody>, Infallible> {
    // The proxy's own answers to what it does not forward; the connection closes after them.
    let refuse = |status, why: &str| {
        let mut r = local_response(status, why);
        r.headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        Ok(r)
    };
    if req.method() == http::Method::CONNECT {
        // A reverse proxy: no tunnels to wherever the client names.
        return refuse(StatusCode::METHOD_NOT_ALLOWED, "CONNECT is not proxied");
    }
    if let Err(why) = settle_host(&mut req) {
        return refuse(StatusCode::BAD_REQUEST, why);
    }
    let routing = state.routing();
    match upgrade(&req, &routing.config.limits.upgrade_protocols) {
        Upgrade::Tunnel => return Ok(tunnel(state, req, peer, tls).await),
        Upgrade::WithBody => {
            return refuse(StatusCode::BAD_REQUEST, "an Upgrade request has no body")
        }
        Upgrade::No => {}
    }
    let trusted_peer = routing.trusted.contains(peer.ip());
    // The client the recording, the copies and the sticky split see: the peer, or the one a
    // trusted proxy names.
    let client = if trusted_peer {
        SocketAddr::new(
            crate::forwarded::client_ip(req.headers(), peer.ip(), &routing.trusted),
            peer.port(),
        )
    } else {
        peer
    };
    let seq = state.seq.fetch_add(1, Ordering::Relaxed);
    let full =
        !routing.shadows.is_empty() || routing.canary.is_some() || state.sinks.recorder.is_some();
    let mut head = head_exchange(&state, &req, client, &conn_id, conn_seq, seq, full);
    head.protocol = Some(shadowtap_core::exchange::protocol_name(
        &head.http_version,
        tls,
    ));
    let decision = decide(
        &routing,
        &head,
        shadowtap_core::splitmix::SplitMix(seq ^ 0x5eed).next_u64(),
    );
    let (pool, stats) = match (&routing.canary, decision.canary) {
        (Some(c), true) => (c.pool.clone(), state.canary.clone()),
        _ => (routing.production.clone(), state.production.clone()),
    };
    let mirrors: Vec<Arc<crate::mirror::Shadow>> = decision
        .mirrors
        .iter()
        .filter_map(|&i| routing.sinks.get(i).cloned())
        .collect();
    for s in &mirrors {
        s.counters.chosen.fetch_add(1, Ordering::Relaxed);
    }
    let host = head.host.as_ref().map(|h| h.to_string());
    let recording = state.sinks.recorder.is_some();
    let keep = if decision.mirrors.is_empty() {
        0
    } else {
        state.sinks.mirror_max_body.saturating_add(1)
    }
    .max(if recording {
        state.sinks.record_max_body
    } else {
        0
    });
    let assembly = Assembly::new(
        state.sinks.clone(),
        stats,
        pool.name.as_str().into(),
        head,
        mirrors,
    );
    let mut abandon = Abandon(Some(assembly.clone()));
    let limits = &routing.config.limits;
    let (mut parts, body) = req.into_parts();
    let pq = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    strip_hop_by_hop(&mut parts.headers);
    if !body.is_end_stream() && !parts.headers.contains_key(http::header::CONTENT_LENGTH) {
        // A body of no stated length goes on chunked, whatever the method: left to itself hyper's
        // client sends such a body of a GET as none at all (it assumes GETs have none).
        parts.headers.insert(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    if !parts.headers.contains_key(http::header::HOST) {
        if let Some(h) = host.as_deref().and_then(|h| HeaderValue::from_str(h).ok()) {
            parts.headers.insert(http::header::HOST, h);
        }
    }
    crate::forwarded::set_headers(&mut parts.headers, peer, trusted_peer, host.as_deref(), tls);
    let sent_headers = if recording {
        headers_of(&parts.headers)
    } else {
        Vec::new()
    };
    // When the client's body has ended (or failed: then `client_body_failed`): the wait for
    // production's response head starts there, so a long upload is not production's time
    // (a stalled one is the connection watchdog's).
    let mut uploaded = None;
    let client_body_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A body-less request can be tried again at another member when the first refuses.
    let mut body = if body.is_end_stream() {
        assembly.request_done(Kept {
            chunks: Vec::new(),
            len: 0,
            complete: true,
            failed: false,
            over_cap: false,
            over_budget: false,
            trailers: None,
            reservation: None,
        });
        None
    } else {
        let (uploaded_tx, done) = tokio::sync::oneshot::channel::<()>();
        uploaded = Some(done);
        let a = assembly.clone();
        let failed = client_body_failed.clone();
        Some(Tee::new(
            body,
            keep,
            Some(state.budget.clone()),
            Box::new(move |k| {
                failed.store(k.failed, std::sync::atomic::Ordering::Relaxed);
                a.request_done(k);
                let _ = uploaded_tx.send(());
            }),
        ))
    };
    let retryable = body.is_none();
    let mut skip: Option<Arc<Member>> = None;
    let timeout = Duration::from_secs_f64(limits.upstream_timeout_s);
    for attempt in 0..2 {
        let lease = pool.pick(skip.as_ref());
        let member = lease.member().clone();
        let Ok(uri) = member.uri_for(&pq) else {
            assembly.failed(ErrorKind::Other, "bad request target".into());
            return Ok(local_response(
                StatusCode::BAD_REQUEST,
                "bad request target",
            ));
        };
        if recording {
            assembly.sent(&member.url, uri.to_string(), sent_headers.clone());
        }
        let last_try = attempt == 1 || !retryable || pool.members.len() < 2;
        let mut up = Request::builder()
            .method(parts.method.clone())
            .uri(uri)
            .version(http::Version::HTTP_11)
            .body(match body.take() {
                Some(t) => Either::Left(t),
                None => Either::Right(Empty::new()),
            })
            .expect("parts from a valid request");
        *up.headers_mut() = if last_try {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        let uploading = &mut uploaded;
        let head = async {
            let request = state.client.request(up);
            tokio::pin!(request);
            if let Some(done) = uploading.as_mut() {
                tokio::select! {
                    r = &mut request => return Ok(r),
                    _ = done => {}
                }
                *uploading = None;
            }
            tokio::time::timeout(timeout, request).await
        };
        match head.await {
            Ok(Ok(resp)) => {
                let (mut rparts, rbody) = resp.into_parts();
                strip_hop_by_hop(&mut rparts.headers);
                assembly.response_head(
                    rparts.status.as_u16(),
                    version_str(rparts.version),
                    // Only the recording reads them.
                    if recording {
                        headers_of(&rparts.headers)
                    } else {
                        Vec::new()
                    },
                );
                if let (Some(c), true) = (&routing.canary, decision.canary) {
                    if let (Some(name), false) = (&c.pin_cookie, decision.pinned) {
                        // `Secure` where the client came over TLS: the cookie never leaks
                        // to a plain-HTTP request.
                        let secure = if tls { "; Secure" } else { "" };
                        if let Ok(v) = HeaderValue::from_str(&format!(
                            "{name}=1; Path=/; Max-Age=86400; HttpOnly; SameSite=Lax{secure}"
                        )) {
                            rparts.headers.append(http::header::SET_COOKIE, v);
                        }
                    }
                }
                let a = assembly.clone();
                // A mirrored request whose pairs join bodies keeps production's first bytes
                // for the comparison.
                let compared = !recording && assembly.wants_bodies();
                let rec_cap = if recording {
                    state.sinks.record_max_body
                } else if compared {
                    crate::pairs::BODY_CAP as u64
                } else {
                    0
                };
                // The recording's copy of the response counts against the same byte budget
                // as the request copies: past it the recorded body is cut (flagged truncated).
                let rbody = Tee::new(
                    rbody,
                    rec_cap,
                    (recording || compared).then(|| state.budget.clone()),
                    Box::new(move |k| {
                        drop(lease);
                        a.response_done(k)
                    }),
                );
                abandon.0 = None;
                return Ok(Response::from_parts(rparts, Either::Left(rbody)));
            }
            Ok(Err(e)) if client_body_failed.load(std::sync::atomic::Ordering::Relaxed) => {
                // The client's body was malformed or cut off: the client's fault, not
                // production's (hyper reports it as the upstream request's error).
                tracing::debug!("the client's request body failed: {e}");
                abandon.0 = None;
                assembly.client_failed(
                    ErrorKind::Reset,
                    "the client's request body was malformed or cut off".into(),
                );
                return Ok(local_response(
                    StatusCode::BAD_REQUEST,
                    "the request body is malformed or incomplete",
                ));
            }
            Ok(Err(e)) => {
                let kind = error_kind(&e);
                if e.is_connect() {
                    member.eject(Duration::from_secs_f64(limits.eject_s));
                    if retryable && attempt == 0 && pool.members.len() > 1 {
                        skip = Some(member);
                        continue;
                    }
                }
                tracing::debug!("production {}: {e}", member.url);
                abandon.0 = None;
                assembly.failed(kind, format!("{}: {e}", member.url));
                return Ok(local_response(
                    StatusCode::BAD_GATEWAY,
                    &format!("{} did not answer", pool.name),
                ));
            }
            Err(_) => {
                abandon.0 = None;
                assembly.failed(
                    ErrorKind::Timeout,
                    format!("{}: no response head within {timeout:?}", member.url),
                );
                return Ok(local_response(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!("{} did not answer in time", pool.name),
                ));
            }
        }
    }
    abandon.0 = None;
    assembly.failed(ErrorKind::Refused, "every member refused".into());
    Ok(local_response(
        StatusCode::BAD_GATEWAY,
        "production did not answer",
    ))
}

/// A running proxy.
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where the admin API listens.
    pub admin: Option<SocketAddr>,
    /// Shared with the admin API (and SIGHUP reloads).
    pub state: Arc<State>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Result<crate::ProxySummary, ProxyError>>,
}

impl Running {
    /// Starts the graceful shutdown.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }

    /// Waits for the proxy to end (after [`Running::shutdown`]); its summary.
    pub async fn wait(self) -> Result<crate::ProxySummary, ProxyError> {
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(ProxyError::Record(format!("the proxy task failed: {e}"))),
        }
    }
}

/// The connections the kernel queues for `accept` (capped by `net.core.somaxconn`): bursts of
/// new connections wait there instead of having their SYNs dropped (and retried a second
/// later) while the accept loop catches up. nginx's default is 511, tokio's 1024.
const BACKLOG: u32 = 4096;

/// Binds `addr` (the first address it resolves to) with [`BACKLOG`].
async fn listen(addr: &str) -> std::io::Result<TcpListener> {
    let mut last = None;
    for a in tokio::net::lookup_host(addr).await? {
        let socket = if a.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        match socket.bind(a).and_then(|()| socket.listen(BACKLOG)) {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the address resolves to nothing",
        )
    }))
}

/// Starts the proxy with `config`; `admin_token` guards the admin API (required with
/// `config.admin`).
pub async fn start(
    config: ProxyConfig,
    admin_token: Option<String>,
) -> Result<Running, ProxyError> {
    config.check()?;
    guard_targets(&config)?;
    crate::lifecycle::raise_fd_limit(config.limits.max_connections)
        .map_err(|why| ProxyError::config("limits.max_connections", why))?;
    if config.admin.is_some() && admin_token.as_deref().is_none_or(str::is_empty) {
        return Err(ProxyError::config(
            "--admin",
            "the admin API needs a bearer token: --admin-token-file FILE or SHADOWTAP_ADMIN_TOKEN"
                .into(),
        ));
    }
    // The admin API's address is checked before anything starts.
    let admin_bound = match &config.admin {
        Some(addr) => Some(crate::admin::bind(addr, &config).await?),
        None => None,
    };
    let listener = listen(&config.listen)
        .await
        .map_err(|source| ProxyError::Listen {
            what: "--listen",
            addr: config.listen.clone(),
            source,
        })?;
    let local = listener.local_addr().map_err(|source| ProxyError::Listen {
        what: "--listen",
        addr: config.listen.clone(),
        source,
    })?;
    let run_id = shadowtap_core::id::new_run_id();
    let redactor = shadowtap_core::redact::Redaction::RandomKey(config.redact.clone())
        .resolve()
        .map_err(|e| ProxyError::Record(format!("no redaction key from the OS: {e}")))?;
    let recorder = match &config.record {
        Some(dir) => Some(Arc::new(Recorder::start(
            dir,
            &run_id,
            redactor.clone(),
            config.limits.max_record_body,
            config.limits.max_file_bytes,
            config.limits.rotate_s.map(Duration::from_secs_f64),
        )?)),
        None => None,
    };
    let budget = Budget::new(config.limits.mirror_memory);
    let shadows = Shadows::start(
        &config,
        &run_id,
        config.record.as_deref(),
        redactor.as_ref(),
        0,
        budget.clone(),
    )
    .await?;
    let sinks = Arc::new(Sinks {
        run_id: run_id.as_str().into(),
        recorder: recorder.clone(),
        mirror_max_body: config.mirror.max_body,
        record_max_body: config.limits.max_record_body,
    });
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(false);
    connector.set_connect_timeout(Some(Duration::from_secs_f64(
        config.limits.connect_timeout_s,
    )));
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(crate::tls::upstream(config.upstream_ca.as_deref())?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector);
    let acceptor = if config.tls.is_empty() {
        None
    } else {
        let pairs: Vec<(&std::path::Path, &std::path::Path)> = config
            .tls
            .iter()
            .map(|t| (t.cert.as_path(), t.key.as_path()))
            .collect();
        Some(crate::tls::acceptor(&pairs)?)
    };
    let client = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .build(connector);
    let mut routing = Routing::compile(&config, 1)?;
    routing.sinks = shadows.list.clone();
    let routing = Arc::new(routing);
    let state = Arc::new(State {
        routing: RwLock::new(routing),
        run_id: run_id.clone(),
        sinks,
        production: Arc::default(),
        canary: Arc::default(),
        budget,
        changes: std::sync::Mutex::new(Vec::new()),
        client,
        seq: AtomicU64::new(0),
        conn_seq: AtomicU64::new(0),
        local,
        audit: config
            .record
            .as_ref()
            .map(|d| d.join(format!("proxy-{run_id}.config.jsonl"))),
        shadow_sets: tokio::sync::Mutex::new(crate::state::ShadowSets {
            current: Some(shadows),
            ..Default::default()
        }),
        record_dir: config.record.clone(),
        redactor,
        slots: Arc::new(tokio::sync::Semaphore::new(
            config.limits.max_connections.max(1),
        )),
        tunnels: crate::state::Tunnels::default(),
        stopping: watch::channel(false).0,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let admin = match (admin_bound, admin_token) {
        (Some(bound), Some(token)) => Some(crate::admin::serve(
            bound,
            token,
            state.clone(),
            shutdown_rx.clone(),
        )),
        _ => None,
    };
    let grace = Duration::from_secs_f64(config.limits.shutdown_grace_s);
    let task = tokio::spawn(serve(
        Serving {
            listener,
            acceptor,
            recorder,
            grace,
            config,
        },
        state.clone(),
        shutdown_rx,
    ));
    Ok(Running {
        addr: local,
        admin,
        state,
        shutdown,
        task,
    })
}

/// What the accept loop runs with, and closes at the end.
struct Serving {
    listener: TcpListener,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    recorder: Option<Arc<Recorder>>,
    grace: Duration,
    config: ProxyConfig,
}

async fn serve(
    serving: Serving,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) -> Result<crate::ProxySummary, ProxyError> {
    let Serving {
        listener,
        acceptor,
        recorder,
        grace,
        config,
    } = serving;
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let limits = &config.limits;
    let timers = crate::lifecycle::Timers {
        header: Duration::from_secs_f64(limits.header_timeout_s),
        idle: Duration::from_secs_f64(limits.idle_timeout_s),
        send: Duration::from_secs_f64(limits.send_timeout_s),
        stalled: Duration::from_secs_f64(limits.idle_timeout_s.max(limits.upstream_timeout_s)),
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timers.header)
        .keep_alive(true);
    let ping = Duration::from_secs_f64(limits.h2_ping_s);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(ping)
        .keep_alive_timeout(ping);
    let client_slots = crate::lifecycle::ClientSlots::new(limits.max_connections_per_client);
    let slots = state.slots.clone();
    loop {
        // At most `max_connections` at once: past it, new ones wait in the kernel's backlog.
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = stop.changed() => break,
        };
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of descriptors and the like: wait a little rather than spin.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let client_slot = if client_slots.limited() {
                    match client_slots.take(peer.ip()) {
                        Some(s) => Some(s),
                        // Over the per-client limit: closed at once.
                        None => continue,
                    }
                } else {
                    None
                };
                let _ = stream.set_nodelay(true);
                let n = state.conn_seq.fetch_add(1, Ordering::Relaxed);
                let conn_id: Arc<str> = shadowtap_core::id::stable_id(&[
                    state.run_id.as_bytes(), b"conn", &n.to_le_bytes(),
                ]).into();
                let requests = Arc::new(AtomicU64::new(0));
                let st = state.clone();
                let tls = acceptor.is_some();
                let activity = crate::lifecycle::Activity::new();
                let act = activity.clone();
                let service = hyper::service::service_fn(move |req| {
                    let in_flight = act.request();
                    let k = requests.fetch_add(1, Ordering::Relaxed) as u32;
                    let answer = handle(st.clone(), req, peer, conn_id.clone(), k, tls);
                    async move {
                        let r = answer.await?;
                        Ok::<_, Infallible>(r.map(|b| crate::lifecycle::Tracked::new(b, in_flight)))
                    }
                });
                let (builder, watcher) = (builder.clone(), graceful.watcher());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _slots = (slot, client_slot);
                    let stream = crate::lifecycle::Watched::new(stream, activity.clone());
                    // Every timer runs from accept: the TLS handshake, protocol detection and
                    // the HTTP/2 preface are inside the header timeout.
                    let served = async {
                        match acceptor {
                            None => {
                                let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                                let _ = watcher.watch(conn.into_owned()).await;
                            }
                            Some(acceptor) => {
                                let handshake = tokio::time::timeout(timers.header, acceptor.accept(stream));
                                // A failed or stalled handshake: nothing was asked.
                                let Ok(Ok(tls)) = handshake.await else { return };
                                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
                                let _ = watcher.watch(conn.into_owned()).await;
                            }
                        }
                    };
                    tokio::select! {
                        _ = served => {}
                        why = crate::lifecycle::watchdog(&activity, timers) => {
                            tracing::debug!(%peer, ?why, "connection closed by its timer");
                        }
                    }
                });
            }
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let (drained, ()) = tokio::join!(
        async {
            tokio::time::timeout(grace, graceful.shutdown())
                .await
                .is_ok()
        },
        async {
            // Tunnels get the same grace, then close.
            state.tunnels.drain(grace).await;
            let _ = state.stopping.send(true);
        }
    );
    let shadow_summaries = state.close_shadows(grace).await;
    let files = match &recorder {
        Some(r) => r.close()?,
        None => Vec::new(),
    };
    crate::summary::finish(&state, &config, drained, shadow_summaries, files)
}

/// Collects a body for tests and the admin API.
pub async fn body_bytes<B: http_body::Body>(b: B) -> Option<Bytes> {
    b.collect().await.ok().map(|c| c.to_bytes())
}

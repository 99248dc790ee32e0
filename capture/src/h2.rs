//! A captured HTTP/2 connection in clear (`h2c`, the client's preface seen): the bytes of
//! both directions through `shadowtap-http2`, each stream out as one [`Exchange`].
//!
//! Exchanges are ordered by their request's first frame; `connection_seq` numbers them in that
//! order and `stream_id` names the stream. Pseudo-headers give the method, the target and the
//! host (`:authority`); the header lists hold the regular fields only. A stream whose bytes
//! were lost in capture (or whose direction stopped decoding) is flagged `gap`, with what was
//! seen, never completed by guesswork.

use std::sync::Arc;

use compact_str::CompactString;
use shadowtap_core::exchange::{Body, Exchange, ExchangeFlags, GrpcCall, Header};
use shadowtap_core::id::stable_id;
use shadowtap_http2::{Connection, Limits, Message, Stream};

/// A TCP endpoint (as `connection::Endpoint`).
type Endpoint = (std::net::IpAddr, u16);

/// Counters of the HTTP/2 connections of a capture.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct H2Stats {
    /// HTTP/2 connections seen.
    pub connections: u64,
    /// Streams emitted as exchanges.
    pub streams: u64,
    /// Of them, flagged because bytes were lost or decoding stopped.
    pub lost_streams: u64,
    /// Streams seen without their request's headers (lost in capture): no row, counted.
    pub headless_streams: u64,
}

/// One HTTP/2 connection.
pub struct H2Session {
    conn: Connection,
    client: Endpoint,
    server: Endpoint,
    client_dir: usize,
    connection_id: String,
    source: Arc<str>,
    next_seq: u32,
    headless: u64,
    max_body: u64,
    out: Vec<Exchange>,
}

impl H2Session {
    /// A session whose client sends on direction `client_dir`.
    pub fn new(
        endpoints: [Endpoint; 2],
        client_dir: usize,
        connection_id: String,
        source: Arc<str>,
        max_body: u64,
    ) -> Self {
        H2Session {
            conn: Connection::new(Limits {
                max_body,
                ..Limits::default()
            }),
            client: endpoints[client_dir],
            server: endpoints[1 - client_dir],
            client_dir,
            connection_id,
            source,
            next_seq: 0,
            headless: 0,
            max_body,
            out: Vec::new(),
        }
    }

    /// A session for a connection upgraded from HTTP/1.1 (`Upgrade: h2c` answered `101`):
    /// `request`, the upgrading request as captured, is stream 1.
    pub fn upgraded(
        endpoints: [Endpoint; 2],
        client_dir: usize,
        connection_id: String,
        source: Arc<str>,
        max_body: u64,
        request: &Exchange,
    ) -> Self {
        let mut s = H2Session::new(endpoints, client_dir, connection_id, source, max_body);
        // Hop-by-hop fields of the upgrade itself are not the request's.
        let hop = [
            "connection",
            "upgrade",
            "http2-settings",
            "host",
            "keep-alive",
        ];
        let message = Message {
            pseudo: [
                (":method", request.method.as_str()),
                (":scheme", "http"),
                (":authority", request.host.as_deref().unwrap_or("")),
                (":path", request.uri.as_str()),
            ]
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect(),
            headers: request
                .request_headers
                .iter()
                .filter(|h| !hop.iter().any(|n| h.name.eq_ignore_ascii_case(n)))
                .map(|h| (h.name.to_ascii_lowercase().to_string(), h.value.to_string()))
                .collect(),
            trailers: Vec::new(),
            body: request.request_body.raw.clone(),
            body_len: request.request_body.len,
            start_us: request.request_start_us,
            end_us: request.request_end_us.unwrap_or(request.request_start_us),
            complete: true,
        };
        s.conn = Connection::upgraded(
            Limits {
                max_body,
                ..Limits::default()
            },
            message,
        );
        s
    }

    /// Bytes of direction `dir`.
    pub fn feed(&mut self, dir: usize, data: &[u8], ts_us: i64) {
        self.conn.feed(dir == self.client_dir, data, ts_us);
        self.collect();
    }

    /// `len` bytes of direction `dir` were not captured.
    pub fn gap(&mut self, dir: usize, len: u64) {
        self.conn.gap(dir == self.client_dir, len);
        self.collect();
    }

    /// The connection is over.
    pub fn finish(&mut self) {
        self.conn.finish();
        self.collect();
    }

    /// Bytes held.
    pub fn buffered_bytes(&self) -> usize {
        self.conn.buffered_bytes()
    }

    /// Counters.
    pub fn stats(&self) -> H2Stats {
        let c = self.conn.counters();
        H2Stats {
            connections: 1,
            streams: c.streams,
            lost_streams: c.lost_streams,
            headless_streams: self.headless,
        }
    }

    /// Whether any stream was seen.
    pub fn saw_streams(&self) -> bool {
        self.next_seq > 0 || !self.out.is_empty()
    }

    /// The exchanges finished so far.
    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.out)
    }

    fn collect(&mut self) {
        for s in self.conn.take_streams() {
            if let Some(ex) = self.exchange(s) {
                self.out.push(ex);
            }
        }
    }

    fn exchange(&mut self, s: Stream) -> Option<Exchange> {
        // A stream the capture saw no request of (its HEADERS lost) has nothing to key it:
        // counted, not written.
        let Some(req) = s.request else {
            self.headless += 1;
            return None;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        let target = req.pseudo(":path").unwrap_or("");
        let method = req.pseudo(":method").unwrap_or("");
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(CompactString::from(q))),
            None => (target, None),
        };
        let host = req
            .pseudo(":authority")
            .or_else(|| req.header("host"))
            .map(CompactString::from);
        let resp = s.response;
        let mut details = Vec::new();
        if let Some(e) = &s.error {
            details.push(e.clone());
        }
        if let Some(code) = s.reset {
            details.push(format!("stream reset (RST_STREAM {})", reset_name(code)));
        }
        if s.pushed {
            details.push("pushed by the server (PUSH_PROMISE)".into());
        }
        let status = resp
            .as_ref()
            .and_then(|r| r.pseudo(":status"))
            .and_then(|v| v.parse::<u16>().ok());
        let grpc = req
            .header("content-type")
            .is_some_and(|t| t.starts_with("application/grpc"))
            .then(|| self.grpc_call(&req, resp.as_ref(), &mut details));
        let flags = ExchangeFlags {
            no_response: status.is_none(),
            incomplete: !req.complete || resp.as_ref().is_none_or(|r| !r.complete),
            gap: s.lost,
            parse_error: false,
            upgraded: false,
        };
        Some(Exchange {
            grpc,
            tls: None,
            exchange_id: stable_id(&[self.connection_id.as_bytes(), b"h2", &s.id.to_be_bytes()]),
            connection_id: self.connection_id.clone(),
            connection_seq: seq,
            source: self.source.to_string(),
            request_start_us: req.start_us,
            request_end_us: Some(req.end_us),
            response_start_us: resp.as_ref().map(|r| r.start_us),
            response_end_us: resp.as_ref().map(|r| r.end_us),
            client_ip: self.client.0,
            client_port: self.client.1,
            server_ip: self.server.0,
            server_port: self.server.1,
            method: method.into(),
            uri: target.to_owned(),
            host,
            path: if path.is_empty() { "/" } else { path }.into(),
            query,
            http_version: "HTTP/2".into(),
            request_headers: headers(&req.headers),
            request_trailers: headers(&req.trailers),
            request_body: body(&req),
            status,
            reason: None,
            response_version: resp.as_ref().map(|_| "HTTP/2".to_owned()),
            interim_statuses: s.interim,
            response_headers: resp
                .as_ref()
                .map(|r| headers(&r.headers))
                .unwrap_or_default(),
            response_trailers: resp
                .as_ref()
                .map(|r| headers(&r.trailers))
                .unwrap_or_default(),
            response_body: resp.as_ref().map(body).unwrap_or_default(),
            flags,
            error_detail: (!details.is_empty()).then(|| details.join("; ")),
            protocol: Some("h2c".into()),
            stream_id: Some(s.id),
        })
    }

    /// The gRPC call of a stream: its messages split out of the bodies, its status and message
    /// from the trailers (or the headers of a trailers-only answer).
    fn grpc_call(
        &self,
        req: &Message,
        resp: Option<&Message>,
        details: &mut Vec<String>,
    ) -> GrpcCall {
        let cap = self.max_body;
        let (request_messages, e1) =
            GrpcCall::messages(&req.body, req.header("grpc-encoding"), cap);
        let (response_messages, e2) = resp.map_or((Vec::new(), None), |r| {
            GrpcCall::messages(&r.body, r.header("grpc-encoding"), cap)
        });
        details.extend(e1.into_iter().chain(e2));
        let field = |name: &str| {
            resp.and_then(|r| {
                r.trailers
                    .iter()
                    .chain(&r.headers)
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
            })
        };
        GrpcCall {
            status: field("grpc-status").and_then(|v| v.trim().parse().ok()),
            message: field("grpc-message").map(|v| GrpcCall::decode_message(&v)),
            request_messages,
            response_messages,
        }
    }
}

fn headers(fields: &[(String, String)]) -> Vec<Header> {
    fields
        .iter()
        .map(|(n, v)| Header {
            name: n.as_str().into(),
            value: v.as_str().into(),
        })
        .collect()
}

fn body(m: &Message) -> Body {
    Body {
        raw: m.body.clone(),
        decoded: None,
        len: m.body_len,
        truncated: m.truncated(),
        decode_error: None,
        withheld: false,
    }
}

/// RFC 9113 §7's name of an error code.
fn reset_name(code: u32) -> String {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("code {code}"), |n| (*n).to_owned())
}

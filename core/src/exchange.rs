//! The exchange record: one HTTP request paired with its final response, as seen on the wire.

use std::net::IpAddr;

pub use shadowtap_http1::{text_from_bytes, CompactString, Header};

/// A message body after transfer decoding (de-chunked), before content decoding.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Body {
    /// The body bytes kept (at most the configured cap; bytes lost to gaps are missing).
    pub raw: Vec<u8>,
    /// The body after `Content-Encoding` (gzip, deflate, br) was undone; `None` when the body
    /// had no content coding, or decoding failed (see [`Body::decode_error`]).
    pub decoded: Option<Vec<u8>>,
    /// Length of the body on the wire after transfer decoding, including any part not kept.
    pub len: u64,
    /// True when the body was longer than the cap and only its first bytes were kept.
    pub truncated: bool,
    /// Why content decoding failed, when it did.
    pub decode_error: Option<String>,
    /// Redaction withheld the raw bytes (`raw` is empty and the column null): the body may
    /// hold secrets and could not be redacted whole, or it was content-coded and only its
    /// redacted decoded form is kept. `len` still says how long it was.
    pub withheld: bool,
}

impl Body {
    /// Undoes the `Content-Encoding` of `headers` (every value, in order) into
    /// [`Body::decoded`], decoding at most `cap` bytes; a body cut short is not decoded, and a
    /// failure is noted in [`Body::decode_error`].
    pub fn decode(&mut self, headers: &[Header], cap: u64) {
        let values: Vec<&str> = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("content-encoding"))
            .map(|h| h.value.as_str())
            .collect();
        if values.is_empty() || self.raw.is_empty() {
            return;
        }
        if self.truncated || (self.raw.len() as u64) < self.len {
            self.decode_error =
                Some("body incomplete (truncated or bytes lost); not decoded".into());
            return;
        }
        match shadowtap_http1::decode_body(&values.join(","), &self.raw, cap) {
            Ok(decoded) => self.decoded = decoded,
            Err(e) => self.decode_error = Some(e.to_string()),
        }
    }
}

/// Flags that say what is missing or uncertain about an exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExchangeFlags {
    /// No response was seen (capture ended, connection reset, or response lost).
    pub no_response: bool,
    /// The request or response was cut off before its end (capture ended, reset, idle timeout).
    pub incomplete: bool,
    /// Bytes of the request or response were never captured, or an earlier loss on the same
    /// connection may have hidden whole messages (pairing is then uncertain).
    pub gap: bool,
    /// The request or response did not parse as HTTP/1.x from some point on.
    pub parse_error: bool,
    /// The connection switched protocols (101 or a successful CONNECT) after this exchange.
    pub upgraded: bool,
}

/// The `protocol` column's value for a request's HTTP version (`HTTP/1.1`, `HTTP/2`, …) and
/// whether TLS carried it: `http/1.0`, `http/1.1`, `h2` (HTTP/2 over TLS) or `h2c` (in clear),
/// as ALPN names them.
pub fn protocol_name(http_version: &str, tls: bool) -> CompactString {
    match http_version {
        v if v.starts_with("HTTP/2") => if tls { "h2" } else { "h2c" }.into(),
        v => v.to_ascii_lowercase().into(),
    }
}

/// One HTTP request paired with its final response (HTTP/1.x, or one HTTP/2 stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    /// Stable id: a hash of the connection and the request's position in it.
    pub exchange_id: String,
    /// Stable id of the TCP connection the exchange travelled on.
    pub connection_id: String,
    /// 0-based position of the exchange within its connection.
    pub connection_seq: u32,
    /// Where the exchange was captured from (file name or interface).
    pub source: String,
    /// Capture time of the request's first byte, in microseconds since the Unix epoch.
    pub request_start_us: i64,
    /// Capture time of the request's last byte.
    pub request_end_us: Option<i64>,
    /// Capture time of the final response's first byte.
    pub response_start_us: Option<i64>,
    /// Capture time of the final response's last byte.
    pub response_end_us: Option<i64>,
    /// Client address.
    pub client_ip: IpAddr,
    /// Client port.
    pub client_port: u16,
    /// Server address.
    pub server_ip: IpAddr,
    /// Server port.
    pub server_port: u16,
    /// Request method, as sent. This and `host`, `path` and `query` are [`CompactString`]s:
    /// most are short enough to be kept inline (no allocation per exchange).
    pub method: CompactString,
    /// The request target exactly as sent.
    pub uri: String,
    /// Host header (or the authority of an absolute-form target).
    pub host: Option<CompactString>,
    /// Path without the query.
    pub path: CompactString,
    /// Query string without the `?`, when present.
    pub query: Option<CompactString>,
    /// Request HTTP version (`HTTP/1.1`).
    pub http_version: String,
    /// Request headers.
    pub request_headers: Vec<Header>,
    /// Request trailers (chunked bodies only).
    pub request_trailers: Vec<Header>,
    /// Request body.
    pub request_body: Body,
    /// Final status code; `None` when no response was seen.
    pub status: Option<u16>,
    /// Reason phrase of the final response.
    pub reason: Option<String>,
    /// Response HTTP version.
    pub response_version: Option<String>,
    /// Interim (1xx other than 101) status codes received before the final response.
    pub interim_statuses: Vec<u16>,
    /// Response headers.
    pub response_headers: Vec<Header>,
    /// Response trailers.
    pub response_trailers: Vec<Header>,
    /// Response body.
    pub response_body: Body,
    /// What is missing or uncertain.
    pub flags: ExchangeFlags,
    /// Human-readable details of errors (parse errors, gaps), never bodies or credentials.
    pub error_detail: Option<String>,
    /// The protocol on the wire: `http/1.0`, `http/1.1`, `h2c` (HTTP/2 in clear) or `h2`
    /// (HTTP/2 over TLS); `None` in recordings made before schema version 3.
    pub protocol: Option<CompactString>,
    /// The HTTP/2 stream the exchange travelled on.
    pub stream_id: Option<u32>,
}

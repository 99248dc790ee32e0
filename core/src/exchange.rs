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
    /// The gRPC call, when the request's content type is `application/grpc…`.
    pub grpc: Option<GrpcCall>,
    /// The TLS session the exchange was read from (decrypted with a key log).
    pub tls: Option<TlsSession>,
}

/// What a TLS session's handshake said (schema version 4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSession {
    /// `TLSv1.2`, `TLSv1.3`.
    pub version: CompactString,
    /// The cipher suite's IANA name.
    pub cipher: CompactString,
    /// The ClientHello's server name.
    pub sni: Option<String>,
}

/// A gRPC call carried by an exchange (unary or streaming: one exchange per call).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrpcCall {
    /// `grpc-status` (from the trailers, or the headers of a trailers-only answer); `None`
    /// when the call did not end in the capture.
    pub status: Option<i32>,
    /// `grpc-message`, percent-decoded.
    pub message: Option<String>,
    /// The request's length-prefixed messages, each decompressed (`grpc-encoding`); a message
    /// cut off by `--max-body` or the capture is left out.
    pub request_messages: Vec<Vec<u8>>,
    /// The response's messages.
    pub response_messages: Vec<Vec<u8>>,
}

impl GrpcCall {
    /// Splits a gRPC body into its messages (RFC-less "Length-Prefixed-Message": a compressed
    /// flag byte, a 4-byte big-endian length, the bytes), decompressing flagged ones with
    /// `encoding` (at most `cap` bytes each). Whole messages only; the error of a message that
    /// cannot be read ends the list.
    pub fn messages(
        body: &[u8],
        encoding: Option<&str>,
        cap: u64,
    ) -> (Vec<Vec<u8>>, Option<String>) {
        let mut out = Vec::new();
        let mut rest = body;
        while rest.len() >= 5 {
            let compressed = rest[0] == 1;
            let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
            if rest.len() - 5 < len {
                break;
            }
            let payload = &rest[5..5 + len];
            rest = &rest[5 + len..];
            if !compressed {
                out.push(payload.to_vec());
                continue;
            }
            let coding = encoding.unwrap_or("identity");
            match shadowtap_http1::decode_body(coding, payload, cap) {
                Ok(Some(d)) => out.push(d),
                Ok(None) => out.push(payload.to_vec()),
                Err(e) => return (out, Some(format!("gRPC message in {coding}: {e}"))),
            }
        }
        (out, None)
    }

    /// `grpc-message`'s value with its percent-encoding undone (lossy UTF-8).
    pub fn decode_message(v: &str) -> String {
        let b = v.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            match (
                b[i],
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (b'%', Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                }
                (c, _, _) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(flag: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![flag];
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn grpc_bodies_split_into_whole_messages_and_compressed_ones_are_undone() {
        // "hello" gzip-compressed (gzip -n, no name, no time).
        let gz = [
            0x1f, 0x8b, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x03, 0xcb, 0x48, 0xcd, 0xc9,
            0xc9, 0x07, 0x00, 0x86, 0xa6, 0x10, 0x36, 0x05, 0x00, 0x00, 0x00,
        ];
        let mut body = frame(0, b"\x08\x96\x01");
        body.extend(frame(1, &gz));
        body.extend(frame(0, b""));
        // A message cut off by the capture: left out.
        body.extend(&frame(0, b"cut off")[..6]);
        let (m, err) = GrpcCall::messages(&body, Some("gzip"), 1 << 20);
        assert_eq!(err, None);
        assert_eq!(m, [b"\x08\x96\x01".to_vec(), b"hello".to_vec(), Vec::new()]);
        // A compressed message whose coding fails: the messages before it, and why.
        let bad = frame(1, b"not gzip");
        let (m, err) = GrpcCall::messages(&bad, Some("gzip"), 1 << 20);
        assert!(m.is_empty() && err.unwrap().contains("gzip"));
        assert_eq!(
            GrpcCall::decode_message("not%20found%3A%20x%"),
            "not found: x%"
        );
    }
}

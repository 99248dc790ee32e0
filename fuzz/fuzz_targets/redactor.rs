//! Fuzzes redaction: an exchange built from the input (headers, target, trailers, a body of a
//! chosen content type and coding, possibly cut or with bytes lost) through
//! `Redactor::apply`.
//!
//! Input: `[kind u8][flags u8]` then NUL-separated fields: header value, query, body.
//! Checks besides "no panic": a body redaction withheld holds no bytes, its length is kept,
//! and `Authorization` always comes out as an `hmac:` token.
//!
//! Run: `cargo fuzz run redactor` from the repository root (needs cargo-fuzz).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shadowtap_capture::redact::Redactor;
use shadowtap_core::exchange::{Body, Exchange, ExchangeFlags, Header};

const TYPES: [&str; 7] = [
    "application/json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=zz",
    "text/plain",
    "text/html",
    "",
    "application/vnd.api+json; charset=utf-8",
];
const CODINGS: [&str; 4] = ["", "gzip", "zstd", "identity"];

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let (kind, flags) = (data[0], data[1]);
    let mut fields = data[2..].split(|b| *b == 0);
    let text = |b: Option<&[u8]>| String::from_utf8_lossy(b.unwrap_or_default()).into_owned();
    let (value, query, body) = (text(fields.next()), text(fields.next()), fields.next().unwrap_or_default().to_vec());
    let mut headers = vec![Header::new("Authorization", value.clone()), Header::new("Location", format!("/x?{query}"))];
    let ct = TYPES[usize::from(kind) % TYPES.len()];
    if !ct.is_empty() {
        headers.push(Header::new("Content-Type", ct));
    }
    let coding = CODINGS[usize::from(kind >> 4) % CODINGS.len()];
    if !coding.is_empty() {
        headers.push(Header::new("Content-Encoding", coding));
    }
    let len = body.len() as u64 + u64::from(flags & 1) * 100; // bit 0: bytes lost
    let body = Body {
        raw: body.clone(),
        decoded: (flags & 2 != 0).then(|| body.clone()),
        len,
        truncated: flags & 4 != 0,
        decode_error: (flags & 8 != 0).then(|| "fuzz".into()),
        withheld: false,
    };
    let mut ex = Exchange {
        protocol: None,
        stream_id: None,
        grpc: None,
        tls: None,
        exchange_id: "e".into(),
        connection_id: "c".into(),
        connection_seq: 0,
        source: "fuzz".into(),
        request_start_us: 0,
        request_end_us: Some(1),
        response_start_us: None,
        response_end_us: None,
        client_ip: [127, 0, 0, 1].into(),
        client_port: 1,
        server_ip: [127, 0, 0, 1].into(),
        server_port: 2,
        method: "POST".into(),
        uri: format!("/p?{query}"),
        host: None,
        path: "/p".into(),
        query: Some(query.as_str().into()),
        http_version: "HTTP/1.1".into(),
        request_headers: headers.clone(),
        request_trailers: vec![Header::new("X-Trailer-Token", value.clone())],
        request_body: body.clone(),
        status: Some(200),
        reason: None,
        response_version: None,
        interim_statuses: vec![],
        response_headers: headers,
        response_trailers: vec![],
        response_body: body,
        flags: ExchangeFlags::default(),
        error_detail: None,
    };
    Redactor::new(b"fuzz-key".to_vec(), &["field".into()]).apply(&mut ex);
    for b in [&ex.request_body, &ex.response_body] {
        if b.withheld {
            assert!(b.raw.is_empty(), "a withheld body kept bytes");
            assert_eq!(b.len, len, "a withheld body lost its length");
        }
    }
    // Authorization is always redacted, whatever its value.
    let auth = &ex.request_headers[0].value;
    assert!(auth.contains("hmac:"), "{auth:?}");
});

//! The last step before disk: each exchange's bodies are content-decoded, then redacted, and
//! its flags counted for the summary. Runs on the writer thread, so the packet path never
//! waits for a decompressor.
//!
//! Order matters: redaction sees the decoded body (a JSON field inside a gzip body is found).

use shadowtap_core::exchange::Exchange;

use crate::redact::Redactor;
use crate::summary::FlagCounts;

/// Prepares exchanges for the sink.
pub struct Prepare {
    max_body: u64,
    redactor: Option<Redactor>,
    counts: Prepared,
}

/// What preparing counted.
#[derive(Debug, Default, Clone)]
pub struct Prepared {
    /// Exchanges by flag.
    pub flags: FlagCounts,
    /// Exchanges with a body whose content coding could not be undone (a coded body withheld
    /// by redaction is not one).
    pub decode_errors: u64,
}

impl Prepare {
    /// Decoded bodies keep at most `max_body` bytes; `redactor`, when given, runs on every
    /// exchange after decoding.
    pub fn new(max_body: u64, redactor: Option<Redactor>) -> Self {
        Prepare {
            max_body,
            redactor,
            counts: Prepared::default(),
        }
    }

    /// Decodes, redacts and counts one exchange.
    pub fn exchange(&mut self, ex: &mut Exchange) {
        ex.request_body.decode(&ex.request_headers, self.max_body);
        ex.response_body.decode(&ex.response_headers, self.max_body);
        // Counted before redaction, which notes a withheld coded body in the same field.
        let undecodable =
            ex.request_body.decode_error.is_some() || ex.response_body.decode_error.is_some();
        self.counts.decode_errors += u64::from(undecodable);
        if let Some(r) = &self.redactor {
            r.apply(ex);
        }
        let (flags, f) = (&mut self.counts.flags, &ex.flags);
        flags.no_response += u64::from(f.no_response);
        flags.incomplete += u64::from(f.incomplete);
        flags.gap += u64::from(f.gap);
        flags.parse_error += u64::from(f.parse_error);
        flags.truncated += u64::from(ex.request_body.truncated || ex.response_body.truncated);
        if ex.request_body.decode_error.is_some() || ex.response_body.decode_error.is_some() {
            let detail: Vec<String> = [&ex.request_body, &ex.response_body]
                .iter()
                .zip(["request", "response"])
                .filter_map(|(b, side)| {
                    b.decode_error.as_ref().map(|e| format!("{side} body: {e}"))
                })
                .collect();
            let joined = detail.join("; ");
            ex.error_detail = Some(match ex.error_detail.take() {
                Some(d) => format!("{d}; {joined}"),
                None => joined,
            });
        }
    }

    /// The counts so far.
    pub fn counts(self) -> Prepared {
        self.counts
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use shadowtap_core::exchange::{Body, ExchangeFlags, Header};

    use super::*;

    /// A POST /login exchange with this response.
    pub(crate) fn exchange(
        response_headers: Vec<Header>,
        body: Vec<u8>,
        truncated: bool,
    ) -> Exchange {
        let len = body.len() as u64;
        Exchange {
            grpc: None,
            tls: None,
            protocol: None,
            stream_id: None,
            exchange_id: "e".into(),
            connection_id: "c".into(),
            connection_seq: 0,
            source: "test".into(),
            request_start_us: 0,
            request_end_us: None,
            response_start_us: None,
            response_end_us: None,
            client_ip: [127, 0, 0, 1].into(),
            client_port: 1,
            server_ip: [127, 0, 0, 1].into(),
            server_port: 2,
            method: "POST".into(),
            uri: "/login".into(),
            host: None,
            path: "/login".into(),
            query: None,
            http_version: "HTTP/1.1".into(),
            request_headers: vec![],
            request_trailers: vec![],
            request_body: Body::default(),
            status: Some(200),
            reason: None,
            response_version: None,
            interim_statuses: vec![],
            response_headers,
            response_trailers: vec![],
            response_body: Body {
                raw: body,
                len,
                truncated,
                ..Body::default()
            },
            flags: ExchangeFlags {
                incomplete: truncated,
                ..ExchangeFlags::default()
            },
            error_detail: None,
        }
    }

    #[test]
    fn bodies_are_decoded_before_they_are_redacted_and_failures_are_counted() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(br#"{"user":"u","password":"hunter2"}"#)
            .unwrap();
        let gz = gz.finish().unwrap();
        let headers = vec![
            Header::new("Content-Type", "application/json"),
            Header::new("Content-Encoding", "gzip"),
        ];
        let redactor = Redactor::new(b"k".to_vec(), &["password".into()]);
        let mut prepare = Prepare::new(1 << 20, Some(redactor));

        let mut ex = exchange(headers.clone(), gz.clone(), false);
        prepare.exchange(&mut ex);
        let decoded = String::from_utf8(ex.response_body.decoded.clone().unwrap()).unwrap();
        assert!(
            decoded.contains(r#""user":"u""#) && !decoded.contains("hunter2"),
            "{decoded}"
        );
        assert!(!ex.response_body.raw.windows(7).any(|w| w == b"hunter2"));

        // A truncated coded body cannot be decoded: it is said, and counted.
        let mut cut = exchange(headers, gz[..gz.len() / 2].to_vec(), true);
        cut.response_body.len = gz.len() as u64;
        prepare.exchange(&mut cut);
        assert!(cut.response_body.decoded.is_none());
        assert!(
            cut.error_detail
                .as_deref()
                .unwrap()
                .contains("response body"),
            "{:?}",
            cut.error_detail
        );
        let counts = prepare.counts();
        assert_eq!(counts.decode_errors, 1);
        assert_eq!((counts.flags.incomplete, counts.flags.truncated), (1, 1));
    }

    #[test]
    fn apply_covers_the_target_trailers_and_says_what_was_withheld() {
        let r = Redactor::new(b"k".to_vec(), &["X-Internal".into()]);
        let mut ex = exchange(
            vec![Header {
                name: "Content-Type".into(),
                value: "application/json".into(),
            }],
            br#"{"token":"#.to_vec(),
            true,
        );
        ex.uri = "/login?api_key=K1&next=/home".into();
        ex.query = Some("api_key=K1&next=/home".into());
        ex.request_trailers = vec![Header {
            name: "X-Checksum-Token".into(),
            value: "T1".into(),
        }];
        r.apply(&mut ex);
        assert!(
            !ex.uri.contains("K1") && ex.uri.contains("next=/home"),
            "{}",
            ex.uri
        );
        assert!(!ex.query.as_deref().unwrap().contains("K1"));
        assert!(ex.request_trailers[0].value.starts_with("hmac:"));
        assert!(ex.response_body.withheld);
        assert!(
            ex.error_detail
                .as_deref()
                .unwrap()
                .contains("response body withheld: it does not parse as JSON"),
            "{:?}",
            ex.error_detail
        );
    }
}

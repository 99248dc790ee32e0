//! The `replays` table: one row per recorded request per target, written by `shadowtap replay`.
//!
//! Like `exchanges`, the columns are a contract documented in `docs/schema.md`; any change to
//! names or types bumps [`REPLAYS_SCHEMA_VERSION`]. `exchange_id` joins the capture's
//! `exchanges` table; `(exchange_id, pass, target)` is unique within a run.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Int32Builder, Int64Builder, RecordBatch,
    StringBuilder, TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::error::ArrowError;

use crate::exchange::{CompactString, Header};
use crate::schema::{headers_type, ts, HeadersColumn, SCHEMA_VERSION_KEY, TABLE_KEY};

/// Version of the `replays` schema.
/// Version 2 added `send_position`.
pub const REPLAYS_SCHEMA_VERSION: u32 = 2;

/// Why a request got no HTTP response from a target. Stored as the `error_kind` column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No complete response within `--timeout`.
    Timeout,
    /// The connection was refused (nothing listening).
    Refused,
    /// The connection was reset or closed before a complete response.
    Reset,
    /// The TLS handshake failed.
    Tls,
    /// The target answered with something that is not valid HTTP.
    Protocol,
    /// The connection could not be made for another reason (DNS, unreachable network).
    Connect,
    /// The recording does not hold the whole request (body truncated or lost in capture), so
    /// it was not sent.
    Unreplayable,
    /// A mutation rule or hook dropped the request on purpose (simulated loss).
    Dropped,
    /// A hook failed (script error, operation limit, middleware error); the request was not sent.
    Hook,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The column value.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Tls => "tls",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Connect => "connect",
            ErrorKind::Unreplayable => "unreplayable",
            ErrorKind::Dropped => "dropped",
            ErrorKind::Hook => "hook",
            ErrorKind::Other => "other",
        }
    }
}

/// One request sent (or not) to one target, and what came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRecord {
    /// The replay run (shared by every row of the run, as are `target` and `target_url`).
    pub run_id: Arc<str>,
    /// The recorded exchange (joins `exchanges.exchange_id`).
    pub exchange_id: String,
    /// 0-based pass over the recording (`--loop`).
    pub pass: u32,
    /// Target name (`baseline`, `candidate`, …).
    pub target: Arc<str>,
    /// Target base URL.
    pub target_url: Arc<str>,
    /// The recorded request's capture time (µs since the epoch).
    pub recorded_start_us: i64,
    /// When the request was sent (µs since the epoch); `None` when it was not sent.
    pub sent_at_us: Option<i64>,
    /// Method sent (after hooks).
    pub method: CompactString,
    /// Full URL sent (after hooks).
    pub url: String,
    /// Path sent.
    pub path: CompactString,
    /// Query sent, without `?`.
    pub query: Option<CompactString>,
    /// Headers sent (after hooks; the client adds only `content-length` and, for HTTP/1.1,
    /// `host` when the request has none).
    pub request_headers: Vec<Header>,
    /// Body sent.
    pub request_body: Vec<u8>,
    /// Response status; `None` on a transport error.
    pub status: Option<u16>,
    /// Response HTTP version (`HTTP/1.1`, `HTTP/2.0`).
    pub response_version: Option<CompactString>,
    /// Response headers (after response hooks).
    pub response_headers: Vec<Header>,
    /// Response body as received (content-coded if the target coded it), at most the cap.
    pub response_body: Vec<u8>,
    /// Response body with its content coding undone; `None` when not coded or not decodable.
    pub response_body_decoded: Option<Vec<u8>>,
    /// Response body length received, including bytes beyond the cap.
    pub response_body_len: u64,
    /// The body was longer than the cap.
    pub response_body_truncated: bool,
    /// Time to open the connection (TCP and TLS), µs; `None` when a pooled connection was used.
    pub connect_us: Option<i64>,
    /// Time from sending to the response head, µs.
    pub ttfb_us: Option<i64>,
    /// Time from sending to the end of the response body (or the error), µs.
    pub total_us: Option<i64>,
    /// Why there is no response.
    pub error_kind: Option<ErrorKind>,
    /// The error in words (never bodies or header values).
    pub error_message: Option<String>,
    /// 0-based position of this target in the order the request was sent to the targets
    /// (random per exchange, so no target is always first or last); `None` when not sent.
    pub send_position: Option<u32>,
}

/// The Arrow schema of the `replays` table.
pub fn replays_schema() -> SchemaRef {
    let f = Field::new;
    let fields = vec![
        f("run_id", DataType::Utf8, false),
        f("exchange_id", DataType::Utf8, false),
        f("pass", DataType::Int32, false),
        f("target", DataType::Utf8, false),
        f("target_url", DataType::Utf8, false),
        f("recorded_start", ts(), false),
        f("sent_at", ts(), true),
        f("method", DataType::Utf8, false),
        f("url", DataType::Utf8, false),
        f("path", DataType::Utf8, false),
        f("query", DataType::Utf8, true),
        f("request_headers", headers_type(), false),
        f("request_body", DataType::Binary, false),
        f("status", DataType::Int32, true),
        f("response_version", DataType::Utf8, true),
        f("response_headers", headers_type(), false),
        f("response_body", DataType::Binary, false),
        f("response_body_decoded", DataType::Binary, true),
        f("response_body_len", DataType::Int64, false),
        f("response_body_truncated", DataType::Boolean, false),
        f("connect_us", DataType::Int64, true),
        f("ttfb_us", DataType::Int64, true),
        f("total_us", DataType::Int64, true),
        f("error_kind", DataType::Utf8, true),
        f("error_message", DataType::Utf8, true),
        f("send_position", DataType::Int32, true),
    ];
    let metadata = [
        (TABLE_KEY.to_owned(), "replays".to_owned()),
        (
            SCHEMA_VERSION_KEY.to_owned(),
            REPLAYS_SCHEMA_VERSION.to_string(),
        ),
    ];
    Arc::new(Schema::new(fields).with_metadata(metadata.into_iter().collect()))
}

fn headers_column(rows: &[ReplayRecord], get: impl Fn(&ReplayRecord) -> &[Header]) -> ArrayRef {
    let mut b = HeadersColumn::for_lists(rows.iter().map(&get));
    for r in rows {
        b.append(get(r));
    }
    b.finish()
}

/// Converts records into one record batch of [`replays_schema`].
pub fn replays_to_batch(rows: &[ReplayRecord]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let strings = |f: &dyn Fn(&ReplayRecord) -> Option<&str>| -> ArrayRef {
        let bytes = rows.iter().map(|r| f(r).map_or(0, str::len)).sum();
        let mut b = StringBuilder::with_capacity(n, bytes);
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish())
    };
    let times = |f: &dyn Fn(&ReplayRecord) -> Option<i64>| -> ArrayRef {
        let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish())
    };
    let ints64 = |f: &dyn Fn(&ReplayRecord) -> Option<i64>| -> ArrayRef {
        let mut b = Int64Builder::with_capacity(n);
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish())
    };
    let ints32 = |f: &dyn Fn(&ReplayRecord) -> Option<i32>| -> ArrayRef {
        let mut b = Int32Builder::with_capacity(n);
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish())
    };
    let binary = |f: &dyn Fn(&ReplayRecord) -> Option<&[u8]>| -> ArrayRef {
        let bytes = rows.iter().map(|r| f(r).map_or(0, <[u8]>::len)).sum();
        let mut b = BinaryBuilder::with_capacity(n, bytes);
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish())
    };
    let mut truncated = BooleanBuilder::with_capacity(n);
    rows.iter()
        .for_each(|r| truncated.append_value(r.response_body_truncated));
    let columns: Vec<ArrayRef> = vec![
        strings(&|r| Some(&r.run_id)),
        strings(&|r| Some(&r.exchange_id)),
        ints32(&|r| Some(r.pass.min(i32::MAX as u32) as i32)),
        strings(&|r| Some(&r.target)),
        strings(&|r| Some(&r.target_url)),
        times(&|r| Some(r.recorded_start_us)),
        times(&|r| r.sent_at_us),
        strings(&|r| Some(&r.method)),
        strings(&|r| Some(&r.url)),
        strings(&|r| Some(&r.path)),
        strings(&|r| r.query.as_deref()),
        headers_column(rows, |r| &r.request_headers),
        binary(&|r| Some(&r.request_body)),
        ints32(&|r| r.status.map(i32::from)),
        strings(&|r| r.response_version.as_deref()),
        headers_column(rows, |r| &r.response_headers),
        binary(&|r| Some(&r.response_body)),
        binary(&|r| r.response_body_decoded.as_deref()),
        ints64(&|r| Some(r.response_body_len as i64)),
        Arc::new(truncated.finish()),
        ints64(&|r| r.connect_us),
        ints64(&|r| r.ttfb_us),
        ints64(&|r| r.total_us),
        strings(&|r| r.error_kind.map(ErrorKind::as_str)),
        strings(&|r| r.error_message.as_deref()),
        ints32(&|r| r.send_position.map(|p| p.min(i32::MAX as u32) as i32)),
    ];
    RecordBatch::try_new(replays_schema(), columns)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_transport_error_is_a_row_with_null_status() {
        let r = ReplayRecord {
            run_id: "r".into(),
            exchange_id: "e".into(),
            pass: 0,
            target: "candidate".into(),
            target_url: "http://127.0.0.1:1".into(),
            recorded_start_us: 1,
            sent_at_us: Some(2),
            method: "GET".into(),
            url: "http://127.0.0.1:1/".into(),
            path: "/".into(),
            query: None,
            request_headers: vec![],
            request_body: vec![],
            status: None,
            response_version: None,
            response_headers: vec![],
            response_body: vec![],
            response_body_decoded: None,
            response_body_len: 0,
            response_body_truncated: false,
            connect_us: None,
            ttfb_us: None,
            total_us: Some(3),
            error_kind: Some(ErrorKind::Refused),
            error_message: Some("connection refused".into()),
            send_position: Some(1),
        };
        let b = replays_to_batch(&[r]).unwrap();
        assert_eq!(b.num_rows(), 1);
        assert!(b.column_by_name("status").unwrap().is_null(0));
        let kind = b.column_by_name("error_kind").unwrap();
        assert_eq!(
            arrow::array::AsArray::as_string::<i32>(kind.as_ref()).value(0),
            "refused"
        );
        assert_eq!(b.schema().metadata()[TABLE_KEY], "replays");
    }
}

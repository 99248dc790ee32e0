//! The Arrow schema of the `exchanges` table and its conversion from [`Exchange`] records.
//!
//! The column list is a contract with users' tools (DuckDB, pandas, Spark): it is documented in
//! `docs/schema.md`, and any change to names or types bumps [`EXCHANGES_SCHEMA_VERSION`], which
//! every Parquet file carries in its key-value metadata under [`SCHEMA_VERSION_KEY`].

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Int32Builder, Int64Builder, ListArray, ListBuilder,
    RecordBatch, StringBuilder, StructArray, TimestampMicrosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;

use crate::exchange::{Body, Exchange, Header};

/// Version of the `exchanges` schema. Bumped on any change of column names or types.
pub const EXCHANGES_SCHEMA_VERSION: u32 = 4;
/// Parquet key-value metadata key naming the table a file belongs to (`exchanges`, …).
pub const TABLE_KEY: &str = "shadowtap.table";
/// Parquet key-value metadata key holding the table's schema version.
pub const SCHEMA_VERSION_KEY: &str = "shadowtap.schema_version";

/// The fields of one header struct: `name`, `value` (both utf8).
pub(crate) fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("name", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
    ])
}

/// The list item of a headers column: one `struct<name, value>`.
fn header_item() -> Arc<Field> {
    Arc::new(Field::new("item", DataType::Struct(header_fields()), true))
}

/// `list<struct<name, value>>`, the type of every headers column.
pub(crate) fn headers_type() -> DataType {
    DataType::List(header_item())
}

/// `timestamp(µs, UTC)`, the type of every time column.
pub(crate) fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// The Arrow schema of the `exchanges` table.
pub fn exchanges_schema() -> SchemaRef {
    let f = Field::new;
    let mut fields = vec![
        f("exchange_id", DataType::Utf8, false),
        f("connection_id", DataType::Utf8, false),
        f("connection_seq", DataType::Int32, false),
        f("source", DataType::Utf8, false),
        f("request_start", ts(), false),
        f("request_end", ts(), true),
        f("response_start", ts(), true),
        f("response_end", ts(), true),
        f("latency_us", DataType::Int64, true),
        f("ttfb_us", DataType::Int64, true),
        f("client_ip", DataType::Utf8, false),
        f("client_port", DataType::Int32, false),
        f("server_ip", DataType::Utf8, false),
        f("server_port", DataType::Int32, false),
        f("method", DataType::Utf8, false),
        f("uri", DataType::Utf8, false),
        f("host", DataType::Utf8, true),
        f("path", DataType::Utf8, false),
        f("query", DataType::Utf8, true),
        f("http_version", DataType::Utf8, false),
        f("request_headers", headers_type(), false),
        f("request_trailers", headers_type(), false),
    ];
    fields.extend(body_fields("request"));
    fields.extend([
        f("status", DataType::Int32, true),
        f("reason", DataType::Utf8, true),
        f("response_version", DataType::Utf8, true),
        f(
            "interim_statuses",
            DataType::List(Arc::new(Field::new("item", DataType::Int32, true))),
            false,
        ),
        f("response_headers", headers_type(), false),
        f("response_trailers", headers_type(), false),
    ]);
    fields.extend(body_fields("response"));
    fields.extend([
        f("no_response", DataType::Boolean, false),
        f("incomplete", DataType::Boolean, false),
        f("gap", DataType::Boolean, false),
        f("parse_error", DataType::Boolean, false),
        f("truncated", DataType::Boolean, false),
        f("decode_error", DataType::Boolean, false),
        f("upgraded", DataType::Boolean, false),
        f("error_detail", DataType::Utf8, true),
        // Version 2.
        f("redaction_withheld", DataType::Boolean, false),
        // Version 3.
        f("protocol", DataType::Utf8, true),
        f("stream_id", DataType::Int32, true),
        f("grpc_status", DataType::Int32, true),
        f("grpc_message", DataType::Utf8, true),
        f("grpc_request_messages", binary_list(), true),
        f("grpc_response_messages", binary_list(), true),
        // Version 4.
        f("tls_version", DataType::Utf8, true),
        f("tls_cipher", DataType::Utf8, true),
        f("tls_sni", DataType::Utf8, true),
    ]);
    let metadata = [
        (TABLE_KEY.to_owned(), "exchanges".to_owned()),
        (
            SCHEMA_VERSION_KEY.to_owned(),
            EXCHANGES_SCHEMA_VERSION.to_string(),
        ),
    ];
    Arc::new(Schema::new(fields).with_metadata(metadata.into_iter().collect()))
}

/// `list<binary>`: gRPC messages.
pub(crate) fn binary_list() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::Binary, true)))
}

fn body_fields(side: &str) -> Vec<Field> {
    vec![
        // Null when redaction withheld the bytes (version 2; never null before).
        Field::new(format!("{side}_body"), DataType::Binary, true),
        Field::new(format!("{side}_body_decoded"), DataType::Binary, true),
        Field::new(format!("{side}_body_len"), DataType::Int64, false),
        Field::new(format!("{side}_body_truncated"), DataType::Boolean, false),
    ]
}

pub(crate) struct HeadersColumn {
    names: StringBuilder,
    values: StringBuilder,
    offsets: Vec<i32>,
}

impl HeadersColumn {
    /// A column for the header lists `lists` will append, sized for them up front: the
    /// builders never grow (and copy) while a batch is built.
    pub(crate) fn for_lists<'a>(lists: impl Iterator<Item = &'a [Header]>) -> Self {
        let (mut rows, mut count, mut name_bytes, mut value_bytes) = (0, 0, 0, 0);
        for headers in lists {
            rows += 1;
            count += headers.len();
            for h in headers {
                name_bytes += h.name.len();
                value_bytes += h.value.len();
            }
        }
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        HeadersColumn {
            names: StringBuilder::with_capacity(count, name_bytes),
            values: StringBuilder::with_capacity(count, value_bytes),
            offsets,
        }
    }
    pub(crate) fn append(&mut self, headers: &[Header]) {
        for h in headers {
            self.names.append_value(&h.name);
            self.values.append_value(&h.value);
        }
        // A batch holds far fewer than 2^31 header lines (it is bounded by bytes well below).
        let end = self.offsets.last().copied().unwrap_or(0) as usize + headers.len();
        self.offsets.push(i32::try_from(end).unwrap_or(i32::MAX));
    }
    pub(crate) fn finish(mut self) -> ArrayRef {
        let entries = StructArray::new(
            header_fields(),
            vec![
                Arc::new(self.names.finish()) as ArrayRef,
                Arc::new(self.values.finish()),
            ],
            None,
        );
        Arc::new(ListArray::new(
            header_item(),
            OffsetBuffer::new(self.offsets.into()),
            Arc::new(entries),
            None,
        ))
    }
}

struct BodyColumns {
    raw: BinaryBuilder,
    decoded: BinaryBuilder,
    len: Int64Builder,
    truncated: BooleanBuilder,
}

impl BodyColumns {
    fn new(rows: usize, raw_bytes: usize, decoded_bytes: usize) -> Self {
        BodyColumns {
            raw: BinaryBuilder::with_capacity(rows, raw_bytes),
            decoded: BinaryBuilder::with_capacity(rows, decoded_bytes),
            len: Int64Builder::new(),
            truncated: BooleanBuilder::new(),
        }
    }
    fn append(&mut self, b: &Body) {
        if b.withheld {
            self.raw.append_null();
        } else {
            self.raw.append_value(&b.raw);
        }
        self.decoded.append_option(b.decoded.as_deref());
        self.len.append_value(b.len as i64);
        self.truncated.append_value(b.truncated);
    }
    fn finish(mut self, out: &mut Vec<ArrayRef>) {
        out.push(Arc::new(self.raw.finish()));
        out.push(Arc::new(self.decoded.finish()));
        out.push(Arc::new(self.len.finish()));
        out.push(Arc::new(self.truncated.finish()));
    }
}

fn diff(later: Option<i64>, earlier: Option<i64>) -> Option<i64> {
    Some(later? - earlier?)
}

/// A `list<binary>` column of each row's gRPC messages (null without a gRPC call).
fn messages(rows: &[Exchange], f: fn(&crate::exchange::GrpcCall) -> &Vec<Vec<u8>>) -> ArrayRef {
    let mut b = ListBuilder::new(BinaryBuilder::new());
    for r in rows {
        match &r.grpc {
            Some(g) => {
                for m in f(g) {
                    b.values().append_value(m);
                }
                b.append(true);
            }
            None => b.append(false),
        }
    }
    Arc::new(b.finish())
}

/// Converts exchanges into one record batch of [`exchanges_schema`].
pub fn exchanges_to_batch(rows: &[Exchange]) -> Result<RecordBatch, ArrowError> {
    let n = rows.len();
    let strings = |f: &dyn Fn(&Exchange) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        for r in rows {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let exchange_id = strings(&|r| Some(&r.exchange_id));
    let connection_id = strings(&|r| Some(&r.connection_id));
    let source = strings(&|r| Some(&r.source));
    let method = strings(&|r| Some(&r.method));
    let uri = strings(&|r| Some(&r.uri));
    let host = strings(&|r| r.host.as_deref());
    let path = strings(&|r| Some(&r.path));
    let query = strings(&|r| r.query.as_deref());
    let http_version = strings(&|r| Some(&r.http_version));
    let reason = strings(&|r| r.reason.as_deref());
    let response_version = strings(&|r| r.response_version.as_deref());
    let error_detail = strings(&|r| r.error_detail.as_deref());

    let times = |f: &dyn Fn(&Exchange) -> Option<i64>| -> ArrayRef {
        let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone("UTC");
        for r in rows {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let ints64 = |f: &dyn Fn(&Exchange) -> Option<i64>| -> ArrayRef {
        let mut b = Int64Builder::with_capacity(n);
        for r in rows {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let ints32 = |f: &dyn Fn(&Exchange) -> Option<i32>| -> ArrayRef {
        let mut b = Int32Builder::with_capacity(n);
        for r in rows {
            b.append_option(f(r));
        }
        Arc::new(b.finish())
    };
    let bools = |f: &dyn Fn(&Exchange) -> bool| -> ArrayRef {
        let mut b = BooleanBuilder::with_capacity(n);
        for r in rows {
            b.append_value(f(r));
        }
        Arc::new(b.finish())
    };
    let ips = |f: &dyn Fn(&Exchange) -> String| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        for r in rows {
            b.append_value(f(r));
        }
        Arc::new(b.finish())
    };

    let column = |f: fn(&Exchange) -> &[Header]| HeadersColumn::for_lists(rows.iter().map(f));
    let mut req_headers = column(|r| &r.request_headers);
    let mut req_trailers = column(|r| &r.request_trailers);
    let mut resp_headers = column(|r| &r.response_headers);
    let mut resp_trailers = column(|r| &r.response_trailers);
    let sizes = |f: &dyn Fn(&Exchange) -> &Body| -> (usize, usize) {
        rows.iter().map(f).fold((0, 0), |(r, d), b| {
            (r + b.raw.len(), d + b.decoded.as_ref().map_or(0, Vec::len))
        })
    };
    let (req_raw, req_dec) = sizes(&|r| &r.request_body);
    let (resp_raw, resp_dec) = sizes(&|r| &r.response_body);
    let mut req_body = BodyColumns::new(n, req_raw, req_dec);
    let mut resp_body = BodyColumns::new(n, resp_raw, resp_dec);
    let mut interim = ListBuilder::new(Int32Builder::new());
    for r in rows {
        req_headers.append(&r.request_headers);
        req_trailers.append(&r.request_trailers);
        resp_headers.append(&r.response_headers);
        resp_trailers.append(&r.response_trailers);
        req_body.append(&r.request_body);
        resp_body.append(&r.response_body);
        for s in &r.interim_statuses {
            interim.values().append_value(i32::from(*s));
        }
        interim.append(true);
    }

    let mut columns: Vec<ArrayRef> = vec![
        exchange_id,
        connection_id,
        ints32(&|r| Some(r.connection_seq as i32)),
        source,
        times(&|r| Some(r.request_start_us)),
        times(&|r| r.request_end_us),
        times(&|r| r.response_start_us),
        times(&|r| r.response_end_us),
        ints64(&|r| diff(r.response_end_us, Some(r.request_start_us))),
        ints64(&|r| diff(r.response_start_us, r.request_end_us)),
        ips(&|r| r.client_ip.to_string()),
        ints32(&|r| Some(i32::from(r.client_port))),
        ips(&|r| r.server_ip.to_string()),
        ints32(&|r| Some(i32::from(r.server_port))),
        method,
        uri,
        host,
        path,
        query,
        http_version,
        req_headers.finish(),
        req_trailers.finish(),
    ];
    req_body.finish(&mut columns);
    columns.extend([
        ints32(&|r| r.status.map(i32::from)),
        reason,
        response_version,
        Arc::new(interim.finish()) as ArrayRef,
        resp_headers.finish(),
        resp_trailers.finish(),
    ]);
    resp_body.finish(&mut columns);
    columns.extend([
        bools(&|r| r.flags.no_response),
        bools(&|r| r.flags.incomplete),
        bools(&|r| r.flags.gap),
        bools(&|r| r.flags.parse_error),
        bools(&|r| r.request_body.truncated || r.response_body.truncated),
        bools(&|r| r.request_body.decode_error.is_some() || r.response_body.decode_error.is_some()),
        bools(&|r| r.flags.upgraded),
        error_detail,
        bools(&|r| r.request_body.withheld || r.response_body.withheld),
        strings(&|r| r.protocol.as_deref()),
        ints32(&|r| r.stream_id.map(|s| s.min(i32::MAX as u32) as i32)),
        ints32(&|r| r.grpc.as_ref().and_then(|g| g.status)),
        strings(&|r| r.grpc.as_ref().and_then(|g| g.message.as_deref())),
        messages(rows, |g| &g.request_messages),
        messages(rows, |g| &g.response_messages),
        strings(&|r| r.tls.as_ref().map(|t| t.version.as_str())),
        strings(&|r| r.tls.as_ref().map(|t| t.cipher.as_str())),
        strings(&|r| r.tls.as_ref().and_then(|t| t.sni.as_deref())),
    ]);
    RecordBatch::try_new(exchanges_schema(), columns)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::exchange::ExchangeFlags;
    use arrow::array::Array;

    #[test]
    fn header_lists_keep_their_rows_apart_including_empty_ones() {
        let rows: Vec<Vec<Header>> = vec![
            vec![Header::new("Host", "a"), Header::new("Accept", "*/*")],
            vec![],
            vec![Header::new(
                "X-Long-Header-Name-Over-24-Bytes",
                "v".repeat(100).as_str(),
            )],
        ];
        let mut column = HeadersColumn::for_lists(rows.iter().map(Vec::as_slice));
        for r in &rows {
            column.append(r);
        }
        let array = column.finish();
        assert_eq!(array.data_type(), &headers_type());
        let list = array.as_any().downcast_ref::<ListArray>().unwrap();
        assert_eq!(list.len(), 3);
        // Row i's names (k = 0) or values (k = 1).
        let texts = |i: usize, k: usize| -> Vec<String> {
            let v = list.value(i);
            let s = v.as_any().downcast_ref::<StructArray>().unwrap();
            let n = s
                .column(k)
                .as_any()
                .downcast_ref::<arrow::array::StringArray>()
                .unwrap();
            n.iter().map(|x| x.unwrap().to_owned()).collect()
        };
        assert_eq!(texts(0, 0), ["Host", "Accept"]);
        assert_eq!(texts(0, 1), ["a", "*/*"]);
        assert!(texts(1, 0).is_empty());
        assert_eq!(texts(2, 0), ["X-Long-Header-Name-Over-24-Bytes"]);
        assert_eq!(texts(2, 1), ["v".repeat(100)]);
    }

    pub(crate) fn sample() -> Exchange {
        Exchange {
            grpc: None,
            tls: None,
            protocol: None,
            stream_id: None,
            exchange_id: "e1".into(),
            connection_id: "c1".into(),
            connection_seq: 0,
            source: "test.pcap".into(),
            request_start_us: 1_000,
            request_end_us: Some(1_100),
            response_start_us: Some(1_500),
            response_end_us: Some(2_000),
            client_ip: "10.0.0.1".parse().unwrap(),
            client_port: 40000,
            server_ip: "::1".parse().unwrap(),
            server_port: 80,
            method: "GET".into(),
            uri: "/a?b=1".into(),
            host: Some("example".into()),
            path: "/a".into(),
            query: Some("b=1".into()),
            http_version: "HTTP/1.1".into(),
            request_headers: vec![Header {
                name: "Host".into(),
                value: "example".into(),
            }],
            request_trailers: vec![],
            request_body: Body::default(),
            status: Some(200),
            reason: Some("OK".into()),
            response_version: Some("HTTP/1.1".into()),
            interim_statuses: vec![100],
            response_headers: vec![],
            response_trailers: vec![],
            response_body: Body {
                raw: b"hi".to_vec(),
                len: 2,
                ..Body::default()
            },
            flags: ExchangeFlags::default(),
            error_detail: None,
        }
    }

    #[test]
    fn batch_matches_schema_and_derives_latency() {
        let batch = exchanges_to_batch(&[sample()]).unwrap();
        assert_eq!(batch.num_rows(), 1);
        let latency = batch.column_by_name("latency_us").unwrap();
        let latency = latency
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        assert_eq!(latency.value(0), 1_000);
        let ttfb = batch.column_by_name("ttfb_us").unwrap();
        let ttfb = ttfb
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        assert_eq!(ttfb.value(0), 400);
        assert_eq!(
            batch.schema().metadata()[SCHEMA_VERSION_KEY],
            EXCHANGES_SCHEMA_VERSION.to_string()
        );
    }

    #[test]
    fn a_withheld_body_is_null_flagged_and_read_back_as_withheld() {
        let mut ex = sample();
        ex.response_body = Body {
            raw: Vec::new(),
            decoded: None,
            len: 4096,
            truncated: true,
            decode_error: None,
            withheld: true,
        };
        let batch = exchanges_to_batch(&[ex, sample()]).unwrap();
        let body = batch.column_by_name("response_body").unwrap();
        assert!(body.is_null(0) && body.is_valid(1));
        let flag = batch
            .column_by_name("redaction_withheld")
            .unwrap()
            .as_any()
            .downcast_ref::<arrow::array::BooleanArray>()
            .unwrap();
        assert!(flag.value(0) && !flag.value(1));
        let back = crate::read::exchanges_from_batch(&batch).unwrap();
        assert!(back[0].response_body.withheld && back[0].response_body.raw.is_empty());
        assert_eq!(back[0].response_body.len, 4096);
        assert!(!back[1].response_body.withheld);
    }
}

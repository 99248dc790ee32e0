//! Reading `exchanges` Parquet back into [`Exchange`] records, file by file and batch by batch,
//! so later stages never hold a whole recording in memory.
//!
//! Files are found recursively under a directory (Hive partitions such as
//! `date=2026-11-23/hour=10/` included); hidden files (the sink's `.NAME.inprogress`) are never
//! read. Each file's footer must say `shadowtap.table = exchanges` with a schema version this
//! build knows, or reading fails with a message that says which file and why.

use std::fs::File;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type, TimestampMicrosecondType};
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ProjectionMask;
use parquet::file::statistics::Statistics;

use crate::exchange::{Body, CompactString, Exchange, ExchangeFlags, Header};
use crate::schema::{EXCHANGES_SCHEMA_VERSION, SCHEMA_VERSION_KEY, TABLE_KEY};

/// Errors reading recorded exchanges, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The directory or a file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not readable Parquet.
    #[error("{path}: not a readable Parquet file: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: parquet::errors::ParquetError,
    },
    /// A file is Parquet but not a shadowtap `exchanges` table this build can read.
    #[error("{path}: {message}")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// No `exchanges` files were found.
    #[error("{dir}: no exchanges-*.parquet files found (is this the --out directory of `shadowtap capture`?)")]
    Empty {
        /// The directory searched.
        dir: PathBuf,
    },
}

/// Finds the complete `exchanges-*.parquet` files under `dir` (recursively), sorted by path.
pub fn find_exchange_files(dir: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let mut out = Vec::new();
    walk(dir, &mut out)?;
    out.sort();
    if out.is_empty() {
        return Err(ReadError::Empty {
            dir: dir.to_path_buf(),
        });
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), ReadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| ReadError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    for e in entries {
        let e = e.map_err(|source| ReadError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let ft = e.file_type().map_err(|source| ReadError::Io {
            path: path.clone(),
            source,
        })?;
        if ft.is_dir() {
            walk(&path, out)?;
        } else if name.starts_with("exchanges-") && name.ends_with(".parquet") {
            out.push(path);
        }
    }
    Ok(())
}

/// Which columns to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Columns {
    /// Every column.
    All,
    /// What replaying needs: ids, request times, client address (for sampling by client) and
    /// the request itself. The other fields of the exchanges read are left empty: no
    /// response, zero ports, unspecified server address, empty `source`, `uri` and
    /// `http_version`, no trailers, no flags.
    Requests,
}

/// The columns [`Columns::Requests`] reads.
const REQUEST_COLUMNS: &[&str] = &[
    "exchange_id",
    "connection_id",
    "request_start",
    "request_end",
    "client_ip",
    "method",
    "host",
    "path",
    "query",
    "request_headers",
    "request_body",
    "request_body_decoded",
    "request_body_len",
    "request_body_truncated",
];

/// One `exchanges` file opened for reading.
pub struct ExchangeFile {
    path: PathBuf,
    reader: ParquetRecordBatchReader,
    columns: Columns,
    /// Smallest and largest `request_start` in the file (µs), from the footer statistics.
    pub time_range: Option<(i64, i64)>,
    /// Rows in the file.
    pub rows: u64,
}

impl ExchangeFile {
    /// Opens `path`, checks its table name and schema version, and prepares to read it in
    /// batches of `batch_rows`.
    pub fn open(path: &Path, batch_rows: usize) -> Result<Self, ReadError> {
        Self::open_with(path, batch_rows, Columns::All)
    }

    /// As [`ExchangeFile::open`], reading only `columns`: with [`Columns::Requests`] the
    /// response side (usually most of the bytes) is never decoded, and the exchanges read have
    /// empty responses.
    pub fn open_with(path: &Path, batch_rows: usize, columns: Columns) -> Result<Self, ReadError> {
        let file = File::open(path).map_err(|source| ReadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(|source| {
            ReadError::Parquet {
                path: path.to_path_buf(),
                source,
            }
        })?;
        let meta = builder.metadata().clone();
        let kv = meta.file_metadata().key_value_metadata();
        let get = |key: &str| {
            kv.and_then(|kv| kv.iter().find(|e| e.key == key))
                .and_then(|e| e.value.clone())
        };
        let schema_err = |message: String| ReadError::Schema {
            path: path.to_path_buf(),
            message,
        };
        match get(TABLE_KEY).as_deref() {
            Some("exchanges") => {}
            Some(other) => {
                return Err(schema_err(format!(
                    "holds the `{other}` table, not `exchanges`"
                )))
            }
            None => {
                return Err(schema_err(
                    "is not a shadowtap exchanges file (no shadowtap.table metadata)".into(),
                ))
            }
        }
        let version = get(SCHEMA_VERSION_KEY).and_then(|v| v.parse::<u32>().ok());
        // Versions only add columns: an older file reads with the new ones at their defaults;
        // a newer one may hold what this build cannot read.
        if !version.is_some_and(|v| (1..=EXCHANGES_SCHEMA_VERSION).contains(&v)) {
            return Err(schema_err(format!(
                "exchanges schema version {} is not one this build reads (1 to {EXCHANGES_SCHEMA_VERSION}; a newer file needs a newer shadowtap)",
                version.map_or("unknown".into(), |v| v.to_string())
            )));
        }
        let col = meta
            .file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.name() == "request_start");
        let mut time_range: Option<(i64, i64)> = None;
        for rg in meta.row_groups() {
            let stats = col.and_then(|c| rg.column(c).statistics());
            if let Some(Statistics::Int64(s)) = stats {
                if let (Some(lo), Some(hi)) = (s.min_opt(), s.max_opt()) {
                    time_range =
                        Some(time_range.map_or((*lo, *hi), |(a, b)| (a.min(*lo), b.max(*hi))));
                }
            }
        }
        let rows = meta.file_metadata().num_rows().max(0) as u64;
        let builder = match columns {
            Columns::All => builder,
            Columns::Requests => {
                let mask = ProjectionMask::columns(
                    builder.parquet_schema(),
                    REQUEST_COLUMNS.iter().copied(),
                );
                builder.with_projection(mask)
            }
        };
        let reader = builder
            .with_batch_size(batch_rows.max(1))
            .build()
            .map_err(|source| ReadError::Parquet {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(ExchangeFile {
            path: path.to_path_buf(),
            reader,
            columns,
            time_range,
            rows,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next batch of exchanges, `None` at the end of the file.
    pub fn next_batch(&mut self) -> Option<Result<Vec<Exchange>, ReadError>> {
        let batch = self.reader.next()?;
        Some(
            batch
                .map_err(|e| ReadError::Parquet {
                    path: self.path.clone(),
                    source: e.into(),
                })
                .and_then(|b| {
                    exchanges_from_columns(&b, self.columns).map_err(|message| ReadError::Schema {
                        path: self.path.clone(),
                        message,
                    })
                }),
        )
    }
}

/// Converts a record batch of the `exchanges` schema back into exchanges. Decoding errors of
/// bodies are not stored in the table, so [`Body::decode_error`] is `None`. Response-side
/// columns may be left out: the responses are then empty.
pub fn exchanges_from_batch(b: &RecordBatch) -> Result<Vec<Exchange>, String> {
    exchanges_from_columns(b, Columns::All)
}

/// As [`exchanges_from_batch`], for a batch read with `columns`: with [`Columns::Requests`]
/// only the request columns must be there, and the others get the defaults it documents.
fn exchanges_from_columns(b: &RecordBatch, columns: Columns) -> Result<Vec<Exchange>, String> {
    let n = b.num_rows();
    let optional = |name: &str| match columns {
        Columns::All => {
            name.starts_with("response_")
                || matches!(
                    name,
                    "reason" | "interim_statuses" | "protocol" | "stream_id"
                )
                || name.starts_with("grpc_")
                || name.starts_with("tls_")
        }
        Columns::Requests => !REQUEST_COLUMNS.contains(&name),
    };
    let absent = |name: &str| b.column_by_name(name).is_none();
    let null_ints = arrow::array::new_null_array(&arrow::datatypes::DataType::Int32, n);
    let empty_strings = arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, n);
    let empty_times = arrow::array::new_null_array(
        &arrow::datatypes::DataType::Timestamp(
            arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        ),
        n,
    );
    let empty_lists = {
        let f = |t| std::sync::Arc::new(arrow::datatypes::Field::new("item", t, true));
        let header = arrow::datatypes::DataType::Struct(arrow::datatypes::Fields::from(vec![
            arrow::datatypes::Field::new("name", arrow::datatypes::DataType::Utf8, false),
            arrow::datatypes::Field::new("value", arrow::datatypes::DataType::Utf8, false),
        ]));
        let lists = |field: std::sync::Arc<arrow::datatypes::Field>| -> arrow::array::ArrayRef {
            let values = arrow::array::new_empty_array(field.data_type());
            std::sync::Arc::new(arrow::array::ListArray::new(
                field,
                arrow::buffer::OffsetBuffer::new_zeroed(n),
                values,
                None,
            ))
        };
        (
            lists(f(header)),
            lists(f(arrow::datatypes::DataType::Int32)),
        )
    };
    let empty_binary: arrow::array::ArrayRef = std::sync::Arc::new(
        arrow::array::BinaryArray::from_iter_values(std::iter::repeat_n(b"" as &[u8], n)),
    );
    let null_binary = arrow::array::new_null_array(&arrow::datatypes::DataType::Binary, n);
    let zeros: arrow::array::ArrayRef =
        std::sync::Arc::new(arrow::array::Int64Array::from(vec![0i64; n]));
    let falses: arrow::array::ArrayRef =
        std::sync::Arc::new(arrow::array::BooleanArray::from(vec![false; n]));
    let col = |name: &str| -> Result<arrow::array::ArrayRef, String> {
        if let Some(c) = b.column_by_name(name) {
            return Ok(c.clone());
        }
        if !optional(name) {
            return Err(format!("column `{name}` is missing"));
        }
        Ok(match name {
            "response_start" | "response_end" => empty_times.clone(),
            "response_headers" | "response_trailers" => empty_lists.0.clone(),
            "interim_statuses" => empty_lists.1.clone(),
            "response_body" => empty_binary.clone(),
            "response_body_decoded" => null_binary.clone(),
            "response_body_len" => zeros.clone(),
            "response_body_truncated" => falses.clone(),
            "request_end" => empty_times.clone(),
            "request_trailers" => empty_lists.0.clone(),
            "connection_seq" | "client_port" | "server_port" | "status" | "stream_id"
            | "grpc_status" => null_ints.clone(),
            "grpc_request_messages" | "grpc_response_messages" => {
                arrow::array::new_null_array(&crate::schema::binary_list(), n)
            }
            "no_response" | "incomplete" | "gap" | "parse_error" | "upgraded" => falses.clone(),
            _ => empty_strings.clone(),
        })
    };
    // A text column's values, each made into a String or a CompactString.
    fn texts<T>(
        c: &arrow::array::ArrayRef,
        name: &str,
        make: impl Fn(&str) -> T,
    ) -> Result<Vec<Option<T>>, String> {
        let a = c
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("column `{name}` is not utf8"))?;
        Ok((0..a.len())
            .map(|i| a.is_valid(i).then(|| make(a.value(i))))
            .collect())
    }
    let strings = |name: &str| texts(&col(name)?, name, str::to_owned);
    let compact = |name: &str| texts(&col(name)?, name, |s| CompactString::from(s));
    let times = |name: &str| -> Result<Vec<Option<i64>>, String> {
        let c = col(name)?;
        let a = c
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| format!("column `{name}` is not a µs timestamp"))?;
        Ok((0..a.len())
            .map(|i| a.is_valid(i).then(|| a.value(i)))
            .collect())
    };
    let ints32 = |name: &str| -> Result<Vec<Option<i32>>, String> {
        let c = col(name)?;
        let a = c
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| format!("column `{name}` is not int32"))?;
        Ok((0..a.len())
            .map(|i| a.is_valid(i).then(|| a.value(i)))
            .collect())
    };
    let bools = |name: &str| -> Result<Vec<bool>, String> {
        let c = col(name)?;
        let a = c
            .as_boolean_opt()
            .ok_or_else(|| format!("column `{name}` is not boolean"))?;
        Ok((0..a.len()).map(|i| a.is_valid(i) && a.value(i)).collect())
    };
    let headers = |name: &str| -> Result<Vec<Vec<Header>>, String> {
        let c = col(name)?;
        let list = c
            .as_list_opt::<i32>()
            .ok_or_else(|| format!("column `{name}` is not a list"))?;
        // Index the list's flattened children by offsets: slicing a list value per row costs
        // an allocation per child array.
        let s = list
            .values()
            .as_struct_opt()
            .ok_or_else(|| format!("column `{name}` does not hold structs"))?;
        let names = s
            .column(0)
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("`{name}.name` is not utf8"))?;
        let values = s
            .column(1)
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("`{name}.value` is not utf8"))?;
        let offsets = list.value_offsets();
        let mut out = Vec::with_capacity(list.len());
        for i in 0..list.len() {
            let mut hs = Vec::new();
            if list.is_valid(i) {
                let (from, to) = (offsets[i].max(0) as usize, offsets[i + 1].max(0) as usize);
                hs.reserve(to.saturating_sub(from));
                for j in from..to {
                    hs.push(Header {
                        name: names.value(j).into(),
                        value: values.value(j).into(),
                    });
                }
            }
            out.push(hs);
        }
        Ok(out)
    };
    let bodies = |side: &str| -> Result<Vec<Body>, String> {
        let raw_c = col(&format!("{side}_body"))?;
        let raw = raw_c
            .as_binary_opt::<i32>()
            .ok_or_else(|| format!("`{side}_body` is not binary"))?;
        let dec_c = col(&format!("{side}_body_decoded"))?;
        let dec = dec_c
            .as_binary_opt::<i32>()
            .ok_or_else(|| format!("`{side}_body_decoded` is not binary"))?;
        let len_c = col(&format!("{side}_body_len"))?;
        let len = len_c
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| format!("`{side}_body_len` is not int64"))?;
        let trunc = bools(&format!("{side}_body_truncated"))?;
        Ok((0..raw.len())
            .map(|i| Body {
                raw: if raw.is_valid(i) {
                    raw.value(i).to_vec()
                } else {
                    Vec::new()
                },
                withheld: !raw.is_valid(i),
                decoded: dec.is_valid(i).then(|| dec.value(i).to_vec()),
                len: len.value(i).max(0) as u64,
                truncated: trunc[i],
                decode_error: None,
            })
            .collect())
    };
    let interim = {
        let c = col("interim_statuses")?;
        let list = c
            .as_list_opt::<i32>()
            .ok_or_else(|| "column `interim_statuses` is not a list".to_string())?;
        let a = list
            .values()
            .as_primitive_opt::<Int32Type>()
            .ok_or_else(|| "column `interim_statuses` does not hold int32".to_string())?;
        let offsets = list.value_offsets();
        (0..list.len())
            .map(|i| {
                if !list.is_valid(i) {
                    return Vec::new();
                }
                let (from, to) = (offsets[i].max(0) as usize, offsets[i + 1].max(0) as usize);
                (from..to)
                    .filter(|&j| a.is_valid(j))
                    .map(|j| a.value(j).clamp(0, 999) as u16)
                    .collect::<Vec<u16>>()
            })
            .collect::<Vec<_>>()
    };
    let _ = n;
    // Parsed from the array's text: no string is made per row.
    let ips = |name: &str| -> Result<Vec<IpAddr>, String> {
        let c = col(name)?;
        let a = c
            .as_string_opt::<i32>()
            .ok_or_else(|| format!("column `{name}` is not utf8"))?;
        if absent(name) {
            return Ok(vec![IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED); a.len()]);
        }
        (0..a.len())
            .map(|i| {
                let v = a.is_valid(i).then(|| a.value(i));
                v.unwrap_or("")
                    .parse()
                    .map_err(|_| format!("column `{name}` holds {v:?}, not an IP address"))
            })
            .collect()
    };
    fn required<T>(v: Option<T>, name: &str) -> Result<T, String> {
        v.ok_or_else(|| format!("column `{name}` has a null"))
    }
    let req = required::<String>;

    let mut exchange_id = strings("exchange_id")?.into_iter();
    let mut connection_id = strings("connection_id")?.into_iter();
    let connection_seq = ints32("connection_seq")?;
    let mut source = strings("source")?.into_iter();
    let request_start = times("request_start")?;
    let request_end = times("request_end")?;
    let response_start = times("response_start")?;
    let response_end = times("response_end")?;
    let client_ip = ips("client_ip")?;
    let client_port = ints32("client_port")?;
    let server_ip = ips("server_ip")?;
    let server_port = ints32("server_port")?;
    let mut method = compact("method")?.into_iter();
    let mut uri = strings("uri")?.into_iter();
    let mut host = compact("host")?.into_iter();
    let mut path = compact("path")?.into_iter();
    let mut query = compact("query")?.into_iter();
    let mut http_version = strings("http_version")?.into_iter();
    let mut request_headers = headers("request_headers")?.into_iter();
    let mut request_trailers = headers("request_trailers")?.into_iter();
    let mut request_body = bodies("request")?.into_iter();
    let status = ints32("status")?;
    let mut reason = strings("reason")?.into_iter();
    let mut response_version = strings("response_version")?.into_iter();
    let mut interim = interim.into_iter();
    let mut response_headers = headers("response_headers")?.into_iter();
    let mut response_trailers = headers("response_trailers")?.into_iter();
    let mut response_body = bodies("response")?.into_iter();
    let no_response = bools("no_response")?;
    let incomplete = bools("incomplete")?;
    let gap = bools("gap")?;
    let parse_error = bools("parse_error")?;
    let upgraded = bools("upgraded")?;
    let mut error_detail = strings("error_detail")?.into_iter();
    let mut protocol = compact("protocol")?.into_iter();
    let mut tls_version = compact("tls_version")?.into_iter();
    let mut tls_cipher = compact("tls_cipher")?.into_iter();
    let mut tls_sni = strings("tls_sni")?.into_iter();
    let stream_id = ints32("stream_id")?;
    let grpc_status = ints32("grpc_status")?;
    let mut grpc_message = strings("grpc_message")?.into_iter();
    let binary_lists = |name: &str| -> Result<Vec<Option<Vec<Vec<u8>>>>, String> {
        let c = col(name)?;
        let list = c
            .as_list_opt::<i32>()
            .ok_or_else(|| format!("column `{name}` is not a list"))?;
        let values = list
            .values()
            .as_binary_opt::<i32>()
            .ok_or_else(|| format!("column `{name}` does not hold binary"))?;
        let offsets = list.value_offsets();
        Ok((0..list.len())
            .map(|i| {
                list.is_valid(i).then(|| {
                    let (from, to) = (offsets[i].max(0) as usize, offsets[i + 1].max(0) as usize);
                    (from..to).map(|j| values.value(j).to_vec()).collect()
                })
            })
            .collect())
    };
    let mut grpc_request = binary_lists("grpc_request_messages")?.into_iter();
    let mut grpc_response = binary_lists("grpc_response_messages")?.into_iter();
    let port = |v: Option<i32>| v.unwrap_or(0).clamp(0, 65_535) as u16;
    let uri_absent = absent("uri");
    let http_version_absent = absent("http_version");

    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let next = |o: Option<Option<String>>| o.flatten();
        out.push(Exchange {
            exchange_id: req(next(exchange_id.next()), "exchange_id")?,
            connection_id: req(next(connection_id.next()), "connection_id")?,
            connection_seq: connection_seq[i].unwrap_or(0).max(0) as u32,
            source: next(source.next()).unwrap_or_default(),
            request_start_us: request_start[i].ok_or("column `request_start` has a null")?,
            request_end_us: request_end[i],
            response_start_us: response_start[i],
            response_end_us: response_end[i],
            client_ip: client_ip[i],
            client_port: port(client_port[i]),
            server_ip: server_ip[i],
            server_port: port(server_port[i]),
            method: required(method.next().flatten(), "method")?,
            uri: match next(uri.next()) {
                None if uri_absent => String::new(),
                v => req(v, "uri")?,
            },
            host: host.next().flatten(),
            path: required(path.next().flatten(), "path")?,
            query: query.next().flatten(),
            http_version: match next(http_version.next()) {
                None if http_version_absent => String::new(),
                v => v.unwrap_or_else(|| "HTTP/1.1".into()),
            },
            request_headers: request_headers.next().unwrap_or_default(),
            request_trailers: request_trailers.next().unwrap_or_default(),
            request_body: request_body.next().unwrap_or_default(),
            status: status[i].map(|s| s.clamp(0, 999) as u16),
            reason: next(reason.next()),
            response_version: next(response_version.next()),
            interim_statuses: interim.next().unwrap_or_default(),
            response_headers: response_headers.next().unwrap_or_default(),
            response_trailers: response_trailers.next().unwrap_or_default(),
            response_body: response_body.next().unwrap_or_default(),
            flags: ExchangeFlags {
                no_response: no_response[i],
                incomplete: incomplete[i],
                gap: gap[i],
                parse_error: parse_error[i],
                upgraded: upgraded[i],
            },
            error_detail: next(error_detail.next()),
            protocol: protocol.next().flatten(),
            stream_id: stream_id[i].map(|s| s.max(0) as u32),
            grpc: {
                let (message, req, resp) = (
                    grpc_message.next().flatten(),
                    grpc_request.next().flatten(),
                    grpc_response.next().flatten(),
                );
                (grpc_status[i].is_some() || message.is_some() || req.is_some() || resp.is_some())
                    .then(|| crate::exchange::GrpcCall {
                        status: grpc_status[i],
                        message,
                        request_messages: req.unwrap_or_default(),
                        response_messages: resp.unwrap_or_default(),
                    })
            },
            tls: {
                let (version, cipher, sni) = (
                    tls_version.next().flatten(),
                    tls_cipher.next().flatten(),
                    tls_sni.next().flatten(),
                );
                version.map(|version| crate::exchange::TlsSession {
                    version,
                    cipher: cipher.unwrap_or_default(),
                    sni,
                })
            },
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{exchanges_schema, exchanges_to_batch};
    use crate::sink::{ParquetSink, SinkOptions};

    #[test]
    fn round_trips_through_parquet() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = crate::schema::tests::sample();
        a.request_headers.push(Header {
            name: "X-Bin".into(),
            value: "\u{e9}".into(),
        });
        a.request_body = Body {
            raw: b"{\"a\":1}".to_vec(),
            decoded: None,
            len: 7,
            truncated: false,
            decode_error: None,
            withheld: false,
        };
        let mut b = crate::schema::tests::sample();
        b.exchange_id = "e2".into();
        b.status = None;
        b.request_start_us = 5_000;
        b.flags.gap = true;
        b.interim_statuses = vec![100, 103];
        b.response_headers.truncate(1);
        let part = dir.path().join("date=2026-11-23/hour=10");
        let mut sink = ParquetSink::new(
            SinkOptions {
                dir: part,
                prefix: "exchanges-t".into(),
                max_file_bytes: 1 << 30,
                max_row_group_rows: 1024,
            },
            exchanges_schema(),
        )
        .unwrap();
        sink.write(&exchanges_to_batch(&[a.clone(), b.clone()]).unwrap())
            .unwrap();
        sink.finish().unwrap();
        std::fs::write(
            dir.path().join(".exchanges-x.parquet.inprogress"),
            b"partial",
        )
        .unwrap();
        let files = find_exchange_files(dir.path()).unwrap();
        assert_eq!(
            files.len(),
            1,
            "found in the partition, hidden file skipped"
        );
        let mut f = ExchangeFile::open(&files[0], 1).unwrap();
        assert_eq!(f.time_range, Some((1_000, 5_000)));
        assert_eq!(f.rows, 2);
        let got: Vec<Exchange> = std::iter::from_fn(|| f.next_batch())
            .flat_map(|b| b.unwrap())
            .collect();
        assert_eq!(got, vec![a.clone(), b.clone()]);
        // Both rows in one batch: the second row's list values start after the first's.
        let mut f = ExchangeFile::open(&files[0], 16).unwrap();
        let got: Vec<Exchange> = std::iter::from_fn(|| f.next_batch())
            .flat_map(|b| b.unwrap())
            .collect();
        assert_eq!(got, vec![a.clone(), b]);
        // Request columns only: the same requests; every other field at its documented default.
        let mut f = ExchangeFile::open_with(&files[0], 10, Columns::Requests).unwrap();
        let got = f.next_batch().unwrap().unwrap();
        let expected = Exchange {
            connection_seq: 0,
            source: String::new(),
            response_start_us: None,
            response_end_us: None,
            client_port: 0,
            server_ip: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            server_port: 0,
            uri: String::new(),
            http_version: String::new(),
            request_trailers: Vec::new(),
            status: None,
            reason: None,
            response_version: None,
            interim_statuses: Vec::new(),
            response_headers: Vec::new(),
            response_trailers: Vec::new(),
            response_body: Body::default(),
            flags: ExchangeFlags::default(),
            error_detail: None,
            ..a
        };
        assert_eq!(got[0], expected);
    }

    /// A file of an older version (3: no TLS columns; 2: no `protocol`, no `stream_id`) reads, the new
    /// columns null; a file of a newer version is refused, saying so.
    #[test]
    fn older_versions_read_and_newer_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = crate::schema::tests::sample();
        a.protocol = Some("h2c".into());
        a.stream_id = Some(3);
        a.tls = Some(crate::exchange::TlsSession {
            version: "TLSv1.3".into(),
            cipher: "TLS_AES_128_GCM_SHA256".into(),
            sni: Some("api.example".into()),
        });
        a.grpc = Some(crate::exchange::GrpcCall {
            status: Some(5),
            message: Some("not found".into()),
            request_messages: vec![b"\x08\x01".to_vec()],
            response_messages: vec![],
        });
        let full = exchanges_to_batch(std::slice::from_ref(&a)).unwrap();
        let write = |name: &str, version: &str, columns: usize| {
            let schema = exchanges_schema();
            let mut meta = schema.metadata().clone();
            meta.insert(SCHEMA_VERSION_KEY.into(), version.into());
            let fields: Vec<_> = schema.fields().iter().take(columns).cloned().collect();
            let schema =
                std::sync::Arc::new(arrow::datatypes::Schema::new(fields).with_metadata(meta));
            let batch = arrow::array::RecordBatch::try_new(
                schema.clone(),
                full.columns().iter().take(columns).cloned().collect(),
            )
            .unwrap();
            let path = dir.path().join(name);
            let kv = schema
                .metadata()
                .iter()
                .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.clone(), v.clone()))
                .collect();
            let props = parquet::file::properties::WriterProperties::builder()
                .set_key_value_metadata(Some(kv))
                .build();
            let mut w = parquet::arrow::ArrowWriter::try_new(
                std::fs::File::create(&path).unwrap(),
                schema,
                Some(props),
            )
            .unwrap();
            w.write(&batch).unwrap();
            w.close().unwrap();
            path
        };
        let n = full.num_columns();
        // The current version round-trips every new column.
        let v4 = write("exchanges-v4.parquet", "4", n);
        let got = ExchangeFile::open(&v4, 10)
            .unwrap()
            .next_batch()
            .unwrap()
            .unwrap();
        assert_eq!(got[0], a);
        // Version 3 had no TLS columns.
        let v3 = write("exchanges-v3.parquet", "3", n - 3);
        let got = ExchangeFile::open(&v3, 10)
            .unwrap()
            .next_batch()
            .unwrap()
            .unwrap();
        assert_eq!(got[0].tls, None);
        assert_eq!(got[0].stream_id, Some(3));
        // Version 2 had none of protocol, stream_id and the four gRPC columns.
        let v2 = write("exchanges-v2.parquet", "2", n - 9);
        let got = ExchangeFile::open(&v2, 10)
            .unwrap()
            .next_batch()
            .unwrap()
            .unwrap();
        assert_eq!(got[0].protocol, None);
        assert_eq!(got[0].stream_id, None);
        assert_eq!(got[0].grpc, None);
        assert_eq!(got[0].exchange_id, a.exchange_id);
        let v5 = write("exchanges-v5.parquet", "5", n);
        let err = ExchangeFile::open(&v5, 10).err().unwrap().to_string();
        assert!(err.contains("newer shadowtap"), "{err}");
    }

    #[test]
    fn other_files_are_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            find_exchange_files(dir.path()),
            Err(ReadError::Empty { .. })
        ));
        let p = dir.path().join("exchanges-bad.parquet");
        std::fs::write(&p, b"not parquet").unwrap();
        let err = ExchangeFile::open(&p, 10).err().unwrap().to_string();
        assert!(err.contains("not a readable Parquet file"), "{err}");
    }
}

//! Test helpers: recordings written as real Parquet, and real HTTP servers on loopback that
//! record what they receive.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use shadowtap_core::schema::{exchanges_schema, exchanges_to_batch};
use shadowtap_core::sink::{ParquetSink, SinkOptions};
use shadowtap_core::{Body, Exchange, ExchangeFlags, Header};
use shadowtap_replayer::ProgressMode;
use shadowtap_replayer::{ReplayOptions, ReplaySummary, Target};

/// One recorded exchange: `GET path` on connection `conn`, `offset_ms` after the start.
pub fn exchange(
    i: usize,
    conn: usize,
    method: &str,
    path_and_query: &str,
    offset_ms: i64,
) -> Exchange {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (path_and_query.to_owned(), None),
    };
    let body: Vec<u8> = if method == "GET" {
        Vec::new()
    } else {
        format!("{{\"n\":{i},\"secret\":\"s\"}}").into_bytes()
    };
    let mut headers = vec![
        Header {
            name: "Host".into(),
            value: "prod.example.com".into(),
        },
        Header {
            name: "User-Agent".into(),
            value: "recorded/1.0".into(),
        },
        Header {
            name: "Connection".into(),
            value: "keep-alive".into(),
        },
    ];
    if !body.is_empty() {
        headers.push(Header {
            name: "Content-Type".into(),
            value: "application/json".into(),
        });
        headers.push(Header {
            name: "Content-Length".into(),
            value: body.len().to_string().into(),
        });
    }
    let start = 1_763_900_000_000_000 + offset_ms * 1000;
    Exchange {
        grpc: None,
        tls: None,
        protocol: None,
        stream_id: None,
        exchange_id: format!("ex{i:06}"),
        connection_id: format!("conn{conn:04}"),
        connection_seq: i as u32,
        source: "test".into(),
        request_start_us: start,
        request_end_us: Some(start + 10),
        response_start_us: Some(start + 500),
        response_end_us: Some(start + 600),
        client_ip: format!("10.1.{}.{}", conn / 250, conn % 250 + 1)
            .parse()
            .unwrap(),
        client_port: 40_000,
        server_ip: "10.9.9.9".parse().unwrap(),
        server_port: 80,
        method: method.into(),
        uri: path_and_query.into(),
        host: Some("prod.example.com".into()),
        path: path.into(),
        query: query.map(Into::into),
        http_version: "HTTP/1.1".into(),
        request_headers: headers,
        request_trailers: vec![],
        request_body: Body {
            len: body.len() as u64,
            raw: body,
            ..Body::default()
        },
        status: Some(200),
        reason: Some("OK".into()),
        response_version: Some("HTTP/1.1".into()),
        interim_statuses: vec![],
        response_headers: vec![],
        response_trailers: vec![],
        response_body: Body {
            raw: b"ok".to_vec(),
            len: 2,
            ..Body::default()
        },
        flags: ExchangeFlags::default(),
        error_detail: None,
    }
}

/// Writes `rows` as an `exchanges` recording under `dir`, split into `files` files (as a capture
/// with several writers does), in a Hive partition.
pub fn write_recording(dir: &Path, rows: &[Exchange], files: usize) {
    let part = dir.join("date=2025-11-23/hour=12");
    for f in 0..files {
        let mine: Vec<Exchange> = rows
            .iter()
            .enumerate()
            .filter(|(i, _)| i % files == f)
            .map(|(_, e)| e.clone())
            .collect();
        let mut sink = ParquetSink::new(
            SinkOptions {
                dir: part.clone(),
                prefix: format!("exchanges-test-{f}"),
                max_file_bytes: 1 << 30,
                max_row_group_rows: 1024,
            },
            exchanges_schema(),
        )
        .unwrap();
        for chunk in mine.chunks(500) {
            sink.write(&exchanges_to_batch(chunk).unwrap()).unwrap();
        }
        sink.finish().unwrap();
    }
}

/// What a test server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub version: axum::http::Version,
}

/// A real HTTP server on loopback with scripted paths:
/// `/slow` waits 2 s, `/fail` answers 500, `/json` answers a JSON body with a changing field,
/// anything else answers 200 with the path.
pub struct Server {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }
}

async fn handle(
    State(log): State<Arc<Mutex<Vec<Received>>>>,
    method: Method,
    uri: Uri,
    version: axum::http::Version,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    log.lock().unwrap().push(Received {
        method: method.to_string(),
        uri: uri.to_string(),
        headers,
        body: body.to_vec(),
        version,
    });
    match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(2)).await;
            "slow".into_response()
        }
        "/fail" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "/json" => (
            [("content-type", "application/json")],
            r#"{"value":1,"generated_at":12345}"#,
        )
            .into_response(),
        _ => format!("served {path}").into_response(),
    }
}

/// Binds a listener on 127.0.0.1 and runs `serve` with it on a thread and runtime of its own
/// (so the server outlives any test runtime); returns the listener's address.
pub fn serve_on_loopback<F, Fut>(serve: F) -> SocketAddr
where
    F: FnOnce(tokio::net::TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            serve(listener).await;
        });
    });
    rx.recv().unwrap()
}

/// Starts the recording axum server on loopback.
pub fn server() -> Server {
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    let addr = serve_on_loopback(move |listener| async move {
        let app = axum::Router::new().fallback(handle).with_state(log);
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, received }
}

/// A server that reads each request and closes the connection without answering.
pub fn resetting_server() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            drop(conn);
        }
    });
    addr
}

/// A loopback port with nothing listening.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

pub fn target(name: &str, url: &str) -> Target {
    format!("{name}={url}").parse().unwrap()
}

/// Options for a quiet replay of `from` into `out`.
pub fn options(from: &Path, out: &Path, targets: Vec<Target>) -> ReplayOptions {
    let mut o = ReplayOptions::new(from.to_path_buf(), out.to_path_buf(), targets);
    o.send.progress = ProgressMode::Off;
    o.send.pacing = shadowtap_replayer::schedule::Pacing::Max;
    o.send.client.timeout = Duration::from_secs(10);
    o
}

/// Runs a replay on a fresh runtime until it ends or, with `stop_after`, until it is stopped
/// (as SIGINT does) that long after its start.
fn run_on_runtime(
    opts: ReplayOptions,
    stop_after: Option<Duration>,
) -> Result<ReplaySummary, shadowtap_replayer::ReplayError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            if let Some(after) = stop_after {
                tokio::time::sleep(after).await;
                let _ = tx.send(true);
            }
            // Keeps the sender alive until the replay ends.
            tokio::time::sleep(Duration::from_secs(60)).await;
        });
        shadowtap_replayer::replay(opts, rx).await
    })
}

/// Runs a replay to the end on a fresh runtime.
pub fn run(opts: ReplayOptions) -> Result<ReplaySummary, shadowtap_replayer::ReplayError> {
    run_on_runtime(opts, None)
}

/// Runs a replay on a fresh runtime and stops it (as SIGINT does) `after` its start.
pub fn run_stopped_after(opts: ReplayOptions, after: Duration) -> ReplaySummary {
    run_on_runtime(opts, Some(after)).unwrap()
}

/// A `replays` row as read back (the columns the tests look at).
#[derive(Debug, Clone)]
pub struct Row {
    pub exchange_id: String,
    pub pass: i32,
    pub target: String,
    pub method: String,
    pub path: String,
    pub url: String,
    pub status: Option<i32>,
    pub error_kind: Option<String>,
    pub error_message: Option<String>,
    pub response_version: Option<String>,
    pub response_body: Vec<u8>,
    pub request_headers: Vec<(String, String)>,
    pub total_us: Option<i64>,
    pub ttfb_us: Option<i64>,
    pub connect_us: Option<i64>,
    pub sent: bool,
    pub sent_at_us: Option<i64>,
    pub send_position: Option<i32>,
}

/// The error messages of the rows that did not get a 200.
pub fn failures(rows: &[Row]) -> Vec<Option<String>> {
    rows.iter()
        .filter(|r| r.status != Some(200))
        .map(|r| r.error_message.clone())
        .collect()
}

/// Reads every `replays-*.parquet` under `dir`.
pub fn read_rows(dir: &Path) -> Vec<Row> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("replays-") && name.ends_with(".parquet")) {
            continue;
        }
        let reader = ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&p).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for b in reader {
            out.extend(rows_of(&b.unwrap()));
        }
    }
    out
}

fn rows_of(b: &RecordBatch) -> Vec<Row> {
    let s = |n: &str| b.column_by_name(n).unwrap().as_string::<i32>().clone();
    let i32s = |n: &str| {
        b.column_by_name(n)
            .unwrap()
            .as_primitive::<Int32Type>()
            .clone()
    };
    let i64s = |n: &str| {
        b.column_by_name(n)
            .unwrap()
            .as_primitive::<Int64Type>()
            .clone()
    };
    let (id, target, method, path, url, kind, msg, version) = (
        s("exchange_id"),
        s("target"),
        s("method"),
        s("path"),
        s("url"),
        s("error_kind"),
        s("error_message"),
        s("response_version"),
    );
    let (pass, status, position) = (i32s("pass"), i32s("status"), i32s("send_position"));
    let (total, ttfb, connect) = (i64s("total_us"), i64s("ttfb_us"), i64s("connect_us"));
    let body = b
        .column_by_name("response_body")
        .unwrap()
        .as_binary::<i32>()
        .clone();
    let sent = b
        .column_by_name("sent_at")
        .unwrap()
        .as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
        .clone();
    let headers = b
        .column_by_name("request_headers")
        .unwrap()
        .as_list::<i32>()
        .clone();
    let opt_s =
        |a: &arrow::array::StringArray, i: usize| a.is_valid(i).then(|| a.value(i).to_owned());
    let opt_i = |a: &arrow::array::Int64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    (0..b.num_rows())
        .map(|i| {
            let hs = headers.value(i);
            let hs = hs.as_struct();
            let (names, values) = (
                hs.column(0).as_string::<i32>(),
                hs.column(1).as_string::<i32>(),
            );
            Row {
                exchange_id: id.value(i).to_owned(),
                pass: pass.value(i),
                target: target.value(i).to_owned(),
                method: method.value(i).to_owned(),
                path: path.value(i).to_owned(),
                url: url.value(i).to_owned(),
                status: status.is_valid(i).then(|| status.value(i)),
                error_kind: opt_s(&kind, i),
                error_message: opt_s(&msg, i),
                response_version: opt_s(&version, i),
                response_body: body.value(i).to_vec(),
                request_headers: (0..hs.len())
                    .map(|j| (names.value(j).to_owned(), values.value(j).to_owned()))
                    .collect(),
                total_us: opt_i(&total, i),
                ttfb_us: opt_i(&ttfb, i),
                connect_us: opt_i(&connect, i),
                sent: sent.is_valid(i),
                sent_at_us: sent.is_valid(i).then(|| sent.value(i)),
                send_position: position.is_valid(i).then(|| position.value(i)),
            }
        })
        .collect()
}

impl Row {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.request_headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// For the raw-socket servers of the tests: the first whole request in `got` (head and a
/// Content-Length body), taken out of it; `None` until all of it has arrived.
pub fn take_request(got: &mut Vec<u8>) -> Option<Vec<u8>> {
    let head = got.windows(4).position(|w| w == b"\r\n\r\n")?;
    let text = String::from_utf8_lossy(&got[..head]).to_ascii_lowercase();
    let len: usize = text
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map_or(0, |v| v.trim().parse().expect("a numeric Content-Length"));
    (got.len() >= head + 4 + len).then(|| got.drain(..head + 4 + len).collect())
}

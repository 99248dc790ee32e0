//! Helpers shared by the integration tests: running a capture and reading its Parquet back.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use shadowtap_capture::pipeline::{capture_files, CaptureOptions};
use shadowtap_capture::summary::CaptureSummary;

/// The repository's fixtures directory.
pub fn fixtures() -> PathBuf {
    Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo test sets CARGO_MANIFEST_DIR"))
        .join("../fixtures")
}

/// One exchange as read back from Parquet (the columns the tests look at).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub exchange_id: String,
    pub connection_id: String,
    pub method: String,
    pub uri: String,
    pub path: String,
    pub query: Option<String>,
    pub host: Option<String>,
    pub status: Option<i32>,
    pub interim: Vec<i32>,
    pub client_port: i32,
    pub request_body: Vec<u8>,
    pub request_body_len: i64,
    pub response_body: Vec<u8>,
    pub response_body_decoded: Option<Vec<u8>>,
    pub response_body_len: i64,
    pub response_body_truncated: bool,
    pub no_response: bool,
    pub gap: bool,
    pub incomplete: bool,
    pub parse_error: bool,
    pub upgraded: bool,
    pub response_header_names: Vec<String>,
    pub request_trailer_names: Vec<String>,
    pub response_trailer_names: Vec<String>,
}

/// Captures `inputs` into a fresh temp dir with `tweak` applied to the options.
pub fn capture_with(
    inputs: &[PathBuf],
    tweak: impl FnOnce(&mut CaptureOptions),
) -> (tempfile::TempDir, CaptureSummary, Vec<Row>) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = CaptureOptions::new(inputs.to_vec(), dir.path().to_path_buf());
    opts.progress = false;
    tweak(&mut opts);
    let summary = capture_files(&opts).expect("capture succeeds");
    let rows = read_rows(dir.path());
    (dir, summary, rows)
}

/// Captures `inputs` with default options.
pub fn capture(inputs: &[PathBuf]) -> (tempfile::TempDir, CaptureSummary, Vec<Row>) {
    capture_with(inputs, |_| {})
}

fn strings(batch: &arrow::array::RecordBatch, name: &str) -> Vec<Option<String>> {
    let col = batch
        .column_by_name(name)
        .unwrap_or_else(|| panic!("column {name}"));
    let a = col.as_string::<i32>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_owned()))
        .collect()
}

fn bools(batch: &arrow::array::RecordBatch, name: &str) -> Vec<bool> {
    let a = batch.column_by_name(name).unwrap().as_boolean().clone();
    (0..a.len()).map(|i| a.value(i)).collect()
}

fn binaries(batch: &arrow::array::RecordBatch, name: &str) -> Vec<Option<Vec<u8>>> {
    let a = batch
        .column_by_name(name)
        .unwrap()
        .as_binary::<i32>()
        .clone();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i).to_vec()))
        .collect()
}

fn ints(batch: &arrow::array::RecordBatch, name: &str) -> Vec<Option<i64>> {
    let col = batch.column_by_name(name).unwrap();
    if let Some(a) = col.as_primitive_opt::<Int32Type>() {
        return (0..a.len())
            .map(|i| a.is_valid(i).then(|| i64::from(a.value(i))))
            .collect();
    }
    let a = col.as_primitive::<arrow::datatypes::Int64Type>();
    (0..a.len())
        .map(|i| a.is_valid(i).then(|| a.value(i)))
        .collect()
}

fn header_names(batch: &arrow::array::RecordBatch, name: &str) -> Vec<Vec<String>> {
    let list = batch.column_by_name(name).unwrap().as_list::<i32>().clone();
    (0..list.len())
        .map(|i| {
            let v = list.value(i);
            let s = v.as_struct();
            let names = s.column(0).as_string::<i32>();
            (0..names.len())
                .map(|j| names.value(j).to_owned())
                .collect()
        })
        .collect()
}

/// Reads every exchanges file in `dir`.
pub fn read_rows(dir: &Path) -> Vec<Row> {
    let mut rows = Vec::new();
    let files = shadowtap_core::sink::list_parquet_files(dir, "exchanges-").unwrap();
    for f in files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&f).unwrap())
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let b = batch.unwrap();
            let ids = strings(&b, "exchange_id");
            let conns = strings(&b, "connection_id");
            let methods = strings(&b, "method");
            let uris = strings(&b, "uri");
            let paths = strings(&b, "path");
            let queries = strings(&b, "query");
            let hosts = strings(&b, "host");
            let status = ints(&b, "status");
            let ports = ints(&b, "client_port");
            let req_body = binaries(&b, "request_body");
            let req_len = ints(&b, "request_body_len");
            let resp_body = binaries(&b, "response_body");
            let resp_dec = binaries(&b, "response_body_decoded");
            let resp_len = ints(&b, "response_body_len");
            let resp_trunc = bools(&b, "response_body_truncated");
            let no_resp = bools(&b, "no_response");
            let gap = bools(&b, "gap");
            let incomplete = bools(&b, "incomplete");
            let parse_error = bools(&b, "parse_error");
            let upgraded = bools(&b, "upgraded");
            let resp_headers = header_names(&b, "response_headers");
            let req_trailers = header_names(&b, "request_trailers");
            let resp_trailers = header_names(&b, "response_trailers");
            let interim = b
                .column_by_name("interim_statuses")
                .unwrap()
                .as_list::<i32>()
                .clone();
            for i in 0..b.num_rows() {
                let iv = interim.value(i);
                let iv = iv.as_primitive::<Int32Type>();
                rows.push(Row {
                    exchange_id: ids[i].clone().unwrap(),
                    connection_id: conns[i].clone().unwrap(),
                    method: methods[i].clone().unwrap(),
                    uri: uris[i].clone().unwrap(),
                    path: paths[i].clone().unwrap(),
                    query: queries[i].clone(),
                    host: hosts[i].clone(),
                    status: status[i].map(|s| s as i32),
                    interim: iv.values().to_vec(),
                    client_port: ports[i].unwrap() as i32,
                    request_body: req_body[i].clone().unwrap_or_default(),
                    request_body_len: req_len[i].unwrap(),
                    response_body: resp_body[i].clone().unwrap_or_default(),
                    response_body_decoded: resp_dec[i].clone(),
                    response_body_len: resp_len[i].unwrap(),
                    response_body_truncated: resp_trunc[i],
                    no_response: no_resp[i],
                    gap: gap[i],
                    incomplete: incomplete[i],
                    parse_error: parse_error[i],
                    upgraded: upgraded[i],
                    response_header_names: resp_headers[i].clone(),
                    request_trailer_names: req_trailers[i].clone(),
                    response_trailer_names: resp_trailers[i].clone(),
                });
            }
        }
    }
    rows
}

/// The nginx configuration the live tests run: one worker, everything under `dir` (static
/// files in `dir/www`), an access log of `method uri status connection request-number` lines,
/// gzip for text and JSON, and `/post` answering any body with `posted`.
pub fn nginx_conf(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 1;
user root;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 64; }}
http {{
  log_format st '$request_method $request_uri $status $connection $connection_requests';
  access_log {d}/access.log st;
  client_body_temp_path {d}/body;
  proxy_temp_path {d}/proxy;
  fastcgi_temp_path {d}/fastcgi;
  uwsgi_temp_path {d}/uwsgi;
  scgi_temp_path {d}/scgi;
  keepalive_requests 1000;
  types {{ text/plain txt; application/json json; application/octet-stream bin; }}
  gzip on;
  gzip_min_length 10;
  gzip_http_version 1.0;
  gzip_types text/plain application/json;
  server {{
    listen 127.0.0.1:{port};
    root {d}/www;
    location /post {{ client_body_buffer_size 1m; return 200 "posted\n"; }}
  }}
}}
"#
    )
}

/// Starts nginx in the foreground on the configuration `nginx_conf` wrote in `dir`; `nginx` is
/// the command that runs it (`nginx`, or `ip netns exec NS nginx`).
pub fn spawn_nginx(mut nginx: Command, dir: &Path) -> Child {
    let d = dir.display();
    nginx
        .args(["-p", &d.to_string(), "-c", &format!("{d}/nginx.conf")])
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start nginx (apt-get install nginx-light)")
}

/// Starts a tcpdump `command` (its arguments set) and returns once it says it is listening.
pub fn spawn_tcpdump(mut tcpdump: Command) -> Child {
    let mut child = tcpdump
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start tcpdump (apt-get install tcpdump; needs root)");
    // tcpdump says "listening on IFACE" once the capture is open.
    let mut err = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut line = String::new();
    err.read_line(&mut line).expect("read tcpdump's stderr");
    assert!(line.contains("listening on"), "tcpdump: {line}");
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    child
}

//! No secret reaches disk: a capture of traffic that carries secrets in every place they live
//! (credential headers, cookies, query and fragment parameters, `Location` and `Referer`,
//! form, multipart and JSON bodies, gzip and zstd bodies, a JSON body cut at `--max-body`, a
//! body with a segment lost, chunked trailers), built packet by packet as a real pcap file and
//! read through libpcap. Every byte of every column of every Parquet file is searched after the
//! files are read back whole; the parts that are not secret must still be there.

use std::io::Write;
use std::path::Path;

use arrow::array::{Array, AsArray};
use etherparse::PacketBuilder;

use crate::common::capture_with;

const CLIENT: [u8; 4] = [192, 0, 2, 10];
const SERVER: [u8; 4] = [192, 0, 2, 20];
/// Bytes per TCP segment.
const MSS: usize = 200;

/// One connection: a request and its response, split into segments of [`MSS`] bytes;
/// `lose` names a response segment that is never captured.
struct Conn {
    port: u16,
    request: Vec<u8>,
    response: Vec<u8>,
    lose: Option<usize>,
}

fn segments(c: &Conn, frames: &mut Vec<Vec<u8>>) {
    let (c_isn, s_isn) = (1_000u32, 50_000u32);
    let tcp = |from_client: bool, seq: u32, ack: u32, syn: bool, fin: bool, payload: &[u8]| {
        let (src, dst, sp, dp) = if from_client {
            (CLIENT, SERVER, c.port, 80)
        } else {
            (SERVER, CLIENT, 80, c.port)
        };
        let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, dst, 64)
            .tcp(sp, dp, seq, 65_535);
        // The client's SYN acknowledges nothing.
        if !(syn && from_client) {
            b = b.ack(ack);
        }
        if syn {
            b = b.syn();
        }
        if fin {
            b = b.fin();
        }
        if !payload.is_empty() {
            b = b.psh();
        }
        let mut out = Vec::with_capacity(b.size(payload.len()));
        b.write(&mut out, payload).unwrap();
        out
    };
    frames.push(tcp(true, c_isn, 0, true, false, &[]));
    frames.push(tcp(false, s_isn, c_isn + 1, true, false, &[]));
    frames.push(tcp(true, c_isn + 1, s_isn + 1, false, false, &[]));
    let mut seq = c_isn + 1;
    for chunk in c.request.chunks(MSS) {
        frames.push(tcp(true, seq, s_isn + 1, false, false, chunk));
        seq += chunk.len() as u32;
    }
    let c_end = seq;
    let mut sseq = s_isn + 1;
    for (i, chunk) in c.response.chunks(MSS).enumerate() {
        if c.lose != Some(i) {
            frames.push(tcp(false, sseq, c_end, false, false, chunk));
        }
        sseq += chunk.len() as u32;
    }
    frames.push(tcp(true, c_end, sseq, false, true, &[]));
    frames.push(tcp(false, sseq, c_end + 1, false, true, &[]));
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&1_700_000_000u32.to_le_bytes());
        out.extend_from_slice(&(i as u32 * 10).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap();
}

fn request(head: &str, body: &[u8]) -> Vec<u8> {
    let mut r = head.replace('\n', "\r\n").into_bytes();
    if !body.is_empty() {
        r.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    r.extend_from_slice(b"\r\n");
    r.extend_from_slice(body);
    r
}

fn response(head: &str, body: &[u8]) -> Vec<u8> {
    let mut r = head.replace('\n', "\r\n").into_bytes();
    r.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    r.extend_from_slice(body);
    r
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b).unwrap();
    gz.finish().unwrap()
}

const OK: &str = "HTTP/1.1 200 OK\nContent-Type: application/json\n";

/// The traffic: every secret is `S3CRET` and two digits.
fn traffic() -> Vec<Conn> {
    let mut conns = Vec::new();
    let mut add = |request: Vec<u8>, response: Vec<u8>, lose: Option<usize>| {
        let port = 40_000 + conns.len() as u16;
        conns.push(Conn {
            port,
            request,
            response,
            lose,
        });
    };
    add(
        request(
            "GET /account HTTP/1.1\nHost: api.example.test\nAuthorization: Bearer S3CRET01\n\
             Cookie: sid=S3CRET02; theme=dark\nX-Api-Key: S3CRET04\nX-Amz-Security-Token: S3CRET05\n\
             X-Upstream-Token: S3CRET06\nUser-Agent: keep-agent\n",
            b"",
        ),
        response(
            "HTTP/1.1 200 OK\nSet-Cookie: sid=S3CRET03; Path=/; HttpOnly\nContent-Type: text/plain\n",
            b"plain-ok",
        ),
        None,
    );
    add(
        request(
            "GET /cb?code=S3CRET07&state=keep-state&access_token=S3CRET08&X-Amz-Signature=S3CRET09 HTTP/1.1\n\
             Host: api.example.test\nReferer: https://app.example.test/?api_key=S3CRET11&page=keep-page\n",
            b"",
        ),
        response(
            "HTTP/1.1 302 Found\nLocation: https://app.example.test/done?code=S3CRET10&next=keep-next\n",
            b"",
        ),
        None,
    );
    add(
        request(
            "POST /login HTTP/1.1\nHost: api.example.test\nContent-Type: application/x-www-form-urlencoded\n",
            b"user=keep-alice&password=S3CRET12",
        ),
        response(OK, br#"{"ok":true}"#),
        None,
    );
    let multipart = b"--b0undary\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nkeep-carol\r\n\
--b0undary\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nS3CRET13\r\n--b0undary--\r\n";
    add(
        request(
            "POST /signup HTTP/1.1\nHost: api.example.test\nContent-Type: multipart/form-data; boundary=b0undary\n",
            multipart,
        ),
        response(OK, br#"{"ok":true}"#),
        None,
    );
    add(
        request(
            "POST /api/session HTTP/1.1\nHost: api.example.test\nContent-Type: application/json\n",
            br#"{"user":"keep-bob","Password":"S3CRET14"}"#,
        ),
        response(
            &format!("{OK}Content-Encoding: gzip\n"),
            &gzip(br#"{"access_token":"S3CRET15","scope":"keep-scope"}"#),
        ),
        None,
    );
    add(
        request("GET /api/refresh HTTP/1.1\nHost: api.example.test\n", b""),
        response(
            &format!("{OK}Content-Encoding: zstd\n"),
            &zstd::encode_all(
                &br#"{"refresh_token":"S3CRET16","kind":"keep-kind"}"#[..],
                3,
            )
            .unwrap(),
        ),
        None,
    );
    // Longer than --max-body (4 KiB): the JSON is cut and cannot be parsed.
    let long = format!(r#"{{"password":"S3CRET17","pad":"{}"}}"#, "x".repeat(6000));
    add(
        request("GET /api/long HTTP/1.1\nHost: api.example.test\n", b""),
        response(OK, long.as_bytes()),
        None,
    );
    // A response segment lost in capture, after the secret.
    let gapped = format!(r#"{{"token":"S3CRET18","pad":"{}"}}"#, "y".repeat(900));
    add(
        request("GET /api/gap HTTP/1.1\nHost: api.example.test\n", b""),
        response(OK, gapped.as_bytes()),
        Some(2),
    );
    // A chunked request with a credential in its trailer.
    add(
        b"POST /upload HTTP/1.1\r\nHost: api.example.test\r\nTransfer-Encoding: chunked\r\n\
Trailer: X-Checksum-Token\r\n\r\n5\r\nhello\r\n0\r\nX-Checksum-Token: S3CRET19\r\n\r\n"
            .to_vec(),
        response(OK, br#"{"ok":true}"#),
        None,
    );
    conns
}

/// Every buffer of every column (nested ones too) of every batch of every Parquet file under
/// `dir`, concatenated: every value as it was read back, uncompressed.
fn every_byte(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    assert!(!files.is_empty(), "no Parquet file under {}", dir.display());
    for f in files {
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
            std::fs::File::open(&f).unwrap(),
        )
        .unwrap()
        .build()
        .unwrap();
        for batch in reader {
            for column in batch.unwrap().columns() {
                buffers(&column.to_data(), &mut out);
            }
        }
    }
    out
}

fn buffers(d: &arrow::array::ArrayData, out: &mut Vec<u8>) {
    for b in d.buffers() {
        out.extend_from_slice(b.as_slice());
        out.push(0);
    }
    for c in d.child_data() {
        buffers(c, out);
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn no_secret_reaches_any_byte_of_any_parquet_file() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("secrets.pcap");
    let mut frames = Vec::new();
    let conns = traffic();
    for c in &conns {
        segments(c, &mut frames);
    }
    write_pcap(&pcap, &frames);
    let (out, summary, rows) = capture_with(&[pcap], |o| o.reassembly.parser.max_body = 4096);
    assert_eq!(summary.exchanges_written, conns.len() as u64, "{summary:?}");
    assert_eq!(rows.len(), conns.len());

    let bytes = every_byte(out.path());
    let leaked: Vec<String> = (1..=19)
        .map(|i| format!("S3CRET{i:02}"))
        .filter(|s| contains(&bytes, s))
        .collect();
    assert!(leaked.is_empty(), "secrets on disk: {leaked:?}");
    for kept in [
        "keep-agent",
        "theme=",
        "keep-state",
        "keep-page",
        "keep-next",
        "keep-alice",
        "keep-carol",
        "keep-bob",
        "keep-scope",
        "keep-kind",
        "plain-ok",
        "/api/long",
        "X-Checksum-Token",
        "Bearer hmac:",
    ] {
        assert!(
            contains(&bytes, kept),
            "{kept:?} is missing: redaction took too much"
        );
    }

    // The cut JSON and the gapped one are withheld, with their lengths kept; nothing else is.
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(
            std::fs::read_dir(out.path())
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|x| x == "parquet"))
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let mut withheld = Vec::new();
    for b in reader {
        let b = b.unwrap();
        let paths = b.column_by_name("path").unwrap().as_string::<i32>().clone();
        let flag = b
            .column_by_name("redaction_withheld")
            .unwrap()
            .as_boolean()
            .clone();
        let body = b.column_by_name("response_body").unwrap().clone();
        let len = b
            .column_by_name("response_body_len")
            .unwrap()
            .as_primitive::<arrow::datatypes::Int64Type>()
            .clone();
        let detail = b
            .column_by_name("error_detail")
            .unwrap()
            .as_string::<i32>()
            .clone();
        for i in 0..b.num_rows() {
            if flag.value(i) {
                withheld.push((
                    paths.value(i).to_owned(),
                    body.is_null(i),
                    len.value(i),
                    detail.value(i).to_owned(),
                ));
            }
        }
    }
    withheld.sort();
    let names: Vec<&str> = withheld.iter().map(|w| w.0.as_str()).collect();
    // The gzip and zstd responses had fields redacted: their coded raw bytes are withheld too.
    assert_eq!(
        names,
        ["/api/gap", "/api/long", "/api/refresh", "/api/session"],
        "{withheld:?}"
    );
    for (path, null, len, detail) in &withheld {
        assert!(null, "{path}: a withheld body is null");
        assert!(*len > 0, "{path}: its length is kept");
        if path == "/api/gap" || path == "/api/long" {
            assert!(
                detail.contains("response body withheld"),
                "{path}: {detail}"
            );
        }
    }
}

/// A server on loopback for the live test: every request read whole (head and
/// Content-Length body), answered by path with secrets of its own, the connection closed.
fn secret_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut got = Vec::new();
            let mut buf = [0u8; 8192];
            let (path, done) = loop {
                if let Some(end) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                    let head = String::from_utf8_lossy(&got[..end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    if got.len() >= end + 4 + len {
                        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
                        break (path, true);
                    }
                }
                match std::io::Read::read(&mut conn, &mut buf) {
                    Ok(0) | Err(_) => break (String::new(), false),
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            };
            if !done {
                continue;
            }
            let answer = match path.split('?').next().unwrap_or("") {
                "/login" => response(
                    "HTTP/1.1 302 Found\nLocation: /home?code=S3CRETL1&next=keep-next\nSet-Cookie: sid=S3CRETL2; HttpOnly\nConnection: close\n",
                    b"",
                ),
                "/token" => response(
                    &format!("{OK}Content-Encoding: gzip\nConnection: close\n"),
                    &gzip(br#"{"access_token":"S3CRETL3","scope":"keep-scope"}"#),
                ),
                "/refresh" => response(
                    &format!("{OK}Content-Encoding: zstd\nConnection: close\n"),
                    &zstd::encode_all(&br#"{"refresh_token":"S3CRETL4","kind":"keep-kind"}"#[..], 3).unwrap(),
                ),
                _ => response("HTTP/1.1 200 OK\nContent-Type: text/plain\nConnection: close\n", b"plain-ok"),
            };
            let _ = conn.write_all(&answer);
        }
    });
    port
}

#[test]
#[ignore = "needs root (CAP_NET_RAW) and curl: scripts/test.sh runs it (--include-ignored)"]
fn no_secret_of_live_loopback_traffic_reaches_disk() {
    use crate::live::{curl, LiveCapture};
    let dir = tempfile::tempdir().unwrap();
    let port = secret_server();
    let out = dir.path().join("live");
    let live = LiveCapture::start(port, &out);
    let base = format!("http://127.0.0.1:{port}");
    curl(&[
        "-o",
        "/dev/null",
        "-H",
        "Authorization: Bearer S3CRETL5",
        "-H",
        "X-Api-Key: S3CRETL6",
        "-b",
        "sid=S3CRETL7; theme=keep",
        &format!("{base}/api?access_token=S3CRETL8&page=keep-page"),
    ]);
    curl(&[
        "-o",
        "/dev/null",
        "-d",
        "user=keep-alice&password=S3CRETL9",
        &format!("{base}/login"),
    ]);
    curl(&[
        "-o",
        "/dev/null",
        "-F",
        "user=keep-carol",
        "-F",
        "password=S3CRETLA",
        &format!("{base}/upload"),
    ]);
    curl(&[
        "-o",
        "/dev/null",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"Password":"S3CRETLB","user":"keep-bob"}"#,
        &format!("{base}/json"),
    ]);
    curl(&["-o", "/dev/null", &format!("{base}/token")]);
    curl(&["-o", "/dev/null", &format!("{base}/refresh")]);
    curl(&[
        "-o",
        "/dev/null",
        "-e",
        "https://app.example.test/?api_key=S3CRETLC",
        &format!("{base}/ref"),
    ]);
    // Let the last packets reach the capture before it stops.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let summary = live.stop();
    let bytes = every_byte(&out);
    let leaked: Vec<String> = "123456789ABC"
        .chars()
        .map(|c| format!("S3CRETL{c}"))
        .filter(|s| contains(&bytes, s))
        .collect();
    assert!(leaked.is_empty(), "secrets on disk: {leaked:?}\n{summary}");
    for kept in [
        "keep-page",
        "keep-alice",
        "keep-carol",
        "keep-bob",
        "keep-scope",
        "keep-kind",
        "keep-next",
        "plain-ok",
        "Bearer hmac:",
    ] {
        assert!(
            contains(&bytes, kept),
            "{kept:?} is missing: redaction took too much\n{summary}"
        );
    }
}

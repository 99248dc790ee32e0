//! HTTPS decrypted from a key log, on real traffic: `fixtures/tls/tls.pcap`, made by nginx
//! and curl (OpenSSL 3) on loopback with SSLKEYLOGFILE (`fixtures/tls/make.sh`): TLS 1.3 with
//! its three suites and TLS 1.2 with AES-GCM and ChaCha20-Poly1305, HTTP/1.1 and HTTP/2, a
//! resumed session. Checked against tshark's dissection of the same capture with the same key
//! log (`tls.tsv`); and what happens when keys are missing, wrong, inside the pcapng, or a
//! segment is lost.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use shadowtap_capture::pipeline::{capture_files, CaptureOptions};
use shadowtap_capture::redact::Redaction;
use shadowtap_capture::summary::CaptureSummary;
use shadowtap_core::read::{find_exchange_files, ExchangeFile};
use shadowtap_core::Exchange;
use shadowtap_tls::KeyLog;

use crate::common::fixtures;

fn tls(name: &str) -> PathBuf {
    fixtures().join("tls").join(name)
}

fn capture(input: &Path, keys: Option<KeyLog>) -> (CaptureSummary, Vec<Exchange>) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = CaptureOptions::new(vec![input.to_path_buf()], dir.path().to_path_buf());
    opts.progress = false;
    opts.redaction = Redaction::Off;
    opts.reassembly.tls_keys = keys.map(Arc::new);
    let summary = capture_files(&opts).expect("capture succeeds");
    let mut all = Vec::new();
    if summary.exchanges_written == 0 {
        return (summary, all);
    }
    for f in find_exchange_files(dir.path()).unwrap() {
        let mut file = ExchangeFile::open(&f, 1024).unwrap();
        while let Some(batch) = file.next_batch() {
            all.extend(batch.unwrap());
        }
    }
    all.sort_by_key(|e| e.request_start_us);
    (summary, all)
}

fn keys(name: &str) -> KeyLog {
    KeyLog::open(&tls(name)).unwrap()
}

type Row = (Option<u32>, String, String, Option<u16>);

/// tshark's rows: (stream id, method, path, status), in request order.
fn oracle() -> Vec<Row> {
    let text = std::fs::read_to_string(tls("tls.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let stream: u32 = f[1].parse().unwrap();
            (
                (stream != 0).then_some(stream),
                f[2].to_owned(),
                f[3].to_owned(),
                f[4].parse().ok(),
            )
        })
        .collect()
}

fn rows(got: &[Exchange]) -> Vec<Row> {
    got.iter()
        .map(|e| (e.stream_id, e.method.to_string(), e.uri.clone(), e.status))
        .collect()
}

#[test]
fn every_request_is_read_as_tshark_reads_it_with_the_key_log() {
    let (summary, got) = capture(&tls("tls.pcap"), Some(keys("keys.log")));
    let want = oracle();
    assert_eq!(want.len(), 12, "the oracle");
    assert_eq!(rows(&got), want);
    let r = &summary.reassembly;
    assert_eq!(
        (
            r.tls_connections,
            r.tls_decrypted,
            r.tls_undecrypted,
            r.tls_failed
        ),
        (8, 8, 0, 0)
    );
    for e in &got {
        let want = if e.stream_id.is_some() {
            "h2"
        } else {
            "http/1.1"
        };
        assert_eq!(e.protocol.as_deref(), Some(want), "{}", e.uri);
        assert!(
            !e.flags.gap && !e.flags.incomplete && !e.flags.parse_error,
            "{e:?}"
        );
    }
    // The sessions' versions and suites, as tshark reads their ServerHellos (by connection).
    let mut sessions: Vec<(String, String, String)> = Vec::new();
    for e in &got {
        let t = e.tls.as_ref().expect("read from TLS");
        assert_eq!(t.sni.as_deref(), Some("shadowtap.test"));
        let s = (
            e.connection_id.clone(),
            t.version.to_string(),
            t.cipher.to_string(),
        );
        if !sessions.contains(&s) {
            sessions.push(s);
        }
    }
    let suites: Vec<(&str, &str)> = sessions
        .iter()
        .map(|(_, v, c)| (v.as_str(), c.as_str()))
        .collect();
    assert_eq!(
        suites,
        [
            ("TLSv1.3", "TLS_AES_128_GCM_SHA256"),
            ("TLSv1.3", "TLS_CHACHA20_POLY1305_SHA256"),
            ("TLSv1.3", "TLS_AES_256_GCM_SHA384"),
            ("TLSv1.2", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"),
            ("TLSv1.2", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"),
            ("TLSv1.2", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
            ("TLSv1.2", "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"),
            ("TLSv1.3", "TLS_AES_128_GCM_SHA256"),
        ]
    );
    // Bodies whole across records (16 kB each at most) and DATA frames.
    let big: Vec<&Exchange> = got.iter().filter(|e| e.uri == "/big.bin").collect();
    assert_eq!(big.len(), 3, "over TLS 1.3 h1, TLS 1.3 h2 and TLS 1.2 h2");
    for e in big {
        assert_eq!(e.response_body.len, 61_440);
        assert!(
            e.response_body.raw.iter().all(|b| *b == b'z'),
            "{}",
            e.connection_id
        );
    }
    let post = got.iter().find(|e| e.method == "POST").unwrap();
    assert_eq!(post.request_body.len, 20_000);
    assert!(post.request_body.raw.iter().all(|b| *b == b'p'));
    assert_eq!(post.response_body.raw, b"posted\n");
    let json = got.iter().find(|e| e.uri == "/b.json").unwrap();
    assert_eq!(
        json.response_body.raw,
        b"{\"items\":[1,2,3],\"name\":\"shadowtap\"}\n"
    );
}

/// The last session's keys are not in the partial log: its request is not read (counted), the
/// others are.
#[test]
fn a_session_missing_from_the_key_log_is_counted_and_the_rest_read() {
    let (summary, got) = capture(&tls("tls.pcap"), Some(keys("keys-partial.log")));
    let mut want = oracle();
    let last = want.pop().unwrap();
    assert_eq!(last.2, "/secret.txt");
    assert_eq!(rows(&got), want);
    let r = &summary.reassembly;
    assert_eq!(
        (r.tls_connections, r.tls_decrypted, r.tls_undecrypted),
        (8, 7, 1)
    );
    assert!(summary.render().contains("1 without keys in the key log"));
}

/// `editcap --inject-secrets` puts the key log inside the pcapng: no flag needed.
#[test]
fn the_key_log_inside_a_pcapng_is_used() {
    let (summary, got) = capture(&tls("tls-dsb.pcapng"), None);
    assert_eq!(rows(&got), oracle());
    assert_eq!(summary.reassembly.tls_decrypted, 8);
}

/// Without keys TLS is not HTTP: skipped and counted as other flows, nothing invented.
#[test]
fn without_a_key_log_tls_is_skipped() {
    let (summary, got) = capture(&tls("tls.pcap"), None);
    assert!(got.is_empty());
    assert_eq!(summary.reassembly.tls_connections, 0);
    assert_eq!(summary.reassembly.non_http_flows, 8);
}

/// Secrets of the right sessions but wrong values: no record authenticates, so nothing is
/// read — never garbage taken for plaintext.
#[test]
fn wrong_secrets_read_nothing() {
    let text = std::fs::read_to_string(tls("keys.log")).unwrap();
    let bad: String = text
        .lines()
        .map(|l| {
            let mut f: Vec<String> = l.split(' ').map(str::to_owned).collect();
            if f.len() == 3 {
                // Flip the secret's first hex digit.
                let first = if f[2].starts_with('0') { "1" } else { "0" };
                f[2].replace_range(..1, first);
            }
            f.join(" ") + "\n"
        })
        .collect();
    let (summary, got) = capture(&tls("tls.pcap"), Some(KeyLog::from_text(&bad)));
    assert!(got.is_empty(), "{:?}", rows(&got));
    let r = &summary.reassembly;
    assert_eq!(
        (r.tls_connections, r.tls_decrypted, r.tls_failed),
        (8, 0, 8)
    );
}

/// One server segment of the first connection (TLS 1.3, HTTP/1.1 keep-alive) is lost in the
/// middle of the 60 kB body: record boundaries are gone, so that connection's answers from there
/// on are not read (its requests are kept, flagged, with no invented answer); the other seven
/// connections are whole.
#[test]
fn a_lost_segment_stops_that_connection_only() {
    let bytes = std::fs::read(tls("tls.pcap")).unwrap();
    assert_eq!(
        &bytes[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "a little-endian pcap"
    );
    let mut out = bytes[..24].to_vec();
    let (mut at, mut server_port, mut client_port) = (24, None, None);
    let mut server_payloads = 0;
    let mut dropped = false;
    while at + 16 <= bytes.len() {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let rec = &bytes[at..at + 16 + caplen];
        let ip = &rec[16 + 14..];
        let tcp = &ip[usize::from(ip[0] & 0x0f) * 4..];
        let (src, dst) = (
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
        );
        let payload = tcp.len() - usize::from(tcp[12] >> 4) * 4;
        // The first packet is the first connection's SYN, client → server.
        server_port.get_or_insert(dst);
        client_port.get_or_insert(src);
        let from_server = Some(src) == server_port && Some(dst) == client_port;
        if from_server && payload > 0 {
            server_payloads += 1;
        }
        // The server's first segment of 16 kB or more: inside big.bin's body.
        if !dropped && from_server && payload > 10_000 && server_payloads > 3 {
            dropped = true;
        } else {
            out.extend_from_slice(rec);
        }
        at += 16 + caplen;
    }
    assert!(dropped);
    let dir = tempfile::tempdir().unwrap();
    let lossy = dir.path().join("lossy.pcap");
    std::fs::write(&lossy, out).unwrap();
    let (summary, got) = capture(&lossy, Some(keys("keys.log")));
    let r = &summary.reassembly;
    assert_eq!((r.tls_connections, r.tls_failed), (8, 1));
    let want = oracle();
    let first_conn = got[0].connection_id.clone();
    let (first, rest): (Vec<&Exchange>, Vec<&Exchange>) =
        got.iter().partition(|e| e.connection_id == first_conn);
    assert_eq!(
        rows(&rest.iter().map(|e| (*e).clone()).collect::<Vec<_>>()),
        want[3..]
    );
    assert_eq!(first[0].uri, "/a.txt");
    assert_eq!(first[0].status, Some(200), "read before the loss");
    for e in &first[1..] {
        assert!(
            e.status.is_none() || e.flags.incomplete || e.flags.gap,
            "nothing invented after the loss: {e:?}"
        );
    }
    for e in first {
        if e.uri == "/big.bin" && e.status.is_some() {
            assert!(e.response_body.len < 61_440 || e.flags.incomplete, "{e:?}");
        }
    }
}

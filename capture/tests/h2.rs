//! HTTP/2 in clear (`h2c`) captured from real tools: `fixtures/h2c/h2c.pcap`, made by nghttpd,
//! nghttp and curl on loopback (`fixtures/h2c/make.sh`; prior knowledge, and an HTTP/1.1
//! `Upgrade: h2c`), against tshark's HTTP/2 dissection of it (`h2c.tsv`): every stream one
//! exchange, with its method, path, status, bodies and trailers; and the same capture with a
//! segment lost.

use std::path::{Path, PathBuf};

use shadowtap_capture::pipeline::{capture_files, CaptureOptions};
use shadowtap_capture::redact::Redaction;
use shadowtap_core::read::{find_exchange_files, ExchangeFile};
use shadowtap_core::Exchange;

use crate::common::fixtures;

fn h2c() -> PathBuf {
    fixtures().join("h2c").join("h2c.pcap")
}

fn capture(input: &Path) -> Vec<Exchange> {
    capture_summary(input).1
}

fn capture_summary(input: &Path) -> (shadowtap_capture::summary::CaptureSummary, Vec<Exchange>) {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = CaptureOptions::new(vec![input.to_path_buf()], dir.path().to_path_buf());
    opts.progress = false;
    opts.redaction = Redaction::Off;
    let summary = capture_files(&opts).expect("capture succeeds");
    let mut all = Vec::new();
    for f in find_exchange_files(dir.path()).unwrap() {
        let mut file = ExchangeFile::open(&f, 1024).unwrap();
        while let Some(batch) = file.next_batch() {
            all.extend(batch.unwrap());
        }
    }
    all.sort_by_key(|e| e.request_start_us);
    (summary, all)
}

/// tshark's rows: (stream id, method, path, status), in request order.
fn oracle() -> Vec<(u32, String, String, Option<u16>)> {
    let text = std::fs::read_to_string(fixtures().join("h2c").join("h2c.tsv")).unwrap();
    text.lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[1].parse().unwrap(),
                f[2].to_owned(),
                f[3].to_owned(),
                f[4].parse().ok(),
            )
        })
        .collect()
}

#[test]
fn every_stream_is_an_exchange_as_tshark_dissects_it() {
    let got = capture(&h2c());
    let want = oracle();
    assert_eq!(want.len(), 8, "the oracle");
    let ours: Vec<(u32, String, String, Option<u16>)> = got
        .iter()
        .map(|e| {
            (
                e.stream_id.unwrap(),
                e.method.to_string(),
                e.uri.clone(),
                e.status,
            )
        })
        .collect();
    assert_eq!(ours, want);
    for e in &got {
        assert_eq!(e.protocol.as_deref(), Some("h2c"));
        assert_eq!(e.http_version, "HTTP/2");
        assert_eq!(
            e.host.as_deref().map(|h| h.starts_with("127.0.0.1:")),
            Some(true)
        );
        assert!(
            !e.flags.gap && !e.flags.incomplete && !e.flags.no_response,
            "{e:?}"
        );
        assert!(
            e.request_headers.iter().all(|h| !h.name.starts_with(':')),
            "pseudo-headers are columns, not headers"
        );
        // nghttpd adds its trailer to every response with a body (the upgrade server does not).
        let upgrade_server = e.uri == "/first" || e.uri == "/second";
        if e.method != "HEAD" && e.status == Some(200) && !upgrade_server {
            assert!(
                e.response_trailers
                    .iter()
                    .any(|h| h.name == "x-fixture" && h.value == "h2c"),
                "{:?}",
                e.response_trailers
            );
        }
    }
    let by_path = |m: &str, p: &str| {
        got.iter()
            .find(|e| e.method == m && e.uri == p)
            .unwrap_or_else(|| panic!("{m} {p}"))
    };
    assert_eq!(
        by_path("GET", "/a.txt").response_body.raw,
        b"hello over h2c\n"
    );
    let post = by_path("POST", "/a.txt");
    assert_eq!(post.request_body.len, 40_000);
    assert!(post.request_body.raw.iter().all(|b| *b == b'p'));
    assert_eq!(by_path("GET", "/big.bin").response_body.len, 102_400);
    assert!(by_path("HEAD", "/b.json").response_body.raw.is_empty());
    // The HTTP/1.1 request that upgraded is stream 1, answered in HTTP/2 (200, not the 101),
    // without the upgrade's own fields; the next request is stream 3 of the same connection.
    let first = by_path("GET", "/first");
    let second = by_path("GET", "/second");
    assert_eq!((first.stream_id, first.status), (Some(1), Some(200)));
    assert_eq!(
        first.response_body.raw,
        b"{\"path\":\"/first\",\"via\":\"h2c upgrade\"}\n"
    );
    assert!(first
        .request_headers
        .iter()
        .all(|h| !["upgrade", "http2-settings", "connection"].contains(&h.name.as_str())));
    assert_eq!(second.stream_id, Some(3));
    assert_eq!(first.connection_id, second.connection_id);
    assert!(got.iter().all(|e| e.status != Some(101)));
    // Three streams of one connection: one connection id, numbered in request order.
    let first: Vec<&Exchange> = got.iter().take(3).collect();
    assert!(first
        .iter()
        .all(|e| e.connection_id == first[0].connection_id));
    assert_eq!(
        first.iter().map(|e| e.connection_seq).collect::<Vec<_>>(),
        [0, 1, 2]
    );
}

/// `h2c.pcap` without the first segment the server sent on the first connection (its SETTINGS
/// and the start of its answers): that connection's server side cannot be decoded from there
/// (frames and the HPACK table are unknown), so its three streams are kept with their requests
/// and flagged, never given invented responses; the other connections are whole.
#[test]
fn a_lost_segment_flags_its_connection_and_invents_nothing() {
    let bytes = std::fs::read(h2c()).unwrap();
    assert_eq!(
        &bytes[..4],
        &[0xd4, 0xc3, 0xb2, 0xa1],
        "a little-endian pcap"
    );
    assert_eq!(
        u32::from_le_bytes(bytes[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    let mut out = bytes[..24].to_vec();
    let (mut at, mut server_port, mut client_port, mut dropped) = (24, None, None, false);
    while at + 16 <= bytes.len() {
        let caplen = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
        let rec = &bytes[at..at + 16 + caplen];
        let pkt = &rec[16..];
        let ip = &pkt[14..];
        let tcp = &ip[usize::from(ip[0] & 0x0f) * 4..];
        let (src, dst) = (
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
        );
        let payload = tcp.len() - usize::from(tcp[12] >> 4) * 4;
        // The first packet is the first connection's SYN, client → server.
        server_port.get_or_insert(dst);
        client_port.get_or_insert(src);
        let drop = !dropped && Some(src) == server_port && Some(dst) == client_port && payload > 0;
        if drop {
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
    let (summary, got) = capture_summary(&lossy);
    assert_eq!(
        (
            summary.reassembly.h2_connections,
            summary.reassembly.h2_lost_streams
        ),
        (5, 3)
    );
    assert_eq!(got.len(), 8, "every request kept");
    let (first, rest) = got.split_at(3);
    for e in first {
        assert!(e.flags.gap, "{e:?}");
        assert_eq!(e.status, None, "no response invented: {e:?}");
        assert!(
            e.error_detail.as_deref().unwrap().contains("server stream"),
            "{e:?}"
        );
    }
    for e in rest {
        assert!(!e.flags.gap && e.status.is_some(), "{e:?}");
    }
}

/// gRPC from grpcio (`fixtures/grpc/`): each call one exchange whose messages are split out of
/// the bodies (a gzip-compressed one decompressed), with `grpc-status` and `grpc-message`, as
/// tshark's gRPC dissector counts them (`grpc.tsv`).
#[test]
fn grpc_calls_are_split_into_their_messages_and_statuses() {
    let dir = fixtures().join("grpc");
    let got = capture(&dir.join("grpc.pcap"));
    let text = std::fs::read_to_string(dir.join("grpc.tsv")).unwrap();
    let want: Vec<(u32, String, Option<i32>, usize, usize)> = text
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            (
                f[0].parse().unwrap(),
                f[1].to_owned(),
                f[2].parse().ok(),
                f[3].parse().unwrap(),
                f[4].parse().unwrap(),
            )
        })
        .collect();
    assert_eq!(want.len(), 4, "the oracle");
    let ours: Vec<(u32, String, Option<i32>, usize, usize)> = got
        .iter()
        .map(|e| {
            let g = e.grpc.as_ref().expect("a gRPC call");
            (
                e.stream_id.unwrap(),
                e.path.to_string(),
                g.status,
                g.request_messages.len(),
                g.response_messages.len(),
            )
        })
        .collect();
    assert_eq!(ours, want);
    let grpc = |i: usize| got[i].grpc.as_ref().unwrap();
    assert_eq!(grpc(0).request_messages, [b"\x08\x07".to_vec()]);
    assert_eq!(
        grpc(0).response_messages,
        [b"\x0a\x05apple\x08\x07".to_vec()]
    );
    // Sent compressed (gzip): the message as the application sent it.
    assert_eq!(grpc(1).request_messages, [b"\x08\x09".repeat(50)]);
    assert_eq!(grpc(2).message.as_deref(), Some("no item: 42 (gone)"));
    assert_eq!(got[2].status, Some(200), "gRPC errors ride on HTTP 200");
    assert_eq!(
        grpc(3).response_messages,
        [
            b"\x0a\x05apple".to_vec(),
            b"\x0a\x04pear".to_vec(),
            b"\x0a\x04plum".to_vec()
        ]
    );
}

//! Property tests: a conversation cut into segments that are shuffled, duplicated and
//! overlapped, with sequence numbers that wrap, gives back exactly the exchanges sent.

use std::net::IpAddr;

use proptest::prelude::*;

use super::*;
use crate::decode::TcpSegment;

#[derive(Debug, Clone)]
struct Msg {
    method: &'static str,
    path: String,
    req_body: Vec<u8>,
    req_chunked: bool,
    status: u16,
    resp_body: Vec<u8>,
    resp_chunked: bool,
}

fn chunked(body: &[u8], sizes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(sizes.max(1)) {
        out.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    out
}

fn encode(msgs: &[Msg]) -> (Vec<u8>, Vec<u8>, Vec<(usize, usize)>) {
    let (mut client, mut server, mut ends) = (Vec::new(), Vec::new(), Vec::new());
    for m in msgs {
        client.extend_from_slice(
            format!("{} {} HTTP/1.1\r\nHost: example\r\n", m.method, m.path).as_bytes(),
        );
        if m.req_chunked {
            client.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            client.extend_from_slice(&chunked(&m.req_body, 7));
        } else if !m.req_body.is_empty() {
            client.extend_from_slice(
                format!("Content-Length: {}\r\n\r\n", m.req_body.len()).as_bytes(),
            );
            client.extend_from_slice(&m.req_body);
        } else {
            client.extend_from_slice(b"\r\n");
        }
        let no_body = m.method == "HEAD" || m.status == 204 || m.status == 304;
        server.extend_from_slice(format!("HTTP/1.1 {} X\r\n", m.status).as_bytes());
        if m.resp_chunked && !no_body {
            server.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            server.extend_from_slice(&chunked(&m.resp_body, 13));
        } else {
            // HEAD responses announce the length of the body they do not carry.
            server.extend_from_slice(
                format!("Content-Length: {}\r\n\r\n", m.resp_body.len()).as_bytes(),
            );
            if !no_body {
                server.extend_from_slice(&m.resp_body);
            }
        }
        ends.push((client.len(), server.len()));
    }
    (client, server, ends)
}

fn msg_strategy() -> impl Strategy<Value = Msg> {
    (
        prop::sample::select(vec!["GET", "POST", "PUT", "HEAD"]),
        "[a-z0-9]{1,12}",
        prop::collection::vec(any::<u8>(), 0..600),
        any::<bool>(),
        prop::sample::select(vec![200u16, 201, 204, 304, 404, 500]),
        prop::collection::vec(any::<u8>(), 0..2000),
        any::<bool>(),
    )
        .prop_map(
            |(method, path, req_body, req_chunked, status, resp_body, resp_chunked)| {
                let no_req_body = method == "GET" || method == "HEAD";
                let no_resp_body = method == "HEAD" || status == 204 || status == 304;
                Msg {
                    method,
                    path: format!("/{path}"),
                    req_body: if no_req_body { Vec::new() } else { req_body },
                    req_chunked: req_chunked && !no_req_body,
                    status,
                    resp_body: if no_resp_body { Vec::new() } else { resp_body },
                    resp_chunked,
                }
            },
        )
}

struct Seg {
    dir: usize,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    data: Vec<u8>,
}

const CLIENT: (IpAddr, u16) = (IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 50000);
const SERVER: (IpAddr, u16) = (IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)), 80);

fn feed(table: &mut FlowTable, segs: &[Seg]) {
    for (i, s) in segs.iter().enumerate() {
        let (src, dst) = if s.dir == 0 {
            (CLIENT, SERVER)
        } else {
            (SERVER, CLIENT)
        };
        let seg = TcpSegment {
            src: src.0,
            dst: dst.0,
            src_port: src.1,
            dst_port: dst.1,
            seq: s.seq,
            ack: s.ack,
            syn: s.syn,
            fin: s.fin,
            rst: false,
            payload: &s.data,
        };
        table.on_segment(1_000_000 + i as i64, &seg);
    }
}

/// Cuts `stream` at `cuts` into segments of direction `dir`; segment `k` carries the ACK of the
/// peer stream at the end of the message it belongs to (as a real peer would have sent).
fn cut(dir: usize, isn: u32, stream: &[u8], cuts: &[usize]) -> Vec<Seg> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    points.push(0);
    points.push(stream.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| Seg {
            dir,
            seq: isn.wrapping_add(1).wrapping_add(w[0] as u32),
            ack: None,
            syn: false,
            fin: false,
            data: stream[w[0]..w[1]].to_vec(),
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn shuffled_duplicated_overlapping_segments_give_the_same_exchanges(
        msgs in prop::collection::vec(msg_strategy(), 1..8),
        client_cuts in prop::collection::vec(any::<usize>(), 0..24),
        server_cuts in prop::collection::vec(any::<usize>(), 0..24),
        client_isn in prop_oneof![Just(u32::MAX - 40), any::<u32>()],
        server_isn in prop_oneof![Just(u32::MAX - 700), any::<u32>()],
        order in any::<u64>(),
        dups in prop::collection::vec((any::<bool>(), any::<usize>(), any::<usize>()), 0..10),
    ) {
        let (client, server, _) = encode(&msgs);
        let mut segs = cut(0, client_isn, &client, &client_cuts);
        segs.extend(cut(1, server_isn, &server, &server_cuts));
        // Retransmissions and overlapping re-sends of arbitrary byte ranges.
        for (dir_is_client, a, b) in dups {
            let (stream, isn, dir) = if dir_is_client { (&client, client_isn, 0) } else { (&server, server_isn, 1) };
            let (x, y) = (a % (stream.len() + 1), b % (stream.len() + 1));
            let (x, y) = (x.min(y), x.max(y));
            if x < y {
                segs.push(Seg { dir, seq: isn.wrapping_add(1).wrapping_add(x as u32), ack: None, syn: false, fin: false, data: stream[x..y].to_vec() });
            }
        }
        // FINs anywhere in the order.
        segs.push(Seg { dir: 0, seq: client_isn.wrapping_add(1).wrapping_add(client.len() as u32), ack: None, syn: false, fin: true, data: vec![] });
        segs.push(Seg { dir: 1, seq: server_isn.wrapping_add(1).wrapping_add(server.len() as u32), ack: None, syn: false, fin: true, data: vec![] });
        // Deterministic shuffle from `order`.
        let mut state = order | 1;
        for i in (1..segs.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            segs.swap(i, (state % (i as u64 + 1)) as usize);
        }
        let mut all = vec![
            Seg { dir: 0, seq: client_isn, ack: None, syn: true, fin: false, data: vec![] },
            Seg { dir: 1, seq: server_isn, ack: Some(client_isn.wrapping_add(1)), syn: true, fin: false, data: vec![] },
        ];
        all.extend(segs);

        let mut table = FlowTable::new(ReassemblyConfig::default(), "prop");
        feed(&mut table, &all);
        table.finish();
        let got = table.take_exchanges();
        prop_assert_eq!(got.len(), msgs.len());
        for (g, m) in got.iter().zip(&msgs) {
            prop_assert_eq!(&g.method, m.method);
            prop_assert_eq!(&g.path, &m.path);
            prop_assert_eq!(g.status, Some(m.status));
            prop_assert_eq!(&g.request_body.raw, &m.req_body);
            prop_assert_eq!(&g.response_body.raw, &m.resp_body);
            prop_assert!(!g.flags.gap && !g.flags.incomplete && !g.flags.parse_error && !g.flags.no_response, "{:?}", g.flags);
            if m.resp_chunked && !m.resp_body.is_empty() || (m.resp_chunked && m.method != "HEAD" && m.status != 204 && m.status != 304) {
                prop_assert_eq!(g.response_trailers.len(), 1);
            }
        }
        prop_assert_eq!(table.stats().gaps, 0);
    }

    #[test]
    fn a_lost_segment_flags_only_its_exchange(
        msgs in prop::collection::vec(msg_strategy(), 2..6),
        victim in any::<usize>(),
    ) {
        // Lose a run of bytes strictly inside one response body of known length: that exchange
        // is flagged and every other exchange is intact.
        let msgs: Vec<Msg> = msgs.into_iter().map(|mut m| { m.resp_chunked = false; m }).collect();
        let (client, server, ends) = encode(&msgs);
        let with_body: Vec<usize> = (0..msgs.len()).filter(|&i| msgs[i].resp_body.len() > 10).collect();
        prop_assume!(!with_body.is_empty());
        let k = with_body[victim % with_body.len()];
        let body_end = ends[k].1;
        let (lost_from, lost_to) = (body_end - msgs[k].resp_body.len() + 3, body_end - 2);
        let mut segs = vec![
            Seg { dir: 0, seq: 100, ack: None, syn: true, fin: false, data: vec![] },
            Seg { dir: 1, seq: 5000, ack: Some(101), syn: true, fin: false, data: vec![] },
        ];
        segs.extend(cut(0, 100, &client, &[]));
        segs.push(Seg { dir: 1, seq: 5001, ack: None, syn: false, fin: false, data: server[..lost_from].to_vec() });
        segs.push(Seg { dir: 1, seq: 5001 + lost_to as u32, ack: None, syn: false, fin: false, data: server[lost_to..].to_vec() });
        let mut table = FlowTable::new(ReassemblyConfig::default(), "prop");
        feed(&mut table, &segs);
        table.finish();
        let got = table.take_exchanges();
        prop_assert_eq!(got.len(), msgs.len());
        for (i, (g, m)) in got.iter().zip(&msgs).enumerate() {
            prop_assert_eq!(g.status, Some(m.status));
            prop_assert_eq!(&g.path, &m.path);
            if i == k {
                prop_assert!(g.flags.gap);
                prop_assert_eq!(g.response_body.len, m.resp_body.len() as u64);
            } else {
                prop_assert!(!g.flags.gap, "exchange {} flagged", i);
                prop_assert_eq!(&g.response_body.raw, &m.resp_body);
            }
        }
    }
}

#[test]
fn mid_stream_capture_starts_at_next_message() {
    // No handshake: the capture starts inside a response body; the next exchange is whole.
    let msgs = vec![
        Msg {
            method: "GET",
            path: "/a".into(),
            req_body: vec![],
            req_chunked: false,
            status: 200,
            resp_body: b"first body!".to_vec(),
            resp_chunked: false,
        },
        Msg {
            method: "GET",
            path: "/b".into(),
            req_body: vec![],
            req_chunked: false,
            status: 404,
            resp_body: b"nope".to_vec(),
            resp_chunked: false,
        },
    ];
    let (client, server, ends) = encode(&msgs);
    let (c0, s0) = ends[0];
    let segs = vec![
        Seg {
            dir: 1,
            seq: 9000 + s0 as u32 - 4,
            ack: Some(700 + c0 as u32),
            syn: false,
            fin: false,
            data: server[s0 - 4..s0].to_vec(),
        },
        Seg {
            dir: 0,
            seq: 700 + c0 as u32,
            ack: Some(9000 + s0 as u32),
            syn: false,
            fin: false,
            data: client[c0..].to_vec(),
        },
        Seg {
            dir: 1,
            seq: 9000 + s0 as u32,
            ack: Some(700 + client.len() as u32),
            syn: false,
            fin: false,
            data: server[s0..].to_vec(),
        },
    ];
    let mut table = FlowTable::new(ReassemblyConfig::default(), "t");
    feed(&mut table, &segs);
    table.finish();
    let got = table.take_exchanges();
    eprintln!("{:?}", table.stats());
    assert_eq!(got.len(), 1, "{got:#?}");
    assert_eq!((got[0].path.as_str(), got[0].status), ("/b", Some(404)));
    assert_eq!(
        got[0].client_port, CLIENT.1,
        "client detected from content, not ports"
    );
}

#[test]
fn buffer_cap_forces_gap_and_counts_it() {
    let cfg = ReassemblyConfig {
        max_buffered_per_direction: 1000,
        ..ReassemblyConfig::default()
    };
    let mut table = FlowTable::new(cfg, "t");
    let body = vec![b'x'; 5000];
    let mut req = b"POST /u HTTP/1.1\r\nContent-Length: 5000\r\n\r\n".to_vec();
    req.extend_from_slice(&body);
    let hole_at = 100;
    let mut segs = vec![Seg {
        dir: 0,
        seq: 1,
        ack: None,
        syn: true,
        fin: false,
        data: vec![],
    }];
    segs.push(Seg {
        dir: 0,
        seq: 2,
        ack: None,
        syn: false,
        fin: false,
        data: req[..hole_at].to_vec(),
    });
    for (i, c) in req[hole_at + 50..].chunks(400).enumerate() {
        segs.push(Seg {
            dir: 0,
            seq: 2 + (hole_at + 50 + i * 400) as u32,
            ack: None,
            syn: false,
            fin: false,
            data: c.to_vec(),
        });
    }
    feed(&mut table, &segs);
    table.finish();
    assert_eq!(table.stats().gaps_forced_by_buffer_cap, 1);
    let got = table.take_exchanges();
    assert_eq!(got.len(), 1);
    assert!(got[0].flags.gap && got[0].flags.no_response);
    assert_eq!(got[0].request_body.len, 5000);
    assert_eq!(got[0].request_body.raw.len(), 5000 - 50);
}

#[test]
fn flow_cap_evicts_oldest_and_counts() {
    let cfg = ReassemblyConfig {
        max_flows: 4,
        ..ReassemblyConfig::default()
    };
    let mut table = FlowTable::new(cfg, "t");
    for port in 0..10u16 {
        let seg = TcpSegment {
            src: CLIENT.0,
            dst: SERVER.0,
            src_port: 40000 + port,
            dst_port: 80,
            seq: 1,
            ack: None,
            syn: false,
            fin: false,
            rst: false,
            payload: b"GET / HTTP/1.1\r\n\r\n",
        };
        table.on_segment(i64::from(port), &seg);
    }
    assert!(table.open_flows() <= 4);
    assert!(table.stats().flows_evicted_by_cap >= 6);
    table.finish();
    let got = table.take_exchanges();
    assert_eq!(got.len(), 10, "evicted flows still write their requests");
    assert!(got.iter().all(|e| e.flags.no_response));
}

#[test]
fn idle_flows_are_closed_on_capture_time() {
    let cfg = ReassemblyConfig {
        idle_timeout_us: 10_000_000,
        ..ReassemblyConfig::default()
    };
    let mut table = FlowTable::new(cfg, "t");
    let seg = |port: u16, payload: &'static [u8]| TcpSegment {
        src: CLIENT.0,
        dst: SERVER.0,
        src_port: port,
        dst_port: 80,
        seq: 1,
        ack: None,
        syn: false,
        fin: false,
        rst: false,
        payload,
    };
    table.on_segment(0, &seg(40001, b"GET /idle HTTP/1.1\r\n\r\n"));
    table.on_segment(60_000_000, &seg(40002, b"GET /later HTTP/1.1\r\n\r\n"));
    assert_eq!(table.stats().flows_idle_closed, 1);
    assert_eq!(table.open_flows(), 1);
    let got = table.take_exchanges();
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].path.as_str(), got[0].flags.no_response),
        ("/idle", true)
    );
}

#[test]
fn overlapping_segments_keep_the_first_copy() {
    // Bytes 20..30 arrive twice with different content, both times ahead of a hole: the first
    // copy wins, whatever arrives later (an overlap attack or a corrupted retransmission).
    let req = b"POST /o HTTP/1.1\r\nContent-Length: 20\r\n\r\n".to_vec();
    let h = req.len() as u32;
    let mut table = FlowTable::new(ReassemblyConfig::default(), "t");
    let mut segs = vec![Seg {
        dir: 0,
        seq: 99,
        ack: None,
        syn: true,
        fin: false,
        data: vec![],
    }];
    segs.push(Seg {
        dir: 0,
        seq: 100 + h + 10,
        ack: None,
        syn: false,
        fin: false,
        data: b"FIRSTFIRST".to_vec(),
    });
    segs.push(Seg {
        dir: 0,
        seq: 100 + h + 5,
        ack: None,
        syn: false,
        fin: false,
        data: b"xxxxxSECONDSECOND".to_vec(),
    });
    segs.push(Seg {
        dir: 0,
        seq: 100,
        ack: None,
        syn: false,
        fin: false,
        data: [req.clone(), b"aaaaaaaaaa".to_vec()].concat(),
    });
    segs.push(Seg {
        dir: 0,
        seq: 100 + h + 3,
        ack: None,
        syn: false,
        fin: false,
        data: b"zzzzzzzzzzzzzzzzz".to_vec(),
    });
    feed(&mut table, &segs);
    table.finish();
    let got = table.take_exchanges();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].request_body.raw, b"aaaaaaaaaaFIRSTFIRST");
    assert!(!got[0].flags.gap);
}

#[test]
fn reset_ends_the_flow_and_flags_the_exchange() {
    let mut table = FlowTable::new(ReassemblyConfig::default(), "t");
    let req = b"GET /r HTTP/1.1\r\n\r\n".to_vec();
    let segs = vec![
        Seg {
            dir: 0,
            seq: 10,
            ack: None,
            syn: true,
            fin: false,
            data: vec![],
        },
        Seg {
            dir: 1,
            seq: 500,
            ack: Some(11),
            syn: true,
            fin: false,
            data: vec![],
        },
        Seg {
            dir: 0,
            seq: 11,
            ack: Some(501),
            syn: false,
            fin: false,
            data: req.clone(),
        },
        Seg {
            dir: 1,
            seq: 501,
            ack: Some(11 + req.len() as u32),
            syn: false,
            fin: false,
            data: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart".to_vec(),
        },
    ];
    feed(&mut table, &segs);
    let rst = TcpSegment {
        src: SERVER.0,
        dst: CLIENT.0,
        src_port: SERVER.1,
        dst_port: CLIENT.1,
        seq: 600,
        ack: None,
        syn: false,
        fin: false,
        rst: true,
        payload: &[],
    };
    table.on_segment(9_000_000, &rst);
    assert_eq!(table.open_flows(), 0, "a reset closes the flow at once");
    let got = table.take_exchanges();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].status, Some(200));
    assert!(got[0].flags.incomplete);
    assert_eq!(got[0].response_body.raw, b"part");
}

/// Many concurrent large uploads under a small memory budget: the open flows never hold more
/// than the budget plus one check interval, the largest are cut first, and every upload is
/// still written (the cut ones flagged incomplete), none silently lost.
#[test]
fn concurrent_large_uploads_stay_within_the_memory_budget() {
    let budget: u64 = 8 << 20;
    let config = ReassemblyConfig {
        max_memory: budget,
        ..ReassemblyConfig::default()
    };
    let mut table = FlowTable::new(config.clone(), "budget");
    let (client, server): (IpAddr, IpAddr) =
        ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
    let uploads = 48usize;
    let body_len = 1usize << 20;
    fn seg(
        client: IpAddr,
        server: IpAddr,
        port: u16,
        seq: u32,
        syn: bool,
        payload: &[u8],
    ) -> TcpSegment<'_> {
        TcpSegment {
            src: client,
            dst: server,
            src_port: port,
            dst_port: 80,
            seq,
            ack: (!syn).then_some(1),
            syn,
            fin: false,
            rst: false,
            payload,
        }
    }
    let heads: Vec<Vec<u8>> = (0..uploads)
        .map(|i| {
            format!("POST /upload/{i} HTTP/1.1\r\nHost: h\r\nContent-Length: {body_len}\r\n\r\n")
                .into_bytes()
        })
        .collect();
    let mut next: Vec<u32> = vec![1; uploads];
    for (i, h) in heads.iter().enumerate() {
        let port = 20_000 + i as u16;
        table.on_segment(0, &seg(client, server, port, 0, true, &[]));
        table.on_segment(1, &seg(client, server, port, 1, false, h));
        next[i] = 1 + h.len() as u32;
    }
    // The bodies interleaved, 1,400 bytes at a time: every upload is open at once.
    let chunk = vec![b'u'; 1400];
    let mut sent = vec![0usize; uploads];
    let mut peak = 0u64;
    let mut ts = 2;
    while sent.iter().any(|&s| s < body_len) {
        for i in 0..uploads {
            let n = chunk.len().min(body_len - sent[i]);
            if n == 0 {
                continue;
            }
            table.on_segment(
                ts,
                &seg(
                    client,
                    server,
                    20_000 + i as u16,
                    next[i],
                    false,
                    &chunk[..n],
                ),
            );
            next[i] = next[i].wrapping_add(n as u32);
            sent[i] += n;
            ts += 1;
        }
        peak = peak.max(table.buffered_bytes());
    }
    table.finish();
    let rows = table.take_exchanges();
    let stats = table.stats();
    assert!(
        peak <= budget + config.memory_check() + (64 << 10),
        "open flows held {peak} bytes under a budget of {budget}"
    );
    assert!(
        stats.flows_cut_by_memory > 0,
        "the budget never bit: {stats:?}"
    );
    // Every upload has a row: whole, or cut and flagged (its later bytes make a flow of their
    // own that is not HTTP from its first byte, counted as such).
    let paths: std::collections::BTreeSet<String> =
        rows.iter().map(|r| r.path.to_string()).collect();
    assert_eq!(paths.len(), uploads, "{paths:?}");
    let cut = rows.iter().filter(|r| r.flags.incomplete).count() as u64;
    assert!(
        cut >= stats.flows_cut_by_memory.min(uploads as u64) / 2,
        "{cut} incomplete rows, {stats:?}"
    );
}

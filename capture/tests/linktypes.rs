//! Every supported link type, IPv4 and IPv6, and IPv4 fragments: a small conversation is built
//! packet by packet with etherparse, written as a real pcap file, read back through libpcap.

use std::path::{Path, PathBuf};

use etherparse::{IpNumber, Ipv4Header, PacketBuilder, TcpHeader};

use crate::common::capture;

const CLIENT4: [u8; 4] = [192, 0, 2, 10];
const SERVER4: [u8; 4] = [192, 0, 2, 20];
const CLIENT6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
const SERVER6: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20,
];

fn write_pcap(path: &Path, dlt: u32, frames: &[Vec<u8>]) {
    let mut out = Vec::new();
    {
        let v = 0xa1b2_c3d4u32;
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(&262_144u32.to_le_bytes());
    out.extend_from_slice(&dlt.to_le_bytes());
    for (i, f) in frames.iter().enumerate() {
        out.extend_from_slice(&(1_700_000_000u32 + i as u32).to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(&(f.len() as u32).to_le_bytes());
        out.extend_from_slice(f);
    }
    std::fs::write(path, out).unwrap();
}

/// IP packets (no link header) of one conversation: handshake, a POST, a response, FINs.
fn conversation(v6: bool) -> Vec<Vec<u8>> {
    let req = b"POST /submit?x=1 HTTP/1.1\r\nHost: example.test\r\nContent-Length: 5\r\n\r\nhello"
        .to_vec();
    let resp = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok".to_vec();
    let (c_isn, s_isn) = (u32::MAX - 3, 7_000u32);
    let mut steps: Vec<(bool, u32, u32, &str, Vec<u8>)> = vec![
        (true, c_isn, 0, "S", vec![]),
        (false, s_isn, c_isn.wrapping_add(1), "SA", vec![]),
        (true, c_isn.wrapping_add(1), s_isn + 1, "A", vec![]),
    ];
    steps.push((true, c_isn.wrapping_add(1), s_isn + 1, "PA", req.clone()));
    let c_end = c_isn.wrapping_add(1).wrapping_add(req.len() as u32);
    steps.push((false, s_isn + 1, c_end, "PA", resp.clone()));
    steps.push((true, c_end, s_isn + 1 + resp.len() as u32, "FA", vec![]));
    steps.push((
        false,
        s_isn + 1 + resp.len() as u32,
        c_end.wrapping_add(1),
        "FA",
        vec![],
    ));
    steps
        .into_iter()
        .map(|(from_client, seq, ack, flags, payload)| {
            let b = if v6 {
                let (s, d) = if from_client {
                    (CLIENT6, SERVER6)
                } else {
                    (SERVER6, CLIENT6)
                };
                PacketBuilder::ipv6(s, d, 64)
            } else {
                let (s, d) = if from_client {
                    (CLIENT4, SERVER4)
                } else {
                    (SERVER4, CLIENT4)
                };
                PacketBuilder::ipv4(s, d, 64)
            };
            let (sp, dp) = if from_client {
                (51000, 8080)
            } else {
                (8080, 51000)
            };
            let mut b = b.tcp(sp, dp, seq, 65535);
            if flags.contains('S') {
                b = b.syn();
            }
            if flags.contains('A') {
                b = b.ack(ack);
            }
            if flags.contains('P') {
                b = b.psh();
            }
            if flags.contains('F') {
                b = b.fin();
            }
            let mut out = Vec::new();
            b.write(&mut out, &payload).unwrap();
            out
        })
        .collect()
}

fn check(path: PathBuf, v6: bool) {
    let (_d, summary, rows) = capture(std::slice::from_ref(&path));
    assert_eq!(rows.len(), 1, "{}: {summary:#?}", path.display());
    let r = &rows[0];
    assert_eq!(
        (
            r.method.as_str(),
            r.path.as_str(),
            r.query.as_deref(),
            r.status
        ),
        ("POST", "/submit", Some("x=1"), Some(201))
    );
    assert_eq!(r.request_body, b"hello");
    assert_eq!(r.response_body, b"ok");
    assert!(!r.gap && !r.incomplete && !r.no_response);
    assert_eq!(r.client_port, 51000);
    let _ = v6;
}

#[test]
fn every_link_type_decodes() {
    let dir = tempfile::tempdir().unwrap();
    for v6 in [false, true] {
        let ip = conversation(v6);
        let ethertype: u16 = if v6 { 0x86dd } else { 0x0800 };
        let name = |n: &str| {
            dir.path()
                .join(format!("{n}-{}.pcap", if v6 { "v6" } else { "v4" }))
        };
        // Ethernet with an 802.1ad outer and 802.1Q inner tag (QinQ).
        let eth: Vec<Vec<u8>> = ip
            .iter()
            .map(|p| {
                let mut f = vec![
                    2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xa8, 0x00, 0x64, 0x81, 0x00, 0x00,
                    0xc8,
                ];
                f.extend_from_slice(&ethertype.to_be_bytes());
                f.extend_from_slice(p);
                f
            })
            .collect();
        write_pcap(&name("ethernet-qinq"), 1, &eth);
        check(name("ethernet-qinq"), v6);
        // Linux cooked v1.
        let sll: Vec<Vec<u8>> = ip
            .iter()
            .map(|p| {
                let mut f = vec![0, 0, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0];
                f.extend_from_slice(&ethertype.to_be_bytes());
                f.extend_from_slice(p);
                f
            })
            .collect();
        write_pcap(&name("sll"), 113, &sll);
        check(name("sll"), v6);
        // Linux cooked v2 (what `tcpdump -i any` writes).
        let sll2: Vec<Vec<u8>> = ip
            .iter()
            .map(|p| {
                let mut f = ethertype.to_be_bytes().to_vec();
                f.extend_from_slice(&[0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
                f.extend_from_slice(p);
                f
            })
            .collect();
        write_pcap(&name("sll2"), 276, &sll2);
        check(name("sll2"), v6);
        // Raw IP.
        write_pcap(&name("raw"), 101, &ip);
        check(name("raw"), v6);
        // BSD null (host byte order family) and OpenBSD loop (network byte order).
        let fam: u32 = if v6 { 30 } else { 2 };
        let null: Vec<Vec<u8>> = ip
            .iter()
            .map(|p| [fam.to_le_bytes().to_vec(), p.clone()].concat())
            .collect();
        write_pcap(&name("null"), 0, &null);
        check(name("null"), v6);
        let lp: Vec<Vec<u8>> = ip
            .iter()
            .map(|p| [fam.to_be_bytes().to_vec(), p.clone()].concat())
            .collect();
        write_pcap(&name("loop"), 108, &lp);
        check(name("loop"), v6);
    }
}

#[test]
fn ipv4_fragments_are_reassembled() {
    let dir = tempfile::tempdir().unwrap();
    let mut ip = conversation(false);
    // Cut the request packet (index 3) into three fragments, sent in reverse order.
    let whole = ip.remove(3);
    let header = Ipv4Header::from_slice(&whole).unwrap().0;
    let payload = &whole[header.header_len()..];
    assert!(TcpHeader::from_slice(payload).is_ok());
    let cut = [0usize, 32, 64, payload.len()];
    let mut frags = Vec::new();
    for w in cut.windows(2) {
        let mut h =
            Ipv4Header::new((w[1] - w[0]) as u16, 64, IpNumber::TCP, CLIENT4, SERVER4).unwrap();
        h.identification = 4242;
        h.more_fragments = w[1] != payload.len();
        h.fragment_offset = etherparse::IpFragOffset::try_new((w[0] / 8) as u16).unwrap();
        let mut f = Vec::new();
        h.write(&mut f).unwrap();
        f.extend_from_slice(&payload[w[0]..w[1]]);
        frags.push(f);
    }
    frags.reverse();
    for (i, f) in frags.into_iter().enumerate() {
        ip.insert(3 + i, f);
    }
    let path = dir.path().join("frag.pcap");
    write_pcap(&path, 101, &ip);
    let (_d, summary, rows) = capture(std::slice::from_ref(&path));
    assert_eq!(summary.ip_fragments_reassembled, 1);
    check(path, false);
    assert_eq!(rows.len(), 1);
}

#[test]
fn vxlan_mirrored_traffic_yields_the_inner_exchange() {
    // As AWS VPC Traffic Mirroring delivers it: outer Ethernet/IPv4/UDP 4789, VXLAN header,
    // then the mirrored Ethernet frame.
    let dir = tempfile::tempdir().unwrap();
    let frames: Vec<Vec<u8>> = conversation(false)
        .into_iter()
        .map(|ip| {
            let mut vx = vec![0x08, 0, 0, 0, 0, 0x12, 0x34, 0];
            vx.extend_from_slice(&[2, 0, 0, 0, 0, 9, 2, 0, 0, 0, 0, 8, 0x08, 0x00]);
            vx.extend_from_slice(&ip);
            let mut outer = Vec::new();
            PacketBuilder::ethernet2([1; 6], [2; 6])
                .ipv4([10, 99, 0, 1], [10, 99, 0, 2], 64)
                .udp(49152, 4789)
                .write(&mut outer, &vx)
                .unwrap();
            outer
        })
        .collect();
    let path = dir.path().join("vxlan.pcap");
    write_pcap(&path, 1, &frames);
    let (_d, summary, _rows) = capture(std::slice::from_ref(&path));
    assert_eq!(summary.decapsulated_packets, frames.len() as u64);
    check(path, false);
}

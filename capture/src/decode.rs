//! Packet decoding: link layer → IP (with fragment reassembly) → TCP segment.
//!
//! Stateless per packet except for IP fragments, which are held in a bounded table until
//! complete. Link headers etherparse does not know (SLL2, BSD null/loop) are stripped here and
//! the rest is handed to etherparse.

use std::collections::HashMap;
use std::net::IpAddr;

use etherparse::defrag::IpDefragBuf;
use etherparse::{EtherType, IpNumber, NetSlice, SlicedPacket, TcpSlice, TransportSlice};

/// Link-layer framing of the packets in a capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// Ethernet II, with 802.1Q / 802.1ad (QinQ) tags.
    Ethernet,
    /// Linux cooked capture v1.
    LinuxSll,
    /// Linux cooked capture v2.
    LinuxSll2,
    /// Raw IPv4 or IPv6, no link header.
    RawIp,
    /// BSD loopback / null: a 4-byte address family, then IP.
    Null,
}

impl LinkType {
    /// Maps a libpcap DLT value; `None` for link types shadowtap does not decode.
    pub fn from_dlt(dlt: i32) -> Option<Self> {
        match dlt {
            1 => Some(LinkType::Ethernet),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            0 | 108 => Some(LinkType::Null),
            _ => None,
        }
    }
}

/// A TCP segment with its addresses.
#[derive(Debug, Clone, Copy)]
pub struct TcpSegment<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgment number, when the ACK flag is set.
    pub ack: Option<u32>,
    /// SYN flag.
    pub syn: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// Segment payload.
    pub payload: &'a [u8],
}

/// What became of one packet.
#[derive(Debug)]
pub enum Decoded<'a> {
    /// A TCP segment (possibly rebuilt from IP fragments).
    Tcp(TcpSegment<'a>),
    /// A UDP datagram (skipped by HTTP/1.x capture).
    Udp,
    /// IP carrying neither TCP nor UDP (ICMP, …), or a non-IP frame (ARP, LLDP, …).
    Other,
    /// An IP fragment held until its packet is complete.
    FragmentHeld,
    /// The packet could not be decoded.
    Malformed(String),
}

/// Limits and counters of the fragment table.
#[derive(Debug, Clone, Copy, Default)]
pub struct FragmentStats {
    /// Packets rebuilt from fragments.
    pub reassembled: u64,
    /// Fragmented packets dropped (table full, timed out, or inconsistent fragments).
    pub dropped: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FragKey {
    src: IpAddr,
    dst: IpAddr,
    id: u32,
    proto: u8,
}

struct FragEntry {
    buf: IpDefragBuf,
    last_us: i64,
}

/// Decodes packets of one link type.
pub struct Decoder {
    link: LinkType,
    frags: HashMap<FragKey, FragEntry>,
    /// Storage for the most recently rebuilt packet, which the returned segment borrows.
    rebuilt: Vec<u8>,
    max_fragmented: usize,
    fragment_timeout_us: i64,
    stats: FragmentStats,
    decapsulated: u64,
}

impl Decoder {
    /// A decoder for `link`, holding at most 4096 fragmented packets for at most 30 s each.
    pub fn new(link: LinkType) -> Self {
        Decoder {
            link,
            frags: HashMap::new(),
            rebuilt: Vec::new(),
            max_fragmented: 4096,
            fragment_timeout_us: 30_000_000,
            stats: FragmentStats::default(),
            decapsulated: 0,
        }
    }

    /// Fragment counters.
    pub fn fragment_stats(&self) -> FragmentStats {
        FragmentStats {
            dropped: self.stats.dropped + self.frags.len() as u64,
            ..self.stats
        }
    }

    /// Decodes one packet captured at `ts_us`.
    pub fn decode<'a>(&'a mut self, ts_us: i64, data: &'a [u8]) -> Decoded<'a> {
        let link = self.link;
        self.decode_link(link, ts_us, data, 0)
    }

    fn decode_link<'a>(
        &'a mut self,
        link: LinkType,
        ts_us: i64,
        data: &'a [u8],
        depth: u8,
    ) -> Decoded<'a> {
        let sliced = match link {
            LinkType::Ethernet => SlicedPacket::from_ethernet(data),
            LinkType::LinuxSll => SlicedPacket::from_linux_sll(data),
            LinkType::LinuxSll2 => {
                if data.len() < 20 {
                    return Decoded::Malformed(format!(
                        "SLL2 header needs 20 bytes, packet has {}",
                        data.len()
                    ));
                }
                let proto = u16::from_be_bytes([data[0], data[1]]);
                SlicedPacket::from_ether_type(EtherType(proto), &data[20..])
            }
            LinkType::RawIp => SlicedPacket::from_ip(data),
            LinkType::Null => {
                if data.len() < 4 {
                    return Decoded::Malformed(format!(
                        "null/loop header needs 4 bytes, packet has {}",
                        data.len()
                    ));
                }
                // The family is in the capturing host's byte order and its IPv6 value differs
                // between BSDs; the IP version nibble that follows is unambiguous.
                SlicedPacket::from_ip(&data[4..])
            }
        };
        let sliced = match sliced {
            Ok(s) => s,
            Err(e) => return Decoded::Malformed(e.to_string()),
        };
        let Some(net) = &sliced.net else {
            return Decoded::Other;
        };
        let (src, dst, payload) = match net {
            NetSlice::Ipv4(v4) => (
                IpAddr::from(v4.header().source()),
                IpAddr::from(v4.header().destination()),
                v4.payload(),
            ),
            NetSlice::Ipv6(v6) => (
                IpAddr::from(v6.header().source()),
                IpAddr::from(v6.header().destination()),
                v6.payload(),
            ),
            NetSlice::Arp(_) => return Decoded::Other,
        };
        if payload.fragmented {
            return self.add_fragment(ts_us, &sliced, src, dst);
        }
        // Mirrored traffic arrives encapsulated: decode the inner packet instead.
        if depth < MAX_ENCAPSULATION {
            let inner = match &sliced.transport {
                Some(TransportSlice::Udp(udp)) if udp.destination_port() == VXLAN_PORT => {
                    vxlan_inner(udp.payload())
                }
                None if payload.ip_number == IpNumber::GRE => gre_inner(payload.payload),
                _ => None,
            };
            match inner {
                Some(Ok((link, bytes))) => {
                    self.decapsulated += 1;
                    return self.decode_link(link, ts_us, bytes, depth + 1);
                }
                Some(Err(why)) => return Decoded::Malformed(why),
                None => {}
            }
        }
        match sliced.transport {
            Some(TransportSlice::Tcp(tcp)) => Decoded::Tcp(segment(src, dst, &tcp)),
            Some(TransportSlice::Udp(_)) => Decoded::Udp,
            _ => Decoded::Other,
        }
    }

    /// Packets whose inner packet was decoded (VXLAN, GRE, ERSPAN).
    pub fn decapsulated(&self) -> u64 {
        self.decapsulated
    }

    fn add_fragment<'a>(
        &'a mut self,
        ts_us: i64,
        sliced: &SlicedPacket<'_>,
        src: IpAddr,
        dst: IpAddr,
    ) -> Decoded<'a> {
        let (id, offset, more, payload) = match &sliced.net {
            Some(NetSlice::Ipv4(v4)) => {
                let h = v4.header();
                (
                    u32::from(h.identification()),
                    h.fragments_offset(),
                    h.more_fragments(),
                    v4.payload(),
                )
            }
            Some(NetSlice::Ipv6(v6)) => {
                let frag = v6
                    .extensions()
                    .clone()
                    .into_iter()
                    .find_map(|ext| match ext {
                        etherparse::Ipv6ExtensionSlice::Fragment(f) => Some(f.to_header()),
                        _ => None,
                    });
                let Some(f) = frag else {
                    return Decoded::Malformed("IPv6 fragment without fragment header".into());
                };
                (
                    f.identification,
                    f.fragment_offset,
                    f.more_fragments,
                    v6.payload(),
                )
            }
            _ => return Decoded::Other,
        };
        self.expire_fragments(ts_us);
        let key = FragKey {
            src,
            dst,
            id,
            proto: payload.ip_number.0,
        };
        if !self.frags.contains_key(&key) && self.frags.len() >= self.max_fragmented {
            self.stats.dropped += 1;
            return Decoded::FragmentHeld;
        }
        let entry = self.frags.entry(key.clone()).or_insert_with(|| FragEntry {
            buf: IpDefragBuf::new(payload.ip_number, Vec::new(), Vec::new()),
            last_us: ts_us,
        });
        entry.last_us = ts_us;
        if let Err(e) = entry.buf.add(offset, more, payload.payload) {
            self.frags.remove(&key);
            self.stats.dropped += 1;
            return Decoded::Malformed(format!("IP fragment: {e}"));
        }
        if !entry.buf.is_complete() {
            return Decoded::FragmentHeld;
        }
        let entry = self.frags.remove(&key).expect("present");
        let proto = entry.buf.ip_number();
        self.rebuilt = entry.buf.take_bufs().0;
        self.stats.reassembled += 1;
        match proto {
            IpNumber::TCP => match TcpSlice::from_slice(&self.rebuilt) {
                Ok(tcp) => Decoded::Tcp(segment(src, dst, &tcp)),
                Err(e) => Decoded::Malformed(format!("TCP in reassembled IP packet: {e}")),
            },
            IpNumber::UDP => Decoded::Udp,
            _ => Decoded::Other,
        }
    }

    fn expire_fragments(&mut self, now_us: i64) {
        let timeout = self.fragment_timeout_us;
        let before = self.frags.len();
        self.frags.retain(|_, e| now_us - e.last_us <= timeout);
        self.stats.dropped += (before - self.frags.len()) as u64;
    }
}

/// UDP port of VXLAN (RFC 7348), as AWS VPC Traffic Mirroring sends it.
pub const VXLAN_PORT: u16 = 4789;
/// Tunnels inside tunnels deeper than this are not followed.
const MAX_ENCAPSULATION: u8 = 4;

type Inner<'a> = Option<Result<(LinkType, &'a [u8]), String>>;

/// The Ethernet frame inside a VXLAN payload (8-byte header with the I flag set).
fn vxlan_inner(p: &[u8]) -> Inner<'_> {
    if p.len() < 8 || p[0] & 0x08 == 0 {
        return None; // not VXLAN after all: leave the datagram as UDP
    }
    Some(Ok((LinkType::Ethernet, &p[8..])))
}

/// The packet inside GRE (RFC 2784/2890): transparent Ethernet bridging, IPv4, IPv6, or
/// ERSPAN type II (0x88BE) and type III (0x22EB), whose headers precede an Ethernet frame.
fn gre_inner(p: &[u8]) -> Inner<'_> {
    if p.len() < 4 {
        return Some(Err("GRE header truncated".into()));
    }
    let flags = p[0];
    if p[1] & 0x07 != 0 {
        return None; // GRE version 1 (PPTP) and others: not mirrored traffic
    }
    let mut off = 4;
    for bit in [0x80u8, 0x20, 0x10] {
        // checksum (+ reserved), key, sequence number: 4 bytes each when present
        if flags & bit != 0 {
            off += 4;
        }
    }
    let proto = u16::from_be_bytes([p[2], p[3]]);
    let need = |n: usize| {
        if p.len() < n {
            Err(format!(
                "GRE/ERSPAN header truncated ({} of {n} bytes)",
                p.len()
            ))
        } else {
            Ok(())
        }
    };
    let r = match proto {
        0x6558 => need(off).map(|()| (LinkType::Ethernet, &p[off..])),
        0x0800 | 0x86dd => need(off).map(|()| (LinkType::RawIp, &p[off..])),
        0x88be => need(off + 8).map(|()| (LinkType::Ethernet, &p[off + 8..])),
        0x22eb => need(off + 12).and_then(|()| {
            // ERSPAN III: 12-byte header, then an 8-byte platform subheader when O is set.
            let o_flag = p[off + 11] & 0x01 != 0;
            let start = off + 12 + if o_flag { 8 } else { 0 };
            need(start).map(|()| (LinkType::Ethernet, &p[start..]))
        }),
        _ => return None,
    };
    Some(r)
}

fn segment<'a>(src: IpAddr, dst: IpAddr, tcp: &TcpSlice<'a>) -> TcpSegment<'a> {
    TcpSegment {
        src,
        dst,
        src_port: tcp.source_port(),
        dst_port: tcp.destination_port(),
        seq: tcp.sequence_number(),
        ack: tcp.ack().then(|| tcp.acknowledgment_number()),
        syn: tcp.syn(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: tcp.payload(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn tcp_packet(payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([1; 6], [2; 6])
            .single_vlan(etherparse::VlanId::try_new(10).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1234, 80, 1000, 65535)
            .ack(5);
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn decodes_vlan_tagged_tcp() {
        let pkt = tcp_packet(b"GET / HTTP/1.1\r\n\r\n");
        let mut d = Decoder::new(LinkType::Ethernet);
        match d.decode(0, &pkt) {
            Decoded::Tcp(s) => {
                assert_eq!(s.dst_port, 80);
                assert_eq!(s.seq, 1000);
                assert_eq!(s.ack, Some(5));
                assert_eq!(s.payload, b"GET / HTTP/1.1\r\n\r\n");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn decodes_sll2_and_null() {
        let mut ip = Vec::new();
        PacketBuilder::ipv6([1; 16], [2; 16], 64)
            .tcp(1, 2, 3, 4)
            .write(&mut ip, b"x")
            .unwrap();
        let mut sll2 = vec![
            0x86, 0xdd, 0, 0, 0, 0, 0, 1, 0, 1, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        sll2.extend_from_slice(&ip);
        assert!(
            matches!(Decoder::new(LinkType::LinuxSll2).decode(0, &sll2), Decoded::Tcp(s) if s.payload == b"x")
        );
        let mut null = vec![30, 0, 0, 0];
        null.extend_from_slice(&ip);
        assert!(
            matches!(Decoder::new(LinkType::Null).decode(0, &null), Decoded::Tcp(s) if s.src_port == 1)
        );
        assert!(matches!(
            Decoder::new(LinkType::Null).decode(0, &[1, 2]),
            Decoded::Malformed(_)
        ));
    }

    fn eth_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([3; 6], [4; 6])
            .ipv4([172, 16, 0, 1], [172, 16, 0, 2], 64)
            .tcp(33333, 8080, 77, 1000)
            .write(&mut f, payload)
            .unwrap();
        f
    }

    fn inner_port(d: Decoded<'_>) -> Option<(u16, Vec<u8>)> {
        match d {
            Decoded::Tcp(s) => Some((s.dst_port, s.payload.to_vec())),
            _ => None,
        }
    }

    #[test]
    fn decapsulates_vxlan() {
        let inner = eth_frame(b"GET /v HTTP/1.1\r\n\r\n");
        let mut vx = vec![0x08, 0, 0, 0, 0, 0, 0x2a, 0];
        vx.extend_from_slice(&inner);
        let mut outer = Vec::new();
        PacketBuilder::ethernet2([1; 6], [2; 6])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(50000, VXLAN_PORT)
            .write(&mut outer, &vx)
            .unwrap();
        let mut d = Decoder::new(LinkType::Ethernet);
        assert_eq!(
            inner_port(d.decode(0, &outer)),
            Some((8080, b"GET /v HTTP/1.1\r\n\r\n".to_vec()))
        );
        assert_eq!(d.decapsulated(), 1);
    }

    fn gre_packet(gre: &[u8]) -> Vec<u8> {
        let mut h = etherparse::Ipv4Header::new(
            gre.len() as u16,
            64,
            IpNumber::GRE,
            [10, 0, 0, 1],
            [10, 0, 0, 2],
        )
        .unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut out = Vec::new();
        h.write(&mut out).unwrap();
        out.extend_from_slice(gre);
        out
    }

    #[test]
    fn decapsulates_gre_and_erspan() {
        let frame = eth_frame(b"x");
        let mut d = Decoder::new(LinkType::RawIp);
        // GRE, transparent Ethernet bridging, with a key.
        let mut gre = vec![0x20, 0, 0x65, 0x58, 0, 0, 0, 7];
        gre.extend_from_slice(&frame);
        assert_eq!(
            inner_port(d.decode(0, &gre_packet(&gre))),
            Some((8080, b"x".to_vec()))
        );
        // ERSPAN type II: GRE with a sequence number, then the 8-byte ERSPAN header.
        let mut e2 = vec![
            0x10, 0, 0x88, 0xbe, 0, 0, 0, 1, 0x10, 0x01, 0, 0x05, 0, 0, 0, 0,
        ];
        e2.extend_from_slice(&frame);
        assert_eq!(
            inner_port(d.decode(0, &gre_packet(&e2))),
            Some((8080, b"x".to_vec()))
        );
        // ERSPAN type III with the optional platform subheader (O flag).
        let mut e3 = vec![0x10, 0, 0x22, 0xeb, 0, 0, 0, 1];
        e3.extend_from_slice(&[0x20, 0x01, 0, 0x05, 0, 0, 0, 0, 0, 0, 0, 0x01]);
        e3.extend_from_slice(&[0; 8]);
        e3.extend_from_slice(&frame);
        assert_eq!(
            inner_port(d.decode(0, &gre_packet(&e3))),
            Some((8080, b"x".to_vec()))
        );
        // GRE carrying IPv4 directly.
        let mut ip_only = vec![0, 0, 0x08, 0x00];
        ip_only.extend_from_slice(&frame[14..]);
        assert_eq!(
            inner_port(d.decode(0, &gre_packet(&ip_only))),
            Some((8080, b"x".to_vec()))
        );
        // Truncated ERSPAN: a clear error, no panic.
        assert!(matches!(
            d.decode(0, &gre_packet(&[0, 0, 0x22, 0xeb, 1])),
            Decoded::Malformed(_)
        ));
        assert_eq!(d.decapsulated(), 4);
    }

    #[test]
    fn udp_on_the_vxlan_port_without_vxlan_stays_udp() {
        let mut outer = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1, VXLAN_PORT)
            .write(&mut outer, &[0; 12])
            .unwrap();
        assert!(matches!(
            Decoder::new(LinkType::RawIp).decode(0, &outer),
            Decoded::Udp
        ));
    }

    #[test]
    fn reassembles_ipv4_fragments_in_any_order() {
        // One IPv4/TCP packet cut into three fragments by hand, delivered out of order.
        let mut whole = Vec::new();
        let payload = vec![b'z'; 100];
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(5, 80, 7, 100)
            .write(&mut whole, &payload)
            .unwrap();
        let ip_payload = &whole[20..]; // TCP header + data, 120 bytes
        let frag = |off: usize, len: usize, more: bool| {
            let mut h = etherparse::Ipv4Header::new(
                len as u16,
                64,
                IpNumber::TCP,
                [10, 0, 0, 1],
                [10, 0, 0, 2],
            )
            .unwrap();
            h.identification = 77;
            h.more_fragments = more;
            h.fragment_offset = etherparse::IpFragOffset::try_new((off / 8) as u16).unwrap();
            let mut out = Vec::new();
            h.write(&mut out).unwrap();
            out.extend_from_slice(&ip_payload[off..off + len]);
            out
        };
        let mut d = Decoder::new(LinkType::RawIp);
        assert!(matches!(
            d.decode(0, &frag(80, 40, false)),
            Decoded::FragmentHeld
        ));
        assert!(matches!(
            d.decode(0, &frag(0, 40, true)),
            Decoded::FragmentHeld
        ));
        match d.decode(0, &frag(40, 40, true)) {
            Decoded::Tcp(s) => assert_eq!(s.payload, &payload[..]),
            other => panic!("{other:?}"),
        }
        assert_eq!(d.fragment_stats().reassembled, 1);
    }
}

//! Fuzzes the packet → exchange path: raw frames through the decoder (every link type) and
//! TCP segments built from the input through reassembly, HTTP parsing and pairing.
//!
//! Input: a sequence of records `[kind u8][len u16 le][bytes…]`. Kind 0–4 feed `bytes` as a
//! frame of a link type to the decoder; kind ≥ 5 builds a TCP segment of one synthetic
//! connection from `bytes` (direction, flags and a sequence delta in its first 4 bytes).
//!
//! Run: `cargo fuzz run packets_to_exchanges` from the repository root (needs cargo-fuzz).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shadowtap_capture::decode::{Decoded, Decoder, LinkType, TcpSegment};
use shadowtap_capture::reassembly::{FlowTable, ReassemblyConfig};

fuzz_target!(|data: &[u8]| {
    let links = [LinkType::Ethernet, LinkType::LinuxSll, LinkType::LinuxSll2, LinkType::RawIp, LinkType::Null];
    let mut decoders: Vec<Decoder> = links.iter().map(|l| Decoder::new(*l)).collect();
    let cfg = ReassemblyConfig { max_buffered_per_direction: 64 << 10, max_flows: 64, ..ReassemblyConfig::default() };
    let mut table = FlowTable::new(cfg, "fuzz");
    let (mut seqs, mut rest, mut ts) = ([1000u32, 90_000u32], data, 0i64);
    while rest.len() >= 3 {
        let kind = rest[0];
        let len = (u16::from_le_bytes([rest[1], rest[2]]) as usize).min(rest.len() - 3);
        let body = &rest[3..3 + len];
        rest = &rest[3 + len..];
        ts += 1000;
        if (kind as usize) < links.len() {
            if let Decoded::Tcp(seg) = decoders[kind as usize].decode(ts, body) {
                table.on_segment(ts, &seg);
            }
        } else if body.len() >= 4 {
            let dir = usize::from(body[0] & 1);
            let delta = i32::from(i16::from_le_bytes([body[2], body[3]]));
            let seq = seqs[dir].wrapping_add(delta as u32);
            let payload = &body[4..];
            seqs[dir] = seq.wrapping_add(payload.len() as u32);
            let a = ("10.0.0.1".parse().unwrap(), 40000u16);
            let b = ("10.0.0.2".parse().unwrap(), 80u16);
            let (src, dst) = if dir == 0 { (a, b) } else { (b, a) };
            let seg = TcpSegment {
                src: src.0, dst: dst.0, src_port: src.1, dst_port: dst.1, seq,
                ack: (body[1] & 2 != 0).then(|| seqs[1 - dir]),
                syn: body[1] & 4 != 0, fin: body[1] & 8 != 0, rst: body[1] & 16 != 0, payload,
            };
            table.on_segment(ts, &seg);
        }
        let _ = table.take_exchanges();
    }
    table.finish();
    let _ = table.take_exchanges();
});

//! Writes a large pcap of mixed, realistic HTTP/1.1 traffic for benchmarks.
//!
//! Usage: `cargo run --release -p shadowtap-capture --example synth_pcap -- OUT.pcap SIZE_MB`
//!
//! Interleaves many keep-alive connections from many clients to a few servers: small JSON GETs,
//! POSTs with JSON bodies, chunked gzip responses, 304s, HEADs, and large bodies (16 to
//! 528 KiB, 5% of exchanges) cut into 1448-byte segments, with handshakes, ACKs and FINs. Deterministic: the same
//! arguments give the same file. Prints the number of exchanges written.

use std::io::{BufWriter, Write};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Conn {
    client: [u8; 4],
    server: [u8; 4],
    cport: u16,
    sport: u16,
    cseq: u32,
    sseq: u32,
    left: u32,
}

struct Out<W: Write> {
    w: W,
    ts_us: u64,
    bytes: u64,
}

impl<W: Write> Out<W> {
    fn packet(&mut self, c: &Conn, from_client: bool, flags: u8, payload: &[u8]) {
        let (src, dst, sp, dp, seq, ack) = if from_client {
            (c.client, c.server, c.cport, c.sport, c.cseq, c.sseq)
        } else {
            (c.server, c.client, c.sport, c.cport, c.sseq, c.cseq)
        };
        let ip_len = 20 + 20 + payload.len();
        let mut f = Vec::with_capacity(14 + ip_len);
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00]);
        f.extend_from_slice(&[
            0x45,
            0,
            (ip_len >> 8) as u8,
            ip_len as u8,
            0,
            0,
            0x40,
            0,
            64,
            6,
            0,
            0,
        ]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&sp.to_be_bytes());
        f.extend_from_slice(&dp.to_be_bytes());
        f.extend_from_slice(&seq.to_be_bytes());
        f.extend_from_slice(&ack.to_be_bytes());
        f.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(payload);
        self.ts_us += 7;
        let rec = [
            (self.ts_us / 1_000_000) as u32,
            (self.ts_us % 1_000_000) as u32,
            f.len() as u32,
            f.len() as u32,
        ];
        for v in rec {
            self.w.write_all(&v.to_le_bytes()).unwrap();
        }
        self.w.write_all(&f).unwrap();
        self.bytes += 16 + f.len() as u64;
    }
}

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;

fn send<W: Write>(out: &mut Out<W>, c: &mut Conn, from_client: bool, data: &[u8]) {
    for seg in data.chunks(1448) {
        out.packet(c, from_client, ACK | PSH, seg);
        if from_client {
            c.cseq = c.cseq.wrapping_add(seg.len() as u32);
        } else {
            c.sseq = c.sseq.wrapping_add(seg.len() as u32);
        }
    }
    out.packet(c, !from_client, ACK, &[]);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).expect("usage: synth_pcap OUT.pcap SIZE_MB");
    let target_mb: u64 = args
        .get(2)
        .map(|s| s.parse().expect("SIZE_MB"))
        .unwrap_or(600);
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    {
        let v = 0xa1b2_c3d4u32;
        w.write_all(&v.to_le_bytes()).unwrap();
    }
    w.write_all(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    w.write_all(&262_144u32.to_le_bytes()).unwrap();
    w.write_all(&1u32.to_le_bytes()).unwrap();
    let mut out = Out {
        w,
        ts_us: 1_700_000_000_000_000,
        bytes: 24,
    };
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    let json: Vec<u8> = (0..40)
        .map(|i| format!("{{\"id\":{i},\"name\":\"item-{i}\",\"tags\":[\"a\",\"b\"]}},"))
        .collect::<String>()
        .into_bytes();
    let gz = {
        use std::io::Write as _;
        let html = "<html><body>".to_owned()
            + &"<p>shadowtap benchmark page</p>".repeat(2000)
            + "</body></html>";
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(html.as_bytes()).unwrap();
        e.finish().unwrap()
    };
    let big: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();

    let mut conns: Vec<Conn> = Vec::new();
    let mut next_port = 1024u16;
    let mut exchanges = 0u64;
    while out.bytes < target_mb * 1_000_000 {
        if conns.len() < 64 {
            next_port = if next_port >= 65000 {
                1024
            } else {
                next_port + 1
            };
            let client = [10, 1, (rng.below(200)) as u8, 1 + rng.below(250) as u8];
            let server = [10, 9, 0, 1 + rng.below(4) as u8];
            let mut c = Conn {
                client,
                server,
                cport: next_port,
                sport: [80, 8080, 3000][rng.below(3) as usize],
                cseq: rng.next() as u32,
                sseq: rng.next() as u32,
                left: 1 + rng.below(20) as u32,
            };
            out.packet(&c, true, SYN, &[]);
            c.cseq = c.cseq.wrapping_add(1);
            out.packet(&c, false, SYN | ACK, &[]);
            c.sseq = c.sseq.wrapping_add(1);
            out.packet(&c, true, ACK, &[]);
            conns.push(c);
            continue;
        }
        let i = rng.below(conns.len() as u64) as usize;
        let c = &mut conns[i];
        let kind = rng.below(100);
        let id = rng.below(100_000);
        let (req, resp): (Vec<u8>, Vec<u8>) = match kind {
            0..=39 => (
                format!("GET /api/v1/items/{id}?expand=tags HTTP/1.1\r\nHost: api.bench\r\nUser-Agent: bench/1.0\r\nAccept: application/json\r\nAuthorization: Bearer abc{id}\r\n\r\n").into_bytes(),
                [format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nX-Request-Id: {id}\r\n\r\n", json.len()).into_bytes(), json.clone()].concat(),
            ),
            40..=54 => {
                let body = format!("{{\"user\":{id},\"items\":[1,2,3],\"note\":\"{}\"}}", "n".repeat(rng.below(2000) as usize));
                (
                    [format!("POST /api/v1/orders HTTP/1.1\r\nHost: api.bench\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes(), body.into_bytes()].concat(),
                    b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"status\":\"ok\"}\n".to_vec(),
                )
            }
            55..=69 => {
                let mut r = b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
                for ch in gz.chunks(4000) {
                    r.extend_from_slice(format!("{:x}\r\n", ch.len()).as_bytes());
                    r.extend_from_slice(ch);
                    r.extend_from_slice(b"\r\n");
                }
                r.extend_from_slice(b"0\r\n\r\n");
                (format!("GET /page/{id} HTTP/1.1\r\nHost: www.bench\r\nAccept-Encoding: gzip\r\n\r\n").into_bytes(), r)
            }
            70..=79 => (
                format!("GET /static/app.js HTTP/1.1\r\nHost: www.bench\r\nIf-None-Match: \"v{id}\"\r\n\r\n").into_bytes(),
                b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\n".to_vec(),
            ),
            80..=94 => (
                format!("HEAD /files/{id} HTTP/1.1\r\nHost: cdn.bench\r\n\r\n").into_bytes(),
                b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec(),
            ),
            _ => {
                let n = 16_384 + rng.below(512 << 10) as usize;
                let n = n.min(big.len());
                (
                    format!("GET /files/{id}.bin HTTP/1.1\r\nHost: cdn.bench\r\n\r\n").into_bytes(),
                    [format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\n\r\n").into_bytes(), big[..n].to_vec()].concat(),
                )
            }
        };
        send(&mut out, c, true, &req);
        send(&mut out, c, false, &resp);
        exchanges += 1;
        c.left -= 1;
        if c.left == 0 {
            let c = conns.swap_remove(i);
            out.packet(&c, true, FIN | ACK, &[]);
            out.packet(&c, false, FIN | ACK, &[]);
        }
    }
    for c in conns.drain(..) {
        out.packet(&c, true, FIN | ACK, &[]);
        out.packet(&c, false, FIN | ACK, &[]);
    }
    out.w.flush().unwrap();
    println!("{exchanges}");
}

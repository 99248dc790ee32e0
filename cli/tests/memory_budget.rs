//! `capture --max-memory` holds: many concurrent large uploads, interleaved packet by packet so
//! every body is being read at once, captured by the real binary under a small budget. Its
//! peak resident set (the kernel's `VmHWM` of that process, reported in the summary) stays
//! under the stated bound — the idle footprint (measured here, capturing a small fixture) plus
//! the budget plus, per writer thread, three times the largest exchange and 8 MiB
//! (`capture::memory`) — while the same capture without a budget passes it (so the measure
//! can fail), and every request is written (whole or flagged) or counted.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;

use etherparse::PacketBuilder;

const UPLOADS: usize = 32;
const BODY: usize = 4 << 20;
const MSS: usize = 1448;
const BUDGET: u64 = 48 << 20;
const WRITERS: u64 = 2;
/// Per writer thread, besides the budget: three copies of the largest exchange being encoded
/// (its Arrow arrays, the Parquet page, the compressed page) and its zstd context.
const PER_WRITER: u64 = 3 * (BODY as u64 + 4096) + (8 << 20);

fn frame(
    client_port: u16,
    to_server: bool,
    seq: u32,
    ack: u32,
    flags: &str,
    payload: &[u8],
) -> Vec<u8> {
    let (src, dst, sp, dp) = if to_server {
        ([192, 0, 2, 10], [192, 0, 2, 20], client_port, 80)
    } else {
        ([192, 0, 2, 20], [192, 0, 2, 10], 80, client_port)
    };
    let mut b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4(src, dst, 64)
        .tcp(sp, dp, seq, 65_535);
    if flags.contains('S') {
        b = b.syn();
    }
    if flags.contains('A') {
        b = b.ack(ack);
    }
    if flags.contains('F') {
        b = b.fin();
    }
    let mut out = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut out, payload).unwrap();
    out
}

struct PcapFile {
    out: BufWriter<std::fs::File>,
    n: u32,
}

impl PcapFile {
    fn create(path: &Path) -> Self {
        let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
        out.write_all(&0xa1b2_c3d4u32.to_le_bytes()).unwrap();
        out.write_all(&2u16.to_le_bytes()).unwrap();
        out.write_all(&4u16.to_le_bytes()).unwrap();
        out.write_all(&[0; 8]).unwrap();
        out.write_all(&65_535u32.to_le_bytes()).unwrap();
        out.write_all(&1u32.to_le_bytes()).unwrap();
        PcapFile { out, n: 0 }
    }
    fn push(&mut self, f: &[u8]) {
        self.n += 1;
        let ts_us = u64::from(self.n) * 5;
        self.out
            .write_all(&(1_700_000_000 + (ts_us / 1_000_000) as u32).to_le_bytes())
            .unwrap();
        self.out
            .write_all(&((ts_us % 1_000_000) as u32).to_le_bytes())
            .unwrap();
        self.out.write_all(&(f.len() as u32).to_le_bytes()).unwrap();
        self.out.write_all(&(f.len() as u32).to_le_bytes()).unwrap();
        self.out.write_all(f).unwrap();
    }
}

/// `UPLOADS` connections, each a `POST` of `BODY` bytes answered `201`, their segments
/// interleaved round-robin so all bodies are in flight together.
#[allow(clippy::needless_range_loop)] // i is the connection: its port, its head and its segments
fn write_uploads(path: &Path) {
    let mut pcap = PcapFile::create(path);
    let (c_isn, s_isn) = (1_000u32, 70_000u32);
    let port = |i: usize| 30_000 + i as u16;
    let heads: Vec<Vec<u8>> = (0..UPLOADS)
        .map(|i| {
            format!(
                "POST /upload/{i} HTTP/1.1\r\nHost: files.example.test\r\n\
                 Content-Type: application/octet-stream\r\nContent-Length: {BODY}\r\n\r\n"
            )
            .into_bytes()
        })
        .collect();
    for i in 0..UPLOADS {
        pcap.push(&frame(port(i), true, c_isn, 0, "S", &[]));
        pcap.push(&frame(port(i), false, s_isn, c_isn + 1, "SA", &[]));
        pcap.push(&frame(port(i), true, c_isn + 1, s_isn + 1, "A", &[]));
        pcap.push(&frame(port(i), true, c_isn + 1, s_isn + 1, "A", &heads[i]));
    }
    // A body of bytes that neither repeat nor compress much: a splitmix stream.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut chunk = vec![0u8; MSS];
    let mut sent = 0;
    while sent < BODY {
        let n = MSS.min(BODY - sent);
        for i in 0..UPLOADS {
            for b in chunk[..n].chunks_mut(8) {
                state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                let bytes = (z ^ (z >> 31)).to_le_bytes();
                b.copy_from_slice(&bytes[..b.len()]);
            }
            let seq = c_isn + 1 + heads[i].len() as u32 + sent as u32;
            pcap.push(&frame(port(i), true, seq, s_isn + 1, "A", &chunk[..n]));
        }
        sent += n;
    }
    let response = b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
    for i in 0..UPLOADS {
        let c_end = c_isn + 1 + (heads[i].len() + BODY) as u32;
        pcap.push(&frame(port(i), false, s_isn + 1, c_end, "A", response));
        let s_end = s_isn + 1 + response.len() as u32;
        pcap.push(&frame(port(i), true, c_end, s_end, "FA", &[]));
        pcap.push(&frame(port(i), false, s_end, c_end + 1, "FA", &[]));
    }
    pcap.out.flush().unwrap();
}

/// Runs the binary; its exit code.
fn run(args: &[&str]) -> i32 {
    let out = Command::new(env!("CARGO_BIN_EXE_shadowtap"))
        .args(args)
        .output()
        .expect("run shadowtap");
    if !out.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.code().unwrap_or(-1)
}

fn summary(dir: &Path) -> serde_json::Value {
    let file = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".summary.json"))
        .expect("a summary file");
    serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap()
}

#[test]
fn concurrent_uploads_stay_within_the_memory_budget() {
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("uploads.pcap");
    write_uploads(&pcap);
    let small = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/pcaps/nDPI__1kxun.pcap");
    let writers = WRITERS.to_string();
    let capture = |input: &Path, out: &str, extra: &[&str]| {
        let out = dir.path().join(out);
        let mut args = vec![
            "capture",
            "--quiet",
            "--writers",
            &writers,
            "--read",
            input.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        assert_eq!(run(&args), 0, "capture {extra:?} failed");
        let summary = summary(&out);
        // The kernel's high-water mark of the process's resident set, read by the capture as
        // it ends (`VmHWM`), so nothing else in this test binary counts.
        let peak = summary["peak_resident_bytes"]
            .as_u64()
            .expect("peak on Linux");
        (summary, peak)
    };
    let budget = BUDGET.to_string();
    let (_, idle) = capture(&small, "idle", &[]);
    let (bounded, bounded_peak) = capture(&pcap, "bounded", &["--max-memory", &budget]);
    let (free, free_peak) = capture(&pcap, "free", &[]);
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let bound = idle + BUDGET + WRITERS * PER_WRITER;
    eprintln!(
        "peak RSS: idle {:.1} MiB; {:.1} MiB with --max-memory {:.0} MiB (bound {:.1}); \
         {:.1} MiB without",
        mib(idle),
        mib(bounded_peak),
        mib(BUDGET),
        mib(bound),
        mib(free_peak)
    );
    // The measure can fail: unbounded, the uploads' bodies are all held at once.
    assert!(
        free_peak > bound,
        "without a budget the capture peaked at {:.1} MiB, under the bound the test asserts",
        mib(free_peak)
    );
    assert!(
        bounded_peak <= bound,
        "peak RSS {:.1} MiB over the bound {:.1} MiB (idle {:.1} + budget {:.0} + writers)",
        mib(bounded_peak),
        mib(bound),
        mib(idle),
        mib(BUDGET)
    );
    // Without a budget every upload is written whole.
    assert_eq!(free["exchanges_written"], UPLOADS as u64, "{free:#}");
    assert_eq!(free["flags"]["incomplete"], 0, "{free:#}");
    // Under it the flows holding most were cut, each cut counted and its exchange written
    // flagged incomplete: no upload is silently lost.
    let cut = bounded["lost_to_caps"]["flows_cut_by_memory"]
        .as_u64()
        .unwrap();
    assert!(cut > 0, "{bounded:#}");
    let written = bounded["exchanges_written"].as_u64().unwrap();
    let incomplete = bounded["flags"]["incomplete"].as_u64().unwrap();
    assert!(written >= UPLOADS as u64, "{bounded:#}");
    assert!(incomplete >= cut.min(UPLOADS as u64), "{bounded:#}");
}

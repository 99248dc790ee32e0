//! `shadowtap capture`: flags, validation into [`CaptureOptions`], and the summary printout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use shadowtap_capture::http::ParserLimits;
use shadowtap_capture::pipeline::{capture_files, CaptureOptions};
use shadowtap_capture::reassembly::ReassemblyConfig;
use shadowtap_capture::sampling::{Percent, SampleBy, Sampler};

/// Flags of `shadowtap capture`.
///
/// Reads pcap or pcapng files (through libpcap), reassembles TCP, parses HTTP/1.x on any port,
/// pairs each request with its response and writes one Parquet row per exchange into
/// `--out`, as `exchanges-<run>-NNNNN.parquet` plus `capture-<run>.summary.json`. Files appear
/// only when complete. Nothing is lost silently: every skipped packet, lost byte and cap that
/// bit is counted in the summary.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    shadowtap capture --read traffic.pcap --out data/\n  \
    shadowtap capture --read a.pcap --read b.pcapng --filter 'tcp port 8080' --sample 10% --out data/\n\n\
    Exit status: 0 when anything could be read (problems are listed in the summary),\n\
    1 when nothing could be read or the output could not be written, 2 on bad flags.")]
pub struct CaptureArgs {
    /// Capture file(s) to read, pcap or pcapng; several are read in order as one capture
    /// (as `tcpdump -C` rotates them).
    #[arg(short = 'r', long = "read", value_name = "FILE", required = true, num_args = 1..)]
    read: Vec<PathBuf>,

    /// Directory for the Parquet files and the summary (created if missing).
    #[arg(short, long, value_name = "DIR", env = "SHADOWTAP_OUT")]
    out: PathBuf,

    /// BPF filter expression applied while reading, e.g. 'tcp port 80 or tcp port 8080'.
    #[arg(short, long, value_name = "EXPR")]
    filter: Option<String>,

    /// Keep this share of exchanges: `25` and `25%` both mean a quarter. Deterministic: the
    /// same input and percentage always keep the same exchanges.
    #[arg(long, value_name = "PERCENT", default_value = "100")]
    sample: Percent,

    /// What is kept or dropped together when sampling.
    #[arg(long, value_name = "UNIT", default_value = "exchange", value_parser = ["exchange", "connection", "client"])]
    sample_by: String,

    /// Keep at most this many bytes of each body (larger bodies are truncated and flagged).
    /// Accepts K, M and G suffixes (powers of 1024).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    max_body: u64,

    /// Start a new Parquet file once one reaches this size.
    #[arg(long, value_name = "BYTES", default_value = "256M", value_parser = parse_size)]
    max_file_size: u64,

    /// Most TCP flows tracked at once; beyond it the least recently active are closed early
    /// (counted in the summary).
    #[arg(long, value_name = "N", default_value_t = 262_144)]
    max_flows: usize,

    /// Out-of-order bytes buffered per flow direction before a hole is declared lost.
    #[arg(long, value_name = "BYTES", default_value = "8M", value_parser = parse_size)]
    max_flow_buffer: u64,

    /// Close flows idle for this many seconds of capture time.
    #[arg(long, value_name = "SECONDS", default_value_t = 300)]
    idle_timeout: u64,

    /// Writer threads (content decoding and Parquet encoding); each writes its own files.
    /// Default: the number of cores, at most 4.
    #[arg(long, value_name = "N")]
    writers: Option<usize>,

    /// Print the summary as JSON on stdout instead of text on stderr.
    #[arg(long)]
    json: bool,

    /// No progress line.
    #[arg(short, long)]
    quiet: bool,
}

/// Parses `1024`, `64K`, `16M`, `1G` (powers of 1024).
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&t[..i], 1u64 << 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&t[..i], 1 << 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| format!("{s:?} is not a size (try 4096, 64K, 16M or 1G)"))?;
    n.checked_mul(mult).filter(|&v| v > 0).ok_or_else(|| format!("{s:?} is out of range"))
}

/// Runs the subcommand.
pub fn run(args: CaptureArgs) -> anyhow::Result<ExitCode> {
    let by: SampleBy = args.sample_by.parse().map_err(anyhow::Error::msg)?;
    if args.max_flows == 0 {
        bail!("--max-flows must be at least 1");
    }
    let mut opts = CaptureOptions::new(args.read.clone(), args.out.clone());
    opts.filter = args.filter.clone();
    opts.sampler = Sampler { percent: args.sample, by };
    opts.max_file_bytes = args.max_file_size;
    opts.progress = !args.quiet && !args.json;
    if let Some(n) = args.writers {
        if n == 0 {
            bail!("--writers must be at least 1");
        }
        opts.writers = n;
    }
    opts.reassembly = ReassemblyConfig {
        max_flows: args.max_flows,
        max_buffered_per_direction: usize::try_from(args.max_flow_buffer).context("--max-flow-buffer too large")?,
        idle_timeout_us: i64::try_from(args.idle_timeout.saturating_mul(1_000_000)).unwrap_or(i64::MAX),
        parser: ParserLimits { max_body: args.max_body, ..ParserLimits::default() },
    };
    let summary = capture_files(&opts).context("capture failed")?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        eprint!("{}", summary.render());
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("x").is_err());
        assert!(parse_size("0").is_err());
    }
}

//! `shadowtap capture`: flags, validation into [`CaptureOptions`], and the summary printout.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::config::{self, CaptureConfig};
use shadowtap_capture::criteria::{CriteriaSpec, MatchCriteria};
use shadowtap_capture::live::{list_interfaces, LiveOptions};
use shadowtap_capture::pipeline::{capture_files, capture_live, CaptureOptions, LiveLimits};
use shadowtap_capture::reassembly::ReassemblyConfig;
use shadowtap_capture::redact::{Redaction, Redactor};
use shadowtap_capture::sampling::{Percent, SampleBy, Sampler};
use shadowtap_capture::CaptureError;
use shadowtap_core::units::{parse_duration, parse_size};
use shadowtap_http1::ParserLimits;
use signal_hook::consts::{SIGINT, SIGTERM};

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
    shadowtap capture --read a.pcap --read b.pcapng --filter 'tcp port 8080' --sample 10% --out data/\n  \
    shadowtap capture --interface eth1 --filter 'tcp port 80' --duration 10m --out data/\n  \
    shadowtap capture --read t.pcap --match-host api.example.com --match-path '^/v2/' --out data/\n  \
    shadowtap capture --read https.pcap --tls-keylog keys.log --out data/\n  \
    shadowtap capture --list-interfaces\n\n\
    Match criteria (--match-*) combine with AND, repeated values of one with OR, and apply\n\
    before --sample.\n\n\
    Live capture stops on SIGINT/SIGTERM (or --duration / --max-exchanges): every open flow is\n\
    flushed and every file closed before exit; a second signal exits at once.\n\n\
    Exit status: 0 when anything could be read (problems are listed in the summary),\n\
    1 when nothing could be read or the output could not be written, 2 on bad flags,\n\
    an unknown interface, missing permission or an invalid filter.")]
#[command(group(clap::ArgGroup::new("input").required(true).args(["read", "interface", "list_interfaces", "print_sample_config"])))]
pub struct CaptureArgs {
    /// Capture file(s) to read, pcap or pcapng; several are read in order as one capture
    /// (as `tcpdump -C` rotates them).
    #[arg(short = 'r', long = "read", value_name = "FILE", num_args = 1..)]
    read: Vec<PathBuf>,

    /// Capture live on this interface (a SPAN/mirror port, `lo`, `any`). Needs root or
    /// CAP_NET_RAW.
    #[arg(short = 'i', long, value_name = "IFACE", conflicts_with = "read")]
    interface: Option<String>,

    /// List the interfaces that can be captured on, and exit.
    #[arg(long)]
    list_interfaces: bool,

    /// Read match criteria, sampling and redaction settings from this TOML file (flags win;
    /// list flags add to the file's values). `--print-sample-config` shows every key.
    #[arg(long, value_name = "FILE", env = "SHADOWTAP_CAPTURE_CONFIG")]
    config: Option<PathBuf>,

    /// Print a commented sample configuration file and exit.
    #[arg(long)]
    print_sample_config: bool,

    /// Promiscuous mode for --interface (on by default: a mirror port receives traffic not
    /// addressed to it). `--promisc false` turns it off.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    promisc: bool,

    /// Bytes captured per packet for --interface; 0 means whole packets (recommended: a short
    /// snap length loses payload).
    #[arg(long, value_name = "BYTES", default_value_t = 0)]
    snaplen: i32,

    /// Kernel capture buffer for --interface.
    #[arg(long, value_name = "BYTES", default_value = "64M", value_parser = parse_size)]
    buffer_size: u64,

    /// Hand each packet over as it arrives (libpcap immediate mode) instead of in kernel
    /// blocks retired every 100 ms: lower latency, more CPU per packet.
    #[arg(long)]
    immediate_mode: bool,

    /// Print live statistics (packets, kernel/interface/queue drops, exchanges, open flows) this
    /// often, and append them to `capture-<run>.stats.jsonl` beside the data.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    stats_interval: Option<std::time::Duration>,

    /// Serve live statistics in Prometheus text format on this address (`127.0.0.1:9108`;
    /// port 0 picks one and prints it).
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,

    /// Stop a live capture after this long (`90s`, `10m`, `2h`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<std::time::Duration>,

    /// Stop a live capture once this many exchanges were found.
    #[arg(long, value_name = "N")]
    max_exchanges: Option<u64>,

    /// Directory for the Parquet files and the summary (created if missing), or an
    /// object-storage prefix (`s3://bucket/prefix`, `gs://…`, `az://…`): each file is uploaded
    /// once complete, then removed locally.
    #[arg(short, long, value_name = "DIR|URL", env = "SHADOWTAP_OUT", required_unless_present_any = ["list_interfaces", "print_sample_config"])]
    out: Option<String>,

    /// BPF filter expression applied while reading, e.g. 'tcp port 80 or tcp port 8080'.
    #[arg(short, long, value_name = "EXPR")]
    filter: Option<String>,

    /// Keep this share of exchanges: `25` and `25%` both mean a quarter. Deterministic: the
    /// same input and percentage always keep the same exchanges.
    /// [default: 100]
    #[arg(long, value_name = "PERCENT")]
    sample: Option<Percent>,

    /// Keep only requests carrying this header: `'X-Shadow-Test: true'` (exact value) or
    /// `X-Shadow-Test` (present). Repeat for alternatives.
    #[arg(long, value_name = "'NAME: VALUE'")]
    match_header: Vec<String>,

    /// Keep only requests carrying this cookie: `NAME` or `NAME=VALUE`. Repeat for alternatives.
    #[arg(long, value_name = "NAME[=VALUE]")]
    match_cookie: Vec<String>,

    /// Keep only requests whose User-Agent matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    match_user_agent: Option<String>,

    /// Keep only requests whose path matches this regular expression.
    #[arg(long, value_name = "REGEX")]
    match_path: Option<String>,

    /// Keep only requests to this host (Host header; a port is ignored). Repeat for
    /// alternatives.
    #[arg(long, value_name = "HOST")]
    match_host: Vec<String>,

    /// Keep only requests from clients in this country (looked up in --geo-file). Repeat for
    /// alternatives.
    #[arg(long, value_name = "CC")]
    match_geo: Vec<String>,

    /// CIDR → country list for --match-geo: one `192.0.2.0/24 US` per line, `#` comments.
    #[arg(long, value_name = "FILE")]
    geo_file: Option<PathBuf>,

    /// Also redact headers, query and form parameters, multipart fields and JSON keys of this
    /// name (case and `-`/`_` ignored). Credential headers (Authorization, Cookie, Set-Cookie,
    /// X-Api-Key, …), parameters (access_token, code, api_key, X-Amz-Signature, …) and JSON
    /// keys (password, token, …) always are: see docs/schema.md. Repeatable.
    #[arg(long, value_name = "NAME")]
    redact: Vec<String>,

    /// Key for the redaction HMAC, read from this file, so that several captures redact alike.
    /// Without it (or SHADOWTAP_REDACT_KEY) each run draws a random key from the OS, and does
    /// not start if it cannot.
    #[arg(long, value_name = "FILE", env = "SHADOWTAP_REDACT_KEY_FILE")]
    redact_key_file: Option<PathBuf>,

    /// Write secrets as captured (no redaction). Captured traffic holds credentials: use with
    /// care.
    #[arg(long, conflicts_with_all = ["redact", "redact_key_file"])]
    no_redact: bool,

    /// What is kept or dropped together when sampling. [default: exchange]
    #[arg(long, value_name = "UNIT", value_parser = ["exchange", "connection", "client"])]
    sample_by: Option<String>,

    /// Keep at most this many bytes of each body (larger bodies are truncated and flagged).
    /// Accepts K, M and G suffixes (powers of 1024).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    max_body: u64,

    /// Decrypt TLS with this key log (NSS format, as SSLKEYLOGFILE writes it: curl, Firefox,
    /// Chrome, OpenSSL's keylog callback, Go's KeyLogWriter, Java with jSSLKeyLog). Read again
    /// as it grows, so a live client's new sessions are found. Key logs inside pcapng files
    /// (`editcap --inject-secrets`) are used without it. TLS 1.2 AEAD suites and TLS 1.3;
    /// sessions without keys are counted in the summary. The file holds secrets: keep it as
    /// safe as the capture.
    #[arg(long, value_name = "FILE", env = "SHADOWTAP_TLS_KEYLOG")]
    tls_keylog: Option<PathBuf>,

    /// Write into Hive-style `date=YYYY-MM-DD/hour=HH/` directories by request start (UTC), read
    /// as partition columns by DuckDB, DataFusion and Spark. Default: `hour` for --interface,
    /// `none` for --read.
    #[arg(long, value_name = "UNIT", value_parser = ["hour", "none"])]
    partition_by: Option<String>,

    /// Close and publish files open this long (`10m`), so a running capture's data becomes
    /// readable. Default: 10m for --interface, none for --read.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    rotate_interval: Option<std::time::Duration>,

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

    /// The capture's memory budget. Half of it bounds what all open flows together hold
    /// (out-of-order segments, messages and bodies being read, requests waiting for their
    /// response): past it the flows holding most are closed first and their exchanges written
    /// flagged incomplete (counted as flows_cut_by_memory in the summary). The other half sizes
    /// the batches on their way to the Parquet writers. Default: a quarter of the machine's
    /// memory.
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    max_memory: Option<u64>,

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

/// Usage errors (bad filter, interface, option) exit with 2, the rest with 1.
fn failure(e: CaptureError) -> anyhow::Result<ExitCode> {
    let code = if e.is_usage() { 2 } else { 1 };
    eprintln!("shadowtap: error: capture failed: {e}");
    Ok(ExitCode::from(code))
}

/// Runs the subcommand.
pub fn run(args: CaptureArgs) -> anyhow::Result<ExitCode> {
    if args.list_interfaces {
        match list_interfaces() {
            Ok(list) => {
                for i in list {
                    println!(
                        "{:<16} {:<40} {}",
                        i.name,
                        i.description.unwrap_or_default(),
                        i.addresses.join(" ")
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => return failure(e),
        }
    }
    if args.print_sample_config {
        print!("{}", config::SAMPLE);
        return Ok(ExitCode::SUCCESS);
    }
    let out_arg = args
        .out
        .clone()
        .expect("clap requires --out unless --list-interfaces");
    let output = match crate::location::Output::open(&out_arg, true) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("shadowtap: error: --out: {e:#}");
            return Ok(ExitCode::from(2));
        }
    };
    let out = output.dir();
    let cfg = match &args.config {
        Some(path) => match CaptureConfig::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("shadowtap: error: {e:#}");
                return Ok(ExitCode::from(2));
            }
        },
        None => CaptureConfig::default(),
    };
    let percent = match (args.sample, &cfg.sample.percent) {
        (Some(p), _) => p,
        (None, Some(text)) => match text.parse::<Percent>() {
            Ok(p) => p,
            Err(e) => {
                eprintln!("shadowtap: error: --config [sample] percent: {e}");
                return Ok(ExitCode::from(2));
            }
        },
        (None, None) => Percent::ALL,
    };
    let by_text = args
        .sample_by
        .clone()
        .or(cfg.sample.by.clone())
        .unwrap_or_else(|| "exchange".into());
    let by: SampleBy = match by_text.parse() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("shadowtap: error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let joined = |file: &[String], flag: &[String]| -> Vec<String> {
        file.iter().chain(flag).cloned().collect()
    };
    if args.max_flows == 0 {
        bail!("--max-flows must be at least 1");
    }
    let mut opts = CaptureOptions::new(args.read.clone(), out);
    let m = &cfg.criteria;
    let spec = CriteriaSpec {
        headers: joined(&m.header, &args.match_header),
        cookies: joined(&m.cookie, &args.match_cookie),
        user_agent: args.match_user_agent.clone().or(m.user_agent.clone()),
        path: args.match_path.clone().or(m.path.clone()),
        hosts: joined(&m.host, &args.match_host),
        geo: joined(&m.geo, &args.match_geo),
        geo_file: args.geo_file.clone().or(m.geo_file.clone()),
        methods: Vec::new(),
    };
    let redact_names = joined(&cfg.redact.names, &args.redact);
    let redact_key_file = args.redact_key_file.clone().or(cfg.redact.key_file.clone());
    if args.no_redact || !cfg.redact.enabled {
        opts.redaction = Redaction::Off;
        opts.redaction_note = "off (--no-redact)".into();
    } else if let Some(f) = &redact_key_file {
        let key = match std::fs::read(f) {
            Ok(k) if !k.is_empty() => k,
            Ok(_) => {
                eprintln!(
                    "shadowtap: error: --redact-key-file {}: file is empty",
                    f.display()
                );
                return Ok(ExitCode::from(2));
            }
            Err(e) => {
                eprintln!("shadowtap: error: --redact-key-file {}: {e}", f.display());
                return Ok(ExitCode::from(2));
            }
        };
        opts.redaction = Redaction::Keyed(Box::new(Redactor::new(key, &redact_names)));
        opts.redaction_note = format!("on, key from {}", f.display());
    } else if let Some(key) = std::env::var_os("SHADOWTAP_REDACT_KEY").filter(|k| !k.is_empty()) {
        opts.redaction = Redaction::Keyed(Box::new(Redactor::new(
            key.into_encoded_bytes(),
            &redact_names,
        )));
        opts.redaction_note = "on, key from SHADOWTAP_REDACT_KEY".into();
    } else {
        opts.redaction = Redaction::RandomKey(redact_names);
    }
    opts.criteria = match MatchCriteria::new(&spec) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shadowtap: error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    opts.filter = args.filter.clone();
    opts.sampler = Sampler { percent, by };
    opts.max_file_bytes = args.max_file_size;
    let live = args.interface.is_some();
    opts.partition_by_hour = args.partition_by.as_deref().map_or(live, |p| p == "hour");
    opts.rotate_every = args
        .rotate_interval
        .or(live.then(|| std::time::Duration::from_secs(600)));
    opts.progress = !args.quiet && !args.json;
    if let Some(n) = args.writers {
        if n == 0 {
            bail!("--writers must be at least 1");
        }
        opts.writers = n;
    }
    opts.reassembly = ReassemblyConfig {
        max_flows: args.max_flows,
        max_buffered_per_direction: usize::try_from(args.max_flow_buffer)
            .context("--max-flow-buffer too large")?,
        idle_timeout_us: i64::try_from(args.idle_timeout.saturating_mul(1_000_000))
            .unwrap_or(i64::MAX),
        parser: ParserLimits {
            max_body: args.max_body,
            ..ParserLimits::default()
        },
        tls_keys: match &args.tls_keylog {
            Some(path) => {
                let keys = shadowtap_tls::KeyLog::open(path)
                    .map_err(|e| anyhow::anyhow!("--tls-keylog: {e}"))?;
                if keys.is_empty() && keys.bad_lines() > 0 {
                    bail!(
                        "--tls-keylog {}: no key log line in it (expected `LABEL <client random> <secret>`)",
                        path.display()
                    );
                }
                Some(std::sync::Arc::new(keys))
            }
            None => None,
        },
        ..ReassemblyConfig::default()
    };
    if let Some(bytes) = args.max_memory {
        opts.max_memory = bytes;
    }
    let result = match &args.interface {
        None => capture_files(&opts),
        Some(iface) => {
            let live = LiveOptions {
                interface: iface.clone(),
                promisc: args.promisc,
                snaplen: args.snaplen,
                buffer_bytes: i32::try_from(args.buffer_size).context("--buffer-size too large")?,
                filter: args.filter.clone(),
                immediate: args.immediate_mode,
            };
            let limits = LiveLimits {
                duration: args.duration,
                max_exchanges: args.max_exchanges,
                stats_interval: args.stats_interval,
                metrics_listen: args.metrics_listen,
            };
            let stop = Arc::new(AtomicBool::new(false));
            // A second signal while stopping exits at once; the first asks for a clean stop.
            for sig in [SIGINT, SIGTERM] {
                signal_hook::flag::register_conditional_shutdown(sig, 130, stop.clone())
                    .context("installing signal handler")?;
                signal_hook::flag::register(sig, stop.clone())
                    .context("installing signal handler")?;
            }
            capture_live(&opts, &live, &limits, &stop, |s| {
                eprintln!("capturing on {} (SIGINT or SIGTERM to stop)", s.interface);
                if let Some(addr) = s.metrics {
                    eprintln!("metrics on http://{addr}/metrics");
                }
            })
        }
    };
    // What was written goes up on failure too (a local run would have left it on disk).
    let result = result.map(|mut s| {
        s.files = s.files.iter().map(|f| output.shown(f)).collect();
        s
    });
    let uploaded = output.finish();
    let summary = match result {
        Ok(s) => s,
        Err(e) => return failure(e),
    };
    if let Err(e) = uploaded {
        eprintln!("shadowtap: error: {e:#}");
        return Ok(ExitCode::from(1));
    }
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

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("90s"),
            Ok(std::time::Duration::from_secs(90))
        );
        assert_eq!(
            parse_duration("10m"),
            Ok(std::time::Duration::from_secs(600))
        );
        assert_eq!(parse_duration("2"), Ok(std::time::Duration::from_secs(2)));
        assert_eq!(
            parse_duration("250ms"),
            Ok(std::time::Duration::from_millis(250))
        );
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}

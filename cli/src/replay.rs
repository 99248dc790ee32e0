//! `shadowtap replay`: flags, validation into [`ReplayOptions`], signals, and the summary.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use shadowtap_core::criteria::{CriteriaSpec, MatchCriteria};
use shadowtap_core::sampling::{Percent, SampleBy, Sampler};
use shadowtap_core::units::{parse_duration, parse_size};
use shadowtap_replayer::client::Protocol;
use shadowtap_replayer::rules::Rules;
use shadowtap_replayer::schedule::{parse_rate, parse_speed, Pacing};
use shadowtap_replayer::script::ScriptHook;
use shadowtap_replayer::{replay, ReplayOptions, Target};
use shadowtap_replayer::{ProgressMode, DEFAULT_MARKER};

/// Flags of `shadowtap replay`.
///
/// Streams the `exchanges` recorded by `shadowtap capture` (never loading them all) and sends
/// each selected request to every target, so baseline and candidate see the same traffic.
/// Each request yields one row per target in `replays-<run>-NNNNN.parquet` under `--out`:
/// the response, the transport error, or why it was not sent. Nothing disappears.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  \
    shadowtap replay --from data/ --target baseline=http://10.0.0.5:8080 --target candidate=http://10.0.0.6:8080 --out results/\n  \
    shadowtap replay --from data/ --target staging=http://staging:8080 --sample 5% --sample-by client --speed 2x --out results/\n  \
    shadowtap replay --from data/ --target t=http://127.0.0.1:8080 --rate max --concurrency 64 --out results/\n  \
    shadowtap replay --from data/ --target t=http://s:8080 --rules rules.toml --script hook.rhai --middleware ./hook.py --out results/\n\n\
    Safety: only GET, HEAD and OPTIONS are replayed unless --allow-methods adds others (duplicated\n\
    writes are the classic shadowing accident). Targets must be named; a target is refused (exit 2,\n\
    before anything is sent) when its host name is a captured Host name, whatever the port (TLS\n\
    often ends at a load balancer in front of the captured plaintext side), or when its address\n\
    and port are a captured server's; --allow-target HOST lets a host through. Requests carry\n\
    X-Shadowtap-Replay: <run id>.\n\n\
    Hooks run in this order before a request leaves: --rules, --script, --middleware; the same\n\
    hooks see each target's response before it is recorded. See docs/replay.md for the rules\n\
    file, the script functions and the middleware line protocol.\n\n\
    SIGINT/SIGTERM stop sending, wait for the requests in flight, close the files and print the\n\
    summary (exit 0); a second signal exits at once.\n\n\
    Exit status: 0 when the replay ran (errors from targets are rows, see the summary), 1 when\n\
    the results could not be written, 2 on bad flags or input.")]
pub struct ReplayArgs {
    /// Directory of the recording (`shadowtap capture --out`); Hive partitions are found. An
    /// object-storage prefix (`s3://bucket/prefix`) is fetched into the local cache first.
    #[arg(long, value_name = "DIR|URL")]
    from: String,

    /// A target as NAME=URL (repeat for each: baseline, candidate, …). A path in the URL is
    /// prefixed to every request path.
    #[arg(long = "target", value_name = "NAME=URL", required = true)]
    targets: Vec<Target>,

    /// Output directory for the `replays` Parquet files and the summary, or an object-storage
    /// prefix (each file is uploaded once complete).
    #[arg(short, long, value_name = "DIR|URL")]
    out: String,

    /// Replay this share of the recorded exchanges (`5%`), chosen deterministically.
    #[arg(long, value_name = "PERCENT")]
    sample: Option<Percent>,

    /// Sampling unit: `exchange`, or `connection` / `client` to keep whole sessions.
    #[arg(long, value_name = "UNIT", default_value = "exchange")]
    sample_by: SampleBy,

    /// Only requests with this header (`Name: value`, or `Name` for any value); repeat for OR.
    #[arg(long, value_name = "HEADER")]
    match_header: Vec<String>,

    /// Only requests with this cookie (`NAME` or `NAME=VALUE`); repeat for OR. A capture that
    /// redacted cookies keeps their names, not their values.
    #[arg(long, value_name = "COOKIE")]
    match_cookie: Vec<String>,

    /// Only requests whose path matches this regex.
    #[arg(long, value_name = "REGEX")]
    match_path: Option<String>,

    /// Only requests with this method; repeat for OR.
    #[arg(long, value_name = "METHOD")]
    match_method: Vec<String>,

    /// Only requests to this Host; repeat for OR.
    #[arg(long, value_name = "HOST")]
    match_host: Vec<String>,

    /// Also replay these methods (comma-separated), besides GET, HEAD and OPTIONS.
    #[arg(long, value_name = "METHODS", value_delimiter = ',')]
    allow_methods: Vec<String>,

    /// Keep the recorded timing, scaled: `1x`, `2x` (twice as fast), `0.5x`.
    #[arg(long, value_name = "FACTOR", default_value = "1x", value_parser = parse_speed, conflicts_with = "rate")]
    speed: f64,

    /// Cut idle gaps in the recording (after --speed) to at most this long.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    max_wait: Option<Duration>,

    /// Send at a fixed rate (`200/s`) or as fast as the targets allow (`max`) instead of the
    /// recorded timing.
    #[arg(long, value_name = "N/s|max", value_parser = parse_rate)]
    rate: Option<Pacing>,

    /// Requests in flight at most, over all targets.
    #[arg(long, value_name = "N", default_value_t = 32)]
    concurrency: usize,

    /// Sending threads at `--rate max` without hooks, each with its own connections and a
    /// share of --concurrency (default: one per core, at most 4). Paced replays and replays
    /// with hooks send from one thread.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    senders: Option<u16>,

    /// Stop sending after this long (`10m`).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    duration: Option<Duration>,

    /// Replay the recording N times (`--loop` alone: until --duration or a signal).
    #[arg(long = "loop", value_name = "N", num_args = 0..=1, default_missing_value = "0")]
    loops: Option<u32>,

    /// Give up on a request after this long (connect, send and whole response).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,

    /// Give up connecting after this long.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = parse_duration)]
    connect_timeout: Duration,

    /// HTTP version towards the targets: `http1` or `h2c` (HTTP/2 by prior knowledge).
    #[arg(long, value_name = "PROTO", default_value = "http1")]
    protocol: Protocol,

    /// Accept any TLS certificate from https:// targets (self-signed staging pools).
    #[arg(long)]
    insecure: bool,

    /// Declarative mutation rules (TOML): headers, host, path, query, JSON fields, delay, drop.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,

    /// Rhai script with `fn on_request(req)` and/or `fn on_response(req, resp)`.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,

    /// Operations a script call may run before it is stopped.
    #[arg(long, value_name = "N", default_value_t = 1_000_000)]
    script_max_operations: u64,

    /// External middleware command (run with `sh -c`), speaking JSON lines on stdin/stdout.
    #[arg(long, value_name = "CMD")]
    middleware: Option<String>,

    /// How long the middleware may take to answer one message.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    middleware_timeout: Duration,

    /// Name of the marker header carrying the run id.
    #[arg(long, value_name = "NAME", default_value = DEFAULT_MARKER)]
    marker_header: String,

    /// Send no marker header.
    #[arg(long)]
    no_marker: bool,

    /// Send the recorded Host header instead of the target's host:port.
    #[arg(long)]
    preserve_host: bool,

    /// Let this target host through although the recording names it (a staging host that
    /// shares production's name through split DNS, say). Repeat for several. Without it such
    /// a target is refused: see the safety note below.
    #[arg(long = "allow-target", value_name = "HOST")]
    allow_targets: Vec<String>,

    /// Response body bytes kept per response (the rest is counted, not kept).
    #[arg(long, value_name = "BYTES", default_value = "16M", value_parser = parse_size)]
    max_body: u64,

    /// Run id used in file names and the marker header (default: from the clock).
    #[arg(long, value_name = "ID")]
    run_id: Option<String>,

    /// Interval of the progress lines when stderr is not a terminal.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = parse_duration)]
    progress_interval: Duration,

    /// Print the summary as JSON on stdout.
    #[arg(long)]
    json: bool,

    /// No progress and no summary on stderr.
    #[arg(short, long)]
    quiet: bool,
}

fn usage(message: impl std::fmt::Display) -> anyhow::Result<ExitCode> {
    eprintln!("shadowtap: error: {message}");
    Ok(ExitCode::from(2))
}

/// Runs the subcommand.
pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let spec = CriteriaSpec {
        headers: args.match_header.clone(),
        cookies: args.match_cookie.clone(),
        path: args.match_path.clone(),
        hosts: args.match_host.clone(),
        methods: args.match_method.clone(),
        ..Default::default()
    };
    let criteria = match MatchCriteria::new(&spec) {
        Ok(c) => c,
        Err(e) => return usage(e),
    };
    let from = match crate::location::input(&args.from) {
        Ok(d) => d,
        Err(e) => return usage(format!("--from: {e:#}")),
    };
    let output = match crate::location::Output::open(&args.out, true) {
        Ok(o) => o,
        Err(e) => return usage(format!("--out: {e:#}")),
    };
    let mut opts = ReplayOptions::new(from, output.dir(), args.targets.clone());
    opts.send.criteria = criteria;
    opts.send.sampler = Sampler {
        percent: args.sample.unwrap_or(Percent::ALL),
        by: args.sample_by,
    };
    for m in &args.allow_methods {
        let m = m.trim().to_ascii_uppercase();
        if m.is_empty() || !m.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
            return usage(format!("--allow-methods: {m:?} is not a method"));
        }
        if !opts.send.allow_methods.contains(&m) {
            opts.send.allow_methods.push(m);
        }
    }
    opts.send.pacing = args.rate.unwrap_or(Pacing::Speed {
        factor: args.speed,
        max_wait: args.max_wait,
    });
    if args.max_wait.is_some() && args.rate.is_some() {
        return usage("--max-wait applies to the recorded timing; it has no effect with --rate");
    }
    opts.send.concurrency = args.concurrency;
    opts.send.senders = args.senders.map_or(0, usize::from);
    opts.send.duration = args.duration;
    opts.passes = match args.loops {
        None => Some(1),
        Some(0) => None,
        Some(n) => Some(n),
    };
    if opts.passes.is_none() && args.duration.is_none() {
        eprintln!("shadowtap: note: --loop without a count repeats until --duration or Ctrl-C");
    }
    opts.send.client.timeout = args.timeout;
    opts.send.client.connect_timeout = args.connect_timeout;
    opts.send.client.protocol = args.protocol;
    opts.send.client.insecure = args.insecure;
    opts.send.client.max_body = args.max_body;
    if let Some(f) = &args.rules {
        match Rules::load(f) {
            Ok(r) => opts.send.rules = Some(r),
            Err(e) => return usage(format!("--rules {}: {e}", f.display())),
        }
    }
    if let Some(f) = &args.script {
        let source = match std::fs::read_to_string(f) {
            Ok(s) => s,
            Err(e) => return usage(format!("--script {}: {e}", f.display())),
        };
        match ScriptHook::new(&source, args.script_max_operations) {
            Ok(s) => opts.send.script = Some(s),
            Err(e) => return usage(format!("--script {}: {e}", f.display())),
        }
    }
    opts.send.middleware = args.middleware.clone();
    opts.send.middleware_timeout = args.middleware_timeout;
    opts.send.marker_header = (!args.no_marker).then(|| args.marker_header.clone());
    opts.send.preserve_host = args.preserve_host;
    opts.allow_targets = args.allow_targets.clone();
    opts.send.run_id = args.run_id.clone();
    opts.send.progress = if args.quiet {
        ProgressMode::Off
    } else {
        ProgressMode::Auto {
            interval: args.progress_interval,
        }
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => return,
            };
            let mut signals = 0;
            loop {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                signals += 1;
                if signals == 1 {
                    eprintln!("shadowtap: stopping: waiting for requests in flight (signal again to exit at once)");
                    let _ = stop_tx.send(true);
                } else {
                    std::process::exit(130);
                }
            }
        });
        replay(opts, stop_rx).await
    });
    runtime.shutdown_timeout(Duration::from_secs(1));
    // What was written goes up on failure too (a local run would have left it on disk).
    let result = result.map(|mut s| {
        s.files = s.files.iter().map(|f| output.shown(f)).collect();
        s
    });
    if let Err(e) = output.finish() {
        eprintln!("shadowtap: error: {e:#}");
        return Ok(ExitCode::from(1));
    }
    match result {
        Ok(summary) => {
            if args.json {
                println!("{}", serde_json::to_string_pretty(&summary)?);
            }
            if !args.quiet {
                eprint!("{}", summary.render());
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("shadowtap: error: replay failed: {e}");
            Ok(ExitCode::from(if e.is_usage() { 2 } else { 1 }))
        }
    }
}

//! `shadowtap proxy`: flags and the TOML file into a [`ProxyConfig`], then the proxy until
//! SIGTERM or SIGINT (graceful: requests in flight finish, copies are sent or counted, the
//! recording is closed), with SIGHUP reloading the configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;
use shadowtap_proxy::config::{CanaryConfig, KeySource, ShadowConfig};
use shadowtap_proxy::ProxyConfig;

/// Exit code for usage errors (EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// `NAME=URL[,URL...]`.
fn named_urls(s: &str) -> Result<(String, Vec<String>), String> {
    let (name, urls) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=URL[,URL...]"))?;
    let urls: Vec<String> = urls.split(',').map(|u| u.trim().to_owned()).collect();
    if name.trim().is_empty() || urls.iter().any(String::is_empty) {
        return Err(format!("{s:?}: expected NAME=URL[,URL...]"));
    }
    Ok((name.trim().to_owned(), urls))
}

/// `NAME=PERCENT`.
fn named_percent(s: &str) -> Result<(String, f64), String> {
    let (name, p) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=PERCENT"))?;
    Ok((name.trim().to_owned(), percent(p)?))
}

/// `5`, `5%`, `0.5`.
fn percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("{s:?}: a share in percent, 0 to 100"))?;
    if (0.0..=100.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("{s:?}: a share in percent, 0 to 100"))
    }
}

/// Arguments of `shadowtap proxy`.
#[derive(Debug, Args)]
#[command(after_help = "\
Every request goes to a production member untouched and streamed; the proxy answers with \
production's response (or, in the canary split, the canary's) and nothing else. A share of \
requests is copied to each shadow pool; a copy is dropped and counted when its shadow is slow \
(queue full), its body is over --max-mirror-body, or the bodies being collected pass their \
budget: production never waits for a shadow.

With --record DIR, production's exchanges go to DIR as the exchanges table and every response \
(production's, each shadow's, the canary's) as replays rows of one run:
  shadowtap analyze --capture DIR --replay DIR --baseline production --candidate NAME
(a shadow of the current version named baseline2 is the noise).

The admin API (--admin ADDR, bearer token from --admin-token-file or SHADOWTAP_ADMIN_TOKEN): \
GET/PUT /config (JSON, applied to new requests without dropping connections), GET /changes, \
GET /stats, GET /metrics (Prometheus). SIGHUP reloads --config the same way; SIGTERM shuts \
down gracefully.

Example:
  shadowtap proxy --listen 127.0.0.1:8080 --production http://10.0.0.5:8080 \\
      --shadow baseline2=http://10.0.0.7:8080 --shadow candidate=http://10.0.0.8:8080 \\
      --mirror 10 --record mirror-run")]
pub struct ProxyArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// A production member (repeat for several).
    #[arg(long, value_name = "URL")]
    production: Vec<String>,
    /// How production members share requests: round_robin or least_in_flight.
    #[arg(long, value_name = "HOW")]
    balance: Option<String>,
    /// A shadow pool: copies go there, its responses are recorded, never returned (repeat).
    #[arg(long, value_name = "NAME=URL", value_parser = named_urls)]
    shadow: Vec<(String, Vec<String>)>,
    /// Share of matching requests copied to each shadow (default 100).
    #[arg(long, value_name = "PERCENT", value_parser = percent)]
    mirror: Option<f64>,
    /// One shadow's own share.
    #[arg(long, value_name = "NAME=PERCENT", value_parser = named_percent)]
    mirror_for: Vec<(String, f64)>,
    /// What makes the mirror choice consistent: request (random), client, cookie:NAME or header:NAME.
    #[arg(long, value_name = "KEY")]
    mirror_by: Option<KeySource>,
    /// Mirror only requests with this header (`Name: value` or `Name`); repeat for any of several.
    #[arg(long, value_name = "HEADER")]
    match_header: Vec<String>,
    /// Mirror only requests with this cookie (`NAME` or `NAME=VALUE`).
    #[arg(long, value_name = "COOKIE")]
    match_cookie: Vec<String>,
    /// Mirror only requests whose User-Agent matches this regex.
    #[arg(long, value_name = "RE")]
    match_user_agent: Option<String>,
    /// Mirror only requests whose path matches this regex.
    #[arg(long, value_name = "RE")]
    match_path: Option<String>,
    /// Mirror only requests from these countries (needs --geo-file).
    #[arg(long, value_name = "CC")]
    match_geo: Vec<String>,
    /// CIDR,country CSV for --match-geo.
    #[arg(long, value_name = "FILE")]
    geo_file: Option<PathBuf>,
    /// The canary pool: the --canary-weight share of users is answered by it.
    #[arg(long, value_name = "NAME=URL[,URL...]", value_parser = named_urls)]
    canary: Option<(String, Vec<String>)>,
    /// Share of requests (or of users, with --sticky) sent to the canary: a consistent hash of
    /// the --sticky key into 10,000 buckets.
    #[arg(long, value_name = "PERCENT", value_parser = percent)]
    canary_weight: Option<f64>,
    /// Who a user is for the canary split: request (default: each request on its own),
    /// cookie:NAME or header:NAME (a session or user id: a user stays on one side), or client
    /// (the address: everyone behind one NAT lands on the same side).
    #[arg(long, value_name = "KEY")]
    sticky: Option<KeySource>,
    /// Set this cookie on canary responses and keep users who carry it on the canary.
    #[arg(long, value_name = "NAME")]
    pin_cookie: Option<String>,
    /// Mutation rules (TOML) for mirrored requests and shadow responses.
    #[arg(long, value_name = "FILE")]
    rules: Option<PathBuf>,
    /// Rhai script hook for mirrored requests and shadow responses.
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// Middleware command for mirrored requests and shadow responses (JSON lines).
    #[arg(long, value_name = "CMD")]
    middleware: Option<String>,
    /// Methods mirrored besides GET, HEAD and OPTIONS (comma-separated), e.g. POST.
    #[arg(long, value_name = "M,...", value_delimiter = ',')]
    allow_methods: Vec<String>,
    /// Request bodies over this are not mirrored (counted). Default 16M.
    #[arg(long, value_name = "BYTES", value_parser = shadowtap_core::units::parse_size)]
    max_mirror_body: Option<u64>,
    /// Record production's exchanges and every response here (Parquet): a directory, or an
    /// object-storage prefix (`s3://bucket/prefix`; each file is uploaded once complete).
    #[arg(long, value_name = "DIR|URL")]
    record: Option<String>,
    /// Secret names redacted in the recording besides the defaults (repeat).
    #[arg(long, value_name = "NAME")]
    redact: Vec<String>,
    /// Serve the admin API here.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// File holding the admin API's bearer token (else SHADOWTAP_ADMIN_TOKEN).
    #[arg(long, value_name = "FILE")]
    admin_token_file: Option<PathBuf>,
    /// Serve the admin API over TLS with this certificate chain (PEM); needed off loopback.
    #[arg(long, value_name = "FILE", requires = "admin_tls_key")]
    admin_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --admin-tls-cert.
    #[arg(long, value_name = "FILE", requires = "admin_tls_cert")]
    admin_tls_key: Option<PathBuf>,
    /// Serve the admin API on a non-loopback address without TLS (the token crosses the
    /// network in the clear).
    #[arg(long)]
    admin_insecure: bool,
    /// A production or canary member PUT /config may name besides those given at start
    /// (repeat; `*` for any).
    #[arg(long, value_name = "URL")]
    admin_allow_production: Vec<String>,
    /// A peer trusted to say who the client is (CIDR or address; repeat): its X-Forwarded-For
    /// and Forwarded are extended, not replaced, and the canary's sticky client is the one it
    /// names.
    #[arg(long, value_name = "CIDR")]
    trusted_proxy: Vec<String>,
    /// Terminate clients' TLS with this certificate chain (PEM), with the --tls-key given in the
    /// same position. Repeat the pair for several names: the one valid for the name the client
    /// asks for (SNI) is used, else the first.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Vec<PathBuf>,
    /// The private key (PEM) of the --tls-cert in the same position.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Vec<PathBuf>,
    /// CA certificates (PEM) https:// members must chain to, instead of the system's roots.
    /// Verification is never turned off.
    #[arg(long, value_name = "FILE")]
    upstream_ca: Option<PathBuf>,
    /// A shadow host allowed although it is a production member's.
    #[arg(long, value_name = "HOST")]
    allow_target: Vec<String>,
    /// Seconds requests in flight get to finish at shutdown (default 30).
    #[arg(long, value_name = "SECONDS")]
    shutdown_grace: Option<f64>,
    /// Threads serving requests, default one per core (the copies to shadows are sent from one
    /// thread of their own). On a machine
    /// the proxy shares with its backends or load, fewer threads keep the tail latency lower
    /// (bench/proxy.sh runs 1, as nginx's `worker_processes 1` beside it).
    #[arg(long, value_name = "N")]
    workers: Option<usize>,
    /// Configuration file (TOML); flags override it.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print a commented sample configuration and exit.
    #[arg(long)]
    print_sample_config: bool,
    /// No summary on stderr at the end.
    #[arg(long, short)]
    quiet: bool,
}

/// The configuration the flags (over the file) say.
fn config_of(args: &ProxyArgs) -> Result<ProxyConfig, String> {
    let mut c = match &args.config {
        Some(f) => {
            let text =
                std::fs::read_to_string(f).map_err(|e| format!("--config {}: {e}", f.display()))?;
            ProxyConfig::from_toml(&text).map_err(|e| format!("{}: {e}", f.display()))?
        }
        None => ProxyConfig::new(String::new(), Vec::new()),
    };
    if let Some(l) = &args.listen {
        c.listen = l.clone();
    }
    if c.listen.is_empty() {
        return Err("--listen ADDR is needed (or listen in --config)".into());
    }
    if !args.production.is_empty() {
        c.production = args.production.clone();
    }
    if let Some(b) = &args.balance {
        c.balance = serde_json::from_value(serde_json::Value::String(b.clone()))
            .map_err(|_| format!("--balance {b:?}: round_robin or least_in_flight"))?;
    }
    if let Some(p) = args.mirror {
        c.mirror.percent = p;
    }
    if let Some(k) = &args.mirror_by {
        c.mirror.by = k.clone();
    }
    let crit = &mut c.mirror.criteria;
    crit.match_header.extend(args.match_header.iter().cloned());
    crit.match_cookie.extend(args.match_cookie.iter().cloned());
    if args.match_user_agent.is_some() {
        crit.match_user_agent = args.match_user_agent.clone();
    }
    if args.match_path.is_some() {
        crit.match_path = args.match_path.clone();
    }
    crit.match_geo.extend(args.match_geo.iter().cloned());
    if args.geo_file.is_some() {
        crit.geo_file = args.geo_file.clone();
    }
    for (name, urls) in &args.shadow {
        c.shadows.retain(|s| &s.name != name);
        c.shadows.push(ShadowConfig {
            name: name.clone(),
            urls: urls.clone(),
            percent: None,
            by: None,
            criteria: None,
            concurrency: 64,
            queue: 64,
        });
    }
    for (name, p) in &args.mirror_for {
        let s = c
            .shadows
            .iter_mut()
            .find(|s| &s.name == name)
            .ok_or_else(|| format!("--mirror-for {name}: no --shadow {name}=URL"))?;
        s.percent = Some(*p);
    }
    if let Some((name, urls)) = &args.canary {
        c.canary = Some(CanaryConfig {
            name: name.clone(),
            urls: urls.clone(),
            weight: 0.0,
            sticky: KeySource::Request,
            pin_cookie: None,
        });
    }
    if args.canary_weight.is_some() || args.sticky.is_some() || args.pin_cookie.is_some() {
        let canary = c
            .canary
            .as_mut()
            .ok_or("--canary-weight, --sticky and --pin-cookie need --canary NAME=URL")?;
        if let Some(w) = args.canary_weight {
            canary.weight = w;
        }
        if let Some(s) = &args.sticky {
            canary.sticky = s.clone();
        }
        if args.pin_cookie.is_some() {
            canary.pin_cookie = args.pin_cookie.clone();
        }
    }
    if args.rules.is_some() {
        c.hooks.rules = args.rules.clone();
    }
    if args.script.is_some() {
        c.hooks.script = args.script.clone();
    }
    if args.middleware.is_some() {
        c.hooks.middleware = args.middleware.clone();
    }
    for m in &args.allow_methods {
        let m = m.trim().to_ascii_uppercase();
        if !m.is_empty() && !c.mirror.allow_methods.contains(&m) {
            c.mirror.allow_methods.push(m);
        }
    }
    if let Some(b) = args.max_mirror_body {
        c.mirror.max_body = b;
    }
    if let Some(r) = &args.record {
        c.record = Some(PathBuf::from(r));
    }
    c.redact.extend(args.redact.iter().cloned());
    if args.admin.is_some() {
        c.admin = args.admin.clone();
    }
    if args.admin_token_file.is_some() {
        c.admin_token_file = args.admin_token_file.clone();
    }
    if let (Some(cert), Some(key)) = (&args.admin_tls_cert, &args.admin_tls_key) {
        c.admin_tls = Some(shadowtap_proxy::config::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        });
    }
    c.admin_insecure |= args.admin_insecure;
    c.admin_allow_production
        .extend(args.admin_allow_production.iter().cloned());
    c.trusted_proxies.extend(args.trusted_proxy.iter().cloned());
    c.allow_targets.extend(args.allow_target.iter().cloned());
    if args.tls_cert.len() != args.tls_key.len() {
        return Err("give one --tls-key per --tls-cert, in the same order".into());
    }
    if !args.tls_cert.is_empty() {
        c.tls = args
            .tls_cert
            .iter()
            .zip(&args.tls_key)
            .map(|(cert, key)| shadowtap_proxy::config::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
            .collect();
    }
    if args.upstream_ca.is_some() {
        c.upstream_ca = args.upstream_ca.clone();
    }
    if let Some(g) = args.shutdown_grace {
        c.limits.shutdown_grace_s = g;
    }
    Ok(c)
}

fn admin_token(c: &ProxyConfig) -> anyhow::Result<Option<String>> {
    if let Some(f) = &c.admin_token_file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("--admin-token-file {}", f.display()))?;
        return Ok(Some(t.trim().to_owned()));
    }
    Ok(std::env::var("SHADOWTAP_ADMIN_TOKEN")
        .ok()
        .map(|t| t.trim().to_owned()))
}

/// Runs `shadowtap proxy`.
pub fn run(args: ProxyArgs) -> anyhow::Result<ExitCode> {
    if args.print_sample_config {
        print!("{}", ProxyConfig::sample());
        return Ok(ExitCode::SUCCESS);
    }
    let mut config = match config_of(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shadowtap: error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    // A recording on object storage is written through a staging directory.
    let record_url = config
        .record
        .as_ref()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|r| shadowtap_storage::is_remote(r));
    let recording = match &record_url {
        Some(url) => match crate::location::Output::open(url, true) {
            Ok(o) => Some(o),
            Err(e) => {
                eprintln!("shadowtap: error: record: {e:#}");
                return Ok(ExitCode::from(EXIT_USAGE));
            }
        },
        None => None,
    };
    if let Some(o) = &recording {
        config.record = Some(o.dir());
    }
    let staging = recording.as_ref().map(crate::location::Output::dir);
    let staged = move |mut c: ProxyConfig| -> Result<ProxyConfig, String> {
        let url = c.record.as_ref().map(|p| p.to_string_lossy().into_owned());
        match (&url, &staging) {
            (Some(u), Some(dir)) if Some(u) == record_url.as_ref() => c.record = Some(dir.clone()),
            (Some(u), _) if shadowtap_storage::is_remote(u) => {
                return Err(format!(
                    "record = {u}: a new object-storage prefix needs a restart"
                ))
            }
            _ => {}
        }
        Ok(c)
    };
    if let Err(e) = config
        .check()
        .and_then(|()| shadowtap_proxy::server::guard_targets(&config))
    {
        eprintln!("shadowtap: error: {e}");
        return Ok(ExitCode::from(2));
    }
    let token = admin_token(&config)?;
    if args.workers == Some(0) {
        eprintln!("shadowtap: error: --workers must be at least 1");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    // One worker: a current-thread runtime (no work-stealing machinery on the request path).
    let mut runtime = match args.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all().thread_name("proxy");
    if let Some(n) = args.workers.filter(|n| *n > 1) {
        runtime.worker_threads(n);
    }
    let runtime = runtime.build()?;
    runtime.block_on(async move {
        // Before anything is announced: a SIGHUP right after the "listening" line reloads
        // instead of killing the process.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let running = match shadowtap_proxy::start(config.clone(), token).await {
            Ok(r) => r,
            Err(e) => {
                eprintln!("shadowtap: error: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        // One line a supervisor (or a test) can wait for.
        match running.admin {
            Some(a) => eprintln!(
                "shadowtap proxy: listening on {} (admin on {a}), run {}",
                running.addr, running.state.run_id
            ),
            None => eprintln!(
                "shadowtap proxy: listening on {}, run {}",
                running.addr, running.state.run_id
            ),
        }
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = hup.recv() => {
                    match config_of(&args).and_then(&staged) {
                        Ok(new) => {
                            if let Err(e) = running.state.apply(new, "SIGHUP").await {
                                eprintln!("shadowtap proxy: SIGHUP: configuration not applied: {e}");
                            }
                        }
                        Err(e) => eprintln!("shadowtap proxy: SIGHUP: configuration not applied: {e}"),
                    }
                }
            }
        }
        eprintln!("shadowtap proxy: shutting down");
        running.shutdown();
        let summary = running.wait().await.map(|mut s| {
            if let Some(o) = &recording {
                s.files = s.files.iter().map(|f| o.shown(f)).collect();
            }
            s
        });
        // The recording's last files go up once the proxy has closed them.
        let uploaded = recording.map_or(Ok(()), crate::location::Output::finish);
        let summary = summary?;
        if !args.quiet {
            eprint!("{}", summary.render());
        }
        uploaded?;
        Ok(ExitCode::SUCCESS)
    })
}

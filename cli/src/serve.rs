//! `shadowtap serve` (the control plane: proxies, store, API, monitor, alerts, until SIGTERM or
//! SIGINT) and `shadowtap ctl` (a client of its API).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};

/// Exit code for usage errors (EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// Arguments of `shadowtap serve`.
#[derive(Debug, Args)]
#[command(after_help = "\
One process runs the proxy of every [[loadbalancer]] in the config, the control API ([api]), \
the background monitor and the store ([store], or --store). A new version moves through \
shadow (a share of traffic mirrored to it) → testing (a share of real traffic, shifted every \
interval by the algorithm, held on breaches, rolled back on critical ones) → live (the old \
pool drained, then removed). Every change is a transaction in the store with a version check; \
after a restart (even kill -9) state, weights, the shift and pending alerts resume.

Drive it with `shadowtap ctl` or the API (GET /openapi.json). Examples:
  shadowtap serve --print-sample-config > shadowtap.toml
  shadowtap serve --config shadowtap.toml
  shadowtap serve --config shadowtap.toml --store postgres://shadowtap@db/shadowtap")]
pub struct ServeArgs {
    /// The config file (TOML): [api], [store], [monitor], [alerts], [[loadbalancer]].
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "print_sample_config"
    )]
    config: Option<PathBuf>,
    /// The store, overriding [store] url: sqlite://PATH or postgres://USER@HOST/DB.
    #[arg(long, value_name = "URL", env = "SHADOWTAP_STORE")]
    store: Option<String>,
    /// Print a commented config with every key, and exit.
    #[arg(long)]
    print_sample_config: bool,
}

/// Runs `shadowtap serve`.
pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    if args.print_sample_config {
        print!("{}", shadowtap_serve::ServeConfig::sample());
        return Ok(ExitCode::SUCCESS);
    }
    let path = args.config.expect("required by clap");
    let mut config = match shadowtap_serve::ServeConfig::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shadowtap: error: {e}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    if let Some(s) = args.store {
        config.store.url = Some(s);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("serve")
        .build()?;
    runtime.block_on(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let server = match shadowtap_serve::Server::start(config).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("shadowtap: error: {e}");
                return Ok(ExitCode::from(2));
            }
        };
        let lbs: Vec<String> = server
            .plane
            .balancers
            .iter()
            .map(|(id, b)| format!("{id} on {}", b.addr))
            .collect();
        // One line a supervisor (or a test) can wait for.
        eprintln!(
            "shadowtap serve: API on {}, store {}, load balancers: {}",
            server.api,
            server.plane.store.kind,
            lbs.join(", ")
        );
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = tokio::signal::ctrl_c() => break,
                _ = hup.recv() => eprintln!(
                    "shadowtap serve: SIGHUP ignored: the config is read at start (restart to change it); rollouts change through the API"
                ),
            }
        }
        eprintln!("shadowtap serve: shutting down");
        server.shutdown().await;
        Ok(ExitCode::SUCCESS)
    })
}

/// Arguments of `shadowtap ctl`.
#[derive(Debug, Args)]
#[command(after_help = "\
A client of `shadowtap serve`'s API. It prints the API's JSON answer; the exit code is 0 on \
success, 3 when the move is refused in the current state (409, the answer names the allowed \
moves), 2 on other API errors.

Examples:
  shadowtap ctl get web
  shadowtap ctl shadow web --pool http://10.0.0.7:8080 --mirror 5 --criteria header:X-Shadow-Test=true
  shadowtap ctl testing web --target 50 --error-rate 0.02 --latency 250 --algorithm linear --interval 30s
  shadowtap ctl rollback web --reason 'p99 regression'
  shadowtap ctl history web")]
pub struct CtlArgs {
    /// The API's address.
    #[arg(long, env = "SHADOWTAP_API", default_value = "http://127.0.0.1:7070")]
    api: String,
    /// A file holding the bearer token (or SHADOWTAP_TOKEN).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    what: Ctl,
}

#[derive(Debug, Subcommand)]
enum Ctl {
    /// Every load balancer, or one.
    Get {
        /// The load balancer's id (all of them without it).
        id: Option<String>,
    },
    /// A load balancer's history.
    History {
        /// The load balancer's id.
        id: String,
    },
    /// A load balancer's pool windows.
    Metrics {
        /// The load balancer's id.
        id: String,
    },
    /// Mirror a share of traffic to a new version.
    Shadow {
        /// The load balancer's id.
        id: String,
        /// A member of the new version's pool (repeat for more).
        #[arg(long = "pool", required = true)]
        pool: Vec<String>,
        /// Share mirrored, percent.
        #[arg(long, default_value_t = 5.0)]
        mirror: f64,
        /// random, header:NAME=VALUE, cookie:NAME=VALUE, geo:CC, useragent:REGEX, path:REGEX.
        #[arg(long = "criteria")]
        criteria: Vec<String>,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Send a share of real traffic to the new version; the monitor shifts it.
    Testing {
        /// The load balancer's id.
        id: String,
        /// Where the shift stops, percent.
        #[arg(long, default_value_t = 100.0)]
        target: f64,
        /// Error rate over which a window breaches (a fraction).
        #[arg(long)]
        error_rate: f64,
        /// Latency (ms at --percentile) over which a window breaches.
        #[arg(long)]
        latency: f64,
        /// The latency percentile judged: 50, 90 or 99.
        #[arg(long, default_value_t = 99)]
        percentile: u8,
        /// seed, linear, exponential or metric.
        #[arg(long, default_value = "linear")]
        algorithm: String,
        /// Points per interval (linear), the first step (exponential), the step at full headroom
        /// (metric); default 10.
        #[arg(long)]
        step: Option<f64>,
        /// How often the monitor judges and shifts (`30s`, `2m`; default: the config's).
        #[arg(long)]
        interval: Option<String>,
        /// The weight to start at (default: the first step; 1 for seed).
        #[arg(long)]
        initial: Option<f64>,
        /// The pool taking real traffic (default: the shadow pool).
        #[arg(long = "candidate")]
        candidate: Vec<String>,
        /// Do not gate steps with the statistical comparison against the stable pool.
        #[arg(long)]
        no_judge: bool,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// All traffic to the new version.
    Live {
        /// The load balancer's id.
        id: String,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// All traffic back to the stable pool at once.
    Rollback {
        /// The load balancer's id.
        id: String,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Hold the shift.
    Pause {
        /// The load balancer's id.
        id: String,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume the shift.
    Resume {
        /// The load balancer's id.
        id: String,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Take the new version out.
    Remove {
        /// The load balancer's id.
        id: String,
        /// Why (kept in the history).
        #[arg(long)]
        reason: Option<String>,
    },
}

/// Runs `shadowtap ctl`.
pub fn ctl(args: CtlArgs) -> anyhow::Result<ExitCode> {
    let token = match &args.token_file {
        Some(f) => std::fs::read_to_string(f)
            .with_context(|| format!("--token-file {}", f.display()))?
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| l.rsplit(char::is_whitespace).next().unwrap_or(l).to_owned())
            .unwrap_or_default(),
        None => std::env::var("SHADOWTAP_TOKEN").unwrap_or_default(),
    };
    if token.is_empty() {
        eprintln!("shadowtap: error: no token: --token-file FILE or SHADOWTAP_TOKEN");
        return Ok(ExitCode::from(EXIT_USAGE));
    }
    let post = |id: &str, what: &str, body: serde_json::Value| {
        (format!("/loadbalancer/{id}/{what}"), Some(body))
    };
    let reason = |r: Option<String>| serde_json::json!({ "reason": r });
    let (path, body) = match args.what {
        Ctl::Get { id: None } => ("/loadbalancer".to_owned(), None),
        Ctl::Get { id: Some(id) } => (format!("/loadbalancer/{id}"), None),
        Ctl::History { id } => (format!("/loadbalancer/{id}/history"), None),
        Ctl::Metrics { id } => (format!("/loadbalancer/{id}/metrics"), None),
        Ctl::Shadow {
            id,
            pool,
            mirror,
            criteria,
            reason,
        } => post(
            &id,
            "shadow",
            serde_json::json!({
                "shadowPool": pool, "mirrorPercentage": mirror,
                "mirrorCriteria": if criteria.is_empty() { vec!["random".to_owned()] } else { criteria },
                "reason": reason,
            }),
        ),
        Ctl::Testing {
            id,
            target,
            error_rate,
            latency,
            percentile,
            algorithm,
            step,
            interval,
            initial,
            candidate,
            no_judge,
            reason,
        } => {
            let mut b = serde_json::json!({
                "targetTrafficPercentage": target, "errorRateThreshold": error_rate,
                "latencyThreshold": latency, "latencyPercentile": percentile, "algorithm": algorithm,
            });
            let o = b.as_object_mut().expect("an object");
            if let Some(s) = step {
                o.insert("stepPercentage".into(), s.into());
            }
            if let Some(i) = interval {
                o.insert("interval".into(), i.into());
            }
            if let Some(i) = initial {
                o.insert("initialPercentage".into(), i.into());
            }
            if !candidate.is_empty() {
                o.insert("candidatePool".into(), candidate.into());
            }
            if no_judge {
                o.insert("judge".into(), false.into());
            }
            if let Some(r) = reason {
                o.insert("reason".into(), r.into());
            }
            post(&id, "testing", b)
        }
        Ctl::Live { id, reason: r } => post(&id, "live", reason(r)),
        Ctl::Rollback { id, reason: r } => post(&id, "rollback", reason(r)),
        Ctl::Pause { id, reason: r } => post(&id, "pause", reason(r)),
        Ctl::Resume { id, reason: r } => post(&id, "resume", reason(r)),
        Ctl::Remove { id, reason: r } => post(&id, "remove", reason(r)),
    };
    let url = format!("{}{path}", args.api.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()?;
        let req = match body {
            Some(b) => client.post(&url).json(&b),
            None => client.get(&url),
        };
        let resp = req
            .bearer_auth(token)
            .send()
            .await
            .with_context(|| format!("{}: the API did not answer", args.api))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        let shown = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or(text),
            Err(_) => text,
        };
        // A closed pipe (`| head`) is the reader's choice, not an error.
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), "{shown}");
        Ok(match status {
            200..=299 => ExitCode::SUCCESS,
            409 => ExitCode::from(3),
            _ => ExitCode::from(2),
        })
    })
}

//! `shadowtap serve`: the control plane (proxies, store, API, monitor, alerts), until SIGTERM
//! or SIGINT. Its client is `shadowtap ctl` ([`crate::ctl`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

/// Exit code for usage errors (EX_USAGE).
pub(crate) const EXIT_USAGE: u8 = 64;

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

//! `shadowtap`: capture, replay and analyze HTTP traffic for shadow and canary testing.
//!
//! This binary only parses flags and calls into the stage crates; see each subcommand's
//! `--help`.

#![forbid(unsafe_code)]

mod analyze;
mod capture;
mod config;
mod demo;
mod inspect;
mod replay;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc: many small allocations from several threads (replay at full rate, capture writers)
/// cost a third less than with glibc's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Capture HTTP/1.x traffic, replay it against shadow targets, and judge a canary.
///
/// Pipeline: capture (pcap/pcapng → Parquet "exchanges") → replay (→ "replays") →
/// analyze (→ "diffs", verdict). `query` runs SQL over any of them.
/// Every stage writes Parquet files that DuckDB, pandas or Spark read directly;
/// the schemas are documented in docs/schema.md.
#[derive(Debug, Parser)]
#[command(name = "shadowtap", version, propagate_version = true)]
struct Cli {
    /// More log output (-v: debug, -vv: trace). Logs never contain bodies or credentials.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode captured packets into HTTP exchanges, written as Parquet.
    Capture(Box<capture::CaptureArgs>),
    /// Replay recorded requests at named targets (baseline, candidate, …), recording every response.
    Replay(Box<replay::ReplayArgs>),
    /// Run SQL (Apache DataFusion) over exchanges, replays and diffs.
    Query(analyze::QueryArgs),
    /// Diff replayed responses, set noise aside, judge the candidate: a canary verdict for CI.
    Analyze(Box<analyze::AnalyzeArgs>),
    /// Replay and analyze in one command, for a CI job.
    Gate(Box<analyze::GateArgs>),
    /// A small JSON API for the demo and tests (baseline or candidate with regressions).
    #[command(hide = true)]
    DemoService(demo::DemoArgs),
    /// Print the first exchanges in a directory and counts by status and host.
    Inspect(inspect::InspectArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // analyze, gate and query leave 1-3 to verdicts: their usage errors are 64.
            let judging = std::env::args()
                .nth(1)
                .is_some_and(|a| matches!(a.as_str(), "analyze" | "gate" | "query"));
            let help = matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp
                    | clap::error::ErrorKind::DisplayVersion
                    | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            );
            if judging && !help {
                let _ = e.print();
                return ExitCode::from(analyze::EXIT_USAGE);
            }
            e.exit();
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SHADOWTAP_LOG")
                .unwrap_or_else(|_| level.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Capture(args) => capture::run(*args),
        Command::Inspect(args) => inspect::run(args),
        Command::Replay(args) => replay::run(*args),
        Command::Query(args) => analyze::query(args),
        Command::Analyze(args) => analyze::analyze_cmd(*args),
        Command::Gate(args) => analyze::gate(*args),
        Command::DemoService(args) => demo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shadowtap: error: {e:#}");
            ExitCode::from(1)
        }
    }
}

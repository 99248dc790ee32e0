//! `shadowtap cluster scheduler` and `shadowtap cluster executor`: a Ballista cluster with
//! shadowtap's SQL functions compiled in, for `query --engine ballista` and
//! `analyze --engine ballista`.

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use shadowtap_cluster::{run_executor, ExecutorOptions, Scheduler, SchedulerOptions};

/// Flags of `shadowtap cluster`.
///
/// Starts the processes of an Apache DataFusion Ballista cluster built with shadowtap's SQL
/// functions (`path_template`, `header`, `json_get`), which stock Ballista images lack: one
/// scheduler, and executors on every machine that reads the data (local paths must be the
/// same on all of them; `s3://` prefixes are read with each executor's AWS_* environment).
/// Ballista's ports carry no authentication: keep them on loopback or a private network.
#[derive(Debug, Args)]
#[command(after_help = "Examples (one machine):\n  \
    shadowtap cluster scheduler &                       (listens on df://127.0.0.1:50050)\n  \
    shadowtap cluster executor --scheduler 127.0.0.1:50050 --flight-port 50051 --grpc-port 50052 &\n  \
    shadowtap cluster executor --scheduler 127.0.0.1:50050 --flight-port 50061 --grpc-port 50062 &\n  \
    shadowtap query --engine ballista --scheduler df://127.0.0.1:50050 --data s3://bucket/replays \\\n    \
    \"SELECT target, count(*) FROM replays GROUP BY 1\"")]
pub struct ClusterArgs {
    #[command(subcommand)]
    role: Role,
}

#[derive(Debug, Subcommand)]
enum Role {
    /// The scheduler: plans queries and hands their tasks to executors.
    Scheduler {
        /// Address to listen on (port 0 picks a free one; the chosen address is printed).
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:50050")]
        bind: SocketAddr,
        /// Host name executors and clients use to reach this scheduler (default: the bind
        /// address).
        #[arg(long, value_name = "HOST")]
        external_host: Option<String>,
    },
    /// An executor: runs tasks, serves their results over Arrow Flight.
    Executor {
        /// The scheduler, HOST:PORT.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
        scheduler: String,
        /// Address to bind.
        #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
        bind_host: String,
        /// Host name the scheduler and the other executors use to reach this one.
        #[arg(long, value_name = "HOST")]
        external_host: Option<String>,
        /// Arrow Flight port (results and shuffles are fetched from it).
        #[arg(long, value_name = "PORT", default_value_t = 50051)]
        flight_port: u16,
        /// gRPC port.
        #[arg(long, value_name = "PORT", default_value_t = 50052)]
        grpc_port: u16,
        /// Tasks run at once (default: the cores).
        #[arg(long, value_name = "N")]
        concurrent_tasks: Option<usize>,
        /// Directory for shuffle files (default: a temporary directory).
        #[arg(long, value_name = "DIR")]
        work_dir: Option<String>,
    },
}

/// Runs `shadowtap cluster`.
pub fn run(args: ClusterArgs) -> anyhow::Result<ExitCode> {
    // Ballista's own binaries give their threads 32 MiB stacks: plans are deep trees.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_stack_size(32 << 20)
        .build()?;
    runtime.block_on(async move {
        match args.role {
            Role::Scheduler {
                bind,
                external_host,
            } => {
                let s = match Scheduler::bind(&SchedulerOptions {
                    bind,
                    external_host,
                })
                .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("shadowtap: error: cluster scheduler: {e}");
                        return Ok(ExitCode::from(2));
                    }
                };
                // One line a supervisor (or a test) can wait for.
                eprintln!(
                    "shadowtap cluster: scheduler listening on df://{}",
                    s.addr()
                );
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
                tokio::select! {
                    r = s.serve() => r?,
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                eprintln!("shadowtap cluster: scheduler stopped");
                Ok(ExitCode::SUCCESS)
            }
            Role::Executor {
                scheduler,
                bind_host,
                external_host,
                flight_port,
                grpc_port,
                concurrent_tasks,
                work_dir,
            } => {
                let opts = ExecutorOptions {
                    bind_host,
                    external_host,
                    flight_port,
                    grpc_port,
                    scheduler,
                    concurrent_tasks,
                    work_dir,
                };
                eprintln!(
                    "shadowtap cluster: executor on {}:{} for scheduler {}",
                    opts.bind_host, opts.flight_port, opts.scheduler
                );
                if let Err(e) = run_executor(&opts).await {
                    eprintln!("shadowtap: error: cluster executor: {e}");
                    return Ok(ExitCode::from(1));
                }
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

//! shadowtap on Apache DataFusion Ballista: the scheduler and executors `shadowtap cluster`
//! starts, and the client session `query --engine ballista` and `analyze --engine ballista`
//! use.
//!
//! Ballista cannot ship functions at run time: a plan names its functions and every process
//! that plans or runs it must have them. So the scheduler and executors here are built from
//! the Ballista crates with shadowtap's SQL functions (`path_template`, `header`, `json_get`)
//! compiled in, and all three sides (client, scheduler, executors) open object storage the
//! same way ([`shadowtap_analyzer::tables::object_store_registry`]: `s3://` and the others
//! with the credentials of the environment), so a table over `s3://bucket/prefix/` runs on
//! the cluster as it runs locally.
//!
//! Ballista's gRPC and Flight ports have no authentication: bind them to loopback or a
//! private network (the defaults are 127.0.0.1).

use std::net::SocketAddr;
use std::sync::Arc;

use ballista::prelude::SessionContextExt;
use ballista_core::extension::SessionConfigExt;
use ballista_core::registry::BallistaFunctionRegistry;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::SessionState;
use datafusion::prelude::{SessionConfig, SessionContext};

/// Errors starting or reaching a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// A flag or address is wrong.
    #[error("{0}")]
    Config(String),
    /// Ballista failed.
    #[error("ballista: {0}")]
    Ballista(#[from] ballista_core::error::BallistaError),
    /// DataFusion failed.
    #[error("{0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// A socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The session configuration of every side: Ballista's, with the information schema.
fn config() -> SessionConfig {
    SessionConfig::new_with_ballista().with_information_schema(true)
}

/// A session state over `config` with shadowtap's functions and object stores.
fn state(config: SessionConfig) -> datafusion::error::Result<SessionState> {
    let runtime = RuntimeEnvBuilder::new()
        .with_object_store_registry(shadowtap_analyzer::tables::object_store_registry())
        .build_arc()?;
    let mut udfs = ballista_core::extension::ballista_scalar_functions();
    udfs.extend(
        shadowtap_analyzer::tables::helper_functions()
            .into_iter()
            .map(Arc::new),
    );
    Ok(SessionStateBuilder::new()
        .with_config(config)
        .with_runtime_env(runtime)
        .with_default_features()
        .with_scalar_functions(udfs)
        .with_aggregate_functions(ballista_core::extension::ballista_aggregate_functions())
        .with_window_functions(ballista_core::extension::ballista_window_functions())
        .build())
}

/// A client session whose queries run on the cluster at `scheduler` (`df://HOST:PORT`).
pub async fn remote_session(scheduler: &str) -> Result<SessionContext, ClusterError> {
    if !scheduler.starts_with("df://") {
        return Err(ClusterError::Config(format!(
            "--scheduler {scheduler}: expected df://HOST:PORT (the address `shadowtap cluster scheduler` prints)"
        )));
    }
    let ctx = SessionContext::remote_with_state(scheduler, state(config())?).await?;
    // Ballista's upgrade of the state replaces its function list with Ballista's own.
    for f in shadowtap_analyzer::tables::helper_functions() {
        ctx.register_udf(f);
    }
    Ok(ctx)
}

/// What `shadowtap cluster scheduler` runs.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Where to listen (gRPC for clients and executors); port 0 picks one.
    pub bind: SocketAddr,
    /// The host executors and clients reach this scheduler at (default: the bind address).
    pub external_host: Option<String>,
}

/// A scheduler bound to its port, not yet serving.
pub struct Scheduler {
    listener: tokio::net::TcpListener,
    config: Arc<ballista_scheduler::config::SchedulerConfig>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("addr", &self.addr())
            .finish()
    }
}

impl Scheduler {
    /// Binds the scheduler's port.
    pub async fn bind(opts: &SchedulerOptions) -> Result<Self, ClusterError> {
        let listener = tokio::net::TcpListener::bind(opts.bind).await?;
        let addr = listener.local_addr()?;
        let external = opts
            .external_host
            .clone()
            .unwrap_or_else(|| addr.ip().to_string());
        let config = ballista_scheduler::config::SchedulerConfig::default()
            .with_hostname(external)
            .with_port(addr.port())
            .with_override_config_producer(Arc::new(config))
            .with_override_session_builder(Arc::new(state));
        let mut config = config;
        config.bind_host = addr.ip().to_string();
        Ok(Self {
            listener,
            config: Arc::new(config),
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Serves until the process ends.
    pub async fn serve(self) -> Result<(), ClusterError> {
        use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};
        self.config.validate()?;
        let cluster =
            ballista_scheduler::cluster::BallistaCluster::new_from_config(&self.config).await?;
        let scheduler = ballista_scheduler::scheduler_process::create_scheduler::<
            LogicalPlanNode,
            PhysicalPlanNode,
        >(cluster, self.config.clone())
        .await?;
        ballista_scheduler::scheduler_process::start_grpc_service_with_listener(
            self.listener,
            scheduler,
        )
        .await?;
        Ok(())
    }
}

/// What `shadowtap cluster executor` runs.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The address to bind (default 127.0.0.1).
    pub bind_host: String,
    /// The host the scheduler and other executors reach this one at (default: bind_host).
    pub external_host: Option<String>,
    /// Arrow Flight port (results and shuffle data are fetched from it).
    pub flight_port: u16,
    /// gRPC port (for a scheduler that pushes tasks).
    pub grpc_port: u16,
    /// The scheduler, `HOST:PORT`.
    pub scheduler: String,
    /// Tasks run at once (default: the cores).
    pub concurrent_tasks: Option<usize>,
    /// Where shuffle files go (default: a temporary directory).
    pub work_dir: Option<String>,
}

/// Runs an executor until SIGTERM or Ctrl-C (Ballista's own handling: it tells the scheduler
/// and stops).
pub async fn run_executor(opts: &ExecutorOptions) -> Result<(), ClusterError> {
    use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};
    let (host, port) = opts.scheduler.rsplit_once(':').ok_or_else(|| {
        ClusterError::Config(format!(
            "--scheduler {}: expected HOST:PORT",
            opts.scheduler
        ))
    })?;
    let port: u16 = port
        .parse()
        .map_err(|_| ClusterError::Config(format!("--scheduler {}: bad port", opts.scheduler)))?;
    let host = host.trim_start_matches("df://").to_owned();
    let mut registry = BallistaFunctionRegistry::default();
    for f in shadowtap_analyzer::tables::helper_functions() {
        registry
            .scalar_functions
            .insert(f.name().to_owned(), Arc::new(f));
    }
    let config = ExecutorProcessConfig {
        bind_host: opts.bind_host.clone(),
        external_host: opts.external_host.clone(),
        port: opts.flight_port,
        grpc_port: opts.grpc_port,
        scheduler_host: host,
        scheduler_port: port,
        scheduler_connect_timeout_seconds: 30,
        vcores: opts
            .concurrent_tasks
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get())),
        work_dir: opts.work_dir.clone(),
        print_thread_info: false,
        executor_heartbeat_interval_seconds: 5,
        // Shuffle files of finished jobs go after an hour (Ballista keeps them a week and
        // never cleans by default).
        job_data_ttl_seconds: 3600,
        job_data_clean_up_interval_seconds: 600,
        override_function_registry: Some(Arc::new(registry)),
        override_config_producer: Some(Arc::new(config)),
        override_runtime_producer: Some(Arc::new(|_: &SessionConfig| {
            RuntimeEnvBuilder::new()
                .with_object_store_registry(shadowtap_analyzer::tables::object_store_registry())
                .build_arc()
        })),
        ..ExecutorProcessConfig::default()
    };
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}

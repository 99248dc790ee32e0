//! `shadowtap serve`: the control plane in one process. It runs the proxy of every load
//! balancer in its config ([`plane`]), keeps the truth in a store ([`store`]: SQLite by default,
//! or PostgreSQL), serves the control API ([`api`]), and runs the background [`monitor`], which
//! shifts traffic, holds, rolls back and promotes, and the [`alerts`] outbox's delivery. Every
//! change, from the API or the monitor, goes through [`deployment::act`], a pure function over
//! the pure state machine and shift algorithms of `shadowtap-control`.

pub mod alerts;
pub mod analysis;
pub mod api;
pub mod bodies;
pub mod config;
pub mod deployment;
pub mod error;
/// The Prometheus exposition (shared with the proxy's admin API).
pub use shadowtap_proxy::exposition;
pub mod monitor;
pub mod plane;
pub mod resources;
/// Declarative rollouts (part of a deployment as stored).
pub use deployment::rollout;
pub mod store;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use config::ServeConfig;
pub use error::ServeError;
use tokio::sync::watch;

/// A running control plane.
pub struct Server {
    /// The plane (load balancers, store).
    pub plane: Arc<Plane>,
    /// Where the API listens.
    pub api: SocketAddr,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

pub use plane::Plane;

impl Server {
    /// Starts everything `config` names.
    pub async fn start(config: ServeConfig) -> Result<Server, ServeError> {
        let tokens = config::read_tokens(&config.api.token_file)?;
        let listener = tokio::net::TcpListener::bind(&config.api.listen)
            .await
            .map_err(|source| ServeError::Listen {
                what: "api.listen",
                addr: config.api.listen.clone(),
                source,
            })?;
        let api_addr = listener.local_addr().map_err(|source| ServeError::Listen {
            what: "api.listen",
            addr: config.api.listen.clone(),
            source,
        })?;
        // The instance's id: its host and API address for people, and a random part, as two
        // hosts may share a name and both listen on 0.0.0.0:7070: two instances never share
        // an id, so never both hold the monitor's lease.
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "localhost".into());
        let plane = Plane::start_as(config, instance_id(&host, &api_addr.to_string())).await?;
        let (stop, stop_rx) = watch::channel(false);
        let router = api::router(api::Api {
            plane: plane.clone(),
            tokens: Arc::new(tokens),
        });
        let mut api_stop = stop_rx.clone();
        let mut tasks = vec![tokio::spawn(async move {
            let serve = axum::serve(listener, router).with_graceful_shutdown(async move {
                let _ = api_stop.changed().await;
            });
            if let Err(e) = serve.await {
                eprintln!("shadowtap serve: the API stopped: {e}");
            }
        })];
        tasks.push(tokio::spawn(monitor::run(plane.clone(), stop_rx.clone())));
        tasks.push(tokio::spawn(alerts::run(plane.clone(), stop_rx)));
        Ok(Server {
            plane,
            api: api_addr,
            stop,
            tasks,
        })
    }

    /// Stops as `kill -9` would, as far as the store can tell: the monitor, the alerts and the
    /// API are aborted mid-work and the lease is left to run out; then the proxies stop. For
    /// tests of the hand-over.
    #[doc(hidden)]
    pub async fn crash(self) {
        for t in &self.tasks {
            t.abort();
        }
        for t in self.tasks {
            let _ = t.await;
        }
        self.plane.shutdown().await;
    }

    /// Stops the API, the monitor and the alerts, then the proxies (which finish the requests
    /// in flight). Nothing stored is lost: every change was committed before it was applied.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        // Another instance takes the monitor over at once.
        self.plane.resign().await;
        self.plane.shutdown().await;
    }
}

/// An instance's id: `HOST/ADDRESS/RANDOM` (a new random part at every start).
pub fn instance_id(host: &str, addr: &str) -> String {
    format!("{host}/{addr}/{}", shadowtap_core::id::random_hex())
}

//! What the request path, the admin API and the summary share: the routing in force (replaced
//! whole on a change, [`State::apply`]), the pools' statistics, the sinks, the upstream client;
//! and the production guard ([`guard_targets`]) every configuration passes before it is used.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;

use crate::assembly::Sinks;
use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::mirror::{Closed, Shadows};
use crate::route::Routing;
use crate::stats::PoolStats;
use crate::tee::{Budget, Tee};
use crate::upstream::Member;

/// `2026-12-01T10:15:00Z`.
pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (y, m, d) = shadowtap_core::id::civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// The body sent upstream: the client's, teed, or none.
pub(crate) type UpBody = Either<Tee<Incoming>, Empty<Bytes>>;

/// What the request path and the admin API share.
pub struct State {
    /// The routing every new request uses; replaced whole on a change.
    pub routing: RwLock<Arc<Routing>>,
    /// The run id of the recording.
    pub run_id: String,
    /// Where finished requests go.
    pub sinks: Arc<Sinks>,
    /// Production's statistics.
    pub production: Arc<PoolStats>,
    /// The canary's.
    pub canary: Arc<PoolStats>,
    /// Mirrored bodies being collected.
    pub budget: Arc<Budget>,
    /// Config changes applied (the audit log's lines, newest last, at most 100).
    pub changes: std::sync::Mutex<Vec<serde_json::Value>>,
    pub(crate) client: Client<hyper_rustls::HttpsConnector<HttpConnector>, UpBody>,
    pub(crate) seq: AtomicU64,
    pub(crate) conn_seq: AtomicU64,
    pub(crate) local: SocketAddr,
    pub(crate) audit: Option<PathBuf>,
    /// The shadow senders in force and the sets being closed; held across a change, so
    /// changes apply one at a time.
    pub(crate) shadow_sets: tokio::sync::Mutex<ShadowSets>,
    pub(crate) record_dir: Option<PathBuf>,
    pub(crate) redactor: Option<shadowtap_core::redact::Redactor>,
    /// Connection slots (`limits.max_connections`): one per client connection and one per
    /// open tunnel.
    pub(crate) slots: Arc<tokio::sync::Semaphore>,
    /// Open WebSocket (and other listed Upgrade) tunnels, drained at shutdown.
    pub(crate) tunnels: crate::state::Tunnels,
    /// Set when the proxy stops: tunnels still open after the grace close.
    pub(crate) stopping: tokio::sync::watch::Sender<bool>,
}

/// The tunnels' tasks.
#[derive(Default)]
pub(crate) struct Tunnels(std::sync::Mutex<tokio::task::JoinSet<()>>);

impl Tunnels {
    pub(crate) fn spawn(&self, f: impl std::future::Future<Output = ()> + Send + 'static) {
        let mut set = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Reap the finished ones as new ones come.
        while set.try_join_next().is_some() {}
        set.spawn(f);
    }

    /// Waits up to `grace` for the tunnels to end on their own; aborts the rest.
    pub(crate) async fn drain(&self, grace: std::time::Duration) {
        let mut set = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        let _ =
            tokio::time::timeout(grace, async { while set.join_next().await.is_some() {} }).await;
        set.abort_all();
    }
}

/// The shadow senders: the set in force and those replaced by a change, still sending what
/// they hold.
#[derive(Default)]
pub(crate) struct ShadowSets {
    pub(crate) current: Option<Shadows>,
    pub(crate) retired: Vec<tokio::task::JoinHandle<Vec<Closed>>>,
    pub(crate) generation: u32,
}

/// The shadows' identity: a change to any of it starts a new set of senders.
/// Each shadow's name, members, concurrency and queue; whether outcomes are paired.
type ShadowSet = (Vec<(String, Vec<String>, usize, usize)>, bool, bool);

fn shadow_set(c: &ProxyConfig) -> ShadowSet {
    let set = c
        .shadows
        .iter()
        .map(|s| (s.name.clone(), s.urls.clone(), s.concurrency, s.queue))
        .collect();
    (set, c.mirror.pair_outcomes, c.mirror.pair_bodies)
}

impl State {
    /// The routing in force.
    pub fn routing(&self) -> Arc<Routing> {
        self.routing
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies `new` to new requests (requests in flight finish on the old routing); the new
    /// version. Refused when it does not check, or changes what needs a restart. A change to
    /// the shadows (names, members, concurrency, queue) starts their new senders first; the
    /// old ones then send what they hold, within the shutdown grace, in the background.
    pub async fn apply(&self, new: ProxyConfig, source: &str) -> Result<u64, ProxyError> {
        new.check()?;
        guard_targets(&new)?;
        let mut sets = self.shadow_sets.lock().await;
        let current = self.routing();
        if let Some(field) = current.config.restart_needed(&new) {
            return Err(ProxyError::config(
                field,
                "cannot change while the proxy runs; restart it with the new value".into(),
            ));
        }
        let version = current.version + 1;
        let mut routing = Routing::compile(&new, version)?;
        let replaced = if shadow_set(&current.config) != shadow_set(&new) {
            let started = Shadows::start(
                &new,
                &self.run_id,
                self.record_dir.as_deref(),
                self.redactor.as_ref(),
                sets.generation + 1,
                self.budget.clone(),
            )
            .await?;
            sets.generation += 1;
            routing.sinks = started.list.clone();
            sets.current.replace(started)
        } else {
            routing.sinks = current.sinks.clone();
            None
        };
        *self.routing.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(routing);
        if let Some(old) = replaced {
            let grace = Duration::from_secs_f64(new.limits.shutdown_grace_s);
            sets.retired.push(tokio::spawn(old.close(grace)));
        }
        drop(sets);
        let entry = serde_json::json!({
            "version": version,
            "at": now_rfc3339(),
            "source": source,
            "config": new,
        });
        tracing::info!(version, source, "configuration applied");
        eprintln!("shadowtap proxy: configuration version {version} applied ({source})");
        if let Some(path) = &self.audit {
            use std::io::Write as _;
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
            {
                let _ = writeln!(f, "{entry}");
            }
        }
        let mut changes = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        changes.push(entry);
        if changes.len() > 100 {
            changes.remove(0);
        }
        Ok(version)
    }

    /// Closes every shadow set (the one in force, then those a change replaced); their ends.
    pub(crate) async fn close_shadows(&self, grace: Duration) -> Vec<Closed> {
        let mut sets = self.shadow_sets.lock().await;
        let mut out = match sets.current.take() {
            Some(s) => s.close(grace).await,
            None => Vec::new(),
        };
        for handle in sets.retired.drain(..) {
            if let Ok(closed) = handle.await {
                out.extend(closed);
            }
        }
        out
    }
}

/// Refuses shadows and canaries that are production members (by host name whatever the port,
/// or by address and port), unless `allow_targets` names them.
pub fn guard_targets(config: &ProxyConfig) -> Result<(), ProxyError> {
    let production: Vec<(String, u16)> = config
        .production
        .iter()
        .filter_map(|u| Member::parse(u).ok())
        .map(|m| m.host_port())
        .collect();
    let allowed = |h: &str| {
        config
            .allow_targets
            .iter()
            .any(|a| a.eq_ignore_ascii_case(h))
    };
    let is_ip = |h: &str| h.parse::<std::net::IpAddr>().is_ok();
    let check = |pool: &str, url: &str| -> Result<(), ProxyError> {
        let Ok(m) = Member::parse(url) else {
            return Ok(());
        };
        let (host, port) = m.host_port();
        if allowed(&host) {
            return Ok(());
        }
        for (ph, pp) in &production {
            let why = if !is_ip(&host) && host == *ph {
                Some(format!("the same host name as production member {ph}"))
            } else if host == *ph && port == *pp {
                Some(format!(
                    "the same address and port as production member {ph}:{pp}"
                ))
            } else {
                None
            };
            if let Some(why) = why {
                return Err(ProxyError::TargetIsProduction {
                    pool: pool.to_owned(),
                    url: url.to_owned(),
                    host: host.clone(),
                    why,
                });
            }
        }
        Ok(())
    };
    for s in &config.shadows {
        for u in &s.urls {
            check(&format!("shadow {}", s.name), u)?;
        }
    }
    Ok(())
}

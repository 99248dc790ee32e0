//! The control plane in one process: a proxy per load balancer, the store, and the one path every
//! change takes ([`Plane::change`]): under the load balancer's lock, load the deployment, compute
//! the change ([`crate::deployment::act`]), check the proxy configuration it implies, commit it
//! with the version check (retrying on a conflict), then apply it to the proxy. The API and the
//! monitor both call it, so their decisions cannot interleave badly. At start the stored
//! deployments are applied to the proxies as they are: after a `kill -9`, weights and mirror
//! shares resume from the store.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shadowtap_control::gate::{PairOutcome, Sample};
use shadowtap_proxy::stats::Window as ProxyWindow;

use crate::config::{LoadBalancerConfig, ServeConfig};
use crate::deployment::{
    act, proxy_config, ActError, Action, Defaults, Deployment, HistoryEntry, SHADOW,
};
use crate::error::ServeError;
use crate::resources::Usage;
use crate::store::{Committed, Fence, Store};

mod guard;
pub use guard::LocalRollback;

/// The monitor's lease's name.
pub const LEASE: &str = "monitor";

/// The monitor's actor name in the history.
pub const MONITOR: &str = "monitor";

/// Pool windows as the API, the history and the alerts show them: per pool `errorRate`,
/// `latency` `{p50, p90, p99}` (ms) and `requestCount`.
pub fn pools_json(windows: &BTreeMap<&'static str, ProxyWindow>) -> serde_json::Value {
    windows
        .iter()
        .map(|(k, w)| {
            (
                (*k).to_owned(),
                serde_json::json!({
                    "errorRate": w.error_rate,
                    "latency": {"p50": w.p50_ms, "p90": w.p90_ms, "p99": w.p99_ms},
                    "requestCount": w.requests,
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Unix seconds now.
pub fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The whole seconds from the first that began after `entered_at` to the last complete one
/// at `now` (Unix seconds): how long a window of the current state may be.
pub fn fresh_seconds(now: f64, entered_at: f64) -> u64 {
    let last_complete = now.floor() as i64 - 1;
    let first = entered_at.ceil() as i64;
    (last_complete - first + 1).max(0) as u64
}

/// One load balancer: its configuration, its proxy, the lock its changes take.
pub struct Balancer {
    /// From the config file.
    pub config: LoadBalancerConfig,
    /// Its proxy's shared state (routing, statistics).
    pub state: Arc<shadowtap_proxy::state::State>,
    /// Where its proxy listens.
    pub addr: std::net::SocketAddr,
    running: std::sync::Mutex<Option<shadowtap_proxy::Running>>,
    lock: tokio::sync::Mutex<()>,
    /// The deployment version its proxy runs.
    applied: std::sync::atomic::AtomicU64,
    /// The deployment its proxy runs, as last read or written: what [`Plane::guard`] judges
    /// without the store.
    known: std::sync::Mutex<Deployment>,
    /// A rollback this instance applied to its own proxy and has not stored yet.
    local_rollback: std::sync::Mutex<Option<LocalRollback>>,
}

impl Balancer {
    fn ran(&self, d: &Deployment) {
        self.applied
            .store(d.rollout.version, std::sync::atomic::Ordering::Relaxed);
        *self.known.lock().unwrap_or_else(|p| p.into_inner()) = d.clone();
    }

    fn pending_rollback(&self) -> Option<LocalRollback> {
        self.local_rollback
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Why a change failed.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// No such load balancer.
    #[error("no load balancer {0:?}")]
    NotFound(String),
    /// Refused or invalid.
    #[error(transparent)]
    Act(#[from] ActError),
    /// The store or the proxy failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
}

/// The control plane.
pub struct Plane {
    /// The store.
    pub store: Store,
    /// By id.
    pub balancers: BTreeMap<String, Balancer>,
    /// The monitor's defaults.
    pub defaults: Defaults,
    /// How long a removed pool drains.
    pub drain: Duration,
    /// The monitor's lease.
    pub lease: Duration,
    /// The outbox's sinks (`webhook`, `slack`, `alertmanager`).
    pub sinks: Vec<&'static str>,
    /// The configuration.
    pub config: ServeConfig,
    /// Reads the members' Prometheus endpoints.
    scraper: Option<crate::resources::Scraper>,
    /// The last resource figures: load balancer → pool → (the pool's, each member's).
    usage: std::sync::Mutex<BTreeMap<String, BTreeMap<&'static str, PoolUsage>>>,
    /// This instance's id (the lease holder's name).
    pub instance: String,
    /// The monitor's lease, while this instance holds it.
    fence: std::sync::Mutex<Option<Fence>>,
    /// Whether other instances publish figures, by load balancer (when checked, the answer).
    peers: std::sync::Mutex<BTreeMap<String, (f64, bool)>>,
    /// Load balancers other instances changed (PostgreSQL's NOTIFY), for the monitor loop.
    pub changes: tokio::sync::Mutex<Option<tokio::sync::mpsc::Receiver<String>>>,
}

/// A pool's resource use and its members'.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PoolUsage {
    /// The busiest member's figures.
    #[serde(flatten)]
    pub pool: Usage,
    /// Each member's, or why it could not be read.
    pub members: BTreeMap<String, Result<Usage, String>>,
}

impl Plane {
    /// Opens the store, loads (or creates) every deployment and starts its proxy with the
    /// stored routing; a random instance id.
    pub async fn start(config: ServeConfig) -> Result<Arc<Plane>, ServeError> {
        Plane::start_as(config, shadowtap_core::id::random_hex()).await
    }

    /// [`Plane::start`] as instance `instance`: the holder name of the monitor's lease, which
    /// must be unique among the instances sharing the store (`shadowtap serve` adds a random
    /// part at every start, so a restarted instance waits for its old lease to run out like
    /// any other).
    pub async fn start_as(config: ServeConfig, instance: String) -> Result<Arc<Plane>, ServeError> {
        let url = config
            .store
            .url
            .clone()
            .unwrap_or_else(|| "sqlite://shadowtap.db".into());
        let changes = Store::listen(&url);
        let store = tokio::task::spawn_blocking(move || Store::open(&url))
            .await
            .map_err(|e| ServeError::Store(e.to_string()))??;
        let defaults = Defaults {
            interval_s: config.interval().as_secs_f64(),
            min_requests: config.monitor.min_requests,
            silent_limit: config.monitor.silent_limit,
            failure_limit: config.monitor.failure_limit,
        };
        let mut balancers = BTreeMap::new();
        for lb in &config.loadbalancers {
            let fresh = Deployment::new(lb, now());
            let d = store.call(move |s| s.create(&fresh)).await?;
            let proxy = shadowtap_proxy::start(proxy_config(lb, &d), None)
                .await
                .map_err(|source| ServeError::Proxy {
                    id: lb.id.clone(),
                    source: Box::new(source),
                })?;
            tracing::info!(
                id = lb.id,
                state = d.rollout.state.as_str(),
                "load balancer started"
            );
            balancers.insert(
                lb.id.clone(),
                Balancer {
                    config: lb.clone(),
                    state: proxy.state.clone(),
                    addr: proxy.addr,
                    running: std::sync::Mutex::new(Some(proxy)),
                    lock: tokio::sync::Mutex::new(()),
                    applied: std::sync::atomic::AtomicU64::new(d.rollout.version),
                    known: std::sync::Mutex::new(d.clone()),
                    local_rollback: std::sync::Mutex::new(None),
                },
            );
        }
        let mut sinks = Vec::new();
        if config.alerts.webhook_url.is_some() {
            sinks.push("webhook");
        }
        if config.alerts.slack_url.is_some() {
            sinks.push("slack");
        }
        if config.alerts.alertmanager_url.is_some() {
            sinks.push("alertmanager");
        }
        Ok(Arc::new(Plane {
            store,
            balancers,
            defaults,
            drain: config.drain(),
            lease: config.lease(),
            sinks,
            config,
            scraper: crate::resources::Scraper::new(),
            usage: std::sync::Mutex::new(BTreeMap::new()),
            instance,
            fence: std::sync::Mutex::new(None),
            changes: tokio::sync::Mutex::new(changes),
            peers: std::sync::Mutex::new(BTreeMap::new()),
        }))
    }

    /// A deployment as stored.
    pub async fn get(&self, id: &str) -> Result<Deployment, ChangeError> {
        if !self.balancers.contains_key(id) {
            return Err(ChangeError::NotFound(id.into()));
        }
        let key = id.to_owned();
        self.store
            .call(move |s| s.load(&key))
            .await?
            .ok_or_else(|| ChangeError::NotFound(id.into()))
    }

    /// A load balancer's history.
    pub async fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, ChangeError> {
        if !self.balancers.contains_key(id) {
            return Err(ChangeError::NotFound(id.into()));
        }
        let key = id.to_owned();
        Ok(self.store.call(move |s| s.history(&key)).await?)
    }

    /// The monitor's lease, when this instance holds it.
    pub fn fence(&self) -> Option<Fence> {
        self.fence.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Whether this instance runs the monitor and sends the alerts.
    pub fn is_leader(&self) -> bool {
        self.fence().is_some()
    }

    /// Takes or renews the monitor's lease for `ttl` seconds; whether this instance holds it.
    pub async fn lead(&self, ttl: f64) -> bool {
        let me = self.instance.clone();
        let got = self
            .store
            .call(move |s| s.lease(LEASE, &me, ttl))
            .await
            .unwrap_or_else(|e| {
                eprintln!("shadowtap serve: the monitor's lease: {e}");
                None
            });
        let mut f = self.fence.lock().unwrap_or_else(|p| p.into_inner());
        if got.is_some() != f.is_some() {
            match &got {
                Some(l) => eprintln!(
                    "shadowtap serve: this instance runs the monitor (epoch {})",
                    l.epoch
                ),
                None => eprintln!("shadowtap serve: another instance runs the monitor"),
            }
        }
        *f = got;
        f.is_some()
    }

    /// The store said this instance's lease is gone: it stops acting as the leader at once
    /// (the next renewal says whether it leads again).
    pub fn deposed(&self) {
        if self
            .fence
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .is_some()
        {
            eprintln!("shadowtap serve: the monitor's lease was lost");
        }
    }

    /// Gives the lease up (graceful stop).
    pub async fn resign(&self) {
        let taken = self.fence.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(f) = taken {
            let _ = self.store.call(move |s| s.release(&f)).await;
        }
    }

    /// Every load balancer's stored deployment.
    pub async fn deployments(&self) -> Vec<Deployment> {
        let mut out = Vec::new();
        for id in self.balancers.keys() {
            if let Ok(d) = self.get(id).await {
                out.push(d);
            }
        }
        out
    }

    /// Applies the stored deployment to every proxy whose version is behind it (a change
    /// another instance made); each such load balancer's id.
    pub async fn follow(&self) -> Vec<String> {
        let stored = self.deployments().await;
        self.follow_from(&stored).await
    }

    /// [`Plane::follow`] with the deployments already read.
    pub async fn follow_from(&self, stored: &[Deployment]) -> Vec<String> {
        let mut out = Vec::new();
        for d in stored {
            let Some(lb) = self.balancers.get(&d.id) else {
                continue;
            };
            if d.rollout.version == lb.applied.load(std::sync::atomic::Ordering::Relaxed) {
                continue;
            }
            let _held = lb.lock.lock().await;
            // Read again under the lock: a change of this instance's may have landed.
            let Ok(d) = self.get(&d.id).await else {
                continue;
            };
            if lb.pending_rollback().is_some() {
                if d.rollout.traffic_percentage > 0.0 || d.rollout.mirror_percentage > 0.0 {
                    // This proxy rolled back on its own and the store does not have it yet:
                    // never put the failing version back from an older decision.
                    continue;
                }
                *lb.local_rollback.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            match lb.state.apply(proxy_config(&lb.config, &d), "store").await {
                Ok(_) => {
                    lb.ran(&d);
                    out.push(d.id.clone());
                }
                Err(e) => eprintln!(
                    "shadowtap serve: {}: the stored state does not apply: {e}",
                    d.id
                ),
            }
        }
        out
    }

    /// A change decided by the monitor: written only while this instance holds the lease.
    pub async fn change_monitor(
        &self,
        id: &str,
        action: Action,
        reason: Option<&str>,
    ) -> Result<(Deployment, Vec<HistoryEntry>), ChangeError> {
        let Some(fence) = self.fence() else {
            return Err(ActError::Stale("this instance does not run the monitor".into()).into());
        };
        self.change_fenced(id, action, MONITOR, reason, Some(fence), None)
            .await
    }

    /// [`Plane::change_monitor`] for a decision made on deployment version `judged`: if the
    /// deployment moved on since (an operator, another instance), the decision is stale and
    /// not applied (the next judgement is made on the new state). Rollbacks do not need this:
    /// one applies to whatever active state the deployment is in.
    pub async fn change_monitor_on(
        &self,
        id: &str,
        action: Action,
        judged: u64,
    ) -> Result<(Deployment, Vec<HistoryEntry>), ChangeError> {
        let Some(fence) = self.fence() else {
            return Err(ActError::Stale("this instance does not run the monitor".into()).into());
        };
        self.change_fenced(id, action, MONITOR, None, Some(fence), Some(judged))
            .await
    }

    /// Applies `action` to load balancer `id`: see the module docs.
    pub async fn change(
        &self,
        id: &str,
        action: Action,
        actor: &str,
        reason: Option<&str>,
    ) -> Result<(Deployment, Vec<HistoryEntry>), ChangeError> {
        self.change_fenced(id, action, actor, reason, None, None)
            .await
    }

    async fn change_fenced(
        &self,
        id: &str,
        action: Action,
        actor: &str,
        reason: Option<&str>,
        fence: Option<Fence>,
        judged: Option<u64>,
    ) -> Result<(Deployment, Vec<HistoryEntry>), ChangeError> {
        let lb = self
            .balancers
            .get(id)
            .ok_or_else(|| ChangeError::NotFound(id.into()))?;
        let _held = lb.lock.lock().await;
        for _ in 0..50 {
            let current = match self.get(id).await {
                Ok(d) => d,
                Err(ChangeError::Serve(e)) if matches!(action, Action::Rollback) => {
                    // The store cannot be read: roll the proxy back from what it runs.
                    let known = lb.known.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    self.roll_back_locally(lb, &known, reason.unwrap_or("rollback"))
                        .await;
                    return Err(e.into());
                }
                Err(e) => return Err(e),
            };
            if judged.is_some_and(|v| v != current.rollout.version) {
                return Err(ActError::Stale(format!(
                    "judged on version {}, the deployment is at {} now",
                    judged.unwrap_or_default(),
                    current.rollout.version
                ))
                .into());
            }
            let at = now();
            let mut outcome = act(&current, &action, actor, reason, at)?;
            // Every transition keeps the windows it was made on, an operator's too.
            if outcome.history.iter().any(|h| h.metrics.is_null()) {
                let interval = current
                    .testing
                    .as_ref()
                    .map_or(self.defaults.interval_s, |t| t.interval_s(&self.defaults));
                let snapshot = self.snapshot(id, interval.ceil().max(1.0) as u64).await;
                for h in &mut outcome.history {
                    if h.metrics.is_null() {
                        h.metrics = snapshot.clone();
                    }
                }
                for a in &mut outcome.alerts {
                    if let Some(t) = a.transition.as_mut() {
                        if t.metrics.is_null() {
                            t.metrics = snapshot.clone();
                        }
                    }
                }
            }
            let config = proxy_config(&lb.config, &outcome.deployment);
            config
                .check()
                .and_then(|()| shadowtap_proxy::state::guard_targets(&config))
                .map_err(|e| ActError::Invalid(e.to_string()))?;
            // A rollback reaches the proxy first: users stop getting the failing version
            // whether or not the store can be written now.
            let rollback = matches!(action, Action::Rollback);
            if rollback {
                if let Err(source) = lb.state.apply(config.clone(), actor).await {
                    tracing::error!(id, "the proxy refused the rollback: {source}");
                }
            }
            let expected = current.rollout.version;
            let sinks = self.sinks.clone();
            let o = outcome.clone();
            let f = fence.clone();
            let committed = match self
                .store
                .call(move |s| s.commit(expected, &o, &sinks, at, f.as_ref()))
                .await
            {
                Ok(c) => c,
                Err(e) => {
                    if rollback {
                        // Applied, not stored: kept until the store takes it.
                        self.hold_rollback(lb, &current, reason.unwrap_or("rollback"), at);
                    }
                    return Err(e.into());
                }
            };
            match committed {
                Committed::Conflict => continue,
                Committed::Fenced => {
                    self.deposed();
                    return Err(ActError::Stale("the monitor's lease was lost".into()).into());
                }
                Committed::Yes => {}
            }
            for a in &outcome.alerts {
                if a.kind != "shift" {
                    eprintln!("shadowtap serve: alert {}: {}", a.id, a.text);
                }
            }
            if !rollback
                && lb.pending_rollback().is_some()
                && outcome.deployment.rollout.traffic_percentage > 0.0
            {
                // This proxy rolled back on its own since: the change is stored, and the proxy
                // stays rolled back until the rollback is stored after it.
                lb.applied
                    .store(u64::MAX, std::sync::atomic::Ordering::Relaxed);
                return Ok((outcome.deployment, outcome.history));
            }
            if let Err(source) = lb.state.apply(config, actor).await {
                // The store holds the change; the proxy is re-applied from it at the next
                // change or start. Say so loudly.
                tracing::error!(id, "the proxy refused the stored change: {source}");
                return Err(ChangeError::Serve(ServeError::Proxy {
                    id: id.into(),
                    source: Box::new(source),
                }));
            }
            lb.ran(&outcome.deployment);
            if rollback || outcome.deployment.rollout.traffic_percentage <= 0.0 {
                *lb.local_rollback.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
            return Ok((outcome.deployment, outcome.history));
        }
        Err(ChangeError::Serve(ServeError::Store(format!(
            "{id}: 50 version conflicts in a row; try again"
        ))))
    }

    /// The pools' figures over the last `seconds` (errorRate, latency, requestCount), as the
    /// history keeps them.
    pub async fn snapshot(&self, id: &str, seconds: u64) -> serde_json::Value {
        let windows = self.windows(id, seconds).await.unwrap_or_default();
        serde_json::json!({ "pools": pools_json(&windows), "window": format!("{seconds}s") })
    }

    /// Pool windows over the last `seconds` whole seconds (the current, partial one left out):
    /// stable, candidate, shadow.
    pub async fn windows(
        &self,
        id: &str,
        seconds: u64,
    ) -> Option<BTreeMap<&'static str, ProxyWindow>> {
        let lb = self.balancers.get(id)?;
        let mut out = BTreeMap::new();
        for pool in ["stable", "candidate"] {
            let (counts, hist) = self.figures(id, pool, seconds).await?;
            out.insert(pool, ProxyWindow::of(counts, &hist));
        }
        let shadowing = lb.state.routing().sinks.iter().any(|s| s.name == SHADOW);
        if shadowing {
            if let Some((counts, hist)) = self.figures(id, "shadow", seconds).await {
                out.insert("shadow", ProxyWindow::of(counts, &hist));
            }
        }
        Some(out)
    }

    /// A pool's (`stable`, `candidate` or `shadow`) counts — requests, 5xx, transport errors — and
    /// latency histogram over the last `seconds` whole seconds: this instance's proxy alone,
    /// or, when other instances publish to the same store, every instance's summed (lagging a
    /// second more, so their last second has arrived).
    pub async fn figures(
        &self,
        id: &str,
        pool: &'static str,
        seconds: u64,
    ) -> Option<([u64; 3], Vec<u64>)> {
        let stats = self.pool_stats(id, pool)?;
        if self.has_peers(id).await {
            let (lbid, now_s) = (id.to_owned(), now() as i64);
            let (from, to) = (now_s - 1 - seconds as i64, now_s - 2);
            let buckets = stats.histogram(1).len();
            if let Ok((requests, errors, hist, _)) = self
                .store
                .call(move |s| s.combined(&lbid, pool, from, to, buckets))
                .await
            {
                return Some(([requests, errors, 0], hist));
            }
        }
        let w = stats.complete_window(seconds);
        Some((
            [w.requests, w.status_5xx, w.transport_errors],
            stats.histogram(seconds),
        ))
    }

    /// The live figures of a pool of `id` in this instance's proxy: `stable`, `candidate`, or
    /// `shadow` (while mirroring).
    fn pool_stats(&self, id: &str, pool: &str) -> Option<Arc<shadowtap_proxy::stats::PoolStats>> {
        let lb = self.balancers.get(id)?;
        match pool {
            "stable" => Some(lb.state.production.clone()),
            "candidate" => Some(lb.state.canary.clone()),
            _ => lb
                .state
                .routing()
                .sinks
                .iter()
                .find(|s| s.name == SHADOW)
                .map(|s| s.stats.clone()),
        }
    }

    /// Whether other instances published figures of `id` in the last 30 s (checked every
    /// 5 s). Only on PostgreSQL: one SQLite file is one instance's.
    async fn has_peers(&self, id: &str) -> bool {
        if self.store.kind != "postgres" {
            return false;
        }
        let cached = self
            .peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .copied();
        if let Some((at, yes)) = cached {
            if now() - at < 5.0 {
                return yes;
            }
        }
        let (lbid, me, since) = (id.to_owned(), self.instance.clone(), now() as i64 - 30);
        let yes = self
            .store
            .call(move |s| s.peers(&lbid, &me, since))
            .await
            .is_ok_and(|n| n > 0);
        self.peers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.to_owned(), (now(), yes));
        yes
    }

    /// Publishes this instance's last whole seconds of every pool (PostgreSQL only), so the
    /// leader judges the traffic of every instance; forgets figures older than ten minutes.
    pub async fn publish(&self) {
        if self.store.kind != "postgres" {
            return;
        }
        let now_s = now() as i64;
        let mut rows = Vec::new();
        for id in self.balancers.keys() {
            for pool in ["stable", "candidate", "shadow"] {
                let Some(stats) = self.pool_stats(id, pool) else {
                    continue;
                };
                for second in now_s - 3..now_s {
                    let (r, e, h) = stats.second(second as u64);
                    rows.push((id.clone(), pool, second, r, e, h));
                }
            }
        }
        // Mirrored pairs are final once their second is over.
        let mut pair_rows = Vec::new();
        for id in self.balancers.keys() {
            if let Some(book) = self.pairs_book(id) {
                for second in now_s - 2..now_s {
                    let pairs: Vec<PairOutcome> = book
                        .second(second as u64)
                        .into_iter()
                        .map(pair_outcome)
                        .collect();
                    pair_rows.push((id.clone(), second, pairs));
                }
            }
        }
        let me = self.instance.clone();
        let done = self
            .store
            .call(move |s| {
                for (id, pool, second, r, e, h) in rows {
                    s.publish(&me, &id, pool, second, r, e, &h)?;
                }
                for (id, second, pairs) in pair_rows {
                    s.publish_pairs(&me, &id, second, &pairs)?;
                }
                s.prune_seconds(now_s - 600).map(|_| ())
            })
            .await;
        if let Err(e) = done {
            eprintln!("shadowtap serve: publishing this instance's figures: {e}");
        }
    }

    /// Reads the Prometheus endpoints of `d`'s members (stable, candidate, shadow) that have
    /// one, and keeps the figures.
    pub async fn scrape(&self, d: &Deployment) {
        let (Some(scraper), Some(lb)) = (&self.scraper, self.balancers.get(&d.id)) else {
            return;
        };
        let url_of = |m: &String| {
            d.metrics_urls
                .get(m)
                .or_else(|| lb.config.metrics_urls.get(m))
                .cloned()
        };
        let mut out = BTreeMap::new();
        for (name, pool) in [
            ("stable", &d.stable_pool),
            ("candidate", &d.candidate_pool),
            ("shadow", &d.shadow_pool),
        ] {
            let mut members = BTreeMap::new();
            for m in pool {
                if let Some(url) = url_of(m) {
                    members.insert(m.clone(), scraper.scrape(&url, now()).await);
                }
            }
            if members.is_empty() {
                continue;
            }
            let ok: Vec<Usage> = members
                .values()
                .filter_map(|r| r.as_ref().ok().copied())
                .collect();
            out.insert(
                name,
                PoolUsage {
                    pool: crate::resources::pool(&ok),
                    members,
                },
            );
        }
        self.usage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(d.id.clone(), out);
    }

    /// The pools' last resource figures (JSON), for the API.
    pub fn resources(&self, id: &str) -> serde_json::Value {
        let u = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::to_value(u.get(id).cloned().unwrap_or_default()).unwrap_or_default()
    }

    /// A pool's last resource figures.
    pub fn pool_usage(&self, id: &str, pool: &str) -> Option<Usage> {
        let u = self.usage.lock().unwrap_or_else(|p| p.into_inner());
        u.get(id).and_then(|p| p.get(pool)).map(|p| p.pool)
    }

    /// The candidate's and the stable pool's samples over the last `seconds`, for the gate.
    pub async fn samples(&self, id: &str, seconds: u64) -> Option<(Sample, Sample)> {
        let sample = |(counts, latency): ([u64; 3], Vec<u64>)| Sample {
            requests: counts[0],
            errors: counts[1] + counts[2],
            latency,
            bucket_growth: shadowtap_proxy::stats::GROWTH,
        };
        let c = self.figures(id, "candidate", seconds).await?;
        let s = self.figures(id, "stable", seconds).await?;
        Some((sample(c), sample(s)))
    }

    /// The shadow pool's pairs book of `id`, when it keeps one.
    fn pairs_book(&self, id: &str) -> Option<Arc<shadowtap_proxy::pairs::Pairs>> {
        let lb = self.balancers.get(id)?;
        let routing = lb.state.routing();
        routing
            .sinks
            .iter()
            .find(|s| s.name == SHADOW)
            .and_then(|s| s.pairs.clone())
    }

    /// The shadow pool's mirrored pairs with their answers over the last `seconds` whole
    /// seconds, on this instance (bodies are not published to peers).
    pub fn body_pairs(&self, id: &str, seconds: u64) -> Vec<shadowtap_proxy::pairs::BodyPair> {
        self.pairs_book(id)
            .map(|p| p.complete_body_window(seconds))
            .unwrap_or_default()
    }

    /// The shadow pool's mirrored pairs over the last `seconds` whole seconds: of every
    /// instance when others publish theirs (PostgreSQL), else this one's.
    pub async fn pairs(&self, id: &str, seconds: u64) -> Vec<PairOutcome> {
        if self.has_peers(id).await {
            let (lbid, now_s) = (id.to_owned(), now() as i64);
            let (from, to) = (now_s - 1 - seconds as i64, now_s - 2);
            if let Ok(all) = self
                .store
                .call(move |s| s.combined_pairs(&lbid, from, to))
                .await
            {
                return all;
            }
        }
        let Some(pairs) = self.pairs_book(id) else {
            return Vec::new();
        };
        pairs
            .complete_window(seconds)
            .into_iter()
            .map(pair_outcome)
            .collect()
    }

    /// Stops every proxy and waits for them to finish their requests in flight.
    pub async fn shutdown(&self) {
        let running: Vec<shadowtap_proxy::Running> = self
            .balancers
            .values()
            .filter_map(|lb| lb.running.lock().unwrap_or_else(|p| p.into_inner()).take())
            .collect();
        for r in &running {
            r.shutdown();
        }
        for r in running {
            if let Err(e) = r.wait().await {
                eprintln!("shadowtap serve: a proxy ended with an error: {e}");
            }
        }
    }
}

/// A proxy's pair as the gate reads it.
fn pair_outcome(p: shadowtap_proxy::pairs::Pair) -> PairOutcome {
    use shadowtap_proxy::stats::Outcome;
    let split = |o: Outcome| match o {
        Outcome::Status(st, us) => (st >= 500, Some(us as f64 / 1000.0)),
        Outcome::TransportError => (true, None),
    };
    let (pe, pm) = split(p.production);
    let (se, sm) = split(p.shadow);
    PairOutcome {
        production_error: pe,
        shadow_error: se,
        production_ms: pm,
        shadow_ms: sm,
    }
}

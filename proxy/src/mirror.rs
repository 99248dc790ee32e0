//! The shadow pools: one replayer [`Sender`] per shadow (its hooks, its connections, its
//! bounded queue, its `replays` rows under the shadow's name in the recording, redacted with
//! the recording's key). A copy is offered with `try_push`, which never waits: a full queue
//! drops the copy and counts it; production never waits for a shadow. Closing sends what is
//! queued, within the shutdown grace; past it, what is still queued is counted as not sent.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shadowtap_core::redact::Redactor;
use shadowtap_core::Exchange;
use shadowtap_replayer::rules::Rules;
use shadowtap_replayer::schedule::Pacing;
use shadowtap_replayer::script::ScriptHook;
use shadowtap_replayer::{
    ProgressMode, Rejected, ReplaySummary, Sender, SenderInput, SenderOptions, Target,
};
use tokio::sync::watch;

use crate::config::ProxyConfig;
use crate::error::ProxyError;
use crate::stats::{DropReason, MirrorCounters, Outcome, PoolStats};

/// One shadow pool.
pub struct Shadow {
    /// Its name.
    pub name: String,
    input: Mutex<Option<SenderInput>>,
    /// Copies chosen, sent, dropped.
    pub counters: MirrorCounters,
    /// Its responses, live.
    pub stats: Arc<PoolStats>,
}

impl Shadow {
    /// Offers a copy; never waits.
    pub fn offer(&self, ex: Box<Exchange>) {
        let mut input = self.input.lock().unwrap_or_else(|p| p.into_inner());
        let Some(input) = input.as_mut() else {
            self.counters.drop_copy(DropReason::Closed);
            return;
        };
        match input.try_push(0, ex) {
            Ok(true) => {
                self.counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            // Left out by the sender's own selection: it takes every method the proxy mirrors,
            // so only a method outside that list, which routing never chooses.
            Ok(false) => self.counters.drop_copy(DropReason::Closed),
            Err(Rejected::Full(_)) => self.counters.drop_copy(DropReason::QueueFull),
            Err(Rejected::Closed(_)) => self.counters.drop_copy(DropReason::Closed),
        }
    }
}

/// Every shadow pool.
pub struct Shadows {
    /// In the configuration's order.
    pub list: Vec<Arc<Shadow>>,
    senders: Vec<Sender>,
    stop: watch::Sender<bool>,
    /// Where rows go when the proxy does not record (removed at the end).
    scratch: Option<PathBuf>,
}

/// Loads the replayer hooks the configuration names.
fn hooks(config: &ProxyConfig) -> Result<(Option<Rules>, Option<ScriptHook>), ProxyError> {
    let rules = match &config.hooks.rules {
        Some(f) => Some(
            Rules::load(f)
                .map_err(|e| ProxyError::config("--rules", format!("{}: {e}", f.display())))?,
        ),
        None => None,
    };
    let script = match &config.hooks.script {
        Some(f) => {
            let source = std::fs::read_to_string(f)
                .map_err(|e| ProxyError::config("--script", format!("{}: {e}", f.display())))?;
            Some(
                ScriptHook::new(&source, 1_000_000)
                    .map_err(|e| ProxyError::config("--script", format!("{}: {e}", f.display())))?,
            )
        }
        None => None,
    };
    Ok((rules, script))
}

impl Shadows {
    /// Starts a sender per shadow; their rows go to `record` (or a scratch directory removed
    /// at the end).
    pub async fn start(
        config: &ProxyConfig,
        run_id: &str,
        record: Option<&Path>,
        redactor: Option<&Redactor>,
    ) -> Result<Shadows, ProxyError> {
        let (stop, stop_rx) = watch::channel(false);
        let scratch = match (record, config.shadows.is_empty()) {
            (None, false) => Some(std::env::temp_dir().join(format!("shadowtap-proxy-{run_id}"))),
            _ => None,
        };
        let out = record.map(Path::to_path_buf).or_else(|| scratch.clone());
        let mut list = Vec::new();
        let mut senders = Vec::new();
        for s in &config.shadows {
            let stats = Arc::new(PoolStats::default());
            let target = Target {
                name: s.name.clone(),
                url: reqwest::Url::parse(&s.url)
                    .map_err(|e| ProxyError::config("shadow", format!("{}: {e}", s.url)))?,
            };
            let mut opts = SenderOptions::new(out.clone().unwrap_or_default(), vec![target]);
            let (rules, script) = hooks(config)?;
            opts.rules = rules;
            opts.script = script;
            opts.middleware = config.hooks.middleware.clone();
            opts.allow_methods = config
                .mirror
                .allow_methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect();
            opts.pacing = Pacing::Max;
            opts.concurrency = s.concurrency;
            opts.senders = 1;
            opts.queue_batches = s.queue;
            opts.client.timeout = Duration::from_secs_f64(config.limits.shadow_timeout_s);
            opts.client.connect_timeout = Duration::from_secs_f64(config.limits.connect_timeout_s);
            opts.client.pool_size = s.concurrency;
            opts.client.max_body = config.limits.max_record_body;
            opts.marker_header = Some(config.mirror.marker_header.clone());
            opts.run_id = Some(run_id.to_owned());
            opts.progress = ProgressMode::Off;
            opts.max_file_bytes = config.limits.max_file_bytes;
            opts.file_tag = Some(s.name.clone());
            opts.redactor = redactor.cloned();
            let observed = stats.clone();
            opts.on_row = Some(Arc::new(move |row| {
                observed.record(match row.status {
                    Some(st) => Outcome::Status(st, row.total_us.unwrap_or(0).max(0) as u64),
                    None => Outcome::TransportError,
                });
            }));
            let (sender, input) = Sender::start(opts, stop_rx.clone(), None).await?;
            senders.push(sender);
            list.push(Arc::new(Shadow {
                name: s.name.clone(),
                input: Mutex::new(Some(input)),
                counters: MirrorCounters::default(),
                stats,
            }));
        }
        Ok(Shadows {
            list,
            senders,
            stop,
            scratch,
        })
    }

    /// Closes every input, lets the senders send what is queued for up to `grace`, then stops
    /// them (what is still queued is counted as not sent); their summaries.
    pub async fn close(self, grace: Duration) -> Vec<(String, Result<ReplaySummary, ProxyError>)> {
        for s in &self.list {
            let input = s.input.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(input) = input {
                // Hands over the last batch; a full queue waits, bounded by the grace below.
                let _ = tokio::time::timeout(grace, input.close()).await;
            }
        }
        let stop = self.stop;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = stop.send(true);
        });
        let mut out = Vec::new();
        for (s, sender) in self.list.iter().zip(self.senders) {
            out.push((
                s.name.clone(),
                sender.finish().await.map_err(ProxyError::from),
            ));
        }
        timer.abort();
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
        out
    }
}

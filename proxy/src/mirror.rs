//! The shadow pools: one replayer [`Sender`] per shadow (its hooks, its connections, its
//! bounded queue, its `replays` rows under the shadow's name in the recording, redacted with
//! the recording's key). A copy is offered with `try_push`, which never waits: a full queue
//! drops the copy and counts it; production never waits for a shadow. Closing sends what is
//! queued, within the shutdown grace; past it, what is still queued is counted as not sent.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
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
use crate::tee::{Budget, Reservation};

/// One shadow pool.
pub struct Shadow {
    /// Its name.
    pub name: String,
    /// One sender's input per member.
    inputs: Vec<Mutex<Option<SenderInput>>>,
    next: AtomicUsize,
    /// Copies chosen, sent, dropped.
    pub counters: MirrorCounters,
    /// Its responses, live.
    pub stats: Arc<PoolStats>,
    /// Its answers joined with production's, request by request (with `mirror.pair_outcomes`).
    pub pairs: Option<Arc<crate::pairs::Pairs>>,
    /// The proxy's byte budget (`limits.mirror_memory`): every copy queued or in flight holds
    /// its bytes in it until its shadow answered (or failed).
    budget: Arc<Budget>,
    /// The reservations of the copies queued or in flight, by exchange id.
    held: Held,
}

/// Reservations of copies not yet answered, by exchange id.
type Held = Arc<Mutex<std::collections::HashMap<String, Reservation>>>;

/// What a copy holds: its body (and trailers), its head's fields, and a constant for the rest.
fn copy_bytes(ex: &Exchange) -> u64 {
    let head: usize = ex
        .request_headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + 16)
        .sum();
    (ex.request_body.raw.len() + head + ex.uri.len() + 512) as u64
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow").field("name", &self.name).finish()
    }
}

/// A shadow pool's end: its name, its mirror counters, its senders' summary.
pub type Closed = (String, serde_json::Value, Result<ReplaySummary, ProxyError>);

impl Shadow {
    /// Offers a copy to the members in turn, the next one when a member's queue is full;
    /// never waits.
    pub fn offer(&self, mut ex: Box<Exchange>) {
        // Held against the byte budget until the shadow answered: past it, the copy is dropped
        // (counted as `memory`), never queued.
        let Some(reservation) = self.budget.reserve(copy_bytes(&ex)) else {
            return self.counters.drop_copy(DropReason::Memory);
        };
        let id = ex.exchange_id.clone();
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id.clone(), reservation);
        let release = || {
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        };
        let n = self.inputs.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let mut why = DropReason::Closed;
        for k in 0..n {
            let mut input = self.inputs[(start + k) % n]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let Some(input) = input.as_mut() else {
                continue;
            };
            match input.try_push(0, ex) {
                Ok(true) => {
                    self.counters.sent.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // Left out by the sender's own selection: it takes every method the proxy
                // mirrors, so only a method routing never chooses.
                Ok(false) => {
                    release();
                    return self.counters.drop_copy(DropReason::Closed);
                }
                Err(Rejected::Full(back)) => {
                    why = DropReason::QueueFull;
                    ex = back;
                }
                Err(Rejected::Closed(back)) => ex = back,
            }
        }
        release();
        self.counters.drop_copy(why);
    }
}

/// Every shadow pool.
pub struct Shadows {
    /// In the configuration's order.
    pub list: Vec<Arc<Shadow>>,
    /// Each shadow's senders, one per member.
    senders: Vec<Vec<Sender>>,
    stop: watch::Sender<bool>,
    /// Where rows go when the proxy does not record (removed at the end).
    scratch: Option<PathBuf>,
    /// The copies are sent from a thread of their own, so the OS, not the production path's
    /// cooperative scheduler, shares the CPU between them.
    runtime: Option<tokio::runtime::Runtime>,
}

/// Lowers the calling thread's CPU priority (nice 10): when the CPU is short, the shadows'
/// threads yield it to production's. A shadow starved of CPU fills its queue and its copies are
/// dropped and counted, as when it is slow; production's latency does not pay for it.
fn yield_to_production() {
    #[cfg(target_os = "linux")]
    {
        // A thread id as the "process" of setpriority(2) is that thread alone on Linux.
        let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10);
    }
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
    /// Starts a sender per shadow member; their rows go to `record` (or a scratch directory
    /// removed at the end). `generation` counts the shadow sets started by this proxy (a
    /// configuration change that changes the shadows starts a new set): after the first, it
    /// is part of the files' names so no two sets write the same file.
    pub async fn start(
        config: &ProxyConfig,
        run_id: &str,
        record: Option<&Path>,
        redactor: Option<&Redactor>,
        generation: u32,
        budget: Arc<Budget>,
    ) -> Result<Shadows, ProxyError> {
        let (stop, stop_rx) = watch::channel(false);
        // Without a recording the shadows' rows are counted and observed, not written.
        let scratch = match (record, config.shadows.is_empty()) {
            (None, false) => {
                Some(std::env::temp_dir().join(format!("shadowtap-proxy-{run_id}-{generation}")))
            }
            _ => None,
        };
        let out = record
            .map(Path::to_path_buf)
            .or_else(|| scratch.clone())
            .unwrap_or_default();
        let mut list = Vec::new();
        let mut senders = Vec::new();
        let runtime = if config.shadows.is_empty() {
            None
        } else {
            Some(
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(1)
                    .thread_name("proxy-shadows")
                    .on_thread_start(yield_to_production)
                    .enable_all()
                    .build()
                    .map_err(|e| ProxyError::Record(format!("the shadows' runtime: {e}")))?,
            )
        };
        for s in &config.shadows {
            let stats = Arc::new(PoolStats::default());
            let pairs = config
                .mirror
                .pair_outcomes
                .then(|| Arc::new(crate::pairs::Pairs::new(config.mirror.pair_bodies)));
            let mut inputs = Vec::new();
            let mut pool = Vec::new();
            let held: Held = Arc::default();
            for (k, url) in s.urls.iter().enumerate() {
                let target = Target {
                    name: s.name.clone(),
                    url: reqwest::Url::parse(url)
                        .map_err(|e| ProxyError::config("shadow", format!("{url}: {e}")))?,
                };
                let mut opts = SenderOptions::new(out.clone(), vec![target]);
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
                opts.client.connect_timeout =
                    Duration::from_secs_f64(config.limits.connect_timeout_s);
                opts.client.pool_size = s.concurrency;
                opts.client.max_body = config.limits.max_record_body;
                opts.marker_header = Some(config.mirror.marker_header.clone());
                opts.run_id = Some(run_id.to_owned());
                opts.progress = ProgressMode::Off;
                opts.max_file_bytes = config.limits.max_file_bytes;
                let set = if generation > 0 {
                    format!("-g{generation}")
                } else {
                    String::new()
                };
                opts.file_tag = Some(if s.urls.len() > 1 {
                    format!("{}{set}-{k}", s.name)
                } else {
                    format!("{}{set}", s.name)
                });
                opts.redactor = redactor.cloned();
                opts.keep_rows = record.is_some();
                let observed = stats.clone();
                let paired = pairs.clone();
                let answered = held.clone();
                opts.on_row = Some(Arc::new(move |row| {
                    // The copy is done: its bytes go back to the budget.
                    answered
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&row.exchange_id);
                    let outcome = match row.status {
                        Some(st) => Outcome::Status(st, row.total_us.unwrap_or(0).max(0) as u64),
                        None => Outcome::TransportError,
                    };
                    observed.record(outcome);
                    if let Some(p) = &paired {
                        p.shadow(&row.exchange_id, outcome);
                        if p.wants_bodies() {
                            let header = |name: &str| {
                                row.response_headers
                                    .iter()
                                    .find(|h| h.name.eq_ignore_ascii_case(name))
                                    .map(|h| h.value.to_string())
                            };
                            let cap = crate::pairs::BODY_CAP;
                            let body = &row.response_body;
                            p.shadow_answer(
                                &row.exchange_id,
                                crate::pairs::Answer {
                                    status: row.status,
                                    content_type: header("content-type"),
                                    content_encoding: header("content-encoding"),
                                    body: body[..body.len().min(cap)].to_vec(),
                                    // (A hook may have rewritten the body: its length
                                    // is what it is now.)
                                    truncated: row.response_body_truncated || body.len() > cap,
                                },
                            );
                        }
                    }
                }));
                let started = runtime
                    .as_ref()
                    .expect("built when there are shadows")
                    .spawn(Sender::start(opts, stop_rx.clone(), None));
                let (sender, input) = started.await.map_err(|e| {
                    ProxyError::Record(format!("starting shadow {}: {e}", s.name))
                })??;
                pool.push(sender);
                inputs.push(Mutex::new(Some(input)));
            }
            senders.push(pool);
            list.push(Arc::new(Shadow {
                name: s.name.clone(),
                inputs,
                next: AtomicUsize::new(0),
                counters: MirrorCounters::default(),
                stats,
                pairs,
                budget: budget.clone(),
                held,
            }));
        }
        Ok(Shadows {
            list,
            senders,
            stop,
            scratch,
            runtime,
        })
    }

    /// Closes every input, lets the senders send what is queued for up to `grace`, then stops
    /// them (what is still queued is counted as not sent); each pool's summary.
    pub async fn close(self, grace: Duration) -> Vec<Closed> {
        for s in &self.list {
            for slot in &s.inputs {
                let input = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                if let Some(input) = input {
                    // Hands over the last batch; a full queue waits, bounded by the grace.
                    let _ = tokio::time::timeout(grace, input.close()).await;
                }
            }
        }
        let stop = self.stop;
        let timer = tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            let _ = stop.send(true);
        });
        let mut out = Vec::new();
        for (s, pool) in self.list.iter().zip(self.senders) {
            let mut merged: Option<ReplaySummary> = None;
            let mut failed = None;
            for sender in pool {
                let finished = match &self.runtime {
                    Some(rt) => rt.spawn(sender.finish()).await.unwrap_or_else(|e| {
                        Err(shadowtap_replayer::ReplayError::Io {
                            path: PathBuf::new(),
                            source: std::io::Error::other(e.to_string()),
                        })
                    }),
                    None => sender.finish().await,
                };
                match finished {
                    Ok(sum) => match merged.as_mut() {
                        None => merged = Some(sum),
                        Some(m) => merge(m, sum),
                    },
                    Err(e) => failed = Some(ProxyError::from(e)),
                }
            }
            let result = match (failed, merged) {
                (Some(e), _) => Err(e),
                (None, Some(m)) => Ok(m),
                (None, None) => Err(ProxyError::Record(format!("{}: no sender", s.name))),
            };
            out.push((s.name.clone(), s.counters.json(), result));
        }
        timer.abort();
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
        if let Some(rt) = self.runtime {
            rt.shutdown_background();
        }
        out
    }
}

/// Adds a member's counts to its pool's.
fn merge(into: &mut ReplaySummary, other: ReplaySummary) {
    into.exchanges_read += other.exchanges_read;
    into.selected += other.selected;
    into.queued_at_stop += other.queued_at_stop;
    into.rows_written += other.rows_written;
    for (name, t) in other.targets {
        let e = into.targets.entry(name).or_default();
        e.rows += t.rows;
        e.sent += t.sent;
        for (k, v) in t.responses {
            *e.responses.entry(k).or_default() += v;
        }
        for (k, v) in t.errors {
            *e.errors.entry(k).or_default() += v;
        }
    }
}

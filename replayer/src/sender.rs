//! The sender: exchanges from any source in, one `replays` row per selected exchange and
//! target out.
//!
//! [`Sender::start`] opens the output, starts the writer thread and the sending threads, and
//! returns the [`SenderInput`] a source feeds: the recording reader ([`crate::reader`]) today,
//! live mirrored requests next. What happens to an exchange offered to the input:
//!
//! 1. **Selection**, on the caller's thread: match criteria, sampling, allowed methods. Left
//!    out, it is only counted (`not_matched`, `sampled_out`, `refused_methods`).
//! 2. **The queue**: selected exchanges travel in batches of up to 128 ([`SenderInput::push`]
//!    fills a batch; [`SenderInput::flush`] hands over a partial one) through a bounded queue
//!    per sending thread of `queue_batches` batches ([`QUEUE_BATCHES`] unless set). When every
//!    queue is full,
//!    [`SenderInput::push`] and [`SenderInput::push_blocking`] wait (a recording is never
//!    dropped from), and [`SenderInput::try_push`] returns the exchange at once as
//!    [`Rejected::Full`] (a live source sheds it and counts it, rather than wait on a shadow).
//! 3. **Sending**: paced, through the request hooks, to every target in a random order per
//!    exchange, at most `concurrency` requests in flight; each answer through the response
//!    hooks to the writer thread.
//!
//! **Shutdown loses nothing.** [`SenderInput::close`] hands over the last batch; when every
//! input is closed, the sending threads send what is queued, wait for the requests in flight,
//! and [`Sender::finish`] closes the files and returns the counts. When `stop` turns true (or
//! `duration` passes) first, sending stops at once: requests in flight still end and get
//! their rows, and selected exchanges still queued are counted in
//! [`ReplaySummary::queued_at_stop`] (not sent, no row), so every exchange offered is in
//! exactly one count.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use shadowtap_core::criteria::MatchCriteria;
use shadowtap_core::id::new_run_id;
use shadowtap_core::replays::{replays_schema, ReplayRecord, REPLAYS_SCHEMA_VERSION};
use shadowtap_core::sampling::Sampler;
use shadowtap_core::sink::{ParquetSink, SinkOptions};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::client::ClientOptions;
use crate::error::ReplayError;
use crate::input::{Item, Selection};
pub use crate::input::{Rejected, SenderInput};
use crate::middleware::Middleware;
use crate::progress::{Progress, ProgressMode};
use crate::rules::Rules;
use crate::schedule::Pacing;
use crate::script::ScriptHook;
use crate::send::{dispatch, routes, total, Counters, Dispatched, Shared, MAX_SENDERS};
use crate::summary::ReplaySummary;
use crate::target::Target;
use crate::writer::{write_rows, yield_to_sending, RowHooks, RowOut, Spare, Written};

/// Batches each sending thread's queue holds by default (a batch is up to
/// [`crate::BATCH`] exchanges from [`SenderInput::push`], one from [`SenderInput::try_push`]).
pub const QUEUE_BATCHES: usize = 4;

/// Methods sent unless `allow_methods` adds others: they do not change server state.
pub const DEFAULT_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS"];
/// The marker header's default name.
pub const DEFAULT_MARKER: &str = "X-Shadowtap-Replay";

/// Everything the sender needs: where rows go, which targets, what is selected, how it is sent.
pub struct SenderOptions {
    /// Output directory for `replays-<run>-*.parquet`.
    pub out: PathBuf,
    /// Targets; every selected request goes to each.
    pub targets: Vec<Target>,
    /// Which exchanges to send by content.
    pub criteria: MatchCriteria,
    /// Deterministic sampling.
    pub sampler: Sampler,
    /// Methods sent (upper case). Others are counted and skipped.
    pub allow_methods: Vec<String>,
    /// Pacing.
    pub pacing: Pacing,
    /// Requests in flight at most, over all targets.
    pub concurrency: usize,
    /// Threads that send at `--rate max` without hooks, each with its own connections and a
    /// share of `concurrency`; 0 picks one per core, at most [`MAX_SENDERS`]. Paced sending
    /// and sending with hooks use one thread.
    pub senders: usize,
    /// Stop sending after this long.
    pub duration: Option<Duration>,
    /// HTTP client settings.
    pub client: ClientOptions,
    /// Declarative rules.
    pub rules: Option<Rules>,
    /// Script hook.
    pub script: Option<ScriptHook>,
    /// External middleware command.
    pub middleware: Option<String>,
    /// How long the middleware may take per message.
    pub middleware_timeout: Duration,
    /// Marker header name (value: the run id); `None` sends none.
    pub marker_header: Option<String>,
    /// Send the recorded Host header instead of the target's authority.
    pub preserve_host: bool,
    /// Run id (generated when `None`).
    pub run_id: Option<String>,
    /// Progress reporting.
    pub progress: ProgressMode,
    /// Roll result files at this size.
    pub max_file_bytes: u64,
    /// Batches each sending thread's queue holds ([`QUEUE_BATCHES`]; at least 1).
    pub queue_batches: usize,
    /// Added to the file names (`replays-<run>-<tag>-*.parquet`), so several senders (one per
    /// shadow pool of the proxy) write one run into one directory.
    pub file_tag: Option<String>,
    /// Redacts each row before it is written (the proxy's recordings: the same key as the
    /// `exchanges` rows, so equal values stay equal across tables).
    pub redactor: Option<shadowtap_core::redact::Redactor>,
    /// Sees each row as it is answered, before redaction, on the sending thread: keep it
    /// cheap (live statistics).
    pub on_row: Option<RowObserver>,
    /// Write the rows (true unless set): false counts them in the summary and writes no file
    /// (the proxy's shadows when it does not record).
    pub keep_rows: bool,
}

pub use crate::writer::RowObserver;

impl SenderOptions {
    /// Defaults: 1x speed, 32 in flight, idempotent methods only, 30 s timeout.
    pub fn new(out: PathBuf, targets: Vec<Target>) -> Self {
        SenderOptions {
            out,
            targets,
            criteria: MatchCriteria::default(),
            sampler: Sampler {
                percent: shadowtap_core::sampling::Percent::ALL,
                by: Default::default(),
            },
            allow_methods: DEFAULT_METHODS.iter().map(|m| (*m).to_owned()).collect(),
            pacing: Pacing::default(),
            concurrency: 32,
            senders: 0,
            duration: None,
            client: ClientOptions {
                timeout: Duration::from_secs(30),
                connect_timeout: Duration::from_secs(5),
                protocol: Default::default(),
                pool_size: 32,
                insecure: false,
                max_body: 16 << 20,
            },
            rules: None,
            script: None,
            middleware: None,
            middleware_timeout: Duration::from_secs(10),
            marker_header: Some(DEFAULT_MARKER.to_owned()),
            preserve_host: false,
            run_id: None,
            progress: ProgressMode::Auto {
                interval: Duration::from_secs(10),
            },
            max_file_bytes: 256 << 20,
            queue_batches: QUEUE_BATCHES,
            file_tag: None,
            redactor: None,
            on_row: None,
            keep_rows: true,
        }
    }

    /// Refuses options no sender can run with.
    pub fn validate(&self) -> Result<(), ReplayError> {
        if self.targets.is_empty() {
            return Err(ReplayError::InvalidOption {
                option: "--target",
                message: "give at least one NAME=URL".into(),
            });
        }
        let mut names = HashSet::new();
        for t in &self.targets {
            if !names.insert(t.name.as_str()) {
                return Err(ReplayError::InvalidOption {
                    option: "--target",
                    message: format!("the name {:?} is used twice", t.name),
                });
            }
        }
        if self.concurrency == 0 {
            return Err(ReplayError::InvalidOption {
                option: "--concurrency",
                message: "must be at least 1".into(),
            });
        }
        Ok(())
    }

    fn has_hooks(&self) -> bool {
        self.rules.is_some() || self.script.is_some() || self.middleware.is_some()
    }
}

/// A running sender (see the module docs for its contract).
pub struct Sender {
    run_id: String,
    out: PathBuf,
    started: Instant,
    shared: Arc<Shared>,
    counters: Vec<Arc<Counters>>,
    first: tokio::task::JoinHandle<Dispatched>,
    others: Vec<std::thread::JoinHandle<Result<Dispatched, std::io::Error>>>,
    writer: std::thread::JoinHandle<Result<Written, ReplayError>>,
    progress: Progress,
}

impl Sender {
    /// Starts sending: creates `opts.out`, starts the writer thread and the sending threads
    /// (one task on the calling runtime, the others on threads of their own), and returns the
    /// input to feed. `total_hint`, when known, is how many exchanges will be offered (for the
    /// progress bar). Sending stops early when `stop` turns true or `opts.duration` passes.
    pub async fn start(
        mut opts: SenderOptions,
        stop: watch::Receiver<bool>,
        total_hint: Option<u64>,
    ) -> Result<(Sender, SenderInput), ReplayError> {
        opts.validate()?;
        let started = Instant::now();
        let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
        let senders = match (opts.pacing, opts.has_hooks()) {
            (Pacing::Max, false) if opts.senders == 0 => std::thread::available_parallelism()
                .map_or(1, usize::from)
                .min(MAX_SENDERS),
            (Pacing::Max, false) => opts.senders,
            _ => 1,
        }
        // Each thread needs room for one exchange at every target: `concurrency` bounds the
        // requests in flight over all threads.
        .clamp(1, (opts.concurrency / opts.targets.len()).max(1));
        let share =
            |k: usize| opts.concurrency / senders + usize::from(k < opts.concurrency % senders);
        let counters: Vec<Arc<Counters>> = (0..senders).map(|_| Arc::default()).collect();
        let clients = routes(&opts.targets, &opts.client, share(0))?;
        let middleware = match &opts.middleware {
            Some(cmd) => Some(Middleware::start(cmd, opts.middleware_timeout).map_err(
                |message| ReplayError::Hook {
                    what: "--middleware".into(),
                    message,
                },
            )?),
            None => None,
        };
        let io_err = |source| ReplayError::Io {
            path: opts.out.clone(),
            source,
        };
        std::fs::create_dir_all(&opts.out).map_err(io_err)?;
        let sink = if !opts.keep_rows {
            None
        } else {
            Some(ParquetSink::new(
                SinkOptions {
                    dir: opts.out.clone(),
                    prefix: match &opts.file_tag {
                        Some(tag) => format!("replays-{run_id}-{tag}"),
                        None => format!("replays-{run_id}"),
                    },
                    max_file_bytes: opts.max_file_bytes,
                    max_row_group_rows: 64 * 1024,
                },
                replays_schema(),
            )?)
        };
        let (row_tx, row_rx) = mpsc::channel::<Vec<ReplayRecord>>(8);
        let spare = Arc::new(Spare::default());
        let writer = {
            let (spare, targets) = (spare.clone(), opts.targets.clone());
            let hooks = RowHooks {
                redactor: opts.redactor.take(),
            };
            std::thread::Builder::new()
                .name("replay-writer".into())
                .spawn(move || {
                    if senders == 1 {
                        yield_to_sending();
                    }
                    write_rows(row_rx, &spare, sink, &targets, hooks)
                })
                .map_err(io_err)?
        };
        let shared = Arc::new(Shared {
            run_id: run_id.as_str().into(),
            targets: clients,
            rules: opts.rules.take(),
            script: opts.script.take(),
            middleware,
            marker: opts.marker_header.clone(),
            preserve_host: opts.preserve_host,
            max_body: opts.client.max_body,
            rows: RowOut::new(row_tx, spare, opts.on_row.take(), opts.keep_rows),
            counters: counters[0].clone(),
        });
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..senders)
            .map(|_| mpsc::channel::<Vec<Item>>(opts.queue_batches.max(1)))
            .unzip();
        let deadline = opts.duration.map(|d| started + d);
        let progress = Progress::start(opts.progress, total_hint, counters.clone());
        // The other sending threads: each its own runtime, connections and share of the
        // requests in flight, the same counters and writer.
        let mut rxs = rxs.into_iter();
        let first_rx = rxs
            .next()
            .ok_or_else(|| io_err(std::io::Error::other("no queue for the sending thread")))?;
        let mut others = Vec::new();
        for (k, items) in rxs.enumerate().map(|(i, rx)| (i + 1, rx)) {
            let shared = Arc::new(shared.for_another_thread(
                routes(&opts.targets, &opts.client, share(k))?,
                counters[k].clone(),
            ));
            let (stop, concurrency) = (stop.clone(), share(k));
            let thread = std::thread::Builder::new()
                .name(format!("replay-send-{k}"))
                .spawn(move || -> Result<Dispatched, std::io::Error> {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    Ok(runtime.block_on(dispatch(
                        shared,
                        concurrency,
                        Pacing::Max,
                        items,
                        stop,
                        deadline,
                    )))
                })
                .map_err(io_err)?;
            others.push(thread);
        }
        // The first sending loop runs as a task of its own, not in the future the runtime
        // blocks on: a current-thread runtime polls that future only between batches of up to
        // 61 other tasks, and a replay at `--rate max` left connections idle waiting for it
        // (measured: +15% requests/s).
        let first = tokio::spawn(dispatch(
            shared.clone(),
            share(0),
            opts.pacing,
            first_rx,
            stop,
            deadline,
        ));
        let selection = Selection {
            criteria: opts.criteria.clone(),
            sampler: opts.sampler,
            allow_methods: opts.allow_methods.clone(),
        };
        let sender = Sender {
            run_id,
            out: opts.out.clone(),
            started,
            shared,
            counters,
            first,
            others,
            writer,
            progress,
        };
        Ok((sender, SenderInput::new(txs, selection)))
    }

    /// The run id every row carries.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Sending threads started.
    pub fn threads(&self) -> usize {
        self.others.len() + 1
    }

    /// Waits until every input is closed (or sending stopped), the queued exchanges are sent
    /// and the requests in flight are done; then closes the files. The summary has every
    /// count of the sending side; the caller adds what it knows of its source.
    pub async fn finish(self) -> Result<ReplaySummary, ReplayError> {
        let io_err = |source| ReplayError::Io {
            path: self.out.clone(),
            source,
        };
        let mut dispatched = Vec::new();
        match self.first.await {
            Ok(d) => dispatched.push(d),
            // Only a bug does this; say so rather than lose the rows quietly.
            Err(e) => tracing::error!(
                "the sending task failed ({e}): its exchanges in flight have no row"
            ),
        }
        for thread in self.others {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            match joined {
                Ok(Ok(Ok(d))) => dispatched.push(d),
                Ok(Ok(Err(source))) => return Err(io_err(source)),
                _ => {
                    tracing::error!("a sending thread failed: its exchanges in flight have no row")
                }
            }
        }
        let mut summary = ReplaySummary {
            run_id: self.run_id.clone(),
            schema_version: REPLAYS_SCHEMA_VERSION,
            stopped_by: "end".into(),
            ..Default::default()
        };
        let mut failure = None;
        for d in dispatched {
            summary.exchanges_read += d.read;
            summary.selected += d.selected;
            summary.not_matched += d.not_matched;
            summary.sampled_out += d.sampled_out;
            summary.queued_at_stop += d.queued_at_stop;
            for (method, n) in d.refused {
                *summary.refused_methods.entry(method).or_default() += n;
            }
            summary.passes = summary.passes.max(d.passes);
            summary.max_schedule_lag_ms = summary.max_schedule_lag_ms.max(d.max_lag_ms);
            if let Some(why) = d.stopped_by {
                summary.stopped_by = why.into();
            }
            failure = failure.or(d.failure);
        }
        // Sending has stopped and the requests in flight are done: close the files.
        self.progress.finish().await;
        let c = &self.counters;
        summary.unreplayable = total(c, |c| &c.unreplayable);
        summary.dropped_by_hooks = total(c, |c| &c.dropped);
        summary.hook_errors = total(c, |c| &c.hook_errors);
        let shared = Arc::try_unwrap(self.shared)
            .map_err(|_| io_err(std::io::Error::other("request tasks still hold the writer")))?;
        drop(shared);
        let writer = self.writer;
        let written = tokio::task::spawn_blocking(move || writer.join())
            .await
            .map_err(|e| io_err(std::io::Error::other(e)))?
            .map_err(|_| io_err(std::io::Error::other("writer thread panicked")))??;
        if let Some(e) = failure {
            return Err(e);
        }
        summary.rows_written = written.rows;
        summary.files = written.files;
        summary.targets = written.targets;
        summary.elapsed_s = self.started.elapsed().as_secs_f64();
        Ok(summary)
    }
}

//! The replay pipeline: recording → selection → hooks → pacing → fan-out to every target →
//! response hooks → `replays` Parquet.
//!
//! Reading the recording runs on its own thread (Parquet decoding is blocking work); sending
//! runs on the tokio runtime, at most `concurrency` requests in flight across all targets;
//! writing runs on a writer thread. Every channel between them is bounded, so memory stays flat
//! whatever the recording's size. Each selected request yields exactly one row per target:
//! a response, a transport error, or the reason it was not sent.

use std::collections::{BTreeMap, HashSet};
use std::io::IsTerminal;
use std::mem::take;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use serde::Serialize;
use shadowtap_http1::decode_body;
use shadowtap_core::criteria::MatchCriteria;
use shadowtap_core::id::new_run_id;
use shadowtap_core::replays::{
    replays_schema, replays_to_batch, ErrorKind, ReplayRecord, REPLAYS_SCHEMA_VERSION,
};
use shadowtap_core::sampling::Sampler;
use shadowtap_core::sink::{ParquetSink, SinkOptions};
use shadowtap_core::{CompactString, Exchange};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::{build_client, send, ClientOptions, Outgoing, TargetClient};
use crate::error::ReplayError;
use crate::middleware::{Middleware, MiddlewareOutcome};
use crate::request::{header, set_header, OutgoingRequest, ReceivedResponse};
use crate::rules::{RuleOutcome, Rules};
use crate::schedule::{Pacer, Pacing};
use crate::script::{ScriptHook, ScriptOutcome};
use crate::source::Recording;

/// A named target: `candidate=http://10.0.0.6:8080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Name used in the `target` column (`baseline`, `candidate`, …).
    pub name: String,
    /// Base URL; its path, if any, is prefixed to every request path.
    pub url: reqwest::Url,
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, url) = s.split_once('=').ok_or_else(|| {
            format!("{s:?}: expected NAME=URL, e.g. candidate=http://10.0.0.6:8080")
        })?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(format!(
                "{name:?}: a target name is letters, digits, '-', '_' or '.'"
            ));
        }
        let url = reqwest::Url::parse(url.trim()).map_err(|e| format!("{url:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "{url}: a target URL is http:// or https:// with a host"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{url}: a target URL has no query or fragment"));
        }
        Ok(Target {
            name: name.to_owned(),
            url,
        })
    }
}

impl Target {
    /// `host[:port]` as a Host header names the target.
    pub fn authority(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        }
    }

    /// `scheme://host[:port]`.
    fn origin(&self) -> String {
        format!("{}://{}", self.url.scheme(), self.authority())
    }
}

/// The URL a request is sent to, and where its path begins: the target's base path, then the
/// request's path and query, percent-encoded where a URL cannot carry them as they are (as a
/// browser would); bytes that are valid stay as recorded.
fn route_url(origin: &str, base_path: &str, req: &OutgoingRequest) -> (String, usize) {
    let base = base_path.trim_end_matches('/');
    let mut url = String::with_capacity(
        origin.len() + base.len() + req.path.len() + req.query.as_ref().map_or(0, |q| q.len() + 1),
    );
    url.push_str(origin);
    let at = url.len();
    url.push_str(base);
    push_encoded(&mut url, &req.path, false);
    if let Some(q) = &req.query {
        url.push('?');
        push_encoded(&mut url, q, true);
    }
    (url, at)
}

/// Appends `s`, percent-encoding the bytes a request target cannot hold as they are: controls,
/// space, `"`, `#`, `<`, `>`, `` ` ``, `{`, `}`, `|`, `\`, `^`, non-ASCII, and `?` in a path.
/// `%` stays: a recorded path is already encoded.
fn push_encoded(out: &mut String, s: &str, query: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let keep = |b: u8| match b {
        b'?' => query,
        0x21..=0x7e => !matches!(
            b,
            b'"' | b'#' | b'<' | b'>' | b'`' | b'{' | b'}' | b'|' | b'\\' | b'^'
        ),
        _ => false,
    };
    if s.bytes().all(keep) {
        out.push_str(s);
        return;
    }
    for b in s.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

/// Progress reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on a terminal, plain lines every `interval` otherwise.
    Auto {
        /// Interval of the plain lines.
        interval: Duration,
    },
    /// Nothing until the summary.
    Off,
}

/// Everything a replay needs.
pub struct ReplayOptions {
    /// Directory of the recording (`shadowtap capture --out`).
    pub from: PathBuf,
    /// Output directory for `replays-*.parquet` and the summary.
    pub out: PathBuf,
    /// Targets; every selected request goes to each.
    pub targets: Vec<Target>,
    /// Which exchanges to replay by content.
    pub criteria: MatchCriteria,
    /// Deterministic sampling.
    pub sampler: Sampler,
    /// Methods replayed (upper case). Others are counted and skipped.
    pub allow_methods: Vec<String>,
    /// Pacing.
    pub pacing: Pacing,
    /// Requests in flight at most, over all targets.
    pub concurrency: usize,
    /// Threads that send at `--rate max` without hooks, each with its own connections and a
    /// share of `concurrency`; 0 picks one per core, at most [`MAX_SENDERS`]. Paced replays
    /// and replays with hooks send from one thread.
    pub senders: usize,
    /// Stop sending after this long.
    pub duration: Option<Duration>,
    /// Passes over the recording; `None` repeats until `duration` or a signal.
    pub passes: Option<u32>,
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
}

impl ReplayOptions {
    /// Defaults: 1x speed, 32 in flight, one pass, idempotent methods only, 30 s timeout.
    pub fn new(from: PathBuf, out: PathBuf, targets: Vec<Target>) -> Self {
        ReplayOptions {
            from,
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
            passes: Some(1),
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
        }
    }
}

/// Methods replayed unless `--allow-methods` adds others: they do not change server state.
pub const DEFAULT_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS"];
/// The marker header's default name.
pub const DEFAULT_MARKER: &str = "X-Shadowtap-Replay";

/// Per-target counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetSummary {
    /// Base URL.
    pub url: String,
    /// Rows written for this target.
    pub rows: u64,
    /// Requests sent.
    pub sent: u64,
    /// Responses received, by status class (`2xx`, `5xx`, …).
    pub responses: BTreeMap<String, u64>,
    /// Rows without a response, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Median total time of the responses, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile total time of the responses, ms.
    pub p99_ms: Option<f64>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySummary {
    /// The run.
    pub run_id: String,
    /// `replays` schema version written.
    pub schema_version: u32,
    /// The recording.
    pub recording: PathBuf,
    /// Exchanges in the recording.
    pub recording_rows: u64,
    /// Exchanges read (over all passes).
    pub exchanges_read: u64,
    /// Not matching the criteria.
    pub not_matched: u64,
    /// Left out by sampling.
    pub sampled_out: u64,
    /// Skipped because their method is not allowed, by method.
    pub refused_methods: BTreeMap<String, u64>,
    /// Selected: each yields one row per target.
    pub selected: u64,
    /// Selected but not replayable (incomplete in the capture).
    pub unreplayable: u64,
    /// Dropped on purpose by a rule, script or middleware.
    pub dropped_by_hooks: u64,
    /// Failed in a hook.
    pub hook_errors: u64,
    /// Recorded exchanges met out of request order (sent at once).
    pub out_of_order: u64,
    /// Largest delay behind the schedule when a request was sent, ms.
    pub max_schedule_lag_ms: f64,
    /// Passes started.
    pub passes: u32,
    /// Why sending stopped: `end`, `duration` or `signal`.
    pub stopped_by: String,
    /// Per target.
    pub targets: BTreeMap<String, TargetSummary>,
    /// Rows written.
    pub rows_written: u64,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
}

impl ReplaySummary {
    /// A human-readable block for stderr.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "read         {} exchanges ({} in the recording, {} pass(es)); stopped by {}\n",
            self.exchanges_read, self.recording_rows, self.passes, self.stopped_by
        ));
        let refused: u64 = self.refused_methods.values().sum();
        s.push_str(&format!(
            "selected     {} ({} not matched, {} sampled out, {} refused methods{})\n",
            self.selected,
            self.not_matched,
            self.sampled_out,
            refused,
            if refused > 0 {
                format!(
                    ": {}; allow them with --allow-methods",
                    self.refused_methods
                        .iter()
                        .map(|(m, n)| format!("{m} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            }
        ));
        s.push_str(&format!(
            "not sent     {} unreplayable, {} dropped by hooks, {} hook errors\n",
            self.unreplayable, self.dropped_by_hooks, self.hook_errors
        ));
        for (name, t) in &self.targets {
            let fmt = |m: &BTreeMap<String, u64>| {
                if m.is_empty() {
                    "none".to_owned()
                } else {
                    m.iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            s.push_str(&format!(
                "target       {name} {}: {} sent; responses {}; errors {}; p50 {} ms, p99 {} ms\n",
                t.url,
                t.sent,
                fmt(&t.responses),
                fmt(&t.errors),
                t.p50_ms.map_or("-".into(), |v| format!("{v:.1}")),
                t.p99_ms.map_or("-".into(), |v| format!("{v:.1}")),
            ));
        }
        if self.max_schedule_lag_ms > 1000.0 {
            s.push_str(&format!(
                "warning      sending fell up to {:.0} ms behind the schedule (raise --concurrency, or the targets are slow)\n",
                self.max_schedule_lag_ms
            ));
        }
        s.push_str(&format!("wrote        {} rows\n", self.rows_written));
        for f in &self.files {
            s.push_str(&format!("wrote        {}\n", f.display()));
        }
        s
    }
}

/// Live counters for progress, one set per sending thread (no cache line written by two
/// threads per request); aligned so that two sets never share a line.
#[derive(Default)]
#[repr(align(128))]
struct Counters {
    unreplayable: AtomicU64,
    unreplayable_rows: AtomicU64,
    dropped: AtomicU64,
    hook_errors: AtomicU64,
    read: AtomicU64,
    sent: AtomicU64,
    done: AtomicU64,
    errors: AtomicU64,
}

/// One counter summed over every sending thread's set.
fn total(sets: &[Arc<Counters>], counter: impl Fn(&Counters) -> &AtomicU64) -> u64 {
    sets.iter()
        .map(|c| counter(c).load(Ordering::Relaxed))
        .sum()
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Hosts the recording was captured from: (address or lower-case name, port).
fn captured_hosts(recording: &Recording) -> Result<HashSet<(String, u16)>, ReplayError> {
    let mut out = HashSet::new();
    for path in recording.files() {
        let err = |e: parquet::errors::ParquetError| {
            ReplayError::Read(shadowtap_core::read::ReadError::Parquet {
                path: path.to_path_buf(),
                source: e,
            })
        };
        let file = std::fs::File::open(path).map_err(|source| ReplayError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(err)?;
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            ["server_ip", "server_port", "host"],
        );
        for batch in builder
            .with_projection(mask)
            .with_batch_size(8192)
            .build()
            .map_err(err)?
        {
            let batch = batch.map_err(|e| err(e.into()))?;
            let (Some(ip), Some(port), Some(host)) = (
                batch.column_by_name("server_ip"),
                batch.column_by_name("server_port"),
                batch.column_by_name("host"),
            ) else {
                continue;
            };
            let (ip, port, host) = (
                ip.as_string::<i32>(),
                port.as_primitive::<Int32Type>(),
                host.as_string::<i32>(),
            );
            for i in 0..batch.num_rows() {
                let p = port.value(i).clamp(0, 65_535) as u16;
                out.insert((ip.value(i).to_owned(), p));
                if host.is_valid(i) {
                    let h = host.value(i).to_ascii_lowercase();
                    let (name, hp) = split_host_port(&h).unwrap_or((h.clone(), p));
                    out.insert((name, hp));
                }
            }
            if out.len() > 100_000 {
                break; // enough to recognise a mistake; a recording of that many hosts is rare
            }
        }
    }
    Ok(out)
}

fn split_host_port(h: &str) -> Option<(String, u16)> {
    if let Some(rest) = h.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok())?;
        return Some((addr.to_owned(), port));
    }
    let (name, port) = h.rsplit_once(':')?;
    if name.contains(':') {
        return None; // a bare IPv6 address
    }
    Some((name.to_owned(), port.parse().ok()?))
}

async fn check_targets(
    targets: &[Target],
    captured: &HashSet<(String, u16)>,
) -> Result<(), ReplayError> {
    for t in targets {
        let host = t
            .url
            .host_str()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_ascii_lowercase();
        let port = t.url.port_or_known_default().unwrap_or(80);
        let mut names = vec![host.clone()];
        if let Ok(addrs) = tokio::net::lookup_host((host.as_str(), port)).await {
            names.extend(addrs.map(|a| a.ip().to_string()));
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            names.push(ip.to_string());
        }
        if let Some(hit) = names
            .iter()
            .find(|n| captured.contains(&((*n).clone(), port)))
        {
            return Err(ReplayError::CapturedHost {
                target: t.name.clone(),
                url: t.url.to_string(),
                captured: format!("{hit}:{port}"),
            });
        }
    }
    Ok(())
}

enum Item {
    Exchange(u32, Box<Exchange>),
    /// Exchanges read and not selected since the previous item.
    Skipped(Skipped),
    PassStart(u32),
    Failed(ReplayError),
}

/// Which exchanges a replay sends: match criteria, sampling, allowed methods. Applied on the
/// reader thread, so exchanges not sent never reach the sending thread.
struct Selection {
    criteria: MatchCriteria,
    sampler: Sampler,
    allow_methods: Vec<String>,
}

/// Exchanges the selection left out, counted on the reader thread and handed to the sending
/// thread in order with the selected ones (the summary counts what was dispatched).
#[derive(Default)]
struct Skipped {
    not_matched: u64,
    sampled_out: u64,
    /// Refused methods, upper-case, with counts.
    refused: Vec<(String, u64)>,
}

impl Skipped {
    fn is_empty(&self) -> bool {
        self.not_matched == 0 && self.sampled_out == 0 && self.refused.is_empty()
    }

    fn total(&self) -> u64 {
        self.not_matched + self.sampled_out + self.refused.iter().map(|(_, n)| n).sum::<u64>()
    }
}

impl Selection {
    /// Whether `ex` is sent; if not, counts why in `skipped`.
    fn admit(&self, ex: &Exchange, skipped: &mut Skipped) -> bool {
        if !self.criteria.matches(ex) {
            skipped.not_matched += 1;
        } else if !self.sampler.keep(ex) {
            skipped.sampled_out += 1;
        } else if !self
            .allow_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&ex.method))
        {
            match skipped
                .refused
                .iter_mut()
                .find(|(m, _)| m.eq_ignore_ascii_case(&ex.method))
            {
                Some((_, n)) => *n += 1,
                None => skipped
                    .refused
                    .push((ex.method.to_ascii_uppercase().into(), 1)),
            }
        } else {
            return true;
        }
        false
    }
}

/// Items per message from the reader thread (one wake-up per batch, not per exchange).
const ITEM_BATCH: usize = 128;

/// Reads passes over the recording into `txs` (one per sending thread), in batches, until done
/// or a receiver is gone. Each batch goes to the next sender with room in its queue, so a
/// slower thread is not handed more than it takes.
fn read_recording(
    recording: Recording,
    passes: Option<u32>,
    selection: Selection,
    txs: Vec<mpsc::Sender<Vec<Item>>>,
    out_of_order: Arc<AtomicU64>,
) {
    let mut pass = 0u32;
    let mut batch = Vec::with_capacity(ITEM_BATCH);
    let mut skipped = Skipped::default();
    // The sending thread whose turn it is (round robin among those with room).
    let mut turn = 0usize;
    let mut send = |batch: &mut Vec<Item>| {
        let mut b = std::mem::replace(batch, Vec::with_capacity(ITEM_BATCH));
        let n = txs.len().max(1);
        for k in 0..n {
            let i = (turn + k) % n;
            match txs.get(i).map(|tx| tx.try_send(b)) {
                Some(Ok(())) => {
                    turn = i + 1;
                    return true;
                }
                Some(Err(mpsc::error::TrySendError::Full(back))) => b = back,
                Some(Err(mpsc::error::TrySendError::Closed(_))) | None => return false,
            }
        }
        let i = turn % n;
        turn = i + 1;
        txs.get(i).is_some_and(|tx| tx.blocking_send(b).is_ok())
    };
    // The counts of skipped exchanges go out before the next item, and at least every
    // ITEM_BATCH skips (so progress moves during a long run of them).
    let flush_skipped = |batch: &mut Vec<Item>, skipped: &mut Skipped| {
        if !skipped.is_empty() {
            batch.push(Item::Skipped(take(skipped)));
        }
    };
    while passes.is_none_or(|p| pass < p) {
        flush_skipped(&mut batch, &mut skipped);
        batch.push(Item::PassStart(pass));
        let mut stream = recording.stream();
        let mut seq = 0;
        while let Some(next) = stream.next_exchange(&mut seq) {
            match next {
                Ok(ex) if selection.admit(&ex, &mut skipped) => {
                    flush_skipped(&mut batch, &mut skipped);
                    batch.push(Item::Exchange(pass, ex));
                }
                Ok(_) if skipped.total() >= ITEM_BATCH as u64 => {
                    flush_skipped(&mut batch, &mut skipped);
                }
                Ok(_) => {}
                Err(e) => {
                    flush_skipped(&mut batch, &mut skipped);
                    batch.push(Item::Failed(e.into()));
                    send(&mut batch);
                    return;
                }
            }
            if batch.len() >= ITEM_BATCH && !send(&mut batch) {
                return;
            }
        }
        out_of_order.fetch_add(stream.late(), Ordering::Relaxed);
        pass += 1;
    }
    flush_skipped(&mut batch, &mut skipped);
    if !batch.is_empty() {
        send(&mut batch);
    }
}

/// Lowers the calling thread's scheduling priority (nice +10, Linux only): the Parquet reader
/// and writer threads are bulk work behind bounded queues, and must not preempt the sending
/// thread, whose clock readings are the recorded timings. When they fall behind, the queues
/// fill and sending waits for them, so nothing is lost; on a busy machine they get a smaller
/// share of the CPU. Measured on the 2-core bench machine: +19% requests/s at `--rate max`
/// over four alternating runs (README, Performance). Only when one thread sends: with several,
/// no one thread's core decides the rate, and the Parquet threads at normal priority gave
/// +3.7% on average (eight alternating runs, five in its favour). Failure (a sandbox refusing `setpriority`) only leaves it
/// as it was.
fn yield_to_sending() {
    #[cfg(target_os = "linux")]
    {
        // On Linux `setpriority(PRIO_PROCESS, 0, ..)` applies to the calling thread only.
        let now = rustix::process::getpriority_process(None).unwrap_or(0);
        if let Err(e) = rustix::process::setpriority_process(None, (now + 10).min(19)) {
            tracing::debug!("could not lower the priority of a Parquet thread: {e}");
        }
    }
}

/// Adds one to `key`'s count, allocating the key only the first time it is seen.
fn count(counts: &mut BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_owned(), 1);
        }
    }
}

/// `2xx` for 200–299, and so on.
fn status_class(status: u16) -> &'static str {
    const CLASSES: [&str; 10] = [
        "0xx", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "7xx", "8xx", "9xx",
    ];
    CLASSES[usize::from(status / 100).min(9)]
}

/// Response times of one target, for the summary's p50 and p99, in constant memory whatever
/// the length of the run (a replay with `--loop` may send billions of requests): exact below
/// 1,024 µs, above that in buckets 1/64 of a power of two wide (within 1.6%).
#[derive(Default)]
struct LatencyHistogram {
    counts: Vec<u64>,
    total: u64,
}

impl LatencyHistogram {
    /// Values below this are counted exactly.
    const EXACT: u64 = 1024;
    /// Buckets per power of two above `EXACT`.
    const SUB: u64 = 64;

    fn bucket(us: u64) -> usize {
        if us < Self::EXACT {
            return us as usize;
        }
        let octave = u64::from(63 - us.leading_zeros()); // >= 10
        let sub = (us >> (octave - 6)) - Self::SUB; // the 6 bits below the top one
        (Self::EXACT + (octave - 10) * Self::SUB + sub) as usize
    }

    /// The smallest value in bucket `i`.
    fn lower_bound(i: usize) -> u64 {
        let i = i as u64;
        if i < Self::EXACT {
            return i;
        }
        let (octave, sub) = (
            10 + (i - Self::EXACT) / Self::SUB,
            (i - Self::EXACT) % Self::SUB,
        );
        (Self::SUB + sub) << (octave - 6)
    }

    fn record(&mut self, us: i64) {
        let i = Self::bucket(us.max(0) as u64);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
    }

    /// The value at rank `round((n - 1) * q)` of the sorted values (the bucket's lower bound
    /// above 1,024 µs); `None` without values.
    fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((self.total - 1) as f64 * q.clamp(0.0, 1.0)).round() as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                return Some(Self::lower_bound(i));
            }
        }
        None
    }
}

/// What the writer thread counted.
struct Written {
    rows: u64,
    files: Vec<PathBuf>,
    targets: BTreeMap<String, TargetSummary>,
}

fn write_rows(
    mut rx: mpsc::Receiver<Vec<ReplayRecord>>,
    spare: &Spare,
    mut sink: ParquetSink,
    targets: &[Target],
) -> Result<Written, ReplayError> {
    let mut per: BTreeMap<String, (TargetSummary, LatencyHistogram)> = targets
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                (
                    TargetSummary {
                        url: t.url.to_string(),
                        ..Default::default()
                    },
                    LatencyHistogram::default(),
                ),
            )
        })
        .collect();
    let mut batch = Vec::with_capacity(512);
    let mut bytes = 0usize;
    let mut rows = 0u64;
    let flush =
        |batch: &mut Vec<ReplayRecord>, sink: &mut ParquetSink| -> Result<(), ReplayError> {
            if batch.is_empty() {
                return Ok(());
            }
            let b = replays_to_batch(batch).map_err(|e| ReplayError::Io {
                path: PathBuf::new(),
                source: std::io::Error::other(e),
            })?;
            sink.write(&b)?;
            batch.clear();
            Ok(())
        };
    while let Some(mut received) = rx.blocking_recv() {
        for r in received.drain(..) {
            // Every row's target is one of `targets` (no allocation per row to look it up).
            let (t, totals) = match per.get_mut(&*r.target) {
                Some(entry) => entry,
                None => per.entry(r.target.to_string()).or_default(),
            };
            t.rows += 1;
            if r.sent_at_us.is_some() {
                t.sent += 1;
            }
            match (r.status, r.error_kind) {
                (Some(s), _) => {
                    count(&mut t.responses, status_class(s));
                    if let Some(total) = r.total_us {
                        totals.record(total);
                    }
                }
                (None, Some(k)) => count(&mut t.errors, k.as_str()),
                (None, None) => {}
            }
            bytes += r.response_body.len()
                + r.request_body.len()
                + r.response_body_decoded.as_ref().map_or(0, Vec::len);
            batch.push(r);
            rows += 1;
            if batch.len() >= 512 || bytes >= 32 << 20 {
                flush(&mut batch, &mut sink)?;
                bytes = 0;
            }
        }
        spare.put(received);
    }
    flush(&mut batch, &mut sink)?;
    let files = sink.finish()?;
    let targets = per
        .into_iter()
        .map(|(name, (mut t, totals))| {
            t.p50_ms = totals.quantile(0.5).map(|us| us as f64 / 1000.0);
            t.p99_ms = totals.quantile(0.99).map(|us| us as f64 / 1000.0);
            (name, t)
        })
        .collect();
    Ok(Written {
        rows,
        files,
        targets,
    })
}

/// Everything a request task needs, shared.
struct Shared {
    run_id: Arc<str>,
    targets: Vec<Route>,
    rules: Option<Rules>,
    script: Option<ScriptHook>,
    middleware: Option<Middleware>,
    marker: Option<String>,
    preserve_host: bool,
    max_body: u64,
    rows: RowOut,
    counters: Arc<Counters>,
}

impl Shared {
    fn has_request_hooks(&self) -> bool {
        self.rules.is_some() || self.script.is_some() || self.middleware.is_some()
    }

    /// The same replay for another sending thread (only replays without hooks have several):
    /// its own clients and counters, the same writer.
    fn for_another_thread(&self, targets: Vec<Route>, counters: Arc<Counters>) -> Shared {
        Shared {
            // Its own copy: rows clone it, and a count shared by threads would bounce.
            run_id: self.run_id.as_ref().into(),
            targets,
            rules: None,
            script: None,
            middleware: None,
            marker: self.marker.clone(),
            preserve_host: self.preserve_host,
            max_body: self.max_body,
            rows: RowOut {
                pending: std::sync::Mutex::new(Vec::with_capacity(RowOut::BATCH)),
                tx: self.rows.tx.clone(),
                spare: self.rows.spare.clone(),
            },
            counters,
        }
    }
}

/// A target with its client and the text every request to it repeats.
struct Route {
    target: Target,
    client: TargetClient,
    /// `host[:port]`.
    authority: String,
    /// `scheme://host[:port]`.
    origin: String,
    /// The target's name and base URL as text (the `target` and `target_url` columns),
    /// shared by its rows.
    name: Arc<str>,
    url_text: Arc<str>,
}

/// Emptied row batches on their way back from the writer thread: the sending thread fills
/// them again instead of allocating (and the allocator faulting in) fresh ones per batch.
#[derive(Default)]
struct Spare(std::sync::Mutex<Vec<Vec<ReplayRecord>>>);

impl Spare {
    fn put(&self, batch: Vec<ReplayRecord>) {
        let mut spare = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if spare.len() < 16 {
            spare.push(batch);
        }
    }

    fn take(&self) -> Vec<ReplayRecord> {
        let mut spare = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(RowOut::BATCH))
    }
}

/// Rows on their way to the writer thread, handed over in batches (one wake-up per batch).
struct RowOut {
    pending: std::sync::Mutex<Vec<ReplayRecord>>,
    tx: mpsc::Sender<Vec<ReplayRecord>>,
    spare: Arc<Spare>,
}

impl RowOut {
    const BATCH: usize = 256;

    async fn push(&self, row: ReplayRecord) {
        let full = {
            let mut p = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            p.push(row);
            (p.len() >= Self::BATCH).then(|| std::mem::replace(&mut *p, self.spare.take()))
        };
        if let Some(batch) = full {
            let _ = self.tx.send(batch).await;
        }
    }

    async fn flush(&self) {
        let rest = std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        if !rest.is_empty() {
            let _ = self.tx.send(rest).await;
        }
    }
}

/// A row with the request's identity and nothing sent or received yet.
/// `request` is (method, path, query).
fn base_row(
    run_id: &Arc<str>,
    route: &Route,
    pass: u32,
    exchange_id: String,
    recorded_start_us: i64,
    request: (CompactString, CompactString, Option<CompactString>),
) -> ReplayRecord {
    let (method, path, query) = request;
    ReplayRecord {
        run_id: run_id.clone(),
        exchange_id,
        pass,
        target: route.name.clone(),
        target_url: route.url_text.clone(),
        recorded_start_us,
        sent_at_us: None,
        method,
        url: String::new(),
        path,
        query,
        request_headers: Vec::new(),
        request_body: Vec::new(),
        status: None,
        response_version: None,
        response_headers: Vec::new(),
        response_body: Vec::new(),
        response_body_decoded: None,
        response_body_len: 0,
        response_body_truncated: false,
        connect_us: None,
        ttfb_us: None,
        total_us: None,
        error_kind: None,
        error_message: None,
        send_position: None,
    }
}

/// The row for a request that was not sent.
fn unsent_row(
    run_id: &Arc<str>,
    route: &Route,
    pass: u32,
    ex: &Exchange,
    kind: ErrorKind,
    message: String,
) -> ReplayRecord {
    let mut row = base_row(
        run_id,
        route,
        pass,
        ex.exchange_id.clone(),
        ex.request_start_us,
        (ex.method.clone(), ex.path.clone(), ex.query.clone()),
    );
    row.error_kind = Some(kind);
    row.error_message = Some(message);
    row
}

/// Sends one prepared request to one target and records the outcome.
async fn send_one(
    shared: &Shared,
    ti: usize,
    position: usize,
    pass: u32,
    recorded_start_us: i64,
    mut req: OutgoingRequest,
    host_set_by_hooks: bool,
) {
    let route = &shared.targets[ti];
    let target = &route.target;
    if !req.delay.is_zero() {
        tokio::time::sleep(req.delay).await;
    }
    // Host: the target's, unless kept from the recording or set by a hook.
    if !shared.preserve_host && !host_set_by_hooks {
        set_header(&mut req.headers, "Host", &route.authority);
    }
    if let Some(m) = &shared.marker {
        set_header(&mut req.headers, m, &shared.run_id);
    }
    let sent_at_us = now_us();
    let (url, path_at) = route_url(&route.origin, target.url.path(), &req);
    let body = bytes::Bytes::from(std::mem::take(&mut req.body));
    shared.counters.sent.fetch_add(1, Ordering::Relaxed);
    let outgoing = Outgoing {
        url: &url,
        authority: &route.authority,
        path_and_query: &url[path_at..],
        method: &req.method,
        headers: &req.headers,
        body: body.clone(),
    };
    let got = send(&route.client, outgoing, shared.max_body).await;
    let hooks = shared.rules.as_ref().is_some_and(Rules::has_response_rules)
        || shared.script.is_some()
        || shared.middleware.is_some();
    // The request's identity moves into the row, unless response hooks still need it.
    let identity = if hooks {
        let r = &req;
        (
            r.exchange_id.clone(),
            (r.method.clone(), r.path.clone(), r.query.clone()),
        )
    } else {
        let r = &mut req;
        let (m, p, q) = (take(&mut r.method), take(&mut r.path), r.query.take());
        (take(&mut r.exchange_id), (m, p, q))
    };
    let mut row = base_row(
        &shared.run_id,
        route,
        pass,
        identity.0,
        recorded_start_us,
        identity.1,
    );
    row.sent_at_us = Some(sent_at_us);
    row.send_position = Some(position.min(u32::MAX as usize) as u32);
    row.url = url;
    row.request_body = Vec::from(body);
    row.connect_us = got.connect_us;
    row.ttfb_us = got.ttfb_us;
    row.total_us = Some(got.total_us);
    if let Some((kind, message)) = got.error {
        row.error_kind = Some(kind);
        row.error_message = Some(message);
    }
    if let Some(raw) = got.response {
        let coding = header(&raw.headers, "content-encoding").map(str::to_owned);
        let decoded = coding
            .as_deref()
            .filter(|c| !c.eq_ignore_ascii_case("identity"))
            .and_then(|c| decode_body(c, &raw.body, shared.max_body).ok().flatten());
        row.status = Some(raw.status);
        row.response_version = Some(raw.version);
        row.response_body_len = raw.body_len;
        row.response_body_truncated = raw.truncated;
        if !hooks {
            row.response_headers = raw.headers;
            row.response_body = raw.body;
            row.response_body_decoded = decoded;
        } else {
            req.body = row.request_body.clone();
            let mut resp = ReceivedResponse {
                status: raw.status,
                headers: raw.headers,
                body: decoded.clone().unwrap_or_else(|| raw.body.clone()),
            };
            let before = resp.body.clone();
            if let Err(e) =
                Box::pin(apply_response_hooks(shared, &target.name, &req, &mut resp)).await
            {
                row.error_message = Some(format!("response hook: {e}"));
            }
            let changed = resp.body != before;
            row.response_headers = resp.headers;
            match (decoded.is_some(), changed) {
                (true, _) => {
                    row.response_body = raw.body;
                    row.response_body_decoded = Some(resp.body);
                }
                (false, false) => row.response_body = raw.body,
                (false, true) => row.response_body = resp.body,
            }
        }
    }
    row.request_headers = std::mem::take(&mut req.headers);
    if row.error_kind.is_some() {
        shared.counters.errors.fetch_add(1, Ordering::Relaxed);
    }
    shared.counters.done.fetch_add(1, Ordering::Relaxed);
    shared.rows.push(row).await;
}

async fn apply_response_hooks(
    shared: &Shared,
    target: &str,
    req: &OutgoingRequest,
    resp: &mut ReceivedResponse,
) -> Result<(), String> {
    if let Some(r) = &shared.rules {
        r.apply_response(req, resp);
    }
    if let Some(s) = &shared.script {
        s.on_response(target, req, resp)?;
    }
    if let Some(m) = &shared.middleware {
        m.on_response(target, req, resp).await?;
    }
    Ok(())
}

/// What the request hooks decided.
enum Decision {
    Send(OutgoingRequest),
    NotSent(ErrorKind, String),
}

async fn apply_request_hooks(shared: &Shared, mut req: OutgoingRequest) -> Decision {
    if let Some(r) = &shared.rules {
        if let RuleOutcome::Drop(why) = r.apply_request(&mut req) {
            return Decision::NotSent(ErrorKind::Dropped, why);
        }
    }
    if let Some(s) = &shared.script {
        match s.on_request(&mut req) {
            Ok(ScriptOutcome::Send) => {}
            Ok(ScriptOutcome::Drop) => {
                return Decision::NotSent(ErrorKind::Dropped, "dropped by the script".into())
            }
            Err(e) => return Decision::NotSent(ErrorKind::Hook, format!("script: {e}")),
        }
    }
    if let Some(m) = &shared.middleware {
        match m.on_request(&mut req).await {
            Ok(MiddlewareOutcome::Send) => {}
            Ok(MiddlewareOutcome::Drop) => {
                return Decision::NotSent(ErrorKind::Dropped, "dropped by the middleware".into())
            }
            Err(e) => return Decision::NotSent(ErrorKind::Hook, format!("middleware: {e}")),
        }
    }
    Decision::Send(req)
}

/// Prepares one selected exchange (hooks) and sends it to every target.
async fn exchange_task(shared: &Shared, pass: u32, mut ex: Box<Exchange>) {
    // Hooks may decide not to send; the row then names the request as recorded.
    let hooks = shared.has_request_hooks();
    let original_host = hooks
        .then(|| header(&ex.request_headers, "host").map(str::to_owned))
        .flatten();
    let decision = match OutgoingRequest::take_from_exchange(&mut ex, hooks) {
        Err(u) => {
            shared.counters.unreplayable.fetch_add(1, Ordering::Relaxed);
            Decision::NotSent(ErrorKind::Unreplayable, u.0)
        }
        // Boxed: the middleware's future is large, and most replays have no hooks.
        Ok(req) if hooks => Box::pin(apply_request_hooks(shared, req)).await,
        Ok(req) => Decision::Send(req),
    };
    let req = match decision {
        Decision::Send(req) => req,
        Decision::NotSent(kind, message) => {
            match kind {
                ErrorKind::Dropped => &shared.counters.dropped,
                ErrorKind::Hook => &shared.counters.hook_errors,
                _ => &shared.counters.unreplayable_rows,
            }
            .fetch_add(1, Ordering::Relaxed);
            for t in &shared.targets {
                shared
                    .counters
                    .errors
                    .fetch_add(u64::from(kind != ErrorKind::Dropped), Ordering::Relaxed);
                shared
                    .rows
                    .push(unsent_row(
                        &shared.run_id,
                        t,
                        pass,
                        &ex,
                        kind,
                        message.clone(),
                    ))
                    .await;
            }
            return;
        }
    };
    let recorded = ex.request_start_us;
    // The target's Host goes out unless a hook set one of its own.
    let host_set_by_hooks = hooks && req.header("host") != original_host.as_deref();
    let n = shared.targets.len();
    if n == 1 {
        send_one(shared, 0, 0, pass, recorded, req, host_set_by_hooks).await;
        return;
    }
    // A random order per exchange: the futures are polled, so their requests written, in the
    // order they are listed (see `order`).
    let order = crate::order::send_order(n, &shared.run_id, &req.exchange_id, pass);
    let sends = order.iter().enumerate().map(|(position, &ti)| {
        send_one(
            shared,
            ti,
            position,
            pass,
            recorded,
            req.clone(),
            host_set_by_hooks,
        )
    });
    futures_util::future::join_all(sends).await;
}

/// The tasks that send: one per exchange in flight (`--concurrency` divided by the targets each
/// exchange goes to), each taking the next exchange when it is done with the last. Long-lived
/// tasks rather than one task per exchange: spawning copies the request future (kilobytes)
/// and costs an allocation and the task bookkeeping for every request.
struct Workers {
    /// Each worker's inbox (room for one exchange, given only when it is idle).
    inboxes: Vec<mpsc::Sender<(u32, Box<Exchange>)>>,
    /// Workers that are idle, by index.
    idle: mpsc::UnboundedReceiver<usize>,
    tasks: JoinSet<()>,
}

impl Workers {
    fn start(shared: &Arc<Shared>, concurrency: usize) -> Workers {
        // One slot per target: waiting for an idle worker is how --concurrency pushes back.
        let per_exchange = shared.targets.len().clamp(1, concurrency.max(1));
        let count = (concurrency / per_exchange).max(1);
        let (idle_tx, idle) = mpsc::unbounded_channel();
        let mut inboxes = Vec::with_capacity(count);
        let mut tasks = JoinSet::new();
        for id in 0..count {
            let (tx, mut inbox) = mpsc::channel::<(u32, Box<Exchange>)>(1);
            inboxes.push(tx);
            let (shared, idle_tx) = (shared.clone(), idle_tx.clone());
            let _ = idle_tx.send(id);
            tasks.spawn(async move {
                while let Some((pass, ex)) = inbox.recv().await {
                    exchange_task(&shared, pass, ex).await;
                    if idle_tx.send(id).is_err() {
                        break;
                    }
                }
            });
        }
        Workers {
            inboxes,
            idle,
            tasks,
        }
    }

    /// Gives the exchange to the next idle worker, waiting for one. False when none is left
    /// (a worker task ended early, which only a panic does).
    async fn hand(&mut self, pass: u32, ex: Box<Exchange>) -> bool {
        let Some(id) = self.idle.recv().await else {
            return false;
        };
        self.inboxes[id].send((pass, ex)).await.is_ok()
    }

    /// Lets every worker finish the exchange it holds, then ends them.
    async fn finish(mut self) {
        self.inboxes.clear();
        while let Some(ended) = self.tasks.join_next().await {
            if let Err(e) = ended {
                // Only a bug does this; say so rather than lose the exchange quietly.
                tracing::error!("a sending task failed ({e}): the exchange it held has no row");
            }
        }
    }
}

/// Runs a replay until the recording ends, `duration` passes, or `stop` turns true; then waits
/// for the requests in flight, closes the files and writes `replay-<run>.summary.json`.
///
/// The scheduling loop runs as a task of its own, not as the future the runtime blocks on: a
/// current-thread runtime polls that future only between batches of up to 61 other tasks, and
/// a replay at `--rate max` left connections idle waiting for it (measured: +15% requests/s).
pub async fn replay(
    opts: ReplayOptions,
    stop: watch::Receiver<bool>,
) -> Result<ReplaySummary, ReplayError> {
    let out = opts.out.clone();
    tokio::spawn(run_replay(opts, stop))
        .await
        .map_err(|e| ReplayError::Io {
            path: out,
            source: std::io::Error::other(format!("the replay task failed: {e}")),
        })?
}

async fn run_replay(
    mut opts: ReplayOptions,
    stop: watch::Receiver<bool>,
) -> Result<ReplaySummary, ReplayError> {
    let started = Instant::now();
    if opts.targets.is_empty() {
        return Err(ReplayError::InvalidOption {
            option: "--target",
            message: "give at least one NAME=URL".into(),
        });
    }
    let mut names = HashSet::new();
    for t in &opts.targets {
        if !names.insert(t.name.clone()) {
            return Err(ReplayError::InvalidOption {
                option: "--target",
                message: format!("the name {:?} is used twice", t.name),
            });
        }
    }
    if opts.concurrency == 0 {
        return Err(ReplayError::InvalidOption {
            option: "--concurrency",
            message: "must be at least 1".into(),
        });
    }
    let from = opts.from.clone();
    let recording = tokio::task::spawn_blocking(move || Recording::open(&from))
        .await
        .map_err(|e| ReplayError::Io {
            path: opts.from.clone(),
            source: std::io::Error::other(e),
        })??;
    let rec = recording.clone();
    let captured = tokio::task::spawn_blocking(move || captured_hosts(&rec))
        .await
        .map_err(|e| ReplayError::Io {
            path: opts.from.clone(),
            source: std::io::Error::other(e),
        })??;
    check_targets(&opts.targets, &captured).await?;

    let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
    let hooks = opts.rules.is_some() || opts.script.is_some() || opts.middleware.is_some();
    let senders = match (opts.pacing, hooks) {
        (Pacing::Max, false) if opts.senders == 0 => std::thread::available_parallelism()
            .map_or(1, usize::from)
            .min(MAX_SENDERS),
        (Pacing::Max, false) => opts.senders,
        _ => 1,
    }
    // Each thread needs room for one exchange at every target: `--concurrency` bounds the
    // requests in flight over all threads.
    .clamp(1, (opts.concurrency / opts.targets.len()).max(1));
    let share = |k: usize| opts.concurrency / senders + usize::from(k < opts.concurrency % senders);
    let counters: Vec<Arc<Counters>> = (0..senders).map(|_| Arc::default()).collect();
    let clients = routes(&opts.targets, &opts.client, share(0))?;
    let middleware =
        match &opts.middleware {
            Some(cmd) => Some(Middleware::start(cmd, opts.middleware_timeout).map_err(
                |message| ReplayError::Hook {
                    what: "--middleware".into(),
                    message,
                },
            )?),
            None => None,
        };
    std::fs::create_dir_all(&opts.out).map_err(|source| ReplayError::Io {
        path: opts.out.clone(),
        source,
    })?;
    let sink = ParquetSink::new(
        SinkOptions {
            dir: opts.out.clone(),
            prefix: format!("replays-{run_id}"),
            max_file_bytes: opts.max_file_bytes,
            max_row_group_rows: 64 * 1024,
        },
        replays_schema(),
    )?;
    let (row_tx, row_rx) = mpsc::channel::<Vec<ReplayRecord>>(8);
    let spare = Arc::new(Spare::default());
    let writer_spare = spare.clone();
    let writer_targets = opts.targets.clone();
    let writer = std::thread::Builder::new()
        .name("replay-writer".into())
        .spawn(move || {
            if senders == 1 {
                yield_to_sending();
            }
            write_rows(row_rx, &writer_spare, sink, &writer_targets)
        })
        .map_err(|source| ReplayError::Io {
            path: opts.out.clone(),
            source,
        })?;

    let shared = Arc::new(Shared {
        run_id: run_id.as_str().into(),
        targets: clients,
        rules: opts.rules.take(),
        script: opts.script.take(),
        middleware,
        marker: opts.marker_header.clone(),
        preserve_host: opts.preserve_host,
        max_body: opts.client.max_body,
        rows: RowOut {
            pending: std::sync::Mutex::new(Vec::with_capacity(RowOut::BATCH)),
            tx: row_tx,
            spare,
        },
        counters: counters[0].clone(),
    });
    let (item_txs, item_rxs): (Vec<_>, Vec<_>) =
        (0..senders).map(|_| mpsc::channel::<Vec<Item>>(4)).unzip();
    let out_of_order = Arc::new(AtomicU64::new(0));
    let reader = {
        let (rec, passes, ooo) = (recording.clone(), opts.passes, out_of_order.clone());
        let selection = Selection {
            criteria: opts.criteria.clone(),
            sampler: opts.sampler,
            allow_methods: opts.allow_methods.clone(),
        };
        std::thread::Builder::new()
            .name("replay-reader".into())
            .spawn(move || {
                if senders == 1 {
                    yield_to_sending();
                }
                read_recording(rec, passes, selection, item_txs, ooo)
            })
            .map_err(|source| ReplayError::Io {
                path: opts.from.clone(),
                source,
            })?
    };
    let total_hint = opts.passes.map(|p| recording.rows() * u64::from(p));
    let progress = Progress::start(opts.progress, total_hint, counters.clone());

    let deadline = opts.duration.map(|d| started + d);
    // The other sending threads: each its own runtime, connections and share of the requests
    // in flight, the same counters and writer.
    let mut item_rxs = item_rxs.into_iter();
    let first = item_rxs.next().ok_or_else(|| ReplayError::Io {
        path: opts.out.clone(),
        source: std::io::Error::other("no queue for the sending thread"),
    })?;
    let mut others = Vec::new();
    for (k, items) in item_rxs.enumerate().map(|(i, rx)| (i + 1, rx)) {
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
            .map_err(|source| ReplayError::Io {
                path: opts.out.clone(),
                source,
            })?;
        others.push(thread);
    }
    let mut dispatched = vec![
        dispatch(
            shared.clone(),
            share(0),
            opts.pacing,
            first,
            stop.clone(),
            deadline,
        )
        .await,
    ];
    for thread in others {
        let joined = tokio::task::spawn_blocking(move || thread.join()).await;
        match joined {
            Ok(Ok(Ok(d))) => dispatched.push(d),
            Ok(Ok(Err(source))) => {
                return Err(ReplayError::Io {
                    path: opts.out.clone(),
                    source,
                })
            }
            // Only a bug does this; say so rather than lose the rows quietly.
            _ => tracing::error!("a sending thread failed: its exchanges in flight have no row"),
        }
    }
    let mut summary = ReplaySummary {
        run_id: run_id.clone(),
        schema_version: REPLAYS_SCHEMA_VERSION,
        recording: opts.from.clone(),
        recording_rows: recording.rows(),
        stopped_by: "end".into(),
        ..Default::default()
    };
    let mut failure = None;
    for d in dispatched {
        summary.exchanges_read += d.read;
        summary.selected += d.selected;
        summary.not_matched += d.not_matched;
        summary.sampled_out += d.sampled_out;
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
    progress.finish().await;
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    summary.out_of_order = out_of_order.load(Ordering::Relaxed);
    summary.unreplayable = total(&counters, |c| &c.unreplayable);
    summary.dropped_by_hooks = total(&counters, |c| &c.dropped);
    summary.hook_errors = total(&counters, |c| &c.hook_errors);
    let shared = Arc::try_unwrap(shared).map_err(|_| ReplayError::Io {
        path: opts.out.clone(),
        source: std::io::Error::other("request tasks still hold the writer"),
    })?;
    drop(shared.rows.tx);
    let written = tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_err(|e| ReplayError::Io {
            path: opts.out.clone(),
            source: std::io::Error::other(e),
        })?
        .map_err(|_| ReplayError::Io {
            path: opts.out.clone(),
            source: std::io::Error::other("writer thread panicked"),
        })??;
    if let Some(e) = failure {
        return Err(e);
    }
    summary.rows_written = written.rows;
    summary.files = written.files;
    summary.targets = written.targets;
    summary.elapsed_s = started.elapsed().as_secs_f64();
    write_summary(&opts.out, &summary)?;
    Ok(summary)
}

/// Sending threads at most when their number is picked automatically.
pub const MAX_SENDERS: usize = 4;

/// What one sending thread's dispatch loop counted.
#[derive(Default)]
struct Dispatched {
    read: u64,
    selected: u64,
    not_matched: u64,
    sampled_out: u64,
    refused: BTreeMap<String, u64>,
    passes: u32,
    max_lag_ms: f64,
    /// `signal` or `duration` when either stopped it before the items ended.
    stopped_by: Option<&'static str>,
    failure: Option<ReplayError>,
}

/// The clients for `targets`, each pooling up to `concurrency` connections.
fn routes(
    targets: &[Target],
    client: &ClientOptions,
    concurrency: usize,
) -> Result<Vec<Route>, ReplayError> {
    targets
        .iter()
        .map(|t| {
            let options = ClientOptions {
                pool_size: concurrency,
                ..client.clone()
            };
            let client =
                build_client(&t.url, &options).map_err(|message| ReplayError::InvalidOption {
                    option: "--target",
                    message,
                })?;
            Ok(Route {
                client,
                authority: t.authority(),
                origin: t.origin(),
                name: t.name.as_str().into(),
                url_text: t.url.as_str().into(),
                target: t.clone(),
            })
        })
        .collect()
}

/// One sending thread's loop: hands the exchanges from `item_rx` to `concurrency` sending tasks
/// on the current runtime, at the pace `pacing` asks, until the items end, `deadline` passes
/// or `stop` turns true; then lets the tasks finish and hands their last rows to the writer.
async fn dispatch(
    shared: Arc<Shared>,
    concurrency: usize,
    pacing: Pacing,
    mut item_rx: mpsc::Receiver<Vec<Item>>,
    mut stop: watch::Receiver<bool>,
    deadline: Option<Instant>,
) -> Dispatched {
    let mut d = Dispatched::default();
    let mut items: std::collections::VecDeque<Item> = std::collections::VecDeque::new();
    let mut workers = Workers::start(&shared, concurrency);
    let mut pacer = Pacer::new(pacing, Instant::now());
    let stop_now = |s: &watch::Receiver<bool>| *s.borrow();
    'dispatch: loop {
        if stop_now(&stop) {
            d.stopped_by = Some("signal");
            break;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            d.stopped_by = Some("duration");
            break;
        }
        if items.is_empty() {
            let batch = tokio::select! {
                biased;
                _ = wait_stop(&mut stop) => continue,
                _ = sleep_until_opt(deadline) => { d.stopped_by = Some("duration"); break }
                batch = item_rx.recv() => batch,
            };
            match batch {
                Some(b) => items.extend(b),
                None => break,
            }
        }
        let item = items.pop_front();
        let (pass, ex) = match item {
            None => break,
            Some(Item::Failed(e)) => {
                d.failure = Some(e);
                break;
            }
            Some(Item::PassStart(p)) => {
                if p > 0 {
                    pacer.new_pass();
                }
                d.passes = p + 1;
                continue;
            }
            Some(Item::Skipped(skipped)) => {
                let n = skipped.total();
                d.read += n;
                shared.counters.read.fetch_add(n, Ordering::Relaxed);
                d.not_matched += skipped.not_matched;
                d.sampled_out += skipped.sampled_out;
                for (method, n) in skipped.refused {
                    *d.refused.entry(method).or_default() += n;
                }
                continue;
            }
            Some(Item::Exchange(pass, ex)) => (pass, ex),
        };
        d.read += 1;
        shared.counters.read.fetch_add(1, Ordering::Relaxed);
        let due = pacer.due(ex.request_start_us);
        if let Some(due) = due {
            tokio::select! {
                biased;
                // Stopped while waiting: this request was not sent, and is not recorded.
                _ = wait_stop(&mut stop) => {
                    d.stopped_by = Some("signal");
                    break 'dispatch;
                }
                _ = sleep_until_opt(deadline) => {
                    d.stopped_by = Some("duration");
                    break 'dispatch;
                }
                _ = tokio::time::sleep_until(due) => {}
            }
            let lag = Instant::now().saturating_duration_since(due).as_secs_f64() * 1000.0;
            d.max_lag_ms = d.max_lag_ms.max(lag);
        }
        d.selected += 1;
        if !workers.hand(pass, ex).await {
            break;
        }
    }
    // Stop reading, finish what is in flight, then hand the last rows to the writer.
    drop(item_rx);
    workers.finish().await;
    shared.rows.flush().await;
    d
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn wait_stop(stop: &mut watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        if stop.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn write_summary(dir: &Path, summary: &ReplaySummary) -> Result<(), ReplayError> {
    let path = dir.join(format!("replay-{}.summary.json", summary.run_id));
    let tmp = dir.join(format!(
        ".replay-{}.summary.json.inprogress",
        summary.run_id
    ));
    let text = serde_json::to_string_pretty(summary).map_err(|e| ReplayError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| ReplayError::Io { path, source })
}

/// Progress: an indicatif bar on a terminal, plain lines otherwise.
struct Progress {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(
        mode: ProgressMode,
        total_hint: Option<u64>,
        counters: Vec<Arc<Counters>>,
    ) -> Progress {
        let ProgressMode::Auto { interval } = mode else {
            return Progress {
                stop: None,
                task: None,
            };
        };
        let (tx, mut rx) = tokio::sync::oneshot::channel();
        let tty = std::io::stderr().is_terminal();
        let task = tokio::spawn(async move {
            let bar = tty.then(|| {
                let bar = indicatif::ProgressBar::with_draw_target(
                    total_hint,
                    indicatif::ProgressDrawTarget::stderr(),
                );
                let style = indicatif::ProgressStyle::with_template(
                    "{elapsed_precise} [{wide_bar}] {pos}/{len} read, {msg} (ETA {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
                bar.set_style(style);
                bar
            });
            let begun = Instant::now();
            let every = if tty {
                Duration::from_millis(250)
            } else {
                interval
            };
            loop {
                tokio::select! {
                    _ = &mut rx => break,
                    _ = tokio::time::sleep(every) => {}
                }
                let c = &counters;
                let (read, sent, done, errors) = (
                    total(c, |c| &c.read),
                    total(c, |c| &c.sent),
                    total(c, |c| &c.done),
                    total(c, |c| &c.errors),
                );
                let rate = done as f64 / begun.elapsed().as_secs_f64().max(1e-3);
                match &bar {
                    Some(bar) => {
                        bar.set_position(read);
                        bar.set_message(format!("{sent} sent, {rate:.0}/s, {errors} errors"));
                    }
                    None => eprintln!(
                        "replay: {:.0}s {read}{} exchanges read, {sent} requests sent, {done} done ({rate:.0}/s), {errors} errors",
                        begun.elapsed().as_secs_f64(),
                        total_hint.map_or(String::new(), |t| format!("/{t}"))
                    ),
                }
            }
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
        });
        Progress {
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_exact_below_a_millisecond_and_within_two_percent_above() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        let mut values: Vec<i64> = (0..5_000).map(|i| (i * 7919) % 1_000).collect();
        values.extend((0..5_000).map(|i| 1_000 + (i * 104_729) % 50_000_000));
        for &v in &values {
            h.record(v);
        }
        values.sort_unstable();
        for q in [0.0, 0.1, 0.25, 0.49, 0.5, 0.9, 0.99, 1.0] {
            let exact = values[((values.len() - 1) as f64 * q).round() as usize] as u64;
            let got = h.quantile(q).unwrap();
            if exact < 1024 {
                assert_eq!(got, exact, "q={q}");
            } else {
                assert!(
                    got <= exact && exact - got <= exact / 64,
                    "q={q}: {got} vs {exact}"
                );
            }
        }
        // Bounded: 50 s of latency needs well under a thousand buckets beyond the exact ones.
        assert!(h.counts.len() < 1024 + 64 * 27, "{}", h.counts.len());
        for us in [1024u64, 1025, 2047, 2048, 3000, 1 << 40, u64::MAX >> 1] {
            let i = LatencyHistogram::bucket(us);
            assert!(LatencyHistogram::lower_bound(i) <= us, "{us}");
            assert!(LatencyHistogram::lower_bound(i + 1) > us, "{us}");
        }
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(999), "9xx");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn parquet_threads_step_back_for_the_sending_thread() {
        let own = rustix::process::getpriority_process(None).unwrap();
        let lowered = std::thread::spawn(|| {
            yield_to_sending();
            rustix::process::getpriority_process(None).unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(lowered, (own + 10).min(19));
        // Only that thread: this one keeps its priority.
        assert_eq!(rustix::process::getpriority_process(None).unwrap(), own);
    }

    #[test]
    fn targets_parse_and_refuse_nonsense() {
        let t: Target = "candidate=http://127.0.0.1:8080/base".parse().unwrap();
        assert_eq!(
            (t.name.as_str(), t.authority().as_str()),
            ("candidate", "127.0.0.1:8080")
        );
        let req = OutgoingRequest {
            exchange_id: "e".into(),
            method: "GET".into(),
            path: "/a b".into(),
            query: Some("x=1".into()),
            headers: vec![],
            body: vec![],
            delay: Duration::ZERO,
        };
        assert_eq!(
            route_url(&t.origin(), t.url.path(), &req),
            ("http://127.0.0.1:8080/base/a%20b?x=1".to_owned(), 21)
        );
        assert!("nourl".parse::<Target>().is_err());
        assert!("x=ftp://h/".parse::<Target>().is_err());
        assert!("bad name=http://h/".parse::<Target>().is_err());
        assert!("x=http://h/?q=1".parse::<Target>().is_err());
    }

    #[test]
    fn every_recorded_path_and_query_becomes_a_valid_request_target() {
        let mut all = String::new();
        for c in (0u8..=127).map(char::from).chain(['é', '€', '😀']) {
            all.push(c);
        }
        let req = OutgoingRequest {
            exchange_id: "e".into(),
            method: "GET".into(),
            path: format!("/{all}").into(),
            query: Some(all.as_str().into()),
            headers: vec![],
            body: vec![],
            delay: Duration::ZERO,
        };
        let (url, at) = route_url("http://h:1", "/", &req);
        let target: http::Uri = url[at..].parse().unwrap_or_else(|e| panic!("{e}: {url}"));
        assert_eq!(
            target.path().matches('?').count(),
            0,
            "a ? in the path is encoded"
        );
        // Valid bytes stay as recorded; an encoded path stays encoded.
        let plain = OutgoingRequest {
            path: "/a/b%2Fc;x=1".into(),
            query: Some("q=[1]&r=a?b".into()),
            ..req
        };
        assert_eq!(
            route_url("http://h:1", "", &plain).0,
            "http://h:1/a/b%2Fc;x=1?q=[1]&r=a?b"
        );
    }

    #[test]
    fn host_ports_split() {
        assert_eq!(
            split_host_port("example.com:8080"),
            Some(("example.com".into(), 8080))
        );
        assert_eq!(split_host_port("[::1]:80"), Some(("::1".into(), 80)));
        assert_eq!(split_host_port("example.com"), None);
        assert_eq!(split_host_port("::1"), None);
    }
}

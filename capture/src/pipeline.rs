//! The offline capture pipeline: files → packets → segments → exchanges → sample → Parquet.
//!
//! Packet decoding, reassembly and parsing run on the calling thread; the exchanges then go
//! through a bounded channel to a writer thread, which prepares each one for disk
//! ([`crate::prepare`]: content decoding, then redaction) before Arrow conversion and Parquet
//! encoding, so the two cores of a small machine both work and memory stays bounded.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shadowtap_core::exchange::Exchange;
use shadowtap_core::id::{civil_from_days, new_run_id};
use shadowtap_core::schema::{exchanges_schema, exchanges_to_batch, EXCHANGES_SCHEMA_VERSION};
use shadowtap_core::sink::{ParquetSink, SinkOptions};

use crate::criteria::MatchCriteria;
use crate::decode::{Decoded, Decoder};
use crate::error::CaptureError;
use crate::live::{LiveOptions, LiveSource};
use crate::memory::{InFlight, MemoryPlan};
use crate::metrics::{serve_metrics, StatsRecord};
use crate::prepare::{Prepare, Prepared};
use crate::reassembly::{FlowTable, ReassemblyConfig};
use crate::redact::Redaction;
use crate::sampling::{Percent, SampleBy, Sampler};
use crate::shedding::FlowShedder;
use crate::source::FileSource;
use crate::summary::{CaptureSummary, FlagCounts, InputSummary};

/// Settings of an offline capture.
#[derive(Debug, Clone)]
pub struct CaptureOptions {
    /// Capture files, read in this order as one continuous capture (as `tcpdump -C` rotates).
    pub inputs: Vec<PathBuf>,
    /// Output directory.
    pub out_dir: PathBuf,
    /// BPF filter applied by libpcap.
    pub filter: Option<String>,
    /// Which exchanges to keep by content (applied before sampling).
    pub criteria: MatchCriteria,
    /// Replaces secrets by keyed HMACs before anything is written ([`Redaction::Off`] writes
    /// them as seen). The default draws a random key when the capture starts, and the capture
    /// refuses to start when the OS random source fails.
    pub redaction: Redaction,
    /// How the summary describes redaction (`on, random key per run`, `off`, …).
    pub redaction_note: String,
    /// Sampling.
    pub sampler: Sampler,
    /// Reassembly and parser limits. Its `max_memory` is replaced by the flows' share of
    /// [`CaptureOptions::max_memory`].
    pub reassembly: ReassemblyConfig,
    /// The capture's byte budget (`--max-memory`), split by [`MemoryPlan::split`] between the
    /// flows being reassembled and the exchanges on their way to disk.
    pub max_memory: u64,
    /// Roll output files at this size.
    pub max_file_bytes: u64,
    /// Also roll files that have been open this long (live captures make complete files
    /// visible as they go).
    pub rotate_every: Option<Duration>,
    /// Write into Hive-style `date=YYYY-MM-DD/hour=HH/` directories by request start (UTC),
    /// which DuckDB, DataFusion and Spark read as partition columns.
    pub partition_by_hour: bool,
    /// Show a progress line on stderr when it is a terminal.
    pub progress: bool,
    /// Run id used in file names; generated from the clock when `None`.
    pub run_id: Option<String>,
    /// Writer threads (content decoding, Arrow conversion, Parquet encoding), each writing its
    /// own series of files.
    pub writers: usize,
}

impl CaptureOptions {
    /// Defaults: no filter, everything kept, 16 MiB body cap, 256 MiB files.
    pub fn new(inputs: Vec<PathBuf>, out_dir: PathBuf) -> Self {
        CaptureOptions {
            inputs,
            out_dir,
            filter: None,
            criteria: MatchCriteria::default(),
            // Secrets never reach disk unless asked: a fresh random key per run by default.
            redaction: Redaction::RandomKey(Vec::new()),
            redaction_note: "on, random key per run".into(),
            sampler: Sampler {
                percent: Percent::ALL,
                by: SampleBy::Exchange,
            },
            reassembly: ReassemblyConfig::default(),
            max_memory: crate::reassembly::default_max_memory(),
            max_file_bytes: 256 << 20,
            rotate_every: None,
            partition_by_hour: false,
            progress: true,
            run_id: None,
            writers: std::thread::available_parallelism().map_or(2, |n| n.get().min(4)),
        }
    }
}

/// Exchanges per batch sent to the writer (the plan's `batch_bytes` close it early).
const BATCH_ROWS: usize = 4096;
/// Live capture: exchanges held for busy writers before the packet loop waits for them (or
/// the plan's `held_bytes` of bodies, whichever bound comes first).
const MAX_HELD_ROWS: usize = 64 * 1024;

/// Runs an offline capture. Input errors after some packets were read are reported in the
/// summary (and the good data kept); the call fails only when nothing could be read at all,
/// or the output cannot be written.
pub fn capture_files(opts: &CaptureOptions) -> Result<CaptureSummary, CaptureError> {
    if opts.inputs.is_empty() {
        return Err(CaptureError::InvalidOption {
            option: "--read",
            message: "no capture file given".into(),
        });
    }
    // Open every input first: a typo in the last file should not cost a long run.
    let mut sources = Vec::new();
    let mut open_errors = Vec::new();
    for path in &opts.inputs {
        match FileSource::open(path, opts.filter.as_deref()) {
            Ok(s) => sources.push((path.clone(), s)),
            Err(e @ CaptureError::Filter { .. }) => return Err(e),
            Err(e) => open_errors.push((path.clone(), e)),
        }
    }
    if sources.is_empty() {
        return Err(open_errors
            .into_iter()
            .next()
            .map(|(_, e)| e)
            .unwrap_or(CaptureError::NothingRead));
    }
    // Key logs inside pcapng files (Decryption Secrets Blocks) join --tls-keylog's.
    let embedded: String = sources
        .iter()
        .map(|(p, _)| crate::secrets::tls_key_logs(p))
        .collect();
    let with_keys;
    let opts = if embedded.trim().is_empty() {
        opts
    } else {
        match &opts.reassembly.tls_keys {
            Some(keys) => {
                keys.add_text(&embedded);
                opts
            }
            None => {
                let mut o = opts.clone();
                o.reassembly.tls_keys = Some(std::sync::Arc::new(
                    shadowtap_tls::KeyLog::from_text(&embedded),
                ));
                with_keys = o;
                &with_keys
            }
        }
    };
    let mut run = Run::start(opts)?;
    for (path, mut source) in sources {
        let name = path.display().to_string();
        run.table.set_source(&name);
        let mut decoder = Decoder::new(source.link_type());
        let mut input = InputSummary {
            path: path.clone(),
            ..Default::default()
        };
        loop {
            let packet = match source.next_packet() {
                Ok(Some(p)) => p,
                Ok(None) => break,
                Err(e) => {
                    input.error = Some(e.to_string());
                    break;
                }
            };
            input.packets += 1;
            input.bytes += packet.data.len() as u64;
            run.packet(&mut decoder, packet.ts_us, packet.data, packet.wire_len);
        }
        run.add_fragment_stats(&decoder);
        run.summary.inputs.push(input);
    }
    for (path, e) in open_errors {
        run.summary.inputs.push(InputSummary {
            path,
            error: Some(e.to_string()),
            ..Default::default()
        });
    }
    let summary = run.finish()?;
    if summary.packets == 0 && summary.inputs.iter().all(|i| i.error.is_some()) {
        return Err(CaptureError::NothingRead);
    }
    write_summary(&opts.out_dir, &summary)?;
    Ok(summary)
}

/// When a live capture stops, besides a signal, and how it reports while running.
#[derive(Debug, Clone, Default)]
pub struct LiveLimits {
    /// Stop after this long.
    pub duration: Option<Duration>,
    /// Stop once this many exchanges were found.
    pub max_exchanges: Option<u64>,
    /// Print a stats line and append a record to `capture-<run>.stats.jsonl` this often.
    pub stats_interval: Option<Duration>,
    /// Serve Prometheus metrics here.
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// What a live capture says once it has started.
#[derive(Debug, Clone)]
pub struct Started {
    /// The interface.
    pub interface: String,
    /// Where metrics are served, when asked.
    pub metrics: Option<std::net::SocketAddr>,
}

/// Runs a live capture until `stop` is set or a limit is reached, then flushes every open
/// flow and closes the files. `on_started` is called once the interface is open.
pub fn capture_live(
    opts: &CaptureOptions,
    live: &LiveOptions,
    limits: &LiveLimits,
    stop: &AtomicBool,
    on_started: impl FnOnce(&Started),
) -> Result<CaptureSummary, CaptureError> {
    let source = LiveSource::start(live)?;
    let metrics = match limits.metrics_listen {
        Some(addr) => Some(
            serve_metrics(addr).map_err(|e| CaptureError::InvalidOption {
                option: "--metrics-listen",
                message: format!("{addr}: {e}"),
            })?,
        ),
        None => None,
    };
    let mut run = Run::start(opts)?;
    run.table.set_source(&live.interface);
    run.shedder = Some(FlowShedder::new(
        opts.reassembly.max_flows,
        opts.reassembly.idle_timeout_us,
    ));
    let mut decoder = Decoder::new(source.link_type());
    on_started(&Started {
        interface: live.interface.clone(),
        metrics: metrics.as_ref().map(|m| m.0),
    });
    let started = Instant::now();
    let stats_path = opts
        .out_dir
        .join(format!("capture-{}.stats.jsonl", run.summary.run_id));
    let mut stats_file = None;
    let report_every = limits
        .stats_interval
        .or(metrics.as_ref().map(|_| Duration::from_secs(1)));
    let mut last_report = Instant::now();
    let mut last_flush = Instant::now();
    let mut input = InputSummary {
        path: PathBuf::from(&live.interface),
        ..Default::default()
    };
    let mut reader_error = None;
    loop {
        if stop.load(Ordering::SeqCst)
            || limits.duration.is_some_and(|d| started.elapsed() >= d)
            || limits
                .max_exchanges
                .is_some_and(|m| run.summary.exchanges_seen >= m)
        {
            break;
        }
        match source.next_batch(Duration::from_millis(100)) {
            Ok(Some(batch)) => {
                run.hand_over_held();
                let fill = source.backlog().max(run.held_fill());
                if let Some(shedder) = run.shedder.as_mut() {
                    shedder.set_backlog(fill);
                }
                for p in batch {
                    input.packets += 1;
                    input.bytes += p.data.len() as u64;
                    run.packet(&mut decoder, p.ts_us, &p.data, p.wire_len);
                }
            }
            Ok(None) => run.progress_tick(),
            Err(_closed) => break,
        }
        // On a quiet link a batch fills slowly: hand it over every second anyway.
        if last_flush.elapsed() >= Duration::from_secs(1) {
            last_flush = Instant::now();
            run.flush_batch();
        }
        if let Some(every) = report_every {
            if last_report.elapsed() >= every {
                last_report = Instant::now();
                let record = StatsRecord {
                    ts: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs_f64(),
                    elapsed_s: started.elapsed().as_secs_f64(),
                    packets: run.summary.packets,
                    bytes: run.summary.bytes,
                    pcap: source.counters(),
                    exchanges_seen: run.summary.exchanges_seen,
                    exchanges_kept: run.summary.exchanges_seen
                        - run.summary.exchanges_not_matched
                        - run.summary.exchanges_sampled_out,
                    open_flows: run.table.open_flows() as u64,
                    bytes_buffered: run.table.buffered_bytes(),
                    flows_cut_by_memory: run.table.stats().flows_cut_by_memory,
                    flows_shed: run.shedder.as_ref().map_or(0, |s| s.stats().flows),
                    new_flows_kept_percent: run
                        .shedder
                        .as_ref()
                        .map_or(100.0, FlowShedder::keep_percent),
                };
                if let Some((_, slot)) = &metrics {
                    if let Ok(mut t) = slot.lock() {
                        *t = record.prometheus();
                    }
                }
                if limits.stats_interval.is_some() {
                    eprintln!("{}", record.line());
                    if stats_file.is_none() {
                        stats_file = std::fs::OpenOptions::new()
                            .create(true)
                            .append(true)
                            .open(&stats_path)
                            .ok();
                    }
                    if let Some(f) = stats_file.as_mut() {
                        use std::io::Write as _;
                        let _ = writeln!(
                            f,
                            "{}",
                            serde_json::to_string(&record).expect("stats serialise")
                        );
                    }
                }
            }
        }
    }
    let (rest, stats) = source.stop();
    for p in rest {
        input.packets += 1;
        input.bytes += p.data.len() as u64;
        run.packet(&mut decoder, p.ts_us, &p.data, p.wire_len);
    }
    match stats {
        Ok(s) => run.summary.live = Some(s),
        Err(e) => reader_error = Some(e.to_string()),
    }
    input.error = reader_error;
    run.summary.load_shed = run.shedder.as_ref().map(FlowShedder::stats);
    run.add_fragment_stats(&decoder);
    run.summary.inputs.push(input);
    let summary = run.finish()?;
    write_summary(&opts.out_dir, &summary)?;
    Ok(summary)
}

/// One capture run: packets in, exchanges sampled and handed to the writer threads.
struct Run<'a> {
    opts: &'a CaptureOptions,
    table: FlowTable,
    batch: Batch,
    summary: CaptureSummary,
    senders: Vec<mpsc::SyncSender<(Vec<Exchange>, usize)>>,
    /// Bytes handed to the writers and not yet written.
    in_flight: Arc<InFlight>,
    writers: Vec<std::thread::JoinHandle<Result<Written, CaptureError>>>,
    next_writer: usize,
    send_failed: bool,
    progress: Progress,
    frag_reassembled: u64,
    frag_dropped: u64,
    /// Leaves whole flows out when a live capture falls behind.
    shedder: Option<FlowShedder>,
    /// Live: batches waiting for a writer with room, and their rows.
    held: std::collections::VecDeque<(Vec<Exchange>, usize)>,
    held_rows: usize,
    held_bytes: usize,
    /// How the byte budget is spent.
    plan: MemoryPlan,
}

impl<'a> Run<'a> {
    fn start(opts: &'a CaptureOptions) -> Result<Self, CaptureError> {
        let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
        let summary = CaptureSummary {
            run_id: run_id.clone(),
            schema_version: EXCHANGES_SCHEMA_VERSION,
            redaction: opts.redaction_note.clone(),
            ..Default::default()
        };
        // Content decoding, Arrow conversion and zstd dominate the cost: spread them over
        // writer threads, each with its own file series. Batches go round-robin, so which rows
        // land in which file is the same on every run.
        let writers_n = opts.writers.max(1);
        let plan = MemoryPlan::split(opts.max_memory, writers_n);
        let in_flight = Arc::new(InFlight::new(plan.in_flight_bytes));
        let max_body = opts.reassembly.parser.max_body;
        // One key for every writer thread, drawn before anything is read.
        let redactor = opts
            .redaction
            .resolve()
            .map_err(|e| CaptureError::RedactionKey {
                message: e.to_string(),
            })?;
        let mut senders = Vec::with_capacity(writers_n);
        let mut writers = Vec::with_capacity(writers_n);
        for w in 0..writers_n {
            let sink = ExchangeSinks {
                dir: opts.out_dir.clone(),
                base: format!("exchanges-{run_id}-{w}"),
                max_file_bytes: opts.max_file_bytes,
                rotate_every: opts.rotate_every,
                by_hour: opts.partition_by_hour,
                open: BTreeMap::new(),
                series: 0,
                files: Vec::new(),
                rows: 0,
                row_group_bytes: plan.row_group_bytes,
            };
            std::fs::create_dir_all(&opts.out_dir).map_err(|source| CaptureError::Io {
                path: opts.out_dir.clone(),
                source,
            })?;
            let (tx, rx) = mpsc::sync_channel::<(Vec<Exchange>, usize)>(2);
            let redactor = redactor.clone();
            let gate = in_flight.clone();
            let handle = std::thread::Builder::new()
                .name(format!("shadowtap-writer-{w}"))
                .spawn(move || {
                    let done = write_exchanges(rx, sink, Prepare::new(max_body, redactor), &gate);
                    gate.writer_stopped();
                    done
                })
                .map_err(|source| CaptureError::Io {
                    path: opts.out_dir.clone(),
                    source,
                })?;
            senders.push(tx);
            writers.push(handle);
        }
        Ok(Run {
            opts,
            table: FlowTable::new(
                ReassemblyConfig {
                    max_memory: plan.reassembly,
                    ..opts.reassembly.clone()
                },
                "",
            ),
            batch: Batch {
                rows: Vec::new(),
                bytes: 0,
                limit: plan.batch_bytes,
            },
            summary,
            senders,
            in_flight,
            writers,
            next_writer: 0,
            send_failed: false,
            progress: Progress::new(opts.progress && std::io::stderr().is_terminal()),
            frag_reassembled: 0,
            frag_dropped: 0,
            shedder: None,
            held: std::collections::VecDeque::new(),
            held_rows: 0,
            held_bytes: 0,
            plan,
        })
    }

    fn packet(&mut self, decoder: &mut Decoder, ts: i64, data: &[u8], wire_len: u32) {
        self.summary.packets += 1;
        self.summary.bytes += data.len() as u64;
        if (data.len() as u64) < u64::from(wire_len) {
            self.summary.snaplen_truncated_packets += 1;
        }
        match decoder.decode(ts, data) {
            Decoded::Tcp(seg) => {
                self.summary.tcp_segments += 1;
                if let Some(shedder) = self.shedder.as_mut() {
                    let table = std::cell::RefCell::new(&mut self.table);
                    if !shedder.admit(
                        ts,
                        &seg,
                        data.len(),
                        || table.borrow().is_open(&seg),
                        || table.borrow_mut().discard(&seg),
                    ) {
                        return;
                    }
                }
                self.table.on_segment(ts, &seg);
            }
            Decoded::Udp => self.summary.udp_skipped += 1,
            Decoded::Other => self.summary.other_skipped += 1,
            Decoded::FragmentHeld => {}
            Decoded::Malformed(_) => self.summary.malformed_packets += 1,
        }
        self.take_exchanges();
        if self.summary.packets.is_multiple_of(4096) {
            self.progress_tick();
        }
    }

    fn progress_tick(&mut self) {
        self.progress.tick(
            self.summary.packets,
            self.summary.bytes,
            self.summary.exchanges_seen,
            self.table.open_flows(),
        );
    }

    fn take_exchanges(&mut self) {
        for ex in self.table.take_exchanges() {
            if self.batch.push(
                ex,
                &self.opts.criteria,
                &self.opts.sampler,
                &mut self.summary,
            ) {
                self.flush_batch();
            }
        }
    }

    fn flush_batch(&mut self) {
        if self.shedder.is_some() && !self.held.is_empty() {
            self.hand_over_held();
        }
        let (rows, bytes) = self.batch.take();
        if rows.is_empty() || self.send_failed {
            return;
        }
        if self.shedder.is_none() {
            // Offline: block, and keep the round-robin order so files are the same every run.
            self.send_waiting(rows, bytes);
            return;
        }
        // Live: never stall the packet loop on a writer that is busy (closing a file, a slow
        // disk): hold the batch and keep reading, so the kernel and the reader queue never
        // overflow blindly. The held rows are bounded (count and bytes); past the bound the loop
        // waits, and the shedder sees the writers' backlog as pressure well before that.
        self.held_rows += rows.len();
        self.held_bytes += bytes;
        self.held.push_back((rows, bytes));
        self.hand_over_held();
        while (self.held_rows > MAX_HELD_ROWS || self.held_bytes > self.plan.held_bytes)
            && !self.send_failed
        {
            let (rows, bytes) = self.held.pop_front().expect("rows held");
            self.held_rows -= rows.len();
            self.held_bytes -= bytes;
            self.send_waiting(rows, bytes);
        }
    }

    /// Hands a batch to the next writer in turn, waiting for room in the in-flight bytes and
    /// in its queue.
    fn send_waiting(&mut self, rows: Vec<Exchange>, bytes: usize) {
        self.in_flight.acquire(bytes);
        let n = self.senders.len();
        if self.senders[self.next_writer % n]
            .send((rows, bytes))
            .is_err()
        {
            self.in_flight.release(bytes);
            self.send_failed = true;
        }
        self.next_writer += 1;
    }

    /// Gives held batches to any writer with room, without waiting.
    fn hand_over_held(&mut self) {
        let n = self.senders.len();
        'next: while let Some((mut rows, bytes)) = self.held.pop_front() {
            if !self.in_flight.try_acquire(bytes) {
                self.held.push_front((rows, bytes));
                return;
            }
            let len = rows.len();
            for _ in 0..n {
                let w = self.next_writer % n;
                self.next_writer += 1;
                match self.senders[w].try_send((rows, bytes)) {
                    Ok(()) => {
                        self.held_rows -= len;
                        self.held_bytes -= bytes;
                        continue 'next;
                    }
                    Err(mpsc::TrySendError::Full((back, _))) => rows = back,
                    Err(mpsc::TrySendError::Disconnected(_)) => {
                        self.in_flight.release(bytes);
                        self.send_failed = true;
                        return;
                    }
                }
            }
            self.in_flight.release(bytes);
            self.held.push_front((rows, bytes));
            return;
        }
    }

    /// How full the held backlog is, 0.0 to 1.0 (pressure for the shedder).
    fn held_fill(&self) -> f64 {
        (self.held_rows as f64 / MAX_HELD_ROWS as f64)
            .max(self.held_bytes as f64 / self.plan.held_bytes as f64)
    }

    fn add_fragment_stats(&mut self, decoder: &Decoder) {
        let fs = decoder.fragment_stats();
        self.summary.decapsulated_packets += decoder.decapsulated();
        self.frag_reassembled += fs.reassembled;
        self.frag_dropped += fs.dropped;
    }

    fn finish(mut self) -> Result<CaptureSummary, CaptureError> {
        self.table.finish();
        self.take_exchanges();
        self.flush_batch();
        while let Some((rows, bytes)) = self.held.pop_front() {
            if self.send_failed {
                break;
            }
            self.send_waiting(rows, bytes);
        }
        self.held_rows = 0;
        self.held_bytes = 0;
        self.senders.clear();
        self.progress.clear();
        let mut written = Written::default();
        for handle in std::mem::take(&mut self.writers) {
            let w = handle.join().map_err(|_| CaptureError::Io {
                path: self.opts.out_dir.clone(),
                source: std::io::Error::other("writer thread panicked"),
            })??;
            written.merge(w);
        }
        written.files.sort();
        let mut summary = self.summary;
        summary.ip_fragments_reassembled = self.frag_reassembled;
        summary.reassembly = self.table.stats();
        summary.exchanges_written = written.rows;
        summary.max_memory = self.opts.max_memory;
        // After the writers joined: the peak covers the whole run.
        summary.peak_resident_bytes = shadowtap_core::units::peak_resident_memory();
        summary.flags = written.flags;
        summary.flags.decode_error = written.decode_errors;
        summary.lost_to_caps.flows_evicted_by_cap = summary.reassembly.flows_evicted_by_cap;
        summary.lost_to_caps.flows_cut_by_memory = summary.reassembly.flows_cut_by_memory;
        summary.lost_to_caps.gaps_forced_by_buffer_cap =
            summary.reassembly.gaps_forced_by_buffer_cap;
        summary.lost_to_caps.ip_fragments_dropped = self.frag_dropped;
        summary.lost_to_caps.unanswered_overflow = summary.reassembly.unanswered_overflow;
        summary.lost_to_caps.bodies_truncated = written.flags.truncated;
        summary.files = written.files;
        Ok(summary)
    }
}

/// Writes `capture-{run_id}.summary.json` into `dir`, atomically.
fn write_summary(dir: &Path, summary: &CaptureSummary) -> Result<(), CaptureError> {
    let path = dir.join(format!("capture-{}.summary.json", summary.run_id));
    let tmp = dir.join(format!(
        ".capture-{}.summary.json.inprogress",
        summary.run_id
    ));
    let json = serde_json::to_vec_pretty(summary).expect("summary serialises");
    std::fs::write(&tmp, json).map_err(|source| CaptureError::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, &path).map_err(|source| CaptureError::Io { path, source })
}

struct Batch {
    rows: Vec<Exchange>,
    bytes: usize,
    /// Body bytes that close the batch.
    limit: usize,
}

impl Batch {
    /// Adds `ex` if it meets the criteria and is sampled in; true when the batch is full.
    fn push(
        &mut self,
        ex: Exchange,
        criteria: &MatchCriteria,
        sampler: &Sampler,
        summary: &mut CaptureSummary,
    ) -> bool {
        summary.exchanges_seen += 1;
        if !criteria.matches(&ex) {
            summary.exchanges_not_matched += 1;
            return false;
        }
        if !sampler.keep(&ex) {
            summary.exchanges_sampled_out += 1;
            return false;
        }
        self.bytes += ex.request_body.raw.len() + ex.response_body.raw.len() + 512;
        self.rows.push(ex);
        self.rows.len() >= BATCH_ROWS || self.bytes >= self.limit
    }
    /// The rows and their approximate size in bytes.
    fn take(&mut self) -> (Vec<Exchange>, usize) {
        (
            std::mem::take(&mut self.rows),
            std::mem::take(&mut self.bytes),
        )
    }
}

#[derive(Default)]
struct Written {
    rows: u64,
    files: Vec<PathBuf>,
    flags: FlagCounts,
    decode_errors: u64,
}

impl Written {
    fn merge(&mut self, o: Written) {
        self.rows += o.rows;
        self.files.extend(o.files);
        self.decode_errors += o.decode_errors;
        let (a, b) = (&mut self.flags, o.flags);
        a.no_response += b.no_response;
        a.incomplete += b.incomplete;
        a.gap += b.gap;
        a.parse_error += b.parse_error;
        a.truncated += b.truncated;
        a.decode_error += b.decode_error;
    }
}

/// A writer thread's output: one rolling Parquet sink per partition, rolled by size and time.
struct ExchangeSinks {
    dir: PathBuf,
    base: String,
    max_file_bytes: u64,
    rotate_every: Option<Duration>,
    by_hour: bool,
    /// Partition directory (empty without partitioning) → sink and when it was opened.
    open: BTreeMap<PathBuf, (ParquetSink, Instant)>,
    series: u32,
    files: Vec<PathBuf>,
    rows: u64,
    /// A row group is flushed once it holds this much.
    row_group_bytes: usize,
}

impl ExchangeSinks {
    fn partition(&self, ex: &Exchange) -> PathBuf {
        if !self.by_hour {
            return PathBuf::new();
        }
        let secs = ex.request_start_us.div_euclid(1_000_000);
        let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
        let hour = secs.rem_euclid(86_400) / 3600;
        PathBuf::from(format!("date={y:04}-{m:02}-{d:02}")).join(format!("hour={hour:02}"))
    }

    fn write(&mut self, rows: Vec<Exchange>) -> Result<(), CaptureError> {
        // Consumed: each partition's exchanges are dropped once converted.
        let mut groups: BTreeMap<PathBuf, Vec<Exchange>> = BTreeMap::new();
        for ex in rows {
            groups.entry(self.partition(&ex)).or_default().push(ex);
        }
        for (part, rows) in groups {
            if !self.open.contains_key(&part) {
                let sink = ParquetSink::new(
                    SinkOptions {
                        dir: self.dir.join(&part),
                        prefix: format!("{}-{:04}", self.base, self.series),
                        max_file_bytes: self.max_file_bytes,
                        max_row_group_rows: 16_384,
                    },
                    exchanges_schema(),
                )?
                .with_row_group_bytes(self.row_group_bytes);
                self.series += 1;
                self.open.insert(part.clone(), (sink, Instant::now()));
            }
            let batch = exchanges_to_batch(&rows)?;
            // The Arrow arrays hold the bodies now: free the exchanges before encoding, so a
            // writer holds two copies of a batch at most, not three.
            drop(rows);
            self.open
                .get_mut(&part)
                .expect("inserted above")
                .0
                .write(&batch)?;
        }
        self.rotate()
    }

    /// Closes sinks open longer than the rotation interval.
    fn rotate(&mut self) -> Result<(), CaptureError> {
        let Some(every) = self.rotate_every else {
            return Ok(());
        };
        let due: Vec<PathBuf> = self
            .open
            .iter()
            .filter(|(_, (_, t))| t.elapsed() >= every)
            .map(|(k, _)| k.clone())
            .collect();
        for k in due {
            let (sink, _) = self.open.remove(&k).expect("listed above");
            self.rows += sink.rows();
            self.files.extend(sink.finish()?);
        }
        Ok(())
    }

    fn finish(mut self) -> Result<(u64, Vec<PathBuf>), CaptureError> {
        for (_, (sink, _)) in std::mem::take(&mut self.open) {
            self.rows += sink.rows();
            self.files.extend(sink.finish()?);
        }
        Ok((self.rows, self.files))
    }
}

fn write_exchanges(
    rx: mpsc::Receiver<(Vec<Exchange>, usize)>,
    mut sink: ExchangeSinks,
    mut prepare: Prepare,
    in_flight: &InFlight,
) -> Result<Written, CaptureError> {
    loop {
        let (mut rows, bytes) = match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(rows) => rows,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                sink.rotate()?;
                continue;
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        for ex in &mut rows {
            prepare.exchange(ex);
        }
        let written = sink.write(rows);
        in_flight.release(bytes);
        written?;
    }
    let (rows, files) = sink.finish()?;
    let Prepared {
        flags,
        decode_errors,
    } = prepare.counts();
    Ok(Written {
        rows,
        files,
        flags,
        decode_errors,
    })
}

struct Progress {
    enabled: bool,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        Progress {
            enabled,
            started: Instant::now(),
            last: Instant::now(),
        }
    }
    fn tick(&mut self, packets: u64, bytes: u64, exchanges: u64, flows: usize) {
        if !self.enabled || self.last.elapsed() < Duration::from_millis(500) {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        eprint!(
            "\r\x1b[Kcapture: {packets} packets, {:.1} MB ({:.0} MB/s), {exchanges} exchanges, {flows} open flows",
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs
        );
    }
    fn clear(&self) {
        if self.enabled {
            eprint!("\r\x1b[K");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
    }
}

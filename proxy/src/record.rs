//! The recording (`--record DIR`): each production (or canary) exchange into the `exchanges`
//! table, content-decoded and redacted as capture does, and its response as a `replays` row
//! under the pool's name, so `shadowtap analyze --capture DIR --replay DIR` reads the run with
//! the shadows' rows (written by their senders into the same directory, same run id).
//!
//! A thread of its own behind a bounded queue: the request path hands a record over with
//! `try_send` and never waits; a full queue drops the record and counts it (`dropped`), which
//! `GET /stats` shows. Files roll by size and every `rotate` (complete files appear as the
//! proxy runs); closing sends what is queued and closes the files.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use shadowtap_core::redact::Redactor;
use shadowtap_core::replays::{replays_schema, replays_to_batch, ReplayRecord};
use shadowtap_core::schema::{exchanges_schema, exchanges_to_batch};
use shadowtap_core::sink::{ParquetSink, SinkOptions};
use shadowtap_core::Exchange;

use crate::error::ProxyError;

/// Records waiting for the writer at most.
const QUEUE: usize = 4096;
/// Rows per write.
const BATCH: usize = 512;

/// One request as recorded.
pub struct Record {
    /// The exchange as production (or the canary) answered it.
    pub exchange: Box<Exchange>,
    /// Its `replays` row (its bodies filled from the exchange's as it is written).
    pub row: ReplayRecord,
    /// The budget shares of the bodies, given back once they are written.
    pub held: Vec<crate::tee::Reservation>,
}

/// The counts of a recording.
#[derive(Debug, Default)]
pub struct RecordCounts {
    /// Exchanges written.
    pub written: AtomicU64,
    /// Records dropped because the writer was behind.
    pub dropped: AtomicU64,
}

/// The writer thread; the files it wrote.
type WriterThread = std::thread::JoinHandle<Result<Vec<PathBuf>, ProxyError>>;

/// The recording's handle on the request path.
pub struct Recorder {
    tx: std::sync::RwLock<Option<mpsc::SyncSender<Record>>>,
    thread: std::sync::Mutex<Option<WriterThread>>,
    /// Its counts.
    pub counts: Arc<RecordCounts>,
}

struct Sinks {
    dir: PathBuf,
    run_id: String,
    max_file_bytes: u64,
    series: u32,
    exchanges: Option<ParquetSink>,
    rows: Option<ParquetSink>,
    files: Vec<PathBuf>,
}

fn sink_err(e: impl std::fmt::Display) -> ProxyError {
    ProxyError::Record(e.to_string())
}

impl Sinks {
    fn open(&mut self) -> Result<(), ProxyError> {
        let series = self.series;
        self.series += 1;
        let options = |prefix: String| SinkOptions {
            dir: self.dir.clone(),
            prefix,
            max_file_bytes: self.max_file_bytes,
            max_row_group_rows: 64 * 1024,
        };
        self.exchanges = Some(
            ParquetSink::new(
                options(format!("exchanges-{}-proxy-{series:04}", self.run_id)),
                exchanges_schema(),
            )
            .map_err(sink_err)?,
        );
        self.rows = Some(
            ParquetSink::new(
                options(format!("replays-{}-proxy-{series:04}", self.run_id)),
                replays_schema(),
            )
            .map_err(sink_err)?,
        );
        Ok(())
    }

    fn close(&mut self) -> Result<(), ProxyError> {
        for sink in [self.exchanges.take(), self.rows.take()]
            .into_iter()
            .flatten()
        {
            self.files.extend(sink.finish().map_err(sink_err)?);
        }
        Ok(())
    }

    fn write(&mut self, exchanges: &[Exchange], rows: &[ReplayRecord]) -> Result<(), ProxyError> {
        if exchanges.is_empty() {
            return Ok(());
        }
        if self.exchanges.is_none() {
            self.open()?;
        }
        let batch = exchanges_to_batch(exchanges).map_err(sink_err)?;
        self.exchanges
            .as_mut()
            .expect("opened")
            .write(&batch)
            .map_err(sink_err)?;
        let batch = replays_to_batch(rows).map_err(sink_err)?;
        self.rows
            .as_mut()
            .expect("opened")
            .write(&batch)
            .map_err(sink_err)
    }
}

impl Recorder {
    /// Starts the writer thread for `dir`.
    pub fn start(
        dir: &Path,
        run_id: &str,
        redactor: Option<Redactor>,
        max_body: u64,
        max_file_bytes: u64,
        rotate: Option<Duration>,
    ) -> Result<Recorder, ProxyError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| ProxyError::Record(format!("{}: {e}", dir.display())))?;
        let (tx, rx) = mpsc::sync_channel::<Record>(QUEUE);
        let counts = Arc::new(RecordCounts::default());
        let mut sinks = Sinks {
            dir: dir.to_path_buf(),
            run_id: run_id.to_owned(),
            max_file_bytes,
            series: 0,
            exchanges: None,
            rows: None,
            files: Vec::new(),
        };
        let written = counts.clone();
        let thread = std::thread::Builder::new()
            .name("proxy-recorder".into())
            .spawn(move || -> Result<Vec<PathBuf>, ProxyError> {
                let mut exchanges = Vec::with_capacity(BATCH);
                let mut rows = Vec::with_capacity(BATCH);
                let mut held = Vec::new();
                let mut opened = Instant::now();
                let flush = |sinks: &mut Sinks,
                             exchanges: &mut Vec<Exchange>,
                             rows: &mut Vec<ReplayRecord>|
                 -> Result<(), ProxyError> {
                    sinks.write(exchanges, rows)?;
                    written
                        .written
                        .fetch_add(exchanges.len() as u64, Ordering::Relaxed);
                    exchanges.clear();
                    rows.clear();
                    Ok(())
                };
                loop {
                    let got = rx.recv_timeout(Duration::from_millis(500));
                    match got {
                        Ok(Record {
                            mut exchange,
                            mut row,
                            held: shares,
                        }) => {
                            held.extend(shares);
                            row.request_body = exchange.request_body.raw.clone();
                            row.response_body = exchange.response_body.raw.clone();
                            exchange
                                .request_body
                                .decode(&exchange.request_headers, max_body);
                            exchange
                                .response_body
                                .decode(&exchange.response_headers, max_body);
                            row.response_body_decoded = exchange.response_body.decoded.clone();
                            if let Some(r) = &redactor {
                                r.apply(&mut exchange);
                                r.apply_replay(&mut row);
                            }
                            exchanges.push(*exchange);
                            rows.push(row);
                            if exchanges.len() >= BATCH {
                                flush(&mut sinks, &mut exchanges, &mut rows)?;
                                held.clear();
                            }
                        }
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            flush(&mut sinks, &mut exchanges, &mut rows)?;
                            held.clear();
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    if rotate.is_some_and(|every| opened.elapsed() >= every) {
                        flush(&mut sinks, &mut exchanges, &mut rows)?;
                        held.clear();
                        sinks.close()?;
                        opened = Instant::now();
                    }
                }
                flush(&mut sinks, &mut exchanges, &mut rows)?;
                sinks.close()?;
                Ok(sinks.files)
            })
            .map_err(|e| ProxyError::Record(e.to_string()))?;
        Ok(Recorder {
            tx: std::sync::RwLock::new(Some(tx)),
            thread: std::sync::Mutex::new(Some(thread)),
            counts,
        })
    }

    /// Hands a record over without waiting; a full queue drops it (counted).
    pub fn offer(&self, record: Record) {
        let tx = self.tx.read().unwrap_or_else(|p| p.into_inner());
        let sent = tx.as_ref().is_some_and(|tx| tx.try_send(record).is_ok());
        if !sent {
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Writes what is queued and closes the files; the files written. Records offered after
    /// it are counted as dropped.
    pub fn close(&self) -> Result<Vec<PathBuf>, ProxyError> {
        drop(self.tx.write().unwrap_or_else(|p| p.into_inner()).take());
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        match thread.map(std::thread::JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(ProxyError::Record("the recorder thread panicked".into())),
            None => Ok(Vec::new()),
        }
    }
}

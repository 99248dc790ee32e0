//! The writer thread: `replays` rows from the sending threads, in batches, into Parquet; the
//! per-target counts of the summary on the way.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use shadowtap_core::replays::{replays_to_batch, ReplayRecord};
use shadowtap_core::sink::ParquetSink;
use tokio::sync::mpsc;

use crate::error::ReplayError;
use crate::summary::{count, status_class, LatencyHistogram, TargetSummary};
use crate::target::Target;

/// Lowers the calling thread's scheduling priority (nice +10, Linux only): the Parquet reader
/// and writer threads are bulk work behind bounded queues, and must not preempt the sending
/// thread, whose clock readings are the recorded timings. When they fall behind, the queues
/// fill and sending waits for them, so nothing is lost; on a busy machine they get a smaller
/// share of the CPU. Measured on the 2-core bench machine: +19% requests/s at `--rate max`
/// over four alternating runs (README, Performance). Only when one thread sends: with several,
/// no one thread's core decides the rate, and the Parquet threads at normal priority gave
/// +3.7% on average (eight alternating runs, five in its favour). Failure (a sandbox refusing `setpriority`) only leaves it
/// as it was.
pub(crate) fn yield_to_sending() {
    #[cfg(target_os = "linux")]
    {
        // On Linux `setpriority(PRIO_PROCESS, 0, ..)` applies to the calling thread only.
        let now = rustix::process::getpriority_process(None).unwrap_or(0);
        if let Err(e) = rustix::process::setpriority_process(None, (now + 10).min(19)) {
            tracing::debug!("could not lower the priority of a Parquet thread: {e}");
        }
    }
}

/// What the writer thread counted.
pub(crate) struct Written {
    pub(crate) rows: u64,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) targets: BTreeMap<String, TargetSummary>,
}

/// A function called with each row as it is answered (the proxy's live statistics).
pub type RowObserver = Arc<dyn Fn(&ReplayRecord) + Send + Sync>;

/// What happens to each row on the writer thread before it is written.
#[derive(Default)]
pub(crate) struct RowHooks {
    /// Redacts it.
    pub redactor: Option<shadowtap_core::redact::Redactor>,
}

pub(crate) fn write_rows(
    mut rx: mpsc::Receiver<Vec<ReplayRecord>>,
    spare: &Spare,
    mut sink: Option<ParquetSink>,
    targets: &[Target],
    rows_to: RowHooks,
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
    let flush = |batch: &mut Vec<ReplayRecord>,
                 sink: &mut Option<ParquetSink>|
     -> Result<(), ReplayError> {
        let Some(sink) = sink.as_mut() else {
            // Counted, not kept (a proxy that does not record).
            batch.clear();
            return Ok(());
        };
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
        for mut r in received.drain(..) {
            if let Some(redactor) = &rows_to.redactor {
                redactor.apply_replay(&mut r);
            }
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
    let files = match sink {
        Some(sink) => sink.finish()?,
        None => Vec::new(),
    };
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

/// Emptied row batches on their way back from the writer thread: the sending thread fills
/// them again instead of allocating (and the allocator faulting in) fresh ones per batch.
#[derive(Default)]
pub(crate) struct Spare(std::sync::Mutex<Vec<Vec<ReplayRecord>>>);

impl Spare {
    pub(crate) fn put(&self, batch: Vec<ReplayRecord>) {
        let mut spare = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if spare.len() < 16 {
            spare.push(batch);
        }
    }

    pub(crate) fn take(&self) -> Vec<ReplayRecord> {
        let mut spare = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        spare
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(RowOut::BATCH))
    }
}

/// Rows on their way to the writer thread, handed over in batches (one wake-up per batch):
/// [`RowOut::BATCH`] rows, or fewer when their bodies reach [`RowOut::BATCH_BYTES`] (rows of
/// 16 MiB bodies would otherwise wait 256 at a time).
pub(crate) struct RowOut {
    pub(crate) pending: std::sync::Mutex<(Vec<ReplayRecord>, usize)>,
    pub(crate) tx: mpsc::Sender<Vec<ReplayRecord>>,
    pub(crate) spare: Arc<Spare>,
    /// Sees each row as it is answered (live statistics).
    pub(crate) observer: Option<RowObserver>,
    /// The rows are written: keep their bodies (else they leave with the observer's look).
    pub(crate) keep_bodies: bool,
}

impl RowOut {
    pub(crate) const BATCH: usize = 256;
    pub(crate) const BATCH_BYTES: usize = 16 << 20;

    pub(crate) fn new(
        tx: mpsc::Sender<Vec<ReplayRecord>>,
        spare: Arc<Spare>,
        observer: Option<RowObserver>,
        keep_bodies: bool,
    ) -> Self {
        RowOut {
            pending: std::sync::Mutex::new((Vec::with_capacity(Self::BATCH), 0)),
            tx,
            spare,
            observer,
            keep_bodies,
        }
    }

    pub(crate) async fn push(&self, mut row: ReplayRecord) {
        if let Some(observe) = &self.observer {
            observe(&row);
        }
        if !self.keep_bodies {
            // Nothing writes them: a copy mirrored by the proxy without --record would hold
            // its body until 256 rows had gathered.
            row.request_body = Vec::new();
            row.response_body = Vec::new();
            row.response_body_decoded = None;
        }
        let bytes = row.request_body.len()
            + row.response_body.len()
            + row.response_body_decoded.as_ref().map_or(0, Vec::len);
        let full = {
            let mut p = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            p.0.push(row);
            p.1 += bytes;
            (p.0.len() >= Self::BATCH || p.1 >= Self::BATCH_BYTES).then(|| {
                p.1 = 0;
                std::mem::replace(&mut p.0, self.spare.take())
            })
        };
        if let Some(batch) = full {
            let _ = self.tx.send(batch).await;
        }
    }

    pub(crate) async fn flush(&self) {
        let rest = {
            let mut p = self
                .pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            p.1 = 0;
            std::mem::take(&mut p.0)
        };
        if !rest.is_empty() {
            let _ = self.tx.send(rest).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(body: usize) -> ReplayRecord {
        ReplayRecord {
            run_id: "r".into(),
            exchange_id: String::new(),
            pass: 0,
            target: "t".into(),
            target_url: "http://t".into(),
            recorded_start_us: 0,
            sent_at_us: None,
            method: "POST".into(),
            url: String::new(),
            path: "/".into(),
            query: None,
            request_headers: Vec::new(),
            request_body: vec![b'x'; body],
            status: Some(200),
            response_version: None,
            response_headers: Vec::new(),
            response_body: vec![b'y'; body],
            response_body_decoded: None,
            response_body_len: body as u64,
            response_body_truncated: false,
            connect_us: None,
            ttfb_us: None,
            total_us: None,
            error_kind: None,
            error_message: None,
            send_position: None,
        }
    }

    /// Rows of big bodies leave in batches of at most `BATCH_BYTES`, not 256 rows; rows
    /// nothing writes leave their bodies behind at once (after the observer saw them).
    #[tokio::test]
    async fn rows_hold_bounded_bytes_and_unwritten_rows_no_bodies() {
        let (tx, mut rx) = mpsc::channel(64);
        let out = RowOut::new(tx, Arc::default(), None, true);
        for _ in 0..9 {
            out.push(row(1 << 20)).await;
        }
        let batch = rx.try_recv().expect("a batch left before 256 rows");
        assert_eq!(batch.len(), 8, "8 rows of 2 MiB reach 16 MiB");
        assert_eq!(out.pending.lock().unwrap().0.len(), 1);
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = seen.clone();
        let observer: RowObserver = Arc::new(move |r: &ReplayRecord| {
            s.fetch_add(r.request_body.len(), std::sync::atomic::Ordering::Relaxed);
        });
        let (tx, _rx) = mpsc::channel(64);
        let out = RowOut::new(tx, Arc::default(), Some(observer), false);
        out.push(row(1 << 20)).await;
        assert_eq!(seen.load(std::sync::atomic::Ordering::Relaxed), 1 << 20);
        let p = out.pending.lock().unwrap();
        assert!(p.0[0].request_body.is_empty() && p.0[0].response_body.is_empty());
        assert_eq!(p.1, 0);
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
}

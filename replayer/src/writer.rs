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

/// Rows on their way to the writer thread, handed over in batches (one wake-up per batch).
pub(crate) struct RowOut {
    pub(crate) pending: std::sync::Mutex<Vec<ReplayRecord>>,
    pub(crate) tx: mpsc::Sender<Vec<ReplayRecord>>,
    pub(crate) spare: Arc<Spare>,
    /// Sees each row as it is answered (live statistics).
    pub(crate) observer: Option<RowObserver>,
}

impl RowOut {
    pub(crate) const BATCH: usize = 256;

    pub(crate) fn new(
        tx: mpsc::Sender<Vec<ReplayRecord>>,
        spare: Arc<Spare>,
        observer: Option<RowObserver>,
    ) -> Self {
        RowOut {
            pending: std::sync::Mutex::new(Vec::with_capacity(Self::BATCH)),
            tx,
            spare,
            observer,
        }
    }

    pub(crate) async fn push(&self, row: ReplayRecord) {
        if let Some(observe) = &self.observer {
            observe(&row);
        }
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

    pub(crate) async fn flush(&self) {
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

#[cfg(test)]
mod tests {
    use super::*;

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

//! A replay: a recording, checked against the targets ([`crate::safety`]), read by
//! [`crate::reader`] into a [`Sender`], and the summary written beside the rows.
//!
//! Reading the recording runs on its own thread; sending runs on the tokio runtime (and, at
//! `--rate max` without hooks, on further sending threads); writing runs on a writer thread.
//! Every queue between them is bounded, so memory stays flat whatever the recording's size.
//! Each selected request yields exactly one row per target: a response, a transport error, or
//! the reason it was not sent.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use crate::error::ReplayError;
use crate::reader::read_recording;
use crate::safety::{captured_hosts, check_targets};
use crate::sender::{Sender, SenderOptions};
use crate::source::Recording;
use crate::summary::{write_summary, ReplaySummary};
use crate::target::Target;
use crate::writer::yield_to_sending;

/// Everything a replay needs: the recording, how many passes, and how to send.
pub struct ReplayOptions {
    /// Directory of the recording (`shadowtap capture --out`).
    pub from: PathBuf,
    /// Passes over the recording; `None` repeats until `duration` or a signal.
    pub passes: Option<u32>,
    /// Target hosts let through although the recording names them (`--allow-target`; see
    /// [`crate::safety`]).
    pub allow_targets: Vec<String>,
    /// Targets, selection, hooks, pacing, client, output.
    pub send: SenderOptions,
}

impl ReplayOptions {
    /// One pass, and the sender's defaults: 1x speed, 32 in flight, idempotent methods only,
    /// 30 s timeout.
    pub fn new(from: PathBuf, out: PathBuf, targets: Vec<Target>) -> Self {
        ReplayOptions {
            from,
            passes: Some(1),
            allow_targets: Vec::new(),
            send: SenderOptions::new(out, targets),
        }
    }
}

/// Runs a replay until the recording ends, `duration` passes, or `stop` turns true; then waits
/// for the requests in flight, closes the files and writes `replay-<run>.summary.json`.
pub async fn replay(
    opts: ReplayOptions,
    stop: watch::Receiver<bool>,
) -> Result<ReplaySummary, ReplayError> {
    opts.send.validate()?;
    let from = opts.from.clone();
    let io_err = |e| ReplayError::Io {
        path: opts.from.clone(),
        source: std::io::Error::other(e),
    };
    let recording = tokio::task::spawn_blocking(move || Recording::open(&from))
        .await
        .map_err(io_err)??;
    let rec = recording.clone();
    let captured = tokio::task::spawn_blocking(move || captured_hosts(&rec))
        .await
        .map_err(io_err)??;
    check_targets(&opts.send.targets, &captured, &opts.allow_targets).await?;

    let out = opts.send.out.clone();
    let total_hint = opts.passes.map(|p| recording.rows() * u64::from(p));
    let (sender, input) = Sender::start(opts.send, stop, total_hint).await?;
    let out_of_order = Arc::new(AtomicU64::new(0));
    let reader = {
        let (rec, passes, ooo) = (recording.clone(), opts.passes, out_of_order.clone());
        let one_sender = sender.threads() == 1;
        std::thread::Builder::new()
            .name("replay-reader".into())
            .spawn(move || {
                if one_sender {
                    yield_to_sending();
                }
                read_recording(rec, passes, input, ooo)
            })
            .map_err(|source| ReplayError::Io {
                path: opts.from.clone(),
                source,
            })?
    };
    let finished = sender.finish().await;
    let _ = tokio::task::spawn_blocking(move || reader.join()).await;
    let mut summary = finished?;
    summary.recording = opts.from.clone();
    summary.recording_rows = recording.rows();
    summary.out_of_order = out_of_order.load(Ordering::Relaxed);
    write_summary(&out, &summary)?;
    Ok(summary)
}

//! Progress of a replay: an indicatif bar on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::send::{total, Counters};

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

/// Progress: an indicatif bar on a terminal, plain lines otherwise.
pub(crate) struct Progress {
    pub(crate) stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub(crate) task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub(crate) fn start(
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

    pub(crate) async fn finish(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

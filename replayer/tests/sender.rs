//! The sender API as a live source uses it: exchanges pushed from a task (no recording), the
//! full-queue behaviour, and shutdown that accounts for every exchange offered.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shadowtap_replayer::{ProgressMode, Rejected, Sender, SenderOptions};

use crate::common::*;

fn options(out: &std::path::Path, targets: Vec<shadowtap_replayer::Target>) -> SenderOptions {
    let mut o = SenderOptions::new(out.to_path_buf(), targets);
    o.progress = ProgressMode::Off;
    o.pacing = shadowtap_replayer::schedule::Pacing::Max;
    o.client.timeout = Duration::from_secs(10);
    o
}

/// A server that answers every request after `delay`, counting them.
fn slow_server(delay: Duration) -> (String, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let seen = count.clone();
    let addr = serve_on_loopback(move |listener| async move {
        let app = axum::Router::new().fallback(move || {
            let seen = seen.clone();
            async move {
                seen.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
                "late"
            }
        });
        axum::serve(listener, app).await.unwrap();
    });
    (format!("http://{addr}"), count)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn exchanges_pushed_live_each_become_one_row_per_target_and_close_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (server(), server());
    let out = dir.path().join("out");
    let mut o = options(
        &out,
        vec![target("baseline", &a.url()), target("candidate", &b.url())],
    );
    o.run_id = Some("live".into());
    let summary = runtime().block_on(async {
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let (sender, mut input) = Sender::start(o, stop, None).await.unwrap();
        for i in 0..250 {
            // Fewer than a batch at the end: close() must hand over the partial batch.
            let method = if i % 50 == 7 { "POST" } else { "GET" };
            let ex = exchange(i, i / 10, method, &format!("/live/{i}"), i as i64);
            input.push(0, Box::new(ex)).await.unwrap();
        }
        input.close().await.unwrap();
        sender.finish().await.unwrap()
    });
    // 5 POSTs refused by the default methods, 245 sent to both.
    assert_eq!(summary.selected, 245);
    assert_eq!(summary.refused_methods.get("POST"), Some(&5));
    assert_eq!(summary.exchanges_read, 250);
    assert_eq!(summary.rows_written, 490);
    assert_eq!(summary.queued_at_stop, 0);
    assert_eq!((a.count(), b.count()), (245, 245));
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 490);
    assert!(
        rows.iter().all(|r| r.status == Some(200)),
        "{:?}",
        failures(&rows)
    );
}

#[test]
fn try_push_never_waits_and_a_full_queue_hands_the_exchange_back() {
    let dir = tempfile::tempdir().unwrap();
    let (slow, received) = slow_server(Duration::from_millis(200));
    let out = dir.path().join("out");
    let mut o = options(&out, vec![target("shadow", &slow)]);
    o.concurrency = 1;
    o.senders = 1;
    o.queue_batches = 2;
    let (accepted, shed, summary) = runtime().block_on(async {
        let (_stop_tx, stop) = tokio::sync::watch::channel(false);
        let (sender, mut input) = Sender::start(o, stop, None).await.unwrap();
        let (mut accepted, mut shed) = (0u64, 0u64);
        let started = std::time::Instant::now();
        // Each request takes 200 ms and one is in flight at a time: after the first few the
        // queue is full, and try_push must say so at once.
        for i in 0..40 {
            let ex = exchange(i, i, "GET", "/slow", i as i64);
            match input.try_push(0, Box::new(ex)) {
                Ok(true) => accepted += 1,
                Ok(false) => panic!("selection left a GET out"),
                Err(Rejected::Full(ex)) => {
                    assert_eq!(ex.path, "/slow");
                    shed += 1;
                }
                Err(Rejected::Closed(_)) => panic!("closed while running"),
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "try_push waited for the target"
        );
        input.close().await.unwrap();
        (accepted, shed, sender.finish().await.unwrap())
    });
    assert!(shed >= 1, "nothing was shed: {accepted} accepted");
    // Every exchange taken was sent and has its row, even those queued at close.
    assert_eq!(summary.selected, accepted);
    assert_eq!(summary.rows_written, accepted);
    assert_eq!(received.load(Ordering::Relaxed), accepted);
    assert!(accepted <= 5, "a queue of 2 batches took {accepted}");
}

#[test]
fn a_stop_counts_the_queued_exchanges_and_every_sent_one_has_its_row() {
    let dir = tempfile::tempdir().unwrap();
    let slow = server();
    let out = dir.path().join("out");
    let mut o = options(&out, vec![target("shadow", &slow.url())]);
    o.concurrency = 2;
    o.senders = 1;
    let (offered, summary) = runtime().block_on(async {
        let (stop_tx, stop) = tokio::sync::watch::channel(false);
        let (sender, mut input) = Sender::start(o, stop, None).await.unwrap();
        let mut offered = 0u64;
        for i in 0..6 {
            let ex = exchange(i, i, "GET", "/slow", i as i64);
            input.push(0, Box::new(ex)).await.unwrap();
            offered += 1;
        }
        input.flush().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop_tx.send(true).unwrap();
        input.close().await.ok();
        (offered, sender.finish().await.unwrap())
    });
    assert_eq!(summary.stopped_by, "signal");
    // Two were in flight when the stop came: they end and have rows; the rest were queued.
    assert_eq!(summary.selected, 2, "{summary:?}");
    assert_eq!(summary.rows_written, 2);
    assert_eq!(
        summary.selected + summary.queued_at_stop,
        offered,
        "{summary:?}"
    );
}

//! Production never waits for a shadow: the isolation matrix (a healthy, slow, refusing,
//! silent and failing shadow), streamed uploads, and a graceful shutdown that finishes the
//! requests in flight.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shadowtap_proxy::stats::DropReason;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_answers_unchanged_and_never_waits_whatever_the_shadow_does() {
    let (prod, _) = backend(Behaviour {
        label: "prod",
        ..Default::default()
    })
    .await;
    let healthy = backend(Behaviour {
        label: "shadow",
        ..Default::default()
    })
    .await
    .0;
    let slow = backend(Behaviour {
        label: "shadow",
        delay: Duration::from_secs(2),
        ..Default::default()
    })
    .await
    .0;
    let failing = backend(Behaviour {
        label: "shadow",
        status: Some(500),
        ..Default::default()
    })
    .await
    .0;
    let cells = [
        ("healthy", healthy),
        ("slow, 2 s per response", slow),
        ("refusing connections", closed_port()),
        ("accepting, never answering", black_hole().await),
        ("answering 500", failing),
    ];
    let c = client();
    let mut direct = Vec::new();
    for n in 0..40 {
        direct.push(
            get_url(&c, &format!("http://{prod}/item/{n}"), &[])
                .await
                .unwrap(),
        );
    }
    for (cell, addr) in cells {
        let mut cfg = config(prod);
        cfg.shadows = vec![shadow("shadow", addr)];
        let running = shadowtap_proxy::start(cfg, None).await.unwrap();
        // One keep-alive client: with nginx's mirror, its next request waits for the copy.
        let c = client();
        let mut worst = Duration::ZERO;
        for round in 0..3 {
            for (n, want) in direct.iter().enumerate() {
                let t = Instant::now();
                let got = get_url(&c, &format!("http://{}/item/{n}", running.addr), &[])
                    .await
                    .unwrap_or_else(|e| panic!("{cell}: request {round}/{n} failed: {e}"));
                worst = worst.max(t.elapsed());
                assert_eq!(&got, want, "{cell}: request {n} answered differently");
            }
        }
        assert!(
            worst < Duration::from_millis(1000),
            "{cell}: a production request took {worst:?}"
        );
        let shadow0 = running.state.routing().sinks[0].clone();
        let counters = &shadow0.counters;
        assert_eq!(counters.chosen.load(Ordering::Relaxed), 120, "{cell}");
        let sent = counters.sent.load(Ordering::Relaxed);
        let full = counters.dropped(DropReason::QueueFull);
        assert_eq!(sent + full, 120, "{cell}: every copy sent or counted");
        if cell.starts_with("slow") || cell.starts_with("accepting") {
            assert!(
                full > 0,
                "{cell}: a stuck shadow must shed copies, not queue them all"
            );
        }
        running.shutdown();
        let summary = running.wait().await.unwrap();
        assert_eq!(summary.production_requests, 120, "{cell}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_8_mib_upload_is_streamed_to_production_and_mirrored_whole_or_counted() {
    let (prod, prod_seen) = backend(Behaviour {
        label: "prod",
        ..Default::default()
    })
    .await;
    let (sh, shadow_seen) = backend(Behaviour {
        label: "shadow",
        ..Default::default()
    })
    .await;
    for (cap, mirrored) in [(16u64 << 20, true), (1 << 20, false)] {
        let mut cfg = config(prod);
        cfg.shadows = vec![shadow("shadow", sh)];
        cfg.mirror.allow_methods.push("POST".into());
        cfg.mirror.max_body = cap;
        let running = shadowtap_proxy::start(cfg, None).await.unwrap();
        let body = SlowBody::new(8 << 20, 512 << 10, Duration::from_millis(40));
        let finished = body.finished.clone();
        let client: Client<HttpConnector, SlowBody> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let req = http::Request::post(format!("http://{}/upload", running.addr))
            .header("content-type", "application/octet-stream")
            .body(body)
            .unwrap();
        let resp = client.request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let text = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&text).contains(&format!("\"len\":{}", 8 << 20)));
        let (len, hash, first, _) = *prod_seen.uploads.lock().unwrap().last().unwrap();
        assert_eq!(len, 8 << 20);
        let sent_all = finished
            .lock()
            .unwrap()
            .expect("the client sent its last chunk");
        assert!(
            first < sent_all,
            "production's first body byte must arrive before the client finished sending"
        );
        let shadow0 = running.state.routing().sinks[0].clone();
        let counters = &shadow0.counters;
        let over = counters.dropped(DropReason::BodyOverCap);
        assert_eq!(
            over,
            u64::from(!mirrored),
            "cap {cap}: over-cap copies counted"
        );
        running.shutdown();
        running.wait().await.unwrap();
        let shadow_uploads = shadow_seen.uploads.lock().unwrap().clone();
        if mirrored {
            assert_eq!(shadow_uploads.len(), 1, "mirrored whole");
            assert_eq!((shadow_uploads[0].0, shadow_uploads[0].1), (len, hash));
        } else {
            assert_eq!(
                shadow_uploads.len(),
                1,
                "not mirrored a second time over the cap"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_mirror_cap_is_counted_not_sent() {
    let (prod, _) = backend(Behaviour::default()).await;
    let (sh, shadow_seen) = backend(Behaviour::default()).await;
    let mut cfg = config(prod);
    cfg.shadows = vec![shadow("shadow", sh)];
    cfg.mirror.allow_methods.push("POST".into());
    cfg.mirror.max_body = 1 << 20;
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let c = client();
    for size in [1000usize, 2 << 20] {
        let req = http::Request::post(format!("http://{}/upload", running.addr))
            .body(http_body_util::Full::new(Bytes::from(vec![7u8; size])))
            .unwrap();
        assert_eq!(c.request(req).await.unwrap().status(), 200);
    }
    let shadow0 = running.state.routing().sinks[0].clone();
    let counters = &shadow0.counters;
    assert_eq!(counters.dropped(DropReason::BodyOverCap), 1);
    running.shutdown();
    running.wait().await.unwrap();
    let uploads = shadow_seen.uploads.lock().unwrap().clone();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].0, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_requests_in_flight_and_records_them() {
    let (prod, _) = backend(Behaviour {
        delay: Duration::from_millis(400),
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(prod);
    cfg.record = Some(dir.path().to_path_buf());
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let addr = running.addr;
    let mut tasks = Vec::new();
    for n in 0..6 {
        tasks.push(tokio::spawn(async move {
            get_url(&client(), &format!("http://{addr}/item/{n}"), &[]).await
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    running.shutdown();
    for t in tasks {
        assert_eq!(
            t.await.unwrap().unwrap().status,
            200,
            "a request in flight was cut"
        );
    }
    let summary = running.wait().await.unwrap();
    assert_eq!(summary.production_requests, 6);
    assert_eq!(summary.recorded, 6);
    assert!(summary.drained);
    // The port is closed: nothing new is accepted.
    assert!(get_url(&client(), &format!("http://{addr}/item/1"), &[])
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recording_files_appear_complete_while_the_proxy_runs() {
    let (prod, _) = backend(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(prod);
    cfg.record = Some(dir.path().to_path_buf());
    cfg.limits.rotate_s = Some(0.3);
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let c = client();
    for k in 0..20 {
        get_url(&c, &format!("http://{}/item/{k}", running.addr), &[])
            .await
            .unwrap();
    }
    let listed = || -> Vec<String> {
        std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("exchanges-") && n.ends_with(".parquet"))
            .collect()
    };
    let started = Instant::now();
    while listed().is_empty() && started.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let files = listed();
    assert!(!files.is_empty(), "no complete file while running");
    // Complete: it reads back with every row so far.
    let f = std::fs::File::open(dir.path().join(&files[0])).unwrap();
    let rows: usize = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(f)
        .unwrap()
        .build()
        .unwrap()
        .map(|b| b.unwrap().num_rows())
        .sum();
    assert_eq!(rows, 20);
    running.shutdown();
    assert_eq!(running.wait().await.unwrap().recorded, 20);
}

/// The nice value of each of this process's threads named `name`.
fn nice_of_threads(name: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command's closing parenthesis; nice is field 19 of stat(5).
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        out.push(rest.split(' ').nth(16).unwrap().parse().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadows_threads_yield_the_cpu_to_production() {
    let (prod, _) = backend(Behaviour::default()).await;
    let (sh, _) = backend(Behaviour::default()).await;
    let mut cfg = config(prod);
    cfg.shadows = vec![shadow("candidate", sh)];
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let c = client();
    get_url(&c, &format!("http://{}/item/1", running.addr), &[])
        .await
        .unwrap();
    let nice = nice_of_threads("proxy-shadows");
    assert!(!nice.is_empty(), "no proxy-shadows thread");
    assert!(nice.iter().all(|&n| n >= 10), "{nice:?}");
    running.shutdown();
    running.wait().await.unwrap();
}

//! Hostile clients against the proxy, on raw sockets, with a raw backend whose log of what it
//! received is the oracle: silent and half-open connections are closed by their timer and never
//! stop a user being served; an Upgrade request declaring a body never reaches production (the
//! 0.CL desync) and the next users' requests arrive whole; `h2c` is served as an ordinary
//! request; a client's forwarding headers are replaced unless its peer is trusted; userinfo in
//! an absolute-form target is refused.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::config;
use crate::framing::{exchange, raw_backend, wait_for};

/// Reads from `s` until the proxy closes it or `within` passes; whether it closed.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// 10,000 connections that send nothing, an HTTP/2 preface only, or half a header line (from
/// `hostile_clients.py`, a process of its own), as many as the proxy's `max_connections`:
/// every one is closed by the header timeout, and a user's request, queued behind them, is
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_half_open_connections_are_closed_and_never_stop_a_user() {
    use tokio::io::AsyncBufReadExt;
    const N: usize = 10_000;
    let (prod, seen) = raw_backend().await;
    let mut cfg = config(prod);
    cfg.limits.max_connections = N;
    cfg.limits.header_timeout_s = 2.0;
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let addr = running.addr;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile_clients.py");
    let mut hostile = tokio::process::Command::new("python3")
        .arg(script)
        .args([
            addr.ip().to_string(),
            addr.port().to_string(),
            N.to_string(),
            "30".into(),
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3 runs the hostile clients");
    let mut out = tokio::io::BufReader::new(hostile.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), out.next_line())
        .await
        .expect("the hostile clients opened their connections within 60 s")
        .unwrap();
    assert_eq!(first.as_deref(), Some("opened"));
    // Every slot is taken: the user's connection waits until the timers free them.
    let answer = tokio::time::timeout(
        Duration::from_secs(20),
        exchange(
            addr,
            b"GET /user HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        ),
    )
    .await
    .expect("the user's request was answered");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let last = tokio::time::timeout(Duration::from_secs(60), out.next_line())
        .await
        .expect("the hostile clients ended")
        .unwrap();
    assert_eq!(
        last.as_deref(),
        Some(format!("closed {N} of {N}").as_str()),
        "every hostile connection is closed by the proxy"
    );

    wait_for(&seen, 1).await;
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1, "only the user's request reached production");
    assert_eq!(got[0].head[0], "GET /user HTTP/1.1");
    running.shutdown();
    running.wait().await.unwrap();
}

/// A keep-alive connection left idle is closed after the idle timeout; one with a request in
/// flight is not (a slow production answer is no idleness).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_after_the_idle_timeout() {
    let (prod, _) = raw_backend().await;
    let mut cfg = config(prod);
    cfg.limits.idle_timeout_s = 1.0;
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    s.write_all(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let t0 = Instant::now();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    let took = t0.elapsed();
    assert!(
        (Duration::from_millis(900)..Duration::from_millis(3000)).contains(&took),
        "closed after {took:?}"
    );
    running.shutdown();
    running.wait().await.unwrap();
}

/// An Upgrade request that declares a body is refused before production; the next users'
/// requests through the same pooled upstream connections arrive whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_with_a_body_never_reaches_production_and_cannot_desync_it() {
    let (prod, seen) = raw_backend().await;
    let running = shadowtap_proxy::start(config(prod), None).await.unwrap();
    for smuggle in [
        &b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 37\r\n\r\n"[..],
        b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let answer = exchange(running.addr, smuggle).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    }
    let client = crate::common::client();
    for i in 0..20 {
        let a = crate::common::get_url(&client, &format!("http://{}/user/{i}", running.addr), &[])
            .await
            .unwrap();
        assert_eq!(a.status, 200, "request {i}");
    }
    wait_for(&seen, 20).await;
    let got = seen.lock().unwrap().clone();
    let lines: Vec<&str> = got.iter().map(|r| r.head[0].as_str()).collect();
    let want: Vec<String> = (0..20).map(|i| format!("GET /user/{i} HTTP/1.1")).collect();
    assert_eq!(lines, want, "production saw exactly the users' requests");
    running.shutdown();
    running.wait().await.unwrap();
}

/// `Upgrade: h2c` is not a tunnel: the request is served as HTTP/1.1 through the normal path,
/// its Upgrade and HTTP2-Settings dropped. A listed protocol still tunnels (see protocols.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2c_upgrade_is_served_as_an_ordinary_request() {
    let (prod, seen) = raw_backend().await;
    let running = shadowtap_proxy::start(config(prod), None).await.unwrap();
    let answer = exchange(
        running.addr,
        b"GET /h2c HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings, close\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    wait_for(&seen, 1).await;
    let got = seen.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert!(got[0].header("upgrade").is_empty(), "{:?}", got[0].head);
    assert!(
        got[0].header("http2-settings").is_empty(),
        "{:?}",
        got[0].head
    );
    running.shutdown();
    running.wait().await.unwrap();
}

/// A client's own X-Forwarded-* and Forwarded are replaced; from a trusted proxy they are
/// extended. Userinfo in an absolute-form target is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_believed_only_from_trusted_proxies() {
    let forged = b"GET /who HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 6.6.6.6\r\nX-Forwarded-Proto: https\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nConnection: close\r\n\r\n";
    let (prod, seen) = raw_backend().await;
    let running = shadowtap_proxy::start(config(prod), None).await.unwrap();
    assert!(exchange(running.addr, forged)
        .await
        .starts_with("HTTP/1.1 200"));
    let refused = exchange(
        running.addr,
        b"GET http://user@h/ HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(refused.starts_with("HTTP/1.1 400"), "{refused}");
    wait_for(&seen, 1).await;
    {
        let got = seen.lock().unwrap();
        assert_eq!(got.len(), 1, "the userinfo target never reached production");
        assert_eq!(got[0].header("x-forwarded-for"), ["127.0.0.1"]);
        assert_eq!(got[0].header("x-forwarded-proto"), ["http"]);
        assert!(got[0].header("x-real-ip").is_empty());
        assert_eq!(
            got[0].header("forwarded"),
            ["for=127.0.0.1;proto=http;host=\"h\""]
        );
    }
    running.shutdown();
    running.wait().await.unwrap();

    let (prod, seen) = raw_backend().await;
    let mut cfg = config(prod);
    cfg.trusted_proxies = vec!["127.0.0.0/8".into()];
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    assert!(exchange(running.addr, forged)
        .await
        .starts_with("HTTP/1.1 200"));
    wait_for(&seen, 1).await;
    let got = seen.lock().unwrap().clone();
    assert_eq!(got[0].header("x-forwarded-for"), ["6.6.6.6, 127.0.0.1"]);
    assert_eq!(got[0].header("x-forwarded-proto"), ["https"]);
    running.shutdown();
    running.wait().await.unwrap();
}

/// Copies waiting on a shadow that never answers hold their bytes in the byte budget until
/// they time out: past `mirror_memory` further copies are dropped (counted as `memory`),
/// never queued; production answers every request; the bytes come back once the copies end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_in_flight_count_against_the_byte_budget() {
    use shadowtap_proxy::stats::DropReason;
    const LIMIT: u64 = 1 << 20;
    let (prod, seen) = raw_backend().await;
    let hole = crate::common::black_hole().await;
    let mut cfg = config(prod);
    cfg.limits.mirror_memory = LIMIT;
    cfg.limits.shadow_timeout_s = 2.0;
    cfg.mirror.allow_methods.push("POST".into());
    let mut s = crate::common::shadow("hole", hole);
    s.concurrency = 64;
    s.queue = 64;
    cfg.shadows = vec![s];
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let body = vec![b'x'; 200 << 10];
    let mut peak = 0;
    for i in 0..20 {
        let mut req = format!(
            "POST /up/{i} HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(&body);
        let answer = exchange(running.addr, &req).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "request {i}: {answer}");
        peak = peak.max(running.state.budget.used());
    }
    wait_for(&seen, 20).await;
    assert_eq!(
        seen.lock().unwrap().len(),
        20,
        "production got every request"
    );
    let shadow = &running.state.routing().sinks[0];
    let (sent, memory) = (
        shadow
            .counters
            .sent
            .load(std::sync::atomic::Ordering::Relaxed),
        shadow.counters.dropped(DropReason::Memory),
    );
    assert!(peak <= LIMIT, "held {peak} bytes, budget {LIMIT}");
    assert!(sent <= 5, "{sent} copies of 200 KiB queued within 1 MiB");
    assert!(
        memory >= 15,
        "{memory} copies dropped for memory, {sent} sent"
    );
    // The copies time out (2 s) and give their bytes back.
    let t0 = Instant::now();
    while running.state.budget.used() > 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{} bytes still held",
            running.state.budget.used()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.shutdown();
    running.wait().await.unwrap();
}

/// `upstream_timeout_s` is production's time for its response head once the request is sent:
/// an upload that takes longer (but never stalls) is answered, not cut at the timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_not_counted_as_productions_time() {
    let (prod, seen) = crate::common::backend(crate::common::Behaviour::default()).await;
    let mut cfg = config(prod);
    cfg.limits.upstream_timeout_s = 1.0;
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let mut s = TcpStream::connect(running.addr).await.unwrap();
    s.write_all(
        b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    // Ten bytes over 2.5 s: longer than the 1 s timeout, never silent for long.
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        s.write_all(b"x").await.unwrap();
    }
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("answered")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.contains("\"len\":10"), "{out}");
    assert_eq!(seen.uploads.lock().unwrap().len(), 1);
    running.shutdown();
    running.wait().await.unwrap();
}

/// Clients that hang up before production answers, or cut their upload short, are not
/// production's errors: its windows (what the control plane judges) stay clean, and they are
/// counted as client faults.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_hang_up_are_not_counted_as_productions_errors() {
    let (prod, _) = crate::common::backend(crate::common::Behaviour {
        delay: Duration::from_millis(500),
        ..Default::default()
    })
    .await;
    let running = shadowtap_proxy::start(config(prod), None).await.unwrap();
    for i in 0..20 {
        let mut s = TcpStream::connect(running.addr).await.unwrap();
        let request = if i % 2 == 0 {
            format!("GET /item/{i} HTTP/1.1\r\nHost: h\r\n\r\n")
        } else {
            // Half the declared body, then gone.
            "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\nhalf".to_owned()
        };
        s.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(s);
    }
    let t0 = Instant::now();
    while running.state.production.client_faults() < 20 {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{} client faults counted",
            running.state.production.client_faults()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let w = running.state.production.window(300);
    assert_eq!((w.requests, w.transport_errors, w.status_5xx), (0, 0, 0));
    // A whole request is still counted.
    let answer = crate::framing::exchange(
        running.addr,
        b"GET /item/1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(running.state.production.window(300).requests, 1);
    running.shutdown();
    running.wait().await.unwrap();
}

/// The recording's queue holds bodies within `mirror_memory` (their budget shares are given
/// back only once written), and the `replays` rows still carry the bodies, written once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_bodies_hold_the_budget_until_written() {
    use arrow::array::{Array, BinaryArray};
    let (prod, _) = crate::common::backend(crate::common::Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(prod);
    cfg.record = Some(dir.path().to_path_buf());
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let body = vec![b'a'; 50_000];
    for _ in 0..5 {
        let mut s = TcpStream::connect(running.addr).await.unwrap();
        s.write_all(
            format!(
                "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        s.write_all(&body).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        assert!(out.starts_with(b"HTTP/1.1 200"));
    }
    let state = running.state.clone();
    running.shutdown();
    running.wait().await.unwrap();
    assert_eq!(
        state.budget.used(),
        0,
        "every share given back once written"
    );
    let mut bodies = Vec::new();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let path = e.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if !(name.starts_with("replays-") && name.ends_with(".parquet")) {
            continue;
        }
        let file = std::fs::File::open(&path).unwrap();
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = batch.column_by_name("request_body").unwrap();
            let col = col.as_any().downcast_ref::<BinaryArray>().unwrap();
            for i in 0..col.len() {
                bodies.push(col.value(i).len());
            }
        }
    }
    assert_eq!(bodies, [50_000; 5], "the replays rows' request bodies");
}

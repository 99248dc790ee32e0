//! Replays against real servers on loopback: fan-out, failures as rows, sampling, hooks,
//! safety, pacing, loops and stopping.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use shadowtap_replayer::client::Protocol;
use shadowtap_replayer::rules::Rules;
use shadowtap_replayer::schedule::Pacing;
use shadowtap_replayer::script::ScriptHook;
use shadowtap_replayer::ReplayError;

use crate::common::*;

fn gets(n: usize, per_conn: usize) -> Vec<shadowtap_core::Exchange> {
    (0..n)
        .map(|i| {
            exchange(
                i,
                i / per_conn,
                "GET",
                &format!("/item/{i}?page={}", i % 7),
                i as i64,
            )
        })
        .collect()
}

/// A recording of `n` GETs, `per_connection` to a connection (three files) in `dir`, two test
/// servers, and options replaying it at both (`baseline`, `candidate`) into `dir/out`.
fn gets_at_two_targets(
    dir: &std::path::Path,
    n: usize,
    per_connection: usize,
) -> (
    Server,
    Server,
    std::path::PathBuf,
    shadowtap_replayer::ReplayOptions,
) {
    let rec = dir.join("rec");
    write_recording(&rec, &gets(n, per_connection), 3);
    let (a, b) = (server(), server());
    let out = dir.join("out");
    let o = options(
        &rec,
        &out,
        vec![target("baseline", &a.url()), target("candidate", &b.url())],
    );
    (a, b, out, o)
}

#[test]
fn every_request_reaches_every_target_and_becomes_one_row_each() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, out, mut o) = gets_at_two_targets(dir.path(), 300, 10);
    o.send.concurrency = 16;
    o.send.run_id = Some("run-1".into());
    let summary = run(o).unwrap();
    assert_eq!(
        (a.count(), b.count()),
        (300, 300),
        "each target sees every request"
    );
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 600);
    assert_eq!(summary.rows_written, 600);
    for t in ["baseline", "candidate"] {
        let ids: BTreeSet<&str> = rows
            .iter()
            .filter(|r| r.target == t)
            .map(|r| r.exchange_id.as_str())
            .collect();
        assert_eq!(ids.len(), 300, "{t}: one row per exchange");
    }
    assert!(rows.iter().all(|r| r.status == Some(200)
        && r.error_kind.is_none()
        && r.sent
        && r.total_us.is_some()
        && r.ttfb_us.is_some()));
    // Each exchange went to the two targets in a random order: its rows hold positions 0 and
    // 1, and each target was first for about half of the exchanges (binomial: 300 draws,
    // 150 +- 4.3 sd; 110..190 is beyond 9 sd).
    let mut by_exchange: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
    for r in &rows {
        by_exchange
            .entry(r.exchange_id.as_str())
            .or_default()
            .push(r.send_position.expect("a sent row has its position"));
    }
    assert!(by_exchange.values().all(|p| {
        let mut p = p.clone();
        p.sort_unstable();
        p == [0, 1]
    }));
    let baseline_first = rows
        .iter()
        .filter(|r| r.target == "baseline" && r.send_position == Some(0))
        .count();
    assert!(
        (110..190).contains(&baseline_first),
        "{baseline_first} of 300"
    );
    // Connections are reused: far fewer connects than requests.
    let connects = rows.iter().filter(|r| r.connect_us.is_some()).count();
    assert!(
        (2..=2 * 16).contains(&connects),
        "{connects} connections opened for 600 requests"
    );
    // What the server got: the recorded path and query, the marker, the target's Host, no
    // hop-by-hop headers from the recording.
    let got = a.received.lock().unwrap();
    let r = got
        .iter()
        .find(|r| r.uri == "/item/8?page=1")
        .expect("recorded path and query");
    assert_eq!(r.headers["x-shadowtap-replay"], "run-1");
    assert_eq!(r.headers["host"], a.addr.to_string().as_str());
    assert_eq!(r.headers["user-agent"], "recorded/1.0");
    let row = rows
        .iter()
        .find(|r| r.target == "baseline" && r.exchange_id == "ex000008")
        .unwrap();
    assert_eq!(row.response_body, b"served /item/8");
    assert_eq!(
        (row.method.as_str(), row.url.as_str()),
        ("GET", format!("{}/item/8?page=1", a.url()).as_str())
    );
    assert_eq!(
        row.header("host"),
        Some(a.addr.to_string().as_str()),
        "the row holds the headers actually sent"
    );
}

#[test]
fn failures_are_rows_with_their_kind() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let rows: Vec<_> = ["/slow", "/fail", "/ok"]
        .iter()
        .enumerate()
        .map(|(i, p)| exchange(i, i, "GET", p, i as i64))
        .collect();
    write_recording(&rec, &rows, 1);
    let good = server();
    let out = dir.path().join("out");
    let mut o = options(
        &rec,
        &out,
        vec![
            target("good", &good.url()),
            target("reset", &format!("http://{}", resetting_server())),
            target("closed", &format!("http://{}", closed_port())),
            // https:// targets take the TLS client: a closed port, and a server that does not
            // speak TLS.
            target("tls-closed", &format!("https://{}", closed_port())),
            target("tls-plain", &good.url().replace("http://", "https://")),
        ],
    );
    o.send.client.timeout = Duration::from_millis(700);
    let summary = run(o).unwrap();
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 15, "3 requests x 5 targets, failures included");
    let by = |t: &str, p: &str| {
        rows.iter()
            .find(|r| r.target == t && r.path == p)
            .unwrap()
            .clone()
    };
    assert_eq!(by("good", "/slow").error_kind.as_deref(), Some("timeout"));
    assert_eq!(by("good", "/slow").status, None);
    assert_eq!(by("good", "/fail").status, Some(500));
    assert_eq!(by("good", "/ok").status, Some(200));
    for p in ["/slow", "/fail", "/ok"] {
        assert_eq!(
            by("reset", p).error_kind.as_deref(),
            Some("reset"),
            "{:?}",
            by("reset", p).error_message
        );
        assert_eq!(
            by("closed", p).error_kind.as_deref(),
            Some("refused"),
            "{:?}",
            by("closed", p).error_message
        );
        assert!(by("closed", p).status.is_none());
        assert_eq!(
            by("tls-closed", p).error_kind.as_deref(),
            Some("refused"),
            "{:?}",
            by("tls-closed", p).error_message
        );
        assert_eq!(
            by("tls-plain", p).error_kind.as_deref(),
            Some("tls"),
            "{:?}",
            by("tls-plain", p).error_message
        );
    }
    assert_eq!(summary.targets["closed"].errors["refused"], 3);
    assert_eq!(summary.targets["good"].responses["5xx"], 1);
}

#[test]
fn sampling_percentages_hold_and_keep_groups_whole() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    write_recording(&rec, &gets(5000, 25), 2);
    let s = server();
    let out = dir.path().join("out");
    let mut o = options(&rec, &out, vec![target("t", &s.url())]);
    o.send.sampler.percent = "10%".parse().unwrap();
    o.send.concurrency = 32;
    let summary = run(o).unwrap();
    assert!(
        (420..=580).contains(&summary.selected),
        "10% of 5000: {}",
        summary.selected
    );
    assert_eq!(
        s.count() as u64,
        summary.selected,
        "the server got exactly the selected requests"
    );
    assert_eq!(read_rows(&out).len() as u64, summary.selected);
    assert_eq!(summary.sampled_out + summary.selected, 5000);

    // By connection: 200 connections of 25 exchanges, each kept or left out whole.
    let s2 = server();
    let out2 = dir.path().join("out2");
    let mut o = options(&rec, &out2, vec![target("t", &s2.url())]);
    o.send.sampler.percent = "20%".parse().unwrap();
    o.send.sampler.by = shadowtap_core::sampling::SampleBy::Connection;
    let summary = run(o).unwrap();
    let rows = read_rows(&out2);
    let mut per_conn: BTreeMap<usize, usize> = BTreeMap::new();
    for r in &rows {
        let i: usize = r.exchange_id[2..].parse().unwrap();
        *per_conn.entry(i / 25).or_default() += 1;
    }
    assert!(
        per_conn.values().all(|&n| n == 25),
        "connections kept whole: {per_conn:?}"
    );
    assert!(
        (20..=60).contains(&per_conn.len()),
        "about 20% of 200 connections: {}",
        per_conn.len()
    );
    assert_eq!(s2.count() as u64, summary.selected);
}

#[test]
fn each_hook_changes_what_the_server_receives() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let rows = vec![
        exchange(0, 0, "GET", "/v1/users?token=abc&x=1", 0),
        exchange(1, 0, "POST", "/v1/orders", 1),
        exchange(2, 0, "GET", "/admin/secret", 2),
        exchange(3, 0, "GET", "/gone/1", 3),
        exchange(4, 0, "GET", "/json", 4),
    ];
    write_recording(&rec, &rows, 1);
    let s = server();
    let out = dir.path().join("out");
    let mut o = options(&rec, &out, vec![target("t", &s.url())]);
    o.send.allow_methods.push("POST".into());
    o.send.rules = Some(
        Rules::parse(
            r#"
            [[request]]
            set_headers = { "X-Env" = "shadow" }
            remove_headers = ["User-Agent"]
            path = { from = "^/v1/", to = "/v2/" }
            remove_query = ["token"]
            set_query = { replay = "1" }
            [[request]]
            when = { methods = ["POST"] }
            host = "staging.internal"
            set_json = { "/source" = "replay" }
            remove_json = ["/secret"]
            [[request]]
            when = { path = "^/gone/" }
            drop_percent = 100.0
            [[response]]
            remove_json = ["/generated_at"]
            "#,
        )
        .unwrap(),
    );
    o.send.script = Some(
        ScriptHook::new(
            r#"
            fn on_request(req) {
                if req.path.starts_with("/admin") { return false; }
                set_header(req, "X-Script", "yes");
                req
            }"#,
            100_000,
        )
        .unwrap(),
    );
    // Any language: a shell pipeline rewriting the user agent field of every request message.
    o.send.middleware =
        Some(r#"sed -u 's/"X-Script","yes"/"X-Script","yes"],["X-Middleware","sed"/'"#.into());
    let summary = run(o).unwrap();
    let got = s.received.lock().unwrap().clone();
    assert_eq!(
        got.len(),
        3,
        "admin dropped by the script, /gone dropped by a rule: {got:?}"
    );
    let users = got
        .iter()
        .find(|r| r.uri.starts_with("/v2/users"))
        .expect("path rewritten");
    assert_eq!(users.uri, "/v2/users?x=1&replay=1");
    assert_eq!(users.headers["x-env"], "shadow");
    assert_eq!(users.headers["x-script"], "yes");
    assert_eq!(users.headers["x-middleware"], "sed");
    assert!(users.headers.get("user-agent").is_none());
    let order = got.iter().find(|r| r.method == "POST").unwrap();
    let body: serde_json::Value = serde_json::from_slice(&order.body).unwrap();
    assert_eq!(body, serde_json::json!({"n": 1, "source": "replay"}));
    // A Host set by a hook goes out as set; the others carry the target's.
    assert_eq!(order.headers["host"], "staging.internal");
    assert_eq!(users.headers["host"], s.addr.to_string().as_str());
    assert_eq!(summary.dropped_by_hooks, 2);
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 5, "dropped requests are rows too");
    let dropped: Vec<&str> = rows
        .iter()
        .filter(|r| r.error_kind.as_deref() == Some("dropped"))
        .map(|r| r.path.as_str())
        .collect();
    assert_eq!(dropped.len(), 2, "{dropped:?}");
    let json = rows.iter().find(|r| r.path == "/json").unwrap();
    assert_eq!(
        json.response_body, br#"{"value":1}"#,
        "response rule removed the field before recording"
    );
}

#[test]
fn unsafe_methods_need_allow_methods() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let rows: Vec<_> = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]
        .iter()
        .enumerate()
        .map(|(i, m)| exchange(i, 0, m, "/thing", i as i64))
        .collect();
    write_recording(&rec, &rows, 1);
    let s = server();
    let summary = run(options(
        &rec,
        &dir.path().join("out"),
        vec![target("t", &s.url())],
    ))
    .unwrap();
    let methods: BTreeSet<String> = s
        .received
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.method.clone())
        .collect();
    assert_eq!(
        methods,
        ["GET", "HEAD", "OPTIONS"]
            .iter()
            .map(|m| m.to_string())
            .collect()
    );
    assert_eq!(
        summary.refused_methods.keys().cloned().collect::<Vec<_>>(),
        ["DELETE", "PATCH", "POST", "PUT"]
    );

    let s = server();
    let mut o = options(&rec, &dir.path().join("out2"), vec![target("t", &s.url())]);
    o.send.allow_methods.push("POST".into());
    run(o).unwrap();
    let got = s.received.lock().unwrap().clone();
    let post = got
        .iter()
        .find(|r| r.method == "POST")
        .expect("POST allowed");
    assert_eq!(
        post.body, br#"{"n":1,"secret":"s"}"#,
        "the recorded body is sent"
    );
    assert!(!got.iter().any(|r| r.method == "PUT"));
}

#[test]
fn a_captured_host_is_never_a_target() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let s = server();
    let mut ex = exchange(0, 0, "GET", "/", 0);
    ex.server_ip = "127.0.0.1".parse().unwrap();
    ex.server_port = s.addr.port();
    write_recording(&rec, &[ex], 1);
    let err = run(options(
        &rec,
        &dir.path().join("out"),
        vec![target("oops", &s.url())],
    ))
    .unwrap_err();
    assert!(matches!(err, ReplayError::CapturedHost { .. }), "{err}");
    assert!(err.is_usage());
    assert_eq!(s.count(), 0);
    // By Host name too.
    let mut ex = exchange(0, 0, "GET", "/", 0);
    ex.host = Some(format!("localhost:{}", s.addr.port()).into());
    write_recording(&dir.path().join("rec2"), &[ex], 1);
    let err = run(options(
        &dir.path().join("rec2"),
        &dir.path().join("out2"),
        vec![target(
            "oops",
            &format!("http://localhost:{}", s.addr.port()),
        )],
    ))
    .unwrap_err();
    assert!(matches!(err, ReplayError::CapturedHost { .. }), "{err}");
}

/// TLS ends at the load balancer and the capture sits behind it: the recording holds
/// `Host: localhost` on a backend address, and the target names `localhost` on another port.
/// The name alone refuses it, before anything is sent; `--allow-target` lets it through.
#[test]
fn a_captured_host_name_is_refused_on_any_port_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let s = server();
    let mut ex = exchange(0, 0, "GET", "/", 0);
    ex.server_ip = "10.0.0.5".parse().unwrap();
    ex.server_port = 8080;
    ex.host = Some("LocalHost".into());
    write_recording(&rec, &[ex], 1);
    let url = format!("http://localhost:{}", s.addr.port());
    let err = run(options(
        &rec,
        &dir.path().join("out"),
        vec![target("candidate", &url)],
    ))
    .unwrap_err();
    let ReplayError::CapturedHost { captured, host, .. } = &err else {
        panic!("{err}");
    };
    assert_eq!(
        (captured.as_str(), host.as_str()),
        ("the Host name localhost", "localhost")
    );
    assert!(err.is_usage());
    assert!(
        err.to_string().contains("--allow-target localhost"),
        "{err}"
    );
    assert_eq!(s.count(), 0, "nothing is sent before the refusal");

    let mut o = options(
        &rec,
        &dir.path().join("out2"),
        vec![target("candidate", &url)],
    );
    o.allow_targets = vec!["localhost".into()];
    let summary = run(o).unwrap();
    assert_eq!((summary.rows_written, s.count()), (1, 1));
}

#[test]
fn speed_keeps_recorded_gaps_scaled_and_never_sends_early() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    // Requests 0, 200, 400, …, 1400 ms apart in the recording, split over two files.
    let rows: Vec<_> = (0..8)
        .map(|i| exchange(i, i, "GET", &format!("/p{i}"), i as i64 * 200))
        .collect();
    write_recording(&rec, &rows, 2);
    let s = server();
    let out = dir.path().join("out");
    let mut o = options(&rec, &out, vec![target("t", &s.url())]);
    o.send.pacing = Pacing::Speed {
        factor: 2.0,
        max_wait: None,
    };
    let begun = Instant::now();
    let begun_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    run(o).unwrap();
    let got = s.received.lock().unwrap().clone();
    assert_eq!(got.len(), 8);
    let rows = read_rows(&out);
    let sent = |i: usize| {
        rows.iter()
            .find(|r| r.path == format!("/p{i}"))
            .unwrap()
            .sent_at_us
            .unwrap()
    };
    for i in 1..8 {
        // At 2x, request i is due 100 ms * i after the schedule starts (after `begun`): never
        // sent earlier.
        let offset_us = sent(i) - begun_us;
        assert!(
            offset_us >= 100_000 * i as i64,
            "/p{i} sent {offset_us} µs after the start"
        );
    }
    assert!(begun.elapsed() >= Duration::from_millis(700));
    // Sent in recorded order. (Not necessarily received in it: each request may go out on a
    // connection of its own, and on a busy machine the first connection's handshake can take
    // longer than the 100 ms to the next request; that failed 1 fresh-clone run.)
    for i in 1..8 {
        assert!(sent(i) >= sent(i - 1), "/p{i} sent before /p{}", i - 1);
    }
}

#[test]
fn loops_duration_and_h2c() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    write_recording(&rec, &gets(20, 5), 1);
    let s = server();
    let out = dir.path().join("out");
    let mut o = options(&rec, &out, vec![target("t", &s.url())]);
    o.passes = Some(3);
    o.send.client.protocol = Protocol::H2c;
    let summary = run(o).unwrap();
    assert_eq!(summary.passes, 3);
    assert_eq!(s.count(), 60);
    let rows = read_rows(&out);
    let passes: BTreeSet<i32> = rows.iter().map(|r| r.pass).collect();
    assert_eq!(passes, [0, 1, 2].into_iter().collect());
    assert!(
        rows.iter()
            .all(|r| r.response_version.as_deref() == Some("HTTP/2.0")),
        "{:?}",
        rows[0].response_version
    );
    assert!(s
        .received
        .lock()
        .unwrap()
        .iter()
        .all(|r| r.version == axum::http::Version::HTTP_2));

    // Endless loop at a fixed rate, stopped by --duration.
    let s = server();
    let out = dir.path().join("out2");
    let mut o = options(&rec, &out, vec![target("t", &s.url())]);
    o.passes = None;
    o.send.pacing = Pacing::Rate(50.0);
    o.send.duration = Some(Duration::from_millis(800));
    let summary = run(o).unwrap();
    assert_eq!(summary.stopped_by, "duration");
    assert!(
        s.count() >= 10 && s.count() <= 41,
        "{} requests at 50/s for 0.8 s",
        s.count()
    );
    assert_eq!(
        read_rows(&out).len(),
        s.count(),
        "every request sent has its row"
    );
}

/// `n` GETs on connections of their own, `spacing_ms` apart, every `slow_every`-th to `/slow`
/// (which the test server answers after 2 s) and the others to `/fast`.
fn slow_and_fast(n: usize, slow_every: usize, spacing_ms: i64) -> Vec<shadowtap_core::Exchange> {
    (0..n)
        .map(|i| {
            let path = if i % slow_every == 0 {
                "/slow"
            } else {
                "/fast"
            };
            exchange(i, i, "GET", path, i as i64 * spacing_ms)
        })
        .collect()
}

#[test]
fn a_stop_finishes_requests_in_flight_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    // One request every 50 ms for 10 s, every fifth one slow.
    write_recording(&rec, &slow_and_fast(200, 5, 50), 1);
    let s = server();
    let out = dir.path().join("out");
    let mut o = options(&rec, &out, vec![target("t", &s.url())]);
    o.send.pacing = Pacing::Speed {
        factor: 1.0,
        max_wait: None,
    };
    let summary = run_stopped_after(o, Duration::from_millis(1200));
    assert_eq!(summary.stopped_by, "signal");
    let rows = read_rows(&out);
    let got = s.count();
    assert!(got > 5 && got < 100, "{got}");
    assert_eq!(
        rows.len(),
        got,
        "every request the server received has its row"
    );
    assert!(
        rows.iter()
            .filter(|r| r.path == "/slow")
            .all(|r| r.status == Some(200)),
        "slow requests in flight were waited for"
    );
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("inprogress")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with(".summary.json")));
}

#[test]
fn an_incomplete_recorded_request_is_a_row_not_a_send() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let mut cut = exchange(0, 0, "POST", "/upload", 0);
    cut.request_body.len = 1000; // 20-odd bytes kept of 1000: lost in capture
    let mut fine = exchange(1, 0, "GET", "/ok", 1);
    fine.request_end_us = Some(fine.request_start_us + 5);
    write_recording(&rec, &[cut, fine], 1);
    let s = server();
    let out = dir.path().join("out");
    let mut o = options(
        &rec,
        &out,
        vec![target("a", &s.url()), target("b", &s.url())],
    );
    o.send.allow_methods.push("POST".into());
    let summary = run(o).unwrap();
    assert_eq!(summary.unreplayable, 1);
    assert_eq!(s.count(), 2, "only /ok, once per target");
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 4);
    let unsent: Vec<_> = rows
        .iter()
        .filter(|r| r.error_kind.as_deref() == Some("unreplayable"))
        .collect();
    assert_eq!(unsent.len(), 2);
    assert!(unsent.iter().all(|r| !r.sent
        && r.error_message
            .as_deref()
            .unwrap()
            .contains("lost in capture")));
}

#[test]
fn a_missing_or_foreign_recording_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = run(options(
        &dir.path().join("nope"),
        &dir.path().join("out"),
        vec![target("t", "http://127.0.0.1:9")],
    ))
    .unwrap_err();
    assert!(err.is_usage() && err.to_string().contains("nope"), "{err}");
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let err = run(options(
        &dir.path().join("empty"),
        &dir.path().join("out"),
        vec![target("t", "http://127.0.0.1:9")],
    ))
    .unwrap_err();
    assert!(err.to_string().contains("no exchanges-*.parquet"), "{err}");
}

/// A server that closes every connection right after its response (without saying
/// `Connection: close`, as a keep-alive timeout firing would): the replayer must notice, or
/// resend a request the closed connection never carried, and lose none.
#[test]
fn connections_closed_by_the_server_between_requests_lose_nothing() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            if got.windows(4).any(|w| w == b"\r\n\r\n") {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
            }
            // Dropped: closed at once.
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    write_recording(&rec, &gets(1000, 1), 1);
    let out = dir.path().join("out");
    let mut o = options(
        &rec,
        &out,
        vec![target("closing", &format!("http://{addr}"))],
    );
    o.send.concurrency = 1;
    let summary = run(o).unwrap();
    let rows = read_rows(&out);
    assert_eq!(rows.len(), 1000);
    let failed = failures(&rows);
    assert!(
        failed.is_empty(),
        "{} of 1000 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    assert_eq!(
        served.load(std::sync::atomic::Ordering::SeqCst),
        1000,
        "each request reached the server once"
    );
    assert_eq!(summary.targets["closing"].responses["2xx"], 1000);
}

/// A keep-alive server that closes each connection after 30 ms of quiet (an idle timeout, no
/// `Connection: close`), and keeps the raw bytes of every request.
fn idle_closing_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let log = log.clone();
            std::thread::spawn(move || {
                conn.set_read_timeout(Some(Duration::from_millis(30)))
                    .unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    if let Some(request) = take_request(&mut got) {
                        log.lock().unwrap().push(request);
                        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
                        continue;
                    }
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return, // idle for 30 ms, or closed: close
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// A POST is never resent (it could write twice), so it must not go out on an idle connection
/// the server has already closed: the replayer checks such a connection before using it. The
/// request leaves as recorded: header names in their case and order, a fresh Content-Length.
#[test]
fn unsafe_requests_avoid_connections_the_server_closed_and_go_out_as_recorded() {
    let (addr, seen) = idle_closing_server();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let posts: Vec<_> = (0..12)
        .map(|i| exchange(i, 0, "POST", "/orders?x=1", i as i64))
        .collect();
    write_recording(&rec, &posts, 1);
    let out = dir.path().join("out");
    let mut o = options(&rec, &out, vec![target("t", &format!("http://{addr}"))]);
    o.send.allow_methods.push("POST".into());
    o.send.concurrency = 1;
    // 80 ms apart: every idle connection is closed by the server before the next request.
    o.send.pacing = Pacing::Rate(12.5);
    o.send.marker_header = None;
    run(o).unwrap();
    let rows = read_rows(&out);
    let failed = failures(&rows);
    assert!(
        failed.is_empty(),
        "{} of 12 failed: {failed:?}",
        failed.len()
    );
    assert_eq!(rows.len(), 12);
    assert!(
        rows.iter().all(|r| r.connect_us.is_some()),
        "each request opened a new connection"
    );
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 12, "each POST reached the server once");
    let body = r#"{"n":0,"secret":"s"}"#;
    let first = String::from_utf8_lossy(&seen[0]);
    assert_eq!(
        first,
        format!(
            "POST /orders?x=1 HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: recorded/1.0\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    );
}

/// An HTTPS server on loopback with a self-signed certificate for `localhost`: answers every
/// request on a connection with `200 secure` and counts them.
fn tls_server() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let key = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = key.cert.der().clone();
    let private = rustls::pki_types::PrivateKeyDer::Pkcs8(key.key_pair.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert], private)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let served = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = served.clone();
    let addr = serve_on_loopback(move |listener| async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, count) = (acceptor.clone(), count.clone());
            tokio::spawn(async move {
                // A client that refuses the certificate fails the handshake here.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    while take_request(&mut got).is_some() {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure";
                        if tls.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    (addr, served)
}

/// https targets: a self-signed certificate is refused (`tls` rows, nothing served) unless
/// `--insecure`, which then gets every response.
#[test]
fn https_targets_verify_certificates_unless_insecure() {
    let (addr, served) = tls_server();
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    write_recording(&rec, &gets(20, 5), 1);
    let url = format!("https://localhost:{}", addr.port());

    let strict = dir.path().join("strict");
    run(options(&rec, &strict, vec![target("t", &url)])).unwrap();
    let rows = read_rows(&strict);
    assert_eq!(rows.len(), 20);
    for r in &rows {
        assert_eq!(
            r.error_kind.as_deref(),
            Some("tls"),
            "{:?}",
            r.error_message
        );
        assert!(r.status.is_none());
    }
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 0);

    let insecure = dir.path().join("insecure");
    let mut o = options(&rec, &insecure, vec![target("t", &url)]);
    o.send.client.insecure = true;
    let summary = run(o).unwrap();
    let rows = read_rows(&insecure);
    assert_eq!(rows.len(), 20);
    for r in &rows {
        assert_eq!(r.status, Some(200), "{:?}", r.error_message);
        assert_eq!(r.response_body, b"secure");
        assert_eq!(r.response_version.as_deref(), Some("HTTP/1.1"));
    }
    assert_eq!(served.load(std::sync::atomic::Ordering::SeqCst), 20);
    assert_eq!(summary.targets["t"].responses["2xx"], 20);
}

/// A broken server that sends a stray second response 20 ms after each real one. The stray
/// bytes wait on the idle connection; read as the next request's answer they would pair it
/// with the wrong response. The connection must be given up instead.
#[test]
fn stray_bytes_on_an_idle_connection_are_never_taken_for_the_next_response() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for (c, conn) in listener.incoming().enumerate() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                let mut r = 0;
                loop {
                    while take_request(&mut got).is_some() {
                        let body = format!("conn{c}-req{r}");
                        r += 1;
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = conn.write_all(answer.as_bytes());
                        std::thread::sleep(Duration::from_millis(20));
                        let _ =
                            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray");
                    }
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    write_recording(&rec, &gets(6, 6), 1);
    let out = dir.path().join("out");
    let mut o = options(&rec, &out, vec![target("t", &format!("http://{addr}"))]);
    o.send.concurrency = 1;
    o.send.pacing = Pacing::Rate(12.5); // 80 ms apart: the stray bytes are there before each reuse
    run(o).unwrap();
    let bodies: BTreeSet<String> = read_rows(&out)
        .iter()
        .map(|r| String::from_utf8_lossy(&r.response_body).into_owned())
        .collect();
    assert_eq!(bodies.len(), 6, "{bodies:?}");
    for b in &bodies {
        assert!(b.ends_with("-req0"), "a reused connection answered {b:?}");
    }
}

#[test]
fn every_exchange_read_is_counted_once_as_sent_or_left_out_and_why() {
    use shadowtap_core::criteria::{CriteriaSpec, MatchCriteria};
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    // 3,000 exchanges: a third under /skip (not matched), a third POSTs (refused), the rest
    // GETs under /keep, sampled at 50%.
    let rows: Vec<_> = (0..3000)
        .map(|i| match i % 3 {
            0 => exchange(i, i / 10, "GET", &format!("/skip/{i}"), i as i64),
            1 => exchange(i, i / 10, "POST", &format!("/keep/{i}"), i as i64),
            _ => exchange(i, i / 10, "GET", &format!("/keep/{i}"), i as i64),
        })
        .collect();
    write_recording(&rec, &rows, 2);
    let s = server();
    let out = dir.path().join("out");
    let mut o = options(&rec, &out, vec![target("t", &s.url())]);
    o.send.criteria = MatchCriteria::new(&CriteriaSpec {
        path: Some("^/keep/".into()),
        ..Default::default()
    })
    .unwrap();
    o.send.sampler.percent = "50%".parse().unwrap();
    let summary = run(o).unwrap();
    assert_eq!(summary.exchanges_read, 3000);
    assert_eq!(summary.not_matched, 1000);
    // Sampling comes before the method check: about half of each of the other two thirds.
    let refused = summary.refused_methods.get("POST").copied().unwrap_or(0);
    assert!((400..=600).contains(&refused), "{refused}");
    assert!(
        (400..=600).contains(&summary.selected),
        "{}",
        summary.selected
    );
    assert_eq!(
        summary.not_matched + summary.sampled_out + refused + summary.selected,
        3000,
        "{summary:?}"
    );
    assert_eq!(
        s.count() as u64,
        summary.selected,
        "the server got the selected ones"
    );
    assert_eq!(read_rows(&out).len() as u64, summary.selected);
}

#[test]
fn several_sending_threads_send_each_exchange_once_to_every_target() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, out, mut o) = gets_at_two_targets(dir.path(), 1500, 40);
    o.send.senders = 3;
    o.send.concurrency = 12;
    o.passes = Some(2);
    let summary = run(o).unwrap();
    assert_eq!((a.count(), b.count()), (3000, 3000), "{summary:?}");
    assert_eq!(
        (summary.exchanges_read, summary.selected, summary.passes),
        (3000, 3000, 2)
    );
    let rows = read_rows(&out);
    assert_eq!((rows.len(), summary.rows_written), (6000, 6000));
    for t in ["baseline", "candidate"] {
        let mut seen: BTreeMap<(&str, i32), usize> = BTreeMap::new();
        for r in rows.iter().filter(|r| r.target == t) {
            *seen.entry((r.exchange_id.as_str(), r.pass)).or_default() += 1;
        }
        assert_eq!(seen.len(), 3000, "{t}: every exchange in both passes");
        assert!(seen.values().all(|&n| n == 1), "{t}: each exactly once");
    }
    assert!(rows.iter().all(|r| r.status == Some(200) && r.sent));
}

#[test]
fn a_stop_with_several_sending_threads_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    // Every tenth request takes 2 s: a stop always finds some in flight on every thread.
    write_recording(&rec, &slow_and_fast(400, 10, 1), 2);
    let s = server();
    let out = dir.path().join("out");
    let mut o = options(&rec, &out, vec![target("t", &s.url())]);
    o.send.senders = 3;
    o.send.concurrency = 9;
    o.passes = None;
    // The threads of this process a second into sending (Linux).
    let names = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(1000));
        std::fs::read_dir("/proc/self/task")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
            .map(|n| n.trim().to_owned())
            .collect::<BTreeSet<String>>()
    });
    let summary = run_stopped_after(o, Duration::from_millis(2500));
    assert_eq!(summary.stopped_by, "signal");
    let threads = names.join().unwrap();
    assert!(
        threads.contains("replay-send-1") && threads.contains("replay-send-2"),
        "three sending threads: {threads:?}"
    );
    let rows = read_rows(&out);
    let got = s.count();
    assert!(got > 9, "{got}");
    assert_eq!(rows.len(), got, "every request received has its row");
    assert_eq!(summary.rows_written as usize, got);
    assert!(
        rows.iter()
            .filter(|r| r.path == "/slow")
            .all(|r| r.status == Some(200)),
        "requests in flight at the stop were waited for"
    );
}

#[test]
fn concurrency_bounds_requests_in_flight_over_all_sending_threads() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    // One server behind both targets, counting the requests it holds at once.
    let (active, most) = (
        std::sync::Arc::new(AtomicUsize::new(0)),
        std::sync::Arc::new(AtomicUsize::new(0)),
    );
    let (a, m) = (active.clone(), most.clone());
    let addr = serve_on_loopback(move |listener| async move {
        let app = axum::Router::new().fallback(move || {
            let (a, m) = (a.clone(), m.clone());
            async move {
                let now = a.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                a.fetch_sub(1, Ordering::SeqCst);
                "ok"
            }
        });
        axum::serve(listener, app).await.unwrap();
    });
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    // Enough batches from the reader (128 exchanges each) for every thread to get some.
    write_recording(&rec, &gets(1000, 10), 1);
    let url = format!("http://{addr}");
    let out = dir.path().join("out");
    let mut o = options(&rec, &out, vec![target("a", &url), target("b", &url)]);
    // Four threads asked for, but five requests in flight allow two exchanges at a time.
    o.send.senders = 4;
    o.send.concurrency = 5;
    let summary = run(o).unwrap();
    assert_eq!(summary.rows_written, 2000);
    let most = most.load(Ordering::SeqCst);
    assert!((2..=5).contains(&most), "{most} requests in flight at once");
}

/// A middleware that answers with a line without end cannot grow memory without bound: past
/// 64 MiB its reply is a hook error, and nothing is sent.
#[test]
fn an_endless_middleware_reply_is_a_hook_error() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    write_recording(&rec, &gets(2, 1), 1);
    let s = server();
    let mut o = options(&rec, &dir.path().join("out"), vec![target("t", &s.url())]);
    // Reads one request line, then writes 80 MiB without a newline.
    o.send.middleware =
        Some("head -n 1 > /dev/null; head -c 83886080 /dev/zero | tr '\\0' a".into());
    o.send.middleware_timeout = Duration::from_secs(30);
    let summary = run(o).unwrap();
    assert_eq!(summary.hook_errors, 2, "{summary:?}");
    assert_eq!(s.count(), 0);
    let rows = read_rows(&dir.path().join("out"));
    assert!(
        rows.iter().all(|r| r.error_kind.as_deref() == Some("hook")),
        "{:?}",
        failures(&rows)
    );
    assert!(
        failures(&rows).iter().any(|m| m
            .as_deref()
            .is_some_and(|m| m.contains("longer than 64 MiB"))),
        "{:?}",
        failures(&rows)
    );
}

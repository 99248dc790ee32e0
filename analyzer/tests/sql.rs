//! SQL over real Parquet written by the shared sinks: tables, Hive partitions, UDFs, errors,
//! and the verdict's SQL giving the numbers the verdict used.

use std::path::Path;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int64Type;
use shadowtap_analyzer::tables::{register_all, run_sql, session};
use shadowtap_analyzer::{analyze, AnalyzeOptions, Decision, Policy};
use shadowtap_core::replays::{replays_schema, replays_to_batch, ErrorKind, ReplayRecord};
use shadowtap_core::schema::{exchanges_schema, exchanges_to_batch};
use shadowtap_core::sink::{ParquetSink, SinkOptions};
use shadowtap_core::{Body, Exchange, ExchangeFlags, Header};

fn exchange(i: usize) -> Exchange {
    let path = format!("/users/{}/orders", 1000 + i);
    Exchange {
        grpc: None,
        tls: None,
        protocol: None,
        stream_id: None,
        exchange_id: format!("ex{i:04}"),
        connection_id: "c".into(),
        connection_seq: i as u32,
        source: "t".into(),
        request_start_us: 1_763_900_000_000_000 + i as i64,
        request_end_us: Some(1_763_900_000_000_010 + i as i64),
        response_start_us: None,
        response_end_us: None,
        client_ip: "10.0.0.1".parse().unwrap(),
        client_port: 1,
        server_ip: "10.0.0.2".parse().unwrap(),
        server_port: 80,
        method: "GET".into(),
        uri: path.clone(),
        host: Some("api".into()),
        path: path.into(),
        query: None,
        http_version: "HTTP/1.1".into(),
        request_headers: vec![Header {
            name: "User-Agent".into(),
            value: format!("ua-{}", i % 2).into(),
        }],
        request_trailers: vec![],
        request_body: Body::default(),
        status: Some(200),
        reason: Some("OK".into()),
        response_version: Some("HTTP/1.1".into()),
        interim_statuses: vec![],
        response_headers: vec![Header {
            name: "Content-Type".into(),
            value: "application/json".into(),
        }],
        response_trailers: vec![],
        response_body: Body {
            raw: format!(
                "{{\"user\":{{\"id\":{i},\"name\":\"n{i}\"}},\"seq\":{}}}",
                i * 3
            )
            .into_bytes(),
            len: 10,
            ..Body::default()
        },
        flags: ExchangeFlags::default(),
        error_detail: None,
    }
}

fn write_exchanges(dir: &Path, n: usize) {
    let mut sink = ParquetSink::new(
        SinkOptions {
            dir: dir.join("date=2025-11-23/hour=12"),
            prefix: "exchanges-t".into(),
            max_file_bytes: 1 << 30,
            max_row_group_rows: 1000,
        },
        exchanges_schema(),
    )
    .unwrap();
    let rows: Vec<Exchange> = (0..n).map(exchange).collect();
    sink.write(&exchanges_to_batch(&rows).unwrap()).unwrap();
    sink.finish().unwrap();
}

/// A replay row: `target` answered `status` (None: `kind` error) in `ms`, with `body`.
fn row(i: usize, target: &str, status: Option<u16>, ms: f64, body: &str) -> ReplayRecord {
    ReplayRecord {
        run_id: "r".into(),
        exchange_id: format!("ex{i:04}"),
        pass: 0,
        target: target.into(),
        target_url: format!("http://{target}").into(),
        recorded_start_us: 1_763_900_000_000_000,
        sent_at_us: Some(1_763_900_000_000_000),
        method: "GET".into(),
        url: format!("http://{target}/users/{}/orders", 1000 + i),
        path: format!("/users/{}/orders", 1000 + i).into(),
        query: None,
        request_headers: vec![],
        request_body: vec![],
        status,
        response_version: status.map(|_| "HTTP/1.1".into()),
        response_headers: vec![Header {
            name: "content-type".into(),
            value: "application/json".into(),
        }],
        response_body: body.as_bytes().to_vec(),
        response_body_decoded: None,
        response_body_len: body.len() as u64,
        response_body_truncated: false,
        connect_us: None,
        ttfb_us: Some((ms * 1000.0) as i64),
        total_us: Some((ms * 1000.0) as i64),
        error_kind: if status.is_none() {
            Some(ErrorKind::Refused)
        } else {
            None
        },
        error_message: None,
        send_position: None,
    }
}

fn write_replays(dir: &Path, rows: &[ReplayRecord]) {
    let mut sink = ParquetSink::new(
        SinkOptions {
            dir: dir.to_path_buf(),
            prefix: "replays-t".into(),
            max_file_bytes: 1 << 30,
            max_row_group_rows: 1000,
        },
        replays_schema(),
    )
    .unwrap();
    sink.write(&replays_to_batch(rows).unwrap()).unwrap();
    sink.finish().unwrap();
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn tables_partitions_and_udfs() {
    let dir = tempfile::tempdir().unwrap();
    write_exchanges(&dir.path().join("cap"), 10);
    rt().block_on(async {
        let ctx = session();
        let found = register_all(&ctx, &[dir.path().join("cap")]).await.unwrap();
        assert_eq!(found, ["exchanges"]);
        let b = run_sql(&ctx, "SELECT date, hour, count(*) AS n FROM exchanges GROUP BY 1, 2").await.unwrap();
        assert_eq!(b[0].num_rows(), 1);
        assert_eq!(arrow::compute::cast(b[0].column(0), &arrow::datatypes::DataType::Utf8).unwrap().as_string::<i32>().value(0), "2025-11-23");
        assert_eq!(b[0].column(2).as_primitive::<Int64Type>().value(0), 10);
        let b = run_sql(
            &ctx,
            "SELECT path_template(path) AS t, header(request_headers, 'user-agent') AS ua, json_get(response_body, '/user/name') AS name, \
             json_get(response_body, '/user/id') AS id, json_get(response_body, '/nope') AS nope FROM exchanges WHERE exchange_id = 'ex0003'",
        )
        .await
        .unwrap();
        let s = |c: usize| arrow::compute::cast(b[0].column(c), &arrow::datatypes::DataType::Utf8).unwrap().as_string::<i32>().clone();
        assert_eq!(s(0).value(0), "/users/{id}/orders");
        assert_eq!(s(1).value(0), "ua-1");
        assert_eq!(s(2).value(0), "n3");
        assert_eq!(s(3).value(0), "3");
        assert!(s(4).is_null(0));
        let err = run_sql(&ctx, "SELECT * FROM replays").await.unwrap_err().to_string();
        assert!(err.contains("replays") && err.contains("tables: exchanges"), "{err}");
        let err = run_sql(&ctx, "SELEC 1").await.unwrap_err().to_string();
        assert!(!err.contains('\n'), "one line: {err}");
    });
}

fn options(dir: &Path) -> AnalyzeOptions {
    AnalyzeOptions {
        capture: Some(dir.join("cap")),
        replay: dir.join("rep"),
        run: None,
        policy: Policy::default(),
        out: dir.join("out"),
        fail_on_marginal: false,
        engine: Default::default(),
        recorded: Default::default(),
        pending_bytes: shadowtap_analyzer::pending::DEFAULT_PENDING_BYTES,
    }
}

#[test]
fn a_latency_regression_fails_and_the_sql_gives_the_same_numbers() {
    let dir = tempfile::tempdir().unwrap();
    write_exchanges(&dir.path().join("cap"), 200);
    let mut rows = Vec::new();
    for i in 0..200 {
        let body = format!("{{\"user\":{{\"id\":{i},\"name\":\"n{i}\"}}}}");
        let jitter = (i % 10) as f64 * 0.1;
        rows.push(row(i, "baseline", Some(200), 10.0 + jitter, &body));
        rows.push(row(
            i,
            "candidate",
            if i % 25 == 0 { None } else { Some(200) },
            14.0 + jitter,
            &body,
        ));
    }
    write_replays(&dir.path().join("rep"), &rows);
    let opts = options(dir.path());
    let v = rt().block_on(analyze(&opts)).unwrap();
    assert_eq!(v.verdict, Decision::NoGo);
    // junit.xml reads back as JUnit, whatever an endpoint is called (markup, a control byte,
    // an ANSI escape from a captured path).
    let mut odd = v.clone();
    odd.checks[0].endpoint = "GET /a\u{1}<b>&\"c\u{1b}[31m]]>".into();
    let xml = shadowtap_analyzer::report::junit(&odd);
    let back = quick_junit::Report::deserialize_from_str(&xml).expect("junit.xml parses");
    assert_eq!(back.tests, odd.checks.len());
    let fails = odd
        .checks
        .iter()
        .filter(|c| c.result == shadowtap_analyzer::analyze::CheckResult::Fail)
        .count();
    assert_eq!(back.failures, fails);
    assert!(fails > 0);
    let lat = v
        .checks
        .iter()
        .find(|c| c.metric == "latency" && c.endpoint == "overall")
        .unwrap();
    assert_eq!(
        lat.result,
        shadowtap_analyzer::analyze::CheckResult::Fail,
        "{}",
        lat.explanation
    );
    // Pairs, the 8 the candidate did not answer included (censored: worse than any answer).
    assert_eq!((lat.baseline.n, lat.candidate.n), (200, 200));
    let err = v
        .checks
        .iter()
        .find(|c| c.metric == "error_rate" && c.endpoint == "overall")
        .unwrap();
    assert_eq!(
        (err.baseline.events, err.candidate.events),
        (Some(0), Some(8))
    );
    // 4% vs 0% on 200: 8 discordant pairs, all one way (McNemar p = 2^-8), above the bounds.
    assert_eq!(
        err.result,
        shadowtap_analyzer::analyze::CheckResult::Fail,
        "{}",
        err.explanation
    );
    // The check's SQL, run as is, gives the numbers the check used.
    rt().block_on(async {
        let ctx = session();
        register_all(&ctx, &[dir.path().join("rep")]).await.unwrap();
        let b = run_sql(
            &ctx,
            &format!("SELECT * FROM ({}) ORDER BY target", err.sql),
        )
        .await
        .unwrap();
        let t = arrow::compute::cast(b[0].column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        assert_eq!(t.as_string::<i32>().value(0), "baseline");
        assert_eq!(
            (
                b[0].column(1).as_primitive::<Int64Type>().value(1),
                b[0].column(2).as_primitive::<Int64Type>().value(1)
            ),
            (200, 8)
        );
    });
}

#[test]
fn numbers_within_tolerance_and_noise_from_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    write_exchanges(&dir.path().join("cap"), 120);
    let mut rows = Vec::new();
    for i in 0..120 {
        // Both replays carry the same new `ts` field the recording lacks, and a `seq` that
        // differs everywhere (noise, also against the recording); the candidate changes `name`
        // on every request.
        let b = format!(
            "{{\"user\":{{\"id\":{i},\"name\":\"n{i}\"}},\"seq\":{}}}",
            i * 2
        );
        let c = format!(
            "{{\"user\":{{\"id\":{i},\"name\":\"m{i}\"}},\"seq\":{}}}",
            i * 2 + 1
        );
        rows.push(row(i, "baseline", Some(200), 5.0, &b));
        rows.push(row(i, "candidate", Some(200), 5.0, &c));
    }
    write_replays(&dir.path().join("rep"), &rows);
    let v = rt().block_on(analyze(&options(dir.path()))).unwrap();
    assert_eq!(v.noise_source, "recorded");
    let field = |f: &str| {
        v.fields
            .iter()
            .find(|x| x.field == f)
            .unwrap_or_else(|| panic!("{f}: {:?}", v.fields))
    };
    assert!(!field("/user/name").noise, "a real change");
    assert!(field("/seq").noise, "{}", field("/seq").reason);
    assert_eq!(v.verdict, Decision::NoGo);
    assert!(
        v.reasons.iter().any(|r| r.contains("/user/name")),
        "{:?}",
        v.reasons
    );
    // Every pair, and each version against the recorded response, is a `diffs` row.
    rt().block_on(async {
        let ctx = session();
        register_all(&ctx, &[dir.path().join("out")]).await.unwrap();
        let b = run_sql(&ctx, "SELECT comparison, count(*) AS n, sum(CASE WHEN differs THEN 1 ELSE 0 END) AS d FROM diffs GROUP BY 1 ORDER BY 1").await.unwrap();
        let names = arrow::compute::cast(b[0].column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let names: Vec<&str> = (0..b[0].num_rows()).map(|i| names.as_string::<i32>().value(i)).collect();
        assert_eq!(names, ["candidate", "candidate_recorded", "recorded"]);
        let n = b[0].column(1).as_primitive::<Int64Type>();
        assert!((0..3).all(|i| n.value(i) == 120), "one row per pair per comparison");
    });
}

#[test]
fn a_foreign_file_is_an_input_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    // An `exchanges` file where the replays should be.
    write_exchanges(&dir.path().join("tmp"), 3);
    let rep = dir.path().join("rep");
    std::fs::create_dir_all(&rep).unwrap();
    let src = shadowtap_core::read::find_exchange_files(&dir.path().join("tmp"))
        .unwrap()
        .remove(0);
    std::fs::copy(src, rep.join("replays-foreign.parquet")).unwrap();
    write_exchanges(&dir.path().join("cap"), 3);
    let err = rt().block_on(analyze(&options(dir.path()))).unwrap_err();
    assert_eq!(err.exit_code(), 64, "{err}");
    assert!(
        err.to_string()
            .contains("is not a shadowtap `replays` file"),
        "{err}"
    );
}

/// Without a second baseline, a per-request field the recording does not have (the recorded
/// version did not send it yet) is not calibrated by the recording: it is not counted against
/// the candidate as a changed value, but a change of its type still is.
#[test]
fn a_field_absent_from_the_recording_is_not_a_regression_of_its_value() {
    for (candidate_ts, expect) in [("{i}1", Decision::Go), ("\"{i}\"", Decision::NoGo)] {
        let dir = tempfile::tempdir().unwrap();
        write_exchanges(&dir.path().join("cap"), 120);
        let mut rows = Vec::new();
        for i in 0..120 {
            let b = format!(
                "{{\"user\":{{\"id\":{i},\"name\":\"n{i}\"}},\"seq\":{},\"ts\":{i}0}}",
                i * 2
            );
            let c = format!(
                "{{\"user\":{{\"id\":{i},\"name\":\"n{i}\"}},\"seq\":{},\"ts\":{}}}",
                i * 2 + 1,
                candidate_ts.replace("{i}", &i.to_string())
            );
            rows.push(row(i, "baseline", Some(200), 5.0, &b));
            rows.push(row(i, "candidate", Some(200), 5.0, &c));
        }
        write_replays(&dir.path().join("rep"), &rows);
        let v = rt().block_on(analyze(&options(dir.path()))).unwrap();
        assert_eq!(v.noise_source, "recorded");
        assert_eq!(v.verdict, expect, "{:?}", v.reasons);
        if expect == Decision::NoGo {
            assert!(
                v.reasons.iter().any(|r| r.contains("/ts (type_changed)")),
                "{:?}",
                v.reasons
            );
        }
    }
}

/// A directory name with glob characters is a name, not a pattern; `header()` over a list of
/// structs that are not {name, value} is an error, not a panic.
#[test]
fn glob_characters_in_directory_names_and_foreign_structs() {
    let dir = tempfile::tempdir().unwrap();
    let odd = dir.path().join("run[1]*?");
    let rows: Vec<ReplayRecord> = (0..5)
        .map(|i| row(i, "baseline", Some(200), 10.0, "{}"))
        .collect();
    write_replays(&odd, &rows);
    // A sibling the pattern `run[1]*?` would match if it were read as a glob.
    write_replays(&dir.path().join("run1xy"), &rows);
    rt().block_on(async {
        let ctx = session();
        assert_eq!(
            register_all(&ctx, std::slice::from_ref(&odd))
                .await
                .unwrap(),
            ["replays"]
        );
        let b = run_sql(&ctx, "SELECT count(*) FROM replays").await.unwrap();
        assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 5);
        let err = run_sql(
            &ctx,
            "SELECT header([named_struct('a', 'x', 'b', 'y')], 'a') FROM replays",
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(err.contains("{name utf8, value utf8}"), "{err}");
    });
}

/// Queries run under a memory pool: past the limit a consumer is refused (operators that can
/// spill do so), and a sort bigger than the pool still completes by spilling.
#[test]
fn queries_run_under_the_memory_limit_and_spill() {
    use datafusion::execution::memory_pool::MemoryConsumer;
    let ctx = shadowtap_analyzer::tables::session_with_memory(Some(4 << 20));
    let pool = ctx.runtime_env().memory_pool.clone();
    let r = MemoryConsumer::new("test")
        .with_can_spill(true)
        .register(&pool);
    assert!(
        r.try_grow(8 << 20).is_err(),
        "the pool allowed more than its limit"
    );
    r.free();
    rt().block_on(async {
        let b = run_sql(
            &ctx,
            "SELECT v, pad FROM (SELECT value AS v, repeat('x', 100) AS pad FROM generate_series(1, 200000)) ORDER BY pad, v DESC",
        )
        .await
        .unwrap();
        // 20 MB of rows sorted under a 4 MiB pool: only by spilling.
        assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 200_000);
        assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 200_000);
    });
    assert!(shadowtap_analyzer::tables::default_memory_limit().is_some_and(|m| m > 0));
}

/// The recorded responses held for the `recorded` comparison are those of the replayed
/// exchanges only, within the byte limit, chosen by the id's hash (the same choice every run),
/// and what is kept is the response as recorded.
#[test]
fn recorded_responses_are_only_the_replayed_ones_within_the_byte_limit() {
    use shadowtap_analyzer::pairs::{load_recorded, RecordedLimits};
    let dir = tempfile::tempdir().unwrap();
    write_exchanges(&dir.path().join("cap"), 400);
    // Every other exchange was replayed.
    let replayed: std::collections::HashSet<String> =
        (0..400).step_by(2).map(|i| format!("ex{i:04}")).collect();
    let all = load_recorded(
        &dir.path().join("cap"),
        &replayed,
        RecordedLimits::default(),
    )
    .unwrap();
    assert_eq!(all.len(), 200, "only the replayed exchanges' responses");
    assert!(all.keys().all(|k| replayed.contains(k)));
    let ex = &all["ex0010"];
    assert_eq!(ex.status, Some(200));
    assert_eq!(ex.body, br#"{"user":{"id":10,"name":"n10"},"seq":30}"#);
    // Each response costs its body plus 256 bytes: 10 KiB holds about 35 of them.
    let limits = RecordedLimits {
        rows: 200_000,
        bytes: 10 << 10,
    };
    let some = load_recorded(&dir.path().join("cap"), &replayed, limits).unwrap();
    let held: u64 = some.values().map(|r| r.body.len() as u64 + 256).sum();
    assert!(held <= 10 << 10, "{held} bytes held");
    assert!((20..=40).contains(&some.len()), "{} kept", some.len());
    assert!(some.keys().all(|k| all.contains_key(k)));
    let again = load_recorded(&dir.path().join("cap"), &replayed, limits).unwrap();
    let mut a: Vec<_> = some.keys().collect();
    let mut b: Vec<_> = again.keys().collect();
    a.sort();
    b.sort();
    assert_eq!(a, b, "the same responses every run");
    // A row limit works the same way.
    let ten = RecordedLimits {
        rows: 10,
        bytes: u64::MAX,
    };
    let n = load_recorded(&dir.path().join("cap"), &replayed, ten)
        .unwrap()
        .len();
    assert!((1..=10).contains(&n), "{n} kept under a 10-row limit");
}

/// A candidate that died a third of the way through: its rows stop, the baseline's go on.
/// The responses held for requests waiting for the candidate stay under the pending budget
/// (the oldest are let go and counted), and the verdict says so.
#[test]
fn requests_waiting_for_a_dead_target_are_held_under_the_pending_budget() {
    let dir = tempfile::tempdir().unwrap();
    write_exchanges(&dir.path().join("cap"), 300);
    let body = format!("{{\"pad\":\"{}\"}}", "x".repeat(4000));
    let mut rows = Vec::new();
    for i in 0..300 {
        rows.push(row(i, "baseline", Some(200), 10.0, &body));
        if i < 100 {
            rows.push(row(i, "candidate", Some(200), 10.0, &body));
        }
    }
    write_replays(&dir.path().join("rep"), &rows);
    let budget = 64 << 10;
    let pair = |pending_bytes| {
        let out = tempfile::tempdir().unwrap();
        let opts = shadowtap_analyzer::diff::DiffOptions::default();
        shadowtap_analyzer::pairs::pair_replays(&shadowtap_analyzer::pairs::PairingInput {
            replay_dir: &dir.path().join("rep"),
            run: "r",
            targets: shadowtap_analyzer::pairs::PairTargets {
                baseline: "baseline",
                candidate: "candidate",
                baseline2: None,
            },
            recorded: None,
            opts: &opts,
            out: out.path(),
            analysis_id: "a",
            pending_bytes,
        })
        .unwrap()
        .0
    };
    let small = pair(budget);
    assert_eq!(
        small.pairs.len(),
        100,
        "the complete requests are all paired"
    );
    assert_eq!(small.incomplete, 200);
    assert!(
        small.pending_peak_bytes <= (budget + 4100) as u64,
        "held {} bytes over a {budget}-byte budget",
        small.pending_peak_bytes
    );
    assert!(small.pending_evicted >= 180, "{}", small.pending_evicted);
    assert_eq!(small.pending_late, 0);
    let roomy = pair(shadowtap_analyzer::pending::DEFAULT_PENDING_BYTES);
    assert_eq!((roomy.pairs.len(), roomy.incomplete), (100, 200));
    assert_eq!(roomy.pending_evicted, 0);
    assert!(
        roomy.pending_peak_bytes >= 200 * 4000,
        "{}",
        roomy.pending_peak_bytes
    );
    // Through `analyze`: the verdict's notes name what was let go.
    let mut opts = options(dir.path());
    opts.pending_bytes = budget;
    let v = rt().block_on(analyze(&opts)).unwrap();
    assert!(
        v.notes.iter().any(|n| n.contains("pending memory budget")),
        "{:?}",
        v.notes
    );
}

/// `--openapi`: requests are judged by the document's operations, named by operationId.
#[test]
fn an_openapi_document_names_the_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    write_exchanges(&dir.path().join("cap"), 120);
    let mut rows = Vec::new();
    for i in 0..120 {
        let body = format!("{{\"id\":{i}}}");
        rows.push(row(i, "baseline", Some(200), 10.0, &body));
        rows.push(row(i, "candidate", Some(200), 10.0, &body));
    }
    write_replays(&dir.path().join("rep"), &rows);
    let doc = dir.path().join("openapi.yaml");
    std::fs::write(
        &doc,
        "openapi: 3.0.3\ninfo: {title: shop, version: '1'}\npaths:\n  /users/{userId}/orders:\n    get:\n      operationId: listOrders\n      responses: {'200': {description: ok}}\n",
    )
    .unwrap();
    let mut opts = options(dir.path());
    opts.policy.openapi = Some(doc);
    let v = rt().block_on(analyze(&opts)).unwrap();
    let endpoints: std::collections::BTreeSet<&str> =
        v.checks.iter().map(|c| c.endpoint.as_str()).collect();
    assert!(
        endpoints.contains("GET /users/{userId}/orders (listOrders)"),
        "{endpoints:?}"
    );
    // A document that is not OpenAPI is refused, naming the file.
    std::fs::write(dir.path().join("bad.yaml"), "hello: world\n").unwrap();
    opts.policy.openapi = Some(dir.path().join("bad.yaml"));
    let e = rt().block_on(analyze(&opts)).unwrap_err().to_string();
    assert!(e.contains("bad.yaml") && e.contains("OpenAPI"), "{e}");
}

//! Generates a large synthetic canary run for `bench/analyze.sh`: N recorded exchanges (the
//! capture) and N replayed pairs (baseline and candidate) with small JSON bodies, realistic
//! latency spread, a timestamp field that always differs (noise) and a field the candidate
//! changes on 1% of one endpoint.
//!
//!     cargo run --release -p shadowtap-analyzer --example gen_pairs -- OUT_DIR N

use std::path::Path;

use shadowtap_core::replays::{replays_schema, replays_to_batch, ReplayRecord};
use shadowtap_core::schema::{exchanges_schema, exchanges_to_batch};
use shadowtap_core::sink::{ParquetSink, SinkOptions};
use shadowtap_core::{Body, Exchange, ExchangeFlags, Header};

fn sink(dir: &Path, prefix: &str, schema: arrow::datatypes::SchemaRef) -> ParquetSink {
    ParquetSink::new(
        SinkOptions {
            dir: dir.to_path_buf(),
            prefix: prefix.into(),
            max_file_bytes: 256 << 20,
            max_row_group_rows: 128 * 1024,
        },
        schema,
    )
    .expect("sink")
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let out = Path::new(args.get(1).map(String::as_str).unwrap_or("bench/out/pairs"));
    let n: usize = args
        .get(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mut cap = sink(&out.join("capture"), "exchanges-bench", exchanges_schema());
    let mut rep = sink(&out.join("replay"), "replays-bench", replays_schema());
    let endpoints = [
        "/api/users/",
        "/api/orders/",
        "/api/search/",
        "/api/items/",
        "/health/",
    ];
    let mut rng: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let chunk = 50_000;
    for start in (0..n).step_by(chunk) {
        let mut ex = Vec::with_capacity(chunk);
        let mut rows = Vec::with_capacity(2 * chunk);
        for i in start..(start + chunk).min(n) {
            let ep = endpoints[i % endpoints.len()];
            let path = format!("{ep}{}", i % 100_000);
            let id = format!("ex{i:09}");
            let body = |ts: u64, tier: &str| {
                format!("{{\"id\":{i},\"name\":\"item-{i}\",\"tier\":\"{tier}\",\"price\":{}.99,\"generated_at\":{ts}}}", i % 1000)
            };
            let t0 = 1_763_900_000_000_000i64 + i as i64 * 1000;
            ex.push(Exchange {
                grpc: None,
                tls: None,
                protocol: None,
                stream_id: None,
                exchange_id: id.clone(),
                connection_id: format!("c{}", i / 100),
                connection_seq: (i % 100) as u32,
                source: "bench".into(),
                request_start_us: t0,
                request_end_us: Some(t0 + 10),
                response_start_us: Some(t0 + 900),
                response_end_us: Some(t0 + 1000),
                client_ip: "10.0.0.1".parse().expect("ip"),
                client_port: 40000,
                server_ip: "10.0.0.2".parse().expect("ip"),
                server_port: 80,
                method: "GET".into(),
                uri: path.clone(),
                host: Some("api.example".into()),
                path: path.as_str().into(),
                query: None,
                http_version: "HTTP/1.1".into(),
                request_headers: vec![Header {
                    name: "Host".into(),
                    value: "api.example".into(),
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
                    raw: body(next() % 1000, "gold").into_bytes(),
                    len: 0,
                    ..Body::default()
                },
                flags: ExchangeFlags::default(),
                error_detail: None,
            });
            for (target, slow, tier) in [
                ("baseline", 0u64, "gold"),
                (
                    "candidate",
                    0,
                    if ep == "/api/items/" && (i / endpoints.len()).is_multiple_of(100) {
                        "platinum"
                    } else {
                        "gold"
                    },
                ),
            ] {
                let total = 2_000 + next() % 3_000 + slow;
                let b = body(next() % 1000, tier);
                rows.push(ReplayRecord {
                    run_id: "bench".into(),
                    exchange_id: id.clone(),
                    pass: 0,
                    target: target.into(),
                    target_url: format!("http://{target}").into(),
                    recorded_start_us: t0,
                    sent_at_us: Some(t0),
                    method: "GET".into(),
                    url: format!("http://{target}{path}"),
                    path: path.as_str().into(),
                    query: None,
                    request_headers: vec![Header {
                        name: "Host".into(),
                        value: target.into(),
                    }],
                    request_body: vec![],
                    status: Some(if next() % 1000 == 0 { 500 } else { 200 }),
                    response_version: Some("HTTP/1.1".into()),
                    response_headers: vec![Header {
                        name: "content-type".into(),
                        value: "application/json".into(),
                    }],
                    response_body_len: b.len() as u64,
                    response_body: b.into_bytes(),
                    response_body_decoded: None,
                    response_body_truncated: false,
                    connect_us: None,
                    ttfb_us: Some(total as i64 - 100),
                    total_us: Some(total as i64),
                    error_kind: None,
                    error_message: None,
                    send_position: None,
                });
            }
        }
        cap.write(&exchanges_to_batch(&ex).expect("batch"))
            .expect("write");
        rep.write(&replays_to_batch(&rows).expect("batch"))
            .expect("write");
    }
    cap.finish().expect("finish");
    rep.finish().expect("finish");
    println!(
        "{n} exchanges, {} replays rows under {}",
        2 * n,
        out.display()
    );
}

//! An open-loop HTTP/1.1 load generator for `bench/proxy.sh`: the same client for every
//! configuration compared (direct, nginx, shadowtap), light enough not to be what is measured.
//!
//! `CONNS` keep-alive connections each send `GET PATH` on a fixed schedule of their own
//! (`RATE / CONNS` per second, staggered, as wrk2 does), for `SECS` seconds, from one thread.
//! A connection whose previous response is late sends the next request as soon as it can.
//! Two latencies are kept per request:
//! - `service`: from the request's write to its response's end (what the server path adds);
//! - `scheduled`: from the time the request was due (the queueing a slow response causes on
//!   its connection is in it: no coordinated omission). tokio's timer ticks once a
//!   millisecond, so this one also holds up to 1 ms of the client's own timer slack.
//!
//! Prints one JSON line: requests answered, failed, the rate achieved (until the last answer),
//! p50 / p90 / p99 / p99.9 / max of both latencies in milliseconds, and the client's own CPU
//! time (`cpu_us`, all its threads, from `/proc`; 0 where there is none). Exit 1 when a request
//! failed. `OPEN_LOOP_TRACE=FILE` also writes each answered request's send time and latency.
//!
//!   open_loop http://127.0.0.1:8080/api/users/1 20000 10 32

use std::time::{Duration, Instant};

use shadowtap_http1::client::{connect, Connection, RequestHead};
use shadowtap_http1::Header;

struct Args {
    host: String,
    port: u16,
    path: String,
    rate: f64,
    secs: f64,
    conns: usize,
}

fn args() -> Result<Args, String> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [url, rate, secs, conns] = a.as_slice() else {
        return Err("usage: open_loop URL RATE SECS CONNS".into());
    };
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| format!("{url}: give the port"))?;
    let num = |s: &str, what: &str| {
        s.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v > 0.0)
            .ok_or_else(|| format!("{what} {s:?}: a positive number"))
    };
    let conns = num(conns, "CONNS")? as usize;
    Ok(Args {
        host: host.to_owned(),
        port: port.parse().map_err(|_| format!("{url}: bad port"))?,
        path: path.to_owned(),
        rate: num(rate, "RATE")?,
        secs: num(secs, "SECS")?,
        conns: conns.max(1),
    })
}

/// Latencies (µs) of one connection, and its failures.
#[derive(Default)]
struct Tally {
    service: Vec<u32>,
    scheduled: Vec<u32>,
    /// When each answered request was written (µs after the start), for `OPEN_LOOP_TRACE`.
    sent_at: Vec<u32>,
    failed: u64,
    first_error: Option<String>,
    /// When its last request ended.
    last: Option<Instant>,
}

async fn connection(args: &Args, k: usize, start: Instant) -> Tally {
    let mut tally = Tally::default();
    let interval = Duration::from_secs_f64(args.conns as f64 / args.rate);
    // Staggered: connection k starts k/CONNS of an interval after the first.
    let mut due = start + interval.mul_f64(k as f64 / args.conns as f64);
    let end = start + Duration::from_secs_f64(args.secs);
    let host = format!("{}:{}", args.host, args.port);
    let headers = [Header::new("Host", host.as_str())];
    let head = RequestHead {
        method: "GET",
        target: &args.path,
        headers: &headers,
    };
    let mut conn: Option<Connection> = None;
    while due < end {
        tokio::time::sleep_until(due.into()).await;
        let mut c = match conn.take() {
            Some(c) => c,
            None => match connect(&args.host, args.port, Duration::from_secs(2)).await {
                Ok(s) => Connection::new(s, 1 << 20),
                Err(e) => {
                    tally.failed += 1;
                    tally.first_error.get_or_insert(e.message);
                    due += interval;
                    continue;
                }
            },
        };
        let sent = Instant::now();
        let mut first = None;
        match c.exchange(&head, &[], &mut first).await {
            Ok(answer) if answer.response.status < 500 => {
                let now = Instant::now();
                tally.service.push(micros(now - sent));
                tally
                    .sent_at
                    .push(micros(sent.saturating_duration_since(start)));
                tally
                    .scheduled
                    .push(micros(now.saturating_duration_since(due)));
                if answer.reusable {
                    conn = Some(c);
                }
            }
            Ok(answer) => {
                tally.failed += 1;
                tally
                    .first_error
                    .get_or_insert(format!("status {}", answer.response.status));
            }
            Err(e) => {
                tally.failed += 1;
                tally.first_error.get_or_insert(e.message);
            }
        }
        due += interval;
    }
    tally.last = Some(Instant::now());
    tally
}

fn micros(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

fn quantiles(mut v: Vec<u32>) -> String {
    v.sort_unstable();
    let q = |p: f64| {
        if v.is_empty() {
            return 0.0;
        }
        let i = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
        v[i] as f64 / 1000.0
    };
    format!(
        r#"{{"p50_ms":{:.3},"p90_ms":{:.3},"p99_ms":{:.3},"p999_ms":{:.3},"max_ms":{:.3}}}"#,
        q(0.5),
        q(0.9),
        q(0.99),
        q(0.999),
        q(1.0)
    )
}

fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("open_loop: {e}");
            std::process::exit(2);
        }
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime");
    let tallies = rt.block_on(async {
        let start = Instant::now() + Duration::from_millis(50);
        let local = tokio::task::LocalSet::new();
        let args = std::rc::Rc::new(args);
        let mut tasks = Vec::new();
        for k in 0..args.conns {
            let a = args.clone();
            tasks.push(local.spawn_local(async move { connection(&a, k, start).await }));
        }
        local
            .run_until(async move {
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await.expect("a connection task"));
                }
                (out, start)
            })
            .await
    });
    let (tallies, start) = tallies;
    // The rate achieved: over the time until the last answer, not the schedule's length (a
    // server that falls behind answers the same requests later).
    let secs = tallies
        .iter()
        .filter_map(|t| t.last)
        .max()
        .map_or(1.0, |l| {
            l.saturating_duration_since(start).as_secs_f64().max(1e-3)
        });
    let failed: u64 = tallies.iter().map(|t| t.failed).sum();
    let error = tallies.iter().find_map(|t| t.first_error.clone());
    let service: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.service.iter().copied())
        .collect();
    let scheduled: Vec<u32> = tallies
        .iter()
        .flat_map(|t| t.scheduled.iter().copied())
        .collect();
    let answered = service.len() as u64;
    // OPEN_LOOP_TRACE=FILE: one line per answered request, "sent_us service_us" (to see
    // whether slow responses come together in time: a stall, not a spread).
    if let Some(path) = std::env::var_os("OPEN_LOOP_TRACE") {
        let mut lines = String::new();
        for t in &tallies {
            for (at, us) in t.sent_at.iter().zip(&t.service) {
                lines.push_str(&format!("{at} {us}\n"));
            }
        }
        if let Err(e) = std::fs::write(&path, lines) {
            eprintln!("open_loop: {}: {e}", std::path::Path::new(&path).display());
        }
    }
    println!(
        r#"{{"answered":{answered},"failed":{failed},"rate":{:.0},"cpu_us":{},"service":{},"scheduled":{},"error":{}}}"#,
        answered as f64 / secs,
        own_cpu_us(),
        quantiles(service),
        quantiles(scheduled),
        error.map_or("null".into(), |e| format!("{e:?}"))
    );
    if failed > 0 {
        std::process::exit(1);
    }
}

/// This process's CPU time so far in microseconds: the sum of its threads' time on a CPU
/// (`/proc/self/task/*/schedstat`, nanoseconds); 0 without `/proc`.
fn own_cpu_us() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum::<u64>()
        / 1000
}

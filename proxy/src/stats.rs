//! Live statistics per pool (production, each shadow, the canary): requests, 5xx, transport
//! errors and latency quantiles over the last 10 s, 1 min and 5 min, from a ring of one-second
//! slots, each with a log-scale latency histogram (buckets 5% wide, 1 µs to ~17 min); and the
//! mirror counters (copies sent, dropped by reason). `GET /stats` renders them as JSON and
//! `GET /metrics` in the Prometheus text format.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

const SLOTS: usize = 300;
/// Histogram buckets: bucket k holds latencies in [1.05^k, 1.05^(k+1)) µs.
const BUCKETS: usize = 430;
/// Each latency bucket's bounds are this times the previous one's.
pub const GROWTH: f64 = 1.05;

fn bucket_of(us: u64) -> usize {
    if us <= 1 {
        return 0;
    }
    ((us as f64).ln() / GROWTH.ln()) as usize
}

fn bucket_value(k: usize) -> f64 {
    // The middle of the bucket, in µs.
    GROWTH.powf(k as f64 + 0.5)
}

#[derive(Clone)]
struct Slot {
    second: u64,
    requests: u64,
    status_5xx: u64,
    transport_errors: u64,
    latency: Vec<u32>,
}

impl Slot {
    fn empty(second: u64) -> Slot {
        Slot {
            second,
            requests: 0,
            status_5xx: 0,
            transport_errors: 0,
            latency: Vec::new(),
        }
    }
}

/// One pool's ring of seconds.
pub struct PoolStats {
    slots: Mutex<Vec<Slot>>,
    total: AtomicU64,
    client_faults: AtomicU64,
}

impl Default for PoolStats {
    fn default() -> Self {
        PoolStats {
            slots: Mutex::new(vec![Slot::empty(0); SLOTS]),
            total: AtomicU64::new(0),
            client_faults: AtomicU64::new(0),
        }
    }
}

/// What one request ended as.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// A response with this status, after this many µs.
    Status(u16, u64),
    /// No response: a transport error or timeout.
    TransportError,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A window's figures.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Window {
    /// Requests that ended in the window.
    pub requests: u64,
    /// Of them, answered 5xx.
    pub status_5xx: u64,
    /// Of them, without a response (refused, reset, timed out).
    pub transport_errors: u64,
    /// (5xx + transport errors) / requests; 0 without requests.
    pub error_rate: f64,
    /// Latency quantiles in ms (to the end of the response), when there were responses.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
}

impl Window {
    /// A window from its counts (requests, 5xx, transport errors) and latency histogram (the
    /// buckets of [`PoolStats::histogram`]).
    pub fn of(counts: [u64; 3], hist: &[u64]) -> Window {
        let [requests, status_5xx, transport_errors] = counts;
        let mut w = Window {
            requests,
            status_5xx,
            transport_errors,
            ..Window::default()
        };
        if w.requests > 0 {
            w.error_rate = (w.status_5xx + w.transport_errors) as f64 / w.requests as f64;
        }
        let n: u64 = hist.iter().sum();
        let quantile = |q: f64| -> Option<f64> {
            if n == 0 {
                return None;
            }
            let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
            let mut seen = 0;
            for (k, c) in hist.iter().enumerate() {
                seen += c;
                if seen >= rank {
                    return Some(bucket_value(k).round() / 1000.0);
                }
            }
            None
        };
        w.p50_ms = quantile(0.5);
        w.p90_ms = quantile(0.9);
        w.p99_ms = quantile(0.99);
        w
    }
}

impl PoolStats {
    /// Counts one request's end.
    pub fn record(&self, outcome: Outcome) {
        self.record_at(now_s(), outcome);
    }

    fn record_at(&self, second: u64, outcome: Outcome) {
        self.total.fetch_add(1, Ordering::Relaxed);
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let slot = &mut slots[(second % SLOTS as u64) as usize];
        if slot.second != second {
            *slot = Slot::empty(second);
        }
        slot.requests += 1;
        match outcome {
            Outcome::Status(s, us) => {
                if s >= 500 {
                    slot.status_5xx += 1;
                }
                if slot.latency.is_empty() {
                    slot.latency = vec![0; BUCKETS];
                }
                slot.latency[bucket_of(us).min(BUCKETS - 1)] += 1;
            }
            Outcome::TransportError => slot.transport_errors += 1,
        }
    }

    /// Counts a request that ended by the client's doing (it went away, or its body was
    /// malformed): not the pool's error, so not in any window (a client cannot make a version
    /// look failing by hanging up on it).
    pub fn client_fault(&self) {
        self.client_faults.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests ended by their client since the start.
    pub fn client_faults(&self) -> u64 {
        self.client_faults.load(Ordering::Relaxed)
    }

    /// Requests counted since the start.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The figures of the last `seconds` (the current second included).
    pub fn window(&self, seconds: u64) -> Window {
        self.window_at(now_s(), seconds)
    }

    fn window_at(&self, now: u64, seconds: u64) -> Window {
        let (counts, hist) = self.sum_at(now, seconds);
        Window::of(counts, &hist)
    }

    /// Requests, 5xx and transport errors of the seconds in `(now - seconds, now]`, and their
    /// latency histogram.
    fn sum_at(&self, now: u64, seconds: u64) -> ([u64; 3], Vec<u64>) {
        let slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        let mut counts = [0u64; 3];
        let mut hist = vec![0u64; BUCKETS];
        for s in slots.iter() {
            if s.second + seconds > now && s.second <= now {
                counts[0] += s.requests;
                counts[1] += s.status_5xx;
                counts[2] += s.transport_errors;
                for (h, c) in hist.iter_mut().zip(&s.latency) {
                    *h += u64::from(*c);
                }
            }
        }
        (counts, hist)
    }

    /// One whole second's figures (Unix second `second`): requests, errors (5xx and
    /// transport), the latency histogram; for publishing to other instances.
    pub fn second(&self, second: u64) -> (u64, u64, Vec<u64>) {
        let ([requests, s5xx, transport], hist) = self.sum_at(second, 1);
        (requests, s5xx + transport, hist)
    }

    /// The figures of the last `seconds` whole seconds, the current (partial) one left out:
    /// what a judge of fixed-length windows compares.
    pub fn complete_window(&self, seconds: u64) -> Window {
        self.window_at(now_s().saturating_sub(1), seconds)
    }

    /// The latency histogram of the last `seconds` whole seconds, the current one left out
    /// (bucket k: [1.05^k, 1.05^(k+1)) µs), for comparing two pools on the same buckets.
    pub fn histogram(&self, seconds: u64) -> Vec<u64> {
        self.sum_at(now_s().saturating_sub(1), seconds).1
    }

    /// The three windows.
    pub fn windows(&self) -> BTreeMap<&'static str, Window> {
        let now = now_s();
        [("10s", 10), ("1m", 60), ("5m", 300)]
            .into_iter()
            .map(|(k, s)| (k, self.window_at(now, s)))
            .collect()
    }
}

/// Why a mirrored copy was not sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DropReason {
    /// The shadow's queue was full (it is slow or down).
    QueueFull,
    /// The body was larger than `mirror.max_body`.
    BodyOverCap,
    /// Mirrored bodies being collected had reached `limits.mirror_memory`.
    Memory,
    /// The client's body never arrived whole (it went away, or production failed first).
    BodyIncomplete,
    /// The proxy is shutting down.
    Closed,
}

impl DropReason {
    /// Every reason, for rendering zeros too.
    pub const ALL: [DropReason; 5] = [
        DropReason::QueueFull,
        DropReason::BodyOverCap,
        DropReason::Memory,
        DropReason::BodyIncomplete,
        DropReason::Closed,
    ];

    /// The name in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::QueueFull => "queue_full",
            DropReason::BodyOverCap => "body_over_cap",
            DropReason::Memory => "memory",
            DropReason::BodyIncomplete => "body_incomplete",
            DropReason::Closed => "closed",
        }
    }
}

/// A shadow's mirror counters.
#[derive(Default)]
pub struct MirrorCounters {
    /// Copies chosen (share and criteria).
    pub chosen: AtomicU64,
    /// Copies handed to the shadow's sender.
    pub sent: AtomicU64,
    dropped: [AtomicU64; 5],
}

impl MirrorCounters {
    /// Counts a copy dropped.
    pub fn drop_copy(&self, why: DropReason) {
        let i = DropReason::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.dropped[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Copies dropped for `why`.
    pub fn dropped(&self, why: DropReason) -> u64 {
        let i = DropReason::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.dropped[i].load(Ordering::Relaxed)
    }

    /// The counters as JSON.
    pub fn json(&self) -> serde_json::Value {
        let dropped: serde_json::Map<String, serde_json::Value> = DropReason::ALL
            .iter()
            .map(|r| (r.as_str().to_owned(), self.dropped(*r).into()))
            .collect();
        serde_json::json!({
            "chosen": self.chosen.load(Ordering::Relaxed),
            "sent": self.sent.load(Ordering::Relaxed),
            "dropped": dropped,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_what_ended_in_them_and_quantiles_are_close() {
        let s = PoolStats::default();
        let now = 1_000_000;
        for i in 0..1000u64 {
            s.record_at(now, Outcome::Status(200, 1000 + i)); // 1.0 to 2.0 ms
        }
        s.record_at(now - 30, Outcome::Status(503, 50_000));
        s.record_at(now - 30, Outcome::TransportError);
        s.record_at(now - 400, Outcome::TransportError); // outside every window
        let w10 = s.window_at(now, 10);
        assert_eq!(
            (w10.requests, w10.status_5xx, w10.transport_errors),
            (1000, 0, 0)
        );
        let p50 = w10.p50_ms.unwrap();
        assert!((1.45..=1.55).contains(&p50), "{p50}");
        let p99 = w10.p99_ms.unwrap();
        assert!((1.9..=2.1).contains(&p99), "{p99}");
        let w1m = s.window_at(now, 60);
        assert_eq!(
            (w1m.requests, w1m.status_5xx, w1m.transport_errors),
            (1002, 1, 1)
        );
        assert!((w1m.error_rate - 2.0 / 1002.0).abs() < 1e-12);
        assert_eq!(s.window_at(now, 300).requests, 1002);
        assert_eq!(s.window_at(now + 1000, 300), Window::default());
    }
}

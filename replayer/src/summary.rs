//! What a replay did: per-target counts and response times, the human-readable block and
//! `replay-<run>.summary.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::ReplayError;

/// Per-target counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetSummary {
    /// Base URL.
    pub url: String,
    /// Rows written for this target.
    pub rows: u64,
    /// Requests sent.
    pub sent: u64,
    /// Responses received, by status class (`2xx`, `5xx`, …).
    pub responses: BTreeMap<String, u64>,
    /// Rows without a response, by error kind.
    pub errors: BTreeMap<String, u64>,
    /// Median total time of the responses, ms.
    pub p50_ms: Option<f64>,
    /// 99th percentile total time of the responses, ms.
    pub p99_ms: Option<f64>,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplaySummary {
    /// The run.
    pub run_id: String,
    /// `replays` schema version written.
    pub schema_version: u32,
    /// The recording.
    pub recording: PathBuf,
    /// Exchanges in the recording.
    pub recording_rows: u64,
    /// Exchanges read (over all passes).
    pub exchanges_read: u64,
    /// Not matching the criteria.
    pub not_matched: u64,
    /// Left out by sampling.
    pub sampled_out: u64,
    /// Skipped because their method is not allowed, by method.
    pub refused_methods: BTreeMap<String, u64>,
    /// Selected: each yields one row per target.
    pub selected: u64,
    /// Selected but not replayable (incomplete in the capture).
    pub unreplayable: u64,
    /// Dropped on purpose by a rule, script or middleware.
    pub dropped_by_hooks: u64,
    /// Failed in a hook.
    pub hook_errors: u64,
    /// Selected exchanges still queued when a signal or `--duration` stopped sending: not
    /// sent, no row (they are not in `selected`).
    pub queued_at_stop: u64,
    /// Recorded exchanges met out of request order (sent at once).
    pub out_of_order: u64,
    /// Largest delay behind the schedule when a request was sent, ms.
    pub max_schedule_lag_ms: f64,
    /// Passes started.
    pub passes: u32,
    /// Why sending stopped: `end`, `duration` or `signal`.
    pub stopped_by: String,
    /// Per target.
    pub targets: BTreeMap<String, TargetSummary>,
    /// Rows written.
    pub rows_written: u64,
    /// Files written.
    pub files: Vec<PathBuf>,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
}

impl ReplaySummary {
    /// A human-readable block for stderr.
    pub fn render(&self) -> String {
        let mut s = String::new();
        s.push_str(&format!(
            "read         {} exchanges ({} in the recording, {} pass(es)); stopped by {}\n",
            self.exchanges_read, self.recording_rows, self.passes, self.stopped_by
        ));
        let refused: u64 = self.refused_methods.values().sum();
        s.push_str(&format!(
            "selected     {} ({} not matched, {} sampled out, {} refused methods{})\n",
            self.selected,
            self.not_matched,
            self.sampled_out,
            refused,
            if refused > 0 {
                format!(
                    ": {}; allow them with --allow-methods",
                    self.refused_methods
                        .iter()
                        .map(|(m, n)| format!("{m} {n}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            }
        ));
        s.push_str(&format!(
            "not sent     {} unreplayable, {} dropped by hooks, {} hook errors\n",
            self.unreplayable, self.dropped_by_hooks, self.hook_errors
        ));
        for (name, t) in &self.targets {
            let fmt = |m: &BTreeMap<String, u64>| {
                if m.is_empty() {
                    "none".to_owned()
                } else {
                    m.iter()
                        .map(|(k, v)| format!("{k} {v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            s.push_str(&format!(
                "target       {name} {}: {} sent; responses {}; errors {}; p50 {} ms, p99 {} ms\n",
                t.url,
                t.sent,
                fmt(&t.responses),
                fmt(&t.errors),
                t.p50_ms.map_or("-".into(), |v| format!("{v:.1}")),
                t.p99_ms.map_or("-".into(), |v| format!("{v:.1}")),
            ));
        }
        if self.max_schedule_lag_ms > 1000.0 {
            s.push_str(&format!(
                "warning      sending fell up to {:.0} ms behind the schedule (raise --concurrency, or the targets are slow)\n",
                self.max_schedule_lag_ms
            ));
        }
        s.push_str(&format!("wrote        {} rows\n", self.rows_written));
        for f in &self.files {
            s.push_str(&format!("wrote        {}\n", f.display()));
        }
        s
    }
}

/// Adds one to `key`'s count, allocating the key only the first time it is seen.
pub(crate) fn count(counts: &mut BTreeMap<String, u64>, key: &str) {
    match counts.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            counts.insert(key.to_owned(), 1);
        }
    }
}

/// `2xx` for 200–299, and so on.
pub(crate) fn status_class(status: u16) -> &'static str {
    const CLASSES: [&str; 10] = [
        "0xx", "1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "7xx", "8xx", "9xx",
    ];
    CLASSES[usize::from(status / 100).min(9)]
}

/// Response times of one target, for the summary's p50 and p99, in constant memory whatever
/// the length of the run (a replay with `--loop` may send billions of requests): exact below
/// 1,024 µs, above that in buckets 1/64 of a power of two wide (within 1.6%).
#[derive(Default)]
pub(crate) struct LatencyHistogram {
    pub(crate) counts: Vec<u64>,
    pub(crate) total: u64,
}

impl LatencyHistogram {
    /// Values below this are counted exactly.
    const EXACT: u64 = 1024;
    /// Buckets per power of two above `EXACT`.
    const SUB: u64 = 64;

    pub(crate) fn bucket(us: u64) -> usize {
        if us < Self::EXACT {
            return us as usize;
        }
        let octave = u64::from(63 - us.leading_zeros()); // >= 10
        let sub = (us >> (octave - 6)) - Self::SUB; // the 6 bits below the top one
        (Self::EXACT + (octave - 10) * Self::SUB + sub) as usize
    }

    /// The smallest value in bucket `i`.
    pub(crate) fn lower_bound(i: usize) -> u64 {
        let i = i as u64;
        if i < Self::EXACT {
            return i;
        }
        let (octave, sub) = (
            10 + (i - Self::EXACT) / Self::SUB,
            (i - Self::EXACT) % Self::SUB,
        );
        (Self::SUB + sub) << (octave - 6)
    }

    pub(crate) fn record(&mut self, us: i64) {
        let i = Self::bucket(us.max(0) as u64);
        if self.counts.len() <= i {
            self.counts.resize(i + 1, 0);
        }
        self.counts[i] += 1;
        self.total += 1;
    }

    /// The value at rank `round((n - 1) * q)` of the sorted values (the bucket's lower bound
    /// above 1,024 µs); `None` without values.
    pub(crate) fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((self.total - 1) as f64 * q.clamp(0.0, 1.0)).round() as u64;
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen > rank {
                return Some(Self::lower_bound(i));
            }
        }
        None
    }
}

pub(crate) fn write_summary(dir: &Path, summary: &ReplaySummary) -> Result<(), ReplayError> {
    let path = dir.join(format!("replay-{}.summary.json", summary.run_id));
    let tmp = dir.join(format!(
        ".replay-{}.summary.json.inprogress",
        summary.run_id
    ));
    let text = serde_json::to_string_pretty(summary).map_err(|e| ReplayError::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|source| ReplayError::Io { path, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_quantiles_are_exact_below_a_millisecond_and_within_two_percent_above() {
        let mut h = LatencyHistogram::default();
        assert_eq!(h.quantile(0.5), None);
        let mut values: Vec<i64> = (0..5_000).map(|i| (i * 7919) % 1_000).collect();
        values.extend((0..5_000).map(|i| 1_000 + (i * 104_729) % 50_000_000));
        for &v in &values {
            h.record(v);
        }
        values.sort_unstable();
        for q in [0.0, 0.1, 0.25, 0.49, 0.5, 0.9, 0.99, 1.0] {
            let exact = values[((values.len() - 1) as f64 * q).round() as usize] as u64;
            let got = h.quantile(q).unwrap();
            if exact < 1024 {
                assert_eq!(got, exact, "q={q}");
            } else {
                assert!(
                    got <= exact && exact - got <= exact / 64,
                    "q={q}: {got} vs {exact}"
                );
            }
        }
        // Bounded: 50 s of latency needs well under a thousand buckets beyond the exact ones.
        assert!(h.counts.len() < 1024 + 64 * 27, "{}", h.counts.len());
        for us in [1024u64, 1025, 2047, 2048, 3000, 1 << 40, u64::MAX >> 1] {
            let i = LatencyHistogram::bucket(us);
            assert!(LatencyHistogram::lower_bound(i) <= us, "{us}");
            assert!(LatencyHistogram::lower_bound(i + 1) > us, "{us}");
        }
        assert_eq!(status_class(204), "2xx");
        assert_eq!(status_class(999), "9xx");
    }
}

//! Pacing: when each request is due.
//!
//! Every due time is computed from one fixed start instant, never from the previous send, so
//! a long replay does not drift (a late send does not push every later one back; the next
//! ones catch up). `--max-wait` removes the excess of long idle gaps from the schedule.

use std::str::FromStr;
use std::time::Duration;

use tokio::time::Instant;

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pacing {
    /// The recording's own timing, scaled: 2.0 is twice as fast.
    Speed {
        /// Speed factor.
        factor: f64,
        /// Idle gaps (after scaling) longer than this are cut to this.
        max_wait: Option<Duration>,
    },
    /// A fixed number of requests per second, spread evenly.
    Rate(f64),
    /// As fast as the targets and `--concurrency` allow.
    Max,
}

impl Default for Pacing {
    fn default() -> Self {
        Pacing::Speed {
            factor: 1.0,
            max_wait: None,
        }
    }
}

/// Parses `--speed` values: `1x`, `2`, `0.5x`.
pub fn parse_speed(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let t = t.strip_suffix(['x', 'X']).unwrap_or(t);
    let v = f64::from_str(t).map_err(|_| format!("{s:?} is not a speed (try 1x, 2x or 0.5x)"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("{s:?} must be above zero"));
    }
    Ok(v)
}

/// Parses `--rate` values: `200`, `200/s`, `max`.
pub fn parse_rate(s: &str) -> Result<Pacing, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("max") {
        return Ok(Pacing::Max);
    }
    let n = t.strip_suffix("/s").unwrap_or(t);
    let v = f64::from_str(n).map_err(|_| format!("{s:?} is not a rate (try 200/s or max)"))?;
    if !(v > 0.0 && v.is_finite()) {
        return Err(format!("{s:?} must be above zero"));
    }
    Ok(Pacing::Rate(v))
}

/// Computes due times for a stream of recorded request times.
#[derive(Debug)]
pub struct Pacer {
    pacing: Pacing,
    start: Instant,
    first_us: Option<i64>,
    prev_us: i64,
    /// Seconds cut from the schedule by `max_wait` so far.
    cut_s: f64,
    count: u64,
    last_due: Instant,
}

impl Pacer {
    /// A pacer whose schedule starts at `start`.
    pub fn new(pacing: Pacing, start: Instant) -> Self {
        Pacer {
            pacing,
            start,
            first_us: None,
            prev_us: 0,
            cut_s: 0.0,
            count: 0,
            last_due: start,
        }
    }

    /// Starts a new pass over the recording, right after the last request of the previous one.
    pub fn new_pass(&mut self) {
        if let Pacing::Speed { .. } = self.pacing {
            self.start = self.last_due;
            self.first_us = None;
            self.cut_s = 0.0;
        }
    }

    /// When the request recorded at `recorded_us` is due; `None` means at once.
    pub fn due(&mut self, recorded_us: i64) -> Option<Instant> {
        let due = match self.pacing {
            Pacing::Max => return None,
            Pacing::Rate(r) => self.start + Duration::from_secs_f64(self.count as f64 / r),
            Pacing::Speed { factor, max_wait } => {
                let first = match self.first_us {
                    Some(first) => {
                        let gap = (recorded_us - self.prev_us) as f64 / 1e6 / factor;
                        if let Some(w) = max_wait {
                            if gap > w.as_secs_f64() {
                                self.cut_s += gap - w.as_secs_f64();
                            }
                        }
                        first
                    }
                    None => {
                        self.first_us = Some(recorded_us);
                        self.prev_us = recorded_us;
                        recorded_us
                    }
                };
                self.prev_us = self.prev_us.max(recorded_us);
                let offset = ((recorded_us - first) as f64 / 1e6 / factor - self.cut_s).max(0.0);
                self.start + Duration::from_secs_f64(offset)
            }
        };
        self.count += 1;
        self.last_due = self.last_due.max(due);
        Some(due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offsets(p: Pacing, recorded_s: &[f64]) -> Vec<f64> {
        let start = Instant::now();
        let mut pacer = Pacer::new(p, start);
        recorded_s
            .iter()
            .map(|&s| {
                pacer
                    .due((1_700_000_000.0e6 + s * 1e6) as i64)
                    .map_or(0.0, |d| (d - start).as_secs_f64())
            })
            .collect()
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-6)
    }

    #[test]
    fn speed_scales_from_a_fixed_start() {
        let rec = [0.0, 1.0, 1.5, 4.0];
        assert!(close(
            &offsets(
                Pacing::Speed {
                    factor: 1.0,
                    max_wait: None
                },
                &rec
            ),
            &[0.0, 1.0, 1.5, 4.0]
        ));
        assert!(close(
            &offsets(
                Pacing::Speed {
                    factor: 2.0,
                    max_wait: None
                },
                &rec
            ),
            &[0.0, 0.5, 0.75, 2.0]
        ));
        assert!(close(
            &offsets(
                Pacing::Speed {
                    factor: 0.5,
                    max_wait: None
                },
                &rec
            ),
            &[0.0, 2.0, 3.0, 8.0]
        ));
    }

    #[test]
    fn max_wait_cuts_idle_gaps_only() {
        let rec = [0.0, 1.0, 61.0, 61.5];
        let got = offsets(
            Pacing::Speed {
                factor: 1.0,
                max_wait: Some(Duration::from_secs(2)),
            },
            &rec,
        );
        assert!(close(&got, &[0.0, 1.0, 3.0, 3.5]), "{got:?}");
    }

    #[test]
    fn a_long_schedule_does_not_drift() {
        // 100 000 requests 10 ms apart: the last is due exactly 999.99 s after the start.
        let rec: Vec<f64> = (0..100_000).map(|i| i as f64 * 0.01).collect();
        let got = offsets(
            Pacing::Speed {
                factor: 1.0,
                max_wait: None,
            },
            &rec,
        );
        assert!((got[99_999] - 999.99).abs() < 1e-3, "{}", got[99_999]);
    }

    #[test]
    fn fixed_rate_and_max() {
        assert!(close(
            &offsets(Pacing::Rate(4.0), &[9.0, 0.0, 5.0]),
            &[0.0, 0.25, 0.5]
        ));
        assert!(close(&offsets(Pacing::Max, &[0.0, 9.0]), &[0.0, 0.0]));
        assert_eq!(parse_rate("200/s"), Ok(Pacing::Rate(200.0)));
        assert_eq!(parse_rate("MAX"), Ok(Pacing::Max));
        assert!(parse_rate("fast").is_err() && parse_rate("0").is_err());
        assert_eq!(parse_speed("0.5x"), Ok(0.5));
        assert!(parse_speed("-1").is_err());
    }
}

//! Mirrored pairs, live: for each request copied to a shadow, production's outcome and the
//! shadow's, joined by exchange id whichever ends first. The control plane's monitor compares
//! them pair by pair (the same request answered by both), which is what makes the shadow
//! phase's comparison paired. Bounded: at most `OPEN` halves wait for their other half (the
//! oldest are forgotten first, counted) and the last `KEPT` pairs, within five minutes, are kept.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::stats::Outcome;

const OPEN: usize = 50_000;
const KEPT: usize = 200_000;
const KEEP_S: u64 = 300;

/// One mirrored request: production's outcome and the shadow's.
#[derive(Debug, Clone, Copy)]
pub struct Pair {
    /// When it was completed (Unix seconds).
    pub second: u64,
    /// Production's answer.
    pub production: Outcome,
    /// The shadow's.
    pub shadow: Outcome,
}

#[derive(Default)]
struct Book {
    production: HashMap<String, Outcome>,
    shadow: HashMap<String, Outcome>,
    /// Arrival order of open halves (for forgetting the oldest).
    order: VecDeque<(bool, String)>,
    pairs: VecDeque<Pair>,
    forgotten: u64,
}

/// The pairs of one shadow pool.
#[derive(Default)]
pub struct Pairs {
    book: Mutex<Book>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Pairs {
    fn half(&self, id: &str, outcome: Outcome, is_production: bool) {
        let mut b = self.book.lock().unwrap_or_else(|p| p.into_inner());
        let other = if is_production {
            b.shadow.remove(id)
        } else {
            b.production.remove(id)
        };
        match other {
            Some(o) => {
                let (production, shadow) = if is_production {
                    (outcome, o)
                } else {
                    (o, outcome)
                };
                let second = now_s();
                b.pairs.push_back(Pair {
                    second,
                    production,
                    shadow,
                });
                while b.pairs.len() > KEPT
                    || b.pairs.front().is_some_and(|p| p.second + KEEP_S < second)
                {
                    b.pairs.pop_front();
                }
            }
            None => {
                if is_production {
                    b.production.insert(id.to_owned(), outcome);
                } else {
                    b.shadow.insert(id.to_owned(), outcome);
                }
                b.order.push_back((is_production, id.to_owned()));
                while b.production.len() + b.shadow.len() > OPEN {
                    let Some((side, old)) = b.order.pop_front() else {
                        break;
                    };
                    let gone = if side {
                        b.production.remove(&old)
                    } else {
                        b.shadow.remove(&old)
                    };
                    b.forgotten += u64::from(gone.is_some());
                }
                // Entries already paired leave stale keys in `order`: trim them.
                if b.order.len() > 2 * OPEN {
                    let Book {
                        order,
                        production,
                        shadow,
                        ..
                    } = &mut *b;
                    order.retain(|(side, k)| {
                        if *side {
                            production.contains_key(k)
                        } else {
                            shadow.contains_key(k)
                        }
                    });
                }
            }
        }
    }

    /// Production answered the mirrored request `id`.
    pub fn production(&self, id: &str, outcome: Outcome) {
        self.half(id, outcome, true);
    }

    /// The shadow answered its copy of `id`.
    pub fn shadow(&self, id: &str, outcome: Outcome) {
        self.half(id, outcome, false);
    }

    /// The pairs completed in the last `seconds` (the current second included).
    pub fn window(&self, seconds: u64) -> Vec<Pair> {
        self.window_at(now_s(), seconds)
    }

    /// The pairs completed in the last `seconds` whole seconds, the current one left out.
    pub fn complete_window(&self, seconds: u64) -> Vec<Pair> {
        self.window_at(now_s().saturating_sub(1), seconds)
    }

    /// The pairs completed during the Unix second `second`.
    pub fn second(&self, second: u64) -> Vec<Pair> {
        self.window_at(second, 1)
    }

    fn window_at(&self, now: u64, seconds: u64) -> Vec<Pair> {
        let b = self.book.lock().unwrap_or_else(|p| p.into_inner());
        b.pairs
            .iter()
            .filter(|p| p.second + seconds > now && p.second <= now)
            .copied()
            .collect()
    }

    /// Halves forgotten before their other half came.
    pub fn forgotten(&self) -> u64 {
        self.book
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .forgotten
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn halves_join_in_either_order_and_the_open_ones_are_bounded() {
        let p = Pairs::default();
        p.production("a", Outcome::Status(200, 1000));
        p.shadow("b", Outcome::Status(500, 2000));
        assert!(p.window(10).is_empty());
        p.shadow("a", Outcome::TransportError);
        p.production("b", Outcome::Status(200, 900));
        let w = p.window(10);
        assert_eq!(w.len(), 2);
        assert!(matches!(w[0].shadow, Outcome::TransportError));
        assert!(matches!(w[1].shadow, Outcome::Status(500, 2000)));
        for k in 0..(OPEN + 10) {
            p.production(&k.to_string(), Outcome::Status(200, 1));
        }
        assert_eq!(p.forgotten(), 10);
    }
}

//! Mirrored pairs, live: for each request copied to a shadow, production's outcome and the
//! shadow's, joined by exchange id whichever ends first. The control plane's monitor compares
//! them pair by pair (the same request answered by both), which is what makes the shadow
//! phase's comparison paired. Bounded: at most `OPEN` halves wait for their other half (the
//! oldest are forgotten first, counted) and the last `KEPT` pairs, within five minutes, are kept.
//!
//! With bodies on (`mirror.pair_bodies`), each side's answer (status, content type and coding,
//! the body's first [`BODY_CAP`] bytes) is joined the same way, for the control plane's body
//! comparison of the shadow phase: bounded by bytes ([`BODY_BYTES`] for halves waiting and pairs
//! kept together, the oldest forgotten first) as well as by count and age.

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

/// Bytes of each body kept for the comparison (the rest is cut, flagged).
pub const BODY_CAP: usize = 64 << 10;
/// Bytes of bodies held at once, waiting halves and kept pairs together.
pub const BODY_BYTES: usize = 64 << 20;

/// One side's answer to a mirrored request, for the body comparison.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// Status; none on a transport error.
    pub status: Option<u16>,
    /// `Content-Type`.
    pub content_type: Option<String>,
    /// `Content-Encoding` (the body is as received).
    pub content_encoding: Option<String>,
    /// The body's first [`BODY_CAP`] bytes.
    pub body: Vec<u8>,
    /// The body was longer.
    pub truncated: bool,
}

impl Answer {
    fn bytes(&self) -> usize {
        self.body.len() + 64
    }
}

/// One mirrored request with both answers.
#[derive(Debug, Clone, PartialEq)]
pub struct BodyPair {
    /// When it was completed (Unix seconds).
    pub second: u64,
    /// The request's method.
    pub method: String,
    /// Its path (no query).
    pub path: String,
    /// Its target as sent (path and query).
    pub uri: String,
    /// Production's answer.
    pub production: Answer,
    /// The shadow's.
    pub shadow: Answer,
}

/// The request a production half answered.
#[derive(Debug, Clone)]
struct Asked {
    method: String,
    path: String,
    uri: String,
}

#[derive(Default)]
struct BodyBook {
    production: HashMap<String, (Asked, Answer)>,
    shadow: HashMap<String, Answer>,
    order: VecDeque<(bool, String)>,
    pairs: VecDeque<BodyPair>,
    bytes: usize,
    forgotten: u64,
}

impl BodyBook {
    fn trim(&mut self, second: u64) {
        while self.bytes > BODY_BYTES || self.production.len() + self.shadow.len() > OPEN {
            // Waiting halves go first (oldest), then the oldest pairs.
            if let Some((side, id)) = self.order.pop_front() {
                let gone = if side {
                    self.production.remove(&id).map(|(_, a)| a.bytes())
                } else {
                    self.shadow.remove(&id).map(|a| a.bytes())
                };
                if let Some(n) = gone {
                    self.bytes -= n;
                    self.forgotten += 1;
                }
            } else if let Some(p) = self.pairs.pop_front() {
                self.bytes -= p.production.bytes() + p.shadow.bytes();
            } else {
                break;
            }
        }
        while self.pairs.len() > KEPT
            || self
                .pairs
                .front()
                .is_some_and(|p| p.second + KEEP_S < second)
        {
            let p = self.pairs.pop_front().expect("checked");
            self.bytes -= p.production.bytes() + p.shadow.bytes();
        }
        if self.order.len() > 2 * OPEN {
            let BodyBook {
                order,
                production,
                shadow,
                ..
            } = self;
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
    /// With bodies: their book.
    bodies: Option<Mutex<BodyBook>>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Pairs {
    /// Pairs of outcomes, and of answers' bodies when `bodies`.
    pub fn new(bodies: bool) -> Pairs {
        Pairs {
            book: Mutex::default(),
            bodies: bodies.then(Mutex::default),
        }
    }

    /// Whether answers' bodies are joined too.
    pub fn wants_bodies(&self) -> bool {
        self.bodies.is_some()
    }

    /// Production's answer to the mirrored request `id` (`method`, `path`, `uri`).
    pub fn production_answer(&self, id: &str, method: &str, path: &str, uri: &str, a: Answer) {
        let asked = Asked {
            method: method.to_owned(),
            path: path.to_owned(),
            uri: uri.to_owned(),
        };
        self.answer(id, Some(asked), a);
    }

    /// The shadow's answer to its copy of `id`.
    pub fn shadow_answer(&self, id: &str, a: Answer) {
        self.answer(id, None, a);
    }

    fn answer(&self, id: &str, asked: Option<Asked>, a: Answer) {
        let Some(book) = &self.bodies else {
            return;
        };
        let mut b = book.lock().unwrap_or_else(|p| p.into_inner());
        let second = now_s();
        let joined = match &asked {
            Some(_) => b.shadow.remove(id).map(|s| (None, s)),
            None => b
                .production
                .remove(id)
                .map(|(q, p)| (Some((q, p)), a.clone())),
        };
        match (joined, asked) {
            (Some((None, shadow)), Some(q)) => {
                b.bytes += a.bytes();
                b.pairs.push_back(BodyPair {
                    second,
                    method: q.method,
                    path: q.path,
                    uri: q.uri,
                    production: a,
                    shadow,
                });
            }
            (Some((Some((q, production)), shadow)), None) => {
                b.bytes += shadow.bytes();
                b.pairs.push_back(BodyPair {
                    second,
                    method: q.method,
                    path: q.path,
                    uri: q.uri,
                    production,
                    shadow,
                });
            }
            (None, Some(q)) => {
                b.bytes += a.bytes();
                b.production.insert(id.to_owned(), (q, a));
                b.order.push_back((true, id.to_owned()));
            }
            (None, None) => {
                b.bytes += a.bytes();
                b.shadow.insert(id.to_owned(), a);
                b.order.push_back((false, id.to_owned()));
            }
            _ => unreachable!("a production half joins a shadow half and back"),
        }
        b.trim(second);
    }

    /// The answer pairs completed in the last `seconds` whole seconds, the current one left
    /// out (none without bodies).
    pub fn complete_body_window(&self, seconds: u64) -> Vec<BodyPair> {
        let Some(book) = &self.bodies else {
            return Vec::new();
        };
        let now = now_s().saturating_sub(1);
        let b = book.lock().unwrap_or_else(|p| p.into_inner());
        b.pairs
            .iter()
            .filter(|p| p.second + seconds > now && p.second <= now)
            .cloned()
            .collect()
    }

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

    fn answer(status: u16, body: &[u8]) -> Answer {
        Answer {
            status: Some(status),
            content_type: Some("application/json".into()),
            body: body.to_vec(),
            ..Answer::default()
        }
    }

    #[test]
    fn answers_join_in_either_order_and_bytes_stay_bounded() {
        let p = Pairs::new(true);
        p.production_answer("a", "GET", "/x", "/x?q=1", answer(200, b"{}"));
        p.shadow_answer("b", answer(200, b"[1]"));
        p.shadow_answer("a", answer(500, b"{\"e\":1}"));
        p.production_answer("b", "POST", "/y", "/y", answer(201, b"[2]"));
        let b = p.bodies.as_ref().unwrap().lock().unwrap();
        assert_eq!(b.pairs.len(), 2);
        assert_eq!(
            (b.pairs[0].uri.as_str(), b.pairs[0].shadow.status),
            ("/x?q=1", Some(500))
        );
        assert_eq!(
            (
                b.pairs[1].method.as_str(),
                b.pairs[1].production.body.as_slice()
            ),
            ("POST", &b"[2]"[..])
        );
        drop(b);
        // Far more than the byte budget: the oldest go, the total stays under it.
        let big = vec![b'x'; BODY_CAP];
        for k in 0..(2 * BODY_BYTES / BODY_CAP) {
            let id = k.to_string();
            p.production_answer(&id, "GET", "/big", "/big", answer(200, &big));
            p.shadow_answer(&id, answer(200, &big));
        }
        let b = p.bodies.as_ref().unwrap().lock().unwrap();
        assert!(b.bytes <= BODY_BYTES, "{}", b.bytes);
        let counted: usize = b
            .pairs
            .iter()
            .map(|p| p.production.bytes() + p.shadow.bytes())
            .sum();
        assert_eq!(counted, b.bytes, "the byte count is exact");
        // Without bodies nothing is kept.
        let none = Pairs::new(false);
        none.shadow_answer("a", answer(200, b"{}"));
        assert!(none.complete_body_window(10).is_empty());
    }

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

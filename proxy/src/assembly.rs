//! One proxied request put together from its parts as they end, in whatever order: the head
//! (when it arrives), the request body (its tee ends: the mirror copies leave then), the
//! response head, the response body (its tee ends) or a failure. When the request body and the
//! response are both done, the request is counted in its pool's statistics and, when
//! recording, handed to the recorder as an `exchanges` row and a `replays` row. Every path ends
//! here exactly once: a tee dropped early reports itself incomplete, and a request abandoned
//! before its response head (the client went away) is finished as such.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use shadowtap_core::replays::{ErrorKind, ReplayRecord};
use shadowtap_core::{Body, Exchange, Header};

use crate::mirror::Shadow;
use crate::record::{Record, Recorder};
use crate::stats::{DropReason, Outcome, PoolStats};
use crate::tee::Kept;

/// Where a finished request goes.
pub struct Sinks {
    /// The run id of every row.
    pub run_id: Arc<str>,
    /// The recording, when on.
    pub recorder: Option<Arc<Recorder>>,
    /// Bodies over this are not mirrored.
    pub mirror_max_body: u64,
    /// Bodies are kept up to this in the recording.
    pub record_max_body: u64,
}

/// The response part.
enum Response {
    /// The head arrived; the body is being streamed (`None`) or done.
    Answered {
        status: u16,
        version: &'static str,
        headers: Vec<Header>,
        ttfb_us: i64,
        body: Option<Kept>,
    },
    /// No response.
    Failed { kind: ErrorKind, message: String },
}

struct Parts {
    head: Exchange,
    mirrors: Vec<Arc<Shadow>>,
    /// The shadows a copy was offered to (their pairs get production's outcome).
    offered: Vec<Arc<Shadow>>,
    request: Option<Kept>,
    response: Option<Response>,
    done: bool,
    /// The request ended by the client's doing: not counted against the pool.
    client_fault: bool,
}

/// See the module docs.
pub struct Assembly {
    sinks: Arc<Sinks>,
    stats: Arc<PoolStats>,
    pool: Arc<str>,
    /// The member's URL and the request as sent upstream (for the `replays` row).
    upstream: Mutex<(String, String, Vec<Header>)>,
    started: Instant,
    parts: Mutex<Parts>,
}

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// A header map as the record's list (names lowercase, values lossy UTF-8).
pub(crate) fn headers_of(map: &http::HeaderMap) -> Vec<Header> {
    map.iter()
        .map(|(n, v)| Header {
            name: n.as_str().into(),
            value: String::from_utf8_lossy(v.as_bytes()).as_ref().into(),
        })
        .collect()
}

fn trailers_of(kept: Option<&Kept>) -> Vec<Header> {
    kept.and_then(|k| k.trailers.as_ref())
        .map(headers_of)
        .unwrap_or_default()
}

fn body_of(kept: Option<&Kept>, cap: u64) -> Body {
    let Some(k) = kept else {
        return Body::default();
    };
    let mut raw = k.bytes();
    let truncated = k.over_cap || raw.len() as u64 > cap || (raw.len() as u64) < k.len;
    raw.truncate(cap as usize);
    Body {
        raw,
        len: k.len,
        truncated,
        ..Body::default()
    }
}

/// Production's answer for the body comparison of mirrored pairs.
fn answer_of(response: Option<&Response>) -> crate::pairs::Answer {
    let Some(Response::Answered {
        status,
        headers,
        body,
        ..
    }) = response
    else {
        return crate::pairs::Answer::default();
    };
    let header = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.to_string())
    };
    let cap = crate::pairs::BODY_CAP;
    let (bytes, len, over) = body
        .as_ref()
        .map_or((Vec::new(), 0, false), |k| (k.bytes(), k.len, k.over_cap));
    crate::pairs::Answer {
        status: Some(*status),
        content_type: header("content-type"),
        content_encoding: header("content-encoding"),
        truncated: over || bytes.len() > cap || (bytes.len() as u64) < len,
        body: bytes[..bytes.len().min(cap)].to_vec(),
    }
}

impl Assembly {
    /// Whether a shadow this request is copied to joins bodies: the response's first bytes
    /// are then kept for the comparison.
    pub fn wants_bodies(&self) -> bool {
        // Before the request body ended the shadows are `mirrors`; after, `offered`.
        let p = self.parts();
        p.mirrors
            .iter()
            .chain(&p.offered)
            .any(|s| s.pairs.as_ref().is_some_and(|p| p.wants_bodies()))
    }

    /// A request whose head is `head`, answered by `pool` and copied to `mirrors`.
    pub fn new(
        sinks: Arc<Sinks>,
        stats: Arc<PoolStats>,
        pool: Arc<str>,
        head: Exchange,
        mirrors: Vec<Arc<Shadow>>,
    ) -> Arc<Assembly> {
        Arc::new(Assembly {
            sinks,
            stats,
            pool,
            upstream: Mutex::new(Default::default()),
            started: Instant::now(),
            parts: Mutex::new(Parts {
                head,
                mirrors,
                offered: Vec::new(),
                request: None,
                response: None,
                done: false,
                client_fault: false,
            }),
        })
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, Parts> {
        self.parts.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn elapsed_us(&self) -> i64 {
        self.started.elapsed().as_micros() as i64
    }

    /// The request as sent upstream.
    pub fn sent(&self, member: &str, url: String, headers: Vec<Header>) {
        *self.upstream.lock().unwrap_or_else(|p| p.into_inner()) =
            (member.to_owned(), url, headers);
    }

    /// The request body ended (or was dropped): the copies leave now.
    pub fn request_done(&self, kept: Kept) {
        let mut p = self.parts();
        p.head.request_end_us = Some(now_us());
        let mirrors = std::mem::take(&mut p.mirrors);
        if !mirrors.is_empty() {
            let reason = if !kept.complete {
                Some(DropReason::BodyIncomplete)
            } else if kept.over_budget {
                Some(DropReason::Memory)
            } else if kept.over_cap || kept.len > self.sinks.mirror_max_body {
                Some(DropReason::BodyOverCap)
            } else {
                None
            };
            let shadows = mirrors;
            match reason {
                Some(why) => shadows.iter().for_each(|s| s.counters.drop_copy(why)),
                None => {
                    // One copy of the body; each shadow but the last gets a clone of it.
                    let mut ex = p.head.clone();
                    ex.request_trailers = trailers_of(Some(&kept));
                    ex.request_body = Body {
                        raw: kept.bytes(),
                        len: kept.len,
                        ..Body::default()
                    };
                    let ex = Box::new(ex);
                    p.offered = shadows
                        .iter()
                        .filter(|s| s.pairs.is_some())
                        .cloned()
                        .collect();
                    if let Some((last, others)) = shadows.split_last() {
                        for s in others {
                            s.offer(ex.clone());
                        }
                        last.offer(ex);
                    }
                }
            }
        }
        p.request = Some(kept);
        self.try_finish(p);
    }

    /// The response head arrived.
    pub fn response_head(&self, status: u16, version: &'static str, headers: Vec<Header>) {
        let ttfb_us = self.elapsed_us();
        let mut p = self.parts();
        p.head.response_start_us = Some(now_us());
        p.response = Some(Response::Answered {
            status,
            version,
            headers,
            ttfb_us,
            body: None,
        });
    }

    /// The response body ended (or was dropped).
    pub fn response_done(&self, kept: Kept) {
        let mut p = self.parts();
        p.head.response_end_us = Some(now_us());
        if let Some(Response::Answered { body, .. }) = p.response.as_mut() {
            *body = Some(kept);
        }
        self.try_finish(p);
    }

    /// No response: `kind`, said in `message`.
    pub fn failed(&self, kind: ErrorKind, message: String) {
        let mut p = self.parts();
        if p.response.is_none() {
            p.response = Some(Response::Failed { kind, message });
        }
        self.try_finish(p);
    }

    /// The handler ended without a response (the client went away first).
    pub fn abandoned(&self) {
        let unanswered = self.parts().response.is_none();
        if unanswered {
            self.client_failed(
                ErrorKind::Reset,
                "the client went away before the response".into(),
            );
        }
    }

    /// The request failed by the client's doing (it went away, or its body was malformed):
    /// recorded as failed, but not counted as the pool's error (see [`PoolStats::client_fault`]).
    pub fn client_failed(&self, kind: ErrorKind, message: String) {
        self.parts().client_fault = true;
        self.failed(kind, message);
    }

    fn try_finish(&self, mut p: std::sync::MutexGuard<'_, Parts>) {
        let ready = p.request.is_some()
            && match &p.response {
                Some(Response::Answered { body, .. }) => body.is_some(),
                Some(Response::Failed { .. }) => true,
                None => false,
            };
        if !ready || p.done {
            return;
        }
        p.done = true;
        let total_us = self.elapsed_us();
        let Parts {
            head,
            request,
            response,
            offered,
            client_fault,
            ..
        } = &mut *p;
        let outcome = match response {
            Some(Response::Answered { status, .. }) => Outcome::Status(*status, total_us as u64),
            _ => Outcome::TransportError,
        };
        let offered = std::mem::take(offered);
        if *client_fault && !matches!(response, Some(Response::Answered { .. })) {
            // Production did nothing wrong: no error in its windows, and no pair (what
            // production would have answered is unknown).
            self.stats.client_fault();
        } else {
            self.stats.record(outcome);
            for s in offered {
                if let Some(pairs) = &s.pairs {
                    pairs.production(&head.exchange_id, outcome);
                    if pairs.wants_bodies() {
                        pairs.production_answer(
                            &head.exchange_id,
                            &head.method,
                            &head.path,
                            &head.uri,
                            answer_of(response.as_ref()),
                        );
                    }
                }
            }
        }
        let Some(recorder) = &self.sinks.recorder else {
            return;
        };
        let cap = self.sinks.record_max_body;
        let mut ex = head.clone();
        ex.request_body = body_of(request.as_ref(), cap);
        ex.request_trailers = trailers_of(request.as_ref());
        ex.flags.incomplete = !request.as_ref().is_some_and(|k| k.complete);
        let (member, url, sent_headers) = self
            .upstream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut row = ReplayRecord {
            run_id: self.sinks.run_id.clone(),
            exchange_id: ex.exchange_id.clone(),
            pass: 0,
            target: self.pool.clone(),
            target_url: member.into(),
            recorded_start_us: ex.request_start_us,
            sent_at_us: Some(ex.request_start_us),
            method: ex.method.clone(),
            url,
            path: ex.path.clone(),
            query: ex.query.clone(),
            request_headers: sent_headers,
            // Filled from the exchange by the recorder as it writes: one copy of each body
            // waits in its queue, the one the budget holds.
            request_body: Vec::new(),
            status: None,
            response_version: None,
            response_headers: Vec::new(),
            response_body: Vec::new(),
            response_body_decoded: None,
            response_body_len: 0,
            response_body_truncated: false,
            connect_us: None,
            ttfb_us: None,
            total_us: Some(total_us),
            error_kind: None,
            error_message: None,
            send_position: None,
        };
        // The budget shares of the bodies' kept bytes stay taken until the recorder has
        // written them: its queue is within `mirror_memory` too.
        let mut held = Vec::new();
        match response.take() {
            Some(Response::Answered {
                status,
                version,
                headers,
                ttfb_us,
                mut body,
            }) => {
                held.extend(body.as_mut().and_then(|k| k.reservation.take()));
                let b = body_of(body.as_ref(), cap);
                ex.flags.incomplete |= !body.as_ref().is_some_and(|k| k.complete);
                ex.response_trailers = trailers_of(body.as_ref());
                ex.status = Some(status);
                ex.reason = http::StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .map(Into::into);
                ex.response_version = Some(version.into());
                ex.response_headers = headers.clone();
                row.status = Some(status);
                row.response_version = Some(version.into());
                row.response_headers = headers;
                row.response_body_len = b.len;
                row.response_body_truncated = b.truncated;
                row.ttfb_us = Some(ttfb_us);
                ex.response_body = b;
            }
            Some(Response::Failed { kind, message }) => {
                ex.flags.no_response = true;
                ex.error_detail = Some(message.clone());
                row.error_kind = Some(kind);
                row.error_message = Some(message);
            }
            None => {}
        }
        held.extend(request.as_mut().and_then(|k| k.reservation.take()));
        drop(p);
        recorder.offer(Record {
            held,
            exchange: Box::new(ex),
            row,
        });
    }
}

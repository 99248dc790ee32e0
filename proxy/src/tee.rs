//! The body tee: a body that passes every frame through unchanged, as it arrives, and keeps a
//! reference-counted clone of the data (no copy) up to a cap, for the mirror copies and the
//! recording. Nothing waits on the copy: past the cap, or past the shared byte budget
//! ([`Budget`]), it simply stops keeping. When the body ends, or is dropped before its end (the
//! client went away, the upstream failed), what was kept is handed to the `on_end` callback
//! once, saying whether the body arrived whole.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

/// Bytes kept by every tee together, bounded: a tee that would pass it stops keeping.
#[derive(Debug)]
pub struct Budget {
    used: AtomicU64,
    limit: u64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub fn new(limit: u64) -> Arc<Budget> {
        Arc::new(Budget {
            used: AtomicU64::new(0),
            limit,
        })
    }

    fn take(&self, n: u64) -> bool {
        let mut cur = self.used.load(Ordering::Relaxed);
        loop {
            if cur + n > self.limit {
                return false;
            }
            match self.used.compare_exchange_weak(
                cur,
                cur + n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
    }

    /// `n` bytes held until the reservation is dropped, or none when they would pass the limit.
    pub fn reserve(self: &Arc<Self>, n: u64) -> Option<Reservation> {
        self.take(n).then(|| Reservation {
            budget: self.clone(),
            bytes: n,
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes taken from a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// What a tee kept of a body.
#[derive(Debug)]
pub struct Kept {
    /// The first bytes, as the frames that carried them.
    pub chunks: Vec<Bytes>,
    /// Bytes that passed (kept or not).
    pub len: u64,
    /// The body ended (it arrived whole).
    pub complete: bool,
    /// The body ended in an error (for a client's request: malformed framing, or the
    /// connection lost mid-body).
    pub failed: bool,
    /// Not every byte was kept: the cap (`over_cap`) or the budget (`over_budget`) stopped it.
    pub over_cap: bool,
    /// The shared budget stopped it.
    pub over_budget: bool,
    /// Trailers, when the body had them.
    pub trailers: Option<http::HeaderMap>,
    /// The budget share these chunks hold.
    pub reservation: Option<Reservation>,
}

impl Kept {
    /// The kept bytes in one buffer.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.chunks.iter().map(Bytes::len).sum());
        for c in &self.chunks {
            out.extend_from_slice(c);
        }
        out
    }
}

/// Called once with what was kept.
pub type OnEnd = Box<dyn FnOnce(Kept) + Send + Sync>;

pin_project_lite::pin_project! {
    /// See the module docs.
    pub struct Tee<B> {
        #[pin]
        inner: B,
        cap: u64,
        budget: Option<Arc<Budget>>,
        kept: Option<Kept>,
        kept_bytes: u64,
        on_end: Option<OnEnd>,
        // The inner body said it had nothing more, as of the last look.
        at_end: bool,
    }

    impl<B> PinnedDrop for Tee<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // Dropped before its end was seen: whole only when nothing was left to read.
            let complete = *this.at_end;
            finish(this.kept, this.on_end, complete);
        }
    }
}

fn finish(kept: &mut Option<Kept>, on_end: &mut Option<OnEnd>, complete: bool) {
    if let (Some(mut k), Some(f)) = (kept.take(), on_end.take()) {
        k.complete = complete;
        f(k);
    }
}

impl<B: Body> Tee<B> {
    /// Passes `inner` through, keeping up to `cap` bytes (0: nothing, only the counts) within
    /// `budget`, and calls `on_end` once.
    pub fn new(inner: B, cap: u64, budget: Option<Arc<Budget>>, on_end: OnEnd) -> Self {
        Tee {
            at_end: inner.is_end_stream(),
            inner,
            cap,
            budget,
            kept: Some(Kept {
                chunks: Vec::new(),
                len: 0,
                complete: false,
                failed: false,
                over_cap: false,
                over_budget: false,
                trailers: None,
                reservation: None,
            }),
            kept_bytes: 0,
            on_end: Some(on_end),
        }
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                // Trailers are a body's last frame: its end, whether or not the inner body
                // says so before it is polled again (hyper's does not).
                let last = frame.is_trailers();
                if let Some(k) = this.kept.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        let n = data.len() as u64;
                        k.len += n;
                        let room = this.cap.saturating_sub(*this.kept_bytes);
                        let take = n.min(room);
                        if take < n {
                            k.over_cap = true;
                        }
                        if take > 0 && !k.over_budget {
                            let granted = match this.budget {
                                Some(b) => b.take(take),
                                None => true,
                            };
                            if granted {
                                if let Some(b) = this.budget {
                                    match k.reservation.as_mut() {
                                        Some(r) => r.bytes += take,
                                        None => {
                                            k.reservation = Some(Reservation {
                                                budget: b.clone(),
                                                bytes: take,
                                            })
                                        }
                                    }
                                }
                                k.chunks.push(data.slice(..take as usize));
                                *this.kept_bytes += take;
                            } else {
                                k.over_budget = true;
                                k.over_cap = true;
                            }
                        }
                    } else if let Some(t) = frame.trailers_ref() {
                        k.trailers = Some(t.clone());
                    }
                }
                *this.at_end = last || this.inner.is_end_stream();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                finish(this.kept, this.on_end, true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(k) = this.kept.as_mut() {
                    k.failed = true;
                }
                finish(this.kept, this.on_end, false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// A body of these frames, each ready at once; `tells_end`: whether it says it has ended
    /// once the last is out (hyper's `Incoming` does not after trailers).
    struct Frames {
        frames: VecDeque<Frame<Bytes>>,
        tells_end: bool,
    }

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.frames.pop_front().map(Ok))
        }
        fn is_end_stream(&self) -> bool {
            self.tells_end && self.frames.is_empty()
        }
    }

    fn body(chunks: &[&'static [u8]]) -> Frames {
        Frames {
            frames: chunks
                .iter()
                .map(|c| Frame::data(Bytes::from_static(c)))
                .collect(),
            tells_end: true,
        }
    }

    /// An `on_end` that keeps what it is given, and where.
    fn slot() -> (Arc<Mutex<Option<Kept>>>, OnEnd) {
        let got = Arc::new(Mutex::new(None));
        let keep = got.clone();
        (got, Box::new(move |k| *keep.lock().unwrap() = Some(k)))
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
    }

    fn collect(cap: u64, budget: Option<Arc<Budget>>, chunks: &[&'static [u8]]) -> (Vec<u8>, Kept) {
        let (got, on_end) = slot();
        let tee = Tee::new(body(chunks), cap, budget, on_end);
        let passed = runtime().block_on(async { tee.collect().await.unwrap().to_bytes() });
        let kept = got.lock().unwrap().take().expect("on_end called");
        (passed.to_vec(), kept)
    }

    #[test]
    fn every_byte_passes_and_the_copy_stops_at_the_cap() {
        let (passed, kept) = collect(5, None, &[b"abc", b"defg", b"h"]);
        assert_eq!(passed, b"abcdefgh");
        assert_eq!(kept.bytes(), b"abcde");
        assert!(kept.complete && kept.over_cap && !kept.over_budget);
        assert_eq!(kept.len, 8);
        let (_, whole) = collect(100, None, &[b"abc", b"defg"]);
        assert!(whole.complete && !whole.over_cap && whole.bytes() == b"abcdefg");
    }

    #[test]
    fn the_shared_budget_stops_keeping_and_comes_back_on_drop() {
        let budget = Budget::new(4);
        let (passed, kept) = collect(100, Some(budget.clone()), &[b"abc", b"defg"]);
        assert_eq!(passed, b"abcdefg");
        assert_eq!(kept.bytes(), b"abc");
        assert!(kept.over_budget);
        assert_eq!(budget.used(), 3);
        drop(kept);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_body_dropped_before_its_end_is_reported_incomplete() {
        let (got, on_end) = slot();
        drop(Tee::new(body(&[b"abc", b"def"]), 100, None, on_end));
        let kept = got.lock().unwrap().take().expect("on_end called on drop");
        assert!(!kept.complete);
    }

    #[test]
    fn a_body_dropped_after_its_trailers_is_whole_and_keeps_them() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", http::HeaderValue::from_static("1"));
        let frames = Frames {
            frames: VecDeque::from([
                Frame::data(Bytes::from_static(b"abc")),
                Frame::trailers(trailers),
            ]),
            tells_end: false,
        };
        let (got, on_end) = slot();
        let mut tee = Tee::new(frames, 100, None, on_end);
        runtime().block_on(async {
            assert!(tee.frame().await.unwrap().unwrap().is_data());
            assert!(tee.frame().await.unwrap().unwrap().is_trailers());
        });
        // The reader stops at the trailers and drops the body, as hyper's client does.
        drop(tee);
        let kept = got.lock().unwrap().take().expect("on_end called on drop");
        assert!(kept.complete, "trailers end a body");
        assert_eq!(kept.bytes(), b"abc");
        assert_eq!(kept.trailers.unwrap()["x-checksum"], "1");
    }
}

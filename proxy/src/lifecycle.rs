//! A client connection's life, timed from accept: no client, however slow or silent, holds a
//! connection slot for longer than the limits say.
//!
//! [`Activity`] is what a connection has done: requests started and in flight (a request is in
//! flight from its head until its response body is dropped, [`Tracked`]), when that last
//! changed, and whether the client has stopped taking the response ([`Watched`] wraps the
//! socket). [`watchdog`] ends when the connection should be closed:
//! - no request head within `header_timeout` of accept (a silent socket, half a line, an
//!   HTTP/2 preface and nothing more, a TLS handshake never finished);
//! - nothing in flight for `idle_timeout` (keep-alive and HTTP/2 alike);
//! - a response the client takes no bytes of for `send_timeout`;
//! - a request in flight with no byte moving either way for the larger of `idle_timeout` and
//!   `upstream_timeout` (a response body production stopped sending).
//!
//! Dropping the connection's future closes the socket: a silent client has nothing in flight
//! to lose. [`ClientSlots`] bounds the connections of one client address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one connection has done; shared by its socket, its requests and its watchdog.
#[derive(Debug)]
pub struct Activity {
    epoch: Instant,
    /// Milliseconds since `epoch` of the last request start or end, or byte moved.
    last_ms: AtomicU64,
    requests: AtomicU64,
    in_flight: AtomicU64,
    /// 1 + milliseconds since `epoch` when a write first found the client not taking bytes
    /// (0: writes go through).
    write_blocked: AtomicU64,
}

impl Activity {
    /// A connection accepted now.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            epoch: Instant::now(),
            last_ms: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            write_blocked: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// A request's head arrived: it is in flight until the guard is dropped.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.touch();
        InFlight(self.clone())
    }

    /// Requests whose head arrived on this connection.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Resolves once nothing has moved for `d` (for tunnels, where every byte is activity).
    pub async fn silent_for(&self, d: Duration) {
        let limit = d.as_millis() as u64;
        loop {
            let idle = self
                .now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Relaxed));
            if idle >= limit {
                return;
            }
            tokio::time::sleep(Duration::from_millis(limit - idle)).await;
        }
    }
}

/// A request in flight (see [`Activity::request`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// The limits [`watchdog`] enforces.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// From accept to the first request head.
    pub header: Duration,
    /// With nothing in flight.
    pub idle: Duration,
    /// A client not taking its response.
    pub send: Duration,
    /// A request in flight with no byte moving either way (production thinking, or a response
    /// body stalled): at least the upstream timeout.
    pub stalled: Duration,
}

/// Why a connection was closed by [`watchdog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closed {
    /// No request head within the header timeout.
    NoRequest,
    /// Nothing in flight for the idle timeout.
    Idle,
    /// The client took no bytes of its response for the send timeout.
    NotReading,
    /// A request in flight moved no byte for the stall limit.
    Stalled,
}

/// Resolves when the connection of `a` should be closed. Sleeps until the next deadline the
/// connection's state gives, so an idle connection costs one timer, not a poll loop.
pub async fn watchdog(a: &Activity, t: Timers) -> Closed {
    let ms = |d: Duration| d.as_millis() as u64;
    loop {
        let now = a.now_ms();
        let next = if a.requests() == 0 {
            if now >= ms(t.header) {
                return Closed::NoRequest;
            }
            ms(t.header)
        } else if a.in_flight.load(Ordering::Relaxed) == 0 {
            let due = a.last_ms.load(Ordering::Relaxed) + ms(t.idle);
            if now >= due {
                return Closed::Idle;
            }
            due
        } else {
            match a.write_blocked.load(Ordering::Relaxed) {
                0 => {
                    let due = a.last_ms.load(Ordering::Relaxed) + ms(t.stalled);
                    if now >= due {
                        return Closed::Stalled;
                    }
                    due.min(now + ms(t.send))
                }
                since => {
                    let due = since - 1 + ms(t.send);
                    if now >= due {
                        return Closed::NotReading;
                    }
                    due
                }
            }
        };
        // Never spin: at least a little, at most the shortest limit (state may change).
        let wait = next
            .saturating_sub(now)
            .clamp(50, ms(t.header.min(t.idle).min(t.send)).max(50));
        tokio::time::sleep(Duration::from_millis(wait)).await;
    }
}

pin_project_lite::pin_project! {
    /// A client socket that tells its [`Activity`] when bytes move and when the client stops
    /// taking them.
    pub struct Watched<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
    }
}

impl<T> Watched<T> {
    /// Wraps `inner`.
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let r = this.inner.poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write(cx, buf);
        note_write(this.activity, &r);
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let r = this.inner.poll_write_vectored(cx, bufs);
        note_write(this.activity, &r);
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

fn note_write(a: &Activity, r: &Poll<std::io::Result<usize>>) {
    match r {
        Poll::Pending => {
            let _ = a.write_blocked.compare_exchange(
                0,
                a.now_ms() + 1,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        Poll::Ready(Ok(n)) if *n > 0 => {
            a.write_blocked.store(0, Ordering::Relaxed);
            a.touch();
        }
        Poll::Ready(_) => a.write_blocked.store(0, Ordering::Relaxed),
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until it is dropped (sent whole, or
    /// abandoned with its connection).
    pub struct Tracked<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B> Tracked<B> {
    /// `inner`, its request in flight while it lives.
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Tracked {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl<B: http_body::Body<Data = Bytes>> http_body::Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, B::Error>>> {
        let this = self.project();
        let r = this.inner.poll_frame(cx);
        if matches!(r, Poll::Ready(None)) {
            this.in_flight.take();
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Connections per client address, bounded.
#[derive(Debug, Default)]
pub struct ClientSlots {
    limit: Option<usize>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One client connection's place in [`ClientSlots`], given back on drop.
#[derive(Debug)]
pub struct ClientSlot {
    slots: Arc<ClientSlots>,
    ip: IpAddr,
}

impl ClientSlots {
    /// At most `limit` connections per address (none: any number).
    pub fn new(limit: Option<usize>) -> Arc<ClientSlots> {
        Arc::new(ClientSlots {
            limit,
            open: Mutex::default(),
        })
    }

    /// A place for a new connection from `ip`, unless it has `limit` open already.
    pub fn take(self: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        let limit = self.limit?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            slots: self.clone(),
            ip,
        })
    }

    /// Whether there is a limit.
    pub fn limited(&self) -> bool {
        self.limit.is_some()
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut open = self.slots.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Raises this process's soft limit on open files towards what `max_connections` needs (a
/// client socket and an upstream one each, and some to spare), up to the hard limit; refuses
/// when even the client sockets would not fit, rather than failing `accept` under load.
#[cfg(target_os = "linux")]
pub fn raise_fd_limit(max_connections: usize) -> Result<(), String> {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let want = (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(256);
    let floor = (max_connections as u64).saturating_add(64);
    let l = getrlimit(Resource::Nofile);
    let (soft, hard) = (l.current.unwrap_or(u64::MAX), l.maximum.unwrap_or(u64::MAX));
    if soft < want {
        let mut raised = l;
        raised.current = Some(want.min(hard));
        let _ = setrlimit(Resource::Nofile, raised);
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    if now < floor {
        return Err(format!(
            "{max_connections} connections need at least {floor} open files, and this process may open {now} (hard limit {hard}): raise `ulimit -n` (LimitNOFILE= under systemd) or lower limits.max_connections"
        ));
    }
    Ok(())
}

/// Elsewhere the limit is left as it is.
#[cfg(not(target_os = "linux"))]
pub fn raise_fd_limit(_max_connections: usize) -> Result<(), String> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timers = Timers {
        header: Duration::from_millis(200),
        idle: Duration::from_millis(300),
        send: Duration::from_millis(250),
        stalled: Duration::from_millis(2000),
    };

    #[tokio::test]
    async fn a_connection_without_a_request_closes_after_the_header_timeout() {
        let a = Activity::new();
        let t0 = Instant::now();
        assert_eq!(watchdog(&a, T).await, Closed::NoRequest);
        assert!(t0.elapsed() >= T.header);
    }

    #[tokio::test]
    async fn in_flight_holds_the_connection_and_idle_closes_it_after() {
        let a = Activity::new();
        let r = a.request();
        let dog = tokio::spawn({
            let a = a.clone();
            async move { watchdog(&a, T).await }
        });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!dog.is_finished(), "a request in flight is not idle");
        let ended = Instant::now();
        drop(r);
        assert_eq!(dog.await.unwrap(), Closed::Idle);
        assert!(ended.elapsed() >= T.idle - Duration::from_millis(60));
    }

    #[tokio::test]
    async fn a_request_in_flight_with_nothing_moving_is_closed_after_the_stall_limit() {
        let a = Activity::new();
        let _r = a.request();
        let t0 = Instant::now();
        assert_eq!(watchdog(&a, T).await, Closed::Stalled);
        assert!(t0.elapsed() >= T.stalled - Duration::from_millis(60));
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_closed_after_the_send_timeout() {
        let a = Activity::new();
        let _r = a.request();
        note_write(&a, &Poll::Pending);
        assert_eq!(watchdog(&a, T).await, Closed::NotReading);
    }

    #[test]
    fn client_slots_bound_one_address_and_come_back() {
        let s = ClientSlots::new(Some(2));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = s.take(ip).unwrap();
        let _b = s.take(ip).unwrap();
        assert!(s.take(ip).is_none());
        assert!(s.take("10.0.0.2".parse().unwrap()).is_some());
        drop(a);
        assert!(s.take(ip).is_some());
    }
}

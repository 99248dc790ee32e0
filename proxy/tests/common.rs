//! Real parts for the proxy's tests: HTTP backends on loopback (axum), a black hole that
//! accepts and never answers, a closed port, a keep-alive client, and a proxy started on
//! 127.0.0.1:0.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use shadowtap_proxy::config::ShadowConfig;
use shadowtap_proxy::ProxyConfig;

/// How a backend behaves.
#[derive(Clone, Default)]
pub struct Behaviour {
    /// Label in the `X-Backend` header.
    pub label: &'static str,
    /// Wait this long before answering.
    pub delay: Duration,
    /// Answer this status (default 200).
    pub status: Option<u16>,
    /// Report `price` as this instead of `n * 3`.
    pub price: Option<i64>,
}

/// What a backend saw.
#[derive(Default)]
pub struct Seen {
    /// Requests.
    pub requests: AtomicU64,
    /// Uploads: (bytes, hash, when the first body byte arrived, when the last did).
    pub uploads: Mutex<Vec<(u64, u64, Instant, Instant)>>,
    /// Paths with their `X-Shadowtap-Replay` marker, if any.
    pub marked: Mutex<Vec<(String, Option<String>)>>,
}

#[derive(Clone)]
struct Ctx {
    b: Behaviour,
    seen: Arc<Seen>,
}

async fn item(
    State(c): State<Ctx>,
    Path(n): Path<i64>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    c.seen.requests.fetch_add(1, Ordering::Relaxed);
    c.seen.marked.lock().unwrap().push((
        format!("/item/{n}"),
        headers
            .get("x-shadowtap-replay")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    ));
    if !c.b.delay.is_zero() {
        tokio::time::sleep(c.b.delay).await;
    }
    let body = format!(
        "{{\"n\":{n},\"name\":\"item-{n}\",\"price\":{}}}",
        c.b.price.unwrap_or(n * 3)
    );
    axum::response::Response::builder()
        .status(c.b.status.unwrap_or(200))
        .header("content-type", "application/json")
        .header("x-backend", c.b.label)
        .body(axum::body::Body::from(body))
        .unwrap()
}

async fn upload(State(c): State<Ctx>, mut body: axum::body::Body) -> String {
    c.seen.requests.fetch_add(1, Ordering::Relaxed);
    let (mut n, mut first, mut hasher) = (0u64, None, xxhash_rust::xxh3::Xxh3::new());
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame.unwrap().into_data() else {
            continue;
        };
        first.get_or_insert_with(Instant::now);
        n += chunk.len() as u64;
        hasher.update(&chunk);
    }
    let now = Instant::now();
    let hash = hasher.digest();
    c.seen
        .uploads
        .lock()
        .unwrap()
        .push((n, hash, first.unwrap_or(now), now));
    format!("{{\"len\":{n},\"hash\":{hash}}}")
}

/// A backend on loopback; what it saw.
pub async fn backend(b: Behaviour) -> (SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let app = Router::new()
        .route("/item/{n}", get(item))
        .route("/upload", post(upload))
        .with_state(Ctx {
            b,
            seen: seen.clone(),
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (addr, seen)
}

/// Accepts connections and never answers (held until the test ends).
pub async fn black_hole() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    addr
}

/// A port nothing listens on.
pub fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A keep-alive client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(HttpConnector::new())
}

/// A response as the tests compare it: status, the headers that matter, body.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub backend: Option<String>,
    pub body: Vec<u8>,
}

/// GET `url` with `headers`.
pub async fn get_url(
    c: &Client<HttpConnector, Full<Bytes>>,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Answer, String> {
    let mut req = http::Request::get(url);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let resp = c
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .map_err(|e| format!("{e:?}"))?;
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (status, content_type, backend) =
        (resp.status().as_u16(), h("content-type"), h("x-backend"));
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes()
        .to_vec();
    Ok(Answer {
        status,
        content_type,
        backend,
        body,
    })
}

/// A proxy config in front of `production`, listening on 127.0.0.1:0.
pub fn config(production: SocketAddr) -> ProxyConfig {
    let mut c = ProxyConfig::new("127.0.0.1:0", vec![format!("http://{production}")]);
    c.limits.shutdown_grace_s = 5.0;
    c.limits.shadow_timeout_s = 3.0;
    c
}

/// A shadow pool.
pub fn shadow(name: &str, addr: SocketAddr) -> ShadowConfig {
    ShadowConfig {
        name: name.into(),
        urls: vec![format!("http://{addr}")],
        percent: None,
        by: None,
        criteria: None,
        concurrency: 8,
        queue: 8,
    }
}

/// A request body sent in chunks, a pause between them; when the last was handed over.
pub struct SlowBody {
    chunks: Vec<Bytes>,
    pause: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    pub finished: Arc<Mutex<Option<Instant>>>,
}

impl SlowBody {
    pub fn new(total: usize, chunk: usize, pause: Duration) -> SlowBody {
        let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
        SlowBody {
            chunks: data
                .chunks(chunk)
                .rev()
                .map(Bytes::copy_from_slice)
                .collect(),
            pause,
            sleep: None,
            finished: Arc::default(),
        }
    }
}

impl Body for SlowBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(s) = self.sleep.as_mut() {
            if s.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        match self.chunks.pop() {
            Some(c) => {
                if self.chunks.is_empty() {
                    *self.finished.lock().unwrap() = Some(Instant::now());
                } else {
                    let pause = self.pause;
                    self.sleep = Some(Box::pin(tokio::time::sleep(pause)));
                }
                Poll::Ready(Some(Ok(Frame::data(c))))
            }
            None => Poll::Ready(None),
        }
    }
    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.sleep.is_none()
    }
}

use std::future::Future as _;

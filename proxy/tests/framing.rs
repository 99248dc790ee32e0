//! The edges of HTTP/1.1 framing, sent as raw bytes: a GET's chunked body reaches production
//! and the shadow whole, trailers go both ways and into the recording, and requests whose host
//! is ambiguous (two `Host` fields, none in HTTP/1.1) or that ask for a tunnel (`CONNECT`) are
//! answered by the proxy and never reach production.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shadowtap_core::read::{find_exchange_files, ExchangeFile};
use shadowtap_core::Exchange;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::common::config;

/// What a raw backend received: the head's lines, the body, the trailer lines.
#[derive(Clone, Debug)]
pub(crate) struct Received {
    pub(crate) head: Vec<String>,
    body: Vec<u8>,
    trailers: Vec<String>,
}

impl Received {
    pub(crate) fn header(&self, name: &str) -> Vec<String> {
        self.head[1..]
            .iter()
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
            .collect()
    }
}

async fn line(r: &mut BufReader<TcpStream>) -> Option<String> {
    let mut l = String::new();
    match r.read_line(&mut l).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(l.trim_end_matches(['\r', '\n']).to_owned()),
    }
}

/// One request off `r` (Content-Length or chunked), or None at the end of the connection.
async fn read_request(r: &mut BufReader<TcpStream>) -> Option<Received> {
    let mut head = vec![line(r).await?];
    loop {
        let l = line(r).await?;
        if l.is_empty() {
            break;
        }
        head.push(l);
    }
    let mut got = Received {
        head,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    if let Some(n) = got.header("content-length").first() {
        let mut body = vec![0; n.parse().ok()?];
        r.read_exact(&mut body).await.ok()?;
        got.body = body;
    } else if got
        .header("transfer-encoding")
        .iter()
        .any(|v| v.contains("chunked"))
    {
        loop {
            let size = usize::from_str_radix(line(r).await?.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                loop {
                    let t = line(r).await?;
                    if t.is_empty() {
                        break;
                    }
                    got.trailers.push(t);
                }
                break;
            }
            let mut chunk = vec![0; size + 2];
            r.read_exact(&mut chunk).await.ok()?;
            got.body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(got)
}

/// A backend that keeps what it received and answers `ok` (path `/trailer`: a chunked body
/// with a `x-checksum` trailer).
pub(crate) async fn raw_backend() -> (SocketAddr, Arc<Mutex<Vec<Received>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Received>>> = Arc::default();
    let keep = seen.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let keep = keep.clone();
            tokio::spawn(async move {
                let mut r = BufReader::new(sock);
                while let Some(req) = read_request(&mut r).await {
                    let trailer = req.head[0].contains(" /trailer ");
                    keep.lock().unwrap().push(req);
                    let answer: &[u8] = if trailer {
                        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
                          5\r\nhello\r\n0\r\nx-checksum: 42\r\n\r\n"
                    } else {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                    };
                    if r.get_mut().write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// Sends `request` on a new connection and reads until the proxy closes it (or 5 s pass).
pub(crate) async fn exchange(proxy: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn recorded(dir: &std::path::Path) -> Vec<Exchange> {
    let mut all = Vec::new();
    for f in find_exchange_files(dir).unwrap() {
        let mut file = ExchangeFile::open(&f, 1024).unwrap();
        while let Some(batch) = file.next_batch() {
            all.extend(batch.unwrap());
        }
    }
    all
}

pub(crate) async fn wait_for(seen: &Mutex<Vec<Received>>, n: usize) {
    for _ in 0..100 {
        if seen.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_with_a_chunked_body_and_trailers_arrives_whole_everywhere() {
    let (prod, prod_seen) = raw_backend().await;
    let (sh, shadow_seen) = raw_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(prod);
    cfg.shadows = vec![crate::common::shadow("shadow", sh)];
    cfg.record = Some(dir.path().to_path_buf());
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let answer = exchange(
        running.addr,
        b"GET /search HTTP/1.1\r\nHost: api.test\r\nTransfer-Encoding: chunked\r\nTrailer: x-digest\r\n\
          X-Hop: for the proxy\r\nConnection: close, X-Hop\r\n\r\n\
          6\r\nhello \r\n5\r\nworld\r\n0\r\nx-digest: abc\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    wait_for(&shadow_seen, 1).await;
    running.shutdown();
    let summary = running.wait().await.unwrap();

    let prod_got = prod_seen.lock().unwrap().clone();
    assert_eq!(prod_got.len(), 1);
    assert_eq!(
        prod_got[0].body, b"hello world",
        "production got the GET's body: {:?}",
        prod_got[0].head
    );
    assert_eq!(prod_got[0].trailers, ["x-digest: abc"]);
    let shadow_got = shadow_seen.lock().unwrap().clone();
    assert_eq!(shadow_got.len(), 1, "the copy was sent: {summary:?}");
    assert_eq!(shadow_got[0].body, b"hello world");
    // A header the client's `Connection` names is the hop's, on neither path.
    assert!(
        prod_got[0].header("x-hop").is_empty(),
        "{:?}",
        prod_got[0].head
    );
    assert!(
        shadow_got[0].header("x-hop").is_empty(),
        "{:?}",
        shadow_got[0].head
    );

    let ex = recorded(dir.path());
    assert_eq!(ex.len(), 1);
    assert!(!ex[0].flags.incomplete, "a body ended by trailers is whole");
    assert_eq!(ex[0].request_body.len, 11);
    assert_eq!(ex[0].request_body.raw, b"hello world");
    assert_eq!(ex[0].request_trailers.len(), 1);
    assert_eq!(ex[0].request_trailers[0].name.as_str(), "x-digest");
    assert_eq!(ex[0].request_trailers[0].value.as_str(), "abc");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn production_trailers_reach_a_client_that_takes_them_and_the_recording() {
    let (prod, _) = raw_backend().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(prod);
    cfg.record = Some(dir.path().to_path_buf());
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let answer = exchange(
        running.addr,
        b"GET /trailer HTTP/1.1\r\nHost: api.test\r\nTE: trailers\r\nConnection: close\r\n\r\n",
    )
    .await;
    running.shutdown();
    running.wait().await.unwrap();
    let lower = answer.to_ascii_lowercase();
    assert!(lower.contains("\r\nhello\r\n"), "{answer}");
    assert!(lower.contains("\r\nx-checksum: 42\r\n"), "{answer}");
    let ex = recorded(dir.path());
    assert_eq!(ex.len(), 1);
    assert!(!ex[0].flags.incomplete);
    assert_eq!(ex[0].response_body.raw, b"hello");
    assert_eq!(ex[0].response_trailers.len(), 1);
    assert_eq!(ex[0].response_trailers[0].value.as_str(), "42");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_hosts_and_connect_are_answered_by_the_proxy_not_production() {
    let (prod, prod_seen) = raw_backend().await;
    let running = shadowtap_proxy::start(config(prod), None).await.unwrap();
    for (request, status) in [
        (
            &b"GET /a HTTP/1.1\r\nHost: api.test\r\nHost: evil.test\r\n\r\n"[..],
            "400",
        ),
        (b"GET /b HTTP/1.1\r\nConnection: close\r\n\r\n", "400"),
        (b"GET /c HTTP/1.1\r\nHost: api.test\"x\r\n\r\n", "400"),
        (b"GET /d HTTP/1.1\r\nHost: user@api.test\r\n\r\n", "400"),
        (
            b"CONNECT internal.test:443 HTTP/1.1\r\nHost: internal.test:443\r\n\r\n",
            "405",
        ),
    ] {
        let answer = exchange(running.addr, request).await;
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{}: {answer}",
            String::from_utf8_lossy(request)
        );
    }
    // An absolute-form target's authority is the host production sees (RFC 9112 3.2.2);
    // HTTP/1.0 may go without one.
    let a = exchange(
        running.addr,
        b"GET http://api.test/e HTTP/1.1\r\nHost: other.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(a.starts_with("HTTP/1.1 200"), "{a}");
    let b = exchange(running.addr, b"GET /f HTTP/1.0\r\n\r\n").await;
    assert!(b.starts_with("HTTP/1.0 200"), "{b}");
    running.shutdown();
    running.wait().await.unwrap();
    let got = prod_seen.lock().unwrap().clone();
    let lines: Vec<&str> = got.iter().map(|r| r.head[0].as_str()).collect();
    assert_eq!(lines, ["GET /e HTTP/1.1", "GET /f HTTP/1.1"]);
    assert_eq!(got[0].header("host"), ["api.test"]);
    assert!(got[0].header("forwarded")[0].ends_with("host=\"api.test\""));
}

//! What clients speak: h2c with prior knowledge is answered like HTTP/1.1, and an `Upgrade`
//! (WebSocket-style) is passed through as a byte tunnel, never mirrored.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_get_the_same_answer() {
    let (prod, _) = backend(Behaviour {
        label: "prod",
        ..Default::default()
    })
    .await;
    let (sh, seen) = backend(Behaviour::default()).await;
    let mut cfg = config(prod);
    cfg.shadows = vec![shadow("shadow", sh)];
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let h2: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(HttpConnector::new());
    let direct = get_url(&client(), &format!("http://{prod}/item/5"), &[]).await.unwrap();
    for _ in 0..5 {
        let resp = h2
            .request(
                http::Request::get(format!("http://{}/item/5", running.addr))
                    .body(Full::new(Bytes::new()))
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(resp.version(), http::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.as_ref(), direct.body.as_slice());
    }
    running.shutdown();
    running.wait().await.unwrap();
    assert_eq!(seen.requests.load(Ordering::Relaxed), 5, "h2 requests are mirrored too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_is_tunnelled_to_production_and_not_mirrored() {
    // A backend that switches protocols and then echoes every byte.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let prod = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).await.unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                assert!(text.contains("upgrade: echo"), "{text}");
                s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
                    .await
                    .unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let (sh, seen) = backend(Behaviour::default()).await;
    let mut cfg = config(prod);
    cfg.shadows = vec![shadow("shadow", sh)];
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let mut c = tokio::net::TcpStream::connect(running.addr).await.unwrap();
    c.write_all(b"GET /chat HTTP/1.1\r\nHost: h\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(c.read(&mut b).await.unwrap(), 1, "closed before the 101");
        head.push(b[0]);
    }
    assert!(String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
    for msg in [&b"ping"[..], b"a longer message through the tunnel"] {
        c.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg);
    }
    drop(c);
    running.shutdown();
    running.wait().await.unwrap();
    assert_eq!(seen.requests.load(Ordering::Relaxed), 0, "an upgrade is never mirrored");
}

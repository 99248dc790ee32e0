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
    let direct = get_url(&client(), &format!("http://{prod}/item/5"), &[])
        .await
        .unwrap();
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
    assert_eq!(
        seen.requests.load(Ordering::Relaxed),
        5,
        "h2 requests are mirrored too"
    );
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
    // Only listed protocols are tunnelled (WebSocket by default).
    cfg.limits.upgrade_protocols.push("echo".into());
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
    assert!(
        String::from_utf8_lossy(&head).starts_with("HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    for msg in [&b"ping"[..], b"a longer message through the tunnel"] {
        c.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        c.read_exact(&mut got).await.unwrap();
        assert_eq!(got, msg);
    }
    drop(c);
    running.shutdown();
    running.wait().await.unwrap();
    assert_eq!(
        seen.requests.load(Ordering::Relaxed),
        0,
        "an upgrade is never mirrored"
    );
}

/// A self-signed certificate for `localhost`, written as PEM files; (cert, key) paths.
fn localhost_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    named_cert(dir, "localhost")
}

/// A self-signed certificate for `name`, written as PEM files; (cert, key) paths.
fn named_cert(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    use base64::Engine as _;
    let pem = |label: &str, der: &[u8]| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|l| std::str::from_utf8(l).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    let cert = rcgen::generate_simple_self_signed(vec![name.into()]).unwrap();
    let (c, k) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    std::fs::write(&c, pem("CERTIFICATE", cert.cert.der())).unwrap();
    std::fs::write(&k, pem("PRIVATE KEY", &cert.key_pair.serialize_der())).unwrap();
    (c, k)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_is_terminated_and_https_members_are_verified() {
    let (prod, _) = backend(Behaviour {
        label: "prod",
        ..Default::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = localhost_cert(dir.path());
    // The front: terminates TLS in front of the plaintext backend.
    let mut front = config(prod);
    front.tls = vec![shadowtap_proxy::config::TlsFiles {
        cert: cert.clone(),
        key: key.clone(),
    }];
    // Every user on a canary with a pin cookie: over TLS the cookie is `Secure`.
    let (can, _) = backend(Behaviour {
        label: "prod",
        ..Default::default()
    })
    .await;
    front.canary = Some(shadowtap_proxy::config::CanaryConfig {
        name: "canary".into(),
        urls: vec![format!("http://{can}")],
        weight: 100.0,
        sticky: shadowtap_proxy::config::KeySource::Request,
        pin_cookie: Some("pin".into()),
    });
    let front = shadowtap_proxy::start(front, None).await.unwrap();
    let https_url = format!("https://localhost:{}", front.addr.port());
    // A client that trusts the certificate reaches the backend through it.
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject as _;
    for c in rustls::pki_types::CertificateDer::pem_file_iter(&cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .build();
    let c: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(https);
    let resp = c
        .request(
            http::Request::get(format!("{https_url}/item/3"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let pin = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        pin.starts_with("pin=1;") && pin.ends_with("; Secure"),
        "{pin}"
    );
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("item-3"));
    // A proxy whose production member is https: verified against the CA file given ...
    let mut verified = shadowtap_proxy::ProxyConfig::new("127.0.0.1:0", vec![https_url.clone()]);
    verified.upstream_ca = Some(cert.clone());
    let verified = shadowtap_proxy::start(verified, None).await.unwrap();
    let a = get_url(&client(), &format!("http://{}/item/4", verified.addr), &[])
        .await
        .unwrap();
    assert_eq!((a.status, a.backend.as_deref()), (200, Some("prod")));
    // ... and refused with the system's roots, which do not know a self-signed certificate.
    let strict = shadowtap_proxy::ProxyConfig::new("127.0.0.1:0", vec![https_url]);
    let strict = shadowtap_proxy::start(strict, None).await.unwrap();
    let a = get_url(&client(), &format!("http://{}/item/4", strict.addr), &[])
        .await
        .unwrap();
    assert_eq!(a.status, 502, "an unverifiable member is never trusted");
    for r in [strict, verified, front] {
        r.shutdown();
        r.wait().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_for_the_name_asked() {
    use rustls::pki_types::pem::PemObject as _;
    let (prod, _) = backend(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (c1, k1) = named_cert(dir.path(), "localhost");
    let (c2, k2) = named_cert(dir.path(), "alt.test");
    let mut cfg = config(prod);
    cfg.tls = vec![
        shadowtap_proxy::config::TlsFiles {
            cert: c1.clone(),
            key: k1,
        },
        shadowtap_proxy::config::TlsFiles {
            cert: c2.clone(),
            key: k2,
        },
    ];
    let running = shadowtap_proxy::start(cfg, None).await.unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for f in [&c1, &c2] {
        for c in rustls::pki_types::CertificateDer::pem_file_iter(f).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
    }
    let tls = std::sync::Arc::new(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    let connect = |name: &'static str| {
        let tls = tls.clone();
        let addr = running.addr;
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let server = rustls::pki_types::ServerName::try_from(name).unwrap();
            tokio_rustls::TlsConnector::from(tls)
                .connect(server, tcp)
                .await
        }
    };
    // Each name gets its own certificate (the handshake verifies it against the name) ...
    assert!(connect("localhost").await.is_ok());
    assert!(connect("alt.test").await.is_ok());
    // ... and a name with none gets the first, which does not verify for it.
    assert!(connect("other.test").await.is_err());
    running.shutdown();
    running.wait().await.unwrap();
}

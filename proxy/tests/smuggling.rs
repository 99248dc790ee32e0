//! Request smuggling and framing, on raw sockets, against a raw backend whose log of what it
//! received is the oracle. Each payload frames its message ambiguously (CL.TE, TE.CL, TE.TE
//! obfuscations, bad Content-Lengths, bare LF and CR, overflowing or oversized chunks, 0.CL on
//! Upgrade, h2c, userinfo) and hides `GET /smuggled` where one reading of it would make that a
//! request of its own. Whatever the proxy answers, production never sees `/smuggled`, and the
//! next user's request, sent on a new connection through the same pooled upstream connections,
//! arrives whole. And a client's framing is never production's failure: no payload is
//! answered 5xx or counted as an error of the production pool (a hostile client must not make
//! a version look failing to the control plane).

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::config;
use crate::framing::{raw_backend, wait_for};

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";

/// (name, raw bytes): each hides [`SMUGGLED`] behind an ambiguous frame.
fn payloads() -> Vec<(&'static str, Vec<u8>)> {
    let s = SMUGGLED;
    let chunk = format!("{:x}\r\n{s}\r\n0\r\n\r\n", s.len());
    let p = |name, text: String| (name, text.into_bytes());
    vec![
        p(
            "CL.TE",
            format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{s}"),
        ),
        p(
            "TE.CL",
            format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}"),
        ),
        p(
            "TE xchunked",
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{s}"),
        ),
        p(
            "TE chunked, identity",
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n{s}"),
        ),
        p(
            "TE case",
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: CHUNKED\r\nContent-Length: 5\r\n\r\n{chunk}"),
        ),
        p(
            "TE tab",
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\tchunked\r\nContent-Length: 5\r\n\r\n{chunk}"),
        ),
        p(
            "TE obs-fold",
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding:\r\n chunked\r\nContent-Length: 5\r\n\r\n{chunk}"),
        ),
        p(
            "TE space before colon",
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n{chunk}"),
        ),
        p(
            "two TE fields",
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{chunk}"),
        ),
        p(
            "duplicate CL",
            format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: {}\r\n\r\nhello{s}", 5 + s.len()),
        ),
        p(
            "CL list",
            format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, {}\r\n\r\nhello{s}", 5 + s.len()),
        ),
        p(
            "CL +",
            format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +5\r\n\r\nhello{s}"),
        ),
        p(
            "CL -",
            format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n{s}"),
        ),
        p(
            "CL overflow",
            format!("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551621\r\n\r\nhello{s}"),
        ),
        p(
            "bare LF in the head",
            format!("POST / HTTP/1.1\nHost: h\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\n\n{s}"),
        ),
        p(
            "bare CR in a field",
            format!("POST / HTTP/1.1\r\nHost: h\r\nX-A: 1\rTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{s}"),
        ),
        p(
            "bare LF after chunk data",
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n{s}"),
        ),
        p(
            "chunk size overflow",
            format!("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n{s}"),
        ),
        p(
            "oversized chunk extension",
            format!(
                "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;{}\r\nhello\r\n0\r\n\r\n{s}",
                "x".repeat(100_000)
            ),
        ),
        p(
            "0.CL on Upgrade",
            format!("GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: {}\r\n\r\n{s}", s.len()),
        ),
        p(
            "h2c upgrade",
            "GET / HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n".to_owned(),
        ),
        p(
            "userinfo in an absolute-form target",
            format!("GET http://user:pw@h/ HTTP/1.1\r\nHost: h\r\n\r\n{s}"),
        ),
    ]
}

/// Sends `bytes` on a new connection; what came back before the proxy closed it (or 3 s).
async fn send(proxy: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ambiguous_frame_smuggles_a_request_to_production_or_desyncs_the_next_user() {
    let (prod, seen) = raw_backend().await;
    let running = shadowtap_proxy::start(config(prod), None).await.unwrap();
    let mut answers = Vec::new();
    for (i, (name, bytes)) in payloads().into_iter().enumerate() {
        let answer = send(running.addr, &bytes).await;
        let status = answer.lines().next().unwrap_or("(closed)").to_owned();
        answers.push(format!("{name}: {status}"));
        // The next user, on a connection of its own: answered, and received whole.
        let user = format!(
            "GET /user-{i} HTTP/1.1\r\nHost: h\r\nX-User: {i}\r\nConnection: close\r\n\r\n"
        );
        let reply = send(running.addr, user.as_bytes()).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "after {name}: {reply}");
        let before = seen.lock().unwrap().len();
        wait_for(&seen, before).await;
        let got = seen.lock().unwrap().clone();
        let last = got.last().expect("the user's request reached production");
        assert_eq!(
            last.head[0],
            format!("GET /user-{i} HTTP/1.1"),
            "after {name}: {got:?}"
        );
        assert_eq!(last.header("x-user"), [i.to_string()], "after {name}");
        assert!(
            got.iter().all(|r| !r.head[0].contains("/smuggled")),
            "{name} smuggled a request to production: {got:?}"
        );
    }
    eprintln!("{}", answers.join("\n"));
    for a in &answers {
        assert!(
            !a.contains("HTTP/1.1 5"),
            "a client's framing answered as production's failure: {a}"
        );
    }
    let w = running.state.production.window(300);
    assert_eq!(
        (w.status_5xx, w.transport_errors),
        (0, 0),
        "production's errors: {answers:#?}"
    );
    running.shutdown();
    running.wait().await.unwrap();
}

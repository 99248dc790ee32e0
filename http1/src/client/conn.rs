//! One HTTP/1.1 client connection: a request out, its final response in.
//!
//! A request leaves as it was given: header names in their case and order, the request line
//! and headers written in one buffer with the body (a body over 16 KiB follows in a second
//! write rather than being copied). The response is framed by the same parser capture uses
//! ([`crate::MessageParser`]: Content-Length, chunked, close-delimited, no body after
//! HEAD/204/304, interim 1xx skipped), so a response received here is recorded exactly as a
//! captured one would be (header case and order, body cap, lossless text). One task drives
//! one connection at a time: no connection task, no channel per request.

use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{io_kind, Failure, FailureKind};
use crate::header::Header;
use crate::message::{Framing, Message, ResponseFraming, Role};
use crate::parser::{MessageParser, ParserEvent, ParserLimits};

/// Read buffer size per connection.
const READ_CHUNK: usize = 16 << 10;

/// Bodies up to this size are copied behind the head and sent in one write.
const SMALL_BODY: usize = 16 << 10;

/// A write buffer grown past this (a huge header section) is not kept for the next request.
const KEPT_WRITE_BUFFER: usize = 256 << 10;

/// One keep-alive HTTP/1.1 connection.
pub struct Connection {
    stream: TcpStream,
    parser: MessageParser,
    /// The request being written (kept to reuse its allocation).
    out: Vec<u8>,
    read: Box<[u8]>,
    /// Exchanges completed on this connection.
    served: u64,
}

/// The final response and whether the connection may carry another request.
#[derive(Debug)]
pub struct Answer {
    /// The final response (interim 1xx responses are skipped).
    pub response: Message,
    /// The connection may carry another request (keep-alive, nothing left unread).
    pub reusable: bool,
}

/// Events of the parser, summed up.
#[derive(Default)]
struct Parsed {
    /// The final response, if one ended.
    response: Option<Message>,
    /// Bytes were skipped or lost: not HTTP/1.x from some point on.
    damaged: bool,
    /// The connection switched protocols.
    upgraded: bool,
}

/// Tells the parser which method each response answers (one request at a time).
struct Sent<'a>(&'a str);

impl Framing for Sent<'_> {
    fn request_head(&mut self, _: &str, _: u64, _: Option<u32>) -> u64 {
        0
    }
    fn response_head(&mut self, _: u16, _: u64, _: Option<u32>, _: Option<u64>) -> ResponseFraming {
        ResponseFraming::Request {
            index: 0,
            method: self.0.into(),
        }
    }
}

impl Connection {
    /// A connection over `stream`; response bodies keep at most `max_body` bytes.
    pub fn new(stream: TcpStream, max_body: u64) -> Self {
        Connection {
            stream,
            parser: Self::parser(max_body),
            out: Vec::new(),
            read: vec![0; READ_CHUNK].into_boxed_slice(),
            served: 0,
        }
    }

    fn parser(max_body: u64) -> MessageParser {
        let limits = ParserLimits {
            max_body,
            ..ParserLimits::default()
        };
        MessageParser::new(Role::Response, limits, false, 0)
    }

    /// Whether this connection carried an exchange before.
    pub fn reused(&self) -> bool {
        self.served > 0
    }

    /// True when the server closed this idle connection (or sent bytes nobody asked for):
    /// it must not carry a request. Usually free: tokio marks a socket not readable after a
    /// read that did not fill the buffer, so this reads from the socket (one non-blocking
    /// `recvfrom`) only when the kernel reported bytes or a close since the response ended.
    pub fn closed_while_idle(&self) -> bool {
        let mut probe = [0u8; 1];
        match self.stream.try_read(&mut probe) {
            Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
            Ok(_) => true,
        }
    }

    /// Writes the request, reads the final response. `first_byte` is set when the first
    /// response byte arrives.
    pub async fn exchange(
        &mut self,
        request: &RequestHead<'_>,
        body: &[u8],
        first_byte: &mut Option<Instant>,
    ) -> Result<Answer, Failure> {
        let fail = |kind, message, written, answered| Failure {
            kind,
            message,
            written,
            answered,
        };
        self.out.clear();
        if self.out.capacity() > KEPT_WRITE_BUFFER {
            self.out = Vec::new();
        }
        request
            .encode(body.len(), &mut self.out)
            .map_err(|m| fail(FailureKind::Other, m, false, false))?;
        // A small body goes out in the same write as the head; a large one is not copied.
        let separate = body.len() > SMALL_BODY;
        if !separate {
            self.out.extend_from_slice(body);
        }
        let mut sent = self.stream.write_all(&self.out).await;
        if separate && sent.is_ok() {
            sent = self.stream.write_all(body).await;
        }
        let mut framing = Sent(request.method);
        if let Err(e) = sent {
            // A server may answer before reading the whole request (a 413 for a body over its
            // limit) and close: that answer, if it came, is the outcome, not the failed write.
            if let Some(m) = self.answer_already_received(&mut framing, first_byte) {
                self.served += 1;
                return Ok(Answer {
                    response: m,
                    reusable: false,
                });
            }
            let kind = io_kind(&e).unwrap_or(FailureKind::Other);
            return Err(fail(
                kind,
                format!("sending the request: {e}"),
                false,
                false,
            ));
        }
        let mut answered = false;
        let mut closed = false;
        loop {
            let Parsed {
                response,
                damaged,
                upgraded,
            } = self.parsed();
            if let Some(m) = response {
                if let Some(why) = &m.error {
                    return Err(fail(FailureKind::Protocol, why.clone(), true, true));
                }
                if !m.complete {
                    let message = format!(
                        "the connection closed after {} body bytes, before the response ended",
                        m.body_len
                    );
                    return Err(fail(FailureKind::Reset, message, true, true));
                }
                self.served += 1;
                let reusable = !closed
                    && !upgraded
                    && !damaged
                    && !self.parser.is_tunnel()
                    && self.parser.buffered() == 0
                    && keeps_alive(&m);
                return Ok(Answer {
                    response: m,
                    reusable,
                });
            }
            if closed {
                let message = if answered {
                    "the connection closed before the response head ended"
                } else {
                    "the connection closed before any response"
                };
                return Err(fail(FailureKind::Reset, message.into(), true, answered));
            }
            if damaged {
                return Err(fail(
                    FailureKind::Protocol,
                    "the response is not valid HTTP/1.x".into(),
                    true,
                    answered,
                ));
            }
            let n = match self.stream.read(&mut self.read).await {
                Ok(n) => n,
                Err(e) => {
                    let kind = io_kind(&e).unwrap_or(FailureKind::Other);
                    let message = format!("reading the response: {e}");
                    return Err(fail(kind, message, true, answered));
                }
            };
            if n == 0 {
                // End of stream: completes a close-delimited body, or cuts the response.
                self.parser.finish(true, &mut framing);
                closed = true;
                continue;
            }
            if !answered {
                answered = true;
                *first_byte = Some(Instant::now());
            }
            self.parser.feed(&self.read[..n], 0, None, &mut framing);
        }
    }

    /// What the parser made of the bytes fed so far.
    fn parsed(&mut self) -> Parsed {
        let mut p = Parsed::default();
        for event in self.parser.drain_events() {
            match event {
                // Interim (1xx) responses carry no index: the final one follows.
                ParserEvent::Message(m) if m.index.is_some() => p.response = Some(*m),
                ParserEvent::Message(_) => {}
                ParserEvent::Upgraded => p.upgraded = true,
                ParserEvent::BoundaryLoss | ParserEvent::Skipped(_) => p.damaged = true,
            }
        }
        p
    }

    /// A complete final response already waiting in the socket, read without blocking.
    fn answer_already_received(
        &mut self,
        framing: &mut Sent<'_>,
        first_byte: &mut Option<Instant>,
    ) -> Option<Message> {
        loop {
            match self.stream.try_read(&mut self.read) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    first_byte.get_or_insert_with(Instant::now);
                    self.parser.feed(&self.read[..n], 0, None, framing);
                }
            }
        }
        self.parser.finish(true, framing);
        self.parsed()
            .response
            .filter(|m| m.complete && m.error.is_none())
    }
}

/// Whether a response lets its connection carry another request (RFC 9112 §9.3).
fn keeps_alive(m: &Message) -> bool {
    let said = |token: &str| {
        m.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    !said("close") && (m.version != "HTTP/1.0" || said("keep-alive"))
}

/// The parts of a request line and header section.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// Method, a token (`GET`).
    pub method: &'a str,
    /// Origin-form target (`/path?query`), percent-encoded where needed.
    pub target: &'a str,
    /// Header lines, sent in this order and case.
    pub headers: &'a [Header],
}

impl RequestHead<'_> {
    /// Appends the request line and headers for a body of `body_len` bytes. Headers go out
    /// as given (case and order kept), but for `Content-Length` and `Transfer-Encoding`:
    /// `Content-Length` is the encoder's, added when there is a body, or for methods that
    /// expect one. Refuses what would not be one well-formed request (a CR or LF
    /// in a value set by a hook would otherwise smuggle a second one).
    pub fn encode(&self, body_len: usize, out: &mut Vec<u8>) -> Result<(), String> {
        if self.method.is_empty() || !self.method.bytes().all(is_tchar) {
            return Err(format!("method {:?} is not a valid token", self.method));
        }
        if !self.target.starts_with('/') || self.target.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err(format!("{:?} is not a valid request target", self.target));
        }
        out.extend_from_slice(self.method.as_bytes());
        out.push(b' ');
        out.extend_from_slice(self.target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        for h in self.headers {
            // The framing is the encoder's: a `Content-Length` or `Transfer-Encoding` given (by
            // the recording or a hook) would make a second, conflicting one.
            if h.name.eq_ignore_ascii_case("content-length")
                || h.name.eq_ignore_ascii_case("transfer-encoding")
            {
                continue;
            }
            if h.name.is_empty() || !h.name.bytes().all(is_tchar) {
                return Err(format!("header name {:?} is not a valid token", h.name));
            }
            if h.value
                .bytes()
                .any(|b| (b < b' ' && b != b'\t') || b == 0x7f)
            {
                return Err(format!(
                    "header {:?}: the value holds control characters",
                    h.name
                ));
            }
            out.extend_from_slice(h.name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(h.value.trim_matches([' ', '\t']).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        let expects_body = ["POST", "PUT", "PATCH"]
            .iter()
            .any(|m| m.eq_ignore_ascii_case(self.method));
        if body_len > 0 || expects_body {
            out.extend_from_slice(b"Content-Length: ");
            out.extend_from_slice(body_len.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
        Ok(())
    }
}

/// RFC 9110 token characters.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::SocketAddr;
    use std::sync::mpsc;

    use super::*;

    /// A server on loopback for one connection: reads each request (head and Content-Length
    /// body), reports it, answers with the next scripted bytes; closes `linger` after the
    /// last.
    fn serve_for(
        script: Vec<&'static [u8]>,
        linger: std::time::Duration,
    ) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            for answer in script {
                let end = loop {
                    if let Some(head) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        let text = String::from_utf8_lossy(&got[..head]).to_ascii_lowercase();
                        let len: usize = text
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        if got.len() >= head + 4 + len {
                            break head + 4 + len;
                        }
                    }
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                };
                tx.send(got.drain(..end).collect()).unwrap();
                conn.write_all(answer).unwrap();
            }
            std::thread::sleep(linger);
        });
        (addr, rx)
    }

    fn serve(script: Vec<&'static [u8]>) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
        serve_for(script, std::time::Duration::ZERO)
    }

    fn hdr(name: &str, value: &str) -> Header {
        Header::from_bytes(name.as_bytes(), value.as_bytes())
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    async fn connect(addr: SocketAddr, max_body: u64) -> Connection {
        Connection::new(TcpStream::connect(addr).await.unwrap(), max_body)
    }

    /// `GET /` without headers, which must get an answer.
    async fn get(c: &mut Connection, first: &mut Option<Instant>) -> Answer {
        c.exchange(&head("GET", "/", &[]), b"", first)
            .await
            .unwrap()
    }

    fn head<'a>(method: &'a str, target: &'a str, headers: &'a [Header]) -> RequestHead<'a> {
        RequestHead {
            method,
            target,
            headers,
        }
    }

    #[test]
    fn every_response_framing_over_one_connection() {
        let (addr, requests) = serve(vec![
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nX-Mixed-Case: a\r\n\
              Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123456789",
            b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nuntil the close",
        ]);
        runtime().block_on(async {
            let mut c = connect(addr, 4).await;
            let hs = [hdr("Host", "example"), hdr("X-Case-Kept", "1")];
            let mut first = None;
            let a = c
                .exchange(&head("POST", "/a?b=1", &hs), b"{}", &mut first)
                .await
                .unwrap();
            assert!(first.is_some());
            assert_eq!(
                requests.recv().unwrap(),
                b"POST /a?b=1 HTTP/1.1\r\nHost: example\r\nX-Case-Kept: 1\r\n\
                  Content-Length: 2\r\n\r\n{}"
            );
            let m = &a.response;
            assert_eq!((m.status, m.version.as_str()), (200, "HTTP/1.1"));
            assert_eq!(m.headers[0], hdr("X-Mixed-Case", "a"));
            assert_eq!(
                (&m.body[..], m.body_len, m.body_truncated),
                (&b"abcd"[..], 5, true)
            );
            assert!(a.reusable);

            let a = get(&mut c, &mut first).await;
            assert_eq!(requests.recv().unwrap(), b"GET / HTTP/1.1\r\n\r\n");
            assert_eq!((a.response.status, a.response.body_len), (204, 0));
            assert!(a.reusable);

            // HEAD: the Content-Length announces a body that is not sent.
            let a = c
                .exchange(&head("HEAD", "/", &[]), b"", &mut first)
                .await
                .unwrap();
            assert_eq!((a.response.status, a.response.body_len), (200, 0));
            assert!(a.reusable);

            let a = get(&mut c, &mut first).await;
            assert_eq!(
                (&a.response.body[..], a.response.body_len),
                (&b"0123"[..], 10)
            );
            assert!(a.reusable);

            // HTTP/1.0, no length: the body ends with the connection, which is not reused.
            let a = get(&mut c, &mut first).await;
            assert_eq!(
                (&a.response.body[..], a.response.body_len),
                (&b"unti"[..], 15)
            );
            assert!(a.response.complete);
            assert!(!a.reusable);
            assert_eq!(c.served, 5);
        });
    }

    #[test]
    fn a_large_body_arrives_whole() {
        let (addr, requests) = serve(vec![b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n"]);
        let body: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        runtime().block_on(async {
            let mut c = connect(addr, 1024).await;
            let mut first = None;
            let a = c
                .exchange(&head("PUT", "/big", &[]), &body, &mut first)
                .await
                .unwrap();
            assert_eq!(a.response.status, 201);
        });
        let got = requests.recv().unwrap();
        let head = b"PUT /big HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n";
        assert_eq!(&got[..head.len()], head);
        assert!(got[head.len()..] == body[..], "the body arrived changed");
    }

    /// A server that refuses a large body before reading it (answers 413 and closes, as nginx
    /// does past `client_max_body_size`): its answer is the row, not the failed write.
    #[test]
    fn an_early_answer_to_a_large_body_is_recorded() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 413 Payload Too Large\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbig",
            );
            // Dropped with the body unread: the kernel answers the rest with a reset.
        });
        let body = vec![b'x'; 8 << 20];
        let got = runtime().block_on(async {
            let mut c = connect(addr, 1024).await;
            let mut first = None;
            c.exchange(&head("POST", "/upload", &[]), &body, &mut first)
                .await
                .map(|a| (a.response.status, a.response.body, a.reusable))
                .map_err(|f| f.message)
        });
        assert_eq!(got, Ok((413, b"big".to_vec(), false)));
    }

    #[test]
    fn broken_responses_are_failures_that_say_why() {
        let cases: [(&'static [u8], FailureKind, &str, bool); 4] = [
            (
                b"garbage that is not http\r\n\r\n",
                FailureKind::Protocol,
                "not valid HTTP",
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
                FailureKind::Reset,
                "after 3 body bytes",
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Le",
                FailureKind::Reset,
                "before the response head",
                true,
            ),
            (b"", FailureKind::Reset, "before any response", false),
        ];
        for (answer, kind, says, answered) in cases {
            let (addr, _requests) = serve(vec![answer]);
            let f = runtime().block_on(async {
                let mut c = connect(addr, 1 << 20).await;
                let mut first = None;
                match c.exchange(&head("GET", "/", &[]), b"", &mut first).await {
                    Ok(a) => panic!("{answer:?} parsed as status {}", a.response.status),
                    Err(f) => f,
                }
            });
            assert_eq!(f.kind, kind, "{answer:?}: {}", f.message);
            assert!(f.message.contains(says), "{answer:?}: {}", f.message);
            assert_eq!((f.written, f.answered), (true, answered), "{answer:?}");
        }
    }

    #[test]
    fn an_idle_connection_closed_by_the_server_is_noticed() {
        let (addr, _requests) = serve_for(
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"],
            std::time::Duration::from_millis(100),
        );
        runtime().block_on(async {
            let mut c = connect(addr, 1024).await;
            let mut first = None;
            let a = get(&mut c, &mut first).await;
            assert!(a.reusable);
            assert!(!c.closed_while_idle(), "open and quiet");
            // The server closes the connection 100 ms after its answer.
            for _ in 0..200 {
                if c.closed_while_idle() {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            panic!("the close was never noticed");
        });
    }

    #[test]
    fn connection_reuse_follows_the_response() {
        let msg = |version: &str, connection: Option<&str>| Message {
            version: version.into(),
            headers: connection
                .map(|c| hdr("Connection", c))
                .into_iter()
                .collect(),
            ..Message::default()
        };
        assert!(keeps_alive(&msg("HTTP/1.1", None)));
        assert!(!keeps_alive(&msg("HTTP/1.1", Some("Upgrade, CLOSE"))));
        assert!(!keeps_alive(&msg("HTTP/1.0", None)));
        assert!(keeps_alive(&msg("HTTP/1.0", Some("keep-alive"))));
    }

    #[test]
    fn requests_are_written_as_given_or_refused() {
        let mut out = Vec::new();
        let hs = [hdr("x-lower", "v"), hdr("X-Upper", " padded\t")];
        head("PUT", "/p", &hs).encode(0, &mut out).unwrap();
        assert_eq!(
            out,
            b"PUT /p HTTP/1.1\r\nx-lower: v\r\nX-Upper: padded\r\nContent-Length: 0\r\n\r\n"
        );
        // Framing headers given (a hook's second Content-Length) give way to the encoder's.
        let mut out = Vec::new();
        let hs = [
            hdr("Content-Length", "99"),
            hdr("Transfer-Encoding", "chunked"),
            hdr("A", "b"),
        ];
        head("POST", "/p", &hs).encode(3, &mut out).unwrap();
        assert_eq!(
            out,
            b"POST /p HTTP/1.1\r\nA: b\r\nContent-Length: 3\r\n\r\n"
        );
        let refused = [
            ("GET", "/", hdr("X-Evil", "a\r\nX-Smuggled: 1")),
            ("GET", "/", hdr("Bad Name", "v")),
            ("GE T", "/", hdr("A", "b")),
            ("GET", "/a b", hdr("A", "b")),
            ("GET", "http://absolute/", hdr("A", "b")),
        ];
        for (method, target, h) in refused {
            let hs = [h];
            let r = head(method, target, &hs).encode(0, &mut Vec::new());
            assert!(r.is_err(), "{method} {target} {:?} was accepted", hs[0]);
        }
    }
}

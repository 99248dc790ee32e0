//! Unit tests of the message parser, through a minimal [`Framing`] that answers every
//! response with the method of the request at the same position.

use super::*;

#[derive(Default)]
struct Fifo {
    methods: Vec<CompactString>,
    next_response: u64,
    wait: bool,
}

impl Framing for Fifo {
    fn request_head(&mut self, method: &str, _start: u64, _ack: Option<u32>) -> u64 {
        self.methods.push(method.into());
        self.methods.len() as u64 - 1
    }
    fn response_head(
        &mut self,
        status: u16,
        _start: u64,
        _ack: Option<u32>,
        _unparsed: Option<u64>,
    ) -> ResponseFraming {
        if self.wait {
            return ResponseFraming::Wait;
        }
        let index = self.next_response;
        let method = self
            .methods
            .get(index as usize)
            .cloned()
            .unwrap_or_else(|| "GET".into());
        if status >= 200 || status == 101 {
            self.next_response += 1;
        }
        ResponseFraming::Request { index, method }
    }
}

fn messages(p: &mut MessageParser) -> Vec<Message> {
    p.drain_events()
        .filter_map(|e| match e {
            ParserEvent::Message(m) => Some(*m),
            _ => None,
        })
        .collect()
}

fn parse_all(role: Role, chunks: &[&[u8]], fifo: &mut Fifo) -> Vec<Message> {
    let mut p = MessageParser::new(role, ParserLimits::default(), false, 0);
    for (i, c) in chunks.iter().enumerate() {
        p.feed(c, i as i64, None, fifo);
    }
    p.finish(true, fifo);
    messages(&mut p)
}

#[test]
fn chunked_with_extensions_and_trailers_byte_by_byte() {
    let wire = b"POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4;name=v\r\nWiki\r\n5\r\npedia\r\n0\r\nChecksum: abc\r\nX-T: 1\r\n\r\n";
    let chunks: Vec<&[u8]> = wire.chunks(1).collect();
    let msgs = parse_all(Role::Request, &chunks, &mut Fifo::default());
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert!(m.complete);
    assert_eq!(m.body, b"Wikipedia");
    assert_eq!(m.trailers.len(), 2);
    assert_eq!(m.trailers[0].name, "Checksum");
    assert_eq!(m.start_us, 0);
    assert_eq!(
        m.end_us,
        wire.len() as i64 - 1,
        "end time is the time of the last byte"
    );
}

#[test]
fn response_framing_follows_method_and_status() {
    let mut fifo = Fifo {
        methods: vec!["HEAD".into(), "GET".into(), "GET".into(), "GET".into()],
        ..Fifo::default()
    };
    let wire: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n\
HTTP/1.1 100 Continue\r\n\r\n\
HTTP/1.1 204 No Content\r\n\r\n\
HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n\
HTTP/1.0 200 OK\r\n\r\nuntil the end";
    let msgs = parse_all(Role::Response, &[wire], &mut fifo);
    let got: Vec<_> = msgs
        .iter()
        .map(|m| (m.status, m.body.len(), m.complete))
        .collect();
    assert_eq!(
        got,
        vec![
            (200, 0, true),
            (100, 0, true),
            (204, 0, true),
            (304, 0, true),
            (200, 13, true)
        ]
    );
    assert_eq!(
        msgs[1].index, None,
        "an interim response answers no request by itself"
    );
}

#[test]
fn close_delimited_body_cut_by_reset_is_incomplete() {
    let mut p = MessageParser::new(Role::Response, ParserLimits::default(), false, 0);
    let mut fifo = Fifo {
        methods: vec!["GET".into()],
        ..Fifo::default()
    };
    p.feed(b"HTTP/1.1 200 OK\r\n\r\npartial", 1, None, &mut fifo);
    p.finish(false, &mut fifo);
    let m = messages(&mut p);
    assert_eq!(m.len(), 1);
    assert!(!m[0].complete);
    assert_eq!(m[0].body, b"partial");
}

#[test]
fn gap_inside_known_length_body_keeps_framing() {
    let mut fifo = Fifo::default();
    let mut p = MessageParser::new(Role::Request, ParserLimits::default(), false, 0);
    p.feed(
        b"PUT /a HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123",
        1,
        None,
        &mut fifo,
    );
    p.gap(3, 2);
    p.feed(b"789GET /b HTTP/1.1\r\n\r\n", 3, None, &mut fifo);
    p.finish(true, &mut fifo);
    let m = messages(&mut p);
    assert_eq!(m.len(), 2);
    assert!(m[0].gap && m[0].complete);
    assert_eq!(m[0].body, b"0123789");
    assert_eq!(m[0].body_len, 10);
    assert_eq!((m[1].uri.as_str(), m[1].gap), ("/b", false));
}

#[test]
fn gap_across_a_boundary_resyncs_on_next_request_line() {
    let mut fifo = Fifo::default();
    let mut p = MessageParser::new(Role::Request, ParserLimits::default(), false, 0);
    p.feed(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /lo",
        1,
        None,
        &mut fifo,
    );
    p.gap(40, 2);
    p.feed(
        b"st-tail\r\nHost: x\r\n\r\nGET /c HTTP/1.1\r\n\r\n",
        3,
        None,
        &mut fifo,
    );
    p.finish(true, &mut fifo);
    let events: Vec<ParserEvent> = p.drain_events().collect();
    assert!(events
        .iter()
        .any(|e| matches!(e, ParserEvent::BoundaryLoss)));
    let uris: Vec<(String, bool)> = events
        .into_iter()
        .filter_map(|e| {
            if let ParserEvent::Message(m) = e {
                Some((m.uri.clone(), m.gap))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        uris,
        vec![("/a".into(), false), ("/c".into(), true)],
        "the message after a loss is flagged"
    );
}

#[test]
fn body_over_cap_is_truncated_and_counted() {
    let mut fifo = Fifo::default();
    let limits = ParserLimits {
        max_body: 4,
        ..ParserLimits::default()
    };
    let mut p = MessageParser::new(Role::Request, limits, false, 0);
    p.feed(
        b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789",
        1,
        None,
        &mut fifo,
    );
    let m = messages(&mut p);
    assert_eq!(m[0].body, b"0123");
    assert_eq!(m[0].body_len, 10);
    assert!(m[0].body_truncated && m[0].complete);
}

#[test]
fn first_bytes_not_http_reject_the_stream() {
    let mut fifo = Fifo::default();
    let mut p = MessageParser::new(Role::Request, ParserLimits::default(), false, 0);
    p.feed(
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        1,
        None,
        &mut fifo,
    );
    assert!(p.rejected());
    let mut p = MessageParser::new(Role::Request, ParserLimits::default(), false, 0);
    p.feed(b"SSH-2.0-OpenSSH_9.2\r\n", 1, None, &mut fifo);
    assert!(p.rejected());
}

#[test]
fn malformed_request_mid_connection_is_recorded_and_parsing_resumes() {
    let mut fifo = Fifo::default();
    let wire: &[u8] = b"GET /ok HTTP/1.1\r\n\r\nGET /bad HTTP/1.1\r\nBad Header Line\x01\r\n\r\nGET /next HTTP/1.1\r\n\r\n";
    let msgs = parse_all(Role::Request, &[wire], &mut fifo);
    let got: Vec<_> = msgs
        .iter()
        .map(|m| (m.uri.as_str(), m.error.is_some()))
        .collect();
    assert_eq!(got.first(), Some(&("/ok", false)));
    assert_eq!(got.last(), Some(&("/next", false)));
    assert_eq!(
        fifo.methods.len(),
        msgs.len(),
        "every request, parsed or not, holds a place in the pairing"
    );
}

#[test]
fn invalid_head_after_blank_lines_does_not_overrun() {
    // Regression (found by cargo-fuzz): CR/LF before an invalid head were counted twice and
    // the parser indexed past its input.
    let mut fifo = Fifo::default();
    let msgs = parse_all(
        Role::Request,
        &[b"GET /a HTTP/1.1\r\n\r\n\r\n\r\n\x01x"],
        &mut fifo,
    );
    assert_eq!(msgs.len(), 1);
    let msgs = parse_all(Role::Response, &[b"\r\n\r\nX"], &mut Fifo::default());
    assert!(msgs.is_empty());
}

#[test]
fn conflicting_content_length_is_a_parse_error() {
    let mut fifo = Fifo::default();
    let msgs = parse_all(Role::Request, &[b"GET /1 HTTP/1.1\r\n\r\nPOST /x HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd"], &mut fifo);
    assert!(
        msgs.iter().any(|m| m
            .error
            .as_deref()
            .is_some_and(|e| e.contains("Content-Length"))),
        "{msgs:?}"
    );
}

#[test]
fn rfc_9112_framing_is_strict_for_requests() {
    // After a valid request, as a connection would carry it.
    let error_of = |bytes: &[u8]| {
        let mut fifo = Fifo::default();
        let msgs = parse_all(
            Role::Request,
            &[b"GET /1 HTTP/1.1\r\n\r\n", bytes],
            &mut fifo,
        );
        msgs.iter().find_map(|m| m.error.clone())
    };
    // A signed Content-Length.
    let e = error_of(b"POST /x HTTP/1.1\r\nContent-Length: +5\r\n\r\nabcde");
    assert!(
        e.as_deref().is_some_and(|e| e.contains("Content-Length")),
        "{e:?}"
    );
    // A final coding other than chunked: refused, not read to the close.
    let e = error_of(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\nabc");
    assert!(
        e.as_deref()
            .is_some_and(|e| e.contains("final transfer coding")),
        "{e:?}"
    );
    // Space before the colon: an error, not a header silently dropped.
    let e = error_of(
        b"POST /x HTTP/1.1\r\nTransfer-Encoding : chunked\r\nContent-Length: 3\r\n\r\nabc",
    );
    assert!(
        e.is_some(),
        "a framing header with a space before its colon was dropped"
    );
    // A bare LF after chunk data.
    let e = error_of(b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n");
    assert!(e.as_deref().is_some_and(|e| e.contains("CRLF")), "{e:?}");
    // The same bare LF from a server is tolerated.
    let mut fifo = Fifo::default();
    parse_all(Role::Request, &[b"GET / HTTP/1.1\r\n\r\n"], &mut fifo);
    let msgs = parse_all(
        Role::Response,
        &[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n"],
        &mut fifo,
    );
    assert_eq!(msgs[0].body, b"abc");
    assert!(msgs[0].error.is_none(), "{:?}", msgs[0].error);
}

#[test]
fn response_waits_for_its_request() {
    let mut fifo = Fifo {
        wait: true,
        ..Fifo::default()
    };
    let mut p = MessageParser::new(Role::Response, ParserLimits::default(), false, 0);
    p.feed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        1,
        None,
        &mut fifo,
    );
    assert!(messages(&mut p).is_empty());
    assert!(p.buffered() > 0);
    fifo.wait = false;
    fifo.methods.push("GET".into());
    p.resume(&mut fifo);
    let m = messages(&mut p);
    assert_eq!((m.len(), m[0].body.as_slice()), (1, &b"ok"[..]));
}

#[test]
fn a_response_waits_only_so_long() {
    let mut fifo = Fifo {
        wait: true,
        ..Fifo::default()
    };
    let limits = ParserLimits {
        max_body: 100,
        max_head: 100,
    };
    let mut p = MessageParser::new(Role::Response, limits, false, 0);
    p.feed(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        1,
        None,
        &mut fifo,
    );
    for _ in 0..10 {
        p.feed(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            1,
            None,
            &mut fifo,
        );
    }
    assert!(p.buffered() <= 300, "held {}", p.buffered());
    assert!(messages(&mut p).iter().all(|m| m.orphan));
}

#[test]
fn oversized_header_section_is_an_error_not_unbounded_memory() {
    let mut fifo = Fifo::default();
    let limits = ParserLimits {
        max_head: 1024,
        ..ParserLimits::default()
    };
    let mut p = MessageParser::new(Role::Request, limits, false, 0);
    p.feed(b"GET /1 HTTP/1.1\r\n\r\n", 0, None, &mut fifo);
    p.feed(b"GET /big HTTP/1.1\r\n", 1, None, &mut fifo);
    for _ in 0..100 {
        p.feed(
            b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            2,
            None,
            &mut fifo,
        );
    }
    assert!(
        p.buffered() <= (8 << 10) + 100,
        "held {} bytes",
        p.buffered()
    );
}

#[test]
fn an_announced_content_length_does_not_size_an_allocation() {
    let mut fifo = Fifo::default();
    let mut p = MessageParser::new(Role::Request, ParserLimits::default(), false, 0);
    // 16 MiB announced (the cap), 5 bytes sent.
    p.feed(
        b"POST /up HTTP/1.1\r\nContent-Length: 1073741824\r\n\r\nhello",
        0,
        None,
        &mut fifo,
    );
    let held = p.current.as_ref().map_or(0, |m| m.body.capacity());
    assert!(held < 64 << 10, "{held} bytes reserved for 5 that arrived");
    assert_eq!(p.current.as_ref().map(|m| m.body.len()), Some(5));
}

#[test]
fn start_line_detection() {
    assert!(is_start_line(Role::Request, b"PROPFIND /dav/ HTTP/1.1\r"));
    assert!(is_start_line(Role::Request, b"GET http://h/x?y HTTP/1.0"));
    assert!(!is_start_line(Role::Request, b"get / HTTP/1.1"));
    assert!(!is_start_line(Role::Request, b"GET / HTTP/2"));
    assert!(is_start_line(Role::Response, b"HTTP/1.1 404 Not Found\r"));
    assert!(is_start_line(Role::Response, b"HTTP/1.0 200"));
    assert!(!is_start_line(Role::Response, b"HTTP/1.1 20x OK"));
}

mod arbitrary_input {
    //! Random HTTP-ish input (tokens of real messages mixed with noise), cut anywhere, with
    //! gaps: the parser must neither panic nor loop, and must consume or bound what it holds.
    use super::*;
    use proptest::prelude::*;

    fn token() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"GET / HTTP/1.1\r\n".to_vec()),
            Just(b"HTTP/1.1 200 OK\r\n".to_vec()),
            Just(b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()),
            Just(b"Content-Length: 5\r\n".to_vec()),
            Just(b"Content-Length: x\r\n".to_vec()),
            Just(b"Transfer-Encoding: chunked\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"5\r\nhello\r\n".to_vec()),
            Just(b"0\r\n\r\n".to_vec()),
            Just(b"ffffffffffffffffff\r\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..40),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]
        #[test]
        fn never_panics_or_hangs(tokens in prop::collection::vec(token(), 0..40), cuts in prop::collection::vec((any::<u8>(), any::<u8>()), 0..20), response in any::<bool>()) {
            let data: Vec<u8> = tokens.concat();
            let role = if response { Role::Response } else { Role::Request };
            let mut fifo = Fifo { methods: vec!["GET".into(); 64], ..Fifo::default() };
            let mut p = MessageParser::new(role, ParserLimits { max_body: 64, max_head: 256 }, false, 0);
            let mut pos = 0usize;
            for (i, (step, gap)) in cuts.iter().enumerate() {
                let end = (pos + *step as usize).min(data.len());
                p.feed(&data[pos..end], i as i64, None, &mut fifo);
                pos = end;
                if gap % 5 == 0 {
                    p.gap(u64::from(*gap), i as i64);
                }
            }
            p.feed(&data[pos..], 99, None, &mut fifo);
            p.finish(false, &mut fifo);
            prop_assert!(p.buffered() <= MAX_LINE + 256);
            let _ = p.drain_events().count();
        }
    }
}

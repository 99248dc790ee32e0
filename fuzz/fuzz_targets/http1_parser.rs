//! Fuzzes the HTTP/1.x codec alone: arbitrary bytes, cut at arbitrary points, with gaps, into
//! a request parser and a response parser, and every decoded body through content decoding.
//!
//! Input: records `[op u8][len u8][bytes…]`. Op bit 0 picks the parser (request, response);
//! op bit 1 makes the record a gap of `len * 97` lost bytes instead of data; op bit 2 ends the
//! stream (clean when bit 3 is set) and starts a fresh parser.
//!
//! Checks besides "no panic": memory held by a parser stays within its limits, and content
//! decoding never returns more than its cap.
//!
//! Run: `cargo fuzz run http1_parser fuzz/corpus/http1_parser` from the repository root (needs
//! cargo-fuzz); the corpus starts from the proxy's smuggling suite (`fuzz/seed_http1.py`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shadowtap_http1::{decode_body, Framing, MessageParser, ParserEvent, ParserLimits, ResponseFraming, Role};

/// Pairs responses with requests in order; waits when a response comes first.
#[derive(Default)]
struct Fifo {
    methods: Vec<String>,
    answered: u64,
}

impl Framing for Fifo {
    fn request_head(&mut self, method: &str, _: u64, _: Option<u32>) -> u64 {
        self.methods.push(method.to_owned());
        self.methods.len() as u64 - 1
    }
    fn response_head(&mut self, status: u16, _: u64, _: Option<u32>, _: Option<u64>) -> ResponseFraming {
        match self.methods.get(self.answered as usize) {
            Some(m) => {
                let index = self.answered;
                if status >= 200 {
                    self.answered += 1;
                }
                ResponseFraming::Request { index, method: m.as_str().into() }
            }
            None if self.methods.len() > 8 => ResponseFraming::Orphan,
            None => ResponseFraming::Request { index: 0, method: "GET".into() },
        }
    }
}

const LIMITS: ParserLimits = ParserLimits { max_body: 4096, max_head: 8192 };

fn parsers() -> [MessageParser; 2] {
    [
        MessageParser::new(Role::Request, LIMITS, false, 0),
        MessageParser::new(Role::Response, LIMITS, true, 0),
    ]
}

fn check(parser: &mut MessageParser) {
    for event in parser.drain_events() {
        if let ParserEvent::Message(m) = event {
            assert!(m.body.len() as u64 <= LIMITS.max_body, "body over the cap");
            if let Some(coding) = m.header("content-encoding") {
                if let Ok(Some(out)) = decode_body(coding, &m.body, 1 << 16) {
                    assert!(out.len() <= 1 << 16, "decoded body over the cap");
                }
            }
        }
    }
    // Unconsumed input is bounded by the head limit plus one read; the current body by the cap.
    assert!(
        parser.buffered_bytes() <= 4 * (LIMITS.max_head + LIMITS.max_body as usize) + 256,
        "parser holds {} bytes",
        parser.buffered_bytes()
    );
}

fuzz_target!(|data: &[u8]| {
    let mut framing = Fifo::default();
    let mut p = parsers();
    let (mut rest, mut ts) = (data, 0i64);
    while rest.len() >= 2 {
        let (op, len) = (rest[0], usize::from(rest[1]).min(rest.len() - 2));
        let bytes = &rest[2..2 + len];
        rest = &rest[2 + len..];
        ts += 1;
        let side = usize::from(op & 1);
        if op & 4 != 0 {
            for parser in &mut p {
                parser.finish(op & 8 != 0, &mut framing);
                check(parser);
            }
            p = parsers();
            framing = Fifo::default();
        } else if op & 2 != 0 {
            p[side].gap(len as u64 * 97, ts);
        } else {
            p[side].feed(bytes, ts, None, &mut framing);
        }
        check(&mut p[side]);
    }
    for parser in &mut p {
        parser.finish(false, &mut framing);
        check(parser);
    }
});

//! One TCP connection's HTTP conversation: which side is the client, the request and response
//! parsers, and the pairing of each request with its final response.
//!
//! Pairing is first-in-first-out, as HTTP/1.1 requires (RFC 9112 §9.3.2), with one check taken
//! from TCP itself: a server cannot answer a request before it has received the request's first
//! byte, so a response whose segment acknowledges less of the client stream than the start of
//! the next unanswered request answers something the capture never saw (it began before the
//! capture did). Such responses are counted and dropped instead of shifting every later pair.

pub mod tls;
use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Arc;

use shadowtap_core::exchange::{Body, CompactString, Exchange, ExchangeFlags};
use shadowtap_core::id::stable_id;

use shadowtap_http1::{
    is_start_line, Framing, Message, MessageParser, ParserEvent, ParserLimits, ResponseFraming,
    Role,
};

/// A TCP endpoint.
pub type Endpoint = (IpAddr, u16);

/// Counters of one connection, added into the capture summary.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnectionStats {
    /// Responses that answer no request in the capture.
    pub orphan_responses: u64,
    /// Bytes skipped because they were not HTTP (resynchronisation, tunnels, partial heads).
    pub skipped_bytes: u64,
    /// Losses at message boundaries (whole messages may be missing).
    pub boundary_losses: u64,
    /// Requests given up waiting for a response because too many were outstanding.
    pub unanswered_overflow: u64,
}

struct PendingExchange {
    index: u64,
    method: CompactString,
    start_offset: u64,
    request: Option<Message>,
    interim: Vec<u16>,
    response: Option<Message>,
    /// ACK carried by the request's first segment: how much of the server stream the client
    /// had received when it sent the request.
    ack: Option<u32>,
    /// The response was sent but could not be parsed (lost or damaged in capture).
    response_lost: bool,
    /// The response paired with this request came after a loss in the server stream that
    /// TCP's acknowledgments could not tie to one request (see [`Pairing::resync_proven`]).
    pairing_unproven: bool,
}

/// The pairing side of a connection, handed to the parsers as their [`Framing`].
struct Pairing {
    pending: VecDeque<PendingExchange>,
    next_request: u64,
    next_response: u64,
    /// The client stream's first sequence number, to read the server's ACKs as offsets.
    client_base_seq: Option<u32>,
    /// The server stream's first sequence number, to compare server offsets with client ACKs.
    server_base_seq: Option<u32>,
    requests_done: bool,
    /// Client stream offset up to which the client parser has parsed every byte.
    client_consumed: u64,
    /// A request on this connection was sent before the previous response began arriving
    /// (pipelining): after a loss, requests then cannot be told apart by acknowledgments.
    pipelined: bool,
    /// Since the last loss in the server stream, responses are paired by position alone,
    /// unconfirmed by acknowledgments.
    server_unproven: bool,
}

/// How far sequence number (or 32-bit stream offset) `a` lies after `b`, modulo 2^32 as TCP
/// compares them: negative when `a` is before `b`.
fn seq_diff(a: u32, b: u32) -> i32 {
    a.wrapping_sub(b) as i32
}

impl Pairing {
    /// After a loss in the server stream, is it proven that the response starting at server
    /// offset `start` (carrying `ack`) answers pending request `j`, sent with `req_ack`, and
    /// no other?
    ///
    /// - No later request: when the server sent the response it had received no client byte
    ///   beyond request `j` ([`Self::no_later_request_received`]).
    /// - No earlier request: the client sent `j` before receiving any of this response
    ///   (`j`'s ACK is at most `start`), and, as the client does not pipeline on this
    ///   connection, only after receiving the whole response to the request before it. So
    ///   that response ended before this one began.
    fn resync_proven(&self, j: u64, req_ack: Option<u32>, start: u64, ack: Option<u32>) -> bool {
        let (Some(req_ack), Some(server_base)) = (req_ack, self.server_base_seq) else {
            return false;
        };
        !self.pipelined
            && self.no_later_request_received(j, ack)
            && seq_diff(server_base.wrapping_add(start as u32), req_ack) >= 0
    }

    /// A response carrying `ack` was sent before the server received any byte of a request
    /// after request `j`: every client byte below `ack` is parsed, and no request after `j`
    /// starts below it.
    fn no_later_request_received(&self, j: u64, ack: Option<u32>) -> bool {
        let (Some(ack), Some(client_base)) = (ack, self.client_base_seq) else {
            return false;
        };
        let acked = ack.wrapping_sub(client_base);
        seq_diff(self.client_consumed as u32, acked) >= 0
            && !self
                .pending
                .iter()
                .any(|p| p.index > j && seq_diff(acked, p.start_offset as u32) > 0)
    }

    /// Notes pipelining: the request after `index` left before the response to `index`,
    /// starting at server offset `start`, began to arrive.
    fn note_pipelining(&mut self, index: u64, start: u64) {
        let Some(server_base) = self.server_base_seq else {
            return;
        };
        let next_ack = self
            .pending
            .iter()
            .find(|p| p.index == index + 1)
            .and_then(|p| p.ack);
        if next_ack.is_some_and(|a| seq_diff(server_base.wrapping_add(start as u32), a) >= 0) {
            self.pipelined = true;
        }
    }
}

impl Framing for Pairing {
    fn request_head(&mut self, method: &str, start_offset: u64, ack: Option<u32>) -> u64 {
        let index = self.next_request;
        self.next_request += 1;
        self.pending.push_back(PendingExchange {
            index,
            method: method.into(),
            start_offset,
            request: None,
            interim: Vec::new(),
            response: None,
            ack,
            response_lost: false,
            pairing_unproven: false,
        });
        index
    }

    fn response_head(
        &mut self,
        status: u16,
        start_offset: u64,
        ack: Option<u32>,
        unparsed_from: Option<u64>,
    ) -> ResponseFraming {
        loop {
            let next = self.next_response;
            let Some(pos) = self.pending.iter().position(|p| p.index == next) else {
                return if self.requests_done {
                    ResponseFraming::Orphan
                } else {
                    ResponseFraming::Wait
                };
            };
            let (req_start, req_ack) = (self.pending[pos].start_offset, self.pending[pos].ack);
            // A server cannot answer a request before receiving its first byte.
            if let (Some(ack), Some(base)) = (ack, self.client_base_seq) {
                if seq_diff(ack, base.wrapping_add(req_start as u32)) <= 0 {
                    return ResponseFraming::Orphan;
                }
            }
            // Server bytes that could not be parsed and were sent after the client sent this
            // request (the unparsed run reaches beyond the ACK the request carried) hold this
            // request's response, unless they were only an interim one: that response was
            // lost, and this one answers a later request. Not so when the server, sending this
            // response, had received no byte of a later request: then it answers this one.
            if let (Some(_), Some(req_ack), Some(base)) =
                (unparsed_from, req_ack, self.server_base_seq)
            {
                let unparsed_after_request =
                    seq_diff(base.wrapping_add(start_offset as u32), req_ack) > 0;
                if unparsed_after_request && !self.no_later_request_received(next, ack) {
                    self.pending[pos].response_lost = true;
                    self.next_response += 1;
                    continue;
                }
            }
            let final_response = status >= 200 || status == 101 || status == 0;
            if unparsed_from.is_some() {
                // The first head after a loss: pairing is certain again only if TCP proves it.
                self.server_unproven =
                    !(final_response && self.resync_proven(next, req_ack, start_offset, ack));
            }
            if final_response {
                self.note_pipelining(next, start_offset);
                self.pending[pos].pairing_unproven = self.server_unproven;
                self.next_response += 1;
            }
            return ResponseFraming::Request {
                index: next,
                method: self.pending[pos].method.clone(),
            };
        }
    }
}

/// Bytes held while detecting, with the capture time and ACK of their segment.
type HeldChunk = (Vec<u8>, i64, Option<u32>);

enum Mode {
    /// Waiting to see which side sends requests; bytes held per direction.
    Detecting([Vec<HeldChunk>; 2]),
    /// Parsing HTTP.
    Http,
    /// HTTP/2 in clear: the client's preface was seen.
    H2(Box<crate::h2::H2Session>),
    /// TLS, read with the key log: the HTTP inside is an inner connection.
    Tls(Box<tls::TlsTap>),
    /// Not HTTP: bytes are ignored.
    NotHttp,
}

/// Bytes per direction held while deciding whether a connection seen mid-stream is HTTP.
const DETECT_LIMIT: usize = 16 << 10;
const MAX_OUTSTANDING: usize = 1024;

/// The HTTP conversation on one TCP connection. Direction 0 goes from `endpoints[0]` to
/// `endpoints[1]`.
pub struct HttpConnection {
    endpoints: [Endpoint; 2],
    client_dir: Option<usize>,
    mid_stream: bool,
    limits: ParserLimits,
    source: Arc<str>,
    connection_id: String,
    mode: Mode,
    parsers: Option<[MessageParser; 2]>,
    pairing: Pairing,
    /// A loss at a message boundary happened: later pairs on this connection are uncertain.
    uncertain: bool,
    upgraded: bool,
    base_seq: [Option<u32>; 2],
    /// Stream bytes of each direction dropped before parsing started (lost during detection).
    detect_offset: [u64; 2],
    client_ended: bool,
    /// What the server sent before the client's first byte, when the handshake named the
    /// client: held until the client's first bytes say HTTP/1 or HTTP/2 (an HTTP/2 server may
    /// send its SETTINGS first).
    early_server: Vec<HeldChunk>,
    /// The server side ended (clean or not) before the client side did.
    server_end: Option<bool>,
    stats: ConnectionStats,
    out: Vec<Exchange>,
    /// The key log: TLS connections are read with it (none: skipped as not HTTP).
    tls_keys: Option<Arc<shadowtap_tls::KeyLog>>,
    first_us: i64,
}

impl HttpConnection {
    /// A connection between `endpoints`, first seen at `first_us`. `client_dir` is known when
    /// the handshake was seen; `base_seq` are each direction's first data sequence numbers.
    pub fn new(
        endpoints: [Endpoint; 2],
        client_dir: Option<usize>,
        first_us: i64,
        limits: ParserLimits,
        source: Arc<str>,
    ) -> Self {
        let [a, b] = endpoints;
        let connection_id = stable_id(&[
            source.as_bytes(),
            a.0.to_string().as_bytes(),
            &a.1.to_be_bytes(),
            b.0.to_string().as_bytes(),
            &b.1.to_be_bytes(),
            &first_us.to_be_bytes(),
        ]);
        let mut conn = HttpConnection {
            endpoints,
            client_dir: None,
            mid_stream: client_dir.is_none(),
            limits,
            source,
            connection_id,
            mode: Mode::Detecting([Vec::new(), Vec::new()]),
            parsers: None,
            pairing: Pairing {
                pending: VecDeque::new(),
                next_request: 0,
                next_response: 0,
                client_base_seq: None,
                server_base_seq: None,
                requests_done: false,
                client_consumed: 0,
                pipelined: false,
                server_unproven: false,
            },
            uncertain: false,
            upgraded: false,
            base_seq: [None, None],
            detect_offset: [0, 0],
            client_ended: false,
            early_server: Vec::new(),
            server_end: None,
            stats: ConnectionStats::default(),
            out: Vec::new(),
            tls_keys: None,
            first_us,
        };
        if let Some(dir) = client_dir {
            conn.start_http(dir);
        }
        conn
    }

    /// Reads TLS with `keys` (`--tls-keylog`) instead of skipping it.
    pub fn with_tls_keys(mut self, keys: Option<Arc<shadowtap_tls::KeyLog>>) -> Self {
        self.tls_keys = keys;
        self
    }

    /// Switches to reading TLS when a key log is given and `data`, the first bytes of `dir`,
    /// start a TLS handshake; whether it did. `held` bytes of the other direction go first.
    fn start_tls_if_handshake(
        &mut self,
        dir: usize,
        data: &[u8],
        ts_us: i64,
        held: &[HeldChunk],
    ) -> bool {
        let Some(keys) = self.tls_keys.clone() else {
            return false;
        };
        if !shadowtap_tls::looks_like_handshake(data) {
            return false;
        }
        let mut tap = tls::TlsTap::new(
            self.endpoints,
            self.first_us,
            self.limits,
            self.source.clone(),
            keys,
        );
        tap.feed(dir, data, ts_us);
        for (bytes, ts, _) in held {
            tap.feed(1 - dir, bytes, *ts);
        }
        self.parsers = None;
        self.mode = Mode::Tls(Box::new(tap));
        true
    }

    /// TLS counters, for a connection read as TLS.
    pub fn tls_stats(&self) -> Option<tls::TlsStats> {
        match &self.mode {
            Mode::Tls(t) => Some(t.stats()),
            _ => None,
        }
    }

    /// Tells the connection the sequence number of stream offset 0 in direction `dir`.
    pub fn set_base_seq(&mut self, dir: usize, seq: u32) {
        self.base_seq[dir] = Some(seq);
        if let Some(c) = self.client_dir {
            self.pairing.client_base_seq = self.base_seq[c];
            self.pairing.server_base_seq = self.base_seq[1 - c];
        }
    }

    /// Bytes held in memory for this connection: bytes waiting for protocol detection,
    /// parser buffers and the messages of exchanges not yet complete.
    pub fn buffered_bytes(&self) -> usize {
        let held = match &self.mode {
            Mode::Detecting(dirs) => dirs.iter().flatten().map(|(b, _, _)| b.len()).sum(),
            Mode::H2(h2) => h2.buffered_bytes(),
            Mode::Tls(t) => t.buffered_bytes(),
            _ => 0,
        };
        let parsers: usize = self
            .parsers
            .as_ref()
            .map_or(0, |ps| ps.iter().map(MessageParser::buffered_bytes).sum());
        let pending: usize = self
            .pairing
            .pending
            .iter()
            .map(|p| {
                p.request.as_ref().map_or(0, Message::held_bytes)
                    + p.response.as_ref().map_or(0, Message::held_bytes)
            })
            .sum();
        held + parsers + pending
    }

    /// Which direction carries requests, once known.
    pub fn client_dir(&self) -> Option<usize> {
        match &self.mode {
            Mode::Tls(t) => t.inner().and_then(HttpConnection::client_dir),
            _ => self.client_dir,
        }
    }

    /// True once the connection is known not to carry HTTP/1.x.
    pub fn is_not_http(&self) -> bool {
        matches!(self.mode, Mode::NotHttp)
    }

    /// True once at least one HTTP message was parsed.
    pub fn saw_http(&self) -> bool {
        if let Mode::H2(h2) = &self.mode {
            return h2.saw_streams();
        }
        if let Mode::Tls(t) = &self.mode {
            return t.inner().is_some_and(HttpConnection::saw_http);
        }
        self.parsers
            .as_ref()
            .is_some_and(|p| p[0].messages_started() + p[1].messages_started() > 0)
    }

    /// After a `101` that switched to `h2c` (RFC 7540 §3.2): the upgraded request becomes the
    /// HTTP/2 connection's stream 1, answered in HTTP/2 (its row carries that answer, not the
    /// 101), and the rest of the connection is decoded as HTTP/2 from `after` (each
    /// direction's bytes past the upgrade).
    fn upgrade_to_h2c(&mut self, after: [Vec<u8>; 2]) {
        let Some(client) = self.client_dir else {
            return;
        };
        let is_h2c = |hs: &[shadowtap_http1::Header]| {
            hs.iter().any(|h| {
                h.name.eq_ignore_ascii_case("upgrade")
                    && h.value
                        .split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("h2c"))
            })
        };
        let switched = self.out.last().is_some_and(|e| {
            e.status == Some(101) && is_h2c(&e.response_headers) && is_h2c(&e.request_headers)
        });
        if !switched {
            return;
        }
        let Some(upgraded) = self.out.pop() else {
            return;
        };
        let mut session = crate::h2::H2Session::upgraded(
            self.endpoints,
            client,
            self.connection_id.clone(),
            self.source.clone(),
            self.limits.max_body,
            &upgraded,
        );
        let ts = upgraded
            .response_end_us
            .unwrap_or(upgraded.request_start_us);
        for d in [client, 1 - client] {
            if !after[d].is_empty() {
                session.feed(d, &after[d], ts);
            }
        }
        self.parsers = None;
        self.mode = Mode::H2(Box::new(session));
    }

    /// Parses what the server sent before the client, held for the HTTP/2 check.
    fn flush_early_server(&mut self) {
        let early = std::mem::take(&mut self.early_server);
        if let Some(client) = self.client_dir {
            for (bytes, ts, a) in &early {
                self.feed(1 - client, bytes, *ts, *a);
            }
        }
    }

    /// The HTTP/2 counters, when the connection is HTTP/2.
    pub fn h2_stats(&self) -> Option<crate::h2::H2Stats> {
        match &self.mode {
            Mode::H2(h2) => Some(h2.stats()),
            Mode::Tls(t) => t.inner().and_then(HttpConnection::h2_stats),
            _ => None,
        }
    }

    /// Switches to HTTP/2 when the client's first bytes are its preface (`data` is what the
    /// client sent first); whether it did.
    fn start_h2_if_preface(&mut self, client_dir: usize, data: &[u8]) -> bool {
        if data.len() < 3 || !shadowtap_http2::starts_with_preface(data) {
            return false;
        }
        self.client_dir = Some(client_dir);
        self.parsers = None;
        self.mode = Mode::H2(Box::new(crate::h2::H2Session::new(
            self.endpoints,
            client_dir,
            self.connection_id.clone(),
            self.source.clone(),
            self.limits.max_body,
        )));
        true
    }

    /// Counters.
    pub fn stats(&self) -> ConnectionStats {
        let mut s = self.stats;
        if let Some(i) = match &self.mode {
            Mode::Tls(t) => t.inner(),
            _ => None,
        } {
            let inner = i.stats();
            s.orphan_responses += inner.orphan_responses;
            s.skipped_bytes += inner.skipped_bytes;
            s.boundary_losses += inner.boundary_losses;
            s.unanswered_overflow += inner.unanswered_overflow;
        }
        s
    }

    /// Takes the exchanges completed so far.
    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        if let Mode::H2(h2) = &mut self.mode {
            self.out.extend(h2.take_exchanges());
        }
        if let Mode::Tls(t) = &mut self.mode {
            self.out.extend(t.take_exchanges());
        }
        std::mem::take(&mut self.out)
    }

    fn start_http(&mut self, client_dir: usize) {
        self.client_dir = Some(client_dir);
        let server_dir = 1 - client_dir;
        let req = MessageParser::new(
            Role::Request,
            self.limits,
            self.mid_stream,
            self.detect_offset[client_dir],
        );
        let resp = MessageParser::new(
            Role::Response,
            self.limits,
            self.mid_stream,
            self.detect_offset[server_dir],
        );
        self.parsers = Some(if client_dir == 0 {
            [req, resp]
        } else {
            [resp, req]
        });
        self.pairing.client_base_seq = self.base_seq[client_dir];
        self.pairing.server_base_seq = self.base_seq[server_dir];
        self.mode = Mode::Http;
    }

    /// Contiguous bytes of direction `dir`.
    pub fn on_data(&mut self, dir: usize, data: &[u8], ts_us: i64, ack: Option<u32>) {
        match &mut self.mode {
            Mode::NotHttp => {}
            Mode::H2(h2) => h2.feed(dir, data, ts_us),
            Mode::Tls(t) => t.feed(dir, data, ts_us),
            Mode::Http => {
                // The handshake named the client; its first bytes may be the HTTP/2 preface
                // (prior knowledge, as gRPC does).
                let before_client = !self.mid_stream
                    && self.detect_offset == [0, 0]
                    && self
                        .parsers
                        .as_ref()
                        .is_some_and(|p| p[0].consumed() + p[1].consumed() == 0)
                    && !self.saw_http();
                let held: usize = self.early_server.iter().map(|c| c.0.len()).sum();
                if before_client && Some(dir) != self.client_dir && held < DETECT_LIMIT {
                    self.early_server.push((data.to_vec(), ts_us, ack));
                    return;
                }
                let early = std::mem::take(&mut self.early_server);
                if before_client
                    && Some(dir) == self.client_dir
                    && self.start_tls_if_handshake(dir, data, ts_us, &early)
                {
                    return;
                }
                let server = self.client_dir.map_or(1 - dir, |c| 1 - c);
                if before_client
                    && Some(dir) == self.client_dir
                    && self.start_h2_if_preface(dir, data)
                {
                    if let Mode::H2(h2) = &mut self.mode {
                        h2.feed(dir, data, ts_us);
                        for (bytes, ts, _) in &early {
                            h2.feed(server, bytes, *ts);
                        }
                    }
                    return;
                }
                let client_first = Some(dir) == self.client_dir;
                if client_first {
                    self.feed(dir, data, ts_us, ack);
                }
                for (bytes, ts, a) in &early {
                    self.feed(server, bytes, *ts, *a);
                }
                if !client_first {
                    self.feed(dir, data, ts_us, ack);
                }
            }
            Mode::Detecting(held) => {
                if held[dir].is_empty() && self.detect_offset[dir] == 0 && !self.mid_stream {
                    // Before any other reading: the client's HTTP/2 preface.
                    if shadowtap_http2::starts_with_preface(data) && data.len() >= 3 {
                        let held = std::mem::take(held);
                        self.start_h2_if_preface(dir, data);
                        if let Mode::H2(h2) = &mut self.mode {
                            for (bytes, ts, _) in &held[1 - dir] {
                                h2.feed(1 - dir, bytes, *ts);
                            }
                            h2.feed(dir, data, ts_us);
                        }
                        return;
                    }
                }
                if held[dir].is_empty() && looks_like_tls(data) {
                    let held = std::mem::take(held);
                    if self.start_tls_if_handshake(dir, data, ts_us, &held[1 - dir]) {
                        return;
                    }
                    self.stats.skipped_bytes += data.len() as u64;
                    self.mode = Mode::NotHttp;
                    return;
                }
                held[dir].push((data.to_vec(), ts_us, ack));
                if let Some(client) = detect_client(held) {
                    let held = std::mem::take(held);
                    self.start_http(client);
                    // Requests first, so that held responses find their requests.
                    for d in [client, 1 - client] {
                        for (bytes, ts, ack) in &held[d] {
                            self.feed(d, bytes, *ts, *ack);
                        }
                    }
                } else if held
                    .iter()
                    .any(|h| h.iter().map(|c| c.0.len()).sum::<usize>() > DETECT_LIMIT)
                {
                    let n: usize = held.iter().flatten().map(|c| c.0.len()).sum();
                    self.stats.skipped_bytes += n as u64;
                    self.mode = Mode::NotHttp;
                }
            }
        }
    }

    /// `len` bytes of direction `dir` were never captured.
    pub fn on_gap(&mut self, dir: usize, len: u64, ts_us: i64) {
        match &mut self.mode {
            Mode::H2(h2) => h2.gap(dir, len),
            Mode::Tls(t) => t.gap(dir, len, ts_us),
            Mode::Http => {
                if let Some(p) = self.parsers.as_mut() {
                    p[dir].gap(len, ts_us);
                }
                self.after_parse();
            }
            Mode::Detecting(held) => {
                // Bytes before a loss cannot be judged reliably; start over after it.
                let dropped = held[dir].iter().map(|c| c.0.len() as u64).sum::<u64>();
                self.stats.skipped_bytes += dropped;
                self.detect_offset[dir] += dropped + len;
                held[dir].clear();
            }
            Mode::NotHttp => {}
        }
    }

    /// Direction `dir` ended (`clean` for FIN; false for RST, eviction or end of capture).
    ///
    /// The server side is finished only after the client side: a response held back waiting
    /// for its request (the capture delivered the server's bytes and FIN first) must still
    /// meet that request.
    pub fn on_end(&mut self, dir: usize, clean: bool) {
        if let Mode::Tls(t) = &mut self.mode {
            t.end(dir, clean);
            return;
        }
        // HTTP/2 streams end with their own frames; what a side's end leaves open is emitted
        // as seen by `finish`.
        if !matches!(self.mode, Mode::Http) {
            return;
        }
        self.flush_early_server();
        let Some(client) = self.client_dir else {
            return;
        };
        if dir == client {
            if self.client_ended {
                return;
            }
            self.client_ended = true;
            if let Some(p) = self.parsers.as_mut() {
                p[client].finish(clean, &mut self.pairing);
            }
            self.pairing.requests_done = true;
            self.after_parse();
            // Responses held back waiting for a request now know there will be none.
            if let Some(p) = self.parsers.as_mut() {
                p[1 - client].resume(&mut self.pairing);
            }
            self.after_parse();
            if let Some(server_clean) = self.server_end.take() {
                self.finish_server(server_clean);
            }
        } else if self.client_ended {
            self.finish_server(clean);
        } else {
            self.server_end = Some(clean);
        }
    }

    fn finish_server(&mut self, clean: bool) {
        let Some(client) = self.client_dir else {
            return;
        };
        if let Some(p) = self.parsers.as_mut() {
            p[1 - client].finish(clean, &mut self.pairing);
        }
        self.after_parse();
    }

    /// The connection is over: every request seen becomes an exchange.
    pub fn finish(&mut self) {
        if matches!(self.mode, Mode::Http) {
            self.flush_early_server();
        }
        if let Mode::H2(h2) = &mut self.mode {
            h2.finish();
            self.out.extend(h2.take_exchanges());
            return;
        }
        if let Mode::Tls(t) = &mut self.mode {
            t.finish();
            self.out.extend(t.take_exchanges());
            return;
        }
        if let Mode::Detecting(held) = &self.mode {
            self.stats.skipped_bytes +=
                held.iter().flatten().map(|c| c.0.len() as u64).sum::<u64>();
        }
        if let (Mode::Http, Some(client)) = (&self.mode, self.client_dir) {
            self.on_end(client, false);
            self.on_end(1 - client, false);
        }
        while let Some(p) = self.pairing.pending.pop_front() {
            self.emit(p);
        }
    }

    fn feed(&mut self, dir: usize, data: &[u8], ts_us: i64, ack: Option<u32>) {
        let Some(parsers) = self.parsers.as_mut() else {
            return;
        };
        parsers[dir].feed(data, ts_us, ack, &mut self.pairing);
        if Some(dir) == self.client_dir {
            self.pairing.client_consumed = parsers[dir].consumed();
            self.after_parse();
            if let Some(p) = self.parsers.as_mut() {
                p[1 - dir].resume(&mut self.pairing);
            }
        }
        self.after_parse();
        if Some(dir) == self.client_dir
            && parsers_rejected(self.parsers.as_ref(), dir)
            && !self.saw_http()
        {
            self.mode = Mode::NotHttp;
            self.parsers = None;
            self.pairing.pending.clear();
        }
    }

    fn after_parse(&mut self) {
        let Some(parsers) = self.parsers.as_mut() else {
            return;
        };
        let client = self
            .client_dir
            .expect("parsers exist once the client is known");
        let mut upgraded = false;
        for dir in [client, 1 - client] {
            let events: Vec<ParserEvent> = parsers[dir].drain_events().collect();
            for ev in events {
                match ev {
                    ParserEvent::Message(m) => {
                        if dir == client {
                            if let Some(p) = self
                                .pairing
                                .pending
                                .iter_mut()
                                .find(|p| Some(p.index) == m.index)
                            {
                                p.request = Some(*m);
                            }
                        } else if m.orphan {
                            self.stats.orphan_responses += 1;
                        } else if let Some(p) = self
                            .pairing
                            .pending
                            .iter_mut()
                            .find(|p| Some(p.index) == m.index)
                        {
                            p.response = Some(*m);
                        } else if let Some(p) = m
                            .interim_of
                            .and_then(|i| self.pairing.pending.iter_mut().find(|p| p.index == i))
                        {
                            // An interim (1xx) response of the request it was parsed for (by
                            // now the final response may have been parsed too).
                            p.interim.push(m.status);
                        }
                    }
                    ParserEvent::BoundaryLoss => {
                        self.stats.boundary_losses += 1;
                        // A loss in the client stream can hide whole requests: every later
                        // pair is uncertain. One in the server stream is judged by the pairing
                        // at the next response head (`Pairing::resync_proven`).
                        if dir == client {
                            self.uncertain = true;
                        }
                    }
                    ParserEvent::Skipped(n) => self.stats.skipped_bytes += n,
                    ParserEvent::Upgraded => upgraded = true,
                }
            }
        }
        // The new protocol's first bytes, each direction's, in case it is HTTP/2 (`h2c`).
        let mut after_upgrade = [Vec::new(), Vec::new()];
        if upgraded {
            self.upgraded = true;
            for (d, p) in parsers.iter_mut().enumerate() {
                after_upgrade[d] = p.take_tunnelled();
                p.enter_tunnel();
            }
        }
        while self
            .pairing
            .pending
            .front()
            .is_some_and(|p| p.request.is_some() && (p.response.is_some() || p.response_lost))
        {
            let p = self.pairing.pending.pop_front().expect("front exists");
            self.emit(p);
        }
        if upgraded {
            self.upgrade_to_h2c(after_upgrade);
        }
        while self.pairing.pending.len() > MAX_OUTSTANDING {
            // A one-sided capture (only client → server mirrored) would otherwise hold every
            // request forever. Give up on the oldest: it becomes a row without a response.
            let p = self.pairing.pending.pop_front().expect("over the limit");
            self.pairing.next_response = self.pairing.next_response.max(p.index + 1);
            self.stats.unanswered_overflow += 1;
            self.uncertain = true;
            self.emit(p);
        }
    }

    fn emit(&mut self, p: PendingExchange) {
        let Some(req) = p.request else { return };
        let client = self.client_dir.expect("requests imply a client");
        let (client_ep, server_ep) = (self.endpoints[client], self.endpoints[1 - client]);
        let resp = p.response;
        let (host, path, query) = split_target(&req);
        let mut details = Vec::new();
        if let Some(e) = &req.error {
            details.push(format!("request: {e}"));
        }
        if let Some(e) = resp.as_ref().and_then(|r| r.error.as_ref()) {
            details.push(format!("response: {e}"));
        }
        if p.response_lost {
            details.push("a response was sent but lost or damaged in capture".into());
        }
        // Without a response, the request's may have been in server bytes lost since the last
        // proven pairing.
        let server_loss_open = resp.is_none()
            && (self.pairing.server_unproven
                || self
                    .parsers
                    .as_ref()
                    .is_some_and(|ps| ps[1 - client].in_unparsed_run()));
        let gap = req.gap
            || resp.as_ref().is_some_and(|r| r.gap)
            || self.uncertain
            || p.response_lost
            || p.pairing_unproven
            || server_loss_open;
        if gap {
            details.push(
                "bytes were lost in capture on this exchange or before it on its connection".into(),
            );
        }
        let flags = ExchangeFlags {
            no_response: resp.is_none(),
            incomplete: !req.complete || resp.as_ref().is_some_and(|r| !r.complete),
            gap,
            parse_error: req.error.is_some() || resp.as_ref().is_some_and(|r| r.error.is_some()),
            upgraded: resp.as_ref().is_some_and(|r| r.upgraded),
        };
        let index_bytes = p.index.to_be_bytes();
        let ex = Exchange {
            grpc: None,
            tls: None,
            protocol: Some(shadowtap_core::exchange::protocol_name(&req.version, false)),
            stream_id: None,
            exchange_id: stable_id(&[self.connection_id.as_bytes(), &index_bytes]),
            connection_id: self.connection_id.clone(),
            connection_seq: p.index as u32,
            source: self.source.to_string(),
            request_start_us: req.start_us,
            request_end_us: Some(req.end_us),
            response_start_us: resp.as_ref().map(|r| r.start_us),
            response_end_us: resp.as_ref().map(|r| r.end_us),
            client_ip: client_ep.0,
            client_port: client_ep.1,
            server_ip: server_ep.0,
            server_port: server_ep.1,
            method: req.method.clone(),
            uri: req.uri.clone(),
            host,
            path,
            query,
            http_version: req.version.to_string(),
            request_headers: req.headers,
            request_trailers: req.trailers,
            request_body: Body {
                raw: req.body,
                decoded: None,
                len: req.body_len,
                truncated: req.body_truncated,
                decode_error: None,
                withheld: false,
            },
            status: resp.as_ref().map(|r| r.status).filter(|s| *s != 0),
            reason: resp.as_ref().map(|r| r.reason.to_string()),
            response_version: resp.as_ref().map(|r| r.version.to_string()),
            interim_statuses: p.interim,
            response_headers: resp.as_ref().map(|r| r.headers.clone()).unwrap_or_default(),
            response_trailers: resp
                .as_ref()
                .map(|r| r.trailers.clone())
                .unwrap_or_default(),
            response_body: resp
                .map(|r| Body {
                    raw: r.body,
                    decoded: None,
                    len: r.body_len,
                    truncated: r.body_truncated,
                    decode_error: None,
                    withheld: false,
                })
                .unwrap_or_default(),
            flags,
            error_detail: (!details.is_empty()).then(|| details.join("; ")),
        };
        let _ = p.start_offset;
        self.out.push(ex);
    }
}

fn parsers_rejected(parsers: Option<&[MessageParser; 2]>, dir: usize) -> bool {
    parsers.is_some_and(|p| p[dir].rejected())
}

/// True when `data` starts with a TLS record header (handshake, alert, change cipher spec or
/// application data, version 3.x): such a connection is not HTTP/1.x in clear.
fn looks_like_tls(data: &[u8]) -> bool {
    data.len() >= 5 && (0x14..=0x17).contains(&data[0]) && data[1] == 3 && data[2] <= 4
}

/// Which direction sends requests, judged from the first bytes of each: the one whose data
/// holds a request line, or the opposite of the one holding a status line.
fn detect_client(held: &[Vec<HeldChunk>; 2]) -> Option<usize> {
    for (dir, chunks) in held.iter().enumerate() {
        let bytes: Vec<u8> = chunks
            .iter()
            .flat_map(|c| c.0.iter().copied())
            .take(DETECT_LIMIT)
            .collect();
        for line in bytes.split(|&b| b == b'\n') {
            if is_start_line(Role::Request, line) {
                return Some(dir);
            }
            if is_start_line(Role::Response, line) {
                return Some(1 - dir);
            }
        }
    }
    None
}

/// Host, path and query of a request (absolute-form targets carry their own authority).
fn split_target(req: &Message) -> (Option<CompactString>, CompactString, Option<CompactString>) {
    let mut host = req.header("host").map(CompactString::from);
    let mut target = req.uri.as_str();
    if req.method.eq_ignore_ascii_case("CONNECT") {
        return (
            host.or_else(|| Some(req.uri.as_str().into())),
            req.uri.as_str().into(),
            None,
        );
    }
    for scheme in ["http://", "https://"] {
        // Compare bytes: the target may hold multibyte characters (obs-text, lossy decoding).
        if target
            .as_bytes()
            .get(..scheme.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(scheme.as_bytes()))
        {
            let rest = &target[scheme.len()..];
            let end = rest.find(['/', '?']).unwrap_or(rest.len());
            if host.is_none() {
                host = Some(rest[..end].into());
            }
            target = &rest[end..];
            break;
        }
    }
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.into())),
        None => (target, None),
    };
    let path = CompactString::from(if path.is_empty() { "/" } else { path });
    (host, path, query)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> HttpConnection {
        let a: Endpoint = ("10.0.0.1".parse().unwrap(), 40000);
        let b: Endpoint = ("10.0.0.2".parse().unwrap(), 80);
        HttpConnection::new([a, b], Some(0), 0, ParserLimits::default(), Arc::from("t"))
    }

    #[test]
    fn pipelined_requests_pair_in_order() {
        let mut c = conn();
        c.on_data(0, b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nHEAD /b HTTP/1.1\r\n\r\nGET /c?x=1 HTTP/1.1\r\n\r\n", 1, None);
        c.on_data(1, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\nHTTP/1.1 404 NF\r\nContent-Length: 0\r\n\r\n", 2, None);
        c.finish();
        let ex = c.take_exchanges();
        let got: Vec<_> = ex
            .iter()
            .map(|e| (e.path.as_str(), e.status, e.response_body.raw.len()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/a", Some(200), 2),
                ("/b", Some(200), 0),
                ("/c", Some(404), 0)
            ]
        );
        assert_eq!(ex[2].query.as_deref(), Some("x=1"));
        assert_eq!(ex[0].host.as_deref(), Some("h"));
        assert!(ex.iter().all(|e| !e.flags.gap && !e.flags.no_response));
    }

    #[test]
    fn response_before_request_waits_then_pairs() {
        let mut c = conn();
        c.on_data(1, b"HTTP/1.1 204 No Content\r\n\r\n", 2, None);
        c.on_data(0, b"DELETE /x HTTP/1.1\r\n\r\n", 1, None);
        c.finish();
        let ex = c.take_exchanges();
        assert_eq!(ex.len(), 1);
        assert_eq!(ex[0].status, Some(204));
    }

    #[test]
    fn response_acking_less_than_the_request_is_an_orphan() {
        // Regression: a capture that starts between a request and its response must not pair
        // that response with the next request.
        let a: Endpoint = ("10.0.0.1".parse().unwrap(), 40000);
        let b: Endpoint = ("10.0.0.2".parse().unwrap(), 80);
        let mut c = HttpConnection::new([a, b], None, 0, ParserLimits::default(), Arc::from("t"));
        c.set_base_seq(0, 1000);
        c.on_data(
            1,
            b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nold",
            1,
            Some(1000),
        );
        c.on_data(0, b"GET /new HTTP/1.1\r\n\r\n", 2, Some(5));
        c.on_data(
            1,
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            3,
            Some(1021),
        );
        c.finish();
        let ex = c.take_exchanges();
        assert_eq!(ex.len(), 1);
        assert_eq!((ex[0].path.as_str(), ex[0].status), ("/new", Some(201)));
        assert_eq!(c.stats().orphan_responses, 1);
    }

    /// One step of a keep-alive exchange sequence, in capture order: `Req(k, ack)` request k
    /// sent (carrying `ack`, or by default an ACK of every server byte sent so far),
    /// `Resp(k)` response k captured, `Lost(k)` response k sent but not captured.
    enum Step {
        Req(usize, Option<u32>),
        Resp(usize),
        Lost(usize),
    }

    /// A connection that knows its sequence numbers: the client stream starts at 1000, the
    /// server stream at 5000.
    fn conn_with_seqs() -> HttpConnection {
        let mut c = conn();
        c.set_base_seq(0, 1000);
        c.set_base_seq(1, 5000);
        c
    }

    fn replay_steps(steps: &[Step]) -> Vec<Exchange> {
        let mut c = conn_with_seqs();
        let (mut client_off, mut server_off) = (0u32, 0u32);
        for (t, step) in steps.iter().enumerate() {
            let ts = t as i64 + 1;
            match step {
                Step::Req(k, held_ack) => {
                    let req = format!("GET /{k} HTTP/1.1\r\nHost: h\r\n\r\n");
                    let ack = held_ack.unwrap_or(5000 + server_off);
                    c.on_data(0, req.as_bytes(), ts, Some(ack));
                    client_off += req.len() as u32;
                }
                Step::Resp(k) | Step::Lost(k) => {
                    let resp = format!("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nr{k}");
                    if matches!(step, Step::Resp(_)) {
                        c.on_data(1, resp.as_bytes(), ts, Some(1000 + client_off));
                    } else {
                        c.on_gap(1, resp.len() as u64, ts);
                    }
                    server_off += resp.len() as u32;
                }
            }
        }
        c.finish();
        c.take_exchanges()
    }

    fn outcome(ex: &[Exchange]) -> Vec<(String, Option<u16>, Vec<u8>, bool)> {
        ex.iter()
            .map(|e| {
                let status = e.status;
                (
                    e.path.to_string(),
                    status,
                    e.response_body.raw.clone(),
                    e.flags.gap,
                )
            })
            .collect()
    }

    #[test]
    fn a_lost_response_flags_only_its_exchange_and_the_next_when_acks_prove_the_pairing() {
        use Step::*;
        let ex = replay_steps(&[
            Req(0, None),
            Resp(0),
            Req(1, None),
            Lost(1),
            Req(2, None),
            Resp(2),
            Req(3, None),
            Resp(3),
            Req(4, None),
            Resp(4),
        ]);
        let got = outcome(&ex);
        assert_eq!(got[0], ("/0".into(), Some(200), b"r0".to_vec(), false));
        assert_eq!(got[1], ("/1".into(), None, Vec::new(), true));
        assert!(ex[1].flags.no_response);
        // The first message found after a loss is flagged by the parser itself.
        assert_eq!(got[2], ("/2".into(), Some(200), b"r2".to_vec(), true));
        assert_eq!(got[3], ("/3".into(), Some(200), b"r3".to_vec(), false));
        assert_eq!(got[4], ("/4".into(), Some(200), b"r4".to_vec(), false));
    }

    #[test]
    fn two_responses_lost_in_a_row_pair_the_next_one_with_its_own_request() {
        use Step::*;
        // Regression: one unparsed run held responses 0 and 1; request 1 was sent after the
        // run began (its ACK lies inside the run), and response 2 was paired with it.
        let ex = replay_steps(&[
            Req(0, None),
            Lost(0),
            Req(1, None),
            Lost(1),
            Req(2, None),
            Resp(2),
            Req(3, None),
            Resp(3),
        ]);
        let got = outcome(&ex);
        assert!(
            ex[0].flags.no_response && ex[1].flags.no_response,
            "{got:?}"
        );
        assert_eq!(got[2], ("/2".into(), Some(200), b"r2".to_vec(), true));
        assert_eq!(got[3], ("/3".into(), Some(200), b"r3".to_vec(), false));
    }

    #[test]
    fn a_lost_interim_response_does_not_cost_the_final_one() {
        // The `100 Continue` is lost in capture; the server had received no later request when
        // it sent the `201`, so the `201` is this request's, not an orphan.
        let mut c = conn_with_seqs();
        let head = b"POST /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n";
        c.on_data(0, head, 1, Some(5000));
        let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
        c.on_gap(1, interim.len() as u64, 2);
        c.on_data(0, b"ab", 3, Some(5000 + interim.len() as u32));
        let acked = 1000 + head.len() as u32 + 2;
        c.on_data(
            1,
            b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
            4,
            Some(acked),
        );
        c.finish();
        let ex = c.take_exchanges();
        assert_eq!(ex.len(), 1);
        assert_eq!((ex[0].path.as_str(), ex[0].status), ("/u", Some(201)));
        assert!(!ex[0].flags.no_response);
        assert_eq!(c.stats().orphan_responses, 0);
    }

    #[test]
    fn an_interim_response_read_with_its_final_one_stays_with_its_request() {
        // `100 Continue` and `200` in one segment (a server that sent the 100 late), and a
        // second request waiting: the 100 is the first request's, the second gets none.
        let mut c = conn_with_seqs();
        let first = b"POST /u HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab";
        c.on_data(0, first, 1, Some(5000));
        let second = b"GET /next HTTP/1.1\r\n\r\n";
        c.on_data(0, second, 2, Some(5000));
        c.on_data(
            1,
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            3,
            Some(1000 + (first.len() + second.len()) as u32),
        );
        c.on_data(1, b"HTTP/1.1 204 No Content\r\n\r\n", 4, None);
        c.finish();
        let ex = c.take_exchanges();
        assert_eq!(ex.len(), 2);
        assert_eq!(
            (ex[0].status, ex[0].interim_statuses.clone()),
            (Some(200), vec![100])
        );
        assert_eq!(
            (ex[1].status, ex[1].interim_statuses.clone()),
            (Some(204), vec![])
        );
    }

    #[test]
    fn after_pipelining_a_lost_response_leaves_every_later_pair_flagged() {
        use Step::*;
        // Requests 0 and 1 leave together (1 acknowledges none of response 0): the client
        // pipelines, so after the loss the acknowledgments prove nothing.
        let ex = replay_steps(&[
            Req(0, None),
            Req(1, Some(5000)),
            Resp(0),
            Resp(1),
            Req(2, None),
            Lost(2),
            Req(3, None),
            Resp(3),
            Req(4, None),
            Resp(4),
        ]);
        let got = outcome(&ex);
        assert!(!got[0].3 && !got[1].3, "{got:?}");
        assert_eq!(got[2].1, None);
        assert_eq!(got[3], ("/3".into(), Some(200), b"r3".to_vec(), true));
        assert_eq!(got[4], ("/4".into(), Some(200), b"r4".to_vec(), true));
    }

    #[test]
    fn a_loss_at_the_end_of_the_server_stream_flags_the_unanswered_requests() {
        use Step::*;
        let ex = replay_steps(&[Req(0, None), Resp(0), Req(1, None), Lost(1), Req(2, None)]);
        let got = outcome(&ex);
        assert!(!got[0].3);
        assert!(got[1].3 && ex[1].flags.no_response);
        // Request 2 may have been answered in the lost bytes' wake: not known, so flagged.
        assert!(got[2].3 && ex[2].flags.no_response, "{got:?}");
    }

    #[test]
    fn non_http_first_bytes_mark_connection() {
        let mut c = conn();
        c.on_data(0, &[0x16, 0x03, 0x01, 0x00, 0x10], 1, None);
        assert!(c.is_not_http());
    }

    #[test]
    fn mid_stream_tls_is_dropped_at_once() {
        let a: Endpoint = ("10.0.0.1".parse().unwrap(), 40000);
        let b: Endpoint = ("10.0.0.2".parse().unwrap(), 443);
        let mut c = HttpConnection::new([a, b], None, 0, ParserLimits::default(), Arc::from("t"));
        c.on_data(1, &[0x17, 0x03, 0x03, 0x40, 0x00, 1, 2, 3], 1, None);
        assert!(c.is_not_http());
    }

    #[test]
    fn multibyte_target_does_not_panic() {
        // Regression (found by cargo-fuzz): slicing the target at the scheme's length cut a
        // multibyte character.
        let m = Message {
            method: "GET".into(),
            uri: "AATATHƾA".into(),
            ..Message::default()
        };
        assert_eq!(split_target(&m).1, "AATATHƾA");
    }

    #[test]
    fn absolute_form_target_gives_host() {
        let m = Message {
            method: "GET".into(),
            uri: "http://ex.com:8080/p/q?z".into(),
            ..Message::default()
        };
        assert_eq!(
            split_target(&m),
            (Some("ex.com:8080".into()), "/p/q".into(), Some("z".into()))
        );
    }
}

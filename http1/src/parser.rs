//! Incremental HTTP/1.x message parsing over one direction of a reassembled TCP stream.
//!
//! A [`MessageParser`] is fed contiguous stream bytes (with the capture time and TCP ACK of the
//! segment they came in), gaps of lost bytes, and the end of the stream. It frames messages
//! (Content-Length, chunked with trailers, close-delimited, no body) and emits each one when it
//! ends. How a response is framed depends on its request (HEAD, CONNECT) and its status, so the
//! parser asks a [`Framing`] (the connection that pairs messages) when a response head is
//! complete; the connection may say "wait" until the request has been seen.
//!
//! Lost bytes inside a body of known length are skipped and the message flagged; lost bytes at
//! a message boundary or inside framing make the parser resynchronise on the next plausible
//! start line, and the connection is told so that it can flag pairing as uncertain.

use std::collections::VecDeque;

use crate::header::{text_from_bytes, CompactString, Header};
use crate::message::{Framing, Message, ResponseFraming, Role};

/// What a parser reports besides messages.
#[derive(Debug)]
pub enum ParserEvent {
    /// A message ended (completely or not).
    Message(Box<Message>),
    /// Bytes were lost at a message boundary or inside framing: whole messages may be missing.
    BoundaryLoss,
    /// Bytes that are not HTTP were skipped while looking for a start line.
    Skipped(u64),
    /// The connection switched protocols; the other direction should stop parsing too.
    Upgraded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Expecting a start line.
    Start,
    /// Scanning for a plausible start line after damage.
    Resync,
    /// Inside a message body.
    Body(BodyState),
    /// The connection no longer carries HTTP (upgrade, CONNECT).
    Tunnel,
}

/// Limits of a parser.
#[derive(Debug, Clone, Copy)]
pub struct ParserLimits {
    /// Bodies longer than this keep only their first bytes.
    pub max_body: u64,
    /// A header section longer than this is a parse error.
    pub max_head: usize,
}

impl Default for ParserLimits {
    fn default() -> Self {
        ParserLimits {
            max_body: 16 << 20,
            max_head: 64 << 10,
        }
    }
}

/// Parses the messages of one direction.
pub struct MessageParser {
    role: Role,
    limits: ParserLimits,
    state: State,
    /// Bytes not yet consumed; `buf[0]` is at stream offset `offset`.
    buf: Vec<u8>,
    offset: u64,
    /// (stream offset, capture time, ack) of each delivery, to timestamp message boundaries.
    marks: VecDeque<(u64, i64, Option<u32>)>,
    current: Option<Message>,
    /// Resync: the bytes at `offset` are not at the start of a line.
    mid_line: bool,
    /// Messages started so far (complete or not).
    messages: u64,
    events: VecDeque<ParserEvent>,
    /// The message started after a loss at a boundary.
    loss_before_next: bool,
    /// The stream's first message did not parse.
    rejected: bool,
    /// Start of the current run of bytes lost or skipped since the last parsed head.
    unparsed_from: Option<u64>,
}

const MAX_LINE: usize = 8 << 10;

impl MessageParser {
    /// Bytes this parser holds: unconsumed input plus the body of the message being read.
    pub fn buffered_bytes(&self) -> usize {
        self.buf.capacity() + self.current.as_ref().map_or(0, Message::held_bytes)
    }

    /// A parser whose first byte is at stream offset `offset`; `mid_stream` when the capture
    /// did not see the connection start, so the first bytes may be in the middle of a message.
    pub fn new(role: Role, limits: ParserLimits, mid_stream: bool, offset: u64) -> Self {
        MessageParser {
            role,
            limits,
            state: if mid_stream {
                State::Resync
            } else {
                State::Start
            },
            buf: Vec::new(),
            offset,
            marks: VecDeque::new(),
            current: None,
            mid_line: false,
            messages: 0,
            events: VecDeque::new(),
            loss_before_next: false,
            rejected: false,
            unparsed_from: None,
        }
    }

    /// Number of messages started so far.
    pub fn messages_started(&self) -> u64 {
        self.messages
    }

    /// True once the direction stopped carrying HTTP (upgrade or tunnel).
    pub fn is_tunnel(&self) -> bool {
        self.state == State::Tunnel
    }

    /// Bytes held waiting for more input (partial heads, stalled responses).
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Stops parsing: everything from now on is tunnelled, not HTTP.
    pub fn enter_tunnel(&mut self) {
        self.state = State::Tunnel;
        self.buf.clear();
    }

    /// After an upgrade: the bytes that followed the upgrading message in what was fed so far
    /// (the new protocol's first bytes, for a caller that decodes it, such as `h2c`); later
    /// feeds are not kept.
    pub fn take_tunnelled(&mut self) -> Vec<u8> {
        if self.state != State::Tunnel {
            return Vec::new();
        }
        std::mem::take(&mut self.buf)
    }

    /// Takes the events produced so far.
    pub fn drain_events(&mut self) -> impl Iterator<Item = ParserEvent> + '_ {
        self.events.drain(..)
    }

    /// Feeds contiguous stream bytes captured at `ts_us` in a segment carrying `ack`.
    pub fn feed(&mut self, data: &[u8], ts_us: i64, ack: Option<u32>, framing: &mut dyn Framing) {
        if self.state == State::Tunnel {
            return;
        }
        let at = self.offset + self.buf.len() as u64;
        self.marks.push_back((at, ts_us, ack));
        if self.buf.is_empty() {
            let used = self.parse(data, framing);
            self.advance(used);
            self.buf.extend_from_slice(&data[used..]);
        } else {
            self.buf.extend_from_slice(data);
            self.resume(framing);
        }
    }

    /// Parses bytes already buffered (after a [`ResponseFraming::Wait`]).
    pub fn resume(&mut self, framing: &mut dyn Framing) {
        if self.buf.is_empty() || self.state == State::Tunnel {
            return;
        }
        let buf = std::mem::take(&mut self.buf);
        let used = self.parse(&buf, framing);
        self.advance(used);
        self.buf = buf;
        self.buf.drain(..used);
    }

    /// `len` bytes of the stream were never captured.
    pub fn gap(&mut self, mut len: u64, ts_us: i64) {
        if self.state == State::Tunnel || len == 0 {
            self.offset += self.buf.len() as u64 + len;
            self.buf.clear();
            return;
        }
        // Bytes held before the gap can never be completed: account for them first.
        let held = self.buf.len() as u64;
        let in_body = matches!(
            self.state,
            State::Body(BodyState::Length(_) | BodyState::ChunkData(_) | BodyState::UntilClose)
        );
        if held > 0 && !in_body {
            // A partial head, chunk line or trailer is cut by the loss.
            self.unparsed_from.get_or_insert(self.offset);
            self.buf.clear();
            self.offset += held;
            self.damage(ts_us, "bytes lost inside message framing", true);
        }
        if let State::Body(b) = self.state {
            let msg = self.current.as_mut().expect("a body belongs to a message");
            msg.gap = true;
            match b {
                BodyState::Length(rem) | BodyState::ChunkData(rem) => {
                    let take = rem.min(len);
                    msg.body_len += take;
                    len -= take;
                    self.offset += take;
                    let rem = rem - take;
                    if rem > 0 {
                        self.state = State::Body(if matches!(b, BodyState::Length(_)) {
                            BodyState::Length(rem)
                        } else {
                            BodyState::ChunkData(rem)
                        });
                    } else if matches!(b, BodyState::Length(_)) {
                        self.finish_message(ts_us, true);
                    } else {
                        self.state = State::Body(BodyState::ChunkEnd);
                    }
                }
                BodyState::UntilClose => {
                    msg.body_len += len;
                    self.offset += len;
                    len = 0;
                }
                _ => {}
            }
        }
        if len > 0 {
            if !matches!(self.state, State::Body(_)) {
                self.unparsed_from.get_or_insert(self.offset);
            }
            self.offset += len;
            if matches!(self.state, State::Body(_)) {
                self.damage(ts_us, "bytes lost inside message framing", true);
            } else {
                self.events.push_back(ParserEvent::BoundaryLoss);
                self.loss_before_next = true;
                self.state = State::Resync;
                self.mid_line = true;
            }
        }
    }

    /// The stream ended: `clean` for a FIN, false for RST, idle eviction or end of capture.
    pub fn finish(&mut self, clean: bool, framing: &mut dyn Framing) {
        self.resume(framing);
        let ts = self.marks.back().map_or(0, |m| m.1);
        match self.state {
            State::Body(BodyState::UntilClose) => self.finish_message(ts, clean),
            State::Body(_) => self.finish_message(ts, false),
            State::Start | State::Resync if !self.buf.is_empty() => {
                // A partial head or unparseable tail: nothing more will complete it.
                let skipped = self.buf.len() as u64;
                self.buf.clear();
                self.offset += skipped;
                self.events.push_back(ParserEvent::Skipped(skipped));
            }
            _ => {}
        }
        self.state = State::Tunnel;
    }

    fn advance(&mut self, used: usize) {
        self.offset += used as u64;
        while self.marks.len() > 1 && self.marks[1].0 <= self.offset {
            self.marks.pop_front();
        }
    }

    fn mark_at(&self, offset: u64) -> (i64, Option<u32>) {
        self.marks
            .iter()
            .rev()
            .find(|m| m.0 <= offset)
            .or(self.marks.front())
            .map_or((0, None), |m| (m.1, m.2))
    }

    /// Damage inside a message: end it as incomplete and look for the next start line.
    fn damage(&mut self, ts_us: i64, why: &str, lost_bytes: bool) {
        if let Some(msg) = self.current.as_mut() {
            if lost_bytes {
                msg.gap = true;
            } else {
                msg.error.get_or_insert_with(|| why.to_owned());
            }
            self.finish_message(ts_us, false);
        }
        self.events.push_back(ParserEvent::BoundaryLoss);
        self.unparsed_from.get_or_insert(self.offset);
        self.loss_before_next = true;
        self.state = State::Resync;
        self.mid_line = true;
    }

    fn finish_message(&mut self, end_us: i64, complete: bool) {
        if let Some(mut msg) = self.current.take() {
            msg.complete = complete;
            msg.end_us = end_us.max(msg.start_us);
            let upgraded = msg.upgraded;
            self.events.push_back(ParserEvent::Message(Box::new(msg)));
            if upgraded {
                self.state = State::Tunnel;
                self.events.push_back(ParserEvent::Upgraded);
                return;
            }
        }
        self.state = State::Start;
    }

    /// Parses as much of `input` (which starts at `self.offset`) as possible; returns the
    /// number of bytes consumed.
    fn parse(&mut self, input: &[u8], framing: &mut dyn Framing) -> usize {
        let mut pos = 0;
        loop {
            let view = &input[pos..];
            let here = self.offset + pos as u64;
            match self.state {
                // The rest is the new protocol's: kept (see `take_tunnelled`) until the caller
                // takes it or enters the tunnel.
                State::Tunnel => return pos,
                State::Start => {
                    let skip = view
                        .iter()
                        .take_while(|&&b| b == b'\r' || b == b'\n')
                        .count();
                    pos += skip;
                    let view = &view[skip..];
                    if view.is_empty() {
                        return pos;
                    }
                    match self.parse_head(view, here + skip as u64, framing) {
                        HeadOutcome::Partial => return pos,
                        HeadOutcome::Parsed(n) => pos += n,
                        HeadOutcome::Invalid(why) => {
                            self.invalid_head(view, here + skip as u64, why, framing);
                            // Step past the rejected start so resync cannot match it again
                            // (`pos` already includes the skipped CR/LF).
                            pos += 1;
                        }
                    }
                }
                State::Resync => {
                    let (n, found) = self.resync(view, here);
                    pos += n;
                    if n > 0 {
                        self.unparsed_from.get_or_insert(here);
                        self.events.push_back(ParserEvent::Skipped(n as u64));
                    }
                    if found {
                        self.state = State::Start;
                    } else {
                        return pos;
                    }
                }
                State::Body(body) => {
                    if view.is_empty() {
                        return pos;
                    }
                    match self.parse_body(body, view, here) {
                        Some(n) => pos += n,
                        None => return pos,
                    }
                }
            }
        }
    }

    /// A start line or header section that does not parse. The first message of a stream
    /// that does not parse means the stream is not HTTP; later ones are recorded (so that
    /// pairing stays aligned: a malformed request usually still gets its 400) and the parser
    /// resynchronises on the next start line.
    fn invalid_head(&mut self, view: &[u8], start: u64, why: String, framing: &mut dyn Framing) {
        if self.messages == 0 && !self.loss_before_next {
            self.rejected = true;
        }
        let looks_like_message = match self.role {
            Role::Request => implausible_start(Role::Request, view).is_none(),
            Role::Response => view.starts_with(b"HTTP/"),
        };
        if self.messages > 0 && looks_like_message {
            let mut msg = self.new_message(start);
            msg.error = Some(why);
            self.messages += 1;
            match self.role {
                Role::Request => {
                    msg.method = String::from_utf8_lossy(
                        &view[..view.iter().position(|&b| b == b' ').unwrap_or(0)],
                    )
                    .into();
                    msg.index =
                        Some(framing.request_head(&msg.method, start, self.mark_at(start).1));
                }
                Role::Response => {
                    match framing.response_head(0, start, self.mark_at(start).1, self.unparsed_from)
                    {
                        ResponseFraming::Request { index, .. } => msg.index = Some(index),
                        ResponseFraming::Orphan | ResponseFraming::Wait => msg.orphan = true,
                    }
                }
            }
            self.events.push_back(ParserEvent::Message(Box::new(msg)));
        } else {
            self.events.push_back(ParserEvent::BoundaryLoss);
        }
        self.loss_before_next = true;
        self.state = State::Resync;
        self.mid_line = true;
    }

    /// True when the first bytes of the stream were not HTTP.
    pub fn rejected(&self) -> bool {
        self.rejected
    }

    /// Stream offset up to which every byte has been parsed (or accounted as lost).
    pub fn consumed(&self) -> u64 {
        self.offset
    }

    /// A run of bytes that could not be parsed (lost or skipped) began and no message head
    /// has ended it yet.
    pub fn in_unparsed_run(&self) -> bool {
        self.unparsed_from.is_some()
    }

    fn new_message(&self, start_offset: u64) -> Message {
        let (ts, _) = self.mark_at(start_offset);
        Message {
            start_offset,
            start_us: ts,
            end_us: ts,
            gap: self.loss_before_next,
            ..Message::default()
        }
    }

    fn parse_head(&mut self, view: &[u8], start: u64, framing: &mut dyn Framing) -> HeadOutcome {
        if let Some(why) = implausible_start(self.role, view) {
            return HeadOutcome::Invalid(why);
        }
        let mut storage = [httparse::EMPTY_HEADER; 128];
        let mut big;
        let mut headers: &mut [httparse::Header] = &mut storage;
        loop {
            let result = match self.role {
                Role::Request => {
                    let mut req = httparse::Request::new(headers);
                    let r = request_config().parse_request(&mut req, view);
                    r.map(|s| match s {
                        httparse::Status::Complete(n) => {
                            httparse::Status::Complete((n, Head::from_request(&req)))
                        }
                        httparse::Status::Partial => httparse::Status::Partial,
                    })
                }
                Role::Response => {
                    let mut resp = httparse::Response::new(headers);
                    let r = response_config().parse_response(&mut resp, view);
                    r.map(|s| match s {
                        httparse::Status::Complete(n) => {
                            httparse::Status::Complete((n, Head::from_response(&resp)))
                        }
                        httparse::Status::Partial => httparse::Status::Partial,
                    })
                }
            };
            match result {
                Ok(httparse::Status::Complete((n, head))) => {
                    return self.head_parsed(head, n, start, view.len(), framing)
                }
                Ok(httparse::Status::Partial) => {
                    if view.len() > self.limits.max_head {
                        return HeadOutcome::Invalid(format!(
                            "header section exceeds {} bytes",
                            self.limits.max_head
                        ));
                    }
                    return HeadOutcome::Partial;
                }
                Err(httparse::Error::TooManyHeaders) if headers.len() < 4096 => {
                    big = vec![httparse::EMPTY_HEADER; headers.len() * 8];
                    headers = &mut big;
                }
                Err(e) => {
                    return HeadOutcome::Invalid(format!(
                        "malformed {} head: {e}",
                        self.role_name()
                    ))
                }
            }
        }
    }

    fn role_name(&self) -> &'static str {
        match self.role {
            Role::Request => "request",
            Role::Response => "response",
        }
    }

    fn head_parsed(
        &mut self,
        head: Head,
        n: usize,
        start: u64,
        held: usize,
        framing: &mut dyn Framing,
    ) -> HeadOutcome {
        let mut msg = self.new_message(start);
        msg.version = head.version;
        msg.headers = head.headers;
        let te_chunked = last_transfer_coding(&msg).map(|c| c.eq_ignore_ascii_case("chunked"));
        let length = match content_length(&msg) {
            Ok(l) => l,
            Err(why) => return HeadOutcome::Invalid(why),
        };
        let body = match self.role {
            Role::Request => {
                msg.method = head.method;
                msg.uri = head.uri;
                msg.index = Some(framing.request_head(&msg.method, start, self.mark_at(start).1));
                match (te_chunked, length) {
                    (Some(true), _) => Some(BodyState::ChunkSize),
                    // RFC 9112 6.3: a request whose final coding is not chunked cannot be
                    // framed (it is not read to the close, as a response would be).
                    (Some(false), _) => {
                        return HeadOutcome::Invalid(
                            "the request's final transfer coding is not chunked".into(),
                        )
                    }
                    (None, Some(0)) | (None, None) => None,
                    (None, Some(len)) => Some(BodyState::Length(len)),
                }
            }
            Role::Response => {
                msg.status = head.status;
                msg.reason = head.reason;
                let (_, ack) = self.mark_at(start);
                let method =
                    match framing.response_head(head.status, start, ack, self.unparsed_from) {
                        // Held too long (the request is stuck behind a hole in the client stream):
                        // go on unpaired rather than buffer without bound.
                        ResponseFraming::Wait
                            if held as u64 > self.limits.max_body + self.limits.max_head as u64 =>
                        {
                            msg.orphan = true;
                            CompactString::const_new("GET")
                        }
                        ResponseFraming::Wait => return HeadOutcome::Partial,
                        ResponseFraming::Orphan => {
                            msg.orphan = true;
                            CompactString::const_new("GET")
                        }
                        ResponseFraming::Request { index, method } => {
                            if head.status >= 200 || head.status == 101 {
                                msg.index = Some(index);
                            } else {
                                msg.interim_of = Some(index);
                            }
                            method
                        }
                    };
                let status = head.status;
                if status == 101
                    || (method.eq_ignore_ascii_case("CONNECT") && (200..300).contains(&status))
                {
                    msg.upgraded = true;
                    None
                } else if (100..200).contains(&status)
                    || status == 204
                    || status == 304
                    || method.eq_ignore_ascii_case("HEAD")
                {
                    None
                } else {
                    match (te_chunked, length) {
                        (Some(true), _) => Some(BodyState::ChunkSize),
                        (Some(false), _) => Some(BodyState::UntilClose),
                        (None, Some(0)) => None,
                        (None, Some(len)) => Some(BodyState::Length(len)),
                        (None, None) => Some(BodyState::UntilClose),
                    }
                }
            }
        };
        self.messages += 1;
        self.loss_before_next = false;
        self.unparsed_from = None;
        let end_ts = self.mark_at(start + n as u64 - 1).0;
        self.current = Some(msg);
        match body {
            None => self.finish_message(end_ts, true),
            Some(b) => {
                if let (BodyState::Length(len), Some(m)) = (b, self.current.as_mut()) {
                    // Room for the body bytes that already arrived behind the head (capped),
                    // never for what `Content-Length` merely announces: an untrusted length
                    // must not size an allocation.
                    let arrived = held.saturating_sub(n) as u64;
                    m.body
                        .reserve(len.min(self.limits.max_body).min(arrived) as usize);
                }
                self.state = State::Body(b);
            }
        }
        HeadOutcome::Parsed(n)
    }

    /// Consumes body bytes from `view` (at stream offset `here`); `None` when more input is
    /// needed before anything can be consumed.
    fn parse_body(&mut self, body: BodyState, view: &[u8], here: u64) -> Option<usize> {
        let max_body = self.limits.max_body;
        match body {
            BodyState::Length(rem) | BodyState::ChunkData(rem) => {
                let take = if rem < view.len() as u64 {
                    rem as usize
                } else {
                    view.len()
                };
                append_body(
                    self.current.as_mut().expect("in a message"),
                    &view[..take],
                    max_body,
                );
                let rem = rem - take as u64;
                let ts = self.mark_at(here + take as u64 - 1).0;
                if let Some(m) = self.current.as_mut() {
                    m.end_us = ts;
                }
                if rem == 0 {
                    if matches!(body, BodyState::Length(_)) {
                        self.finish_message(ts, true);
                    } else {
                        self.state = State::Body(BodyState::ChunkEnd);
                    }
                } else {
                    self.state = State::Body(match body {
                        BodyState::Length(_) => BodyState::Length(rem),
                        _ => BodyState::ChunkData(rem),
                    });
                }
                Some(take)
            }
            BodyState::UntilClose => {
                append_body(self.current.as_mut().expect("in a message"), view, max_body);
                let ts = self.mark_at(here + view.len() as u64 - 1).0;
                if let Some(m) = self.current.as_mut() {
                    m.end_us = ts;
                }
                Some(view.len())
            }
            BodyState::ChunkSize => match httparse::parse_chunk_size(view) {
                Ok(httparse::Status::Complete((n, size))) => {
                    self.state = State::Body(if size == 0 {
                        BodyState::Trailers
                    } else {
                        BodyState::ChunkData(size)
                    });
                    Some(n)
                }
                Ok(httparse::Status::Partial) if view.len() < MAX_LINE => None,
                _ => {
                    let ts = self.mark_at(here).0;
                    self.damage(ts, "malformed chunk size line", false);
                    Some(0)
                }
            },
            BodyState::ChunkEnd => {
                if view.starts_with(b"\r\n") {
                    self.state = State::Body(BodyState::ChunkSize);
                    Some(2)
                } else if view.starts_with(b"\n") && self.role == Role::Response {
                    // A bare LF after chunk data: tolerated from a server, never from a client
                    // (a proxy that reads it otherwise frames another request).
                    self.state = State::Body(BodyState::ChunkSize);
                    Some(1)
                } else if view == b"\r" {
                    None
                } else {
                    let ts = self.mark_at(here).0;
                    self.damage(ts, "chunk data not followed by CRLF", false);
                    Some(0)
                }
            }
            BodyState::Trailers => {
                let mut headers = [httparse::EMPTY_HEADER; 64];
                match httparse::parse_headers(view, &mut headers) {
                    Ok(httparse::Status::Complete((n, parsed))) => {
                        let trailers = parsed
                            .iter()
                            .map(|h| Header::from_bytes(h.name.as_bytes(), h.value))
                            .collect();
                        if let Some(m) = self.current.as_mut() {
                            m.trailers = trailers;
                        }
                        let ts = self.mark_at(here + n as u64 - 1).0;
                        self.finish_message(ts, true);
                        Some(n)
                    }
                    Ok(httparse::Status::Partial) if view.len() < self.limits.max_head => None,
                    _ => {
                        let ts = self.mark_at(here).0;
                        self.damage(ts, "malformed chunked trailer section", false);
                        Some(0)
                    }
                }
            }
        }
    }

    /// Looks for a plausible start line at a line start or at the start of a segment (a
    /// message after a binary body rarely follows a newline, but usually starts a segment).
    /// Returns the bytes to skip and whether a start line is at the new position.
    fn resync(&mut self, view: &[u8], here: u64) -> (usize, bool) {
        let end = here + view.len() as u64;
        let mut seg_starts = self
            .marks
            .iter()
            .map(|m| m.0)
            .filter(|&o| o >= here && o < end)
            .map(|o| (o - here) as usize)
            .peekable();
        let mut keep_from: Option<usize> = None;
        let mut i = 0;
        while i < view.len() {
            while seg_starts.peek().is_some_and(|&s| s < i) {
                seg_starts.next();
            }
            let at_line_start = if i == 0 {
                !self.mid_line
            } else {
                view[i - 1] == b'\n'
            };
            let candidate = at_line_start || seg_starts.peek() == Some(&i);
            if candidate {
                match memchr::memchr(b'\n', &view[i..]) {
                    Some(n) if is_start_line(self.role, &view[i..i + n]) => return (i, true),
                    Some(_) => {}
                    None if view.len() - i <= MAX_LINE => {
                        keep_from.get_or_insert(i);
                        break;
                    }
                    None => {}
                }
            }
            // Jump to the next line start or segment start.
            let next_line = memchr::memchr(b'\n', &view[i..]).map_or(view.len(), |n| i + n + 1);
            while seg_starts.peek().is_some_and(|&s| s <= i) {
                seg_starts.next();
            }
            let next_seg = seg_starts.peek().copied().unwrap_or(view.len());
            i = next_line.min(next_seg);
        }
        match keep_from {
            Some(k) => {
                self.mid_line = k > 0 && view[k - 1] != b'\n';
                (k, false)
            }
            None => {
                self.mid_line = view.last().is_some_and(|&b| b != b'\n');
                (view.len(), false)
            }
        }
    }
}

enum HeadOutcome {
    Partial,
    Parsed(usize),
    Invalid(String),
}

struct Head {
    method: CompactString,
    uri: String,
    version: CompactString,
    status: u16,
    reason: CompactString,
    headers: Vec<Header>,
}

impl Head {
    fn from_request(req: &httparse::Request) -> Head {
        Head {
            method: req.method.unwrap_or_default().into(),
            uri: req.path.unwrap_or_default().to_owned(),
            version: version_text(req.version),
            status: 0,
            reason: CompactString::default(),
            headers: req
                .headers
                .iter()
                .map(|h| Header::from_bytes(h.name.as_bytes(), h.value))
                .collect(),
        }
    }
    fn from_response(resp: &httparse::Response) -> Head {
        Head {
            method: CompactString::default(),
            uri: String::new(),
            version: version_text(resp.version),
            status: resp.code.unwrap_or_default(),
            reason: resp
                .reason
                .map(|r| text_from_bytes(r.as_bytes()))
                .unwrap_or_default(),
            headers: resp
                .headers
                .iter()
                .map(|h| Header::from_bytes(h.name.as_bytes(), h.value))
                .collect(),
        }
    }
}

fn version_text(v: Option<u8>) -> CompactString {
    match v {
        Some(0) => CompactString::const_new("HTTP/1.0"),
        None | Some(1) => CompactString::const_new("HTTP/1.1"),
        Some(n) => compact_str::format_compact!("HTTP/1.{n}"),
    }
}

fn request_config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    // An invalid header line in a request is an error, never skipped: skipped, `Transfer-
    // Encoding : chunked` (space before the colon) would leave the body framed by another rule
    // than a server that reads it.
    c.allow_multiple_spaces_in_request_line_delimiters(true);
    c
}

fn response_config() -> httparse::ParserConfig {
    let mut c = httparse::ParserConfig::default();
    c.allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .allow_multiple_spaces_in_response_status_delimiters(true)
        .ignore_invalid_headers_in_responses(true);
    c
}

fn last_transfer_coding(msg: &Message) -> Option<String> {
    let mut last = None;
    for h in msg
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("transfer-encoding"))
    {
        if let Some(c) = h.value.split(',').map(str::trim).rfind(|c| !c.is_empty()) {
            last = Some(c.to_owned());
        }
    }
    last
}

fn content_length(msg: &Message) -> Result<Option<u64>, String> {
    let mut found: Option<u64> = None;
    for h in msg
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("content-length"))
    {
        for v in h.value.split(',').map(str::trim) {
            // Digits only (RFC 9110 8.6): Rust's parse would take `+5`.
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(format!("invalid Content-Length {v:?}"));
            }
            let n: u64 = v
                .parse()
                .map_err(|_| format!("invalid Content-Length {v:?}"))?;
            if found.is_some_and(|f| f != n) {
                return Err("conflicting Content-Length values".into());
            }
            found = Some(n);
        }
    }
    Ok(found)
}

fn append_body(msg: &mut Message, bytes: &[u8], cap: u64) {
    msg.body_len += bytes.len() as u64;
    let room = cap.saturating_sub(msg.body.len() as u64) as usize;
    if room >= bytes.len() {
        msg.body.extend_from_slice(bytes);
    } else {
        msg.body.extend_from_slice(&bytes[..room]);
        msg.body_truncated = true;
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_uppercase() || b == b'-' || b == b'_'
}

/// Why `view` cannot be the start of a message, judged on the bytes available.
fn implausible_start(role: Role, view: &[u8]) -> Option<String> {
    match role {
        Role::Request => {
            let token = view.iter().take_while(|&&b| is_token_char(b)).count();
            if token > 24 {
                return Some("request method longer than 24 characters".into());
            }
            match view.get(token) {
                None => None,
                Some(b' ') if token > 0 => None,
                Some(_) => Some("data does not start with an HTTP request line".into()),
            }
        }
        Role::Response => {
            let want = b"HTTP/1.";
            let n = view.len().min(want.len());
            (view[..n] != want[..n])
                .then(|| "data does not start with an HTTP/1.x status line".into())
        }
    }
}

/// True when `line` (without its `\n`) is a plausible request or status line.
pub fn is_start_line(role: Role, line: &[u8]) -> bool {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    match role {
        Role::Request => {
            let token = line.iter().take_while(|&&b| is_token_char(b)).count();
            if token == 0 || token > 24 || line.get(token) != Some(&b' ') {
                return false;
            }
            line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0")
        }
        Role::Response => {
            line.len() >= 12
                && (line.starts_with(b"HTTP/1.1 ") || line.starts_with(b"HTTP/1.0 "))
                && line[9..12].iter().all(u8::is_ascii_digit)
        }
    }
}

#[cfg(test)]
mod tests;

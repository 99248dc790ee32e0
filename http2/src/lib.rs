//! Passive HTTP/2 decoding: both directions of one captured connection in, one record per
//! stream out ([`Stream`]: the request and the final response, with their headers, bodies and
//! trailers, and when each began and ended).
//!
//! The connection is fed the bytes each side sent, in order ([`Connection::feed`]); it splits
//! them into frames ([`frame`]), decodes header blocks with one HPACK decoder per direction
//! (`loona-hpack`, which returns errors where the unmaintained `hpack` crate panicked), honours
//! `SETTINGS_HEADER_TABLE_SIZE` and `SETTINGS_MAX_FRAME_SIZE`, reassembles `CONTINUATION`s,
//! strips padding and priority fields, and follows `RST_STREAM` and `GOAWAY`.
//!
//! Nothing is guessed. A header block can only be decoded with every earlier block of its
//! direction (the HPACK dynamic table), and frames can only be found from the previous one: so
//! bytes lost in capture ([`Connection::gap`]) end the decoding of that direction, and every
//! stream it leaves open is marked `lost` (its exchange flagged, never invented), as is a
//! direction whose framing breaks.

pub mod frame;

use std::collections::BTreeMap;

use frame::{Frame, FrameReader, Kind};

/// The client's connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Whether `data`, the first bytes a client sent, begin (or could begin) the preface.
pub fn starts_with_preface(data: &[u8]) -> bool {
    let n = data.len().min(PREFACE.len());
    data[..n] == PREFACE[..n]
}

/// Bounds on what one connection may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Body bytes kept per message (the rest counted, the body flagged truncated).
    pub max_body: u64,
    /// Bytes of one header block (HEADERS and its CONTINUATIONs) before the direction is given
    /// up as broken.
    pub max_header_block: usize,
    /// Streams open at once before the oldest is given up (emitted as it is).
    pub max_open_streams: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body: 1 << 20,
            max_header_block: 256 * 1024,
            max_open_streams: 1024,
        }
    }
}

/// One message of a stream: a request or a final response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    /// Pseudo-header fields (`:method`, `:path`, `:authority`, `:scheme`, `:status`), in order.
    pub pseudo: Vec<(String, String)>,
    /// Header fields, names lowercase as HTTP/2 sends them.
    pub headers: Vec<(String, String)>,
    /// Trailer fields (a second header block after the data).
    pub trailers: Vec<(String, String)>,
    /// The first `max_body` bytes of the body.
    pub body: Vec<u8>,
    /// Body bytes seen in all.
    pub body_len: u64,
    /// Capture time of the header block's first frame (µs).
    pub start_us: i64,
    /// Capture time of the last frame seen (µs).
    pub end_us: i64,
    /// The sender ended it (`END_STREAM`).
    pub complete: bool,
}

impl Message {
    /// A pseudo-header's value.
    pub fn pseudo(&self, name: &str) -> Option<&str> {
        self.pseudo
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first header of that name (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Whether the body kept is shorter than the body sent.
    pub fn truncated(&self) -> bool {
        (self.body.len() as u64) < self.body_len
    }
}

/// One stream: a request and its final response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stream {
    /// The stream id.
    pub id: u32,
    /// The request (for a pushed stream, the `PUSH_PROMISE`'s).
    pub request: Option<Message>,
    /// Informational (1xx) statuses before the final response.
    pub interim: Vec<u16>,
    /// The final response.
    pub response: Option<Message>,
    /// `RST_STREAM`'s error code, when either side reset the stream.
    pub reset: Option<u32>,
    /// Pushed by the server (`PUSH_PROMISE`).
    pub pushed: bool,
    /// Bytes of this stream were lost in capture, or its direction's decoding stopped before
    /// it ended: what it holds is what was seen.
    pub lost: bool,
    /// Why, when something could not be decoded (never bodies or header values).
    pub error: Option<String>,
}

/// Counters of one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Streams emitted.
    pub streams: u64,
    /// Streams marked lost.
    pub lost_streams: u64,
    /// Directions whose decoding stopped (a capture gap, broken framing or HPACK).
    pub broken_directions: u64,
    /// Streams given up because too many were open.
    pub overflow: u64,
}

/// A header block being collected (HEADERS or PUSH_PROMISE, then CONTINUATIONs).
struct Block {
    stream: u32,
    /// For PUSH_PROMISE: the promised stream.
    promised: Option<u32>,
    end_stream: bool,
    bytes: Vec<u8>,
    start_us: i64,
}

/// One direction's state.
struct Direction {
    reader: FrameReader,
    hpack: loona_hpack::Decoder<'static>,
    block: Option<Block>,
    /// Decoding stopped (and why): nothing more of this direction is read.
    broken: Option<String>,
}

impl Direction {
    fn new(client: bool) -> Self {
        let mut hpack = loona_hpack::Decoder::new();
        hpack.set_max_allowed_table_size(DEFAULT_TABLE_SIZE);
        Direction {
            reader: FrameReader::new(client),
            hpack,
            block: None,
            broken: None,
        }
    }
}

const DEFAULT_TABLE_SIZE: usize = 4096;
/// The largest dynamic table a peer's SETTINGS may allow that this decoder follows.
const MAX_TABLE_SIZE: usize = 1 << 20;

/// A captured HTTP/2 connection (cleartext, or TLS already decrypted).
pub struct Connection {
    limits: Limits,
    /// 0: client → server, 1: server → client.
    dirs: [Direction; 2],
    open: BTreeMap<u32, Stream>,
    /// Order of first sight of each open stream (the request's HEADERS).
    done: Vec<Stream>,
    counters: Counters,
}

fn dir(from_client: bool) -> usize {
    usize::from(!from_client)
}

impl Connection {
    /// A connection whose client preface is the first thing the client sends.
    pub fn new(limits: Limits) -> Self {
        Connection {
            limits,
            dirs: [Direction::new(true), Direction::new(false)],
            open: BTreeMap::new(),
            done: Vec::new(),
            counters: Counters::default(),
        }
    }

    /// A connection upgraded from HTTP/1.1 (`Upgrade: h2c`): stream 1 is the upgraded request,
    /// already seen; its response comes as HTTP/2. The client still sends the preface.
    pub fn upgraded(limits: Limits, request: Message) -> Self {
        let mut c = Connection::new(limits);
        c.open.insert(
            1,
            Stream {
                id: 1,
                request: Some(Message {
                    complete: true,
                    ..request
                }),
                ..Stream::default()
            },
        );
        c
    }

    /// Counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Bytes held: unparsed frames, header blocks and bodies of open streams.
    pub fn buffered_bytes(&self) -> usize {
        let dirs: usize = self
            .dirs
            .iter()
            .map(|d| d.reader.buffered() + d.block.as_ref().map_or(0, |b| b.bytes.len()))
            .sum();
        let bodies: usize = self
            .open
            .values()
            .flat_map(|s| [&s.request, &s.response])
            .flatten()
            .map(|m| m.body.len())
            .sum();
        dirs + bodies
    }

    /// Bytes the client (`from_client`) or the server sent, captured at `ts_us`.
    pub fn feed(&mut self, from_client: bool, data: &[u8], ts_us: i64) {
        let d = dir(from_client);
        if self.dirs[d].broken.is_some() {
            return;
        }
        self.dirs[d].reader.push(data);
        loop {
            match self.dirs[d].reader.next_frame() {
                Ok(Some(f)) => self.on_frame(d, f, ts_us),
                Ok(None) => break,
                Err(why) => {
                    self.break_direction(d, why);
                    break;
                }
            }
            if self.dirs[d].broken.is_some() {
                break;
            }
        }
        self.emit_finished();
    }

    /// `len` bytes the client or the server sent were not captured: frame boundaries and the
    /// HPACK state of that direction are unknown from here, so its decoding stops.
    pub fn gap(&mut self, from_client: bool, len: u64) {
        let d = dir(from_client);
        if self.dirs[d].broken.is_none() {
            self.break_direction(d, format!("{len} bytes lost in capture"));
        }
        self.emit_finished();
    }

    /// The connection is over: every stream is emitted, open ones as they are.
    pub fn finish(&mut self) {
        for (_, s) in std::mem::take(&mut self.open) {
            self.push_done(s);
        }
    }

    /// The streams finished so far, in the order their requests began.
    pub fn take_streams(&mut self) -> Vec<Stream> {
        let mut out = std::mem::take(&mut self.done);
        out.sort_by_key(|s| (s.request.as_ref().map_or(i64::MAX, |r| r.start_us), s.id));
        out
    }

    fn break_direction(&mut self, d: usize, why: String) {
        self.counters.broken_directions += 1;
        self.dirs[d].block = None;
        self.dirs[d].broken = Some(why.clone());
        // Every stream still waiting on this direction ends with what was seen.
        for s in self.open.values_mut() {
            let waiting = if d == 0 {
                !s.request_done()
            } else {
                !s.response_done()
            };
            if waiting {
                s.lost = true;
                s.error.get_or_insert_with(|| {
                    format!("{} stream: {why}", if d == 0 { "client" } else { "server" })
                });
            }
        }
    }

    fn stream(&mut self, id: u32) -> &mut Stream {
        if !self.open.contains_key(&id) && self.open.len() >= self.limits.max_open_streams {
            // The oldest gives way.
            if let Some(mut s) = self.open.pop_first().map(|(_, s)| s) {
                s.lost = true;
                s.error
                    .get_or_insert_with(|| "too many streams open at once".into());
                self.counters.overflow += 1;
                self.push_done(s);
            }
        }
        self.open.entry(id).or_insert_with(|| Stream {
            id,
            ..Stream::default()
        })
    }

    fn on_frame(&mut self, d: usize, f: Frame, ts_us: i64) {
        // A header block must be followed by its CONTINUATIONs and nothing else.
        if self.dirs[d].block.is_some() && f.kind != Kind::Continuation {
            self.break_direction(d, "a header block was interrupted".into());
            return;
        }
        match f.kind {
            Kind::Data => {
                let max_body = self.limits.max_body;
                let Ok(data) = f.unpadded() else {
                    self.break_direction(d, "bad padding".into());
                    return;
                };
                let s = self.stream(f.stream);
                let m = if d == 0 {
                    s.request.get_or_insert_with(Message::default)
                } else {
                    s.response.get_or_insert_with(Message::default)
                };
                m.body_len += data.len() as u64;
                let room = (max_body as usize).saturating_sub(m.body.len());
                m.body.extend_from_slice(&data[..data.len().min(room)]);
                m.end_us = ts_us;
                if f.end_stream() {
                    m.complete = true;
                }
            }
            Kind::Headers => match f.header_fragment() {
                Ok(fragment) => {
                    let block = Block {
                        stream: f.stream,
                        promised: None,
                        end_stream: f.end_stream(),
                        bytes: fragment.to_vec(),
                        start_us: ts_us,
                    };
                    self.start_block(d, block, f.end_headers(), ts_us);
                }
                Err(why) => self.break_direction(d, why.into()),
            },
            Kind::PushPromise => match f.push_promise() {
                Ok((promised, fragment)) => {
                    let block = Block {
                        stream: f.stream,
                        promised: Some(promised),
                        end_stream: false,
                        bytes: fragment.to_vec(),
                        start_us: ts_us,
                    };
                    self.start_block(d, block, f.end_headers(), ts_us);
                }
                Err(why) => self.break_direction(d, why.into()),
            },
            Kind::Continuation => {
                let Some(block) = self.dirs[d].block.as_mut() else {
                    self.break_direction(d, "a CONTINUATION without a header block".into());
                    return;
                };
                if block.stream != f.stream {
                    self.break_direction(d, "a CONTINUATION of another stream".into());
                    return;
                }
                block.bytes.extend_from_slice(&f.payload);
                if block.bytes.len() > self.limits.max_header_block {
                    self.break_direction(d, "a header block over the limit".into());
                    return;
                }
                if f.end_headers() {
                    if let Some(block) = self.dirs[d].block.take() {
                        self.decode_block(d, block, ts_us);
                    }
                }
            }
            Kind::RstStream => {
                let code = f.u32_at(0).unwrap_or(0);
                let s = self.stream(f.stream);
                s.reset = Some(code);
                for m in [s.request.as_mut(), s.response.as_mut()]
                    .into_iter()
                    .flatten()
                {
                    m.end_us = m.end_us.max(ts_us);
                }
            }
            Kind::Settings => {
                if f.flags & frame::ACK == 0 {
                    // The sender's settings bind what the other side sends it.
                    let other = 1 - d;
                    for (id, value) in f.settings() {
                        match id {
                            frame::SETTINGS_HEADER_TABLE_SIZE => {
                                let allowed =
                                    (value as usize).clamp(DEFAULT_TABLE_SIZE, MAX_TABLE_SIZE);
                                self.dirs[other].hpack.set_max_allowed_table_size(allowed);
                            }
                            frame::SETTINGS_MAX_FRAME_SIZE => {
                                self.dirs[other].reader.allow_frame_size(value);
                            }
                            _ => {}
                        }
                    }
                }
            }
            Kind::GoAway | Kind::Ping | Kind::WindowUpdate | Kind::Priority | Kind::Other => {}
        }
    }

    fn start_block(&mut self, d: usize, block: Block, end_headers: bool, ts_us: i64) {
        if block.bytes.len() > self.limits.max_header_block {
            self.break_direction(d, "a header block over the limit".into());
        } else if end_headers {
            self.decode_block(d, block, ts_us);
        } else {
            self.dirs[d].block = Some(block);
        }
    }

    fn decode_block(&mut self, d: usize, block: Block, ts_us: i64) {
        let mut fields = Vec::new();
        let decoded = self.dirs[d].hpack.decode_with_cb(&block.bytes, |n, v| {
            fields.push((
                String::from_utf8_lossy(&n).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        });
        if let Err(e) = decoded {
            self.break_direction(d, format!("HPACK: {e:?}"));
            return;
        }
        let (pseudo, regular): (Vec<_>, Vec<_>) =
            fields.into_iter().partition(|(n, _)| n.starts_with(':'));
        if let Some(promised) = block.promised {
            // The server promises a response to a request it made up: a stream of its own.
            let s = self.stream(promised);
            s.pushed = true;
            s.request = Some(Message {
                pseudo,
                headers: regular,
                start_us: block.start_us,
                end_us: ts_us,
                complete: true,
                ..Message::default()
            });
            return;
        }
        let s = self.stream(block.stream);
        let slot = if d == 0 {
            &mut s.request
        } else {
            // A 1xx is informational; the final response comes after.
            let status = pseudo
                .iter()
                .find(|(n, _)| n == ":status")
                .and_then(|(_, v)| v.parse::<u16>().ok());
            if let Some(st) = status.filter(|st| (100..200).contains(st)) {
                s.interim.push(st);
                return;
            }
            &mut s.response
        };
        match slot {
            // A second block on the same side: trailers.
            Some(m) if !m.pseudo.is_empty() || m.body_len > 0 || !m.headers.is_empty() => {
                m.trailers = regular;
                m.end_us = ts_us;
                m.complete |= block.end_stream;
            }
            _ => {
                let body = slot.take().unwrap_or_default();
                *slot = Some(Message {
                    pseudo,
                    headers: regular,
                    start_us: block.start_us,
                    end_us: ts_us,
                    complete: block.end_stream,
                    ..body
                });
            }
        }
    }

    /// Streams whose request and response are both done (or that were reset) leave.
    fn emit_finished(&mut self) {
        let both_broken = self.dirs.iter().all(|d| d.broken.is_some());
        let ready: Vec<u32> = self
            .open
            .iter()
            .filter(|(_, s)| {
                s.reset.is_some() || (s.request_done() && s.response_done()) || both_broken
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            if let Some(s) = self.open.remove(&id) {
                self.push_done(s);
            }
        }
    }

    fn push_done(&mut self, s: Stream) {
        self.counters.streams += 1;
        if s.lost {
            self.counters.lost_streams += 1;
        }
        self.done.push(s);
    }
}

impl Stream {
    fn request_done(&self) -> bool {
        self.request.as_ref().is_some_and(|m| m.complete)
    }

    fn response_done(&self) -> bool {
        self.response.as_ref().is_some_and(|m| m.complete)
    }
}

#[cfg(test)]
mod tests;

//! HTTP/2 frames (RFC 9113 §4, §6): a reader that splits one direction's bytes into frames,
//! skipping the client preface, and accessors for the fields the decoder needs.

use crate::PREFACE;

/// `END_STREAM` (DATA, HEADERS).
pub const END_STREAM: u8 = 0x1;
/// `ACK` (SETTINGS, PING).
pub const ACK: u8 = 0x1;
/// `END_HEADERS` (HEADERS, PUSH_PROMISE, CONTINUATION).
pub const END_HEADERS: u8 = 0x4;
/// `PADDED` (DATA, HEADERS, PUSH_PROMISE).
pub const PADDED: u8 = 0x8;
/// `PRIORITY` (HEADERS).
pub const PRIORITY: u8 = 0x20;
/// `SETTINGS_HEADER_TABLE_SIZE`.
pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
/// `SETTINGS_MAX_FRAME_SIZE`.
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// The largest frame payload allowed before SETTINGS raise it (RFC 9113 §4.2).
const DEFAULT_MAX_FRAME: u32 = 16_384;
/// The largest any SETTINGS may allow.
const MAX_MAX_FRAME: u32 = (1 << 24) - 1;

/// A frame type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// DATA.
    Data,
    /// HEADERS.
    Headers,
    /// PRIORITY.
    Priority,
    /// RST_STREAM.
    RstStream,
    /// SETTINGS.
    Settings,
    /// PUSH_PROMISE.
    PushPromise,
    /// PING.
    Ping,
    /// GOAWAY.
    GoAway,
    /// WINDOW_UPDATE.
    WindowUpdate,
    /// CONTINUATION.
    Continuation,
    /// An extension type (ignored, as RFC 9113 §4.1 requires).
    Other,
}

impl Kind {
    fn of(t: u8) -> Kind {
        match t {
            0 => Kind::Data,
            1 => Kind::Headers,
            2 => Kind::Priority,
            3 => Kind::RstStream,
            4 => Kind::Settings,
            5 => Kind::PushPromise,
            6 => Kind::Ping,
            7 => Kind::GoAway,
            8 => Kind::WindowUpdate,
            9 => Kind::Continuation,
            _ => Kind::Other,
        }
    }
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Its type.
    pub kind: Kind,
    /// Its flags.
    pub flags: u8,
    /// Its stream (0: the connection).
    pub stream: u32,
    /// Its payload.
    pub payload: Vec<u8>,
}

impl Frame {
    /// `END_STREAM` is set.
    pub fn end_stream(&self) -> bool {
        self.flags & END_STREAM != 0
    }

    /// `END_HEADERS` is set.
    pub fn end_headers(&self) -> bool {
        self.flags & END_HEADERS != 0
    }

    /// The payload without its padding (DATA, HEADERS, PUSH_PROMISE with `PADDED`).
    pub fn unpadded(&self) -> Result<&[u8], &'static str> {
        if self.flags & PADDED == 0 {
            return Ok(&self.payload);
        }
        let pad = *self.payload.first().ok_or("PADDED without a pad length")? as usize;
        let body = &self.payload[1..];
        if pad > body.len() {
            return Err("padding longer than the frame");
        }
        Ok(&body[..body.len() - pad])
    }

    /// A HEADERS frame's header block fragment (padding and priority fields removed).
    pub fn header_fragment(&self) -> Result<&[u8], &'static str> {
        let p = self.unpadded()?;
        if self.flags & PRIORITY != 0 {
            p.get(5..).ok_or("PRIORITY fields cut short")
        } else {
            Ok(p)
        }
    }

    /// A PUSH_PROMISE's promised stream and header block fragment.
    pub fn push_promise(&self) -> Result<(u32, &[u8]), &'static str> {
        let p = self.unpadded()?;
        if p.len() < 4 {
            return Err("PUSH_PROMISE without a promised stream");
        }
        let id = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
        Ok((id, &p[4..]))
    }

    /// The big-endian u32 at `at` in the payload.
    pub fn u32_at(&self, at: usize) -> Option<u32> {
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A SETTINGS frame's (identifier, value) pairs.
    pub fn settings(&self) -> Vec<(u16, u32)> {
        self.payload
            .chunks_exact(6)
            .map(|c| {
                (
                    u16::from_be_bytes([c[0], c[1]]),
                    u32::from_be_bytes([c[2], c[3], c[4], c[5]]),
                )
            })
            .collect()
    }
}

/// Splits one direction's bytes into frames.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Start of the unread bytes in `buf`.
    at: usize,
    /// Preface bytes still to skip (the client's direction).
    preface: usize,
    max_frame: u32,
}

impl FrameReader {
    /// A reader for the client's direction (`client`: the preface comes first) or the server's.
    pub fn new(client: bool) -> Self {
        FrameReader {
            buf: Vec::new(),
            at: 0,
            preface: if client { PREFACE.len() } else { 0 },
            max_frame: DEFAULT_MAX_FRAME,
        }
    }

    /// Bytes held, not yet a whole frame.
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.at
    }

    /// The peer allowed frames up to `size` bytes (SETTINGS_MAX_FRAME_SIZE).
    pub fn allow_frame_size(&mut self, size: u32) {
        self.max_frame = size
            .clamp(DEFAULT_MAX_FRAME, MAX_MAX_FRAME)
            .max(self.max_frame);
    }

    /// More bytes of the direction.
    pub fn push(&mut self, data: &[u8]) {
        if self.at > 0 && self.at == self.buf.len() {
            self.buf.clear();
            self.at = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// The next whole frame, `None` until one is there; an error when the bytes are not
    /// HTTP/2 framing (a wrong preface, a frame over the allowed size).
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        if self.preface > 0 {
            let skip = PREFACE.len() - self.preface;
            let have = self.buffered().min(self.preface);
            if self.buf[self.at..self.at + have] != PREFACE[skip..skip + have] {
                return Err("not the HTTP/2 client preface".into());
            }
            self.at += have;
            self.preface -= have;
            if self.preface > 0 {
                return Ok(None);
            }
        }
        let rest = &self.buf[self.at..];
        if rest.len() < 9 {
            self.compact();
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, rest[0], rest[1], rest[2]]);
        if len > self.max_frame {
            return Err(format!(
                "a frame of {len} bytes, over the {} allowed",
                self.max_frame
            ));
        }
        let total = 9 + len as usize;
        if rest.len() < total {
            self.compact();
            return Ok(None);
        }
        let frame = Frame {
            kind: Kind::of(rest[3]),
            flags: rest[4],
            stream: u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]) & 0x7fff_ffff,
            payload: rest[9..total].to_vec(),
        };
        self.at += total;
        Ok(Some(frame))
    }

    /// Drops what was read when it is most of the buffer.
    fn compact(&mut self) {
        if self.at > 0 && self.at * 2 >= self.buf.len() {
            self.buf.drain(..self.at);
            self.at = 0;
        }
    }
}

//! The HTTP/1.x message model shared by every stage that reads or writes HTTP/1.x: a parsed
//! [`Message`], which side it came from ([`Role`]), and the question a parser asks of whoever
//! pairs requests with responses ([`Framing`]: how is this response framed?).

use crate::header::{CompactString, Header};

/// Which side of the connection a parser reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Client to server: requests.
    Request,
    /// Server to client: responses.
    Response,
}

/// How to frame a response whose head was just parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResponseFraming {
    /// The response answers request number `index`, sent with `method`.
    Request {
        /// Position of the request in its connection.
        index: u64,
        /// Method of the request.
        method: CompactString,
    },
    /// The response answers no request seen in the capture (it began before the capture did).
    Orphan,
    /// The request is not known yet: keep the bytes and ask again later.
    Wait,
}

/// What the parser asks of the connection that pairs requests with responses.
pub trait Framing {
    /// A request head was parsed; `ack` is the ACK number carried by the segment holding its
    /// first byte. Returns the request's index in the connection.
    fn request_head(&mut self, method: &str, start_offset: u64, ack: Option<u32>) -> u64;
    /// A response head with `status` was parsed at stream offset `start_offset`; `ack` is the
    /// ACK number carried by the segment holding its first byte; `unparsed_from` is where a run
    /// of server bytes that could not be parsed (lost or skipped) began, if one ends here.
    fn response_head(
        &mut self,
        status: u16,
        start_offset: u64,
        ack: Option<u32>,
        unparsed_from: Option<u64>,
    ) -> ResponseFraming;
}

/// One parsed HTTP message (complete or not).
#[derive(Debug, Clone, Default)]
pub struct Message {
    /// Stream offset of the first byte.
    pub start_offset: u64,
    /// Capture time of the first byte (µs since the epoch).
    pub start_us: i64,
    /// Capture time of the last byte seen.
    pub end_us: i64,
    /// For requests: the index in the connection; for final responses: the request answered.
    pub index: Option<u64>,
    /// For interim (1xx) responses: the request whose final response they precede. Set when
    /// the head is parsed, so it holds when the final response was parsed in the same read.
    pub interim_of: Option<u64>,
    /// Request method.
    pub method: CompactString,
    /// Request target.
    pub uri: String,
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub version: CompactString,
    /// Response status.
    pub status: u16,
    /// Response reason phrase.
    pub reason: CompactString,
    /// Header lines.
    pub headers: Vec<Header>,
    /// Trailer lines (chunked bodies).
    pub trailers: Vec<Header>,
    /// Body bytes kept (after de-chunking), at most the cap.
    pub body: Vec<u8>,
    /// Body length on the wire after de-chunking, including bytes not kept or lost.
    pub body_len: u64,
    /// The body exceeded the cap.
    pub body_truncated: bool,
    /// Bytes of this message were lost.
    pub gap: bool,
    /// The message ended as its framing says (false: cut off).
    pub complete: bool,
    /// Why parsing failed part-way, if it did.
    pub error: Option<String>,
    /// The response answers no request in the capture.
    pub orphan: bool,
    /// The connection switched protocols after this message.
    pub upgraded: bool,
}

impl Message {
    /// Approximate memory held by the message's head and body.
    pub fn held_bytes(&self) -> usize {
        let lines: usize = self
            .headers
            .iter()
            .chain(&self.trailers)
            .map(|h| h.name.len() + h.value.len())
            .sum();
        // Capacity, not length: a body grown by doubling holds up to twice what it read.
        self.body.capacity() + lines + self.uri.len()
    }
}

impl Message {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
}

//! HTTP/1.x for every shadowtap stage: the message model, the incremental, gap-tolerant
//! parser, content decoding, and (feature `client`) a client connection and pool.
//!
//! Capture reads both directions of a reassembled TCP stream with [`MessageParser`] (passive:
//! lost bytes are skipped and flagged, the parser resynchronises on the next start line). The
//! replayer sends requests with [`client::Connection`] and frames the answers with the same
//! parser, so a replayed response is recorded exactly as a captured one would be. The
//! mirroring proxy sends its shadow copies through the replayer's client (so through this
//! crate); its own listener and production client are hyper's. This crate knows nothing of
//! packets, Parquet or Arrow.
//!
//! ```
//! use shadowtap_http1::{Framing, MessageParser, ParserEvent, ParserLimits, ResponseFraming, Role};
//!
//! /// Answers every response with the request at the same position (one request here).
//! struct OneGet;
//! impl Framing for OneGet {
//!     fn request_head(&mut self, _: &str, _: u64, _: Option<u32>) -> u64 { 0 }
//!     fn response_head(&mut self, _: u16, _: u64, _: Option<u32>, _: Option<u64>) -> ResponseFraming {
//!         ResponseFraming::Request { index: 0, method: "GET".into() }
//!     }
//! }
//!
//! let mut parser = MessageParser::new(Role::Response, ParserLimits::default(), false, 0);
//! parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0, None, &mut OneGet);
//! let events: Vec<_> = parser.drain_events().collect();
//! let Some(ParserEvent::Message(m)) = events.first() else { panic!("no message") };
//! assert_eq!((m.status, &m.body[..], m.complete), (200, &b"ok"[..], true));
//! ```

#![forbid(unsafe_code)]

#[cfg(feature = "client")]
pub mod client;
pub mod content;
pub mod header;
pub mod message;
pub mod parser;

pub use content::{decode_body, DecodeError};
pub use header::{text_from_bytes, CompactString, Header};
pub use message::{Framing, Message, ResponseFraming, Role};
pub use parser::{is_start_line, MessageParser, ParserEvent, ParserLimits};

//! Header lines, kept as sent: the name's case, the order of lines, and every byte of the value.

pub use compact_str::CompactString;

/// One header (or trailer) line, with the name's case and the order of lines kept.
///
/// Values that are not valid UTF-8 are decoded as ISO-8859-1, which maps every byte to one
/// character, so nothing is lost (RFC 9110 §5.5 treats such bytes as opaque).
///
/// Name and value are [`CompactString`]s: up to 24 bytes are kept inline, so most header lines
/// (`Host`, `Accept`, `Content-Length: 3`) cost no allocation. Exchanges are built on one
/// thread and dropped on another at every stage, where each allocation costs twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name as sent.
    pub name: CompactString,
    /// Header value as sent, without surrounding whitespace.
    pub value: CompactString,
}

impl Header {
    /// A header from a name and value.
    pub fn new(name: impl Into<CompactString>, value: impl Into<CompactString>) -> Self {
        Header {
            name: name.into(),
            value: value.into(),
        }
    }
}

impl Header {
    /// Builds a header from raw bytes, decoding as UTF-8 or, failing that, ISO-8859-1.
    pub fn from_bytes(name: &[u8], value: &[u8]) -> Self {
        Header {
            name: text_from_bytes(name),
            value: text_from_bytes(value),
        }
    }
}

/// Decodes bytes as UTF-8, or as ISO-8859-1 when they are not valid UTF-8 (lossless); kept
/// inline when short (no allocation up to 24 bytes).
pub fn text_from_bytes(bytes: &[u8]) -> CompactString {
    match std::str::from_utf8(bytes) {
        Ok(s) => CompactString::from(s),
        Err(_) => bytes.iter().map(|&b| b as char).collect(),
    }
}

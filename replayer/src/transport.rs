//! What every transport of the replayer shares: the protocol spoken to a target, and sorting
//! transport errors (reqwest's, hyper's, the HTTP/1.1 client's, I/O's) into the `error_kind`
//! column's kinds. A leaf module: the transports use it, it uses none of them.

use std::error::Error as _;

use shadowtap_core::replays::ErrorKind;
use shadowtap_http1::client::{Failure, FailureKind};

/// HTTP version towards the targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Protocol {
    /// HTTP/1.1 (connections reused, one request at a time on each).
    #[default]
    Http1,
    /// HTTP/2 without TLS, by prior knowledge (h2c); over `https://`, HTTP/2 by ALPN.
    H2c,
}

impl std::str::FromStr for Protocol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http1" | "http1.1" | "h1" => Ok(Protocol::Http1),
            "h2c" | "http2" | "h2" => Ok(Protocol::H2c),
            other => Err(format!("unknown protocol {other:?} (use http1 or h2c)")),
        }
    }
}

/// The `error_kind` of an HTTP/1.1 client failure.
pub(crate) fn kind(k: FailureKind) -> ErrorKind {
    match k {
        FailureKind::Timeout => ErrorKind::Timeout,
        FailureKind::Refused => ErrorKind::Refused,
        FailureKind::Reset => ErrorKind::Reset,
        FailureKind::Protocol => ErrorKind::Protocol,
        FailureKind::Connect => ErrorKind::Connect,
        FailureKind::Other => ErrorKind::Other,
    }
}

/// An HTTP/1.1 client failure as a kind and a message.
pub(crate) fn failure(f: Failure) -> (ErrorKind, String) {
    (kind(f.kind), f.message)
}

/// Sorts a transport error into a kind, with a message naming the causes.
pub fn classify(e: &reqwest::Error) -> (ErrorKind, String) {
    let message = error_chain(e);
    let mut kind = if e.is_timeout() {
        ErrorKind::Timeout
    } else if e.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Other
    };
    let mut source = e.source();
    while let Some(s) = source {
        if kind == ErrorKind::Timeout {
            break;
        }
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            // An error wrapped in an io::Error (rustls's alerts are) is its payload, not its
            // source.
            if wraps_tls_error(io) {
                kind = ErrorKind::Tls;
                break;
            }
            kind = io_kind(io).unwrap_or(kind);
        } else if s.downcast_ref::<rustls::Error>().is_some() {
            kind = ErrorKind::Tls;
        } else if let Some(h) = s.downcast_ref::<hyper::Error>() {
            kind = hyper_kind(h).unwrap_or(kind);
        }
        source = s.source();
    }
    if kind == ErrorKind::Other && message.contains("tls") {
        kind = ErrorKind::Tls;
    }
    (kind, message)
}

/// Sorts an error from our own hyper connections into a kind; `doing` starts the message.
pub(crate) fn classify_hyper(e: &hyper::Error, doing: &str) -> (ErrorKind, String) {
    let mut kind = hyper_kind(e).unwrap_or(ErrorKind::Other);
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(k) = s.downcast_ref::<std::io::Error>().and_then(io_kind) {
            kind = k;
        }
        source = s.source();
    }
    (kind, format!("{doing}: {}", error_chain(e)))
}

/// The kind a hyper error names, if any.
fn hyper_kind(h: &hyper::Error) -> Option<ErrorKind> {
    if h.is_parse() || h.is_parse_status() {
        Some(ErrorKind::Protocol)
    } else if h.is_incomplete_message() || h.is_closed() || h.is_canceled() {
        Some(ErrorKind::Reset)
    } else if h.is_timeout() {
        Some(ErrorKind::Timeout)
    } else {
        None
    }
}

/// The kind of an I/O error, when it names one.
pub(crate) fn io_kind(e: &std::io::Error) -> Option<ErrorKind> {
    shadowtap_http1::client::io_kind(e).map(kind)
}

/// Whether an I/O error carries a rustls error (possibly inside further I/O errors).
fn wraps_tls_error(io: &std::io::Error) -> bool {
    let mut inner = io.get_ref();
    while let Some(e) = inner {
        if e.is::<rustls::Error>() {
            return true;
        }
        inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
    }
    false
}

/// The error and its causes, joined (reqwest's top-level message alone says little).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut s = e.source();
    while let Some(c) = s {
        let t = c.to_string();
        if !parts.iter().any(|p| p.contains(&t)) {
            parts.push(t);
        }
        s = c.source();
    }
    parts.join(": ")
}

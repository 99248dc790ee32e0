//! An HTTP/1.1 client over plain TCP, for callers that must send a request exactly as given
//! (recorded header case and order, the framing capture would see) and time it: the replayer
//! today, the mirroring proxy's shadow side next.
//!
//! [`Pool`] keeps the idle connections to one `host:port`; [`Connection`] carries one
//! exchange at a time; a failure says what kind it was ([`FailureKind`]) and how far the
//! request got, which is what a caller needs to decide whether resending it is safe.

mod conn;
mod pool;

pub use conn::{Answer, Connection, RequestHead};
pub use pool::{connect, Pool};

/// What kind of failure ended an exchange or a connection attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Nothing within the time allowed.
    Timeout,
    /// The connection was refused (nothing listening).
    Refused,
    /// The connection was reset or closed before a complete response.
    Reset,
    /// The peer sent something that is not valid HTTP/1.x.
    Protocol,
    /// The connection could not be made for another reason (DNS, unreachable network).
    Connect,
    /// Anything else (a request that cannot be written as valid HTTP/1.1, for one).
    Other,
}

/// A request that failed, or a connection that could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What kind of failure.
    pub kind: FailureKind,
    /// What happened, for people (never bodies or header values).
    pub message: String,
    /// The whole request was written.
    pub written: bool,
    /// At least one response byte came back.
    pub answered: bool,
}

impl Failure {
    /// A failure before anything was written.
    pub fn before_sending(kind: FailureKind, message: String) -> Self {
        Failure {
            kind,
            message,
            written: false,
            answered: false,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// The kind of an I/O error, when it names one.
pub fn io_kind(e: &std::io::Error) -> Option<FailureKind> {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => Some(FailureKind::Refused),
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            Some(FailureKind::Reset)
        }
        K::TimedOut => Some(FailureKind::Timeout),
        _ => None,
    }
}

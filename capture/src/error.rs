//! Errors of the capture stage.

use std::path::PathBuf;

impl CaptureError {
    /// True for errors in what the user asked (bad filter, interface, option): the command
    /// exits with status 2 for these, 1 for the rest.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CaptureError::Filter { .. }
                | CaptureError::Interface { .. }
                | CaptureError::RedactionKey { .. }
                | CaptureError::InvalidOption { .. }
        )
    }
}

/// What can stop a capture, or part of one.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A capture file could not be opened (missing, unreadable, not pcap/pcapng).
    #[error("{path}: cannot open capture: {message}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What libpcap said.
        message: String,
    },
    /// A live capture could not start or failed (unknown interface, no permission, …).
    #[error("interface {interface}: {message}")]
    Interface {
        /// The interface.
        interface: String,
        /// What libpcap or the system said.
        message: String,
    },
    /// No random redaction key: the OS random source failed. Capture does not start rather
    /// than redact with a guessable key.
    #[error("cannot draw a random redaction key from the OS ({message}); give one with --redact-key-file or SHADOWTAP_REDACT_KEY")]
    RedactionKey {
        /// What the OS said.
        message: String,
    },
    /// The BPF filter did not compile.
    #[error("invalid --filter {expr:?}: {message}")]
    Filter {
        /// The expression.
        expr: String,
        /// What libpcap said.
        message: String,
    },
    /// The file's link type is not one shadowtap decodes.
    #[error("{path}: unsupported link type {dlt} (supported: Ethernet, Linux SLL/SLL2, raw IP, BSD null/loop)")]
    UnsupportedLinkType {
        /// The file.
        path: PathBuf,
        /// The DLT value.
        dlt: i32,
    },
    /// Reading stopped early (truncated or corrupt file); packets before it were used.
    #[error("{path}: read stopped after packet {packets} at byte offset {offset}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Packets read before the error.
        packets: u64,
        /// Byte offset where the bad record starts (exact for pcap, estimated for pcapng).
        offset: u64,
        /// What libpcap said.
        message: String,
    },
    /// An option had a value outside its range.
    #[error("invalid {option}: {message}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// Why.
        message: String,
    },
    /// Writing the output failed.
    #[error(transparent)]
    Sink(#[from] shadowtap_core::sink::SinkError),
    /// Writing the summary failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Converting exchanges to Arrow failed (a bug).
    #[error("internal error (a bug): building record batch: {0}")]
    Internal(#[from] arrow::error::ArrowError),
    /// Not one packet could be read from any input.
    #[error("nothing could be read from the inputs")]
    NothingRead,
}

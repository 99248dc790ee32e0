//! The proxy's errors: each names what to fix.

/// Why the proxy cannot start or take a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// A configuration value no proxy can run with.
    #[error("{field}: {message}")]
    Config {
        /// The flag or field.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A shadow or canary would send at production.
    #[error(
        "{pool} {url} is production ({why}); a copy sent there reaches real users. \
         Name it with --allow-target {host} if that is intended"
    )]
    TargetIsProduction {
        /// The pool.
        pool: String,
        /// Its URL.
        url: String,
        /// The host to allow.
        host: String,
        /// Which rule matched.
        why: String,
    },
    /// A listener could not be opened.
    #[error("{what} {addr}: {source}")]
    Listen {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The recording could not be opened or written.
    #[error("recording: {0}")]
    Record(String),
    /// The shadow senders failed.
    #[error(transparent)]
    Replay(#[from] shadowtap_replayer::ReplayError),
}

impl ProxyError {
    pub(crate) fn config(field: &str, message: String) -> Self {
        ProxyError::Config {
            field: field.to_owned(),
            message,
        }
    }
}

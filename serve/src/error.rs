//! What `shadowtap serve` can fail with.

/// An error of the control plane.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is wrong.
    #[error("{field}: {why}")]
    Config {
        /// The key or flag.
        field: String,
        /// Why.
        why: String,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(String),
    /// A proxy could not start or take a change.
    #[error("load balancer {id}: {source}")]
    Proxy {
        /// Which.
        id: String,
        /// The proxy's error.
        source: Box<shadowtap_proxy::ProxyError>,
    },
    /// Binding a socket.
    #[error("{what} {addr}: {source}")]
    Listen {
        /// What listens.
        what: &'static str,
        /// Where.
        addr: String,
        /// The OS error.
        source: std::io::Error,
    },
}

impl From<sqlx::Error> for ServeError {
    fn from(e: sqlx::Error) -> Self {
        ServeError::Store(e.to_string())
    }
}

//! Errors of the replay stage.

use std::path::PathBuf;

use shadowtap_core::read::ReadError;
use shadowtap_core::sink::SinkError;

/// What can stop a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// An option's value is wrong (exit code 2 in the CLI).
    #[error("{option}: {message}")]
    InvalidOption {
        /// The flag or setting.
        option: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A target points at a host the recording was captured from.
    #[error("target `{target}` ({url}) matches {captured} the recording was captured from: shadowtap never replays at captured hosts, so production is not sent duplicate traffic (if {host} is not production, say so with --allow-target {host})")]
    CapturedHost {
        /// Target name.
        target: String,
        /// Target URL.
        url: String,
        /// The captured host it matches (`the Host name …`, `the server …`).
        captured: String,
        /// The target's host, as `--allow-target` would name it.
        host: String,
    },
    /// The recording could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The results could not be written.
    #[error(transparent)]
    Write(#[from] SinkError),
    /// A rules file, script or middleware could not be loaded or started.
    #[error("{what}: {message}")]
    Hook {
        /// Which hook (`--rules FILE`, `--script FILE`, `--middleware`).
        what: String,
        /// What went wrong.
        message: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl ReplayError {
    /// True for mistakes in how the command was called (bad flags, bad files given), as
    /// opposed to failures while running.
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            ReplayError::InvalidOption { .. }
                | ReplayError::CapturedHost { .. }
                | ReplayError::Hook { .. }
                | ReplayError::Read(_)
        )
    }
}

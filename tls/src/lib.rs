//! Passive TLS decryption: a captured connection's records opened with the secrets a client
//! or server logged (an NSS key log, `SSLKEYLOGFILE`), so the HTTP inside can be read as if
//! it had been sent in clear. TLS 1.3 (its three suites, handshake and application epochs,
//! KeyUpdate) and TLS 1.2's AEAD suites (AES-GCM, ChaCha20-Poly1305); resumed sessions are
//! read like full ones, as clients log their secrets too. Sessions without keys are reported,
//! never guessed at. The cryptography is `ring`'s.
//!
//! - [`KeyLog`]: the key log (a file followed as it grows, or text);
//! - [`Session`]: one connection's two directions in, the application data's plaintext out.

mod crypto;
mod keylog;
mod session;

pub use crypto::{suite, Cipher, Hash, Suite};
pub use keylog::{KeyLog, Secrets};
pub use session::{Counters, Info, Session, Status};

/// What goes wrong.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The key log cannot be read.
    #[error("key log {0}")]
    KeyLog(String),
}

/// Whether `data`, a connection's first bytes in one direction, starts like a TLS handshake
/// record (a ClientHello or ServerHello).
pub fn looks_like_handshake(data: &[u8]) -> bool {
    data.len() >= 6
        && data[0] == 22
        && data[1] == 3
        && data[2] <= 4
        && (data[5] == 1 || data[5] == 2)
}

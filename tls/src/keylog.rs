//! NSS key logs (the `SSLKEYLOGFILE` format, RFC 9850): one secret per line, `LABEL
//! <client random, hex> <secret, hex>`, keyed by the ClientHello's random. A file that grows
//! while a capture runs (a live client writing it) is read again from where it was left when a
//! session's random is not found, so keys logged after the capture started are found.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::TlsError;

/// The secrets logged for one session (one ClientHello random).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    /// TLS 1.2 and earlier: the master secret (`CLIENT_RANDOM`).
    pub master: Option<Vec<u8>>,
    /// TLS 1.3 `CLIENT_HANDSHAKE_TRAFFIC_SECRET`.
    pub client_handshake: Option<Vec<u8>>,
    /// TLS 1.3 `SERVER_HANDSHAKE_TRAFFIC_SECRET`.
    pub server_handshake: Option<Vec<u8>>,
    /// TLS 1.3 `CLIENT_TRAFFIC_SECRET_0`.
    pub client_traffic: Option<Vec<u8>>,
    /// TLS 1.3 `SERVER_TRAFFIC_SECRET_0`.
    pub server_traffic: Option<Vec<u8>>,
}

/// The file is looked at again at most this often on misses.
const MIN_LOOK_INTERVAL: std::time::Duration = std::time::Duration::from_millis(50);

#[derive(Default)]
struct Table {
    secrets: HashMap<[u8; 32], Secrets>,
    /// Bytes of the file read so far (only whole lines are consumed).
    read: u64,
    /// Lines that were not key log lines.
    bad_lines: u64,
    /// When the file was last looked at for more (a miss per record of a session without
    /// keys must not cost a read each).
    last_look: Option<std::time::Instant>,
}

/// A key log: from a file (followed as it grows), from text (a pcapng Decryption Secrets
/// Block), or both. Shared between connections (`Arc<KeyLog>`).
#[derive(Default)]
pub struct KeyLog {
    path: Option<PathBuf>,
    table: Mutex<Table>,
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

impl Table {
    fn add_line(&mut self, line: &str) {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return;
        }
        let mut parts = line.split_ascii_whitespace();
        let (Some(label), Some(random), Some(secret), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            self.bad_lines += 1;
            return;
        };
        let (Some(random), Some(secret)) = (unhex(random), unhex(secret)) else {
            self.bad_lines += 1;
            return;
        };
        let Ok(random) = <[u8; 32]>::try_from(random.as_slice()) else {
            self.bad_lines += 1;
            return;
        };
        let s = self.secrets.entry(random).or_default();
        let slot = match label {
            "CLIENT_RANDOM" => &mut s.master,
            "CLIENT_HANDSHAKE_TRAFFIC_SECRET" => &mut s.client_handshake,
            "SERVER_HANDSHAKE_TRAFFIC_SECRET" => &mut s.server_handshake,
            "CLIENT_TRAFFIC_SECRET_0" => &mut s.client_traffic,
            "SERVER_TRAFFIC_SECRET_0" => &mut s.server_traffic,
            // EXPORTER_SECRET, early data and labels of later drafts: not needed to read.
            _ => return,
        };
        *slot = Some(secret);
    }

    /// Adds the whole lines of `text`; the length consumed (up to the last newline).
    fn add_text(&mut self, text: &str, whole_lines_only: bool) -> usize {
        let end = if whole_lines_only {
            text.rfind('\n').map_or(0, |i| i + 1)
        } else {
            text.len()
        };
        for line in text[..end].lines() {
            self.add_line(line);
        }
        end
    }
}

impl std::fmt::Debug for KeyLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("KeyLog")
            .field("path", &self.path)
            .field("sessions", &self.len())
            .finish()
    }
}

impl KeyLog {
    /// A key log read from `path` now and again, from where it was left, whenever a session's
    /// keys are not found.
    pub fn open(path: &Path) -> Result<KeyLog, TlsError> {
        let log = KeyLog {
            path: Some(path.to_owned()),
            table: Mutex::default(),
        };
        log.read_more_if(true)?;
        Ok(log)
    }

    /// A key log of `text` (NSS format).
    pub fn from_text(text: &str) -> KeyLog {
        let log = KeyLog::default();
        log.add_text(text);
        log
    }

    /// Adds the lines of `text` (a pcapng Decryption Secrets Block's key log).
    pub fn add_text(&self, text: &str) {
        self.lock().add_text(text, false);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads what was appended to the file since the last read (unless it was looked at less
    /// than [`MIN_LOOK_INTERVAL`] ago and not `force`); whether anything was.
    fn read_more_if(&self, force: bool) -> Result<bool, TlsError> {
        let Some(path) = &self.path else {
            return Ok(false);
        };
        let io = |e: std::io::Error| TlsError::KeyLog(format!("{}: {e}", path.display()));
        let mut table = self.lock();
        let now = std::time::Instant::now();
        if !force
            && table
                .last_look
                .is_some_and(|t| now.duration_since(t) < MIN_LOOK_INTERVAL)
        {
            return Ok(false);
        }
        table.last_look = Some(now);
        let mut f = std::fs::File::open(path).map_err(io)?;
        let len = f.metadata().map_err(io)?.len();
        if len < table.read {
            // Truncated and rewritten: read it all again (secrets already known stay).
            table.read = 0;
        }
        if len == table.read {
            return Ok(false);
        }
        f.seek(SeekFrom::Start(table.read)).map_err(io)?;
        let mut bytes = Vec::new();
        f.take(len - table.read)
            .read_to_end(&mut bytes)
            .map_err(io)?;
        let text = String::from_utf8_lossy(&bytes);
        let used = table.add_text(&text, true);
        // Lossy decoding keeps lengths of valid UTF-8; a key log is ASCII.
        table.read += used as u64;
        Ok(used > 0)
    }

    /// The secrets of the session whose ClientHello random is `random`; the file is read
    /// again (what was appended) when they are not known yet.
    pub fn lookup(&self, random: &[u8; 32]) -> Option<Secrets> {
        self.lookup_with(random, false)
    }

    /// As [`KeyLog::lookup`], reading the file again whenever it misses (at the end of a
    /// session: its last chance).
    pub fn lookup_fresh(&self, random: &[u8; 32]) -> Option<Secrets> {
        self.lookup_with(random, true)
    }

    fn lookup_with(&self, random: &[u8; 32], force: bool) -> Option<Secrets> {
        if let Some(s) = self.lock().secrets.get(random) {
            return Some(s.clone());
        }
        if self.read_more_if(force).unwrap_or(false) {
            return self.lock().secrets.get(random).cloned();
        }
        None
    }

    /// Sessions with at least one secret.
    pub fn len(&self) -> usize {
        self.lock().secrets.len()
    }

    /// No secret at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Lines that were not key log lines (a wrong file is worth a warning).
    pub fn bad_lines(&self) -> u64 {
        self.lock().bad_lines
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R: &str = "0101010101010101010101010101010101010101010101010101010101010101";

    #[test]
    fn labels_fill_their_secrets_and_junk_is_counted() {
        let log = KeyLog::from_text(&format!(
            "# comment\nCLIENT_RANDOM {R} {}\nSERVER_TRAFFIC_SECRET_0 {R} aabb\nEXPORTER_SECRET {R} cc\nnot a line\nCLIENT_RANDOM zz 00\n",
            "ab".repeat(48)
        ));
        let s = log.lookup(&[1; 32]).unwrap();
        assert_eq!(s.master.as_deref(), Some(&[0xab; 48][..]));
        assert_eq!(s.server_traffic.as_deref(), Some(&[0xaa, 0xbb][..]));
        assert!(s.client_traffic.is_none());
        assert_eq!(log.bad_lines(), 2);
        assert!(log.lookup(&[2; 32]).is_none());
    }

    #[test]
    fn a_growing_file_is_read_again_on_a_miss_and_half_lines_wait() {
        let dir = tempfile_dir();
        let path = dir.join("keys.log");
        std::fs::write(&path, format!("CLIENT_RANDOM {R} 00")).unwrap();
        let log = KeyLog::open(&path).unwrap();
        // The line is not finished: not read yet.
        assert!(log.lookup(&[1; 32]).is_none());
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"11\n").unwrap();
        // Misses look at the file at most every 50 ms.
        std::thread::sleep(MIN_LOOK_INTERVAL);
        assert_eq!(log.lookup(&[1; 32]).unwrap().master, Some(vec![0x00, 0x11]));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = KeyLog::open(Path::new("/nonexistent/keys.log"))
            .err()
            .unwrap();
        assert!(e.to_string().contains("/nonexistent/keys.log"), "{e}");
    }

    fn tempfile_dir() -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "shadowtap-tls-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

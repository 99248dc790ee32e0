//! A captured TLS connection read with a key log (`--tls-keylog`): its records are opened by
//! `shadowtap-tls` and the plaintext goes, direction by direction, into an inner
//! [`HttpConnection`] as if it had been captured in clear, so HTTP/1.x and HTTP/2 (ALPN `h2`:
//! the plaintext starts with the client's preface) are read the same way. Exchanges of HTTP/2
//! over TLS are marked `h2`, not `h2c`. A session the key log has no keys for, or one that
//! cannot be read, is counted, never guessed at.

use std::sync::Arc;

use shadowtap_core::exchange::Exchange;
use shadowtap_http1::ParserLimits;
use shadowtap_tls::{KeyLog, Session, Status};

use super::{Endpoint, HttpConnection};

/// TLS counters of a connection, summed in the capture's summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TlsStats {
    /// TLS connections seen (a ClientHello or ServerHello).
    pub connections: u64,
    /// Of them, decrypted (the key log had their keys).
    pub decrypted: u64,
    /// Of them, not decrypted: no keys in the key log.
    pub no_keys: u64,
    /// Of them, not decrypted: a suite or version that is not read (CBC, TLS 1.0, …).
    pub unsupported: u64,
    /// Of them, given up part way: a lost segment, a record that did not authenticate.
    pub failed: u64,
}

/// The TLS layer of one connection and the HTTP inside it.
pub struct TlsTap {
    session: Session,
    keys: Arc<KeyLog>,
    endpoints: [Endpoint; 2],
    first_us: i64,
    limits: ParserLimits,
    source: Arc<str>,
    inner: Option<Box<HttpConnection>>,
    plain: Vec<(usize, Vec<u8>)>,
}

impl TlsTap {
    /// A TLS connection between `endpoints` first seen at `first_us`.
    pub fn new(
        endpoints: [Endpoint; 2],
        first_us: i64,
        limits: ParserLimits,
        source: Arc<str>,
        keys: Arc<KeyLog>,
    ) -> TlsTap {
        TlsTap {
            session: Session::new(),
            keys,
            endpoints,
            first_us,
            limits,
            source,
            inner: None,
            plain: Vec::new(),
        }
    }

    /// Contiguous bytes of direction `dir` captured at `ts_us`.
    pub fn feed(&mut self, dir: usize, data: &[u8], ts_us: i64) {
        self.session.feed(dir, data, &self.keys, &mut self.plain);
        self.deliver(ts_us);
    }

    fn deliver(&mut self, ts_us: i64) {
        if self.plain.is_empty() {
            return;
        }
        if self.inner.is_none() {
            let Some(client) = self.session.client_dir() else {
                self.plain.clear();
                return;
            };
            self.inner = Some(Box::new(HttpConnection::new(
                self.endpoints,
                Some(client),
                self.first_us,
                self.limits,
                self.source.clone(),
            )));
        }
        let inner = self.inner.as_mut().expect("made above");
        for (dir, bytes) in self.plain.drain(..) {
            inner.on_data(dir, &bytes, ts_us, None);
        }
    }

    /// `len` bytes of `dir` were never captured: the records after them cannot be found.
    pub fn gap(&mut self, dir: usize, len: u64, ts_us: i64) {
        self.session.gap(dir, len);
        if let Some(inner) = self.inner.as_mut() {
            inner.on_gap(dir, len, ts_us);
        }
    }

    /// Direction `dir` ended.
    pub fn end(&mut self, dir: usize, clean: bool) {
        if let Some(inner) = self.inner.as_mut() {
            inner.on_end(dir, clean);
        }
    }

    /// The connection is over.
    pub fn finish(&mut self) {
        self.session.finish(&self.keys, &mut self.plain);
        self.deliver(self.first_us);
        if let Some(inner) = self.inner.as_mut() {
            inner.finish();
        }
    }

    /// The exchanges read so far.
    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        let Some(inner) = self.inner.as_mut() else {
            return Vec::new();
        };
        let mut out = inner.take_exchanges();
        let info = self.session.info();
        let tls = info
            .version
            .map(|version| shadowtap_core::exchange::TlsSession {
                version: version.into(),
                cipher: info.cipher.unwrap_or_default().into(),
                sni: info.sni.clone(),
            });
        for e in &mut out {
            if e.protocol.as_deref() == Some("h2c") {
                e.protocol = Some("h2".into());
            }
            e.tls = tls.clone();
        }
        out
    }

    /// The inner connection (its counters).
    pub fn inner(&self) -> Option<&HttpConnection> {
        self.inner.as_deref()
    }

    /// Bytes held.
    pub fn buffered_bytes(&self) -> usize {
        self.session.buffered_bytes() + self.inner.as_ref().map_or(0, |i| i.buffered_bytes())
    }

    /// This connection's TLS counters.
    pub fn stats(&self) -> TlsStats {
        let mut s = TlsStats {
            connections: 1,
            ..TlsStats::default()
        };
        match self.session.status() {
            Status::Decrypting => s.decrypted = 1,
            Status::NoKeys => s.no_keys = 1,
            Status::Unsupported(_) => s.unsupported = 1,
            Status::Failed(_) if self.session.counters().opened > 0 => {
                s.decrypted = 1;
                s.failed = 1;
            }
            Status::Failed(_) => s.failed = 1,
            // No hellos seen (a capture that began mid-connection): nothing to look up.
            Status::Handshake => s.failed = 1,
        }
        s
    }

    /// Why it was not (fully) read, for the log.
    pub fn status(&self) -> Status {
        self.session.status()
    }
}

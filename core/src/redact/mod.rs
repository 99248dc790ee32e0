//! Redaction: secrets in captured traffic are replaced by a keyed HMAC before anything is
//! written, so equal values stay equal (joins, grouping, `--match-*` on later stages) and the
//! secrets themselves never reach disk.
//!
//! Where secrets live, and what is done there (names compare case-insensitively, with `-` and
//! `_` ignored, so `X-Api-Key`, `x_api_key` and `XAPIKEY` are one name):
//! - **headers and trailers** named in [`DEFAULT_HEADERS`], or whose name holds one of
//!   [`HEADER_NAME_PARTS`] (`X-Upstream-Token`), or named with `--redact`: the value (the
//!   `Authorization` scheme, cookie names and `Set-Cookie` attributes are kept);
//! - **URLs**: the request target, and the `Location`, `Content-Location` and `Referer` headers
//!   ([`URL_HEADERS`]): query and fragment parameters named in [`DEFAULT_PARAMS`], or holding
//!   one of [`PARAM_NAME_PARTS`], or named with `--redact`;
//! - **bodies** ([`body`]): the same parameter names in `application/x-www-form-urlencoded`
//!   bodies and `multipart/form-data` fields, and JSON object keys in [`DEFAULT_JSON_KEYS`],
//!   holding one of [`JSON_KEY_PARTS`], or named with `--redact`.
//!
//! **It fails closed.** A body that may hold named fields (JSON, a form, multipart, or no
//! content type at all) but cannot be read whole — its content coding could not be undone
//! (truncated, bytes lost, an unknown coding), bytes of it were lost in capture, or it does
//! not parse (a JSON body cut at `--max-body`) — is withheld: its bytes are not written
//! (`request_body` / `response_body` null), its length is kept, `redaction_withheld` is set and
//! `error_detail` says why. A content-coded body whose decoded form had fields redacted keeps
//! only the redacted decoded form; its raw, still-coded bytes are withheld.
//!
//! The key comes from a file or the `SHADOWTAP_REDACT_KEY` variable (so several captures
//! redact alike), or is drawn from the OS random source per run ([`Redaction::resolve`]):
//! when that fails, capture refuses to start rather than use a guessable key.
//! A plain function of one exchange.

mod body;
#[cfg(test)]
mod tests;

use crate::exchange::{Exchange, Header};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secrets::{normalise, Names};
pub use crate::secrets::{
    DEFAULT_HEADERS, DEFAULT_JSON_KEYS, DEFAULT_PARAMS, HEADER_NAME_PARTS, JSON_KEY_PARTS,
    PARAM_NAME_PARTS, URL_HEADERS,
};

/// How a capture redacts, before its key is known.
#[derive(Debug, Clone)]
pub enum Redaction {
    /// Secrets are written as captured (`--no-redact`).
    Off,
    /// A fresh key from the OS random source when the capture starts, with extra names.
    RandomKey(Vec<String>),
    /// A given key.
    Keyed(Box<Redactor>),
}

impl Redaction {
    /// The redactor to run, drawing the random key now. An OS random source that fails is an
    /// error: a key derived from the clock could be guessed, and tokens of guessable secrets
    /// (short passwords) reversed.
    pub fn resolve(&self) -> Result<Option<Redactor>, getrandom::Error> {
        Ok(match self {
            Redaction::Off => None,
            Redaction::RandomKey(names) => Some(Redactor::new(Redactor::random_key()?, names)),
            Redaction::Keyed(r) => Some((**r).clone()),
        })
    }
}

/// Replaces secrets by `hmac:<32 hex digits>` (the first 128 bits of HMAC-SHA256).
#[derive(Clone)]
pub struct Redactor {
    /// The keyed HMAC state, cloned for each token (the key schedule runs once).
    mac: Hmac<Sha256>,
    headers: Names,
    params: Names,
    json_keys: Names,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Redactor")
            .field("headers", &self.headers.exact())
            .field("params", &self.params.exact())
            .field("json_keys", &self.json_keys.exact())
            .finish()
    }
}

impl Redactor {
    /// A redactor with `key`, redacting the defaults plus `names` (as headers, parameters and
    /// JSON keys).
    pub fn new(key: Vec<u8>, names: &[String]) -> Self {
        let mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes keys of any length");
        Redactor {
            mac,
            headers: Names::headers(names),
            params: Names::params(names),
            json_keys: Names::json_keys(names),
        }
    }

    /// A 32-byte key from the OS random source (`getrandom`).
    pub fn random_key() -> Result<Vec<u8>, getrandom::Error> {
        let mut key = vec![0u8; 32];
        getrandom::fill(&mut key)?;
        Ok(key)
    }

    fn token(&self, secret: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(secret);
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("hmac:{hex}")
    }

    /// Redacts every place of `ex` that may hold a secret (see the module docs).
    pub fn apply(&self, ex: &mut Exchange) {
        for h in ex
            .request_headers
            .iter_mut()
            .chain(ex.response_headers.iter_mut())
            .chain(ex.request_trailers.iter_mut())
            .chain(ex.response_trailers.iter_mut())
        {
            self.header(h);
        }
        if let Some(uri) = self.url(&ex.uri) {
            ex.uri = uri;
        }
        if let Some(q) = ex.query.as_deref().and_then(|q| self.params_in(q, '&')) {
            ex.query = Some(q.into());
        }
        let mut withheld = Vec::new();
        for (side, body, headers) in [
            ("request", &mut ex.request_body, &ex.request_headers),
            ("response", &mut ex.response_body, &ex.response_headers),
        ] {
            match self.body(body, headers) {
                Err(why) => withheld.push(format!("{side} body withheld: {why}")),
                Ok(()) if body.withheld => withheld.push(format!(
                    "{side} body: raw (content-coded) bytes withheld, fields redacted in the decoded body"
                )),
                Ok(()) => {}
            }
        }
        if !withheld.is_empty() {
            let joined = withheld.join("; ");
            ex.error_detail = Some(match ex.error_detail.take() {
                Some(d) => format!("{d}; {joined}"),
                None => joined,
            });
        }
    }

    /// Redacts a `replays` row the same way (headers, URL, query, both bodies), so rows of
    /// responses a proxy or replay recorded compare equal-for-equal with the redacted
    /// recording. A body that cannot be redacted whole is emptied (its length is kept in
    /// `response_body_len`); what was withheld is returned, for the caller to count.
    pub fn apply_replay(&self, row: &mut crate::replays::ReplayRecord) -> Vec<&'static str> {
        for h in row
            .request_headers
            .iter_mut()
            .chain(row.response_headers.iter_mut())
        {
            self.header(h);
        }
        if let Some(url) = self.url(&row.url) {
            row.url = url;
        }
        if let Some(q) = row.query.as_deref().and_then(|q| self.params_in(q, '&')) {
            row.query = Some(q.into());
        }
        let mut withheld = Vec::new();
        let mut request = crate::exchange::Body {
            len: row.request_body.len() as u64,
            raw: std::mem::take(&mut row.request_body),
            ..Default::default()
        };
        if self.body(&mut request, &row.request_headers).is_err() || request.withheld {
            withheld.push("request body");
        }
        row.request_body = if request.withheld {
            Vec::new()
        } else {
            request.raw
        };
        let mut response = crate::exchange::Body {
            raw: std::mem::take(&mut row.response_body),
            decoded: row.response_body_decoded.take(),
            len: row.response_body_len,
            truncated: row.response_body_truncated,
            ..Default::default()
        };
        if self.body(&mut response, &row.response_headers).is_err() || response.withheld {
            withheld.push("response body");
        }
        row.response_body = if response.withheld {
            Vec::new()
        } else {
            response.raw
        };
        row.response_body_decoded = response.decoded;
        withheld
    }

    fn header(&self, h: &mut Header) {
        if !self.headers.matches(&h.name) {
            if URL_HEADERS.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
                if let Some(v) = self.url(&h.value) {
                    h.value = v.into();
                }
            }
            return;
        }
        let value: String = match normalise(&h.name).as_str() {
            // Keep the scheme: `Bearer hmac:…` still says how the client authenticated.
            "authorization" | "proxyauthorization" => match h.value.split_once(' ') {
                Some((scheme, cred)) => format!("{scheme} {}", self.token(cred.trim().as_bytes())),
                None => self.token(h.value.as_bytes()),
            },
            // Keep cookie names: `sid=hmac:…; beta=hmac:…`.
            "cookie" | "cookie2" => h
                .value
                .split(';')
                .map(|kv| match kv.trim().split_once('=') {
                    Some((k, v)) => format!("{k}={}", self.token(v.as_bytes())),
                    None => self.token(kv.trim().as_bytes()),
                })
                .collect::<Vec<_>>()
                .join("; "),
            // Keep the attributes (Path, Expires, HttpOnly …); redact the value.
            "setcookie" | "setcookie2" => {
                let (first, attrs) = h
                    .value
                    .split_once(';')
                    .map_or((h.value.as_str(), None), |(a, b)| (a, Some(b)));
                let first = match first.split_once('=') {
                    Some((k, v)) => format!("{}={}", k.trim(), self.token(v.trim().as_bytes())),
                    None => self.token(first.trim().as_bytes()),
                };
                attrs.map_or(first.clone(), |a| format!("{first};{a}"))
            }
            _ => self.token(h.value.as_bytes()),
        };
        h.value = value.into();
    }

    /// `url` with the named query and fragment parameters redacted; `None` when unchanged.
    fn url(&self, url: &str) -> Option<String> {
        let (before_fragment, fragment) = match url.split_once('#') {
            Some((a, f)) => (a, Some(f)),
            None => (url, None),
        };
        let (path, query) = match before_fragment.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (before_fragment, None),
        };
        let q = query.and_then(|q| self.params_in(q, '&'));
        let f = fragment.and_then(|f| self.params_in(f, '&'));
        if q.is_none() && f.is_none() {
            return None;
        }
        let mut out = path.to_owned();
        if let Some(query) = query {
            out.push('?');
            out.push_str(q.as_deref().unwrap_or(query));
        }
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(f.as_deref().unwrap_or(fragment));
        }
        Some(out)
    }

    /// `name=value` pairs separated by `sep` with the values of named parameters redacted
    /// (names and values percent-decoded to compare and to hash, so the token of a secret is
    /// the same in a URL, a form and JSON); `None` when nothing changed.
    fn params_in(&self, text: &str, sep: char) -> Option<String> {
        let mut changed = false;
        let pairs: Vec<String> = text
            .split(sep)
            .map(|pair| match pair.split_once('=') {
                Some((k, v))
                    if self
                        .params
                        .matches(&String::from_utf8_lossy(&form_decode(k))) =>
                {
                    changed = true;
                    format!("{k}={}", self.token(&form_decode(v)))
                }
                _ => pair.to_owned(),
            })
            .collect();
        changed.then(|| pairs.join(&sep.to_string()))
    }
}

/// Percent-decoding as forms and query strings use it (`+` is a space); invalid escapes are
/// kept as they are.
fn form_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

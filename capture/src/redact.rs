//! Redaction: secrets in captured traffic are replaced by a keyed HMAC before anything is
//! written, so equal values stay equal (joins, grouping, `--match-*` on later stages) and the
//! secrets themselves never reach disk.
//!
//! On by default for `Authorization`, `Proxy-Authorization`, `Cookie` and `Set-Cookie`, plus
//! every header and JSON body field named with `--redact`. The key comes from a file or the
//! `SHADOWTAP_REDACT_KEY` variable (so several captures redact alike), or is random per run.
//! A plain function of one exchange.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use shadowtap_core::exchange::{Body, Exchange, Header};

/// Headers redacted whatever `--redact` says.
pub const DEFAULT_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// Replaces secrets by `hmac:<32 hex digits>` (the first 128 bits of HMAC-SHA256).
#[derive(Clone)]
pub struct Redactor {
    /// The keyed HMAC state, cloned for each token (the key schedule runs once).
    mac: Hmac<Sha256>,
    /// Lower-case header names.
    headers: Vec<String>,
    /// JSON object keys (exact).
    fields: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Redactor")
            .field("headers", &self.headers)
            .field("fields", &self.fields)
            .finish()
    }
}

impl Redactor {
    /// A redactor with `key`, redacting the default headers plus `names` (headers and JSON
    /// fields).
    pub fn new(key: Vec<u8>, names: &[String]) -> Self {
        let mut headers: Vec<String> = DEFAULT_HEADERS.iter().map(|s| (*s).to_owned()).collect();
        headers.extend(names.iter().map(|n| n.to_ascii_lowercase()));
        let mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&key).expect("HMAC takes keys of any length");
        Redactor {
            mac,
            headers,
            fields: names.to_vec(),
        }
    }

    /// A 32-byte key from the system's random source.
    pub fn random_key() -> std::io::Result<Vec<u8>> {
        use std::io::Read;
        let mut key = vec![0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut key)?;
        Ok(key)
    }

    fn token(&self, secret: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(secret.as_bytes());
        let digest = mac.finalize().into_bytes();
        let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        format!("hmac:{hex}")
    }

    /// Redacts headers and JSON fields of both sides of `ex`.
    pub fn apply(&self, ex: &mut Exchange) {
        for h in ex
            .request_headers
            .iter_mut()
            .chain(ex.response_headers.iter_mut())
        {
            self.header(h);
        }
        if !self.fields.is_empty() {
            for (body, headers) in [
                (&mut ex.request_body, &ex.request_headers),
                (&mut ex.response_body, &ex.response_headers),
            ] {
                self.body(body, headers);
            }
        }
    }

    fn header(&self, h: &mut Header) {
        if !self.headers.iter().any(|n| h.name.eq_ignore_ascii_case(n)) {
            return;
        }
        let name = h.name.to_ascii_lowercase();
        let value: String = match name.as_str() {
            // Keep the scheme: `Bearer hmac:…` still says how the client authenticated.
            "authorization" | "proxy-authorization" => match h.value.split_once(' ') {
                Some((scheme, cred)) => format!("{scheme} {}", self.token(cred.trim())),
                None => self.token(&h.value),
            },
            // Keep cookie names: `sid=hmac:…; beta=hmac:…`.
            "cookie" => h
                .value
                .split(';')
                .map(|kv| match kv.trim().split_once('=') {
                    Some((k, v)) => format!("{k}={}", self.token(v)),
                    None => self.token(kv.trim()),
                })
                .collect::<Vec<_>>()
                .join("; "),
            // Keep the attributes (Path, Expires, HttpOnly …); redact the value.
            "set-cookie" => {
                let (first, attrs) = h
                    .value
                    .split_once(';')
                    .map_or((h.value.as_str(), None), |(a, b)| (a, Some(b)));
                let first = match first.split_once('=') {
                    Some((k, v)) => format!("{}={}", k.trim(), self.token(v.trim())),
                    None => self.token(first.trim()),
                };
                attrs.map_or(first.clone(), |a| format!("{first};{a}"))
            }
            _ => self.token(&h.value),
        };
        h.value = value.into();
    }

    /// Redacts named fields in a JSON body. A content-coded body is redacted in its decoded
    /// form, and its raw (still encoded) bytes are withheld, since they hold the secrets.
    fn body(&self, body: &mut Body, headers: &[Header]) {
        let is_json = headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("content-type")
                && h.value.to_ascii_lowercase().contains("json")
        });
        if !is_json {
            return;
        }
        let coded = body.decoded.is_some();
        let text = body.decoded.as_deref().unwrap_or(&body.raw);
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(text) else {
            return;
        };
        if !self.json(&mut value) {
            return;
        }
        let redacted = serde_json::to_vec(&value).expect("a JSON value serialises");
        if coded {
            body.decoded = Some(redacted);
            body.raw.clear();
            body.decode_error =
                Some("raw (content-coded) body withheld: it holds redacted fields".into());
        } else {
            body.raw = redacted;
        }
    }

    /// Redacts in place; true when anything changed.
    fn json(&self, v: &mut serde_json::Value) -> bool {
        let mut changed = false;
        match v {
            serde_json::Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    if self.fields.iter().any(|f| f == k) && !val.is_null() {
                        let plain = match &*val {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        *val = serde_json::Value::String(self.token(&plain));
                        changed = true;
                    } else {
                        changed |= self.json(val);
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for item in items {
                    changed |= self.json(item);
                }
            }
            _ => {}
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(n: &str, v: &str) -> Header {
        Header {
            name: n.into(),
            value: v.into(),
        }
    }

    #[test]
    fn headers_keep_structure_and_equality() {
        let r = Redactor::new(b"k".to_vec(), &["X-Api-Key".into()]);
        let mut a = h("Authorization", "Bearer secret-token");
        r.header(&mut a);
        assert!(
            a.value.starts_with("Bearer hmac:") && !a.value.contains("secret"),
            "{}",
            a.value
        );
        let mut a2 = h("authorization", "Bearer secret-token");
        r.header(&mut a2);
        assert_eq!(a.value, a2.value, "equal secrets give equal tokens");
        let mut c = h("Cookie", "sid=abc123; beta=1");
        r.header(&mut c);
        assert!(
            c.value.starts_with("sid=hmac:")
                && c.value.contains("; beta=hmac:")
                && !c.value.contains("abc123"),
            "{}",
            c.value
        );
        let mut s = h("Set-Cookie", "sid=abc123; Path=/; HttpOnly");
        r.header(&mut s);
        assert!(
            s.value.starts_with("sid=hmac:") && s.value.ends_with("; Path=/; HttpOnly"),
            "{}",
            s.value
        );
        let mut k = h("x-api-key", "k-123");
        r.header(&mut k);
        assert!(k.value.starts_with("hmac:"));
        let mut plain = h("Accept", "text/html");
        r.header(&mut plain);
        assert_eq!(plain.value, "text/html");
        let other_key = Redactor::new(b"other".to_vec(), &[]);
        let mut a3 = h("Authorization", "Bearer secret-token");
        other_key.header(&mut a3);
        assert_ne!(a.value, a3.value, "the key matters");
        let shown = format!("{:?}", Redactor::new(b"zzsecret".to_vec(), &[]));
        assert!(
            !shown.contains("zzsecret") && !shown.contains("122, 122"),
            "Debug never shows the key: {shown}"
        );
    }

    #[test]
    fn json_fields_redacted_and_coded_raw_withheld() {
        let r = Redactor::new(b"k".to_vec(), &["password".into()]);
        let headers = vec![h("Content-Type", "application/json")];
        let mut b = Body {
            raw: br#"{"user":"u","password":"hunter2","nested":[{"password":5}]}"#.to_vec(),
            ..Body::default()
        };
        r.body(&mut b, &headers);
        let text = String::from_utf8(b.raw.clone()).unwrap();
        assert!(
            !text.contains("hunter2")
                && text.contains(r#""user":"u""#)
                && text.starts_with(r#"{"user""#),
            "{text}"
        );
        assert_eq!(text.matches("hmac:").count(), 2);
        let mut coded = Body {
            raw: vec![0x1f, 0x8b, 1, 2],
            decoded: Some(br#"{"password":"x"}"#.to_vec()),
            ..Body::default()
        };
        r.body(&mut coded, &headers);
        assert!(coded.raw.is_empty() && coded.decode_error.is_some());
        assert!(String::from_utf8(coded.decoded.unwrap())
            .unwrap()
            .contains("hmac:"));
        let mut not_json = Body {
            raw: b"password=hunter2".to_vec(),
            ..Body::default()
        };
        r.body(&mut not_json, &[h("Content-Type", "text/plain")]);
        assert_eq!(not_json.raw, b"password=hunter2");
    }
}

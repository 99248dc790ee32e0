//! Bodies: named fields redacted in JSON, form and multipart bodies, and bodies that may hold
//! named fields but cannot be read whole withheld (fail closed; see the module docs of
//! [`super`]).

use crate::exchange::{Body, Header};

use super::Redactor;

/// What a body's content type says it may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Json,
    Form,
    Multipart(String),
    /// `text/plain` and other text: a form written as text is still a form.
    Text,
    /// No content type: anything.
    Unknown,
    /// Images, HTML, binary: no named fields.
    Other,
}

fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

fn kind(headers: &[Header]) -> Kind {
    let Some(ct) = header(headers, "content-type") else {
        return Kind::Unknown;
    };
    let ct = ct.to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.contains("json") {
        Kind::Json
    } else if essence == "application/x-www-form-urlencoded" {
        Kind::Form
    } else if essence.starts_with("multipart/") {
        match boundary(&ct) {
            Some(b) => Kind::Multipart(b),
            // A multipart body without a boundary cannot be split into its fields.
            None => Kind::Multipart(String::new()),
        }
    } else if essence.starts_with("text/plain") || essence.is_empty() {
        Kind::Text
    } else {
        Kind::Other
    }
}

/// The `boundary` parameter of a multipart content type (already lower-cased for the name;
/// the value's case is taken from the original by position, see the caller).
fn boundary(ct: &str) -> Option<String> {
    ct.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim() == "boundary").then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// True when `text` reads as `name=value&name=value` (a form sent as text or without a type).
fn looks_like_form(text: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(text) else {
        return false;
    };
    let s = s.trim_end_matches(['\r', '\n']);
    !s.is_empty()
        && s.split('&').all(|pair| {
            pair.split_once('=').is_some_and(|(k, _)| {
                !k.is_empty()
                    && k.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"_-.%+[]".contains(&b))
            })
        })
        && !s.bytes().any(|b| b == b' ' || b == b'\n')
}

impl Redactor {
    /// Redacts named fields of `body`, or withholds it (the reason in `Err`) when it may hold
    /// some but cannot be read whole.
    pub(super) fn body(&self, body: &mut Body, headers: &[Header]) -> Result<(), String> {
        if body.raw.is_empty() && body.decoded.is_none() {
            return Ok(());
        }
        let mut kind = kind(headers);
        if kind == Kind::Other {
            return Ok(());
        }
        if let Kind::Multipart(b) = &mut kind {
            // The boundary's case matters: take it from the header as sent.
            if let Some(ct) = header(headers, "content-type") {
                if let Some(at) = ct.to_ascii_lowercase().find(b.as_str()) {
                    *b = ct[at..at + b.len()].to_owned();
                }
            }
        }
        let coded = header(headers, "content-encoding")
            .is_some_and(|c| !c.trim().is_empty() && !c.trim().eq_ignore_ascii_case("identity"));
        if coded && body.decoded.is_none() {
            let why = body
                .decode_error
                .clone()
                .unwrap_or_else(|| "the content coding was not undone".into());
            return Err(withhold(
                body,
                &format!("content-coded and not decodable ({why})"),
            ));
        }
        let lost = !body.truncated && (body.raw.len() as u64) < body.len;
        if lost {
            return Err(withhold(body, "bytes of it were lost in capture"));
        }
        let text = body.decoded.as_deref().unwrap_or(&body.raw);
        let redacted = match &kind {
            Kind::Json => self.json_body(text),
            Kind::Form => self.form_body(text),
            Kind::Multipart(b) => self.multipart_body(text, b),
            Kind::Text | Kind::Unknown => {
                let first = text.iter().find(|b| !b.is_ascii_whitespace());
                let json_like = matches!(first, Some(b'{' | b'['));
                if kind == Kind::Unknown && json_like {
                    self.json_body(text)
                } else if json_like && serde_json::from_slice::<serde_json::Value>(text).is_ok() {
                    // JSON served as text/plain (a bare `return` in nginx, many test servers):
                    // its keys hold secrets all the same.
                    self.json_body(text)
                } else if looks_like_form(text) {
                    self.form_body(text)
                } else {
                    Ok(None)
                }
            }
            Kind::Other => Ok(None),
        };
        let redacted = match redacted {
            Err(why) => return Err(withhold(body, &why)),
            Ok(Some(new)) => new,
            Ok(None) => return Ok(()),
        };
        if body.decoded.is_some() {
            // The raw bytes are the coded form of the secrets: only the redacted decoded
            // form is kept.
            body.decoded = Some(redacted);
            body.raw.clear();
            body.withheld = true;
        } else {
            body.raw = redacted;
        }
        Ok(())
    }

    /// A JSON body with named keys redacted (`None`: nothing to redact); `Err` (withhold)
    /// when it does not parse.
    fn json_body(&self, text: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(text) else {
            return Err("it does not parse as JSON (cut at --max-body, or not JSON)".into());
        };
        if !self.json(&mut value) {
            return Ok(None);
        }
        serde_json::to_vec(&value)
            .map(Some)
            .map_err(|e| format!("re-encoding the redacted JSON failed: {e}"))
    }

    /// Redacts in place; true when anything changed.
    fn json(&self, v: &mut serde_json::Value) -> bool {
        let mut changed = false;
        match v {
            serde_json::Value::Object(map) => {
                for (k, val) in map.iter_mut() {
                    if self.json_keys.matches(k) && !val.is_null() {
                        let plain = match &*val {
                            serde_json::Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        *val = serde_json::Value::String(self.token(plain.as_bytes()));
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

    /// A form body with named fields redacted. Every prefix of a form is a form, so a body cut
    /// at `--max-body` is redacted as far as it goes (a name cut short has no value left).
    fn form_body(&self, text: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let s = String::from_utf8_lossy(text);
        Ok(self.params_in(&s, '&').map(String::into_bytes))
    }

    /// A `multipart/form-data` body with the contents of named fields redacted; `Err` when it
    /// cannot be split into its parts whole (no boundary, no closing delimiter).
    fn multipart_body(&self, text: &[u8], boundary: &str) -> Result<Option<Vec<u8>>, String> {
        if boundary.is_empty() {
            return Err("a multipart body without a boundary parameter".into());
        }
        let delimiter = format!("--{boundary}");
        let finder = memchr::memmem::Finder::new(delimiter.as_bytes());
        let Some(first) = finder.find(text) else {
            return Err("a multipart body without its boundary".into());
        };
        let mut out = text[..first + delimiter.len()].to_vec();
        let mut at = first + delimiter.len();
        let mut changed = false;
        loop {
            let rest = &text[at..];
            if rest.starts_with(b"--") {
                // The closing delimiter: whatever follows is the epilogue.
                out.extend_from_slice(rest);
                return Ok(changed.then_some(out));
            }
            let Some(next) = finder.find(rest) else {
                return Err(
                    "a multipart body without its closing boundary (cut at --max-body?)".into(),
                );
            };
            // The part is `\r\n headers \r\n\r\n content \r\n` before the next delimiter.
            let part = &rest[..next];
            let Some(head_end) = memchr::memmem::find(part, b"\r\n\r\n") else {
                return Err("a multipart part without a header section".into());
            };
            let (head, content) = (&part[..head_end + 4], &part[head_end + 4..]);
            let content_end = content.strip_suffix(b"\r\n").unwrap_or(content);
            let named = field_name(head).is_some_and(|n| self.params.matches(&n));
            out.extend_from_slice(head);
            if named {
                out.extend_from_slice(self.token(content_end).as_bytes());
                out.extend_from_slice(&content[content_end.len()..]);
                changed = true;
            } else {
                out.extend_from_slice(content);
            }
            out.extend_from_slice(delimiter.as_bytes());
            at += next + delimiter.len();
        }
    }
}

/// The `name` of a part's `Content-Disposition: form-data; name="…"`.
fn field_name(head: &[u8]) -> Option<String> {
    let head = String::from_utf8_lossy(head);
    let line = head
        .split("\r\n")
        .find(|l| l.to_ascii_lowercase().starts_with("content-disposition:"))?;
    line.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("name")
            .then(|| v.trim().trim_matches('"').to_owned())
    })
}

/// Withholds `body` (bytes dropped, length kept) and returns `why`.
fn withhold(body: &mut Body, why: &str) -> String {
    body.raw = Vec::new();
    body.decoded = None;
    body.withheld = true;
    why.to_owned()
}

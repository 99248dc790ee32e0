//! The request as it will leave for a target, and the response as it came back: the two
//! things mutation hooks see and change.

use std::mem::take;
use std::time::Duration;

use shadowtap_core::{CompactString, Exchange, Header};

/// Headers that belong to one connection (RFC 9110 §7.6.1) or that the client recomputes;
/// they are never replayed as recorded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "expect",
    "http2-settings",
];

/// Whether `name` is one of [`HOP_BY_HOP`] (by length first: most names are not).
fn is_hop_by_hop(name: &str) -> bool {
    matches!(name.len(), 2 | 6 | 7 | 10 | 14 | 16 | 17)
        && HOP_BY_HOP.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// A request on its way to the targets, after the hooks applied so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingRequest {
    /// The recorded exchange.
    pub exchange_id: String,
    /// Method.
    pub method: CompactString,
    /// Path (starts with `/`).
    pub path: CompactString,
    /// Query without `?`.
    pub query: Option<CompactString>,
    /// Header lines in order (hop-by-hop headers removed).
    pub headers: Vec<Header>,
    /// Body.
    pub body: Vec<u8>,
    /// Wait this long before sending (rules `delay`).
    pub delay: Duration,
}

/// Why a recorded request cannot be sent as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreplayable(pub String);

impl OutgoingRequest {
    /// The recorded request, ready for hooks. Fails when the recording does not hold all of it.
    pub fn from_exchange(ex: &Exchange) -> Result<Self, Unreplayable> {
        Self::take_from_exchange(&mut ex.clone(), false)
    }

    /// As [`OutgoingRequest::from_exchange`], moving the headers and body out of `ex` instead
    /// of copying them, and the id, method, path and query too unless `copy_identity`. On an
    /// error those four are left in `ex`.
    pub fn take_from_exchange(
        ex: &mut Exchange,
        copy_identity: bool,
    ) -> Result<Self, Unreplayable> {
        if ex.request_end_us.is_none() {
            return Err(Unreplayable(
                "the request was cut off in the capture".into(),
            ));
        }
        let b = &mut ex.request_body;
        let mut headers: Vec<Header> = std::mem::take(&mut ex.request_headers);
        // The names a `Connection` field lists are hop-by-hop too (RFC 9110 §7.6.1); the
        // list is empty, and allocates nothing, for the usual `keep-alive` or `close`.
        let listed: Vec<CompactString> = headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("connection"))
            .flat_map(|h| h.value.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("close") && !is_hop_by_hop(t))
            .map(CompactString::from)
            .collect();
        headers.retain(|h| {
            !is_hop_by_hop(&h.name) && !listed.iter().any(|n| n.eq_ignore_ascii_case(&h.name))
        });
        let body = if b.truncated {
            return Err(Unreplayable(format!(
                "the request body was longer than the capture's --max-body ({} bytes)",
                b.len
            )));
        } else if b.withheld && b.decoded.is_none() {
            return Err(Unreplayable(format!(
                "redaction withheld the request body at capture ({} bytes that may hold secrets and could not be redacted whole)",
                b.len
            )));
        } else if b.raw.len() as u64 == b.len && !b.withheld {
            std::mem::take(&mut b.raw)
        } else if b.raw.is_empty() && b.decoded.is_some() {
            // A content-coded body whose JSON fields were redacted: only the decoded form exists.
            headers.retain(|h| !h.name.eq_ignore_ascii_case("content-encoding"));
            b.decoded.take().unwrap_or_default()
        } else {
            return Err(Unreplayable(format!(
                "{} of the request body's {} bytes were lost in capture",
                b.len - b.raw.len() as u64,
                b.len
            )));
        };
        let (exchange_id, method, path, query) = if copy_identity {
            let e = &*ex;
            (
                e.exchange_id.clone(),
                e.method.clone(),
                e.path.clone(),
                e.query.clone(),
            )
        } else {
            let e = &mut *ex;
            (
                take(&mut e.exchange_id),
                take(&mut e.method),
                take(&mut e.path),
                e.query.take(),
            )
        };
        Ok(OutgoingRequest {
            exchange_id,
            method,
            path: if path.starts_with('/') {
                path
            } else {
                format!("/{path}").into()
            },
            query,
            headers,
            body,
            delay: Duration::ZERO,
        })
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    /// Path and query as sent on the request line.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.to_string(),
        }
    }
}

/// A target's response, as the response hooks see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedResponse {
    /// Status code.
    pub status: u16,
    /// Header lines.
    pub headers: Vec<Header>,
    /// Body with any content coding undone (the raw bytes are kept separately).
    pub body: Vec<u8>,
}

/// The first value of header `name` (case-insensitive).
pub fn header<'a>(headers: &'a [Header], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// Replaces every `name` header by one with `value` (kept in the first one's place).
pub fn set_header(headers: &mut Vec<Header>, name: &str, value: &str) {
    match headers
        .iter()
        .position(|h| h.name.eq_ignore_ascii_case(name))
    {
        Some(i) => {
            headers[i].value = value.into();
            // Most requests hold the header once: look for another before rewriting the list.
            if !headers[i + 1..]
                .iter()
                .any(|h| h.name.eq_ignore_ascii_case(name))
            {
                return;
            }
            let mut n = 0;
            headers.retain(|h| {
                let same = h.name.eq_ignore_ascii_case(name);
                n += usize::from(same);
                !same || n == 1
            });
        }
        None => headers.push(Header::new(name, value)),
    }
}

/// Removes every `name` header.
pub fn remove_header(headers: &mut Vec<Header>, name: &str) {
    headers.retain(|h| !h.name.eq_ignore_ascii_case(name));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hop_by_hop_name_is_recognised_in_any_case() {
        for n in HOP_BY_HOP {
            assert!(is_hop_by_hop(n), "{n}");
            assert!(is_hop_by_hop(&n.to_ascii_uppercase()), "{n}");
        }
        for n in [
            "Host",
            "Accept",
            "Content-Type",
            "Cookie",
            "Authorization",
            "t",
        ] {
            assert!(!is_hop_by_hop(n), "{n}");
        }
    }

    #[test]
    fn set_header_replaces_all_copies_in_place() {
        let mut h = vec![
            Header {
                name: "A".into(),
                value: "1".into(),
            },
            Header {
                name: "b".into(),
                value: "2".into(),
            },
            Header {
                name: "B".into(),
                value: "3".into(),
            },
        ];
        set_header(&mut h, "B", "x");
        assert_eq!(
            h.iter()
                .map(|h| (h.name.as_str(), h.value.as_str()))
                .collect::<Vec<_>>(),
            [("A", "1"), ("b", "x")]
        );
        set_header(&mut h, "C", "y");
        assert_eq!(header(&h, "c"), Some("y"));
        remove_header(&mut h, "a");
        assert_eq!(h.len(), 2);
    }
}

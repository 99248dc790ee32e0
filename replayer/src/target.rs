//! Targets: a name and a base URL, and the URL each request is sent to.

use std::str::FromStr;

use crate::request::OutgoingRequest;

/// A named target: `candidate=http://10.0.0.6:8080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Name used in the `target` column (`baseline`, `candidate`, …).
    pub name: String,
    /// Base URL; its path, if any, is prefixed to every request path.
    pub url: reqwest::Url,
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, url) = s.split_once('=').ok_or_else(|| {
            format!("{s:?}: expected NAME=URL, e.g. candidate=http://10.0.0.6:8080")
        })?;
        let name = name.trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        {
            return Err(format!(
                "{name:?}: a target name is letters, digits, '-', '_' or '.'"
            ));
        }
        let url = reqwest::Url::parse(url.trim()).map_err(|e| format!("{url:?}: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "{url}: a target URL is http:// or https:// with a host"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("{url}: a target URL has no query or fragment"));
        }
        Ok(Target {
            name: name.to_owned(),
            url,
        })
    }
}

impl Target {
    /// `host[:port]` as a Host header names the target.
    pub fn authority(&self) -> String {
        let host = self.url.host_str().unwrap_or_default();
        match self.url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        }
    }

    /// `scheme://host[:port]`.
    pub(crate) fn origin(&self) -> String {
        format!("{}://{}", self.url.scheme(), self.authority())
    }
}

/// The URL a request is sent to, and where its path begins: the target's base path, then the
/// request's path and query, percent-encoded where a URL cannot carry them as they are (as a
/// browser would); bytes that are valid stay as recorded.
pub(crate) fn route_url(origin: &str, base_path: &str, req: &OutgoingRequest) -> (String, usize) {
    let base = base_path.trim_end_matches('/');
    let mut url = String::with_capacity(
        origin.len() + base.len() + req.path.len() + req.query.as_ref().map_or(0, |q| q.len() + 1),
    );
    url.push_str(origin);
    let at = url.len();
    url.push_str(base);
    push_encoded(&mut url, &req.path, false);
    if let Some(q) = &req.query {
        url.push('?');
        push_encoded(&mut url, q, true);
    }
    (url, at)
}

/// Appends `s`, percent-encoding the bytes a request target cannot hold as they are: controls,
/// space, `"`, `#`, `<`, `>`, `` ` ``, `{`, `}`, `|`, `\`, `^`, non-ASCII, and `?` in a path.
/// `%` stays: a recorded path is already encoded.
fn push_encoded(out: &mut String, s: &str, query: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let keep = |b: u8| match b {
        b'?' => query,
        0x21..=0x7e => !matches!(
            b,
            b'"' | b'#' | b'<' | b'>' | b'`' | b'{' | b'}' | b'|' | b'\\' | b'^'
        ),
        _ => false,
    };
    if s.bytes().all(keep) {
        out.push_str(s);
        return;
    }
    for b in s.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn targets_parse_and_refuse_nonsense() {
        let t: Target = "candidate=http://127.0.0.1:8080/base".parse().unwrap();
        assert_eq!(
            (t.name.as_str(), t.authority().as_str()),
            ("candidate", "127.0.0.1:8080")
        );
        let req = OutgoingRequest {
            exchange_id: "e".into(),
            method: "GET".into(),
            path: "/a b".into(),
            query: Some("x=1".into()),
            headers: vec![],
            body: vec![],
            delay: Duration::ZERO,
        };
        assert_eq!(
            route_url(&t.origin(), t.url.path(), &req),
            ("http://127.0.0.1:8080/base/a%20b?x=1".to_owned(), 21)
        );
        assert!("nourl".parse::<Target>().is_err());
        assert!("x=ftp://h/".parse::<Target>().is_err());
        assert!("bad name=http://h/".parse::<Target>().is_err());
        assert!("x=http://h/?q=1".parse::<Target>().is_err());
    }

    #[test]
    fn every_recorded_path_and_query_becomes_a_valid_request_target() {
        let mut all = String::new();
        for c in (0u8..=127).map(char::from).chain(['é', '€', '😀']) {
            all.push(c);
        }
        let req = OutgoingRequest {
            exchange_id: "e".into(),
            method: "GET".into(),
            path: format!("/{all}").into(),
            query: Some(all.as_str().into()),
            headers: vec![],
            body: vec![],
            delay: Duration::ZERO,
        };
        let (url, at) = route_url("http://h:1", "/", &req);
        let target: http::Uri = url[at..].parse().unwrap_or_else(|e| panic!("{e}: {url}"));
        assert_eq!(
            target.path().matches('?').count(),
            0,
            "a ? in the path is encoded"
        );
        // Valid bytes stay as recorded; an encoded path stays encoded.
        let plain = OutgoingRequest {
            path: "/a/b%2Fc;x=1".into(),
            query: Some("q=[1]&r=a?b".into()),
            ..req
        };
        assert_eq!(
            route_url("http://h:1", "", &plain).0,
            "http://h:1/a/b%2Fc;x=1?q=[1]&r=a?b"
        );
    }
}

//! Match criteria: which exchanges to keep by their content, before sampling.
//!
//! Every criterion given must match (AND); several values of one criterion are alternatives
//! (OR): `--match-host a --match-host b --match-path '^/api/'` keeps API calls to a or b.
//! A plain function of one exchange, with no state.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use crate::exchange::{Exchange, Header};
use regex::Regex;

/// Why criteria could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CriteriaError {
    /// A regular expression did not compile.
    #[error("invalid {flag} regex {pattern:?}: {source}")]
    Regex {
        /// The flag.
        flag: &'static str,
        /// The pattern.
        pattern: String,
        /// The cause.
        #[source]
        source: regex::Error,
    },
    /// A line of the geo file is not `CIDR COUNTRY`.
    #[error("{path}:{line}: expected `CIDR COUNTRY` (e.g. `192.0.2.0/24 US`), got {text:?}")]
    GeoLine {
        /// The file.
        path: String,
        /// 1-based line number.
        line: usize,
        /// The line.
        text: String,
    },
    /// The geo file could not be read.
    #[error("{path}: {source}")]
    GeoFile {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `--match-geo` without a file to look countries up in.
    #[error("--match-geo needs --geo-file (a list of `CIDR COUNTRY` lines)")]
    GeoWithoutFile,
}

/// A CIDR → country table, looked up by longest prefix.
#[derive(Debug, Default, Clone)]
pub struct GeoTable {
    /// Per prefix length (IPv4 as IPv4-mapped IPv6, so one table serves both): network → country.
    by_prefix: Vec<(u8, HashMap<u128, String>)>,
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

fn mask(bits: u128, prefix: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits & (u128::MAX << (128 - u32::from(prefix)))
    }
}

impl GeoTable {
    /// Reads `CIDR COUNTRY` lines (`#` starts a comment).
    pub fn load(path: &Path) -> Result<Self, CriteriaError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CriteriaError::GeoFile {
            path: name.clone(),
            source,
        })?;
        Self::parse(&text, &name)
    }

    /// Parses the text of a geo file.
    pub fn parse(text: &str, name: &str) -> Result<Self, CriteriaError> {
        let mut map: HashMap<u8, HashMap<u128, String>> = HashMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            let bad = || CriteriaError::GeoLine {
                path: name.to_owned(),
                line: i + 1,
                text: raw.to_owned(),
            };
            let mut parts = line.split_whitespace();
            let (Some(cidr), Some(country), None) = (parts.next(), parts.next(), parts.next())
            else {
                return Err(bad());
            };
            let (addr, len) = cidr.split_once('/').ok_or_else(bad)?;
            let ip: IpAddr = addr.parse().map_err(|_| bad())?;
            let len: u8 = len.parse().map_err(|_| bad())?;
            let (max, offset) = if ip.is_ipv4() { (32, 96) } else { (128, 0) };
            if len > max {
                return Err(bad());
            }
            let prefix = len + offset;
            map.entry(prefix)
                .or_default()
                .insert(mask(to_u128(ip), prefix), country.to_ascii_uppercase());
        }
        let mut by_prefix: Vec<(u8, HashMap<u128, String>)> = map.into_iter().collect();
        by_prefix.sort_by_key(|e| std::cmp::Reverse(e.0));
        Ok(GeoTable { by_prefix })
    }

    /// The country of `ip`, by longest matching prefix.
    pub fn country(&self, ip: IpAddr) -> Option<&str> {
        let bits = to_u128(ip);
        self.by_prefix
            .iter()
            .find_map(|(p, m)| m.get(&mask(bits, *p)).map(String::as_str))
    }
}

/// What the flags ask for, before compiling.
#[derive(Debug, Clone, Default)]
pub struct CriteriaSpec {
    /// `Name: value` (exact value) or `Name` (present).
    pub headers: Vec<String>,
    /// `NAME` (present) or `NAME=VALUE`.
    pub cookies: Vec<String>,
    /// Regex on the User-Agent header.
    pub user_agent: Option<String>,
    /// Regex on the path.
    pub path: Option<String>,
    /// Hosts (case-insensitive; a port in the Host header is ignored).
    pub hosts: Vec<String>,
    /// Request methods (case-insensitive).
    pub methods: Vec<String>,
    /// Country codes of the client address.
    pub geo: Vec<String>,
    /// CIDR → country file for `geo`.
    pub geo_file: Option<std::path::PathBuf>,
}

/// Compiled criteria.
#[derive(Debug, Clone, Default)]
pub struct MatchCriteria {
    headers: Vec<(String, Option<String>)>,
    cookies: Vec<(String, Option<String>)>,
    user_agent: Option<Regex>,
    path: Option<Regex>,
    hosts: Vec<String>,
    methods: Vec<String>,
    geo: Vec<String>,
    geo_table: Option<GeoTable>,
}

fn header<'a>(headers: &'a [Header], name: &str) -> impl Iterator<Item = &'a str> + 'a {
    let name = name.to_owned();
    headers
        .iter()
        .filter(move |h| h.name.eq_ignore_ascii_case(&name))
        .map(|h| h.value.as_str())
}

impl MatchCriteria {
    /// Compiles the flags' values.
    pub fn new(spec: &CriteriaSpec) -> Result<Self, CriteriaError> {
        let regex = |flag, p: &Option<String>| {
            p.as_ref()
                .map(|p| {
                    Regex::new(p).map_err(|source| CriteriaError::Regex {
                        flag,
                        pattern: p.clone(),
                        source,
                    })
                })
                .transpose()
        };
        let pair = |s: &String, sep: char| match s.split_once(sep) {
            Some((n, v)) => (n.trim().to_owned(), Some(v.trim().to_owned())),
            None => (s.trim().to_owned(), None),
        };
        let geo_table = match (&spec.geo_file, spec.geo.is_empty()) {
            (Some(f), _) => Some(GeoTable::load(f)?),
            (None, false) => return Err(CriteriaError::GeoWithoutFile),
            (None, true) => None,
        };
        Ok(MatchCriteria {
            headers: spec.headers.iter().map(|h| pair(h, ':')).collect(),
            cookies: spec.cookies.iter().map(|c| pair(c, '=')).collect(),
            user_agent: regex("--match-user-agent", &spec.user_agent)?,
            path: regex("--match-path", &spec.path)?,
            hosts: spec.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
            methods: spec
                .methods
                .iter()
                .map(|m| m.trim().to_ascii_uppercase())
                .collect(),
            geo: spec.geo.iter().map(|g| g.to_ascii_uppercase()).collect(),
            geo_table,
        })
    }

    /// True when no criterion was given (everything matches).
    pub fn is_empty(&self) -> bool {
        self.headers.is_empty()
            && self.cookies.is_empty()
            && self.user_agent.is_none()
            && self.path.is_none()
            && self.hosts.is_empty()
            && self.methods.is_empty()
            && self.geo.is_empty()
    }

    /// True when `ex` meets every criterion given.
    pub fn matches(&self, ex: &Exchange) -> bool {
        let h = &ex.request_headers;
        if !self.methods.is_empty()
            && !self
                .methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(&ex.method))
        {
            return false;
        }
        if !self.headers.is_empty()
            && !self
                .headers
                .iter()
                .any(|(n, v)| header(h, n).any(|got| v.as_deref().is_none_or(|v| got.trim() == v)))
        {
            return false;
        }
        if !self.cookies.is_empty() {
            let jar: Vec<(&str, &str)> = header(h, "cookie")
                .flat_map(|c| c.split(';'))
                .map(|kv| kv.trim())
                .map(|kv| kv.split_once('=').unwrap_or((kv, "")))
                .collect();
            if !self.cookies.iter().any(|(n, v)| {
                jar.iter()
                    .any(|(jn, jv)| jn == n && v.as_deref().is_none_or(|v| v == *jv))
            }) {
                return false;
            }
        }
        if let Some(re) = &self.user_agent {
            if !header(h, "user-agent").any(|ua| re.is_match(ua)) {
                return false;
            }
        }
        if let Some(re) = &self.path {
            if !re.is_match(&ex.path) {
                return false;
            }
        }
        if !self.hosts.is_empty() {
            let host = ex.host.as_deref().unwrap_or("").to_ascii_lowercase();
            let bare = strip_port(&host);
            if !self.hosts.iter().any(|want| *want == host || want == bare) {
                return false;
            }
        }
        if !self.geo.is_empty() {
            let country = self
                .geo_table
                .as_ref()
                .and_then(|t| t.country(ex.client_ip));
            if !country.is_some_and(|c| self.geo.iter().any(|g| g == c)) {
                return false;
            }
        }
        true
    }
}

/// `host:port` → `host`; `[v6]:port` → `[v6]`.
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |i| &host[..=i]);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) && !h.contains(':') => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::{Body, ExchangeFlags};

    fn ex(path: &str, host: &str, client: &str, headers: &[(&str, &str)]) -> Exchange {
        Exchange {
            grpc: None,
            tls: None,
            protocol: None,
            stream_id: None,
            exchange_id: "e".into(),
            connection_id: "c".into(),
            connection_seq: 0,
            source: "t".into(),
            request_start_us: 0,
            request_end_us: None,
            response_start_us: None,
            response_end_us: None,
            client_ip: client.parse().unwrap(),
            client_port: 1,
            server_ip: "10.0.0.9".parse().unwrap(),
            server_port: 80,
            method: "GET".into(),
            uri: path.into(),
            host: Some(host.into()),
            path: path.into(),
            query: None,
            http_version: "HTTP/1.1".into(),
            request_headers: headers
                .iter()
                .map(|(n, v)| Header {
                    name: (*n).into(),
                    value: (*v).into(),
                })
                .collect(),
            request_trailers: vec![],
            request_body: Body::default(),
            status: None,
            reason: None,
            response_version: None,
            interim_statuses: vec![],
            response_headers: vec![],
            response_trailers: vec![],
            response_body: Body::default(),
            flags: ExchangeFlags::default(),
            error_detail: None,
        }
    }

    fn criteria(f: impl FnOnce(&mut CriteriaSpec)) -> MatchCriteria {
        let mut spec = CriteriaSpec::default();
        f(&mut spec);
        MatchCriteria::new(&spec).unwrap()
    }

    #[test]
    fn methods_match_case_insensitively() {
        let mut post = ex("/x", "h", "10.0.0.1", &[]);
        post.method = "POST".into();
        let get = ex("/x", "h", "10.0.0.1", &[]);
        let c = criteria(|s| s.methods = vec!["post".into(), "PUT".into()]);
        assert!(c.matches(&post) && !c.matches(&get));
    }

    #[test]
    fn header_cookie_and_user_agent() {
        let a = ex(
            "/x",
            "h",
            "10.0.0.1",
            &[
                ("X-Shadow-Test", " true"),
                ("Cookie", "sid=abc; beta=1"),
                ("User-Agent", "curl/8.1"),
            ],
        );
        let b = ex("/x", "h", "10.0.0.1", &[("User-Agent", "Mozilla/5.0")]);
        let c = criteria(|s| s.headers = vec!["X-Shadow-Test: true".into()]);
        assert!(c.matches(&a) && !c.matches(&b));
        let c = criteria(|s| s.headers = vec!["x-shadow-test".into()]);
        assert!(c.matches(&a) && !c.matches(&b));
        let c = criteria(|s| s.cookies = vec!["beta=1".into()]);
        assert!(c.matches(&a) && !c.matches(&b));
        let c = criteria(|s| s.cookies = vec!["sid".into()]);
        assert!(c.matches(&a));
        let c = criteria(|s| s.cookies = vec!["beta=2".into()]);
        assert!(!c.matches(&a));
        let c = criteria(|s| s.user_agent = Some("^Mozilla/".into()));
        assert!(!c.matches(&a) && c.matches(&b));
    }

    #[test]
    fn path_host_and_and_semantics() {
        let a = ex("/api/v1/users", "API.example.com:8080", "10.0.0.1", &[]);
        let c = criteria(|s| s.path = Some("^/api/".into()));
        assert!(c.matches(&a) && !c.matches(&ex("/static/x", "h", "10.0.0.1", &[])));
        let c = criteria(|s| s.hosts = vec!["api.example.com".into(), "other".into()]);
        assert!(c.matches(&a));
        let c = criteria(|s| {
            s.hosts = vec!["api.example.com".into()];
            s.path = Some("^/static".into());
        });
        assert!(!c.matches(&a), "criteria combine with AND");
        assert!(criteria(|_| {}).is_empty() && criteria(|_| {}).matches(&a));
    }

    #[test]
    fn geo_by_longest_prefix() {
        let t = GeoTable::parse(
            "# test\n10.0.0.0/8 US\n10.1.0.0/16 de\n2001:db8::/32 JP\n",
            "geo",
        )
        .unwrap();
        assert_eq!(t.country("10.9.9.9".parse().unwrap()), Some("US"));
        assert_eq!(t.country("10.1.2.3".parse().unwrap()), Some("DE"));
        assert_eq!(t.country("2001:db8::1".parse().unwrap()), Some("JP"));
        assert_eq!(t.country("192.0.2.1".parse().unwrap()), None);
        assert!(matches!(
            GeoTable::parse("10.0.0.0 US\n", "g"),
            Err(CriteriaError::GeoLine { line: 1, .. })
        ));
        assert!(matches!(
            GeoTable::parse("10.0.0.0/33 US\n", "g"),
            Err(CriteriaError::GeoLine { .. })
        ));
        let dir = std::env::temp_dir().join(format!("shadowtap-geo-{}", std::process::id()));
        std::fs::write(&dir, "10.1.0.0/16 DE\n").unwrap();
        let c = criteria(|s| {
            s.geo = vec!["de".into()];
            s.geo_file = Some(dir.clone());
        });
        assert!(
            c.matches(&ex("/", "h", "10.1.0.7", &[])) && !c.matches(&ex("/", "h", "10.2.0.7", &[]))
        );
        let _ = std::fs::remove_file(&dir);
        assert!(matches!(
            MatchCriteria::new(&CriteriaSpec {
                geo: vec!["US".into()],
                ..Default::default()
            }),
            Err(CriteriaError::GeoWithoutFile)
        ));
        assert!(matches!(
            MatchCriteria::new(&CriteriaSpec {
                path: Some("(".into()),
                ..Default::default()
            }),
            Err(CriteriaError::Regex { .. })
        ));
    }
}

//! The guard that keeps a replay off production: a target that names a host the recording
//! was captured from is refused before anything is sent.
//!
//! The rule ([`Captured::refuses`], a pure function of what the recording saw and what the
//! target resolves to):
//! - by **name**: the target's host name equals a captured `Host` name (case-insensitive),
//!   **whatever the port**. TLS usually ends at a load balancer and capture sits on the
//!   plaintext side (`Host: api.example.com`, backends on `10.0.0.5:8080`), so
//!   `--target https://api.example.com` must not get through because its port differs;
//! - by **address**: the target's address (an IP literal, or any address its name resolves to)
//!   and port equal a captured server's address and port, or an IP-literal `Host` and its port.
//!
//! `--allow-target HOST` lets a named host through (a staging host that shares a name with
//! production through split DNS, say): the choice is the user's, stated on the command line.

use std::collections::HashSet;
use std::net::IpAddr;

use arrow::array::{Array, AsArray};
use arrow::datatypes::Int32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;

use crate::error::ReplayError;
use crate::source::Recording;
use crate::target::Target;

/// Distinct hosts read at most: past this the recording cannot be checked, and the replay is
/// refused rather than let through unchecked.
const MAX_HOSTS: usize = 1_000_000;

/// What the recording was captured from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Captured {
    /// `Host` names (lower case, no port, no trailing dot), never IP literals.
    pub names: HashSet<String>,
    /// Server addresses and ports (from the packets, and from IP-literal `Host` headers).
    pub servers: HashSet<(IpAddr, u16)>,
}

/// Why a target is refused: the captured host it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// The target's host name is a captured `Host` name.
    Name(String),
    /// The target's address and port are a captured server's.
    Server(IpAddr, u16),
}

impl std::fmt::Display for Match {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Match::Name(n) => write!(f, "the Host name {n}"),
            Match::Server(IpAddr::V6(ip), port) => write!(f, "the server [{ip}]:{port}"),
            Match::Server(ip, port) => write!(f, "the server {ip}:{port}"),
        }
    }
}

impl Captured {
    /// Adds one exchange's server and `Host` header (with or without a port).
    pub fn add(&mut self, server_ip: Option<IpAddr>, server_port: u16, host: Option<&str>) {
        if let Some(ip) = server_ip {
            self.servers.insert((ip, server_port));
        }
        let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
            return;
        };
        let (name, port) = split_host_port(host).unwrap_or((host.to_owned(), None));
        let name = normalise(&name);
        match name.parse::<IpAddr>() {
            Ok(ip) => {
                self.servers.insert((ip, port.unwrap_or(server_port)));
            }
            Err(_) => {
                self.names.insert(name);
            }
        }
    }

    /// Hosts held (names and servers).
    pub fn len(&self) -> usize {
        self.names.len() + self.servers.len()
    }

    /// True when nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a target whose URL names `host` on `port`, and which resolves to `addresses`,
    /// is refused, and why. `allowed` are the `--allow-target` hosts.
    pub fn refuses(
        &self,
        host: &str,
        port: u16,
        addresses: &[IpAddr],
        allowed: &[String],
    ) -> Option<Match> {
        let host = normalise(host);
        if allowed.iter().any(|a| normalise(a) == host) {
            return None;
        }
        let literal = host.parse::<IpAddr>().ok();
        if literal.is_none() && self.names.contains(&host) {
            return Some(Match::Name(host));
        }
        literal
            .iter()
            .chain(addresses)
            .find(|ip| self.servers.contains(&(**ip, port)))
            .map(|ip| Match::Server(*ip, port))
    }
}

/// Lower case, without brackets or a trailing dot (`API.Example.com.` names `api.example.com`).
fn normalise(host: &str) -> String {
    host.trim()
        .trim_matches(['[', ']'])
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Hosts the recording was captured from. Refuses a recording that names more than
/// [`MAX_HOSTS`] of them (it could not be checked).
pub(crate) fn captured_hosts(recording: &Recording) -> Result<Captured, ReplayError> {
    let mut out = Captured::default();
    for path in recording.files() {
        let err = |e: parquet::errors::ParquetError| {
            ReplayError::Read(shadowtap_core::read::ReadError::Parquet {
                path: path.to_path_buf(),
                source: e,
            })
        };
        let file = std::fs::File::open(path).map_err(|source| ReplayError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).map_err(err)?;
        let mask = ProjectionMask::columns(
            builder.parquet_schema(),
            ["server_ip", "server_port", "host"],
        );
        for batch in builder
            .with_projection(mask)
            .with_batch_size(8192)
            .build()
            .map_err(err)?
        {
            let batch = batch.map_err(|e| err(e.into()))?;
            let (Some(ip), Some(port), Some(host)) = (
                batch.column_by_name("server_ip"),
                batch.column_by_name("server_port"),
                batch.column_by_name("host"),
            ) else {
                return Err(ReplayError::InvalidOption {
                    option: "--from",
                    message: format!(
                        "{}: no server_ip, server_port or host column: not a capture's exchanges",
                        path.display()
                    ),
                });
            };
            let (ip, port, host) = (
                ip.as_string::<i32>(),
                port.as_primitive::<Int32Type>(),
                host.as_string::<i32>(),
            );
            for i in 0..batch.num_rows() {
                let server = ip.is_valid(i).then(|| ip.value(i).parse().ok()).flatten();
                let p = port.value(i).clamp(0, 65_535) as u16;
                out.add(server, p, host.is_valid(i).then(|| host.value(i)));
            }
            if out.len() > MAX_HOSTS {
                return Err(ReplayError::InvalidOption {
                    option: "--from",
                    message: format!(
                        "the recording names more than {MAX_HOSTS} hosts: targets cannot be checked against them"
                    ),
                });
            }
        }
    }
    Ok(out)
}

/// `name` and the port of `name:port` or `[v6]:port`; `None` for a bare IPv6 address.
fn split_host_port(h: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = h.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return Some((addr.to_owned(), port));
    }
    match h.rsplit_once(':') {
        Some((name, _)) if name.contains(':') => None, // a bare IPv6 address
        Some((name, port)) => Some((name.to_owned(), port.parse().ok())),
        None => Some((h.to_owned(), None)),
    }
}

/// Refuses the first target the rule refuses (see the module docs); `allowed` are the
/// `--allow-target` hosts.
pub(crate) async fn check_targets(
    targets: &[Target],
    captured: &Captured,
    allowed: &[String],
) -> Result<(), ReplayError> {
    for t in targets {
        let host = t.url.host_str().unwrap_or_default();
        let port = t.url.port_or_known_default().unwrap_or(80);
        // The name and the literal first: a name refused as such is never looked up.
        let mut hit = captured.refuses(host, port, &[], allowed);
        if hit.is_none() && normalise(host).parse::<IpAddr>().is_err() {
            let addresses: Vec<IpAddr> = tokio::net::lookup_host((normalise(host).as_str(), port))
                .await
                .map(|addrs| addrs.map(|a| a.ip()).collect())
                .unwrap_or_default();
            hit = captured.refuses(host, port, &addresses, allowed);
        }
        if let Some(hit) = hit {
            return Err(ReplayError::CapturedHost {
                target: t.name.clone(),
                url: t.url.to_string(),
                captured: hit.to_string(),
                host: normalise(host),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn host_ports_split() {
        assert_eq!(
            split_host_port("example.com:8080"),
            Some(("example.com".into(), Some(8080)))
        );
        assert_eq!(split_host_port("[::1]:80"), Some(("::1".into(), Some(80))));
        assert_eq!(
            split_host_port("example.com"),
            Some(("example.com".into(), None))
        );
        assert_eq!(split_host_port("::1"), None);
    }

    #[test]
    fn a_name_is_refused_on_any_port_and_an_address_on_its_port() {
        let mut c = Captured::default();
        // TLS ends at the load balancer; capture sees the plaintext side.
        c.add(Some(ip("10.0.0.5")), 8080, Some("API.Example.com"));
        c.add(Some(ip("10.0.0.6")), 8080, Some("10.0.0.9:9000"));
        c.add(Some(ip("fd00::1")), 80, None);
        let none: &[IpAddr] = &[];
        let refused = |host: &str, port: u16, addrs: &[IpAddr]| c.refuses(host, port, addrs, &[]);
        assert_eq!(
            refused("api.example.com", 443, none),
            Some(Match::Name("api.example.com".into()))
        );
        assert_eq!(
            refused("api.example.com.", 8443, none),
            Some(Match::Name("api.example.com".into()))
        );
        assert_eq!(
            refused("10.0.0.5", 8080, none),
            Some(Match::Server(ip("10.0.0.5"), 8080))
        );
        assert_eq!(
            refused("10.0.0.5", 9090, none),
            None,
            "another port of a server"
        );
        assert_eq!(
            refused("10.0.0.9", 9000, none),
            Some(Match::Server(ip("10.0.0.9"), 9000)),
            "an IP-literal Host is an address"
        );
        assert_eq!(
            refused("[fd00::1]", 80, none),
            Some(Match::Server(ip("fd00::1"), 80))
        );
        // A staging name that resolves to a production server.
        assert_eq!(
            refused("staging.internal", 8080, &[ip("10.0.0.5")]),
            Some(Match::Server(ip("10.0.0.5"), 8080))
        );
        assert_eq!(refused("staging.internal", 8080, &[ip("10.1.0.5")]), None);
        // --allow-target lets a named host through, and only that one.
        let allowed = vec!["API.example.com".to_owned()];
        assert_eq!(c.refuses("api.example.com", 443, none, &allowed), None);
        assert!(c.refuses("10.0.0.5", 8080, none, &allowed).is_some());
        assert_eq!(
            Match::Server(ip("fd00::1"), 80).to_string(),
            "the server [fd00::1]:80"
        );
    }
}

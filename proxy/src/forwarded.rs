//! Who the client is, and what the proxy tells production about it.
//!
//! `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host`, `X-Real-IP` and `Forwarded` are
//! claims. From a peer in `trusted_proxies` they are believed: the proxy appends its peer to
//! the chain, keeps the scheme it was told, and takes the client to be the rightmost address of
//! `X-Forwarded-For` that is not itself a trusted proxy (the only one no client can forge).
//! From any other peer they are dropped and written anew from the connection: a client cannot
//! make production, the recording or the canary's sticky split believe it is someone else.

use std::net::{IpAddr, SocketAddr};

use http::header::FORWARDED;
use http::{HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::error::ProxyError;

/// The peers trusted to say who the client is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trusted(Vec<IpNet>);

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The forwarding headers a client's claim can hide in (names built once: no parse per
/// request).
const CLAIMS: [HeaderName; 5] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    X_REAL_IP,
    FORWARDED,
];

impl Trusted {
    /// `10.0.0.0/8`, `fd00::/8` or a bare address (one host), naming the bad entry.
    pub fn parse(list: &[String]) -> Result<Trusted, ProxyError> {
        list.iter()
            .map(|s| {
                let s = s.trim();
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        ProxyError::config(
                            "trusted_proxies",
                            format!("{s:?}: an address or a CIDR block (10.0.0.0/8, ::1/128)"),
                        )
                    })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Trusted)
    }

    /// Whether `ip` is a trusted proxy (an IPv4-mapped IPv6 address as its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// No proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The client's address: the peer's, unless the peer is trusted and `X-Forwarded-For` names
/// an address before it that is not a trusted proxy (the rightmost such one).
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &Trusted) -> IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let chain: Vec<IpAddr> = headers
        .get_all(X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map_while(|a| a.trim().parse::<IpAddr>().ok())
        .collect();
    chain
        .iter()
        .rev()
        .find(|ip| !trusted.contains(**ip))
        .or(chain.first())
        .copied()
        .unwrap_or(peer)
}

/// Writes the forwarding headers production gets: the peer appended to a trusted peer's
/// chain, or the chain replaced by the peer for anyone else.
pub fn set_headers(
    headers: &mut HeaderMap,
    peer: SocketAddr,
    trusted_peer: bool,
    host: Option<&str>,
    tls: bool,
) {
    if !trusted_peer {
        for h in &CLAIMS {
            headers.remove(h);
        }
    }
    let proto = if tls { "https" } else { "http" };
    let ip = peer.ip().to_string();
    let xff = match joined(headers, &X_FORWARDED_FOR) {
        Some(prev) => format!("{prev}, {ip}"),
        None => ip.clone(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    if !headers.contains_key(&X_FORWARDED_PROTO) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    let node = if peer.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip
    };
    let mut fwd = format!("for={node};proto={proto}");
    if let Some(h) = host.filter(|h| !h.is_empty()) {
        fwd.push_str(";host=\"");
        fwd.push_str(h);
        fwd.push('"');
    }
    let value = match joined(headers, &FORWARDED) {
        Some(prev) => format!("{prev}, {fwd}"),
        None => fwd,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(FORWARDED, v);
    }
}

/// Every field line of `name` joined with `, ` (a list header may come in several lines).
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted() -> Trusted {
        Trusted::parse(&["10.0.0.0/8".into(), "::1".into()]).unwrap()
    }

    #[test]
    fn cidrs_and_bare_addresses_and_mapped_v4() {
        let t = trusted();
        assert!(t.contains("10.1.2.3".parse().unwrap()));
        assert!(t.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(t.contains("::1".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(Trusted::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(Trusted::parse(&["example.com".into()]).is_err());
    }

    #[test]
    fn an_untrusted_peers_claims_are_replaced() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-real-ip", HeaderValue::from_static("1.2.3.4"));
        h.insert("forwarded", HeaderValue::from_static("for=1.2.3.4"));
        let peer: SocketAddr = "11.0.0.1:5000".parse().unwrap();
        assert_eq!(
            client_ip(&h, peer.ip(), &trusted()),
            "11.0.0.1".parse::<IpAddr>().unwrap()
        );
        set_headers(&mut h, peer, false, Some("shop"), false);
        assert_eq!(h["x-forwarded-for"], "11.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert!(h.get("x-real-ip").is_none());
        assert_eq!(h["forwarded"], "for=11.0.0.1;proto=http;host=\"shop\"");
    }

    #[test]
    fn a_trusted_peers_chain_is_extended_and_names_the_client() {
        let mut h = HeaderMap::new();
        // A client forged 6.6.6.6; the trusted balancer 10.0.0.5 appended the real client.
        h.append(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 1.2.3.4"),
        );
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.9"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        let peer: SocketAddr = "10.0.0.5:5000".parse().unwrap();
        assert_eq!(
            client_ip(&h, peer.ip(), &trusted()),
            "1.2.3.4".parse::<IpAddr>().unwrap()
        );
        set_headers(&mut h, peer, true, None, false);
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 1.2.3.4, 10.0.0.9, 10.0.0.5");
        assert_eq!(h["x-forwarded-proto"], "https");
        // Without a chain the trusted peer is the client.
        assert_eq!(
            client_ip(&HeaderMap::new(), peer.ip(), &trusted()),
            peer.ip()
        );
    }
}

//! Upstream pools: members (scheme, authority, path prefix), which member takes the next
//! request (round robin or least in flight, skipping members ejected for refusing
//! connections: passive health), and the request each member is sent.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::uri::{Authority, Scheme};

use serde::{Deserialize, Serialize};

/// How production members share the requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// In turn.
    #[default]
    RoundRobin,
    /// The member with the fewest requests in flight.
    LeastInFlight,
}

/// One member of a pool.
#[derive(Debug)]
pub struct Member {
    /// As configured.
    pub url: String,
    /// `http` or `https`.
    pub scheme: Scheme,
    /// `host:port`.
    pub authority: Authority,
    /// Prefixed to every request path (no trailing `/`).
    pub prefix: String,
    in_flight: AtomicU32,
    /// Milliseconds since the epoch until which the member is left out.
    ejected_until_ms: AtomicU64,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Member {
    /// Parses `http://host:port[/prefix]`.
    pub fn parse(url: &str) -> Result<Member, String> {
        let uri: http::Uri = url.trim().parse().map_err(|e| format!("{url:?}: {e}"))?;
        let scheme = uri
            .scheme()
            .cloned()
            .ok_or_else(|| format!("{url:?}: no scheme"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(format!("{url:?}: an upstream URL is http:// or https://"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("{url:?}: no host"))?;
        if uri.query().is_some() {
            return Err(format!("{url:?}: an upstream URL has no query"));
        }
        Ok(Member {
            url: url.trim().to_owned(),
            scheme,
            authority,
            prefix: uri.path().trim_end_matches('/').to_owned(),
            in_flight: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
        })
    }

    /// The URI a request for `path_and_query` is sent to at this member.
    pub fn uri_for(&self, path_and_query: &str) -> Result<http::Uri, http::Error> {
        http::Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(format!("{}{}", self.prefix, path_and_query))
            .build()
    }

    /// The host name (or address) and port.
    pub fn host_port(&self) -> (String, u16) {
        let default = if self.scheme == Scheme::HTTPS {
            443
        } else {
            80
        };
        (
            self.authority
                .host()
                .trim_matches(|c| c == '[' || c == ']')
                .to_ascii_lowercase(),
            self.authority.port_u16().unwrap_or(default),
        )
    }

    /// Leaves the member out for `d` (it refused a connection).
    pub fn eject(&self, d: Duration) {
        self.ejected_until_ms
            .store(now_ms() + d.as_millis() as u64, Ordering::Relaxed);
    }

    fn ejected(&self, now: u64) -> bool {
        self.ejected_until_ms.load(Ordering::Relaxed) > now
    }
}

/// A request in flight at a member; the count drops when it is dropped.
pub struct InFlight(Arc<Member>);

impl InFlight {
    /// The member.
    pub fn member(&self) -> &Arc<Member> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pool of members.
#[derive(Debug)]
pub struct Pool {
    /// Name (`production`, the canary's).
    pub name: String,
    /// Members.
    pub members: Vec<Arc<Member>>,
    balance: Balance,
    next: AtomicUsize,
}

impl Pool {
    /// A pool of `urls` (checked by [`Member::parse`]).
    pub fn new(name: &str, urls: &[String], balance: Balance) -> Result<Pool, String> {
        let members = urls
            .iter()
            .map(|u| Member::parse(u).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        if members.is_empty() {
            return Err(format!("{name}: no members"));
        }
        Ok(Pool {
            name: name.to_owned(),
            members,
            balance,
            next: AtomicUsize::new(0),
        })
    }

    /// The member that takes the next request, `skip` aside (a retry). Members ejected are
    /// passed over while another is available; when all are, the choice ignores ejection (a
    /// request is better tried than refused outright).
    pub fn pick(&self, skip: Option<&Arc<Member>>) -> InFlight {
        let now = now_ms();
        let n = self.members.len();
        let usable = |m: &Arc<Member>| !m.ejected(now) && skip.is_none_or(|s| !Arc::ptr_eq(s, m));
        let chosen = match self.balance {
            Balance::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| &self.members[(start + k) % n])
                    .find(|m| usable(m))
                    .unwrap_or(&self.members[start % n])
            }
            Balance::LeastInFlight => self
                .members
                .iter()
                .filter(|m| usable(m))
                .min_by_key(|m| m.in_flight.load(Ordering::Relaxed))
                .unwrap_or(&self.members[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        };
        chosen.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(chosen.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(balance: Balance) -> Pool {
        Pool::new(
            "p",
            &[
                "http://127.0.0.1:1".into(),
                "http://127.0.0.1:2/base/".into(),
                "http://127.0.0.1:3".into(),
            ],
            balance,
        )
        .unwrap()
    }

    #[test]
    fn round_robin_takes_turns_and_passes_over_ejected_members() {
        let p = pool(Balance::RoundRobin);
        let ports: Vec<u16> = (0..6)
            .map(|_| p.pick(None).member().host_port().1)
            .collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
        p.members[1].eject(Duration::from_secs(60));
        let ports: Vec<u16> = (0..4)
            .map(|_| p.pick(None).member().host_port().1)
            .collect();
        assert!(!ports.contains(&2), "{ports:?}");
        for m in &p.members {
            m.eject(Duration::from_secs(60));
        }
        let _ = p.pick(None); // every member ejected: still a member
    }

    #[test]
    fn least_in_flight_prefers_the_idle_member() {
        let p = pool(Balance::LeastInFlight);
        let a = p.pick(None);
        let b = p.pick(None);
        let c = p.pick(None);
        let ports = [a.member(), b.member(), c.member()].map(|m| m.host_port().1);
        assert_eq!(
            ports
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len(),
            3
        );
        drop(b);
        assert_eq!(p.pick(None).member().host_port().1, ports[1]);
    }

    #[test]
    fn a_member_keeps_its_prefix_and_a_retry_skips_it() {
        let p = pool(Balance::RoundRobin);
        let m = p.members[1].clone();
        assert_eq!(
            m.uri_for("/x?y=1").unwrap().to_string(),
            "http://127.0.0.1:2/base/x?y=1"
        );
        for _ in 0..5 {
            assert!(!Arc::ptr_eq(p.pick(Some(&m)).member(), &m));
        }
        assert!(Member::parse("ftp://h").is_err() && Member::parse("http://h/?q").is_err());
    }
}

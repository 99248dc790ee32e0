//! Routing decisions, pure functions of a compiled configuration ([`Routing`]) and a request
//! head: which pool answers (production or, in the split, the canary) and which shadows get a
//! copy. Made when the head arrives, before any body byte.
//!
//! Shares are basis points of 10,000 buckets. A request's bucket is a hash of its key (the
//! request itself, the client, a cookie or a header: [`KeySource`]) salted by the purpose (each
//! shadow, the canary), so the choices are independent of each other, and a key always lands in
//! the same bucket: raising a weight only adds buckets, so users only move from stable to
//! canary, never back and forth.

use std::sync::Arc;

use shadowtap_core::criteria::MatchCriteria;
use shadowtap_core::Exchange;

use crate::config::{basis_points, KeySource, ProxyConfig};
use crate::error::ProxyError;
use crate::upstream::Pool;

/// A shadow as routing sees it.
#[derive(Debug)]
pub struct ShadowRoute {
    /// Its name.
    pub name: String,
    /// Its share, basis points.
    pub bp: u32,
    /// Its key.
    pub by: KeySource,
    /// Which requests it may get.
    pub criteria: MatchCriteria,
}

/// The canary split.
#[derive(Debug)]
pub struct CanaryRoute {
    /// Its members.
    pub pool: Arc<Pool>,
    /// Its weight, basis points.
    pub bp: u32,
    /// Who a user is.
    pub sticky: KeySource,
    /// The pin cookie's name.
    pub pin_cookie: Option<String>,
}

/// A configuration compiled for the request path; replaced whole on a change.
#[derive(Debug)]
pub struct Routing {
    /// Increases with every change applied.
    pub version: u64,
    /// Production.
    pub production: Arc<Pool>,
    /// Shadows, in the configuration's order (the index of each is its sender's).
    pub shadows: Vec<ShadowRoute>,
    /// The canary, when splitting.
    pub canary: Option<CanaryRoute>,
    /// Methods mirrored (upper case).
    pub mirror_methods: Vec<String>,
    /// What it was compiled from.
    pub config: ProxyConfig,
    /// The shadows' senders, in `shadows`' order (attached by the proxy's state once started).
    pub sinks: Vec<Arc<crate::mirror::Shadow>>,
    /// The peers trusted to say who the client is.
    pub trusted: crate::forwarded::Trusted,
}

impl Routing {
    /// Compiles `config` (already [`ProxyConfig::check`]ed).
    pub fn compile(config: &ProxyConfig, version: u64) -> Result<Routing, ProxyError> {
        let compile = |field: &str, c: &crate::config::Criteria| {
            MatchCriteria::new(&c.spec()).map_err(|e| ProxyError::config(field, e.to_string()))
        };
        let production = Arc::new(
            Pool::new("production", &config.production, config.balance)
                .map_err(|m| ProxyError::config("production", m))?,
        );
        let shadows = config
            .shadows
            .iter()
            .map(|s| {
                Ok(ShadowRoute {
                    name: s.name.clone(),
                    bp: basis_points(s.percent.unwrap_or(config.mirror.percent)),
                    by: s.by.clone().unwrap_or_else(|| config.mirror.by.clone()),
                    criteria: compile(
                        "shadow criteria",
                        s.criteria.as_ref().unwrap_or(&config.mirror.criteria),
                    )?,
                })
            })
            .collect::<Result<Vec<_>, ProxyError>>()?;
        let canary = match &config.canary {
            Some(c) => Some(CanaryRoute {
                pool: Arc::new(
                    Pool::new(&c.name, &c.urls, config.balance)
                        .map_err(|m| ProxyError::config("canary", m))?,
                ),
                bp: basis_points(c.weight),
                sticky: c.sticky.clone(),
                pin_cookie: c.pin_cookie.clone(),
            }),
            None => None,
        };
        Ok(Routing {
            version,
            production,
            shadows,
            canary,
            mirror_methods: config
                .mirror
                .allow_methods
                .iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            config: config.clone(),
            sinks: Vec::new(),
            trusted: crate::forwarded::Trusted::parse(&config.trusted_proxies)?,
        })
    }
}

/// What happens to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The canary answers it.
    pub canary: bool,
    /// It went to the canary because of the pin cookie.
    pub pinned: bool,
    /// Indexes of the shadows that get a copy.
    pub mirrors: Vec<usize>,
}

fn header<'a>(head: &'a Exchange, name: &str) -> Option<&'a str> {
    head.request_headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// The value of cookie `name` in the request, if sent.
pub fn cookie<'a>(head: &'a Exchange, name: &str) -> Option<&'a str> {
    head.request_headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("cookie"))
        .flat_map(|h| h.value.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The bytes a key source gives for this request; `nonce` is the request's own randomness.
pub fn key(by: &KeySource, head: &Exchange, nonce: u64) -> Vec<u8> {
    let client = || head.client_ip.to_string().into_bytes();
    match by {
        KeySource::Request => nonce.to_le_bytes().to_vec(),
        KeySource::Client => client(),
        KeySource::Cookie(n) => cookie(head, n).map_or_else(client, |v| v.as_bytes().to_vec()),
        KeySource::Header(n) => header(head, n).map_or_else(client, |v| v.as_bytes().to_vec()),
    }
}

/// The bucket (0–9,999) of `key` for `purpose`.
pub fn bucket(purpose: &str, key: &[u8]) -> u32 {
    let mut salted = Vec::with_capacity(purpose.len() + 1 + key.len());
    salted.extend_from_slice(purpose.as_bytes());
    salted.push(0);
    salted.extend_from_slice(key);
    shadowtap_core::id::sample_bucket(&salted)
}

/// Decides for one request head. `nonce` must differ per request (it is the key of
/// [`KeySource::Request`]).
pub fn decide(r: &Routing, head: &Exchange, nonce: u64) -> Decision {
    let (mut canary, mut pinned) = (false, false);
    if let Some(c) = &r.canary {
        if c.bp > 0 {
            pinned = c
                .pin_cookie
                .as_deref()
                .is_some_and(|n| cookie(head, n) == Some("1"));
            canary =
                pinned || bucket("canary", &key(&c.sticky, head, nonce.rotate_left(17))) < c.bp;
        }
    }
    let method_ok = r
        .mirror_methods
        .iter()
        .any(|m| m.eq_ignore_ascii_case(&head.method));
    let mirrors = if method_ok {
        r.shadows
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                s.bp > 0
                    && s.criteria.matches(head)
                    && bucket(&s.name, &key(&s.by, head, nonce)) < s.bp
            })
            .map(|(i, _)| i)
            .collect()
    } else {
        Vec::new()
    };
    Decision {
        canary,
        pinned,
        mirrors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CanaryConfig, ShadowConfig};
    use proptest::prelude::*;
    use shadowtap_core::{Body, ExchangeFlags, Header};

    pub(crate) fn head(
        method: &str,
        path: &str,
        client: [u8; 4],
        headers: &[(&str, &str)],
    ) -> Exchange {
        Exchange {
            grpc: None,
            tls: None,
            protocol: None,
            stream_id: None,
            exchange_id: "e".into(),
            connection_id: "c".into(),
            connection_seq: 0,
            source: "proxy".into(),
            request_start_us: 0,
            request_end_us: None,
            response_start_us: None,
            response_end_us: None,
            client_ip: std::net::IpAddr::from(client),
            client_port: 1,
            server_ip: "127.0.0.1".parse().unwrap(),
            server_port: 80,
            method: method.into(),
            uri: path.into(),
            host: Some("h".into()),
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

    fn routing(mirror: f64, weight: f64, sticky: KeySource, by: KeySource) -> Routing {
        let mut c = ProxyConfig::new("127.0.0.1:0", vec!["http://127.0.0.1:1".into()]);
        c.mirror.percent = mirror;
        c.mirror.by = by;
        for name in ["a", "b"] {
            c.shadows.push(ShadowConfig {
                name: name.into(),
                urls: vec!["http://127.0.0.1:2".into()],
                percent: None,
                by: None,
                criteria: None,
                concurrency: 1,
                queue: 1,
            });
        }
        c.canary = Some(CanaryConfig {
            name: "canary".into(),
            urls: vec!["http://127.0.0.1:3".into()],
            weight,
            sticky,
            pin_cookie: Some("pin".into()),
        });
        c.check().unwrap();
        Routing::compile(&c, 1).unwrap()
    }

    #[test]
    fn shares_hold_over_many_requests_and_shadows_choose_independently() {
        let r = routing(10.0, 0.0, KeySource::Client, KeySource::Request);
        let h = head("GET", "/", [10, 0, 0, 1], &[]);
        let n = 20_000u64;
        let (mut a, mut b, mut both) = (0, 0, 0);
        for nonce in 0..n {
            let d = decide(&r, &h, shadowtap_core::splitmix::SplitMix(nonce).next_u64());
            a += u64::from(d.mirrors.contains(&0));
            b += u64::from(d.mirrors.contains(&1));
            both += u64::from(d.mirrors.len() == 2);
        }
        for share in [a, b] {
            let pct = share as f64 * 100.0 / n as f64;
            assert!((9.0..=11.0).contains(&pct), "{pct}");
        }
        // Independent: both about 1%.
        assert!((both as f64 * 100.0 / n as f64) < 2.0, "{both}");
    }

    #[test]
    fn methods_outside_the_list_are_never_mirrored() {
        let r = routing(100.0, 0.0, KeySource::Client, KeySource::Request);
        assert_eq!(
            decide(&r, &head("GET", "/", [1, 1, 1, 1], &[]), 1).mirrors,
            [0, 1]
        );
        assert!(decide(&r, &head("POST", "/", [1, 1, 1, 1], &[]), 1)
            .mirrors
            .is_empty());
    }

    #[test]
    fn mirror_by_client_is_consistent_per_client() {
        let r = routing(50.0, 0.0, KeySource::Client, KeySource::Client);
        for c in 0..200u8 {
            let h = head("GET", "/", [10, 0, 1, c], &[]);
            let first = decide(&r, &h, 0).mirrors;
            for nonce in 1..20 {
                assert_eq!(decide(&r, &h, nonce).mirrors, first);
            }
        }
    }

    #[test]
    fn the_pin_cookie_keeps_a_user_on_the_canary() {
        let r = routing(
            0.0,
            1.0,
            KeySource::Cookie("uid".into()),
            KeySource::Request,
        );
        let h = head("GET", "/", [1, 2, 3, 4], &[("Cookie", "uid=u1; pin=1")]);
        let d = decide(&r, &h, 0);
        assert!(d.canary && d.pinned);
        let r0 = routing(
            0.0,
            0.0,
            KeySource::Cookie("uid".into()),
            KeySource::Request,
        );
        assert!(
            !decide(&r0, &h, 0).canary,
            "weight 0 ends the canary, pinned or not"
        );
    }

    proptest! {
        /// Raising the weight only moves users to the canary.
        #[test]
        fn raising_the_weight_never_moves_a_user_back(user in "[a-z0-9]{1,12}", w1 in 0.0f64..100.0, dw in 0.0f64..100.0) {
            let w2 = (w1 + dw).min(100.0);
            let h = head("GET", "/", [1, 2, 3, 4], &[("X-User", user.as_str())]);
            let sticky = KeySource::Header("X-User".into());
            let low = decide(&routing(0.0, w1, sticky.clone(), KeySource::Request), &h, 7).canary;
            let high = decide(&routing(0.0, w2, sticky, KeySource::Request), &h, 99).canary;
            prop_assert!(!low || high);
        }
    }
}

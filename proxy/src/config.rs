//! The proxy's configuration: what the flags, the TOML file (`--config`) and the admin API's
//! `PUT /config` all say, in one serde type. [`ProxyConfig::check`] refuses what no proxy can
//! run with, naming the field; [`ProxyConfig::restart_needed`] says which changes a running
//! proxy cannot take without a restart (the listener, the recording, the shadow pools' set).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::ProxyError;

/// Where the key comes from that makes a choice (mirror or canary) consistent.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeySource {
    /// Each request on its own (random).
    #[default]
    Request,
    /// The client's address: one client, one choice.
    Client,
    /// A cookie's value; a request without it falls back to the client's address.
    Cookie(String),
    /// A request header's value; a request without it falls back to the client's address.
    Header(String),
}

impl FromStr for KeySource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?}: expected request, client, cookie:NAME or header:NAME");
        match s.split_once(':') {
            None if s == "request" => Ok(KeySource::Request),
            None if s == "client" => Ok(KeySource::Client),
            Some(("cookie", n)) if !n.trim().is_empty() => Ok(KeySource::Cookie(n.trim().into())),
            Some(("header", n)) if !n.trim().is_empty() => Ok(KeySource::Header(n.trim().into())),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::Request => f.write_str("request"),
            KeySource::Client => f.write_str("client"),
            KeySource::Cookie(n) => write!(f, "cookie:{n}"),
            KeySource::Header(n) => write!(f, "header:{n}"),
        }
    }
}

impl Serialize for KeySource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeySource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

pub use crate::upstream::Balance;

/// Which requests a shadow receives, by content (the same meaning as capture's and replay's
/// `--match-*` flags).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Criteria {
    /// `Name: value` (exact) or `Name` (present); any of them matches.
    pub match_header: Vec<String>,
    /// `NAME` (present) or `NAME=VALUE`.
    pub match_cookie: Vec<String>,
    /// Regex on the User-Agent.
    pub match_user_agent: Option<String>,
    /// Regex on the path.
    pub match_path: Option<String>,
    /// Country codes of the client address (needs `geo_file`).
    pub match_geo: Vec<String>,
    /// CIDR → country CSV for `match_geo`.
    pub geo_file: Option<PathBuf>,
}

impl Criteria {
    /// The core spec these compile from.
    pub fn spec(&self) -> shadowtap_core::criteria::CriteriaSpec {
        shadowtap_core::criteria::CriteriaSpec {
            headers: self.match_header.clone(),
            cookies: self.match_cookie.clone(),
            user_agent: self.match_user_agent.clone(),
            path: self.match_path.clone(),
            geo: self.match_geo.clone(),
            geo_file: self.geo_file.clone(),
            ..Default::default()
        }
    }
}

/// Mirroring defaults every shadow starts from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    /// Share of matching requests copied to each shadow, 0–100.
    pub percent: f64,
    /// What makes the choice consistent.
    pub by: KeySource,
    /// Which requests are copied.
    pub criteria: Criteria,
    /// Methods copied (upper case); others are never mirrored.
    pub allow_methods: Vec<String>,
    /// Request bodies over this are not mirrored (the copy is dropped and counted).
    pub max_body: u64,
    /// Header every copy carries (value: the run id).
    pub marker_header: String,
    /// Join each copy's answer with production's, request by request, for a live paired
    /// comparison (`shadowtap serve` turns it on; off, nothing is kept).
    pub pair_outcomes: bool,
    /// With `pair_outcomes`, join the answers' bodies too (their first 64 KiB), for the body
    /// comparison of the shadow phase.
    pub pair_bodies: bool,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            percent: 100.0,
            by: KeySource::Request,
            criteria: Criteria::default(),
            allow_methods: shadowtap_replayer::DEFAULT_METHODS
                .iter()
                .map(|m| (*m).to_owned())
                .collect(),
            max_body: 16 << 20,
            marker_header: shadowtap_replayer::DEFAULT_MARKER.to_owned(),
            pair_outcomes: false,
            pair_bodies: false,
        }
    }
}

/// A shadow pool: copies go there, its responses are recorded, never returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShadowConfig {
    /// Name in the `replays` table's `target` column.
    pub name: String,
    /// The pool's members; copies go to them in turn.
    pub urls: Vec<String>,
    /// Its share (default: `mirror.percent`).
    #[serde(default)]
    pub percent: Option<f64>,
    /// Its key (default: `mirror.by`).
    #[serde(default)]
    pub by: Option<KeySource>,
    /// Its criteria (default: `mirror.criteria`).
    #[serde(default)]
    pub criteria: Option<Criteria>,
    /// Copies in flight to it at most.
    #[serde(default = "default_shadow_concurrency")]
    pub concurrency: usize,
    /// Copies queued for it at most; past it a copy is dropped and counted.
    #[serde(default = "default_shadow_queue")]
    pub queue: usize,
}

fn default_shadow_concurrency() -> usize {
    64
}
fn default_shadow_queue() -> usize {
    64
}

/// The canary pool: a share of real traffic, answered by the canary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryConfig {
    /// Name in the recording.
    pub name: String,
    /// Its members.
    pub urls: Vec<String>,
    /// Share of requests (of users, with a sticky key) sent to it, 0–100.
    pub weight: f64,
    /// What a user is (a consistent hash of it picks one of 10,000 buckets); by default each
    /// request on its own (`client` would send everyone behind one NAT to the same side).
    #[serde(default)]
    pub sticky: KeySource,
    /// A cookie set on canary responses that keeps the user on the canary while it runs.
    #[serde(default)]
    pub pin_cookie: Option<String>,
}

/// Timeouts and bounds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Seconds production has to send its response head.
    pub upstream_timeout_s: f64,
    /// Seconds to connect to a member.
    pub connect_timeout_s: f64,
    /// Seconds a member that refused a connection is left out.
    pub eject_s: f64,
    /// Seconds requests in flight get to finish at shutdown.
    pub shutdown_grace_s: f64,
    /// Seconds a shadow has to answer a copy.
    pub shadow_timeout_s: f64,
    /// Body bytes kept per message in the recording.
    pub max_record_body: u64,
    /// Bytes of bodies kept at once for the copies and the recording, over all requests; past
    /// it copies are dropped (counted as `memory`) and recorded bodies cut (flagged truncated).
    pub mirror_memory: u64,
    /// Roll recording files at this size.
    pub max_file_bytes: u64,
    /// Also roll recording files this often (seconds).
    pub rotate_s: Option<f64>,
    /// Client connections served at once (WebSocket tunnels included); more wait to be
    /// accepted.
    pub max_connections: usize,
    /// Connections from one client address at once (none: no limit); past it new ones are
    /// closed at once.
    pub max_connections_per_client: Option<usize>,
    /// Seconds from accept to the first request's whole head (covering the TLS handshake,
    /// protocol detection and the HTTP/2 preface), and for every later HTTP/1 head: a client
    /// that sends nothing, or half a line, is closed after it. nginx: `client_header_timeout`
    /// 60 s.
    pub header_timeout_s: f64,
    /// Seconds a connection with no request in flight stays open (HTTP/1 keep-alive and
    /// HTTP/2 alike). nginx: `keepalive_timeout` 75 s, `http2_idle_timeout` 3 min (older).
    pub idle_timeout_s: f64,
    /// Seconds a client may take no bytes of its response before it is closed. nginx:
    /// `send_timeout` 60 s.
    pub send_timeout_s: f64,
    /// HTTP/2 keep-alive: a PING every this many seconds; a client that does not answer one
    /// within as long is closed.
    pub h2_ping_s: f64,
    /// `Upgrade` protocols tunnelled to production (case-insensitive). Other Upgrade requests
    /// (`h2c` among them) are served as ordinary requests, their `Upgrade` dropped.
    pub upgrade_protocols: Vec<String>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            upstream_timeout_s: 60.0,
            connect_timeout_s: 5.0,
            eject_s: 10.0,
            shutdown_grace_s: 30.0,
            shadow_timeout_s: 10.0,
            max_record_body: 16 << 20,
            mirror_memory: 256 << 20,
            max_file_bytes: 256 << 20,
            rotate_s: Some(60.0),
            max_connections: 10_000,
            max_connections_per_client: None,
            header_timeout_s: 10.0,
            idle_timeout_s: 60.0,
            send_timeout_s: 60.0,
            h2_ping_s: 30.0,
            upgrade_protocols: vec!["websocket".into()],
        }
    }
}

/// Hooks applied to mirrored requests and shadow responses (the replayer's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Hooks {
    /// Declarative rules file.
    pub rules: Option<PathBuf>,
    /// Rhai script.
    pub script: Option<PathBuf>,
    /// Middleware command.
    pub middleware: Option<String>,
}

/// Everything the proxy runs with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address to listen on.
    pub listen: String,
    /// Production members (`http://host:port`).
    pub production: Vec<String>,
    /// How production members share requests.
    #[serde(default)]
    pub balance: Balance,
    /// Mirroring defaults.
    #[serde(default)]
    pub mirror: MirrorConfig,
    /// Shadow pools.
    #[serde(default)]
    pub shadows: Vec<ShadowConfig>,
    /// The canary split.
    #[serde(default)]
    pub canary: Option<CanaryConfig>,
    /// Recording directory.
    #[serde(default)]
    pub record: Option<PathBuf>,
    /// Extra secret names redacted in the recording (besides the defaults).
    #[serde(default)]
    pub redact: Vec<String>,
    /// Admin API address.
    #[serde(default)]
    pub admin: Option<String>,
    /// File holding the admin API's bearer token.
    #[serde(default)]
    pub admin_token_file: Option<PathBuf>,
    /// Serve the admin API over TLS with this certificate and key (needed to bind it to an
    /// address that is not loopback, unless `admin_insecure`).
    #[serde(default)]
    pub admin_tls: Option<TlsFiles>,
    /// Allow the admin API on a non-loopback address without TLS (its token then crosses the
    /// network in the clear).
    #[serde(default)]
    pub admin_insecure: bool,
    /// Production and canary members `PUT /config` may name besides those the proxy started
    /// with (`http://host:port`; `*` for any). The admin API can otherwise not repoint users'
    /// traffic to a host nobody configured.
    #[serde(default)]
    pub admin_allow_production: Vec<String>,
    /// Shadow or canary hosts allowed although they are production members.
    #[serde(default)]
    pub allow_targets: Vec<String>,
    /// Hooks.
    #[serde(default)]
    pub hooks: Hooks,
    /// Terminate clients' TLS with these certificates and keys (chosen by SNI; the first when
    /// none matches).
    #[serde(default)]
    pub tls: Vec<TlsFiles>,
    /// CA certificates (PEM) that `https://` members' certificates must chain to, instead of
    /// the platform's roots.
    #[serde(default)]
    pub upstream_ca: Option<PathBuf>,
    /// Peers (CIDRs, `10.0.0.0/8`, `::1/128`) trusted to say who the client is: from them,
    /// `X-Forwarded-For` and `Forwarded` are appended to and `X-Forwarded-Proto` kept, and the
    /// canary's `sticky = "client"` keys on the client they name. From anyone else those
    /// headers are replaced. None by default.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// Timeouts and bounds.
    #[serde(default)]
    pub limits: Limits,
}

/// A certificate chain and its key, PEM files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key.
    pub key: PathBuf,
}

fn percent_ok(field: &str, p: f64) -> Result<(), ProxyError> {
    if p.is_finite() && (0.0..=100.0).contains(&p) {
        Ok(())
    } else {
        Err(ProxyError::config(
            field,
            format!("{p}: a share is 0 to 100"),
        ))
    }
}

/// The longest duration any limit may say (about 31 years): past it a `Duration` cannot be
/// made, and no timeout means that.
pub const MAX_SECONDS: f64 = 1e9;

/// Basis points (0–10,000) of a share in percent.
pub fn basis_points(percent: f64) -> u32 {
    (percent * 100.0).round().clamp(0.0, 10_000.0) as u32
}

impl ProxyConfig {
    /// A config with only the required parts.
    pub fn new(listen: impl Into<String>, production: Vec<String>) -> Self {
        ProxyConfig {
            listen: listen.into(),
            production,
            balance: Balance::default(),
            mirror: MirrorConfig::default(),
            shadows: Vec::new(),
            canary: None,
            record: None,
            redact: Vec::new(),
            admin: None,
            admin_token_file: None,
            admin_tls: None,
            admin_insecure: false,
            admin_allow_production: Vec::new(),
            allow_targets: Vec::new(),
            hooks: Hooks::default(),
            tls: Vec::new(),
            upstream_ca: None,
            trusted_proxies: Vec::new(),
            limits: Limits::default(),
        }
    }

    /// Parses a TOML file's text.
    pub fn from_toml(text: &str) -> Result<Self, ProxyError> {
        toml::from_str(text).map_err(|e| ProxyError::config("--config", e.to_string()))
    }

    /// Refuses what no proxy can run with, naming the field.
    pub fn check(&self) -> Result<(), ProxyError> {
        if self.production.is_empty() {
            return Err(ProxyError::config(
                "production",
                "give at least one production URL".into(),
            ));
        }
        for u in &self.production {
            crate::upstream::Member::parse(u).map_err(|m| ProxyError::config("production", m))?;
        }
        percent_ok("mirror.percent", self.mirror.percent)?;
        let mut names = std::collections::HashSet::new();
        names.insert("production");
        for s in &self.shadows {
            let name_ok = !s.name.is_empty()
                && s.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            if !name_ok {
                return Err(ProxyError::config(
                    "shadow",
                    format!(
                        "{:?}: a pool name is letters, digits, '-', '_' or '.'",
                        s.name
                    ),
                ));
            }
            if !names.insert(s.name.as_str()) {
                return Err(ProxyError::config(
                    "shadow",
                    format!("the name {:?} is used twice (production is taken)", s.name),
                ));
            }
            if s.urls.is_empty() {
                return Err(ProxyError::config(
                    "shadow",
                    format!("{}: give the pool's URLs", s.name),
                ));
            }
            for u in &s.urls {
                crate::upstream::Member::parse(u)
                    .map_err(|m| ProxyError::config("shadow", format!("{}: {m}", s.name)))?;
            }
            if let Some(p) = s.percent {
                percent_ok("mirror-for", p)?;
            }
            if s.concurrency == 0 || s.queue == 0 {
                return Err(ProxyError::config(
                    "shadow",
                    format!("{}: concurrency and queue are at least 1", s.name),
                ));
            }
        }
        if let Some(c) = &self.canary {
            if !names.insert(c.name.as_str()) {
                return Err(ProxyError::config(
                    "canary",
                    format!("the name {:?} is already a pool's", c.name),
                ));
            }
            if c.urls.is_empty() {
                return Err(ProxyError::config(
                    "canary",
                    "give the canary's URLs".into(),
                ));
            }
            for u in &c.urls {
                crate::upstream::Member::parse(u).map_err(|m| ProxyError::config("canary", m))?;
            }
            percent_ok("canary-weight", c.weight)?;
        }
        let l = &self.limits;
        for (field, v) in [
            ("limits.upstream_timeout_s", l.upstream_timeout_s),
            ("limits.connect_timeout_s", l.connect_timeout_s),
            ("limits.shadow_timeout_s", l.shadow_timeout_s),
            ("limits.header_timeout_s", l.header_timeout_s),
            ("limits.idle_timeout_s", l.idle_timeout_s),
            ("limits.send_timeout_s", l.send_timeout_s),
            ("limits.h2_ping_s", l.h2_ping_s),
            ("limits.rotate_s", l.rotate_s.unwrap_or(1.0)),
        ] {
            if !(v.is_finite() && v > 0.0 && v <= MAX_SECONDS) {
                return Err(ProxyError::config(
                    field,
                    format!("{v}: seconds, more than 0 and at most {MAX_SECONDS}"),
                ));
            }
        }
        for (field, v) in [
            ("limits.eject_s", l.eject_s),
            ("limits.shutdown_grace_s", l.shutdown_grace_s),
        ] {
            if !(v.is_finite() && (0.0..=MAX_SECONDS).contains(&v)) {
                return Err(ProxyError::config(
                    field,
                    format!("{v}: seconds, 0 to {MAX_SECONDS}"),
                ));
            }
        }
        if l.max_connections == 0 || l.max_connections_per_client == Some(0) {
            return Err(ProxyError::config(
                "limits.max_connections",
                "at least 1".into(),
            ));
        }
        for p in &l.upgrade_protocols {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
                return Err(ProxyError::config(
                    "limits.upgrade_protocols",
                    format!("{p:?}: a protocol token"),
                ));
            }
        }
        crate::forwarded::Trusted::parse(&self.trusted_proxies)?;
        shadowtap_core::criteria::MatchCriteria::new(&self.mirror.criteria.spec())
            .map_err(|e| ProxyError::config("mirror.criteria", e.to_string()))?;
        for s in &self.shadows {
            if let Some(c) = &s.criteria {
                shadowtap_core::criteria::MatchCriteria::new(&c.spec()).map_err(|e| {
                    ProxyError::config("shadow criteria", format!("{}: {e}", s.name))
                })?;
            }
        }
        Ok(())
    }

    /// The first field a running proxy cannot change to `new`'s value, when there is one.
    pub fn restart_needed(&self, new: &ProxyConfig) -> Option<&'static str> {
        if self.listen != new.listen {
            Some("listen")
        } else if self.record != new.record {
            Some("record")
        } else if self.admin != new.admin
            || self.admin_token_file != new.admin_token_file
            || self.admin_tls != new.admin_tls
            || self.admin_insecure != new.admin_insecure
            || self.admin_allow_production != new.admin_allow_production
        {
            Some("admin")
        } else if self.tls != new.tls || self.upstream_ca != new.upstream_ca {
            Some("tls, upstream_ca")
        } else if self.hooks != new.hooks {
            Some("hooks")
        } else if self.redact != new.redact {
            Some("redact")
        } else if self.mirror.marker_header != new.mirror.marker_header {
            Some("mirror.marker_header")
        } else if self.canary.as_ref().map(|c| &c.name) != new.canary.as_ref().map(|c| &c.name) {
            Some("canary.name")
        } else if self.mirror.max_body != new.mirror.max_body {
            Some("mirror.max_body")
        } else if (
            self.limits.max_connections,
            self.limits.mirror_memory,
            self.limits.max_record_body,
            self.limits.max_file_bytes,
        ) != (
            new.limits.max_connections,
            new.limits.mirror_memory,
            new.limits.max_record_body,
            new.limits.max_file_bytes,
        ) || self.limits.rotate_s != new.limits.rotate_s
            || self.limits.shadow_timeout_s != new.limits.shadow_timeout_s
            || self.limits.connect_timeout_s != new.limits.connect_timeout_s
            || self.limits.shutdown_grace_s != new.limits.shutdown_grace_s
            || self.limits.header_timeout_s != new.limits.header_timeout_s
            || self.limits.idle_timeout_s != new.limits.idle_timeout_s
            || self.limits.send_timeout_s != new.limits.send_timeout_s
            || self.limits.h2_ping_s != new.limits.h2_ping_s
            || self.limits.max_connections_per_client != new.limits.max_connections_per_client
        {
            Some("limits (all but upstream_timeout_s, eject_s and upgrade_protocols)")
        } else {
            None
        }
    }

    /// A commented sample for `--print-sample-config`.
    pub fn sample() -> &'static str {
        include_str!("sample.toml")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_sources_parse_and_print_back() {
        for s in ["request", "client", "cookie:uid", "header:X-User"] {
            assert_eq!(s.parse::<KeySource>().unwrap().to_string(), s);
        }
        assert!("cookie:".parse::<KeySource>().is_err());
        assert!("ip".parse::<KeySource>().is_err());
    }

    #[test]
    fn the_sample_parses_and_checks() {
        let c = ProxyConfig::from_toml(ProxyConfig::sample()).unwrap();
        c.check().unwrap();
        assert_eq!(c.shadows.len(), 2);
        assert!(c.canary.is_some());
    }

    #[test]
    fn bad_configs_name_the_field() {
        let mut c = ProxyConfig::new("127.0.0.1:0", vec!["http://127.0.0.1:1".into()]);
        c.mirror.percent = 120.0;
        assert!(c
            .check()
            .unwrap_err()
            .to_string()
            .contains("mirror.percent"));
        let mut c = ProxyConfig::new("127.0.0.1:0", vec![]);
        assert!(c.check().unwrap_err().to_string().contains("production"));
        c.production = vec!["ftp://x".into()];
        assert!(c.check().is_err());
        let mut c = ProxyConfig::new("127.0.0.1:0", vec!["http://127.0.0.1:1".into()]);
        c.shadows.push(ShadowConfig {
            name: "production".into(),
            urls: vec!["http://127.0.0.1:2".into()],
            percent: None,
            by: None,
            criteria: None,
            concurrency: 1,
            queue: 1,
        });
        assert!(c.check().unwrap_err().to_string().contains("used twice"));
    }

    #[test]
    fn which_changes_need_a_restart() {
        let a = ProxyConfig::from_toml(ProxyConfig::sample()).unwrap();
        let mut b = a.clone();
        b.mirror.percent = 5.0;
        b.canary.as_mut().unwrap().weight = 50.0;
        b.production.push("http://127.0.0.1:9".into());
        b.shadows[0].urls = vec!["http://127.0.0.1:10".into()];
        assert_eq!(a.restart_needed(&b), None, "shadows start anew");
        b.listen = "127.0.0.1:1".into();
        assert_eq!(a.restart_needed(&b), Some("listen"));
    }
}

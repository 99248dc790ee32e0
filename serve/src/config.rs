//! `shadowtap serve`'s configuration file: the load balancers (each a proxy in this process),
//! the API, the store, the monitor's defaults and the alerts. [`ServeConfig::sample`] is the
//! commented file `--print-sample-config` prints; every key in it is read here.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ServeError;

/// The whole file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeConfig {
    /// The control API.
    pub api: ApiConfig,
    /// Where the state is kept.
    #[serde(default)]
    pub store: StoreConfig,
    /// The monitor's defaults.
    #[serde(default)]
    pub monitor: MonitorConfig,
    /// Where alerts go.
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The load balancers.
    #[serde(rename = "loadbalancer", default)]
    pub loadbalancers: Vec<LoadBalancerConfig>,
}

/// `[api]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `host:port`.
    pub listen: String,
    /// One token per line: `name token` (the name is the actor in the history) or a bare
    /// token (named `api`). Relative to the config file.
    pub token_file: PathBuf,
}

/// `[store]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` (relative to the config file) or `postgres://…`; default
    /// `sqlite://shadowtap.db` beside the config.
    pub url: Option<String>,
}

/// `[monitor]`: defaults a `testing` call may override.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// How often each load balancer is judged (`30s`, `500ms`, `2m`).
    pub interval: String,
    /// Fewer requests than this on the new version in a window: hold, no judgement.
    pub min_requests: u64,
    /// Windows in a row without enough traffic before an alert.
    pub silent_limit: u32,
    /// Breaching windows in a row that roll back.
    pub failure_limit: u32,
    /// How long a pool being removed keeps its in-flight requests before it is removed.
    pub drain: String,
    /// The monitor's lease (several instances on one store: one runs the monitor; another
    /// takes over within this after it dies).
    pub lease: String,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interval: "30s".into(),
            min_requests: 20,
            silent_limit: 5,
            failure_limit: 3,
            drain: "10s".into(),
            lease: "5s".into(),
        }
    }
}

/// `[alerts]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertsConfig {
    /// Generic JSON webhook: POSTed, signed with `X-Shadowtap-Signature: sha256=<hex HMAC>`.
    pub webhook_url: Option<String>,
    /// The HMAC key's file (relative to the config file).
    pub webhook_secret_file: Option<PathBuf>,
    /// Slack-compatible incoming webhook (`{"text": …}`).
    pub slack_url: Option<String>,
    /// Prometheus Alertmanager's base URL (`http://alertmanager:9093`): problems are POSTed to
    /// its `/api/v2/alerts`.
    pub alertmanager_url: Option<String>,
}

/// One `[[loadbalancer]]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadBalancerConfig {
    /// Its id in the API.
    pub id: String,
    /// Where its proxy listens.
    pub listen: String,
    /// The stable pool's members at first start (the store's value wins afterwards).
    pub production: Vec<String>,
    /// Record exchanges and replays here (optional).
    #[serde(default)]
    pub record: Option<PathBuf>,
    /// Hosts allowed as shadows although they are production's.
    #[serde(default)]
    pub allow_targets: Vec<String>,
    /// CIDR → country CSV for `geo:` mirror criteria.
    #[serde(default)]
    pub geo_file: Option<PathBuf>,
    /// The replayer's hooks on the shadow copies and the shadow's answers (`rules` TOML,
    /// `script` Rhai, `middleware` command; docs/replay.md): e.g. a staging token instead of
    /// the user's, or a field normalised before the comparison. Production is never touched.
    #[serde(default)]
    pub hooks: shadowtap_proxy::config::Hooks,
    /// What keeps a user on the same side of the canary split: `request` (the default: each
    /// request on its own, as Flagger and Argo Rollouts split), `client`, `header:NAME` or
    /// `cookie:NAME`. Not `client` by default: every user behind one NAT or load balancer
    /// address would land on the same side (a 20% canary took all of one address's traffic).
    #[serde(default = "per_request")]
    pub sticky: String,
    /// Member URL → its Prometheus endpoint (the service's own `/metrics` or node_exporter's),
    /// for the pools' CPU and memory.
    #[serde(default)]
    pub metrics_urls: std::collections::BTreeMap<String, String>,
    /// Peers trusted to say who the client is (CIDRs): the proxy's `trusted_proxies`. Behind
    /// another load balancer, list it here so that `sticky = "client"` keys on the user, not
    /// on the load balancer's address.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

fn per_request() -> String {
    "request".into()
}

impl LoadBalancerConfig {
    /// A load balancer with only the required keys (the others at their defaults).
    pub fn new(id: &str, listen: &str, production: Vec<String>) -> Self {
        LoadBalancerConfig {
            id: id.into(),
            listen: listen.into(),
            production,
            record: None,
            allow_targets: Vec::new(),
            geo_file: None,
            hooks: Default::default(),
            sticky: per_request(),
            metrics_urls: Default::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// `30s`, `500ms`, `2m`, `1h`, or a number of seconds (the project's one duration syntax,
/// `shadowtap_core::units::parse_duration`), at most a week.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = shadowtap_core::units::parse_duration(s)?;
    if d > Duration::from_secs(7 * 86_400) {
        return Err(format!("{s:?} is over a week"));
    }
    Ok(d)
}

impl ServeConfig {
    /// Reads and checks the file; relative paths become relative to its directory.
    pub fn load(path: &Path) -> Result<ServeConfig, ServeError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServeError::Config {
            field: "--config".into(),
            why: format!("{}: {e}", path.display()),
        })?;
        let mut c: ServeConfig = toml::from_str(&text).map_err(|e| ServeError::Config {
            field: path.display().to_string(),
            why: e.to_string(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let rel = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        rel(&mut c.api.token_file);
        if let Some(f) = c.alerts.webhook_secret_file.as_mut() {
            rel(f);
        }
        for lb in &mut c.loadbalancers {
            if let Some(r) = lb.record.as_mut() {
                rel(r);
            }
            if let Some(g) = lb.geo_file.as_mut() {
                rel(g);
            }
            if let Some(r) = lb.hooks.rules.as_mut() {
                rel(r);
            }
            if let Some(r) = lb.hooks.script.as_mut() {
                rel(r);
            }
        }
        c.store.url = Some(match c.store.url.take() {
            None => format!("sqlite://{}", base.join("shadowtap.db").display()),
            Some(u) => match u.strip_prefix("sqlite://") {
                Some(p) if Path::new(p).is_relative() => {
                    format!("sqlite://{}", base.join(p).display())
                }
                _ => u,
            },
        });
        c.check()?;
        Ok(c)
    }

    /// Checks what the types cannot.
    pub fn check(&self) -> Result<(), ServeError> {
        let bad = |field: &str, why: String| ServeError::Config {
            field: field.into(),
            why,
        };
        parse_duration(&self.monitor.interval).map_err(|w| bad("monitor.interval", w))?;
        parse_duration(&self.monitor.drain).map_err(|w| bad("monitor.drain", w))?;
        parse_duration(&self.monitor.lease).map_err(|w| bad("monitor.lease", w))?;
        if self.loadbalancers.is_empty() {
            return Err(bad(
                "loadbalancer",
                "at least one [[loadbalancer]] is needed".into(),
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        for lb in &self.loadbalancers {
            if lb.id.is_empty()
                || !lb
                    .id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(bad(
                    "loadbalancer.id",
                    format!("{:?}: letters, digits, - and _ only", lb.id),
                ));
            }
            if !ids.insert(lb.id.as_str()) {
                return Err(bad("loadbalancer.id", format!("{:?} is used twice", lb.id)));
            }
            lb.sticky
                .parse::<shadowtap_proxy::config::KeySource>()
                .map_err(|w| bad("loadbalancer.sticky", w))?;
            if lb.production.is_empty() {
                return Err(bad(
                    "loadbalancer.production",
                    format!("{}: at least one member", lb.id),
                ));
            }
        }
        for (key, url) in [
            ("alerts.webhook_url", &self.alerts.webhook_url),
            ("alerts.slack_url", &self.alerts.slack_url),
            ("alerts.alertmanager_url", &self.alerts.alertmanager_url),
        ] {
            if let Some(u) = url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return Err(bad(key, "an http:// or https:// URL".into()));
                }
            }
        }
        if self.alerts.webhook_url.is_some() && self.alerts.webhook_secret_file.is_none() {
            return Err(bad(
                "alerts.webhook_secret_file",
                "a webhook needs a secret to sign with".into(),
            ));
        }
        Ok(())
    }

    /// The monitor's interval.
    pub fn interval(&self) -> Duration {
        parse_duration(&self.monitor.interval).unwrap_or(Duration::from_secs(30))
    }

    /// The monitor's lease.
    pub fn lease(&self) -> Duration {
        parse_duration(&self.monitor.lease).unwrap_or(Duration::from_secs(5))
    }

    /// How long a removed pool drains.
    pub fn drain(&self) -> Duration {
        parse_duration(&self.monitor.drain).unwrap_or(Duration::from_secs(10))
    }

    /// The commented sample `--print-sample-config` prints.
    pub fn sample() -> &'static str {
        include_str!("sample.toml")
    }
}

/// The API's tokens: `(name, token)`.
pub fn read_tokens(path: &Path) -> Result<Vec<(String, String)>, ServeError> {
    let text = std::fs::read_to_string(path).map_err(|e| ServeError::Config {
        field: "api.token_file".into(),
        why: format!("{}: {e}", path.display()),
    })?;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, token) = match line.split_once(char::is_whitespace) {
            Some((n, t)) => (n.trim().to_owned(), t.trim().to_owned()),
            None => ("api".to_owned(), line.to_owned()),
        };
        if token.len() < 16 {
            return Err(ServeError::Config {
                field: "api.token_file".into(),
                why: format!("the token named {name:?} is shorter than 16 characters"),
            });
        }
        out.push((name, token));
    }
    if out.is_empty() {
        return Err(ServeError::Config {
            field: "api.token_file".into(),
            why: format!("{} holds no token", path.display()),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_sample_parses_and_checks() {
        let c: ServeConfig = toml::from_str(ServeConfig::sample()).unwrap();
        c.check().unwrap();
        assert_eq!(c.loadbalancers[0].id, "checkout");
        assert_eq!(c.interval(), Duration::from_secs(30));
    }
}

//! The capture configuration file (`--config FILE`, TOML): what the capture keeps and how it
//! treats secrets. How the process runs (paths, interface, limits) stays in flags.
//!
//! Flags given on the command line win over the file; list values (`--match-host` …) are
//! added to the file's.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A sample configuration, printed by `shadowtap capture --print-sample-config`.
pub const SAMPLE: &str = r#"# shadowtap capture configuration (shadowtap capture --config FILE).
# Every section and key is optional. Flags given on the command line win.

[sample]
# Share of exchanges kept: "25", "25%" or "2.5%". Deterministic.
percent = "100%"
# What is kept or dropped together: "exchange", "connection" or "client".
by = "exchange"

[match]
# All criteria given must match; several values of one are alternatives.
header = ["X-Shadow-Test: true"]
cookie = []
# user_agent = "^Mozilla/"
# path = "^/api/"
host = []
geo = []
# geo_file = "/etc/shadowtap/geo.txt"   # lines of "CIDR COUNTRY"

[redact]
# Redaction is on unless enabled = false. Authorization, Proxy-Authorization, Cookie and
# Set-Cookie are always redacted; names adds headers and JSON body fields.
enabled = true
names = ["X-Api-Key", "password"]
# key_file = "/etc/shadowtap/redact.key"
"#;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Sampling.
    #[serde(default)]
    pub sample: SampleConfig,
    /// Match criteria.
    #[serde(default, rename = "match")]
    pub criteria: MatchConfig,
    /// Redaction.
    #[serde(default)]
    pub redact: RedactConfig,
}

/// `[sample]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SampleConfig {
    /// Share kept, as `--sample` takes it.
    pub percent: Option<String>,
    /// `exchange`, `connection` or `client`.
    pub by: Option<String>,
}

/// `[match]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// `Name: value` or `Name`.
    #[serde(default)]
    pub header: Vec<String>,
    /// `NAME` or `NAME=VALUE`.
    #[serde(default)]
    pub cookie: Vec<String>,
    /// Regex on User-Agent.
    pub user_agent: Option<String>,
    /// Regex on the path.
    pub path: Option<String>,
    /// Hosts.
    #[serde(default)]
    pub host: Vec<String>,
    /// Country codes.
    #[serde(default)]
    pub geo: Vec<String>,
    /// CIDR → country file (relative paths are relative to the config file).
    pub geo_file: Option<PathBuf>,
}

/// `[redact]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedactConfig {
    /// False turns redaction off (as `--no-redact`).
    #[serde(default = "yes")]
    pub enabled: bool,
    /// More headers and JSON fields to redact.
    #[serde(default)]
    pub names: Vec<String>,
    /// HMAC key file (relative paths are relative to the config file).
    pub key_file: Option<PathBuf>,
}

fn yes() -> bool {
    true
}

impl Default for RedactConfig {
    fn default() -> Self {
        RedactConfig {
            enabled: true,
            names: Vec::new(),
            key_file: None,
        }
    }
}

impl CaptureConfig {
    /// Reads and checks `path`; relative paths inside are resolved against its directory.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        let mut cfg: CaptureConfig = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [&mut cfg.criteria.geo_file, &mut cfg.redact.key_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_config_parses() {
        let cfg: CaptureConfig = toml::from_str(SAMPLE).unwrap();
        assert_eq!(cfg.sample.percent.as_deref(), Some("100%"));
        assert_eq!(cfg.criteria.header, vec!["X-Shadow-Test: true"]);
        assert!(cfg.redact.enabled);
        assert_eq!(cfg.redact.names.len(), 2);
    }

    #[test]
    fn unknown_keys_are_errors() {
        assert!(toml::from_str::<CaptureConfig>("[match]\nhots = [\"x\"]\n").is_err());
        assert!(toml::from_str::<CaptureConfig>("[smaple]\n").is_err());
        let empty: CaptureConfig = toml::from_str("").unwrap();
        assert!(empty.redact.enabled, "redaction stays on by default");
    }
}

//! The AWS shared profile files: what `aws configure` writes and every AWS tool reads.
//!
//! `object_store` reads credentials from the environment only; users of the AWS CLI keep them
//! in `~/.aws/credentials` (`[NAME]` sections) and their region and endpoint in
//! `~/.aws/config` (`[default]`, `[profile NAME]`). The profile is `AWS_PROFILE` (or
//! `default`); the files are `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` when set.
//! The environment always wins over a profile.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// The settings of one profile, as `object_store` configuration keys (`aws_access_key_id`,
/// `aws_secret_access_key`, `aws_session_token`, `aws_region`, `aws_endpoint`).
pub fn settings() -> BTreeMap<String, String> {
    let profile = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let file = |var: &str, name: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)))
    };
    let read = |p: Option<PathBuf>| p.and_then(|p| std::fs::read_to_string(p).ok());
    merge(
        &profile,
        read(file("AWS_SHARED_CREDENTIALS_FILE", "credentials")).as_deref(),
        read(file("AWS_CONFIG_FILE", "config")).as_deref(),
    )
}

/// The settings of `profile` from the texts of the credentials and config files.
pub fn merge(
    profile: &str,
    credentials: Option<&str>,
    config: Option<&str>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let keys = [
        ("aws_access_key_id", "aws_access_key_id"),
        ("aws_secret_access_key", "aws_secret_access_key"),
        ("aws_session_token", "aws_session_token"),
        ("region", "aws_region"),
        ("endpoint_url", "aws_endpoint"),
    ];
    // The config file names sections `[profile NAME]`, except `[default]`.
    let config_section = if profile == "default" {
        "default".to_owned()
    } else {
        format!("profile {profile}")
    };
    for (text, section) in [(config, config_section.as_str()), (credentials, profile)] {
        let Some(text) = text else { continue };
        for (k, v) in section_of(text, section) {
            if let Some((_, ours)) = keys.iter().find(|(theirs, _)| *theirs == k) {
                out.insert((*ours).to_owned(), v);
            }
        }
    }
    out
}

/// `key = value` lines of `[section]` in an INI text (comments `#` and `;`).
fn section_of(text: &str, section: &str) -> Vec<(String, String)> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
            continue;
        }
        if inside {
            if let Some((k, v)) = line.split_once('=') {
                out.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const CREDENTIALS: &str = "[default]\naws_access_key_id = AKDEF\naws_secret_access_key = sdef\n\n[ci]\n# the CI user\naws_access_key_id=AKCI\naws_secret_access_key = sci\naws_session_token = tok\n";
    const CONFIG: &str = "[default]\nregion = eu-west-1\n\n[profile ci]\nregion = us-east-2\nendpoint_url = http://127.0.0.1:9000\noutput = json\n";

    #[test]
    fn a_named_profile_takes_its_own_sections() {
        let s = merge("ci", Some(CREDENTIALS), Some(CONFIG));
        assert_eq!(s["aws_access_key_id"], "AKCI");
        assert_eq!(s["aws_secret_access_key"], "sci");
        assert_eq!(s["aws_session_token"], "tok");
        assert_eq!(s["aws_region"], "us-east-2");
        assert_eq!(s["aws_endpoint"], "http://127.0.0.1:9000");
        assert!(!s.contains_key("output"));
    }

    #[test]
    fn the_default_profile_and_missing_files() {
        let s = merge("default", Some(CREDENTIALS), Some(CONFIG));
        assert_eq!(s["aws_access_key_id"], "AKDEF");
        assert_eq!(s["aws_region"], "eu-west-1");
        assert!(!s.contains_key("aws_session_token"));
        assert!(merge("nope", Some(CREDENTIALS), None).is_empty());
        assert!(merge("default", None, None).is_empty());
    }
}

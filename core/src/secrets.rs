//! Where secrets live: the header, parameter and JSON key names that hold credentials, and
//! the rule that matches a name against them (case-insensitive, `-` and `_` ignored).
//!
//! Capture redacts by these names before anything is written; the analyzer masks example
//! values of fields with these names in its reports; one list, so the two agree.

/// Header names always redacted.
pub const DEFAULT_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-access-token",
    "x-refresh-token",
    "x-id-token",
    "x-amz-security-token",
    "x-csrf-token",
    "x-xsrf-token",
    "x-goog-api-key",
    "private-token",
    "x-vault-token",
    "x-session-token",
];

/// A header whose name holds one of these is redacted too (`X-Upstream-Token`,
/// `X-Client-Secret`, `X-Session-Id`).
pub const HEADER_NAME_PARTS: &[&str] = &[
    "token",
    "secret",
    "passw",
    "apikey",
    "credential",
    "session",
    "cookie",
];

/// Query, fragment, form and multipart parameter names always redacted.
pub const DEFAULT_PARAMS: &[&str] = &[
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "key",
    "password",
    "passwd",
    "secret",
    "client_secret",
    "signature",
    "sig",
    "code",
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
];

/// A parameter whose name holds one of these is redacted too (`oauth_token`,
/// `user_password`, `X-Goog-Signature`).
pub const PARAM_NAME_PARTS: &[&str] = &[
    "token",
    "secret",
    "passw",
    "apikey",
    "credential",
    "signature",
];

/// JSON object keys always redacted (narrower than parameters: `key` and `code` are ordinary
/// response fields, and `prompt_tokens` a count worth diffing).
pub const DEFAULT_JSON_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "client_secret",
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "auth_token",
    "session_token",
    "api_key",
    "apikey",
    "private_key",
];

/// A JSON key holding one of these is redacted too (`newPassword`, `aws_secret_access_key`).
pub const JSON_KEY_PARTS: &[&str] = &["passw", "secret", "credential"];

/// Headers whose values are URLs: their query and fragment parameters are redacted.
pub const URL_HEADERS: &[&str] = &["location", "content-location", "referer"];

/// `name` lower-cased, `-` and `_` dropped: the form every comparison uses.
pub fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| *c != '-' && *c != '_')
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A set of names: exact (normalised) names, and parts a name may hold.
#[derive(Debug, Clone)]
pub struct Names {
    exact: Vec<String>,
    parts: &'static [&'static str],
}

impl Names {
    /// `defaults` and `extra` as exact names, `parts` as parts a name may hold.
    pub fn new(defaults: &[&str], extra: &[String], parts: &'static [&'static str]) -> Self {
        let mut exact: Vec<String> = defaults.iter().map(|n| normalise(n)).collect();
        exact.extend(extra.iter().map(|n| normalise(n)));
        exact.sort_unstable();
        exact.dedup();
        Names { exact, parts }
    }

    /// Whether `name` is one of these.
    pub fn matches(&self, name: &str) -> bool {
        let n = normalise(name);
        !n.is_empty()
            && (self.exact.binary_search(&n).is_ok() || self.parts.iter().any(|p| n.contains(p)))
    }
}

impl Names {
    /// The exact names, normalised.
    pub fn exact(&self) -> &[String] {
        &self.exact
    }

    /// The default header names.
    pub fn headers(extra: &[String]) -> Self {
        Names::new(DEFAULT_HEADERS, extra, HEADER_NAME_PARTS)
    }

    /// The default parameter names (query, fragment, form, multipart).
    pub fn params(extra: &[String]) -> Self {
        Names::new(DEFAULT_PARAMS, extra, PARAM_NAME_PARTS)
    }

    /// The default JSON keys.
    pub fn json_keys(extra: &[String]) -> Self {
        Names::new(DEFAULT_JSON_KEYS, extra, JSON_KEY_PARTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_whatever_the_case_and_separators() {
        let h = Names::headers(&["X-Internal".into()]);
        for n in [
            "Authorization",
            "x_api_key",
            "X-UPSTREAM-TOKEN",
            "x-internal",
            "Cookie2",
        ] {
            assert!(h.matches(n), "{n}");
        }
        assert!(!h.matches("Content-Type") && !h.matches(""));
        let j = Names::json_keys(&[]);
        assert!(j.matches("accessToken") && j.matches("newPassword"));
        assert!(!j.matches("prompt_tokens") && !j.matches("code"));
    }
}

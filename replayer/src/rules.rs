//! Declarative mutation rules from a TOML file (`--rules FILE`), the first hook in the chain.
//!
//! ```toml
//! [[request]]                                   # applied in file order to every request
//! when = { path = "^/api/", methods = ["GET"] } # optional: path regex, methods, header present
//! set_headers = { "X-Env" = "shadow" }
//! remove_headers = ["Cookie"]
//! rename_headers = { "X-Old" = "X-New" }
//! host = "staging.internal"                     # the Host header sent, or a regex rewrite:
//!                                               # host = { from = "^(.*)\\.prod\\.", to = "$1.staging." }
//! path = { from = "^/v1/", to = "/v2/" }        # regex replace on the path ($1 works)
//! set_query = { debug = "1" }
//! remove_query = ["token"]
//! set_json = { "/user/tier" = "gold" }          # JSON pointer = any TOML value
//! remove_json = ["/password"]
//! delay = "50ms"                                # wait before sending
//! drop_percent = 5.0                            # drop this share (deterministic per exchange)
//!
//! [[response]]                                  # applied to each target's response before it is recorded
//! remove_headers = ["Date"]
//! remove_json = ["/generated_at"]
//! ```

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;
use shadowtap_core::id::sample_bucket;
use shadowtap_core::units::parse_duration;

use crate::request::{header, remove_header, set_header, OutgoingRequest, ReceivedResponse};

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RulesFile {
    #[serde(default)]
    request: Vec<RequestRuleSpec>,
    #[serde(default)]
    response: Vec<ResponseRuleSpec>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WhenSpec {
    path: Option<String>,
    #[serde(default)]
    methods: Vec<String>,
    header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PathRewrite {
    from: String,
    to: String,
}

/// `host = "name"` sets the Host header; `host = { from = "regex", to = "…" }` rewrites it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum HostSpec {
    Set(String),
    Rewrite(PathRewrite),
}

#[derive(Debug)]
enum HostRule {
    Set(String),
    Rewrite(Regex, String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestRuleSpec {
    #[serde(default)]
    when: WhenSpec,
    #[serde(default)]
    set_headers: BTreeMap<String, String>,
    #[serde(default)]
    remove_headers: Vec<String>,
    #[serde(default)]
    rename_headers: BTreeMap<String, String>,
    host: Option<HostSpec>,
    path: Option<PathRewrite>,
    #[serde(default)]
    set_query: BTreeMap<String, String>,
    #[serde(default)]
    remove_query: Vec<String>,
    #[serde(default)]
    set_json: BTreeMap<String, toml::Value>,
    #[serde(default)]
    remove_json: Vec<String>,
    delay: Option<String>,
    drop_percent: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResponseRuleSpec {
    #[serde(default)]
    when: WhenSpec,
    #[serde(default)]
    set_headers: BTreeMap<String, String>,
    #[serde(default)]
    remove_headers: Vec<String>,
    #[serde(default)]
    set_json: BTreeMap<String, toml::Value>,
    #[serde(default)]
    remove_json: Vec<String>,
}

#[derive(Debug)]
struct When {
    path: Option<Regex>,
    methods: Vec<String>,
    header: Option<String>,
}

impl When {
    fn new(w: WhenSpec, at: &str) -> Result<Self, String> {
        Ok(When {
            path: w
                .path
                .map(|p| Regex::new(&p).map_err(|e| format!("{at}.when.path: {e}")))
                .transpose()?,
            methods: w
                .methods
                .into_iter()
                .map(|m| m.to_ascii_uppercase())
                .collect(),
            header: w.header,
        })
    }

    fn matches(&self, req: &OutgoingRequest) -> bool {
        self.path.as_ref().is_none_or(|re| re.is_match(&req.path))
            && (self.methods.is_empty()
                || self
                    .methods
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&req.method)))
            && self.header.as_ref().is_none_or(|h| req.header(h).is_some())
    }
}

#[derive(Debug)]
struct RequestRule {
    when: When,
    set_headers: Vec<(String, String)>,
    remove_headers: Vec<String>,
    rename_headers: Vec<(String, String)>,
    host: Option<HostRule>,
    path: Option<(Regex, String)>,
    set_query: Vec<(String, String)>,
    remove_query: Vec<String>,
    set_json: Vec<(String, serde_json::Value)>,
    remove_json: Vec<String>,
    delay: Option<Duration>,
    /// Basis points.
    drop: Option<u32>,
    index: usize,
}

#[derive(Debug)]
struct ResponseRule {
    when: When,
    set_headers: Vec<(String, String)>,
    remove_headers: Vec<String>,
    set_json: Vec<(String, serde_json::Value)>,
    remove_json: Vec<String>,
}

/// Compiled rules.
#[derive(Debug, Default)]
pub struct Rules {
    request: Vec<RequestRule>,
    response: Vec<ResponseRule>,
}

/// What the request rules decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleOutcome {
    /// Send (possibly changed).
    Send,
    /// Drop on purpose (`drop_percent`); the string says which rule.
    Drop(String),
}

fn json_value(v: toml::Value) -> Result<serde_json::Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

fn pointer_check(p: &str, at: &str) -> Result<(), String> {
    if p.is_empty() || !p.starts_with('/') {
        return Err(format!(
            "{at}: {p:?} is not a JSON pointer (it starts with /, e.g. /user/id)"
        ));
    }
    Ok(())
}

impl Rules {
    /// Loads and compiles a rules file.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        Self::parse(&text)
    }

    /// Compiles rules from TOML text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: RulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut rules = Rules::default();
        for (i, r) in file.request.into_iter().enumerate() {
            let at = format!("request[{i}]");
            for p in r.set_json.keys().chain(&r.remove_json) {
                pointer_check(p, &at)?;
            }
            let drop = match r.drop_percent {
                None => None,
                Some(p) if (0.0..=100.0).contains(&p) => Some((p * 100.0).round() as u32),
                Some(p) => return Err(format!("{at}.drop_percent: {p} is outside 0..100")),
            };
            rules.request.push(RequestRule {
                when: When::new(r.when, &at)?,
                set_headers: r.set_headers.into_iter().collect(),
                remove_headers: r.remove_headers,
                rename_headers: r.rename_headers.into_iter().collect(),
                host: match r.host {
                    None => None,
                    Some(HostSpec::Set(h)) => Some(HostRule::Set(h)),
                    Some(HostSpec::Rewrite(w)) => Some(HostRule::Rewrite(
                        Regex::new(&w.from).map_err(|e| format!("{at}.host.from: {e}"))?,
                        w.to,
                    )),
                },
                path: r
                    .path
                    .map(|p| {
                        Regex::new(&p.from)
                            .map(|re| (re, p.to))
                            .map_err(|e| format!("{at}.path.from: {e}"))
                    })
                    .transpose()?,
                set_query: r.set_query.into_iter().collect(),
                remove_query: r.remove_query,
                set_json: r
                    .set_json
                    .into_iter()
                    .map(|(k, v)| json_value(v).map(|v| (k, v)))
                    .collect::<Result<_, _>>()?,
                remove_json: r.remove_json,
                delay: r
                    .delay
                    .map(|d| parse_duration(&d).map_err(|e| format!("{at}.delay: {e}")))
                    .transpose()?,
                drop,
                index: i,
            });
        }
        for (i, r) in file.response.into_iter().enumerate() {
            let at = format!("response[{i}]");
            for p in r.set_json.keys().chain(&r.remove_json) {
                pointer_check(p, &at)?;
            }
            rules.response.push(ResponseRule {
                when: When::new(r.when, &at)?,
                set_headers: r.set_headers.into_iter().collect(),
                remove_headers: r.remove_headers,
                set_json: r
                    .set_json
                    .into_iter()
                    .map(|(k, v)| json_value(v).map(|v| (k, v)))
                    .collect::<Result<_, _>>()?,
                remove_json: r.remove_json,
            });
        }
        Ok(rules)
    }

    /// True when there are response rules.
    pub fn has_response_rules(&self) -> bool {
        !self.response.is_empty()
    }

    /// Applies the request rules in order.
    pub fn apply_request(&self, req: &mut OutgoingRequest) -> RuleOutcome {
        for r in &self.request {
            if !r.when.matches(req) {
                continue;
            }
            if let Some(bp) = r.drop {
                let key = format!("{}|drop|{}", req.exchange_id, r.index);
                if sample_bucket(key.as_bytes()) < bp {
                    return RuleOutcome::Drop(format!(
                        "dropped by request rule {} (drop_percent)",
                        r.index
                    ));
                }
            }
            for (from, to) in &r.rename_headers {
                for h in req
                    .headers
                    .iter_mut()
                    .filter(|h| h.name.eq_ignore_ascii_case(from))
                {
                    h.name = to.as_str().into();
                }
            }
            for name in &r.remove_headers {
                remove_header(&mut req.headers, name);
            }
            for (name, value) in &r.set_headers {
                set_header(&mut req.headers, name, value);
            }
            match &r.host {
                Some(HostRule::Set(host)) => set_header(&mut req.headers, "Host", host),
                Some(HostRule::Rewrite(re, to)) => {
                    if let Some(h) = req.header("host").map(str::to_owned) {
                        set_header(&mut req.headers, "Host", &re.replace_all(&h, to.as_str()));
                    }
                }
                None => {}
            }
            if let Some((re, to)) = &r.path {
                req.path = re.replace_all(&req.path, to.as_str()).as_ref().into();
                if !req.path.starts_with('/') {
                    req.path.insert(0, '/');
                }
            }
            if !r.set_query.is_empty() || !r.remove_query.is_empty() {
                req.query =
                    edit_query(req.query.as_deref(), &r.set_query, &r.remove_query).map(Into::into);
            }
            if !r.set_json.is_empty() || !r.remove_json.is_empty() {
                if let Some(body) = edit_json(&req.body, &r.set_json, &r.remove_json) {
                    req.body = body;
                }
            }
            if let Some(d) = r.delay {
                req.delay += d;
            }
        }
        RuleOutcome::Send
    }

    /// Applies the response rules in order (the request is the one that was sent).
    pub fn apply_response(&self, req: &OutgoingRequest, resp: &mut ReceivedResponse) {
        for r in &self.response {
            if !r.when.matches(req) {
                continue;
            }
            for name in &r.remove_headers {
                remove_header(&mut resp.headers, name);
            }
            for (name, value) in &r.set_headers {
                set_header(&mut resp.headers, name, value);
            }
            if (!r.set_json.is_empty() || !r.remove_json.is_empty())
                && header(&resp.headers, "content-type").is_none_or(|c| c.contains("json"))
            {
                if let Some(body) = edit_json(&resp.body, &r.set_json, &r.remove_json) {
                    resp.body = body;
                }
            }
        }
    }
}

/// Sets and removes query parameters, keeping the others as they were (encoding included).
fn edit_query(query: Option<&str>, set: &[(String, String)], remove: &[String]) -> Option<String> {
    let mut pairs: Vec<(String, Option<String>)> = query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (p.to_owned(), None),
        })
        .collect();
    pairs.retain(|(k, _)| !remove.contains(k));
    for (k, v) in set {
        match pairs.iter().position(|(pk, _)| pk == k) {
            Some(i) => {
                pairs[i].1 = Some(v.clone());
                let mut seen = false;
                pairs.retain(|(pk, _)| {
                    let dup = pk == k && seen;
                    seen |= pk == k;
                    !dup
                });
            }
            None => pairs.push((k.clone(), Some(v.clone()))),
        }
    }
    if pairs.is_empty() {
        return None;
    }
    Some(
        pairs
            .into_iter()
            .map(|(k, v)| match v {
                Some(v) => format!("{k}={v}"),
                None => k,
            })
            .collect::<Vec<_>>()
            .join("&"),
    )
}

/// Applies JSON pointer edits to a JSON body; `None` when the body is not JSON (left alone).
pub(crate) fn edit_json(
    body: &[u8],
    set: &[(String, serde_json::Value)],
    remove: &[String],
) -> Option<Vec<u8>> {
    let mut doc: serde_json::Value = serde_json::from_slice(body).ok()?;
    for p in remove {
        remove_pointer(&mut doc, p);
    }
    for (p, v) in set {
        set_pointer(&mut doc, p, v.clone());
    }
    serde_json::to_vec(&doc).ok()
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn remove_pointer(doc: &mut serde_json::Value, pointer: &str) {
    let Some((parent, last)) = pointer.rsplit_once('/') else {
        return;
    };
    let last = unescape(last);
    let target = if parent.is_empty() {
        Some(doc)
    } else {
        doc.pointer_mut(parent)
    };
    match target {
        Some(serde_json::Value::Object(m)) => {
            m.shift_remove(&last);
        }
        Some(serde_json::Value::Array(a)) => {
            if let Ok(i) = last.parse::<usize>() {
                if i < a.len() {
                    a.remove(i);
                }
            }
        }
        _ => {}
    }
}

/// Sets the value at `pointer`, creating missing objects on the way.
fn set_pointer(doc: &mut serde_json::Value, pointer: &str, value: serde_json::Value) {
    let mut cur = doc;
    let tokens: Vec<String> = pointer.split('/').skip(1).map(unescape).collect();
    for (i, t) in tokens.iter().enumerate() {
        let last = i + 1 == tokens.len();
        if cur.is_null() {
            *cur = serde_json::Value::Object(Default::default());
        }
        cur = match cur {
            serde_json::Value::Object(m) => {
                if last {
                    m.insert(t.clone(), value);
                    return;
                }
                m.entry(t.clone()).or_insert(serde_json::Value::Null)
            }
            serde_json::Value::Array(a) => {
                let Ok(idx) = t.parse::<usize>() else { return };
                if idx >= a.len() {
                    return;
                }
                if last {
                    a[idx] = value;
                    return;
                }
                &mut a[idx]
            }
            _ => return,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shadowtap_core::Header;

    fn req() -> OutgoingRequest {
        OutgoingRequest {
            exchange_id: "e1".into(),
            method: "POST".into(),
            path: "/v1/users/7".into(),
            query: Some("a=1&token=s3cret&b=%20x".into()),
            headers: vec![
                Header {
                    name: "Host".into(),
                    value: "prod".into(),
                },
                Header {
                    name: "Cookie".into(),
                    value: "sid=1".into(),
                },
                Header {
                    name: "X-Old".into(),
                    value: "v".into(),
                },
            ],
            body: br#"{"user":{"id":7,"password":"pw"},"n":1}"#.to_vec(),
            delay: Duration::ZERO,
        }
    }

    #[test]
    fn every_request_edit() {
        let rules = Rules::parse(
            r#"
            [[request]]
            when = { path = "^/v1/", methods = ["post"] }
            set_headers = { "X-Env" = "shadow" }
            remove_headers = ["cookie"]
            rename_headers = { "X-Old" = "X-New" }
            host = "staging"
            path = { from = "^/v1/(.*)$", to = "/v2/$1" }
            set_query = { debug = "1", a = "2" }
            remove_query = ["token"]
            set_json = { "/user/tier" = "gold", "/meta/src" = "replay" }
            remove_json = ["/user/password"]
            delay = "20ms"

            [[request]]
            when = { path = "^/nothing" }
            set_headers = { "X-Never" = "1" }
            "#,
        )
        .unwrap();
        let mut r = req();
        assert_eq!(rules.apply_request(&mut r), RuleOutcome::Send);
        assert_eq!(r.header("x-env"), Some("shadow"));
        assert_eq!(r.header("cookie"), None);
        assert_eq!(r.header("X-New"), Some("v"));
        assert_eq!(r.header("host"), Some("staging"));
        assert_eq!(r.header("x-never"), None);
        assert_eq!(r.path, "/v2/users/7");
        assert_eq!(r.query.as_deref(), Some("a=2&b=%20x&debug=1"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"user": {"id": 7, "tier": "gold"}, "n": 1, "meta": {"src": "replay"}})
        );
        assert_eq!(r.delay, Duration::from_millis(20));
    }

    #[test]
    fn host_rewrite_by_regex() {
        let rules =
            Rules::parse("[[request]]\nhost = { from = '^prod', to = 'staging' }\n").unwrap();
        let mut r = req();
        rules.apply_request(&mut r);
        assert_eq!(r.header("host"), Some("staging"));
    }

    #[test]
    fn drop_percent_is_deterministic_and_near_its_share() {
        let rules = Rules::parse("[[request]]\ndrop_percent = 10.0\n").unwrap();
        let dropped = |id: usize| {
            let mut r = req();
            r.exchange_id = format!("e{id}");
            rules.apply_request(&mut r) != RuleOutcome::Send
        };
        let n = (0..10_000).filter(|&i| dropped(i)).count();
        assert!((850..1150).contains(&n), "{n}");
        assert!((0..100).all(|i| dropped(i) == dropped(i)));
    }

    #[test]
    fn response_rules_normalise_json_and_headers() {
        let rules =
            Rules::parse("[[response]]\nremove_headers = [\"Date\"]\nremove_json = [\"/ts\"]\n")
                .unwrap();
        let mut resp = ReceivedResponse {
            status: 200,
            headers: vec![
                Header {
                    name: "date".into(),
                    value: "now".into(),
                },
                Header {
                    name: "Content-Type".into(),
                    value: "application/json".into(),
                },
            ],
            body: br#"{"ts":123,"v":1}"#.to_vec(),
        };
        rules.apply_response(&req(), &mut resp);
        assert_eq!(resp.headers.len(), 1);
        assert_eq!(resp.body, br#"{"v":1}"#);
    }

    #[test]
    fn bad_rules_say_where() {
        assert!(Rules::parse("[[request]]\nbogus = 1\n")
            .unwrap_err()
            .contains("bogus"));
        assert!(Rules::parse("[[request]]\nremove_json = [\"user\"]\n")
            .unwrap_err()
            .contains("JSON pointer"));
        assert!(Rules::parse("[[request]]\ndelay = \"soon\"\n")
            .unwrap_err()
            .contains("request[0].delay"));
        assert!(Rules::parse("[[request]]\nwhen = { path = \"(\" }\n")
            .unwrap_err()
            .contains("request[0].when.path"));
    }
}

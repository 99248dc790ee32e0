//! The shadow phase judged on what the versions answer, not only how: each mirrored pair's
//! bodies (production's and the shadow's answer to the same request) are compared with the
//! verdict engine's differ (`shadowtap_analyzer::diff`: JSON field by field, text by masked
//! lines), per endpoint and field. Pure: pairs in, a judgement out.
//!
//! What is noise. A field that differs between two of production's own answers to the same
//! request (the same method and target seen again in the window) is noisy: its rate of
//! differing there is the rate the shadow is allowed. Values that differ only in volatile
//! tokens (timestamps, UUIDs, ids, nonces: [`mask_volatile`]) never count. Everything else must
//! agree up to `tolerance` (the share of pairs a field may differ in by chance, 1% by default).
//!
//! The test. For each endpoint and field that differs somewhere, the exact binomial tail of
//! its count of differing pairs under the allowed rate; a field deviates when that is below
//! the look's level (the live gate's alpha spent over the rollout's looks) divided by the
//! number of fields tested (Bonferroni): the false-alarm rate over every field and every look
//! of the shadow phase stays under alpha. Pairs whose statuses differ are the paired gate's
//! (McNemar) and are not compared here.

use std::collections::BTreeMap;

use serde::Serialize;
use shadowtap_analyzer::diff::{
    compare, field_pattern, mask_volatile, DiffKind, DiffOptions, Side,
};
use shadowtap_proxy::pairs::{Answer, BodyPair};

/// A field that differs between production and the shadow more than chance allows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FieldDeviation {
    /// `GET /api/users/{id}`.
    pub endpoint: String,
    /// A JSON pointer (array indices as `*`), `body` or `body:hunk:…` for text.
    pub field: String,
    /// `value_changed`, `field_missing`, …
    pub kind: String,
    /// Pairs of the endpoint where the field differs.
    pub differing: u64,
    /// Pairs of the endpoint compared.
    pub pairs: u64,
    /// The rate of differing allowed (production's own, or the tolerance).
    pub allowed_rate: f64,
    /// The binomial tail of `differing` under the allowed rate.
    pub p_value: f64,
    /// An example: the request's path (no query: it may hold secrets).
    pub example_path: String,
    /// Production's value there (shortened; withheld for fields whose name suggests a secret).
    pub production: Option<String>,
    /// The shadow's.
    pub shadow: Option<String>,
}

/// The judgement of one window's pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BodyJudgement {
    /// Pairs whose bodies were compared (same status on both sides).
    pub compared: u64,
    /// Of them, pairs with any difference left after volatile tokens.
    pub differing: u64,
    /// Endpoints seen.
    pub endpoints: usize,
    /// (endpoint, field) tested.
    pub fields_tested: usize,
    /// Fields found noisy in production's own repeats.
    pub noisy_fields: usize,
    /// The level each field was tested at.
    pub level: f64,
    /// The deviations, most significant first.
    pub deviations: Vec<FieldDeviation>,
}

impl BodyJudgement {
    /// One line for people: the first deviation with its example.
    pub fn summary(&self) -> Option<String> {
        let d = self.deviations.first()?;
        let values = match (&d.production, &d.shadow) {
            (Some(p), Some(s)) => format!(" (production {p}, shadow {s})"),
            (Some(p), None) => format!(" (production {p}, missing in the shadow)"),
            (None, Some(s)) => format!(" (only in the shadow: {s})"),
            (None, None) => String::new(),
        };
        let more = match self.deviations.len() {
            1 => String::new(),
            n => format!("; {} more field(s)", n - 1),
        };
        Some(format!(
            "{} {}: {} on {} of {} mirrored pairs{values}, e.g. {}{more}",
            d.endpoint, d.field, d.kind, d.differing, d.pairs, d.example_path
        ))
    }
}

/// The endpoint of a request: its method and path, with segments that are ids (numbers,
/// UUIDs, long hex) as `{id}`.
pub fn endpoint(method: &str, path: &str) -> String {
    let templated: Vec<&str> = path
        .split('/')
        .map(|seg| {
            let digits = !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit());
            let uuid = seg.len() == 36 && seg.bytes().filter(|b| *b == b'-').count() == 4;
            let hex = seg.len() >= 16 && seg.bytes().all(|b| b.is_ascii_hexdigit());
            if digits || uuid || hex {
                "{id}"
            } else {
                seg
            }
        })
        .collect();
    format!("{method} {}", templated.join("/"))
}

/// The body with its content coding undone (as received when it cannot be).
fn decoded(a: &Answer) -> Vec<u8> {
    match a.content_encoding.as_deref() {
        Some(enc) if !enc.trim().is_empty() && !enc.eq_ignore_ascii_case("identity") => {
            shadowtap_http1::content::decode_body(enc, &a.body, 4 << 20)
                .ok()
                .flatten()
                .unwrap_or_else(|| a.body.clone())
        }
        _ => a.body.clone(),
    }
}

/// A field whose name suggests a secret: its values are never shown.
fn secret_field(field: &str) -> bool {
    let f = field.to_ascii_lowercase();
    [
        "token",
        "secret",
        "password",
        "passwd",
        "key",
        "auth",
        "session",
        "cookie",
        "card",
        "ssn",
        "credential",
    ]
    .iter()
    .any(|w| f.contains(w))
}

/// The differences between two answers that are not volatile tokens: (field pattern, kind,
/// left, right).
fn differences(
    a: &Answer,
    b: &Answer,
    opts: &DiffOptions,
) -> Vec<(String, DiffKind, Option<String>, Option<String>)> {
    let (x, y) = (decoded(a), decoded(b));
    let left = Side {
        status: a.status,
        headers: &[],
        body: &x,
        content_type: a.content_type.as_deref(),
    };
    let right = Side {
        status: b.status,
        headers: &[],
        body: &y,
        content_type: b.content_type.as_deref(),
    };
    let c = compare(&left, &right, opts);
    c.differences
        .into_iter()
        .filter(|d| d.field != "status" && !d.field.starts_with("header:"))
        .filter(|d| match (&d.left, &d.right, d.kind) {
            // A number is content (a price, a count): only text is masked.
            (Some(l), Some(r), DiffKind::ValueChanged | DiffKind::Text)
                if l.trim().parse::<f64>().is_err() && r.trim().parse::<f64>().is_err() =>
            {
                mask_volatile(l) != mask_volatile(r)
            }
            _ => true,
        })
        .map(|d| (field_pattern(&d.field), d.kind, d.left, d.right))
        .collect()
}

/// Judges one window's `pairs` at `level` (the look's alpha) with `tolerance` (the share of
/// pairs a field may differ in by chance).
pub fn judge(pairs: &[BodyPair], level: f64, tolerance: f64) -> BodyJudgement {
    let opts = DiffOptions {
        compare_headers: false,
        max_value_len: 120,
        max_differences: 200,
        ..DiffOptions::default()
    };
    // Per endpoint: pairs compared; per (endpoint, field): differing pairs and an example.
    type Example = (DiffKind, String, Option<String>, Option<String>);
    let mut per_endpoint: BTreeMap<String, u64> = BTreeMap::new();
    let mut per_field: BTreeMap<(String, String), (u64, Example)> = BTreeMap::new();
    let mut out = BodyJudgement::default();
    // Production's answers by request, for its own noise.
    let mut repeats: BTreeMap<(String, String), Vec<&Answer>> = BTreeMap::new();
    for p in pairs {
        if p.production.status.is_none() || p.production.status != p.shadow.status {
            continue;
        }
        if p.production.truncated || p.shadow.truncated {
            continue;
        }
        let ep = endpoint(&p.method, &p.path);
        out.compared += 1;
        *per_endpoint.entry(ep.clone()).or_default() += 1;
        repeats
            .entry((p.method.clone(), p.uri.clone()))
            .or_default()
            .push(&p.production);
        let diffs = differences(&p.production, &p.shadow, &opts);
        out.differing += u64::from(!diffs.is_empty());
        let mut seen = std::collections::BTreeSet::new();
        for (field, kind, l, r) in diffs {
            if !seen.insert(field.clone()) {
                continue;
            }
            let e = per_field
                .entry((ep.clone(), field))
                .or_insert_with(|| (0, (kind, p.path.clone(), l, r)));
            e.0 += 1;
        }
    }
    // Production against itself, on repeats of the same request.
    let mut noise: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut repeat_pairs: BTreeMap<String, u64> = BTreeMap::new();
    for ((method, uri), answers) in &repeats {
        let path = uri.split('?').next().unwrap_or(uri);
        let ep = endpoint(method, path);
        for w in answers.windows(2) {
            if w[0].status != w[1].status {
                continue;
            }
            *repeat_pairs.entry(ep.clone()).or_default() += 1;
            let mut seen = std::collections::BTreeSet::new();
            for (field, ..) in differences(w[0], w[1], &opts) {
                if seen.insert(field.clone()) {
                    *noise.entry((ep.clone(), field)).or_default() += 1;
                }
            }
        }
    }
    out.noisy_fields = noise.len();
    out.endpoints = per_endpoint.len();
    out.fields_tested = per_field.len();
    let m = per_field.len().max(1) as f64;
    out.level = level / m;
    for ((ep, field), (k, (kind, path, l, r))) in per_field {
        let n = per_endpoint[&ep];
        let allowed = match (
            noise.get(&(ep.clone(), field.clone())),
            repeat_pairs.get(&ep),
        ) {
            // Production's own rate (a half-count added: one repeat is weak evidence).
            (Some(&kn), Some(&nn)) => ((kn as f64 + 0.5) / (nn as f64 + 1.0)).max(tolerance),
            _ => tolerance,
        };
        let p = shadowtap_stats::binomial_sf(k, n, allowed);
        if p < out.level {
            let secret = secret_field(&field);
            let shown = |v: Option<String>| {
                if secret {
                    v.map(|_| "(withheld)".to_owned())
                } else {
                    v
                }
            };
            out.deviations.push(FieldDeviation {
                endpoint: ep,
                field,
                kind: kind.as_str().to_owned(),
                differing: k,
                pairs: n,
                allowed_rate: allowed,
                p_value: p,
                example_path: path,
                production: shown(l),
                shadow: shown(r),
            });
        }
    }
    out.deviations
        .sort_by(|a, b| a.p_value.total_cmp(&b.p_value).then(a.field.cmp(&b.field)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(body: &str) -> Answer {
        Answer {
            status: Some(200),
            content_type: Some("application/json".into()),
            body: body.as_bytes().to_vec(),
            ..Answer::default()
        }
    }

    fn pair(uri: &str, production: &str, shadow: &str) -> BodyPair {
        BodyPair {
            second: 0,
            method: "GET".into(),
            path: uri.split('?').next().unwrap().into(),
            uri: uri.into(),
            production: json(production),
            shadow: json(shadow),
        }
    }

    #[test]
    fn a_changed_field_on_one_endpoint_is_named_with_an_example() {
        let mut pairs = Vec::new();
        for i in 0..20 {
            let at = format!("2026-12-07T10:00:{:02}Z", i);
            pairs.push(pair(
                &format!("/api/users/{i}"),
                &format!(r#"{{"id":{i},"tier":"gold","at":"{at}"}}"#),
                &format!(
                    r#"{{"id":{i},"tier":"silver","at":"{}"}}"#,
                    at.replace(":00:", ":01:")
                ),
            ));
            pairs.push(pair("/health", r#"{"ok":true}"#, r#"{"ok":true}"#));
        }
        let j = judge(&pairs, 0.05, 0.01);
        assert_eq!(j.compared, 40);
        assert_eq!(j.deviations.len(), 1, "{j:?}");
        let d = &j.deviations[0];
        assert_eq!(
            (d.endpoint.as_str(), d.field.as_str()),
            ("GET /api/users/{id}", "/tier")
        );
        assert_eq!((d.differing, d.pairs), (20, 20));
        assert_eq!(d.production.as_deref(), Some("gold"));
        let s = j.summary().unwrap();
        assert!(s.contains("/tier") && s.contains("/api/users/0"), "{s}");
    }

    #[test]
    fn what_production_itself_varies_on_the_same_request_is_noise() {
        // A counter that changes between any two answers, production's included.
        let mut pairs = Vec::new();
        for i in 0..30 {
            pairs.push(pair(
                "/counter",
                &format!(r#"{{"hits":{}}}"#, 2 * i),
                &format!(r#"{{"hits":{}}}"#, 2 * i + 1),
            ));
        }
        let j = judge(&pairs, 0.05, 0.01);
        assert!(j.deviations.is_empty(), "{j:?}");
        assert_eq!(j.noisy_fields, 1);
    }

    #[test]
    fn rare_differences_within_the_tolerance_and_volatile_tokens_pass() {
        let mut pairs = Vec::new();
        for i in 0..200 {
            let shadow = if i == 7 { r#"{"v":2}"# } else { r#"{"v":1}"# };
            pairs.push(pair(&format!("/v?i={i}"), r#"{"v":1}"#, shadow));
            pairs.push(pair(
                &format!("/t/{i}"),
                r#"{"id":"6f1c2a9e-1b2c-4d5e-8f90-a1b2c3d4e5f6"}"#,
                r#"{"id":"0a1b2c3d-4e5f-4a6b-8c7d-e8f9a0b1c2d3"}"#,
            ));
        }
        let j = judge(&pairs, 0.05, 0.01);
        assert!(j.deviations.is_empty(), "{j:?}");
    }

    #[test]
    fn secrets_are_withheld_and_different_statuses_left_to_the_gate() {
        let mut pairs = Vec::new();
        for i in 0..10 {
            pairs.push(pair(
                &format!("/s/{i}"),
                r#"{"apiToken":"aaaa"}"#,
                r#"{"apiToken":"bbbb"}"#,
            ));
            let mut p = pair("/e", "{}", r#"{"x":1}"#);
            p.shadow.status = Some(500);
            pairs.push(p);
        }
        let j = judge(&pairs, 0.05, 0.01);
        assert_eq!(j.compared, 10);
        assert_eq!(j.deviations[0].production.as_deref(), Some("(withheld)"));
        assert!(!j.summary().unwrap().contains("aaaa"));
    }

    #[test]
    fn endpoints_template_ids() {
        assert_eq!(
            endpoint("GET", "/u/42/orders/6f1c2a9e-1b2c-4d5e-8f90-a1b2c3d4e5f6"),
            "GET /u/{id}/orders/{id}"
        );
        assert_eq!(endpoint("POST", "/v1/items"), "POST /v1/items");
    }
}

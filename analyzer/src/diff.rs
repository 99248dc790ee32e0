//! Comparing two responses to the same request: status, headers, body.
//!
//! JSON on both sides gives a structural diff: the JSON paths that differ, each typed (value
//! changed, field missing, field added, type changed, array length, order) with both values;
//! numbers within the policy's tolerance are equal; arrays are compared by position, or as
//! multisets where the policy says so. Other text is compared line by line after masking
//! volatile tokens (timestamps, UUIDs, long hex or base64 runs, numbers): each changed hunk of
//! the masked text is a difference of its own (`body:hunk:<key>`, keyed by the masked lines it
//! removes), besides one `body` difference for the whole text, so a hunk that always differs
//! (noise) does not hide one that differs only in the candidate. A unified diff excerpt of the
//! original text is kept. Binary bodies are compared by hash.
//!
//! Headers that describe the representation on the wire, not the content
//! ([`TRANSPORT_HEADERS`]: `Content-Encoding`, `Content-Length`, `Transfer-Encoding`, …) are
//! never compared: bodies compare decoded, so the same content with and without gzip is equal.
//! `Vary` is compared without its `Accept-Encoding` token.

use std::collections::BTreeMap;

pub mod headers;

use serde_json::Value;
use similar::TextDiff;

/// What kind of difference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DiffKind {
    /// Status codes differ.
    Status,
    /// A header's value differs, or it is on one side only.
    Header,
    /// A JSON value changed.
    ValueChanged,
    /// A JSON field is on the left (baseline) only.
    FieldMissing,
    /// A JSON field is on the right (candidate) only.
    FieldAdded,
    /// A JSON value changed type.
    TypeChanged,
    /// A JSON array changed length.
    ArrayLength,
    /// A JSON array holds the same elements in another order.
    Order,
    /// Text bodies differ.
    Text,
    /// Binary bodies differ (by hash).
    Binary,
    /// One side is JSON, the other is not.
    BodyFormat,
}

impl DiffKind {
    /// Column value.
    pub fn as_str(self) -> &'static str {
        match self {
            DiffKind::Status => "status",
            DiffKind::Header => "header",
            DiffKind::ValueChanged => "value_changed",
            DiffKind::FieldMissing => "field_missing",
            DiffKind::FieldAdded => "field_added",
            DiffKind::TypeChanged => "type_changed",
            DiffKind::ArrayLength => "array_length",
            DiffKind::Order => "order",
            DiffKind::Text => "text",
            DiffKind::Binary => "binary",
            DiffKind::BodyFormat => "body_format",
        }
    }
}

/// One difference between two responses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Difference {
    /// Where: `status`, `header:content-type`, `/user/name` (a JSON pointer), `body`.
    pub field: String,
    /// What kind.
    pub kind: DiffKind,
    /// Left value, shortened.
    pub left: Option<String>,
    /// Right value, shortened.
    pub right: Option<String>,
}

/// How to compare.
#[derive(Debug, Clone)]
pub struct DiffOptions {
    /// Header names (lower case) never compared.
    pub ignore_headers: Vec<String>,
    /// Also compare headers at all.
    pub compare_headers: bool,
    /// Numbers equal within this relative tolerance (0: exact).
    pub numeric_tolerance: f64,
    /// JSON paths (with `*` for any array index or field) whose arrays compare as multisets.
    pub unordered_arrays: Vec<String>,
    /// JSON paths never compared (a prefix match with `*` wildcards).
    pub ignore_fields: Vec<String>,
    /// Longest value kept in a difference.
    pub max_value_len: usize,
    /// Most differences kept per pair (the count is still exact).
    pub max_differences: usize,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions {
            ignore_headers: DEFAULT_IGNORED_HEADERS
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            compare_headers: true,
            numeric_tolerance: 0.0,
            unordered_arrays: Vec::new(),
            ignore_fields: Vec::new(),
            max_value_len: 200,
            max_differences: 50,
        }
    }
}

/// Headers that differ between any two servers or any two responses, never compared by default.
/// (`Set-Cookie`, `ETag` and `Last-Modified` are compared by what they mean instead: see
/// [`headers::meaning`].)
pub const DEFAULT_IGNORED_HEADERS: &[&str] = &[
    "date",
    "server",
    "x-request-id",
    "x-correlation-id",
    "x-amzn-requestid",
    "x-amz-request-id",
    "x-amzn-trace-id",
    "request-id",
    "traceparent",
    "tracestate",
    "expires",
    "age",
    "via",
    "x-cache",
    "cf-ray",
    "x-shadowtap-replay",
];

/// Representation and connection headers: how the bytes travelled, not what they say. Never
/// compared (bodies are compared with their content coding undone).
pub const TRANSPORT_HEADERS: &[&str] = &[
    "content-encoding",
    "content-length",
    "transfer-encoding",
    "accept-ranges",
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "alt-svc",
];

/// One side of a comparison.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    /// Status; `None` when there was no response.
    pub status: Option<u16>,
    /// Headers (name, value).
    pub headers: &'a [(String, String)],
    /// Body with content coding undone.
    pub body: &'a [u8],
    /// Content-Type, when known.
    pub content_type: Option<&'a str>,
}

/// The outcome of comparing two sides.
#[derive(Debug, Clone, Default)]
pub struct Comparison {
    /// Differences, at most `max_differences` of them.
    pub differences: Vec<Difference>,
    /// All differences found.
    pub count: usize,
    /// How the bodies were compared: `json`, `text`, `binary`, `empty`.
    pub body_kind: &'static str,
    /// A unified diff excerpt for text bodies that differ.
    pub text_diff: Option<String>,
}

fn shorten(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

struct Collector<'o> {
    opts: &'o DiffOptions,
    out: Vec<Difference>,
    count: usize,
}

impl Collector<'_> {
    fn push(&mut self, field: String, kind: DiffKind, left: Option<String>, right: Option<String>) {
        self.count += 1;
        if self.out.len() < self.opts.max_differences {
            let max = self.opts.max_value_len;
            self.out.push(Difference {
                field,
                kind,
                left: left.map(|v| shorten(&v, max)),
                right: right.map(|v| shorten(&v, max)),
            });
        }
    }
}

/// Whether `path` (a JSON pointer) matches `pattern`, where `*` matches one segment, and the
/// pattern matches the path or any of its ancestors.
pub fn path_matches(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').collect();
    let q: Vec<&str> = path.split('/').collect();
    p.len() <= q.len() && p.iter().zip(&q).all(|(a, b)| *a == "*" || a == b)
}

fn is_jsonish(content_type: Option<&str>, body: &[u8]) -> bool {
    content_type.is_some_and(|c| c.contains("json"))
        || matches!(
            body.iter().find(|b| !b.is_ascii_whitespace()),
            Some(b'{') | Some(b'[')
        )
}

/// Compares `left` (baseline) with `right` (candidate).
pub fn compare(left: &Side<'_>, right: &Side<'_>, opts: &DiffOptions) -> Comparison {
    let mut c = Collector {
        opts,
        out: Vec::new(),
        count: 0,
    };
    if left.status != right.status {
        c.push(
            "status".into(),
            DiffKind::Status,
            left.status.map(|s| s.to_string()),
            right.status.map(|s| s.to_string()),
        );
    }
    if opts.compare_headers {
        compare_headers(left.headers, right.headers, &mut c);
    }
    let mut cmp = Comparison {
        body_kind: "empty",
        ..Default::default()
    };
    if left.body.is_empty() && right.body.is_empty() {
        cmp.differences = c.out;
        cmp.count = c.count;
        return cmp;
    }
    // Records (NDJSON, CSV) where both sides read whole as such, field by field like JSON.
    let (json_l, json_r, records_kind) = match (
        crate::structured::records(left.content_type, left.body),
        crate::structured::records(right.content_type, right.body),
    ) {
        (Some((kind, a)), Some((_, b))) => (Some(a), Some(b), Some(kind)),
        _ => (
            is_jsonish(left.content_type, left.body)
                .then(|| serde_json::from_slice::<Value>(left.body).ok())
                .flatten(),
            is_jsonish(right.content_type, right.body)
                .then(|| serde_json::from_slice::<Value>(right.body).ok())
                .flatten(),
            None,
        ),
    };
    match (json_l, json_r) {
        (Some(a), Some(b)) => {
            cmp.body_kind = records_kind.unwrap_or("json");
            compare_json("", &a, &b, &mut c);
        }
        (Some(_), None) | (None, Some(_)) if !left.body.is_empty() && !right.body.is_empty() => {
            cmp.body_kind = "json";
            c.push(
                "body".into(),
                DiffKind::BodyFormat,
                Some(kind_of_body(left.body)),
                Some(kind_of_body(right.body)),
            );
        }
        _ => match (
            std::str::from_utf8(left.body),
            std::str::from_utf8(right.body),
        ) {
            (Ok(a), Ok(b)) => {
                cmp.body_kind = "text";
                if a != b {
                    let (ma, mb) = (mask_volatile(a), mask_volatile(b));
                    if ma != mb {
                        c.push(
                            "body".into(),
                            DiffKind::Text,
                            Some(format!("{} bytes", a.len())),
                            Some(format!("{} bytes", b.len())),
                        );
                        text_hunks(&ma, &mb, &mut c);
                        let diff = TextDiff::configure()
                            .timeout(std::time::Duration::from_millis(200))
                            .diff_lines(a, b);
                        let text = diff
                            .unified_diff()
                            .context_radius(2)
                            .header("baseline", "candidate")
                            .to_string();
                        cmp.text_diff = Some(shorten(&text, 2000));
                    }
                }
            }
            _ => {
                cmp.body_kind = "binary";
                if left.body != right.body {
                    let h = |b: &[u8]| {
                        format!(
                            "xxh3:{:016x} ({} bytes)",
                            xxhash_rust::xxh3::xxh3_64(b),
                            b.len()
                        )
                    };
                    c.push(
                        "body".into(),
                        DiffKind::Binary,
                        Some(h(left.body)),
                        Some(h(right.body)),
                    );
                }
            }
        },
    }
    cmp.differences = c.out;
    cmp.count = c.count;
    cmp
}

/// Replaces the tokens that change from one response to the next in text bodies: timestamps
/// (`<ts>`), UUIDs (`<uuid>`), runs of 16 or more base64/hex characters holding both letters
/// and digits (nonces, tokens, hashes: `<id>`), and numbers (`<n>`).
pub fn mask_volatile(text: &str) -> String {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(concat!(
            r"(?P<ts>\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?)",
            r"|(?P<uuid>[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})",
            r"|(?P<run>[A-Za-z0-9+/_\-]{16,}={0,2})",
            r"|(?P<n>\d+(\.\d+)?)"
        ))
        .expect("valid regex")
    });
    re.replace_all(text, |caps: &regex::Captures<'_>| {
        if caps.name("ts").is_some() {
            "<ts>".to_owned()
        } else if caps.name("uuid").is_some() {
            "<uuid>".to_owned()
        } else if let Some(m) = caps.name("run") {
            let s = m.as_str();
            let digits = s.bytes().any(|b| b.is_ascii_digit());
            let letters = s.bytes().any(|b| b.is_ascii_alphabetic());
            if digits && letters || s.contains(['+', '/', '=']) {
                "<id>".to_owned()
            } else {
                // A long word (or number) is content, but its numbers still vary.
                mask_numbers(s)
            }
        } else {
            "<n>".to_owned()
        }
    })
    .into_owned()
}

fn mask_numbers(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_num = false;
    for ch in s.chars() {
        if ch.is_ascii_digit() {
            if !in_num {
                out.push_str("<n>");
            }
            in_num = true;
        } else {
            in_num = false;
            out.push(ch);
        }
    }
    out
}

/// One difference per changed hunk of two masked texts, keyed by the masked lines the hunk
/// removes (or, for a pure insertion, the line before it), so the same hunk has the same key
/// in every pair.
fn text_hunks(a: &str, b: &str, c: &mut Collector<'_>) {
    // A deadline keeps a pathological pair (two unrelated megabyte pages) from stalling the
    // analysis: past it the diff is coarser, never wrong about whether the texts differ.
    let diff = TextDiff::configure()
        .timeout(std::time::Duration::from_millis(200))
        .diff_lines(a, b);
    let old: Vec<&str> = a.split_inclusive('\n').collect();
    for group in diff.grouped_ops(0) {
        let (mut removed, mut added) = (String::new(), String::new());
        let mut first_old = None;
        for op in &group {
            let (_, old_range, new_range) = op.as_tag_tuple();
            first_old.get_or_insert(old_range.start);
            for l in old.get(old_range.clone()).unwrap_or(&[]) {
                removed.push_str(l);
            }
            for l in diff.new_slices().get(new_range).unwrap_or(&[]) {
                added.push_str(l);
            }
        }
        let anchor = if removed.is_empty() {
            let at = first_old.unwrap_or(0);
            format!(
                "after:{}",
                if at == 0 {
                    ""
                } else {
                    old.get(at - 1).copied().unwrap_or("")
                }
            )
        } else {
            removed.clone()
        };
        let key = xxhash_rust::xxh3::xxh3_64(anchor.as_bytes()) & 0xffff_ffff;
        c.push(
            format!("body:hunk:{key:08x}"),
            DiffKind::Text,
            Some(removed.trim_end().to_owned()),
            Some(added.trim_end().to_owned()),
        );
    }
}

fn kind_of_body(b: &[u8]) -> String {
    if serde_json::from_slice::<Value>(b).is_ok() {
        "json".into()
    } else if std::str::from_utf8(b).is_ok() {
        "text".into()
    } else {
        "binary".into()
    }
}

fn compare_headers(left: &[(String, String)], right: &[(String, String)], c: &mut Collector<'_>) {
    let collect = |hs: &[(String, String)]| -> BTreeMap<String, Vec<String>> {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (n, v) in hs {
            let n = n.to_ascii_lowercase();
            if c.opts.ignore_headers.contains(&n) || TRANSPORT_HEADERS.contains(&n.as_str()) {
                continue;
            }
            if let Some(v) = headers::meaning(&n, v) {
                m.entry(n).or_default().push(v);
            }
        }
        for v in m.values_mut() {
            // Repeated fields (cookies, links) in any order.
            v.sort();
        }
        m
    };
    let (l, r) = (collect(left), collect(right));
    let names: std::collections::BTreeSet<&String> = l.keys().chain(r.keys()).collect();
    for n in names {
        let (a, b) = (l.get(n), r.get(n));
        if a != b {
            c.push(
                format!("header:{n}"),
                DiffKind::Header,
                a.map(|v| v.join(", ")),
                b.map(|v| v.join(", ")),
            );
        }
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn render(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

fn numbers_equal(a: &serde_json::Number, b: &serde_json::Number, tol: f64) -> bool {
    if a == b {
        return true;
    }
    // Integers exactly (ids above 2^53 differ by one where their f64s are the same).
    let int = |n: &serde_json::Number| {
        n.as_i64()
            .map(i128::from)
            .or_else(|| n.as_u64().map(i128::from))
    };
    if let (Some(x), Some(y)) = (int(a), int(b)) {
        if tol <= 0.0 {
            return x == y;
        }
        let scale = x.unsigned_abs().max(y.unsigned_abs()) as f64;
        return ((x - y).unsigned_abs() as f64) <= tol * scale;
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => {
            if tol <= 0.0 {
                x == y
            } else {
                (x - y).abs() <= tol * x.abs().max(y.abs())
            }
        }
        _ => false,
    }
}

fn compare_json(path: &str, a: &Value, b: &Value, c: &mut Collector<'_>) {
    if c.opts.ignore_fields.iter().any(|p| path_matches(p, path)) && !path.is_empty() {
        return;
    }
    let field = || {
        if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        }
    };
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                let p = format!("{path}/{}", escape(k));
                match y.get(k) {
                    Some(vb) => compare_json(&p, va, vb, c),
                    None => {
                        if !c.opts.ignore_fields.iter().any(|pat| path_matches(pat, &p)) {
                            c.push(p, DiffKind::FieldMissing, Some(render(va)), None);
                        }
                    }
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    let p = format!("{path}/{}", escape(k));
                    if !c.opts.ignore_fields.iter().any(|pat| path_matches(pat, &p)) {
                        c.push(p, DiffKind::FieldAdded, None, Some(render(vb)));
                    }
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            let unordered = c.opts.unordered_arrays.iter().any(|p| {
                path_matches(p, if path.is_empty() { "/" } else { path })
                    || (path.is_empty() && p == "/")
            });
            if x.len() != y.len() {
                c.push(
                    field(),
                    DiffKind::ArrayLength,
                    Some(x.len().to_string()),
                    Some(y.len().to_string()),
                );
                if unordered {
                    return;
                }
            }
            if unordered {
                let canon = |v: &Value| v.to_string();
                let mut sx: Vec<String> = x.iter().map(canon).collect();
                let mut sy: Vec<String> = y.iter().map(canon).collect();
                sx.sort();
                sy.sort();
                if sx != sy {
                    c.push(
                        field(),
                        DiffKind::ValueChanged,
                        Some(shorten(&a.to_string(), 200)),
                        Some(shorten(&b.to_string(), 200)),
                    );
                }
                return;
            }
            // Same elements in another order: one `order` difference, not one per position.
            if x.len() == y.len() && x != y {
                let mut sx: Vec<String> = x.iter().map(Value::to_string).collect();
                let mut sy: Vec<String> = y.iter().map(Value::to_string).collect();
                sx.sort();
                sy.sort();
                if sx == sy {
                    c.push(field(), DiffKind::Order, None, None);
                    return;
                }
            }
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                compare_json(&format!("{path}/{i}"), va, vb, c);
            }
        }
        (Value::Number(x), Value::Number(y)) => {
            if !numbers_equal(x, y, c.opts.numeric_tolerance) {
                c.push(
                    field(),
                    DiffKind::ValueChanged,
                    Some(x.to_string()),
                    Some(y.to_string()),
                );
            }
        }
        (x, y) if std::mem::discriminant(x) != std::mem::discriminant(y) => {
            c.push(
                field(),
                DiffKind::TypeChanged,
                Some(format!("{} {}", type_name(x), render(x))),
                Some(format!("{} {}", type_name(y), render(y))),
            );
        }
        (x, y) => {
            if x != y {
                c.push(
                    field(),
                    DiffKind::ValueChanged,
                    Some(render(x)),
                    Some(render(y)),
                );
            }
        }
    }
}

/// Replaces array indices in a JSON pointer by `*`, so differences aggregate per field:
/// `/items/3/price` → `/items/*/price`.
pub fn field_pattern(field: &str) -> String {
    field
        .split('/')
        .map(|seg| {
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                "*"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_integers_compare_exactly_past_2_to_the_53() {
        let n = |t: &str| serde_json::from_str::<serde_json::Number>(t).unwrap();
        // Equal as f64, different ids.
        assert!(!numbers_equal(
            &n("9007199254740993"),
            &n("9007199254740992"),
            0.0
        ));
        assert!(!numbers_equal(
            &n("-9007199254740993"),
            &n("-9007199254740992"),
            0.0
        ));
        assert!(numbers_equal(
            &n("18446744073709551615"),
            &n("18446744073709551615"),
            0.0
        ));
        assert!(numbers_equal(&n("1000"), &n("1001"), 0.01));
        assert!(!numbers_equal(&n("1000"), &n("1100"), 0.01));
        assert!(numbers_equal(&n("1.5"), &n("1.50"), 0.0));
    }

    #[test]
    fn volatile_tokens_are_masked_and_hunks_keep_their_key() {
        let a = "<p nonce=\"r4nd0mN0nc3AbCdEf12\">Hello</p>\n<p>at 2026-12-01T10:00:00Z id 550e8400-e29b-41d4-a716-446655440000 n=17</p>\n<p>internationalization</p>\n";
        let b = "<p nonce=\"Zz9Yy8Xx7Ww6Vv5Uu4\">Hello</p>\n<p>at 2026-12-02T11:30:00Z id 6ba7b810-9dad-11d1-80b4-00c04fd430c8 n=18</p>\n<p>internationalization</p>\n";
        assert_eq!(mask_volatile(a), mask_volatile(b));
        assert!(mask_volatile(a).contains("internationalization"));
        let side = |s: &'static str| Side {
            status: Some(200),
            headers: &[],
            body: s.as_bytes(),
            content_type: Some("text/html"),
        };
        let o = DiffOptions::default();
        assert_eq!(compare(&side(a), &side(b), &o).count, 0);
        // A real change on the third line is one hunk, keyed by the masked line it removes.
        let c = "<p nonce=\"Qq1Ww2Ee3Rr4Tt5Yy6\">Hello</p>\n<p>at 2026-12-03T11:30:00Z id 6ba7b810-9dad-11d1-80b4-00c04fd430c8 n=19</p>\n<p>localisation</p>\n";
        let x = compare(&side(a), &side(c), &o);
        let y = compare(&side(b), &side(c), &o);
        let hunk = |c: &Comparison| {
            c.differences
                .iter()
                .find(|d| d.field.starts_with("body:hunk:"))
                .map(|d| d.field.clone())
        };
        assert!(hunk(&x).is_some());
        assert_eq!(hunk(&x), hunk(&y));
        // Transport headers and `Vary: Accept-Encoding` are not differences.
        let gz = vec![
            ("Content-Encoding".to_owned(), "gzip".to_owned()),
            ("Vary".to_owned(), "Accept-Encoding".to_owned()),
            ("Content-Length".to_owned(), "10".to_owned()),
        ];
        let plain = vec![("Content-Length".to_owned(), "30".to_owned())];
        let l = Side {
            status: Some(200),
            headers: &gz,
            body: b"same",
            content_type: None,
        };
        let r = Side {
            status: Some(200),
            headers: &plain,
            body: b"same",
            content_type: None,
        };
        assert_eq!(compare(&l, &r, &o).count, 0);
    }

    fn side<'a>(status: u16, headers: &'a [(String, String)], body: &'a str) -> Side<'a> {
        Side {
            status: Some(status),
            headers,
            body: body.as_bytes(),
            content_type: None,
        }
    }

    fn fields(c: &Comparison) -> Vec<(String, DiffKind)> {
        c.differences
            .iter()
            .map(|d| (d.field.clone(), d.kind))
            .collect()
    }

    #[test]
    fn json_differences_are_typed_with_paths() {
        let o = DiffOptions::default();
        let a = r#"{"id":1,"name":"a","tags":["x","y"],"n":1.0,"gone":true,"obj":{"k":1},"list":[1,2,3]}"#;
        let b =
            r#"{"id":1,"name":"b","tags":["y","x"],"n":"1","obj":{"k":1,"new":2},"list":[1,2]}"#;
        let c = compare(&side(200, &[], a), &side(200, &[], b), &o);
        assert_eq!(c.body_kind, "json");
        let f = fields(&c);
        assert!(
            f.contains(&("/name".into(), DiffKind::ValueChanged)),
            "{f:?}"
        );
        assert!(f.contains(&("/tags".into(), DiffKind::Order)), "{f:?}");
        assert!(f.contains(&("/n".into(), DiffKind::TypeChanged)), "{f:?}");
        assert!(
            f.contains(&("/gone".into(), DiffKind::FieldMissing)),
            "{f:?}"
        );
        assert!(
            f.contains(&("/obj/new".into(), DiffKind::FieldAdded)),
            "{f:?}"
        );
        assert!(
            f.contains(&("/list".into(), DiffKind::ArrayLength)),
            "{f:?}"
        );
        assert!(!f.iter().any(|(p, _)| p == "/id"));
        let name = c.differences.iter().find(|d| d.field == "/name").unwrap();
        assert_eq!(
            (name.left.as_deref(), name.right.as_deref()),
            (Some("a"), Some("b"))
        );
    }

    #[test]
    fn tolerance_sets_and_ignored_fields() {
        let mut o = DiffOptions {
            numeric_tolerance: 0.01,
            ..Default::default()
        };
        o.unordered_arrays.push("/ids".into());
        o.ignore_fields.push("/meta/*".into());
        let a = r#"{"price":100.0,"ids":[1,2,3],"meta":{"ts":1},"items":[{"p":1},{"p":2}]}"#;
        let b = r#"{"price":100.5,"ids":[3,1,2],"meta":{"ts":2},"items":[{"p":1},{"p":3}]}"#;
        let c = compare(&side(200, &[], a), &side(200, &[], b), &o);
        assert_eq!(
            fields(&c),
            vec![("/items/1/p".to_owned(), DiffKind::ValueChanged)]
        );
        assert_eq!(field_pattern("/items/1/p"), "/items/*/p");
    }

    #[test]
    fn status_headers_text_and_binary() {
        let h1 = vec![
            ("Content-Type".to_owned(), "text/plain".to_owned()),
            ("Date".to_owned(), "x".to_owned()),
        ];
        let h2 = vec![
            ("content-type".to_owned(), "text/html".to_owned()),
            ("date".to_owned(), "y".to_owned()),
        ];
        let c = compare(
            &side(200, &h1, "a\nb\nc\n"),
            &side(500, &h2, "a\nB\nc\n"),
            &DiffOptions::default(),
        );
        let f = fields(&c);
        assert_eq!(
            f[..3],
            [
                ("status".into(), DiffKind::Status),
                ("header:content-type".into(), DiffKind::Header),
                ("body".into(), DiffKind::Text)
            ]
        );
        // One hunk: line "b" became "B".
        assert_eq!(f.len(), 4, "{f:?}");
        assert!(f[3].0.starts_with("body:hunk:"), "{f:?}");
        assert_eq!(c.differences[3].left.as_deref(), Some("b"));
        assert_eq!(c.differences[3].right.as_deref(), Some("B"));
        assert!(
            c.text_diff.as_deref().unwrap().contains("-b\n+B"),
            "{:?}",
            c.text_diff
        );
        let bin = |b: &'static [u8]| Side {
            status: Some(200),
            headers: &[],
            body: b,
            content_type: None,
        };
        let c = compare(
            &bin(b"\xff\x00\x01"),
            &bin(b"\xff\x00\x02"),
            &DiffOptions::default(),
        );
        assert_eq!(
            (c.body_kind, fields(&c)),
            ("binary", vec![("body".into(), DiffKind::Binary)])
        );
        let c = compare(
            &bin(b"\xff\x00\x01"),
            &bin(b"\xff\x00\x01"),
            &DiffOptions::default(),
        );
        assert_eq!(c.count, 0);
    }

    #[test]
    fn csv_and_ndjson_bodies_differ_by_field_not_by_masked_text() {
        let side = |ct: &'static str, b: &'static [u8]| Side {
            status: Some(200),
            headers: &[],
            body: b,
            content_type: Some(ct),
        };
        // A price change inside a CSV: masked text would not see it.
        let c = compare(
            &side("text/csv", b"sku,price\nA1,9.99\nB2,10.00\n"),
            &side("text/csv", b"sku,price\nA1,9.99\nB2,12.00\n"),
            &DiffOptions::default(),
        );
        assert_eq!(c.body_kind, "csv");
        assert_eq!(
            fields(&c),
            vec![("/1/price".into(), DiffKind::ValueChanged)]
        );
        // The same numbers written differently are no difference.
        let c = compare(
            &side("text/csv", b"sku,price\nA1,10\n"),
            &side("text/csv", b"sku,price\nA1,10.0\n"),
            &DiffOptions::default(),
        );
        assert_eq!(c.count, 0, "{:?}", c.differences);
        let c = compare(
            &side(
                "application/x-ndjson",
                b"{\"id\":1,\"total\":5}\n{\"id\":2,\"total\":7}\n",
            ),
            &side(
                "application/x-ndjson",
                b"{\"id\":1,\"total\":5}\n{\"id\":2,\"total\":8}\n",
            ),
            &DiffOptions::default(),
        );
        assert_eq!(c.body_kind, "ndjson");
        assert_eq!(
            fields(&c),
            vec![("/1/total".into(), DiffKind::ValueChanged)]
        );
    }
}

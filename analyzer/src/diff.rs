//! Comparing two responses to the same request: status, headers, body.
//!
//! JSON on both sides gives a structural diff: the JSON paths that differ, each typed (value
//! changed, field missing, field added, type changed, array length, order) with both values;
//! numbers within the policy's tolerance are equal; arrays are compared by position, or as
//! multisets where the policy says so. Other text goes through `similar` (a unified diff excerpt
//! is kept); binary bodies are compared by hash.

use std::collections::BTreeMap;

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
pub const DEFAULT_IGNORED_HEADERS: &[&str] = &[
    "date",
    "server",
    "set-cookie",
    "x-request-id",
    "x-correlation-id",
    "x-amzn-requestid",
    "x-amz-request-id",
    "x-amzn-trace-id",
    "request-id",
    "traceparent",
    "tracestate",
    "etag",
    "last-modified",
    "expires",
    "age",
    "via",
    "x-cache",
    "cf-ray",
    "content-length",
    "transfer-encoding",
    "connection",
    "keep-alive",
    "x-shadowtap-replay",
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
    let json_l = is_jsonish(left.content_type, left.body)
        .then(|| serde_json::from_slice::<Value>(left.body).ok())
        .flatten();
    let json_r = is_jsonish(right.content_type, right.body)
        .then(|| serde_json::from_slice::<Value>(right.body).ok())
        .flatten();
    match (json_l, json_r) {
        (Some(a), Some(b)) => {
            cmp.body_kind = "json";
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
                    let diff = TextDiff::from_lines(a, b);
                    let text = diff
                        .unified_diff()
                        .context_radius(2)
                        .header("baseline", "candidate")
                        .to_string();
                    c.push(
                        "body".into(),
                        DiffKind::Text,
                        Some(format!("{} bytes", a.len())),
                        Some(format!("{} bytes", b.len())),
                    );
                    cmp.text_diff = Some(shorten(&text, 2000));
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
            if !c.opts.ignore_headers.contains(&n) {
                m.entry(n).or_default().push(v.clone());
            }
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
        assert_eq!(
            fields(&c),
            vec![
                ("status".into(), DiffKind::Status),
                ("header:content-type".into(), DiffKind::Header),
                ("body".into(), DiffKind::Text)
            ]
        );
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
}

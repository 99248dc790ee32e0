//! Endpoints as users name them, so metrics aggregate per endpoint rather than per URL:
//! - [`path_template`]: identifier segments by their shape: `/users/123/orders/9f1c2e4a…` →
//!   `/users/{id}/orders/{id}`, `/products/123.json` → `/products/{id}.json`, dates and emails;
//! - [`Routes`]: the user's own templates (`--route '/shop/products/{id}.json'`, policy
//!   `routes`, or the operations of an OpenAPI document, `--openapi`), which win over
//!   everything;
//! - [`infer_parameters`]: from the traffic, a segment position with many distinct values across
//!   otherwise equal endpoints, each too small to judge alone (`/users/jane-doe`,
//!   `/reports/q3-summary`), is a parameter.

/// Whether a path segment is an identifier: a number, a UUID, a hex string of 8 or more
/// characters with a digit, or a long token mixing letters and digits.
pub fn is_id_segment(seg: &str) -> bool {
    if seg.is_empty() {
        return false;
    }
    let digits = seg.bytes().filter(u8::is_ascii_digit).count();
    if digits == seg.len() {
        return true;
    }
    let uuid = seg.len() == 36
        && seg.bytes().enumerate().all(|(i, b)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        });
    if uuid {
        return true;
    }
    if seg.len() >= 8 && digits > 0 && seg.bytes().all(|b| b.is_ascii_hexdigit()) {
        return true;
    }
    seg.len() >= 20
        && digits > 0
        && seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A date (`2026-12-07`, `20261207`) or an email address.
fn is_value_segment(seg: &str) -> bool {
    let b = seg.as_bytes();
    let date = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    let email = seg
        .split_once('@')
        .is_some_and(|(u, d)| !u.is_empty() && d.contains('.') && !d.starts_with('.'));
    date || email
}

/// A segment as a template segment: `{id}` for an identifier, `{id}.json` for one with an
/// extension, `{value}` for a date or an email; else itself.
fn template_segment(seg: &str) -> std::borrow::Cow<'_, str> {
    if is_id_segment(seg) || is_value_segment(seg) {
        return if is_id_segment(seg) {
            "{id}"
        } else {
            "{value}"
        }
        .into();
    }
    if let Some((stem, ext)) = seg.rsplit_once('.') {
        let short_ext =
            !ext.is_empty() && ext.len() <= 5 && ext.bytes().all(|b| b.is_ascii_alphanumeric());
        if short_ext && (is_id_segment(stem) || is_value_segment(stem)) {
            return format!("{{id}}.{ext}").into();
        }
    }
    seg.into()
}

/// The path with identifier segments replaced by `{id}` (the query is not part of a path).
pub fn path_template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(template_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// The user's endpoint templates: `/shop/products/{id}.json`, `/users/{name}/orders`, with a
/// method in front to match one method only (`GET /users/{id}`). A `{…}` segment matches any
/// one segment; `{…}.ext` any segment ending in `.ext`. [`Routes::from_openapi`] reads them
/// from an OpenAPI document, named by operation.
#[derive(Debug, Clone, Default)]
pub struct Routes(Vec<Route>);

#[derive(Debug, Clone)]
struct Route {
    /// Upper case; `None`: any method.
    method: Option<String>,
    segments: Vec<String>,
    /// The OpenAPI `operationId`, shown after the template.
    operation: Option<String>,
}

impl Route {
    fn parse(t: &str) -> Result<Route, String> {
        let t = t.trim();
        let (method, path) = match t.split_once(' ') {
            Some((m, p)) if !m.starts_with('/') => (Some(m.trim()), p.trim()),
            _ => (None, t),
        };
        if let Some(m) = method {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()) {
                return Err(format!("route {t:?}: `METHOD /path` or `/path`"));
            }
        }
        if !path.starts_with('/') {
            return Err(format!("route {t:?}: a path template starts with /"));
        }
        Ok(Route {
            method: method.map(str::to_ascii_uppercase),
            segments: path.split('/').map(str::to_owned).collect(),
            operation: None,
        })
    }

    fn params(&self) -> usize {
        self.segments.iter().filter(|s| s.contains('{')).count()
    }
}

/// The HTTP methods an OpenAPI path item names operations by.
const OPENAPI_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

impl Routes {
    /// Parses the templates (`/path` or `METHOD /path`), naming a bad one.
    pub fn new(templates: &[String]) -> Result<Routes, String> {
        templates
            .iter()
            .map(|t| Route::parse(t))
            .collect::<Result<Vec<_>, _>>()
            .map(Routes)
    }

    /// The operations of an OpenAPI 3 (or Swagger 2) document, JSON or YAML: one route per
    /// path and method, the path under the first server's base path (`servers[0].url`, or
    /// Swagger's `basePath`), named by `operationId` where it has one. Literal paths come
    /// before templated ones (`/pets/mine` before `/pets/{id}`), as OpenAPI says they match.
    pub fn from_openapi(text: &str) -> Result<Routes, String> {
        let doc: serde_json::Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(json) => serde_norway::from_str(text).map_err(|yaml| {
                format!("not an OpenAPI document in JSON ({json}) or YAML ({yaml})")
            })?,
        };
        if doc.get("openapi").is_none() && doc.get("swagger").is_none() {
            return Err("not an OpenAPI document (no `openapi` or `swagger` version)".into());
        }
        let paths = doc
            .get("paths")
            .and_then(|p| p.as_object())
            .ok_or("the OpenAPI document has no `paths` object")?;
        let base = doc
            .pointer("/servers/0/url")
            .and_then(|u| u.as_str())
            .map(base_path)
            .or_else(|| {
                doc.get("basePath")
                    .and_then(|b| b.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let base = base.trim_end_matches('/');
        let mut routes = Vec::new();
        for (path, item) in paths {
            if !path.starts_with('/') {
                return Err(format!("OpenAPI path {path:?} does not start with /"));
            }
            let Some(item) = item.as_object() else {
                continue;
            };
            for m in OPENAPI_METHODS {
                let Some(op) = item.get(m) else { continue };
                let mut r = Route::parse(&format!("{} {base}{path}", m.to_ascii_uppercase()))?;
                r.operation = op
                    .get("operationId")
                    .and_then(|o| o.as_str())
                    .filter(|o| !o.is_empty())
                    .map(str::to_owned);
                routes.push(r);
            }
        }
        if routes.is_empty() {
            return Err("the OpenAPI document names no operations".into());
        }
        routes.sort_by_key(Route::params);
        Ok(Routes(routes))
    }

    /// These routes, then `other`'s.
    pub fn extend(&mut self, other: Routes) {
        self.0.extend(other.0);
    }

    /// The first route `path` (a path, or a path template) matches, for any method.
    pub fn matching(&self, path: &str) -> Option<String> {
        self.route(None, path).map(|r| r.segments.join("/"))
    }

    /// The endpoint name of `method path` by the first route it matches: `GET /users/{id}`,
    /// with the operation after it (`GET /pets/{petId} (showPetById)`).
    pub fn endpoint(&self, method: &str, path: &str) -> Option<String> {
        let r = self.route(Some(method), path)?;
        let template = r.segments.join("/");
        Some(match &r.operation {
            Some(op) => format!("{method} {template} ({op})"),
            None => format!("{method} {template}"),
        })
    }

    fn route(&self, method: Option<&str>, path: &str) -> Option<&Route> {
        let path = path.split(['?', '#']).next().unwrap_or("");
        let segs: Vec<&str> = path.split('/').collect();
        self.0.iter().find(|r| {
            let method_ok = match (&r.method, method) {
                (Some(want), Some(m)) => want.eq_ignore_ascii_case(m),
                (Some(_), None) => false,
                (None, _) => true,
            };
            method_ok
                && r.segments.len() == segs.len()
                && r.segments
                    .iter()
                    .zip(&segs)
                    .all(|(t, s)| segment_matches(t, s))
        })
    }
}

/// The path of a server URL (`https://api.example.com/v1` → `/v1`; `/v1` stays).
fn base_path(url: &str) -> String {
    let rest = match url.split_once("://") {
        Some((_, r)) => r.find('/').map_or("", |i| &r[i..]),
        None => url,
    };
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    if rest.starts_with('/') {
        rest.to_owned()
    } else {
        String::new()
    }
}

fn segment_matches(template: &str, seg: &str) -> bool {
    let param = |t: &str| t.starts_with('{') && t.ends_with('}');
    if param(template) {
        return !seg.is_empty();
    }
    if let Some((stem, ext)) = template.rsplit_once('.') {
        if param(stem) {
            return seg
                .rsplit_once('.')
                .is_some_and(|(s, e)| !s.is_empty() && e == ext);
        }
    }
    template == seg
}

/// Distinct values at one position that make it a parameter (with every endpoint involved
/// too small to judge alone).
pub const INFER_MIN_VALUES: usize = 10;

/// Infers path parameters from the traffic: among endpoints (`METHOD /a/b/c`, with their pair
/// counts) that are equal but at one segment position, if at least [`INFER_MIN_VALUES`]
/// distinct values appear there and most of those endpoints have fewer than `min_pairs` pairs,
/// that position is a parameter `{param}`. Repeated until nothing changes. Returns, for each
/// endpoint given, its new name.
pub fn infer_parameters(endpoints: &[(String, u64)], min_pairs: u64) -> Vec<String> {
    let mut names: Vec<Vec<String>> = endpoints
        .iter()
        .map(|(e, _)| e.split('/').map(str::to_owned).collect())
        .collect();
    let counts: Vec<u64> = endpoints.iter().map(|(_, n)| *n).collect();
    loop {
        let mut changed = false;
        let longest = names.iter().map(Vec::len).max().unwrap_or(0);
        // Position 0 is "METHOD " (the method and the empty root): never a parameter.
        for pos in 1..longest {
            let mut groups: std::collections::HashMap<Vec<String>, Vec<usize>> =
                std::collections::HashMap::new();
            for (i, n) in names.iter().enumerate() {
                if pos >= n.len() || n[pos].starts_with('{') || n[pos].is_empty() {
                    continue;
                }
                let mut key = n.clone();
                key[pos] = String::new();
                groups.entry(key).or_default().push(i);
            }
            for members in groups.values() {
                let distinct: std::collections::HashSet<&str> =
                    members.iter().map(|&i| names[i][pos].as_str()).collect();
                let small = members.iter().filter(|&&i| counts[i] < min_pairs).count();
                if distinct.len() >= INFER_MIN_VALUES && small * 2 > members.len() {
                    for &i in members {
                        names[i][pos] = "{param}".to_owned();
                    }
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    names.into_iter().map(|n| n.join("/")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_become_placeholders() {
        assert_eq!(
            path_template("/users/123/orders/9f1c2e4a7b"),
            "/users/{id}/orders/{id}"
        );
        assert_eq!(
            path_template("/v2/items/550e8400-e29b-41d4-a716-446655440000"),
            "/v2/items/{id}"
        );
        assert_eq!(path_template("/api/v1/users"), "/api/v1/users");
        assert_eq!(path_template("/static/app.css"), "/static/app.css");
        assert_eq!(
            path_template("/tokens/abcDEF123ghiJKL456mnop"),
            "/tokens/{id}"
        );
        assert_eq!(
            path_template("/cafe/deadbeef"),
            "/cafe/deadbeef",
            "hex words without digits stay"
        );
        assert_eq!(path_template("/a?x=1"), "/a");
        assert_eq!(path_template(""), "/");
        assert_eq!(path_template("/products/123.json"), "/products/{id}.json");
        assert_eq!(path_template("/reports/2026-12-07"), "/reports/{value}");
        assert_eq!(path_template("/users/jane@example.com"), "/users/{value}");
        assert_eq!(path_template("/static/app.v2.css"), "/static/app.v2.css");
    }

    #[test]
    fn user_routes_match_segments_and_extensions() {
        let r = Routes::new(&[
            "/shop/products/{id}.json".into(),
            "/users/{name}/orders".into(),
        ])
        .unwrap();
        assert_eq!(
            r.matching("/shop/products/abc-9.json?x=1").as_deref(),
            Some("/shop/products/{id}.json")
        );
        assert_eq!(r.matching("/shop/products/abc.xml"), None);
        assert_eq!(
            r.matching("/users/jane-doe/orders").as_deref(),
            Some("/users/{name}/orders")
        );
        assert_eq!(r.matching("/users/jane-doe"), None);
        assert!(Routes::new(&["users/{id}".into()]).is_err());
        assert!(Routes::new(&["G3T /users".into()]).is_err());
    }

    #[test]
    fn a_route_with_a_method_matches_that_method_only() {
        let r = Routes::new(&["post /users/{id}".into(), "/users/{id}".into()]).unwrap();
        assert_eq!(
            r.endpoint("POST", "/users/7").as_deref(),
            Some("POST /users/{id}")
        );
        assert_eq!(
            r.endpoint("GET", "/users/7").as_deref(),
            Some("GET /users/{id}")
        );
        assert_eq!(r.endpoint("GET", "/orders/7"), None);
    }

    /// The Petstore document of the OpenAPI specification's examples (trimmed), in YAML.
    const PETSTORE: &str = r#"
openapi: "3.0.0"
info: {title: Swagger Petstore, version: 1.0.0}
servers:
  - url: http://petstore.swagger.io/v1
paths:
  /pets:
    get: {operationId: listPets, responses: {"200": {description: ok}}}
    post: {operationId: createPets, responses: {"201": {description: ok}}}
  /pets/{petId}:
    get: {operationId: showPetById, responses: {"200": {description: ok}}}
    parameters: []
  /pets/mine:
    get: {responses: {"200": {description: ok}}}
"#;

    #[test]
    fn openapi_operations_become_routes_named_by_operation() {
        let r = Routes::from_openapi(PETSTORE).unwrap();
        assert_eq!(
            r.endpoint("GET", "/v1/pets/42").as_deref(),
            Some("GET /v1/pets/{petId} (showPetById)")
        );
        assert_eq!(
            r.endpoint("POST", "/v1/pets").as_deref(),
            Some("POST /v1/pets (createPets)")
        );
        // The literal path wins over the template, whatever the document's order.
        assert_eq!(
            r.endpoint("GET", "/v1/pets/mine").as_deref(),
            Some("GET /v1/pets/mine")
        );
        // A method the document does not name: no route (the shape rules name it).
        assert_eq!(r.endpoint("DELETE", "/v1/pets/42"), None);
        // The same document in JSON.
        let v: serde_json::Value = serde_norway::from_str(PETSTORE).unwrap();
        let json = Routes::from_openapi(&v.to_string()).unwrap();
        assert_eq!(
            json.endpoint("GET", "/v1/pets/42"),
            r.endpoint("GET", "/v1/pets/42")
        );
        for bad in [
            "",
            "{}",
            "openapi: 3.0.0",
            "[1, 2",
            "openapi: 3.0.0\npaths: {}",
        ] {
            assert!(Routes::from_openapi(bad).is_err(), "{bad:?}");
        }
        assert_eq!(base_path("https://api.example.com"), "");
        assert_eq!(base_path("/api/v2"), "/api/v2");
    }

    #[test]
    fn sparse_positions_become_parameters_and_busy_ones_stay() {
        let mut eps: Vec<(String, u64)> = (0..40)
            .map(|i| {
                (
                    format!("GET /users/user-{}x/profile", (b'a' + i as u8 % 26) as char),
                    3,
                )
            })
            .collect();
        eps.dedup_by(|a, b| a.0 == b.0);
        // Busy, distinct resources: each judged alone.
        for r in [
            "users", "orders", "items", "carts", "tags", "a", "b", "c", "d", "e",
        ] {
            eps.push((format!("GET /api/{r}"), 500));
        }
        let names = infer_parameters(&eps, 30);
        let slugs: std::collections::HashSet<&String> =
            names.iter().filter(|n| n.contains("/profile")).collect();
        assert_eq!(slugs.len(), 1, "{slugs:?}");
        assert!(slugs.contains(&"GET /users/{param}/profile".to_owned()));
        assert!(names.contains(&"GET /api/orders".to_owned()), "{names:?}");
    }
}

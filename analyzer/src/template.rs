//! Endpoint templates: `/users/123/orders/9f1c2e4a…` → `/users/{id}/orders/{id}`, so metrics
//! aggregate per endpoint rather than per URL.

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

/// The path with identifier segments replaced by `{id}` (the query is not part of a path).
pub fn path_template(path: &str) -> String {
    let path = path.split(['?', '#']).next().unwrap_or("");
    if path.is_empty() {
        return "/".into();
    }
    path.split('/')
        .map(|s| if is_id_segment(s) { "{id}" } else { s })
        .collect::<Vec<_>>()
        .join("/")
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
    }
}

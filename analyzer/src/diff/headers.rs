//! Headers compared as HTTP means them, not as bytes: what [`meaning`] keeps of a value.

/// A header's value as HTTP means it, for comparison (`None`: nothing to compare):
/// - media types (`Content-Type`): type, subtype and parameter names in lower case, `charset`'s
///   value too, quotes and spaces dropped, parameters in order
///   (`application/json;charset=UTF-8` = `application/json; charset=utf-8`);
/// - token lists (`Cache-Control`, `Vary`, `Allow`, `Access-Control-Allow-Methods`): a sorted
///   set in lower case (`Vary: Accept-Encoding` dropped, a transport detail);
/// - `Set-Cookie`: the cookie's name and its attributes (`HttpOnly`, `Secure`, `SameSite`,
///   `Path`, `Domain`, and whether `Max-Age`/`Expires` are there), not its value (a session
///   id): a cookie that lost `HttpOnly; Secure` is a difference;
/// - `ETag`, `Last-Modified`: whether they are there (their values differ between any two
///   servers; a validator that disappeared is a difference);
/// - `Location`, `Content-Location`, `Link`: the URI's path and query, its scheme and host
///   dropped (each target names its own origin), so a redirect to another path is a
///   difference and one to the same path on another host is not.
pub fn meaning(name: &str, value: &str) -> Option<String> {
    let tokens = |v: &str, drop: &[&str]| {
        let mut t: Vec<String> = v
            .split(',')
            .map(|t| t.trim().to_ascii_lowercase().replace(' ', ""))
            .filter(|t| !t.is_empty() && !drop.contains(&t.as_str()))
            .collect();
        t.sort();
        t.dedup();
        t.join(", ")
    };
    match name {
        "content-type" => Some(media_type(value)),
        "vary" => Some(tokens(value, &["accept-encoding"])).filter(|t| !t.is_empty()),
        "cache-control" | "allow" | "access-control-allow-methods" => Some(tokens(value, &[])),
        "set-cookie" => Some(cookie_attributes(value)),
        "etag" | "last-modified" => Some("(present)".to_owned()),
        "location" | "content-location" => Some(without_origin(value.trim())),
        "link" => Some(
            value
                .split(',')
                .map(|l| match (l.find('<'), l.find('>')) {
                    (Some(a), Some(b)) if a < b => {
                        format!("<{}>{}", without_origin(&l[a + 1..b]), l[b + 1..].trim())
                    }
                    _ => l.trim().to_owned(),
                })
                .collect::<Vec<_>>()
                .join(", "),
        ),
        _ => Some(value.to_owned()),
    }
}

fn media_type(v: &str) -> String {
    let mut parts = v.split(';');
    let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    let mut params: Vec<String> = parts
        .filter_map(|p| {
            let (k, val) = p.split_once('=')?;
            let k = k.trim().to_ascii_lowercase();
            let val = val.trim().trim_matches('"');
            let val = if k == "charset" {
                val.to_ascii_lowercase()
            } else {
                val.to_owned()
            };
            Some(format!("{k}={val}"))
        })
        .collect();
    params.sort();
    std::iter::once(essence)
        .chain(params)
        .collect::<Vec<_>>()
        .join("; ")
}

fn cookie_attributes(v: &str) -> String {
    let mut parts = v.split(';');
    let name = parts
        .next()
        .and_then(|nv| nv.split_once('=').map(|(n, _)| n))
        .unwrap_or("")
        .trim()
        .to_owned();
    let mut attrs: Vec<String> = parts
        .filter_map(|a| {
            let (k, val) = match a.split_once('=') {
                Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.trim())),
                None => (a.trim().to_ascii_lowercase(), None),
            };
            match k.as_str() {
                "" => None,
                "max-age" | "expires" => Some(format!("{k}(present)")),
                "samesite" | "domain" => {
                    Some(format!("{k}={}", val.unwrap_or("").to_ascii_lowercase()))
                }
                "path" => Some(format!("path={}", val.unwrap_or(""))),
                _ => Some(k),
            }
        })
        .collect();
    attrs.sort();
    attrs.dedup();
    format!("{name}: {}", attrs.join("; "))
}

/// A URI reference's path and query (and fragment), without scheme and authority.
fn without_origin(uri: &str) -> String {
    let rest = match uri.find("://") {
        Some(i) => &uri[i + 3..],
        None if uri.starts_with("//") => &uri[2..],
        None => return uri.to_owned(),
    };
    match rest.find(['/', '?', '#']) {
        Some(i) => rest[i..].to_owned(),
        None => "/".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::meaning;

    fn same(name: &str, a: &str, b: &str) -> bool {
        meaning(name, a) == meaning(name, b)
    }

    #[test]
    fn media_types_by_their_parts() {
        assert!(same(
            "content-type",
            "application/json; charset=utf-8",
            "application/json;charset=UTF-8"
        ));
        assert!(same(
            "content-type",
            "multipart/form-data; boundary=\"x\"; charset=utf-8",
            "Multipart/Form-Data; charset=utf-8; boundary=x"
        ));
        assert!(!same("content-type", "application/json", "text/plain"));
        // A boundary is case-sensitive.
        assert!(!same(
            "content-type",
            "multipart/mixed; boundary=A",
            "multipart/mixed; boundary=a"
        ));
    }

    #[test]
    fn cookies_by_name_and_attributes_not_value() {
        let a = "sid=abc123; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=3600";
        let b = "sid=zzz999; path=/; secure; httponly; samesite=lax; max-age=7200";
        assert!(same("set-cookie", a, b));
        // Lost HttpOnly and Secure: a difference.
        assert!(!same(
            "set-cookie",
            a,
            "sid=abc123; Path=/; SameSite=Lax; Max-Age=3600"
        ));
        assert!(!same(
            "set-cookie",
            a,
            "token=abc123; Path=/; HttpOnly; Secure; SameSite=Lax; Max-Age=3600"
        ));
        assert!(!same(
            "set-cookie",
            a,
            "sid=abc123; Path=/; HttpOnly; Secure; SameSite=Lax"
        ));
    }

    #[test]
    fn redirects_and_links_by_path_on_each_targets_own_origin() {
        assert!(same(
            "location",
            "http://10.0.0.1:8080/cart?x=1",
            "https://shop.example/cart?x=1"
        ));
        assert!(same("location", "/cart", "http://other:9000/cart"));
        assert!(!same("location", "http://a/cart", "http://a/login"));
        assert!(same(
            "link",
            "<http://a:1/page/2>; rel=\"next\"",
            "<http://b:2/page/2>; rel=\"next\""
        ));
        assert!(!same(
            "link",
            "<http://a/page/2>; rel=next",
            "<http://a/page/3>; rel=next"
        ));
    }

    #[test]
    fn token_lists_as_sets_and_validators_by_presence() {
        assert!(same(
            "cache-control",
            "no-cache, max-age=0",
            "max-age=0,no-cache"
        ));
        assert!(!same("cache-control", "no-store", "public, max-age=60"));
        assert_eq!(meaning("vary", "Accept-Encoding"), None);
        assert!(same("vary", "Accept-Encoding, Origin", "origin"));
        assert!(same("etag", "\"abc\"", "W/\"xyz\""));
        assert!(same(
            "last-modified",
            "Mon, 07 Dec 2026 10:00:00 GMT",
            "Tue, 08 Dec 2026 10:00:00 GMT"
        ));
    }
}

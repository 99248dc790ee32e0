use crate::exchange::Body;

use super::*;

fn h(n: &str, v: &str) -> Header {
    Header {
        name: n.into(),
        value: v.into(),
    }
}

fn redactor() -> Redactor {
    Redactor::new(b"k".to_vec(), &["X-Internal".into()])
}

fn body(raw: &[u8]) -> Body {
    Body {
        raw: raw.to_vec(),
        len: raw.len() as u64,
        ..Body::default()
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn headers_keep_structure_and_equality() {
    let r = Redactor::new(b"k".to_vec(), &["X-Api-Key".into()]);
    let mut a = h("Authorization", "Bearer secret-token");
    r.header(&mut a);
    assert!(
        a.value.starts_with("Bearer hmac:") && !a.value.contains("secret"),
        "{}",
        a.value
    );
    let mut a2 = h("authorization", "Bearer secret-token");
    r.header(&mut a2);
    assert_eq!(a.value, a2.value, "equal secrets give equal tokens");
    let mut c = h("Cookie", "sid=abc123; beta=1");
    r.header(&mut c);
    assert!(
        c.value.starts_with("sid=hmac:")
            && c.value.contains("; beta=hmac:")
            && !c.value.contains("abc123"),
        "{}",
        c.value
    );
    let mut s = h("Set-Cookie", "sid=abc123; Path=/; HttpOnly");
    r.header(&mut s);
    assert!(
        s.value.starts_with("sid=hmac:") && s.value.ends_with("; Path=/; HttpOnly"),
        "{}",
        s.value
    );
    let mut plain = h("Accept", "text/html");
    r.header(&mut plain);
    assert_eq!(plain.value, "text/html");
    let other_key = Redactor::new(b"other".to_vec(), &[]);
    let mut a3 = h("Authorization", "Bearer secret-token");
    other_key.header(&mut a3);
    assert_ne!(a.value, a3.value, "the key matters");
    let shown = format!("{:?}", Redactor::new(b"zzsecret".to_vec(), &[]));
    assert!(
        !shown.contains("zzsecret") && !shown.contains("122, 122"),
        "Debug never shows the key: {shown}"
    );
}

#[test]
fn the_credential_headers_users_send_are_redacted_by_default() {
    let r = redactor();
    for name in [
        "X-Api-Key",
        "x-auth-token",
        "X-Amz-Security-Token",
        "X-CSRF-Token",
        "X-XSRF-TOKEN",
        "Private-Token",
        "X-Upstream-Token",
        "X-Client-Secret",
        "X-Session-Id",
        "x_api_key",
        "X-Internal",
    ] {
        let mut hd = h(name, "s3cr3t-value");
        r.header(&mut hd);
        assert!(hd.value.starts_with("hmac:"), "{name}: {}", hd.value);
    }
    for name in [
        "Content-Type",
        "X-Request-Id",
        "User-Agent",
        "Accept-Encoding",
    ] {
        let mut hd = h(name, "kept");
        r.header(&mut hd);
        assert_eq!(hd.value, "kept", "{name}");
    }
}

#[test]
fn query_fragment_and_url_header_parameters_are_redacted() {
    let r = redactor();
    let got = r
        .url("/cb?code=abc123&state=xyz&X-Amz-Signature=deadbeef&Access_Token=t0k&page=2#access_token=frag&token_type=bearer")
        .unwrap();
    for secret in ["abc123", "deadbeef", "t0k", "frag"] {
        assert!(!got.contains(secret), "{secret} in {got}");
    }
    assert!(
        got.starts_with("/cb?code=hmac:")
            && got.contains("&state=xyz&")
            && got.contains("&page=2#access_token=hmac:"),
        "{got}"
    );
    assert_eq!(r.url("/plain?page=2&sort=asc"), None);
    assert_eq!(r.url("/no-query"), None);
    // Percent-encoded names and values compare and hash decoded.
    let a = r.url("/x?pass%77ord=a%20b").unwrap();
    let b = r.url("/x?password=a+b").unwrap();
    assert_eq!(
        a.split_once('=').unwrap().1,
        b.split_once('=').unwrap().1,
        "{a} vs {b}"
    );
    let mut loc = h("Location", "https://app.example/cb?code=oauthcode&state=s1");
    r.header(&mut loc);
    assert!(
        !loc.value.contains("oauthcode") && loc.value.contains("state=s1"),
        "{}",
        loc.value
    );
    let mut referer = h("Referer", "https://app.example/?api_key=AIzaXYZ");
    r.header(&mut referer);
    assert!(!referer.value.contains("AIzaXYZ"), "{}", referer.value);
}

#[test]
fn json_keys_match_case_insensitively_and_coded_raw_is_withheld() {
    let r = Redactor::new(b"k".to_vec(), &["ssn".into()]);
    let headers = vec![h("Content-Type", "application/json; charset=utf-8")];
    let mut b = body(
        br#"{"user":"u","Password":"hunter2","accessToken":"t0k","SSN":"123","nested":[{"newPassword":5}],"prompt_tokens":12,"code":"E42"}"#,
    );
    r.body(&mut b, &headers).unwrap();
    let t = text(&b.raw);
    for secret in ["hunter2", "t0k", "123\""] {
        assert!(!t.contains(secret), "{secret} in {t}");
    }
    assert!(
        t.contains(r#""user":"u""#)
            && t.contains(r#""prompt_tokens":12"#)
            && t.contains(r#""code":"E42""#),
        "{t}"
    );
    assert_eq!(t.matches("hmac:").count(), 4, "{t}");
    assert!(!b.withheld);
    let coded_headers = vec![
        h("Content-Type", "application/json"),
        h("Content-Encoding", "gzip"),
    ];
    let mut coded = Body {
        raw: vec![0x1f, 0x8b, 1, 2],
        len: 4,
        decoded: Some(br#"{"password":"x"}"#.to_vec()),
        ..Body::default()
    };
    r.body(&mut coded, &coded_headers).unwrap();
    assert!(coded.raw.is_empty() && coded.withheld);
    assert!(text(&coded.decoded.unwrap()).contains("hmac:"));
}

#[test]
fn bodies_that_cannot_be_read_whole_are_withheld() {
    let r = redactor();
    let json = vec![h("Content-Type", "application/json")];
    let gz = vec![
        h("Content-Type", "application/json"),
        h("Content-Encoding", "zstd"),
    ];
    // Cut at --max-body: does not parse.
    let mut cut = body(br#"{"user":"u","password":"hunt"#);
    cut.truncated = true;
    cut.len = 4096;
    let why = r.body(&mut cut, &json).unwrap_err();
    assert!(why.contains("JSON"), "{why}");
    assert!(cut.raw.is_empty() && cut.decoded.is_none() && cut.withheld && cut.len == 4096);
    // A coded body that could not be decoded.
    let mut coded = body(b"\x28\xb5\x2f\xfd garbage password hunter2");
    coded.decode_error = Some("invalid zstd data".into());
    let why = r.body(&mut coded, &gz).unwrap_err();
    assert!(why.contains("invalid zstd data"), "{why}");
    assert!(coded.raw.is_empty() && coded.withheld);
    // Bytes lost in capture (a form: every prefix parses, but the middle is gone).
    let mut gap = body(b"user=a&passer2&x=1");
    gap.len = 27;
    let form = vec![h("Content-Type", "application/x-www-form-urlencoded")];
    assert!(r.body(&mut gap, &form).is_err());
    assert!(gap.raw.is_empty() && gap.withheld);
    // No content type: JSON-looking bytes that do not parse are withheld too.
    let mut unknown = body(br#"{"password": "hunter2""#);
    assert!(r.body(&mut unknown, &[]).is_err());
    // HTML and images hold no named fields: kept.
    let mut html = body(b"<html>password=hunter2</html>");
    r.body(&mut html, &[h("Content-Type", "text/html")])
        .unwrap();
    assert_eq!(html.raw, b"<html>password=hunter2</html>");
}

#[test]
fn form_bodies_are_redacted_even_as_text_or_untyped() {
    let r = redactor();
    for headers in [
        vec![h("Content-Type", "application/x-www-form-urlencoded")],
        vec![h("Content-Type", "text/plain")],
        vec![],
    ] {
        let mut b = body(b"user=alice&password=hunter2&remember=1");
        r.body(&mut b, &headers).unwrap();
        let t = text(&b.raw);
        assert!(
            !t.contains("hunter2")
                && t.starts_with("user=alice&password=hmac:")
                && t.ends_with("&remember=1"),
            "{headers:?}: {t}"
        );
    }
    // Cut at --max-body: redacted as far as it goes.
    let mut cut = body(b"user=alice&password=hunt");
    cut.truncated = true;
    cut.len = 100;
    r.body(
        &mut cut,
        &[h("Content-Type", "application/x-www-form-urlencoded")],
    )
    .unwrap();
    assert!(!text(&cut.raw).contains("hunt"), "{}", text(&cut.raw));
    // Prose is not a form.
    let mut prose = body(b"the password is hunter2");
    r.body(&mut prose, &[h("Content-Type", "text/plain")])
        .unwrap();
    assert_eq!(prose.raw, b"the password is hunter2");
}

#[test]
fn multipart_fields_are_redacted_and_a_cut_multipart_is_withheld() {
    let r = redactor();
    let headers = vec![h(
        "Content-Type",
        "multipart/form-data; boundary=\"XyZ-42\"",
    )];
    let raw = b"--XyZ-42\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nalice\r\n\
--XyZ-42\r\nContent-Disposition: form-data; name=\"Password\"\r\n\r\nhunter2\r\n\
--XyZ-42\r\nContent-Disposition: form-data; name=\"avatar\"; filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\
--XyZ-42--\r\n";
    let mut b = body(raw);
    r.body(&mut b, &headers).unwrap();
    let t = text(&b.raw);
    assert!(!t.contains("hunter2"), "{t}");
    assert!(
        t.contains("name=\"user\"\r\n\r\nalice\r\n--XyZ-42")
            && t.contains("name=\"Password\"\r\n\r\nhmac:")
            && t.contains("\u{fffd}PNG")
            && t.ends_with("--XyZ-42--\r\n"),
        "{t}"
    );
    let mut cut = body(&raw[..raw.len() - 40]);
    cut.truncated = true;
    cut.len = raw.len() as u64;
    assert!(r
        .body(&mut cut, &headers)
        .unwrap_err()
        .contains("closing boundary"));
    assert!(cut.raw.is_empty() && cut.withheld);
}

#[test]
fn a_random_key_comes_from_the_os() {
    let a = Redactor::random_key().unwrap();
    let b = Redactor::random_key().unwrap();
    assert_eq!(a.len(), 32);
    assert_ne!(a, b);
    assert!(Redaction::Off.resolve().unwrap().is_none());
    assert!(Redaction::RandomKey(vec![]).resolve().unwrap().is_some());
}

#[test]
fn a_replays_row_is_redacted_like_the_recording() {
    let r = redactor();
    let mut row = crate::replays::ReplayRecord {
        run_id: "r".into(),
        exchange_id: "e".into(),
        pass: 0,
        target: "production".into(),
        target_url: "http://127.0.0.1:1".into(),
        recorded_start_us: 1,
        sent_at_us: Some(2),
        method: "POST".into(),
        url: "http://127.0.0.1:1/login?api_key=K1&next=/home".into(),
        path: "/login".into(),
        query: Some("api_key=K1&next=/home".into()),
        request_headers: vec![
            h("Authorization", "Bearer S1"),
            h("Content-Type", "application/x-www-form-urlencoded"),
        ],
        request_body: b"user=ann&password=P1".to_vec(),
        status: Some(200),
        response_version: Some("HTTP/1.1".into()),
        response_headers: vec![
            h("Content-Type", "application/json"),
            h("Set-Cookie", "sid=C1"),
        ],
        response_body: br#"{"token":"T1","name":"ann"}"#.to_vec(),
        response_body_decoded: None,
        response_body_len: 27,
        response_body_truncated: false,
        connect_us: None,
        ttfb_us: Some(1),
        total_us: Some(2),
        error_kind: None,
        error_message: None,
        send_position: None,
    };
    let mut same = row.clone();
    assert!(r.apply_replay(&mut row).is_empty());
    let all = format!(
        "{} {:?} {:?} {:?} {} {}",
        row.url,
        row.query,
        row.request_headers,
        row.response_headers,
        text(&row.request_body),
        text(&row.response_body)
    );
    for secret in ["K1", "S1", "P1", "C1", "T1"] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
    assert!(all.contains("next=/home") && all.contains("ann"));
    r.apply_replay(&mut same);
    assert_eq!(row.response_body, same.response_body, "equal stays equal");
    // A JSON body cut short cannot be redacted whole: emptied, its length kept.
    let mut cut = row.clone();
    cut.response_body = br#"{"token":"T2","na"#.to_vec();
    cut.response_body_len = 40;
    cut.response_body_truncated = true;
    assert_eq!(r.apply_replay(&mut cut), vec!["response body"]);
    assert!(cut.response_body.is_empty() && cut.response_body_len == 40);
}

/// JSON served as `text/plain` (nginx's bare `return`, many test servers) is redacted as JSON;
/// text that only starts like JSON stays as it is.
#[test]
fn json_served_as_text_is_redacted_as_json() {
    let r = redactor();
    let plain = vec![h("Content-Type", "text/plain")];
    let mut b = body(br#"{"access_token":"s3cr3t-session","user":"u"}"#);
    r.body(&mut b, &plain).unwrap();
    let out = text(&b.raw);
    assert!(!out.contains("s3cr3t-session"), "{out}");
    assert!(out.contains("\"user\":\"u\""), "{out}");
    let mut t = body(b"{not json} but a log line");
    r.body(&mut t, &plain).unwrap();
    assert_eq!(text(&t.raw), "{not json} but a log line");
}

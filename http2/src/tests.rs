use super::*;
use proptest::prelude::*;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

struct Peer {
    enc: loona_hpack::Encoder<'static>,
}

impl Peer {
    fn new() -> Self {
        Peer {
            enc: loona_hpack::Encoder::new(),
        }
    }

    fn block(&mut self, fields: &[(&str, &str)]) -> Vec<u8> {
        self.enc
            .encode(fields.iter().map(|(n, v)| (n.as_bytes(), v.as_bytes())))
    }

    fn headers(&mut self, stream: u32, fields: &[(&str, &str)], end_stream: bool) -> Vec<u8> {
        let block = self.block(fields);
        let flags = END_HEADERS_FLAG | if end_stream { 1 } else { 0 };
        frame(1, flags, stream, &block)
    }
}

const END_HEADERS_FLAG: u8 = frame::END_HEADERS;

fn get(path: &str) -> Vec<(&str, &str)> {
    vec![
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "example.test"),
        (":path", path),
        ("user-agent", "test/1"),
    ]
}

/// A client and a server conversation: preface, SETTINGS both ways, then `f`'s frames.
fn conversation(
    f: impl FnOnce(&mut Peer, &mut Peer, &mut Vec<u8>, &mut Vec<u8>),
) -> (Vec<u8>, Vec<u8>) {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut client = PREFACE.to_vec();
    client.extend(frame(4, 0, 0, &[]));
    let mut server = frame(4, 0, 0, &[0, 3, 0, 0, 0, 100]);
    server.extend(frame(4, 1, 0, &[]));
    client.extend(frame(4, 1, 0, &[]));
    f(&mut c, &mut s, &mut client, &mut server);
    (client, server)
}

fn decode(client: &[u8], server: &[u8]) -> Vec<Stream> {
    let mut conn = Connection::new(Limits::default());
    conn.feed(true, client, 1);
    conn.feed(false, server, 2);
    conn.finish();
    conn.take_streams()
}

#[test]
fn one_request_and_its_response() {
    let (client, server) = conversation(|c, s, cb, sb| {
        cb.extend(c.headers(1, &get("/a?x=1"), true));
        sb.extend(s.headers(
            1,
            &[(":status", "200"), ("content-type", "text/plain")],
            false,
        ));
        sb.extend(frame(0, 1, 1, b"hello"));
    });
    let streams = decode(&client, &server);
    assert_eq!(streams.len(), 1);
    let st = &streams[0];
    assert_eq!(st.id, 1);
    let req = st.request.as_ref().unwrap();
    assert_eq!(req.pseudo(":method"), Some("GET"));
    assert_eq!(req.pseudo(":path"), Some("/a?x=1"));
    assert_eq!(req.pseudo(":authority"), Some("example.test"));
    assert_eq!(req.header("user-agent"), Some("test/1"));
    assert!(req.complete);
    let resp = st.response.as_ref().unwrap();
    assert_eq!(resp.pseudo(":status"), Some("200"));
    assert_eq!(resp.body, b"hello");
    assert!(resp.complete && !st.lost && st.error.is_none());
}

#[test]
fn interleaved_streams_are_told_apart_and_ordered_by_request() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut conn = Connection::new(Limits::default());
    conn.feed(true, PREFACE, 0);
    // Three requests at 10, 20, 30; answers in reverse, their DATA interleaved; the dynamic
    // table carries the repeated fields.
    for (i, id) in [1u32, 3, 5].into_iter().enumerate() {
        let path = format!("/item/{id}");
        conn.feed(true, &c.headers(id, &get(&path), true), 10 * (i as i64 + 1));
    }
    for id in [5u32, 3, 1] {
        conn.feed(false, &s.headers(id, &[(":status", "200")], false), 40);
    }
    for id in [3u32, 5, 1] {
        conn.feed(
            false,
            &frame(0, 0, id, format!("part-{id}-").as_bytes()),
            50,
        );
    }
    for id in [1u32, 5, 3] {
        conn.feed(false, &frame(0, 1, id, b"end"), 60);
    }
    let streams = conn.take_streams();
    let ids: Vec<u32> = streams.iter().map(|s| s.id).collect();
    assert_eq!(ids, [1, 3, 5]);
    for st in &streams {
        assert_eq!(
            st.request.as_ref().unwrap().pseudo(":path"),
            Some(format!("/item/{}", st.id).as_str())
        );
        assert_eq!(
            st.response.as_ref().unwrap().body,
            format!("part-{}-end", st.id).into_bytes()
        );
    }
}

#[test]
fn continuation_padding_priority_trailers_and_interim() {
    let (client, server) = conversation(|c, s, cb, sb| {
        // HEADERS with PADDED and PRIORITY, the block split over two CONTINUATIONs.
        let block = c.block(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "grpc.test"),
            (":path", "/pkg.Svc/Call"),
            ("content-type", "application/grpc"),
        ]);
        let (a, rest) = block.split_at(3);
        let (b, d) = rest.split_at(rest.len() / 2);
        let mut payload = vec![4u8]; // pad length
        payload.extend_from_slice(&[0, 0, 0, 0, 16]); // priority
        payload.extend_from_slice(a);
        payload.extend_from_slice(&[0; 4]);
        cb.extend(frame(1, frame::PADDED | frame::PRIORITY, 1, &payload));
        cb.extend(frame(9, 0, 1, b));
        cb.extend(frame(9, frame::END_HEADERS, 1, d));
        let mut data = vec![2u8];
        data.extend_from_slice(b"msg");
        data.extend_from_slice(&[0, 0]);
        cb.extend(frame(0, frame::PADDED | 1, 1, &data));
        sb.extend(s.headers(1, &[(":status", "100")], false));
        sb.extend(s.headers(
            1,
            &[(":status", "200"), ("content-type", "application/grpc")],
            false,
        ));
        sb.extend(frame(0, 0, 1, b"reply"));
        sb.extend(s.headers(
            1,
            &[("grpc-status", "5"), ("grpc-message", "not found")],
            true,
        ));
    });
    let streams = decode(&client, &server);
    let st = &streams[0];
    let req = st.request.as_ref().unwrap();
    assert_eq!(req.pseudo(":path"), Some("/pkg.Svc/Call"));
    assert_eq!(req.body, b"msg");
    assert!(req.complete);
    assert_eq!(st.interim, [100]);
    let resp = st.response.as_ref().unwrap();
    assert_eq!(resp.pseudo(":status"), Some("200"));
    assert_eq!(resp.body, b"reply");
    assert_eq!(
        resp.trailers,
        [
            ("grpc-status".to_owned(), "5".to_owned()),
            ("grpc-message".to_owned(), "not found".to_owned())
        ]
    );
    assert!(resp.complete);
}

#[test]
fn a_reset_stream_ends_with_what_was_seen() {
    let (client, server) = conversation(|c, _, cb, sb| {
        cb.extend(c.headers(1, &get("/slow"), true));
        sb.extend(frame(3, 0, 1, &8u32.to_be_bytes()));
    });
    let streams = decode(&client, &server);
    assert_eq!(streams[0].reset, Some(8));
    assert!(streams[0].response.is_none());
}

#[test]
fn a_gap_ends_the_direction_and_marks_its_open_streams_never_guessing() {
    let (mut c, mut s) = (Peer::new(), Peer::new());
    let mut conn = Connection::new(Limits::default());
    conn.feed(true, PREFACE, 0);
    conn.feed(true, &c.headers(1, &get("/a"), true), 1);
    conn.feed(true, &c.headers(3, &get("/b"), true), 2);
    conn.feed(false, &s.headers(1, &[(":status", "200")], true), 3);
    // Bytes of the server's answer to stream 3 were lost: its later frames cannot be found.
    conn.gap(false, 100);
    conn.feed(false, &s.headers(3, &[(":status", "200")], true), 4);
    conn.finish();
    let streams = conn.take_streams();
    assert_eq!(streams.len(), 2);
    assert!(!streams[0].lost && streams[0].response.is_some());
    assert!(streams[1].lost, "stream 3 is marked, not invented");
    assert!(streams[1].response.is_none());
    assert!(streams[1]
        .error
        .as_deref()
        .unwrap()
        .contains("lost in capture"));
    assert_eq!(conn.counters().broken_directions, 1);
}

#[test]
fn a_wrong_preface_or_an_oversized_frame_breaks_the_direction() {
    let mut conn = Connection::new(Limits::default());
    conn.feed(true, b"GET / HTTP/1.1\r\n\r\n", 0);
    assert_eq!(conn.counters().broken_directions, 1);
    let mut conn = Connection::new(Limits::default());
    conn.feed(true, PREFACE, 0);
    conn.feed(true, &[0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 1], 1);
    assert_eq!(conn.counters().broken_directions, 1);
}

#[test]
fn a_dynamic_table_size_update_over_the_settings_is_an_error_not_a_panic() {
    let mut conn = Connection::new(Limits::default());
    conn.feed(true, PREFACE, 0);
    // 0x3f e1 ff 03: a size update to 65,536 + … (over the default 4,096 allowed).
    conn.feed(true, &frame(1, 5, 1, &[0x3f, 0xe1, 0xff, 0x03, 0x82]), 1);
    assert_eq!(conn.counters().broken_directions, 1);
    // The panic input of RUSTSEC-2023-0085.
    let mut conn = Connection::new(Limits::default());
    conn.feed(true, PREFACE, 0);
    conn.feed(true, &frame(1, 5, 1, &[0x3f]), 1);
    assert_eq!(conn.counters().broken_directions, 1);
}

proptest! {
    /// Whatever the bytes, decoding never panics and holds what it was given at most.
    #[test]
    fn any_bytes_decode_without_a_panic(
        client in proptest::collection::vec(any::<u8>(), 0..600),
        server in proptest::collection::vec(any::<u8>(), 0..600),
        cut in 0usize..600,
    ) {
        let mut conn = Connection::new(Limits::default());
        let mut c = PREFACE.to_vec();
        c.extend_from_slice(&client);
        let cut = cut.min(c.len());
        conn.feed(true, &c[..cut], 1);
        conn.feed(false, &server, 2);
        conn.feed(true, &c[cut..], 3);
        conn.finish();
        let _ = conn.take_streams();
    }

    /// However the captured bytes are cut into segments, the streams are the same.
    #[test]
    fn segmentation_does_not_change_the_streams(cuts in proptest::collection::vec(1usize..40, 1..30)) {
        let (client, server) = conversation(|c, s, cb, sb| {
            for id in [1u32, 3, 5, 7] {
                cb.extend(c.headers(id, &get(&format!("/p/{id}")), true));
                sb.extend(s.headers(id, &[(":status", "200"), ("x-id", &id.to_string())], false));
                sb.extend(frame(0, 1, id, format!("body {id}").as_bytes()));
            }
        });
        let whole = decode(&client, &server);
        let mut conn = Connection::new(Limits::default());
        for (bytes, from_client) in [(&client, true), (&server, false)] {
            let mut at = 0;
            for n in cuts.iter().cycle() {
                if at >= bytes.len() {
                    break;
                }
                let end = (at + n).min(bytes.len());
                conn.feed(from_client, &bytes[at..end], 1 + i64::from(!from_client));
                at = end;
            }
        }
        conn.finish();
        prop_assert_eq!(conn.take_streams(), whole);
    }
}

//! Fuzzes the passive HTTP/2 decoder (`shadowtap-http2`): both directions of a connection as
//! arbitrary bytes after the client preface, cut at arbitrary points, with gaps.
//!
//! Input: records `[op u8][len u8][bytes…]`. Op bit 0 picks the direction (client, server);
//! op bit 1 makes the record a gap of `len * 97` lost bytes instead of data.
//!
//! Checks besides "no panic": what the decoder holds stays bounded (frames are bounded by the
//! allowed frame size, bodies by `max_body`), and every stream it emits has a request or was
//! given up.
//!
//! Run: `cargo fuzz run http2_frames` from the repository root (needs cargo-fuzz).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shadowtap_http2::{Connection, Limits, PREFACE};

const LIMITS: Limits = Limits {
    max_body: 4096,
    max_header_block: 16 * 1024,
    max_open_streams: 64,
};

fuzz_target!(|data: &[u8]| {
    let mut conn = Connection::new(LIMITS);
    conn.feed(true, PREFACE, 0);
    let (mut rest, mut ts) = (data, 1i64);
    while rest.len() >= 2 {
        let (op, len) = (rest[0], usize::from(rest[1]).min(rest.len() - 2));
        let bytes = &rest[2..2 + len];
        rest = &rest[2 + len..];
        ts += 1;
        let from_client = op & 1 == 0;
        if op & 2 != 0 {
            conn.gap(from_client, len as u64 * 97);
        } else {
            conn.feed(from_client, bytes, ts);
        }
        // Frames up to 16 MiB may be allowed by SETTINGS; bodies are capped per stream.
        assert!(
            conn.buffered_bytes() <= 2 * (1 << 24) + LIMITS.max_open_streams * 2 * LIMITS.max_body as usize,
            "holds {} bytes",
            conn.buffered_bytes()
        );
        for s in conn.take_streams() {
            for m in [&s.request, &s.response].into_iter().flatten() {
                assert!(m.body.len() as u64 <= LIMITS.max_body);
            }
        }
    }
    conn.finish();
    let _ = conn.take_streams();
});

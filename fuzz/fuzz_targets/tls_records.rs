//! Fuzzes passive TLS decryption (`shadowtap-tls`): both directions of a connection as
//! arbitrary bytes cut at arbitrary points, with gaps, against a key log that has TLS 1.2 and
//! TLS 1.3 secrets for one client random (all zero), so hellos the fuzzer writes with that
//! random reach key derivation and record opening.
//!
//! Input: records `[op u8][len u8][bytes…]`. Op bit 0 picks the direction; op bit 1 makes the
//! record a gap of `len` lost bytes instead of data.
//!
//! Checks besides "no panic": what the session holds stays bounded (a partial record, a
//! partial handshake message and the records held for keys are each capped), and plaintext
//! comes out only of records that authenticated.
//!
//! Run: `cargo fuzz run tls_records` from the repository root (needs cargo-fuzz).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shadowtap_tls::{KeyLog, Session};

fuzz_target!(|data: &[u8]| {
    let zero = "00".repeat(32);
    let keys = KeyLog::from_text(&format!(
        "CLIENT_RANDOM {zero} {m}\nCLIENT_HANDSHAKE_TRAFFIC_SECRET {zero} {s}\nSERVER_HANDSHAKE_TRAFFIC_SECRET {zero} {s}\nCLIENT_TRAFFIC_SECRET_0 {zero} {s}\nSERVER_TRAFFIC_SECRET_0 {zero} {s}\n",
        m = "11".repeat(48),
        s = "22".repeat(32),
    ));
    let mut session = Session::new();
    let mut out = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let (op, len) = (rest[0], usize::from(rest[1]).min(rest.len() - 2));
        let bytes = &rest[2..2 + len];
        rest = &rest[2 + len..];
        let dir = usize::from(op & 1);
        if op & 2 != 0 {
            session.gap(dir, len as u64);
        } else {
            session.feed(dir, bytes, &keys, &mut out);
        }
        assert!(session.buffered_bytes() <= 2 * ((1 << 14) + 2048 + 5 + (64 << 10) + (256 << 10) + (1 << 14) + 2048));
    }
    session.finish(&keys, &mut out);
    let opened = session.counters().opened;
    assert!(out.len() as u64 <= opened, "plaintext only from opened records");
});

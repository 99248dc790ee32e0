//! Fuzzes the analyzer's structural diff: two bodies from the input (split at the first NUL),
//! compared as JSON, as text and as bytes. Checks besides "no panic": a body equals itself.
//!
//! Run: `cargo fuzz run json_diff` from the repository root (needs cargo-fuzz).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shadowtap_analyzer::diff::{compare, DiffOptions, Side};

fuzz_target!(|data: &[u8]| {
    let (left, right) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, data),
    };
    let opts = DiffOptions::default();
    for ct in ["application/json", "text/plain", "application/octet-stream"] {
        let side = |body| Side {
            status: Some(200),
            headers: &[],
            body,
            content_type: Some(ct),
        };
        let _ = compare(&side(left), &side(right), &opts);
        let same = compare(&side(left), &side(left), &opts);
        assert!(same.differences.is_empty(), "a body differs from itself ({ct})");
    }
});

//! Fuzzes the policy parser: any text as a policy file. Checks besides "no panic": a policy
//! that parses yields diff options (a valid policy never panics the analyzer later).
//!
//! Run: `cargo fuzz run policy` from the repository root (needs cargo-fuzz).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shadowtap_analyzer::Policy;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = Policy::parse(text) {
        let _ = p.diff_options();
    }
});

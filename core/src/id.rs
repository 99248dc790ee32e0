//! Stable identifiers: the same input always gives the same ids, across runs and machines.

use std::time::{SystemTime, UNIX_EPOCH};

use xxhash_rust::xxh3::xxh3_128;

/// Hex form of a 128-bit hash of `parts`, each part length-prefixed so that parts cannot run
/// into each other.
pub fn stable_id(parts: &[&[u8]]) -> String {
    let mut buf = Vec::with_capacity(parts.iter().map(|p| p.len() + 8).sum());
    for p in parts {
        buf.extend_from_slice(&(p.len() as u64).to_le_bytes());
        buf.extend_from_slice(p);
    }
    format!("{:032x}", xxh3_128(&buf))
}

/// A number in `0..10_000` derived from `key`, used for deterministic sampling in basis points.
pub fn sample_bucket(key: &[u8]) -> u32 {
    (xxh3_128(key) % 10_000) as u32
}

/// 64 random bits from the OS (`getrandom`), as 16 hex digits: ids that must never repeat
/// across hosts (an instance's lease identity). Falls back to the clock and process id only
/// if the OS has no random source.
pub fn random_hex() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        b = (now.as_nanos() as u64 ^ (u64::from(std::process::id()) << 40)).to_le_bytes();
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A run id from the clock: `20261123T101500Z-1a2b` (UTC, plus 16 bits against collisions).
pub fn new_run_id() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z-{:04x}",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        (now.subsec_nanos() ^ std::process::id()) & 0xffff
    )
}

/// `2026-12-01T10:15:00.250Z` from Unix seconds (UTC, milliseconds).
pub fn rfc3339_millis(unix_secs: f64) -> String {
    let ms = (unix_secs * 1000.0).floor() as i64;
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        ms.rem_euclid(1000)
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_separate_parts() {
        assert_eq!(stable_id(&[b"a", b"bc"]), stable_id(&[b"a", b"bc"]));
        assert_ne!(stable_id(&[b"ab", b"c"]), stable_id(&[b"a", b"bc"]));
        assert_eq!(stable_id(&[b"x"]).len(), 32);
    }

    #[test]
    fn buckets_spread_evenly() {
        let below: usize = (0..20_000u32)
            .filter(|i| sample_bucket(&i.to_le_bytes()) < 2_500)
            .count();
        assert!((4_500..5_500).contains(&below), "{below}");
    }
}

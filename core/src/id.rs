//! Stable identifiers: the same input always gives the same ids, across runs and machines.

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

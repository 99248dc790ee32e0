//! The order in which one exchange is sent to its targets.
//!
//! Sending to every target "at the same moment" still means one after the other: the target
//! whose request is written first gets a head start, and on a loaded machine the last one pays
//! for the others' work. A fixed order would make that a systematic bias against one target
//! (the candidate, listed last). So every exchange gets its own random order, drawn from a
//! seed made of the run id, the exchange id and the pass: reproducible for a run, independent
//! between exchanges, and recorded per row (`send_position`) so the analyzer can check that no
//! position is favoured.

/// The order (a permutation of `0..n`) in which to send one exchange to `n` targets.
pub fn send_order(n: usize, run_id: &str, exchange_id: &str, pass: u32) -> Vec<usize> {
    let seed = xxhash_rust::xxh3::xxh3_64_with_seed(exchange_id.as_bytes(), u64::from(pass))
        ^ xxhash_rust::xxh3::xxh3_64(run_id.as_bytes()).rotate_left(17);
    let mut draws = shadowtap_core::splitmix::SplitMix(seed);
    let mut order: Vec<usize> = (0..n).collect();
    // Fisher–Yates.
    for i in (1..n).rev() {
        let j = (draws.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_target_is_first_about_equally_often_and_the_order_is_reproducible() {
        let mut first = [0u32; 3];
        for i in 0..30_000 {
            let o = send_order(3, "run-1", &format!("ex-{i}"), 0);
            let mut sorted = o.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, [0, 1, 2]);
            first[o[0]] += 1;
            assert_eq!(o, send_order(3, "run-1", &format!("ex-{i}"), 0));
        }
        for f in first {
            assert!((9_400..10_600).contains(&f), "{first:?}");
        }
        assert_eq!(send_order(1, "r", "e", 0), [0]);
        assert!(send_order(0, "r", "e", 0).is_empty());
    }
}

//! Sizes (`64K`, `16M`) and durations (`500ms`, `30s`, `10m`) as users type them in flags and
//! config files.

/// Parses `1024`, `64K`, `16M`, `1G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, c)) if c.eq_ignore_ascii_case(&'k') => (&t[..i], 1u64 << 10),
        Some((i, c)) if c.eq_ignore_ascii_case(&'m') => (&t[..i], 1 << 20),
        Some((i, c)) if c.eq_ignore_ascii_case(&'g') => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (try 4096, 64K, 16M or 1G)"))?;
    n.checked_mul(mult)
        .filter(|&v| v > 0)
        .ok_or_else(|| format!("{s:?} is out of range"))
}

/// Parses `90s`, `10m`, `2h`, `500ms` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (try 30s, 10m or 2h)"))?;
    let secs = match unit {
        "" | "s" => v,
        "ms" => v / 1000.0,
        "m" => v * 60.0,
        "h" => v * 3600.0,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use ms, s, m or h)")),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        return Err(format!("{s:?} must be above zero"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

/// A `Key:   123 kB` line of a `/proc` file, in bytes.
fn proc_kib(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// The machine's memory (`MemTotal` in `/proc/meminfo`), in bytes; `None` where it cannot be
/// read. Memory limits that default to a share of the machine start here.
pub fn machine_memory() -> Option<u64> {
    proc_kib("/proc/meminfo", "MemTotal:")
}

/// The most memory this process has had resident (`VmHWM` in `/proc/self/status`), in bytes;
/// `None` where it cannot be read. Summaries report it so a memory budget can be checked.
pub fn peak_resident_memory() -> Option<u64> {
    proc_kib("/proc/self/status", "VmHWM:")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("16M"), Ok(16 << 20));
        assert!(parse_size("0").is_err() && parse_size("x").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5 parsecs").is_err() && parse_duration("0s").is_err());
    }

    #[test]
    fn peak_resident_memory_grows_with_what_is_touched() {
        let before = peak_resident_memory().expect("Linux has /proc/self/status");
        let block = vec![1u8; 64 << 20];
        std::hint::black_box(&block);
        let after = peak_resident_memory().unwrap();
        assert!(after >= before.max(64 << 20), "{before} -> {after}");
    }
}

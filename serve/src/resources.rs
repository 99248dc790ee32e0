//! Pools' resource use, read from a Prometheus endpoint per member (`metrics_url`: the
//! service's own `/metrics` or node_exporter's). Two figures per member, each from whichever
//! family the endpoint exposes:
//! - **CPU, in cores busy**: the rate of `process_cpu_seconds_total`, or of the non-idle modes of
//!   `node_cpu_seconds_total` (summed over CPUs) between two scrapes;
//! - **memory, in bytes**: `process_resident_memory_bytes`, or
//!   `node_memory_MemTotal_bytes − node_memory_MemAvailable_bytes`.
//!
//! A pool's figure is its busiest member's. Parsing is pure ([`parse`], [`usage`]); the
//! [`Scraper`] keeps each member's previous reading for the rates.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

/// What one scrape read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reading {
    /// When, Unix seconds.
    pub at: f64,
    /// CPU seconds used so far (process, or node non-idle summed over CPUs).
    pub cpu_seconds: Option<f64>,
    /// Memory in use, bytes.
    pub memory_bytes: Option<f64>,
}

/// A member's (or a pool's) use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Usage {
    /// Cores busy over the last interval.
    pub cpu_cores: Option<f64>,
    /// Bytes in use.
    pub memory_bytes: Option<f64>,
}

/// A sample's labels, values unescaped, in their order.
pub type Labels = Vec<(String, String)>;

/// One sample line of the Prometheus or OpenMetrics text format: the metric's name, its labels
/// and its value; `None` for comments, blank and malformed lines.
pub fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let (name, mut rest) = line.split_at(name_end);
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        rest = inner;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(after) = rest.strip_prefix('}') {
                rest = after;
                break;
            }
            let (key, after) = rest.split_once('=')?;
            let mut chars = after.strip_prefix('"')?.char_indices();
            let mut value = String::new();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i,
                    (_, '\\') => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        c => value.push(c),
                    },
                    (_, c) => value.push(c),
                }
            };
            labels.push((key.trim().to_owned(), value));
            rest = &after[1 + end + 1..];
        }
    }
    let value = rest
        .split_whitespace()
        .next()?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())?;
    Some((name, labels, value))
}

/// Parses the Prometheus text format for the families above.
pub fn parse(text: &str, at: f64) -> Reading {
    let (mut process_cpu, mut process_mem) = (None, None);
    let (mut node_busy, mut mem_total, mut mem_avail) = (None::<f64>, None, None);
    for (name, labels, value) in text.lines().filter_map(sample) {
        match name {
            "process_cpu_seconds_total" => process_cpu = Some(value),
            "process_resident_memory_bytes" => process_mem = Some(value),
            "node_cpu_seconds_total" => {
                let idle = labels.iter().any(|(k, v)| k == "mode" && v == "idle");
                if !idle {
                    node_busy = Some(node_busy.unwrap_or(0.0) + value);
                }
            }
            "node_memory_MemTotal_bytes" => mem_total = Some(value),
            "node_memory_MemAvailable_bytes" => mem_avail = Some(value),
            _ => {}
        }
    }
    let node_mem = match (mem_total, mem_avail) {
        (Some(t), Some(a)) => Some((t - a).max(0.0)),
        _ => None,
    };
    Reading {
        at,
        cpu_seconds: process_cpu.or(node_busy),
        memory_bytes: process_mem.or(node_mem),
    }
}

/// A member's use between two readings.
pub fn usage(previous: Option<&Reading>, current: &Reading) -> Usage {
    let cpu_cores = match (
        previous.and_then(|p| p.cpu_seconds.map(|c| (p.at, c))),
        current.cpu_seconds,
    ) {
        (Some((t0, c0)), Some(c1)) if current.at > t0 && c1 >= c0 => {
            Some((c1 - c0) / (current.at - t0))
        }
        _ => None,
    };
    Usage {
        cpu_cores,
        memory_bytes: current.memory_bytes,
    }
}

/// A pool's use: its busiest member's figures.
pub fn pool(members: &[Usage]) -> Usage {
    let max = |f: fn(&Usage) -> Option<f64>| {
        members
            .iter()
            .filter_map(f)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    Usage {
        cpu_cores: max(|u| u.cpu_cores),
        memory_bytes: max(|u| u.memory_bytes),
    }
}

/// Scrapes members' endpoints, remembering each one's last reading.
pub struct Scraper {
    client: reqwest::Client,
    last: Mutex<BTreeMap<String, Reading>>,
}

impl Scraper {
    /// A scraper with short timeouts (a slow endpoint never delays the monitor long).
    pub fn new() -> Option<Scraper> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_secs(1))
            .build()
            .ok()?;
        Some(Scraper {
            client,
            last: Mutex::new(BTreeMap::new()),
        })
    }

    /// Reads `url` now; the member's use since the previous reading, or why not.
    pub async fn scrape(&self, url: &str, now: f64) -> Result<Usage, String> {
        let resp = self.client.get(url).send().await.map_err(|e| {
            if e.is_timeout() {
                "timed out".to_owned()
            } else {
                "could not connect".to_owned()
            }
        })?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status().as_u16()));
        }
        let text = resp
            .text()
            .await
            .map_err(|_| "the body did not arrive".to_owned())?;
        let reading = parse(&text, now);
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        let u = usage(last.get(url), &reading);
        last.insert(url.to_owned(), reading);
        Ok(u)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever the label values (quotes, braces, backslashes, newlines, commas), a sample
        /// encoded by prometheus-client (the maintained encoder) reads back as it was set.
        #[test]
        fn samples_read_back_what_prometheus_client_wrote(
            values in proptest::collection::vec("[a-z{}\"\\\\,= \n]{0,12}", 1..4),
            x in -1.0e12f64..1.0e12,
        ) {
            let mut e = crate::exposition::Exposition::default();
            let names = ["mode", "cpu", "path", "x"];
            let labels: Vec<(&str, &str)> =
                names.iter().zip(&values).map(|(k, v)| (*k, v.as_str())).collect();
            e.set("node_cpu_seconds", "t", &labels, x);
            let text = e.encode();
            let got: Vec<_> = text.lines().filter_map(sample).collect();
            proptest::prop_assert_eq!(got.len(), 1, "{}", text);
            let (name, read, value) = &got[0];
            proptest::prop_assert_eq!(*name, "node_cpu_seconds");
            let want: Vec<(String, String)> =
                labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
            proptest::prop_assert_eq!(read, &want);
            proptest::prop_assert!((value - x).abs() <= x.abs() * 1e-12, "{} {}", value, x);
        }
    }

    proptest::proptest! {
        /// Whatever an endpoint answers, reading it never panics.
        #[test]
        fn any_text_reads_without_a_panic(text in "[a-z_{}\"\\\\,= \n0-9.eE+#-]{0,80}") {
            let _ = parse(&text, 1.0);
        }
    }

    #[test]
    fn a_label_that_only_mentions_idle_is_not_idle() {
        let text = "node_cpu_seconds_total{cpu=\"0\",xmode=\"idle\",mode=\"user\"} 5\n\
                    node_cpu_seconds_total{path=\"mode=\\\"idle\\\"}\",mode=\"system\"} 2\n\
                    node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 100\n";
        assert_eq!(parse(text, 1.0).cpu_seconds, Some(7.0));
    }

    #[test]
    fn process_and_node_families() {
        let process = "# HELP process_cpu_seconds_total x\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 12.5\nprocess_resident_memory_bytes 1.5e+08\n";
        let r = parse(process, 100.0);
        assert_eq!((r.cpu_seconds, r.memory_bytes), (Some(12.5), Some(1.5e8)));
        let node = "node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 900\nnode_cpu_seconds_total{cpu=\"0\",mode=\"user\"} 60\nnode_cpu_seconds_total{cpu=\"1\",mode=\"system\"} 40\nnode_memory_MemTotal_bytes 8e9\nnode_memory_MemAvailable_bytes 6e9\n";
        let r0 = parse(node, 100.0);
        assert_eq!((r0.cpu_seconds, r0.memory_bytes), (Some(100.0), Some(2e9)));
        let r1 = parse(&node.replace("} 60", "} 75"), 110.0);
        let u = usage(Some(&r0), &r1);
        assert_eq!(u.cpu_cores, Some(1.5));
        assert_eq!(
            usage(None, &r1).cpu_cores,
            None,
            "a rate needs two readings"
        );
        assert_eq!(parse("garbage {\nnot a line\n", 0.0), Reading::default());
        let p = pool(&[
            u,
            Usage {
                cpu_cores: Some(0.5),
                memory_bytes: Some(3e9),
            },
        ]);
        assert_eq!((p.cpu_cores, p.memory_bytes), (Some(1.5), Some(3e9)));
    }
}

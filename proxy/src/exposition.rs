//! The Prometheus exposition of the proxy's admin API and the control plane (`GET /metrics`),
//! encoded by `prometheus-client`: every family once, with its HELP and TYPE, its samples
//! together whatever order they are set in, label values escaped. Built afresh for each scrape:
//! the figures live elsewhere (the pools' counters, the store).
//!
//! OpenMetrics text, which Prometheus asks for and reads: a counter's family is named without
//! its `_total` suffix and its samples with it. Checked by the OpenMetrics parser of the
//! Prometheus project's Python client in the proxy's tests, and (gauges only, which read the
//! same in the classic format) by `promtool check metrics` in the control plane's.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;
type Gauges = Family<Labels, Gauge<f64, AtomicU64>>;
type Counters = Family<Labels, Counter<u64, AtomicU64>>;

fn owned(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The content type of [`Exposition::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Gauges and counters set for one scrape.
#[derive(Default)]
pub struct Exposition {
    registry: Registry,
    families: BTreeMap<&'static str, Gauges>,
    counters: BTreeMap<&'static str, Counters>,
}

impl Exposition {
    /// Sets gauge `name` (registered with `help` on first use; help without its final full
    /// stop) with `labels` to `value`.
    pub fn set(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: f64,
    ) {
        let family = self.families.entry(name).or_insert_with(|| {
            let f = Gauges::default();
            self.registry.register(name, help, f.clone());
            f
        });
        family.get_or_create(&owned(labels)).set(value);
    }

    /// Sets counter `name` (without the `_total` suffix its samples get; registered with
    /// `help` on first use) with `labels` to `value`.
    pub fn count(
        &mut self,
        name: &'static str,
        help: &'static str,
        labels: &[(&str, &str)],
        value: u64,
    ) {
        let family = self.counters.entry(name).or_insert_with(|| {
            let f = Counters::default();
            self.registry.register(name, help, f.clone());
            f
        });
        // Set once per scrape, from zero.
        family.get_or_create(&owned(labels)).inc_by(value);
    }

    /// The text to answer a scrape with.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_grouped_typed_and_escaped() {
        let mut e = Exposition::default();
        e.set("shadowtap_a", "A", &[("lb", "one")], 1.0);
        e.set("shadowtap_b", "B", &[("lb", "one")], 2.0);
        e.set("shadowtap_a", "A", &[("lb", "t\"wo")], 3.0);
        let text = e.encode();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..2],
            ["# HELP shadowtap_a A.", "# TYPE shadowtap_a gauge"]
        );
        let mut a: Vec<&str> = lines[2..4].to_vec();
        a.sort_unstable();
        assert_eq!(
            a,
            [
                "shadowtap_a{lb=\"one\"} 1.0",
                "shadowtap_a{lb=\"t\\\"wo\"} 3.0"
            ]
        );
        assert_eq!(
            lines[4..],
            [
                "# HELP shadowtap_b B.",
                "# TYPE shadowtap_b gauge",
                "shadowtap_b{lb=\"one\"} 2.0",
                "# EOF"
            ]
        );
    }

    #[test]
    fn counters_are_typed_and_their_samples_get_the_total_suffix() {
        let mut e = Exposition::default();
        e.count("shadowtap_requests", "Requests", &[("pool", "p")], 20);
        e.count("shadowtap_requests", "Requests", &[("pool", "q")], 0);
        let text = e.encode();
        assert!(
            text.contains("# HELP shadowtap_requests Requests."),
            "{text}"
        );
        assert!(text.contains("# TYPE shadowtap_requests counter"), "{text}");
        assert!(
            text.contains("shadowtap_requests_total{pool=\"p\"} 20"),
            "{text}"
        );
        assert!(
            text.contains("shadowtap_requests_total{pool=\"q\"} 0"),
            "{text}"
        );
    }
}

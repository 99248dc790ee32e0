//! Live capture statistics: periodic records (stderr line, JSON lines file) and a Prometheus
//! text endpoint.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use crate::live::LiveStats;

/// One statistics record, written every `--stats-interval`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct StatsRecord {
    /// Wall-clock time, seconds since the Unix epoch.
    pub ts: f64,
    /// Seconds since the capture started.
    pub elapsed_s: f64,
    /// Packets processed.
    pub packets: u64,
    /// Captured bytes processed.
    pub bytes: u64,
    /// libpcap and queue counters.
    pub pcap: LiveStats,
    /// Exchanges found.
    pub exchanges_seen: u64,
    /// Exchanges handed to the writers (after criteria and sampling).
    pub exchanges_kept: u64,
    /// Flows open.
    pub open_flows: u64,
    /// Bytes held in memory by open flows (out-of-order segments, parser buffers, exchanges
    /// waiting for their response).
    pub bytes_buffered: u64,
    /// Whole flows left out so far because the pipeline fell behind.
    pub flows_shed: u64,
    /// Share of new flows admitted now (100 unless the pipeline is behind).
    pub new_flows_kept_percent: f64,
    /// Flows closed early because the open flows held more than their share of
    /// `--max-memory` (their exchanges written flagged incomplete).
    pub flows_cut_by_memory: u64,
}

impl StatsRecord {
    /// One line for stderr.
    pub fn line(&self) -> String {
        format!(
            "stats: {:.0}s {} packets, {} received / {} kernel-dropped / {} if-dropped / {} queue-dropped ({} ms queue-waited), {} exchanges ({} kept), {} open flows, {} bytes buffered, {} flows cut by --max-memory, {} flows shed (keeping {:.0}% of new flows)",
            self.elapsed_s,
            self.packets,
            self.pcap.received,
            self.pcap.kernel_dropped,
            self.pcap.interface_dropped,
            self.pcap.queue_dropped,
            self.pcap.queue_waited_ms,
            self.exchanges_seen,
            self.exchanges_kept,
            self.open_flows,
            self.bytes_buffered,
            self.flows_cut_by_memory,
            self.flows_shed,
            self.new_flows_kept_percent
        )
    }

    /// Prometheus text exposition format.
    pub fn prometheus(&self) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, v: u64| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        };
        metric(
            "shadowtap_packets_total",
            "counter",
            "Packets processed.",
            self.packets,
        );
        metric(
            "shadowtap_bytes_total",
            "counter",
            "Captured bytes processed.",
            self.bytes,
        );
        metric(
            "shadowtap_pcap_received_total",
            "counter",
            "Packets libpcap received (pcap_stats ps_recv).",
            self.pcap.received,
        );
        metric(
            "shadowtap_pcap_kernel_dropped_total",
            "counter",
            "Packets the kernel dropped (ps_drop).",
            self.pcap.kernel_dropped,
        );
        metric(
            "shadowtap_pcap_interface_dropped_total",
            "counter",
            "Packets the interface dropped (ps_ifdrop).",
            self.pcap.interface_dropped,
        );
        metric(
            "shadowtap_queue_dropped_total",
            "counter",
            "Packets dropped because the pipeline stayed stuck.",
            self.pcap.queue_dropped,
        );
        metric("shadowtap_queue_waited_ms_total", "counter", "Milliseconds the packet reader waited for a full queue (the kernel buffer held the traffic).", self.pcap.queue_waited_ms);
        metric(
            "shadowtap_flows_cut_by_memory_total",
            "counter",
            "Flows closed early because open flows held more than their share of --max-memory.",
            self.flows_cut_by_memory,
        );
        metric(
            "shadowtap_exchanges_total",
            "counter",
            "HTTP exchanges found.",
            self.exchanges_seen,
        );
        metric(
            "shadowtap_exchanges_kept_total",
            "counter",
            "Exchanges kept after match criteria and sampling.",
            self.exchanges_kept,
        );
        metric(
            "shadowtap_open_flows",
            "gauge",
            "TCP flows open.",
            self.open_flows,
        );
        metric(
            "shadowtap_bytes_buffered",
            "gauge",
            "Bytes held in memory by open flows.",
            self.bytes_buffered,
        );
        metric(
            "shadowtap_flows_shed_total",
            "counter",
            "Whole flows left out because the pipeline fell behind.",
            self.flows_shed,
        );
        out
    }
}

/// Serves the latest metrics text on `addr` (any path) from a background thread; returns the
/// bound address (useful with port 0) and the slot to update.
pub fn serve_metrics(addr: SocketAddr) -> std::io::Result<(SocketAddr, Arc<Mutex<String>>)> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let text = Arc::new(Mutex::new(StatsRecord::default().prometheus()));
    let shared = text.clone();
    std::thread::Builder::new().name("shadowtap-metrics".into()).spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 2048];
            let _ = conn.read(&mut buf);
            let body = shared.lock().map(|t| t.clone()).unwrap_or_default();
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    })?;
    Ok((bound, text))
}

//! The capture summary: everything read, skipped, lost and written. Loss is always counted.

use std::path::PathBuf;

use serde::Serialize;

use crate::reassembly::ReassemblyStats;

/// Per input file.
#[derive(Debug, Clone, Default, Serialize)]
pub struct InputSummary {
    /// The file.
    pub path: PathBuf,
    /// Packets read.
    pub packets: u64,
    /// Captured bytes read.
    pub bytes: u64,
    /// Why reading stopped early, if it did.
    pub error: Option<String>,
}

/// Counts of exchanges by flag, among those written.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FlagCounts {
    /// Without a response.
    pub no_response: u64,
    /// Cut off before their end.
    pub incomplete: u64,
    /// With lost bytes or uncertain pairing.
    pub gap: u64,
    /// With a parse error.
    pub parse_error: u64,
    /// With a body over the cap.
    pub truncated: u64,
    /// With a body whose content coding could not be undone.
    pub decode_error: u64,
}

/// What the caps cost: none of these is silent.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CapLosses {
    /// Flows closed early because the flow table was full (their open exchanges are incomplete).
    pub flows_evicted_by_cap: u64,
    /// Flows closed early, the largest first, because the open flows held more than
    /// `--max-memory` (their open exchanges are incomplete).
    pub flows_cut_by_memory: u64,
    /// Holes skipped early because a direction's out-of-order buffer was full.
    pub gaps_forced_by_buffer_cap: u64,
    /// Fragmented IP packets dropped (table full, timeout, inconsistent fragments).
    pub ip_fragments_dropped: u64,
    /// Requests written without response because too many were outstanding on a connection.
    pub unanswered_overflow: u64,
    /// Bodies kept only in part because they exceeded `--max-body`.
    pub bodies_truncated: u64,
}

/// The summary of one `shadowtap capture` run, also written as JSON beside the data.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptureSummary {
    /// Identifies the run; output files carry it in their names.
    pub run_id: String,
    /// Per input.
    pub inputs: Vec<InputSummary>,
    /// Packets read.
    pub packets: u64,
    /// Captured bytes read.
    pub bytes: u64,
    /// TCP segments decoded.
    pub tcp_segments: u64,
    /// UDP datagrams skipped.
    pub udp_skipped: u64,
    /// Other packets skipped (non-IP, ICMP, …).
    pub other_skipped: u64,
    /// Packets that could not be decoded.
    pub malformed_packets: u64,
    /// Packets captured shorter than they were on the wire (snap length): their payload is
    /// partly missing.
    pub snaplen_truncated_packets: u64,
    /// IP packets rebuilt from fragments.
    pub ip_fragments_reassembled: u64,
    /// Packets whose inner packet was decoded (VXLAN, GRE, ERSPAN mirror encapsulation).
    pub decapsulated_packets: u64,
    /// Reassembly counters.
    pub reassembly: ReassemblyStats,
    /// Exchanges found.
    pub exchanges_seen: u64,
    /// Exchanges left out because they did not meet the match criteria.
    pub exchanges_not_matched: u64,
    /// Exchanges left out by sampling.
    pub exchanges_sampled_out: u64,
    /// Exchanges written.
    pub exchanges_written: u64,
    /// Flags among the written exchanges.
    pub flags: FlagCounts,
    /// What the caps cost.
    pub lost_to_caps: CapLosses,
    /// Parquet files written.
    pub files: Vec<PathBuf>,
    /// Schema version of the files.
    pub schema_version: u32,
    /// How secrets were handled (`on, random key per run`, `on, key from …`, `off`).
    pub redaction: String,
    /// Live capture counters (kernel and interface drops), for `--interface` runs.
    pub live: Option<crate::live::LiveStats>,
    /// Whole flows left out because the pipeline fell behind (live capture only).
    pub load_shed: Option<crate::shedding::ShedStats>,
    /// The budget the run was given (`--max-memory`), in bytes.
    pub max_memory: u64,
    /// The most memory the process had resident by the end of the run (the kernel's `VmHWM`),
    /// in bytes; `None` where it cannot be read.
    pub peak_resident_bytes: Option<u64>,
}

impl CaptureSummary {
    /// A human-readable block for stderr.
    pub fn render(&self) -> String {
        let r = &self.reassembly;
        let c = &self.lost_to_caps;
        let f = &self.flags;
        let mut s = String::new();
        s.push_str(&format!(
            "packets      {} ({} bytes) from {} input(s)\n",
            self.packets,
            self.bytes,
            self.inputs.len()
        ));
        s.push_str(&format!(
            "flows        {} TCP ({} HTTP, {} other, {} without payload), peak open {}\n",
            r.flows, r.http_flows, r.non_http_flows, r.empty_flows, r.peak_flows
        ));
        if self.decapsulated_packets > 0 {
            s.push_str(&format!(
                "tunnels      {} packets decapsulated (VXLAN, GRE, ERSPAN)\n",
                self.decapsulated_packets
            ));
        }
        s.push_str(&format!(
            "skipped      {} UDP, {} other, {} malformed packets, {} non-HTTP bytes on HTTP flows\n",
            self.udp_skipped, self.other_skipped, self.malformed_packets, r.skipped_bytes
        ));
        s.push_str(&format!(
            "tcp          {} retransmitted, {} out-of-order segments; {} gaps ({} bytes lost)\n",
            r.retransmitted_segments, r.out_of_order_segments, r.gaps, r.gap_bytes
        ));
        s.push_str(&format!(
            "exchanges    {} seen, {} not matched, {} sampled out, {} written; {} orphan responses\n",
            self.exchanges_seen, self.exchanges_not_matched, self.exchanges_sampled_out, self.exchanges_written, r.orphan_responses
        ));
        if r.h2_connections > 0 {
            s.push_str(&format!(
                "http/2       {} connections (h2c in clear, or h2 read from TLS); {} streams flagged as lost, {} without their request (no row)\n",
                r.h2_connections, r.h2_lost_streams, r.h2_headless_streams
            ));
        }
        if r.tls_connections > 0 {
            s.push_str(&format!(
                "tls          {} connections: {} decrypted, {} without keys in the key log, {} unsupported suites, {} failed\n",
                r.tls_connections, r.tls_decrypted, r.tls_undecrypted, r.tls_unsupported, r.tls_failed
            ));
        }
        s.push_str(&format!(
            "flagged      {} no response, {} incomplete, {} gap, {} parse error, {} truncated, {} decode error\n",
            f.no_response, f.incomplete, f.gap, f.parse_error, f.truncated, f.decode_error
        ));
        s.push_str(&format!(
            "caps         {} flows evicted, {} flows cut by --max-memory, {} gaps forced, {} IP fragments dropped, {} unanswered overflow, {} bodies truncated\n",
            c.flows_evicted_by_cap, c.flows_cut_by_memory, c.gaps_forced_by_buffer_cap, c.ip_fragments_dropped, c.unanswered_overflow, c.bodies_truncated
        ));
        if self.snaplen_truncated_packets > 0 {
            s.push_str(&format!(
                "warning      {} packets were captured shorter than on the wire (snap length); their payload is lost (capture with -s 0)\n",
                self.snaplen_truncated_packets
            ));
        }
        if let Some(l) = &self.live {
            s.push_str(&format!(
                "live         {} received by libpcap, {} dropped by the kernel, {} by the interface, {} by a stuck pipeline (waited {} ms for it in all)\n",
                l.received, l.kernel_dropped, l.interface_dropped, l.queue_dropped, l.queue_waited_ms
            ));
        }
        if let Some(shed) = self.load_shed.filter(|s| s.flows > 0) {
            s.push_str(&format!(
                "load shed    {} whole flows ({} packets, {} bytes) left out while the pipeline was behind, {} of them cut while open (their exchange in progress not written)\n",
                shed.flows, shed.packets, shed.bytes, self.reassembly.flows_shed
            ));
        }
        for i in &self.inputs {
            if let Some(e) = &i.error {
                s.push_str(&format!("warning      {e}\n"));
            }
        }
        s.push_str(&format!("redaction    {}\n", self.redaction));
        for p in &self.files {
            s.push_str(&format!("wrote        {}\n", p.display()));
        }
        s
    }
}

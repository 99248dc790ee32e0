//! TCP reassembly: a bounded table of flows, each with two directions ordered by sequence
//! number, feeding an [`HttpConnection`].
//!
//! Ordering is by sequence number only (never by ACK numbers or arrival timing): segments
//! arriving ahead of a hole wait in a per-direction buffer until the hole fills;
//! retransmitted and overlapping bytes are dropped (the first copy wins); sequence numbers are
//! unwrapped to 64-bit stream offsets, so wrap-around is invisible. A hole that never fills
//! (the capture lost the segment) is skipped when the direction's buffer reaches its cap or the
//! flow ends, and reported to the parser as a gap of known length, so the exchange it falls in
//! is flagged and the next one is not corrupted.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use shadowtap_core::exchange::Exchange;

use crate::connection::{Endpoint, HttpConnection};
use crate::decode::TcpSegment;
use shadowtap_http1::ParserLimits;

/// Limits of the flow table.
#[derive(Debug, Clone)]
pub struct ReassemblyConfig {
    /// Flows tracked at once; beyond it the least recently seen flows are closed early.
    pub max_flows: usize,
    /// Out-of-order bytes held per direction before a hole is given up as lost.
    pub max_buffered_per_direction: usize,
    /// A flow with no packet for this long (capture time) is closed.
    pub idle_timeout_us: i64,
    /// HTTP parser limits.
    pub parser: ParserLimits,
    /// Bytes every open flow together may hold (out-of-order segments, parser buffers,
    /// messages and bodies being read, exchanges waiting for their response). Past it the
    /// flows holding most are closed first, their exchanges written flagged `incomplete`
    /// (counted as `flows_cut_by_memory`). Checked each time the flows have grown by
    /// [`ReassemblyConfig::memory_check`] bytes, so the table may pass it by that much at most.
    pub max_memory: u64,
    /// The key log TLS connections are read with (`--tls-keylog`); none: TLS is skipped.
    pub tls_keys: Option<std::sync::Arc<shadowtap_tls::KeyLog>>,
}

impl ReassemblyConfig {
    /// Bytes the flows may grow by between two checks of the memory budget: a sixteenth of it (at least
    /// 256 KiB), so a check (a walk over the flows) costs little per byte.
    pub fn memory_check(&self) -> u64 {
        (self.max_memory / 16).max(256 << 10)
    }
}

/// A quarter of the machine's memory (`MemTotal`), or 2 GiB where that cannot be read.
pub fn default_max_memory() -> u64 {
    shadowtap_core::units::machine_memory().map_or(2 << 30, |m| m / 4)
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            max_flows: 262_144,
            max_buffered_per_direction: 8 << 20,
            idle_timeout_us: 300_000_000,
            parser: ParserLimits::default(),
            max_memory: default_max_memory(),
            tls_keys: None,
        }
    }
}

/// Counters of the reassembly stage.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct ReassemblyStats {
    /// Flows (TCP connections) seen.
    pub flows: u64,
    /// Flows that carried HTTP/1.x.
    pub http_flows: u64,
    /// Flows that carried something else (skipped).
    pub non_http_flows: u64,
    /// Flows that carried no payload at all (handshakes, probes).
    pub empty_flows: u64,
    /// Segments that carried only bytes already seen (retransmissions).
    pub retransmitted_segments: u64,
    /// Segments that arrived ahead of a hole and waited.
    pub out_of_order_segments: u64,
    /// Flows closed early because the open flows together held more than `--max-memory`
    /// (the largest first; their open exchanges are written `incomplete`).
    pub flows_cut_by_memory: u64,
    /// Holes never filled (bytes lost before capture).
    pub gaps: u64,
    /// Bytes in those holes.
    pub gap_bytes: u64,
    /// Holes skipped early because a direction's buffer reached its cap.
    pub gaps_forced_by_buffer_cap: u64,
    /// Flows closed after the idle timeout.
    pub flows_idle_closed: u64,
    /// Flows closed early because the flow table was full.
    pub flows_evicted_by_cap: u64,
    /// Responses that answered no request in the capture.
    pub orphan_responses: u64,
    /// Bytes on HTTP flows that could not be parsed as HTTP and were skipped.
    pub skipped_bytes: u64,
    /// Losses at HTTP message boundaries (pairing flagged uncertain after them).
    pub boundary_losses: u64,
    /// Requests emitted without response because too many were outstanding.
    pub unanswered_overflow: u64,
    /// Connections decoded as HTTP/2 in clear (the client's preface seen).
    #[serde(default)]
    pub h2_connections: u64,
    /// HTTP/2 streams flagged because bytes of them were lost or their decoding stopped.
    #[serde(default)]
    pub h2_lost_streams: u64,
    /// HTTP/2 streams seen without their request (its headers lost): counted, no row.
    #[serde(default)]
    pub h2_headless_streams: u64,
    /// TLS connections seen (with `--tls-keylog`; without it they are non-HTTP flows).
    #[serde(default)]
    pub tls_connections: u64,
    /// Of them, decrypted with the key log.
    #[serde(default)]
    pub tls_decrypted: u64,
    /// Of them, not decrypted: the key log has no keys for them.
    #[serde(default)]
    pub tls_undecrypted: u64,
    /// Of them, not decrypted: a suite or version not read (CBC suites, TLS 1.0/1.1).
    #[serde(default)]
    pub tls_unsupported: u64,
    /// Of them, given up part way or never readable (a lost segment, a record that did not
    /// authenticate, a capture that began after the handshake).
    #[serde(default)]
    pub tls_failed: u64,
    /// Largest number of flows tracked at once.
    pub peak_flows: u64,
    /// Open flows dropped by load shedding (their exchange in progress was not written).
    pub flows_shed: u64,
}

struct Pending {
    data: Vec<u8>,
    ts_us: i64,
    ack: Option<u32>,
}

#[derive(Default)]
struct Stream {
    /// Sequence number of stream offset 0, once known.
    base: Option<u32>,
    /// Offset of the next byte expected.
    next: u64,
    /// Segments ahead of `next`, by offset; never overlapping each other.
    pending: BTreeMap<u64, Pending>,
    pending_bytes: usize,
    /// Offset of the FIN, once seen.
    fin_at: Option<u64>,
    ended: bool,
}

impl Stream {
    /// Unwraps `seq` to a stream offset near `next` (negative: before the stream start).
    fn offset_of(&self, seq: u32) -> i64 {
        let base = self.base.expect("offset_of needs a base");
        let next_seq = base.wrapping_add(self.next as u32);
        self.next as i64 + i64::from(seq.wrapping_sub(next_seq) as i32)
    }
}

struct Flow {
    endpoints: [Endpoint; 2],
    streams: [Stream; 2],
    conn: HttpConnection,
    last_us: i64,
    payload_bytes: u64,
}

impl Flow {
    /// Bytes the flow holds: out-of-order segments, parser buffers, messages being read and
    /// requests waiting for their response (by allocated capacity).
    fn held_bytes(&self) -> u64 {
        (self.streams[0].pending_bytes + self.streams[1].pending_bytes + self.conn.buffered_bytes())
            as u64
    }
}

/// A flow, the same for both directions: the lower endpoint first.
pub(crate) type FlowKey = (IpAddr, u16, IpAddr, u16);

/// The segment's flow, and its direction in it (0: from the lower endpoint).
pub(crate) fn flow_key(seg: &TcpSegment<'_>) -> (FlowKey, usize) {
    let a: Endpoint = (seg.src, seg.src_port);
    let b: Endpoint = (seg.dst, seg.dst_port);
    if a <= b {
        ((a.0, a.1, b.0, b.1), 0)
    } else {
        ((b.0, b.1, a.0, a.1), 1)
    }
}

/// What is remembered of a flow that ended with FIN or RST, so that late retransmissions of its
/// segments are recognised instead of starting a phantom flow.
struct Tombstone {
    /// Per direction: the sequence number of offset 0 and the offset the stream ended at.
    streams: [Option<(u32, u64)>; 2],
    closed_us: i64,
}

impl Tombstone {
    fn covers(&self, dir: usize, seq: u32) -> bool {
        self.streams[dir].is_some_and(|(base, end)| {
            let off = i64::from(seq.wrapping_sub(base) as i32);
            off >= -1 && off <= end as i64 + 1
        })
    }
}

/// How long (capture time) a closed flow's tombstone absorbs late segments.
const TOMBSTONE_US: i64 = 120_000_000;

/// The table of open flows.
pub struct FlowTable {
    config: ReassemblyConfig,
    source: Arc<str>,
    flows: HashMap<FlowKey, Flow>,
    closed: HashMap<FlowKey, Tombstone>,
    stats: ReassemblyStats,
    out: Vec<Exchange>,
    last_sweep_us: i64,
    now_us: i64,
    /// Payload bytes since the memory budget was last checked.
    since_memory_check: u64,
}

impl FlowTable {
    /// An empty table; `source` names the capture in every exchange.
    pub fn new(config: ReassemblyConfig, source: &str) -> Self {
        FlowTable {
            config,
            source: Arc::from(source),
            flows: HashMap::new(),
            closed: HashMap::new(),
            stats: ReassemblyStats::default(),
            out: Vec::new(),
            last_sweep_us: i64::MIN,
            now_us: i64::MIN,
            since_memory_check: 0,
        }
    }

    /// Names the capture that connections opened from now on come from.
    pub fn set_source(&mut self, source: &str) {
        self.source = Arc::from(source);
    }

    /// Counters so far.
    pub fn stats(&self) -> ReassemblyStats {
        self.stats
    }

    /// Flows open now.
    pub fn open_flows(&self) -> usize {
        self.flows.len()
    }

    /// Bytes held in memory by open flows: out-of-order segments waiting for a hole to fill,
    /// parser buffers and exchanges not yet complete. Walks every flow: call it for periodic
    /// statistics, not per packet.
    pub fn buffered_bytes(&self) -> u64 {
        self.flows.values().map(Flow::held_bytes).sum()
    }

    /// Whether the segment belongs to a flow the table tracks now.
    pub fn is_open(&self, seg: &TcpSegment<'_>) -> bool {
        let (key, _) = flow_key(seg);
        self.flows.contains_key(&key)
    }

    /// Drops the segment's flow without writing what it holds (load shedding of an open flow:
    /// its exchanges already written stay written; the one in progress is left out, never
    /// written damaged). Returns whether there was such a flow.
    pub fn discard(&mut self, seg: &TcpSegment<'_>) -> bool {
        let (key, _) = flow_key(seg);
        let gone = self.flows.remove(&key).is_some();
        if gone {
            self.stats.flows_shed += 1;
        }
        gone
    }

    /// Takes the exchanges completed so far.
    pub fn take_exchanges(&mut self) -> Vec<Exchange> {
        std::mem::take(&mut self.out)
    }

    /// Processes one TCP segment captured at `ts_us`.
    pub fn on_segment(&mut self, ts_us: i64, seg: &TcpSegment<'_>) {
        self.now_us = self.now_us.max(ts_us);
        self.sweep_idle();
        let (key, dir) = flow_key(seg);
        let pure_syn = seg.syn && seg.ack.is_none();

        if let Some(flow) = self.flows.get(&key) {
            // A new connection reusing the same ports: a SYN that does not match the stream.
            let s = &flow.streams[dir];
            let reused = pure_syn
                && (s.base.is_some_and(|b| b != seg.seq.wrapping_add(1))
                    || flow.streams.iter().all(|s| s.ended));
            if reused {
                let flow = self.flows.remove(&key).expect("present");
                self.close_flow(flow, false);
            }
        }
        if !self.flows.contains_key(&key) {
            if let Some(t) = self.closed.get(&key) {
                if !pure_syn && t.covers(dir, seg.seq) {
                    // A late copy of a segment of a connection already closed.
                    self.stats.retransmitted_segments += u64::from(!seg.payload.is_empty());
                    return;
                }
                self.closed.remove(&key);
            }
            if seg.payload.is_empty() && !seg.syn {
                return; // a bare ACK, FIN or RST of a flow we never saw: nothing to record
            }
            if self.flows.len() >= self.config.max_flows {
                self.evict_for_room();
            }
            // The lower endpoint first, as in the key.
            let endpoints = [(key.0, key.1), (key.2, key.3)];
            let client_dir = if seg.syn {
                Some(if pure_syn { dir } else { 1 - dir })
            } else {
                None
            };
            let conn = HttpConnection::new(
                endpoints,
                client_dir,
                ts_us,
                self.config.parser,
                self.source.clone(),
            )
            .with_tls_keys(self.config.tls_keys.clone());
            self.flows.insert(
                key,
                Flow {
                    endpoints,
                    streams: [Stream::default(), Stream::default()],
                    conn,
                    last_us: ts_us,
                    payload_bytes: 0,
                },
            );
            self.stats.flows += 1;
            self.stats.peak_flows = self.stats.peak_flows.max(self.flows.len() as u64);
        }
        let flow = self.flows.get_mut(&key).expect("present or inserted above");
        let held_before = flow.held_bytes();
        flow.last_us = flow.last_us.max(ts_us);
        flow.payload_bytes += seg.payload.len() as u64;
        let done = Self::segment_into(flow, dir, ts_us, seg, &self.config, &mut self.stats);
        if done {
            let flow = self.flows.remove(&key).expect("present");
            let streams = [0, 1].map(|d| flow.streams[d].base.map(|b| (b, flow.streams[d].next)));
            if self.closed.len() >= self.config.max_flows {
                let now = self.now_us;
                self.closed
                    .retain(|_, t| now - t.closed_us < TOMBSTONE_US / 4);
                if self.closed.len() >= self.config.max_flows {
                    self.closed.clear();
                }
            }
            self.closed.insert(
                key,
                Tombstone {
                    streams,
                    closed_us: ts_us,
                },
            );
            self.close_flow(flow, true);
        } else {
            self.out.extend(flow.conn.take_exchanges());
            // What the flow grew by, allocations included (a body grown by doubling jumps):
            // the budget is checked once the flows together may have grown by a check interval.
            self.since_memory_check += flow.held_bytes().saturating_sub(held_before);
            if self.since_memory_check >= self.config.memory_check() {
                self.since_memory_check = 0;
                self.cut_to_memory_budget();
            }
        }
    }

    /// Closes every flow (end of capture) and returns nothing more to do.
    pub fn finish(&mut self) {
        let mut flows: Vec<Flow> = self.flows.drain().map(|(_, f)| f).collect();
        // Deterministic output order whatever the hash map did.
        flows.sort_by_key(|f| (f.last_us, f.endpoints));
        for f in flows {
            self.close_flow(f, false);
        }
    }

    /// Feeds a segment into its flow; returns true when the flow is over.
    fn segment_into(
        flow: &mut Flow,
        dir: usize,
        ts_us: i64,
        seg: &TcpSegment<'_>,
        config: &ReassemblyConfig,
        stats: &mut ReassemblyStats,
    ) -> bool {
        let not_http = flow.conn.is_not_http();
        {
            let s = &mut flow.streams[dir];
            if seg.syn {
                if s.base.is_none() {
                    s.base = Some(seg.seq.wrapping_add(1));
                    flow.conn.set_base_seq(dir, seg.seq.wrapping_add(1));
                }
            } else if s.base.is_none() && !seg.payload.is_empty() {
                s.base = Some(seg.seq);
                flow.conn.set_base_seq(dir, seg.seq);
            }
        }
        if seg.rst {
            // Data on a RST segment is diagnostic text, not stream data.
            for d in [dir, 1 - dir] {
                Self::end_stream(flow, d, false, stats);
            }
            return true;
        }
        let s = &mut flow.streams[dir];
        let Some(_) = s.base else { return false };
        let data_seq = if seg.syn {
            seg.seq.wrapping_add(1)
        } else {
            seg.seq
        };
        let start = s.offset_of(data_seq);
        if seg.fin {
            let fin_at = start + seg.payload.len() as i64;
            if fin_at >= 0 && s.fin_at.is_none() {
                s.fin_at = Some(fin_at as u64);
            }
        }
        if !seg.payload.is_empty() && !not_http && !s.ended {
            Self::add_data(flow, dir, start, seg.payload, ts_us, seg.ack, config, stats);
        }
        let s = &flow.streams[dir];
        if s.fin_at.is_some_and(|f| s.next >= f) && !s.ended && s.pending.is_empty() {
            flow.streams[dir].ended = true;
            flow.conn.on_end(dir, true);
        }
        flow.streams.iter().all(|s| s.ended)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_data(
        flow: &mut Flow,
        dir: usize,
        start: i64,
        payload: &[u8],
        ts_us: i64,
        ack: Option<u32>,
        config: &ReassemblyConfig,
        stats: &mut ReassemblyStats,
    ) {
        let s = &mut flow.streams[dir];
        let end = start + payload.len() as i64;
        let next = s.next as i64;
        if end <= next {
            stats.retransmitted_segments += 1;
            return;
        }
        if start <= next {
            let data = &payload[(next - start) as usize..];
            s.next = end as u64;
            flow.conn.on_data(dir, data, ts_us, ack);
            Self::drain_pending(flow, dir);
            return;
        }
        // Ahead of a hole: keep the parts not already held (first copy wins).
        stats.out_of_order_segments += 1;
        let (start, end) = (start as u64, end as u64);
        let mut cursor = start;
        let mut pieces = Vec::new();
        let overlapping: Vec<(u64, u64)> = s
            .pending
            .range(..end)
            .rev()
            .map(|(&k, v)| (k, k + v.data.len() as u64))
            .take_while(|&(_, e)| e > start)
            .collect();
        for (k, e) in overlapping.into_iter().rev() {
            if k > cursor {
                pieces.push((cursor, k.min(end)));
            }
            cursor = cursor.max(e);
        }
        if cursor < end {
            pieces.push((cursor, end));
        }
        for (ps, pe) in pieces {
            let bytes = payload[(ps - start) as usize..(pe - start) as usize].to_vec();
            s.pending_bytes += bytes.len();
            s.pending.insert(
                ps,
                Pending {
                    data: bytes,
                    ts_us,
                    ack,
                },
            );
        }
        while flow.streams[dir].pending_bytes > config.max_buffered_per_direction {
            stats.gaps_forced_by_buffer_cap += 1;
            Self::skip_hole(flow, dir, ts_us, stats);
        }
    }

    /// Delivers pending segments that have become contiguous.
    fn drain_pending(flow: &mut Flow, dir: usize) {
        loop {
            let s = &mut flow.streams[dir];
            let Some(entry) = s.pending.first_entry() else {
                return;
            };
            let k = *entry.key();
            if k > s.next {
                return;
            }
            let p = entry.remove();
            s.pending_bytes -= p.data.len();
            let e = k + p.data.len() as u64;
            if e <= s.next {
                continue;
            }
            let from = (s.next - k) as usize;
            s.next = e;
            flow.conn.on_data(dir, &p.data[from..], p.ts_us, p.ack);
        }
    }

    /// Gives up the first hole of a direction as lost.
    fn skip_hole(flow: &mut Flow, dir: usize, ts_us: i64, stats: &mut ReassemblyStats) {
        let s = &mut flow.streams[dir];
        let Some((&k, _)) = s.pending.first_key_value() else {
            return;
        };
        if k > s.next {
            let len = k - s.next;
            s.next = k;
            stats.gaps += 1;
            stats.gap_bytes += len;
            flow.conn.on_gap(dir, len, ts_us);
        }
        Self::drain_pending(flow, dir);
    }

    /// Ends a direction: remaining holes are skipped as gaps.
    fn end_stream(flow: &mut Flow, dir: usize, clean: bool, stats: &mut ReassemblyStats) {
        if flow.streams[dir].ended {
            return;
        }
        while !flow.streams[dir].pending.is_empty() {
            Self::skip_hole(flow, dir, flow.last_us, stats);
        }
        let s = &mut flow.streams[dir];
        let mut clean = clean;
        if let Some(fin) = s.fin_at {
            if fin > s.next && s.base.is_some() {
                // The tail before the FIN was lost.
                let len = fin - s.next;
                s.next = fin;
                stats.gaps += 1;
                stats.gap_bytes += len;
                flow.conn.on_gap(dir, len, flow.last_us);
            }
            clean = true;
        }
        flow.streams[dir].ended = true;
        flow.conn.on_end(dir, clean);
    }

    fn close_flow(&mut self, mut flow: Flow, _over: bool) {
        // The client side ends first so that held responses learn no more requests will come.
        let first = flow.conn.client_dir().unwrap_or(0);
        for d in [first, 1 - first] {
            Self::end_stream(&mut flow, d, false, &mut self.stats);
        }
        flow.conn.finish();
        let cs = flow.conn.stats();
        self.stats.orphan_responses += cs.orphan_responses;
        self.stats.skipped_bytes += cs.skipped_bytes;
        self.stats.boundary_losses += cs.boundary_losses;
        self.stats.unanswered_overflow += cs.unanswered_overflow;
        if let Some(h2) = flow.conn.h2_stats() {
            self.stats.h2_connections += h2.connections;
            self.stats.h2_lost_streams += h2.lost_streams;
            self.stats.h2_headless_streams += h2.headless_streams;
        }
        if let Some(t) = flow.conn.tls_stats() {
            self.stats.tls_connections += t.connections;
            self.stats.tls_decrypted += t.decrypted;
            self.stats.tls_undecrypted += t.no_keys;
            self.stats.tls_unsupported += t.unsupported;
            self.stats.tls_failed += t.failed;
        }
        if flow.conn.saw_http() {
            self.stats.http_flows += 1;
        } else if flow.payload_bytes > 0 {
            self.stats.non_http_flows += 1;
        } else {
            self.stats.empty_flows += 1;
        }
        self.out.extend(flow.conn.take_exchanges());
    }

    fn sweep_idle(&mut self) {
        const SWEEP_EVERY_US: i64 = 5_000_000;
        if self.last_sweep_us != i64::MIN && self.now_us - self.last_sweep_us < SWEEP_EVERY_US {
            return;
        }
        self.last_sweep_us = self.now_us;
        let now = self.now_us;
        self.closed.retain(|_, t| now - t.closed_us < TOMBSTONE_US);
        let cutoff = self.now_us - self.config.idle_timeout_us;
        let idle: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| f.last_us < cutoff)
            .map(|(k, _)| *k)
            .collect();
        let mut flows: Vec<Flow> = idle.iter().filter_map(|k| self.flows.remove(k)).collect();
        flows.sort_by_key(|f| (f.last_us, f.endpoints));
        for f in flows {
            self.stats.flows_idle_closed += 1;
            self.close_flow(f, false);
        }
    }

    /// When the open flows hold more than the budget, closes the flows holding most until they
    /// hold at most seven eighths of it.
    fn cut_to_memory_budget(&mut self) {
        let held = Flow::held_bytes;
        let total: u64 = self.flows.values().map(held).sum();
        if total <= self.config.max_memory {
            return;
        }
        let mut by_size: Vec<(u64, FlowKey)> =
            self.flows.iter().map(|(k, f)| (held(f), *k)).collect();
        by_size.sort_unstable_by(|a, b| b.cmp(a));
        let target = self.config.max_memory / 8 * 7;
        let mut left = total;
        for (bytes, k) in by_size {
            if left <= target {
                break;
            }
            if let Some(f) = self.flows.remove(&k) {
                self.stats.flows_cut_by_memory += 1;
                left -= bytes;
                self.close_flow(f, false);
            }
        }
    }

    /// Closes the least recently seen eighth of the table.
    fn evict_for_room(&mut self) {
        let mut by_age: Vec<(i64, FlowKey)> =
            self.flows.iter().map(|(k, f)| (f.last_us, *k)).collect();
        by_age.sort();
        let n = (self.flows.len() / 8).max(1);
        for (_, k) in by_age.into_iter().take(n) {
            if let Some(f) = self.flows.remove(&k) {
                self.stats.flows_evicted_by_cap += 1;
                self.close_flow(f, false);
            }
        }
    }
}

#[cfg(test)]
mod tests;

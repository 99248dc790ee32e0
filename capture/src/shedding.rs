//! Load shedding for live capture: when packets arrive faster than the pipeline can turn them
//! into exchanges, whole flows are left out by sampling, so the flows that are kept stay
//! complete (a dropped packet batch would instead damage every flow it touched).
//!
//! The live reader's queue fill level sets the share of *new* flows admitted: everything up
//! to half full, then linearly less, down to none when the queue is full. A flow's fate is
//! decided when its first packet is seen and sticks until the flow goes idle, so a flow is
//! either recorded whole or not at all. Past 90% full, open flows are shed too (by the same
//! hash, a growing share up to all at 100%): what they already completed stays written, the
//! exchange in progress is left out, so nothing damaged is ever written.

use std::collections::HashMap;

use serde::Serialize;
use shadowtap_core::id::sample_bucket;

use crate::decode::TcpSegment;
use crate::reassembly::{flow_key, FlowKey};

/// Counters of the flows left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ShedStats {
    /// Flows left out because the pipeline was behind.
    pub flows: u64,
    /// Packets of those flows.
    pub packets: u64,
    /// Captured bytes of those flows.
    pub bytes: u64,
}

/// Decides, flow by flow, what to leave out while the pipeline is behind.
#[derive(Debug)]
pub struct FlowShedder {
    /// New flows admitted, in basis points (10 000: all).
    keep_bp: u32,
    /// Open flows kept, in basis points (10 000: all).
    keep_open_bp: u32,
    /// Flows being left out, with the capture time of their last packet.
    shed: HashMap<FlowKey, i64>,
    max_flows: usize,
    idle_us: i64,
    stats: ShedStats,
}

impl FlowShedder {
    /// A shedder that remembers at most `max_flows` left-out flows, each until it has been idle
    /// for `idle_us`.
    pub fn new(max_flows: usize, idle_us: i64) -> Self {
        FlowShedder {
            keep_bp: 10_000,
            keep_open_bp: 10_000,
            shed: HashMap::new(),
            max_flows: max_flows.max(1),
            idle_us,
            stats: ShedStats::default(),
        }
    }

    /// Sets the share of new flows to admit from the queue fill level (0.0 empty, 1.0 full).
    pub fn set_backlog(&mut self, fill: f64) {
        let fill = fill.clamp(0.0, 1.0);
        self.keep_bp = if fill <= 0.5 {
            10_000
        } else {
            ((1.0 - fill) * 2.0 * 10_000.0) as u32
        };
        self.keep_open_bp = if fill <= 0.9 {
            10_000
        } else {
            ((1.0 - fill) * 10.0 * 10_000.0) as u32
        };
    }

    /// Share of new flows admitted now, in percent.
    pub fn keep_percent(&self) -> f64 {
        f64::from(self.keep_bp) / 100.0
    }

    /// Whether the segment's flow is recorded. `is_open` says whether the flow table already
    /// tracks this flow; `discard` drops an open flow that is shed (it returns whether there
    /// was one).
    pub fn admit(
        &mut self,
        ts_us: i64,
        seg: &TcpSegment<'_>,
        captured_len: usize,
        is_open: impl FnOnce() -> bool,
        discard: impl FnOnce() -> bool,
    ) -> bool {
        let (key, _) = flow_key(seg);
        if let Some(last) = self.shed.get_mut(&key) {
            // A new connection on the same ports (a pure SYN) gets its own decision.
            if !(seg.syn && seg.ack.is_none()) {
                *last = ts_us;
                self.count(captured_len);
                return false;
            }
            self.shed.remove(&key);
        }
        if self.keep_bp >= 10_000 {
            return true;
        }
        let bucket = flow_bucket(&key);
        if is_open() {
            if bucket < self.keep_open_bp || !discard() {
                return true;
            }
        } else if bucket < self.keep_bp {
            return true;
        }
        if self.shed.len() >= self.max_flows {
            let cutoff = ts_us - self.idle_us;
            self.shed.retain(|_, last| *last >= cutoff);
            if self.shed.len() >= self.max_flows {
                // Still full: forget the oldest half (their later packets start mid-stream
                // flows, which the capture flags as gaps).
                let mut ages: Vec<i64> = self.shed.values().copied().collect();
                ages.sort_unstable();
                let median = ages[ages.len() / 2];
                self.shed.retain(|_, last| *last > median);
            }
        }
        self.shed.insert(key, ts_us);
        self.stats.flows += 1;
        self.count(captured_len);
        false
    }

    fn count(&mut self, captured_len: usize) {
        self.stats.packets += 1;
        self.stats.bytes += captured_len as u64;
    }

    /// Counters so far.
    pub fn stats(&self) -> ShedStats {
        self.stats
    }
}

fn flow_bucket(key: &FlowKey) -> u32 {
    let text = format!("{}|{}|{}|{}", key.0, key.1, key.2, key.3);
    sample_bucket(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(client_port: u16, syn: bool, from_client: bool) -> TcpSegment<'static> {
        let c: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let s: std::net::IpAddr = "10.0.0.2".parse().unwrap();
        let (src, dst, sp, dp) = if from_client {
            (c, s, client_port, 80)
        } else {
            (s, c, 80, client_port)
        };
        TcpSegment {
            src,
            dst,
            src_port: sp,
            dst_port: dp,
            seq: 1,
            ack: if syn { None } else { Some(1) },
            syn,
            fin: false,
            rst: false,
            payload: b"x",
        }
    }

    #[test]
    fn nothing_is_shed_below_half_full() {
        let mut s = FlowShedder::new(100, 1_000_000);
        s.set_backlog(0.5);
        assert!((0..1000).all(|p| s.admit(0, &seg(p, true, true), 60, || false, || false)));
        assert_eq!(s.stats(), ShedStats::default());
    }

    #[test]
    fn a_flows_fate_sticks_for_both_directions() {
        let mut s = FlowShedder::new(10_000, 1_000_000);
        s.set_backlog(0.75); // half of new flows
        let mut kept = 0;
        for p in 0..2000u16 {
            let first = s.admit(0, &seg(p, true, true), 60, || false, || false);
            kept += usize::from(first);
            // Later packets, either direction, follow the first decision even when the
            // pressure is gone.
            s.set_backlog(0.0);
            let later = !first && !s.admit(1, &seg(p, false, false), 60, || first, || false);
            assert!(first || later, "port {p}");
            s.set_backlog(0.75);
        }
        assert!((800..1200).contains(&kept), "{kept}");
        assert_eq!(s.stats().flows, 2000 - kept as u64);
        assert_eq!(s.stats().packets, 2 * (2000 - kept as u64));
    }

    #[test]
    fn open_flows_are_shed_only_past_ninety_percent() {
        let mut s = FlowShedder::new(100, 1_000_000);
        s.set_backlog(0.9);
        assert!((0..500).all(|p| s.admit(
            0,
            &seg(p, false, true),
            60,
            || true,
            || panic!("not shed at 90%")
        )));
        s.set_backlog(1.0);
        assert_eq!(s.keep_percent(), 0.0);
        let mut discarded = 0;
        assert!(!s.admit(
            0,
            &seg(1, false, true),
            60,
            || true,
            || {
                discarded += 1;
                true
            }
        ));
        assert_eq!(discarded, 1);
        // Its later packets are left out without asking again.
        assert!(!s.admit(1, &seg(1, false, false), 60, || false, || false));
        assert!(!s.admit(0, &seg(2, true, true), 60, || false, || false));
    }

    #[test]
    fn the_shed_set_stays_bounded() {
        let mut s = FlowShedder::new(64, 10);
        s.set_backlog(1.0);
        for p in 0..5000u16 {
            assert!(!s.admit(i64::from(p), &seg(p, true, true), 60, || false, || false));
        }
        assert!(s.shed.len() <= 64, "{}", s.shed.len());
        assert_eq!(s.stats().flows, 5000);
    }
}

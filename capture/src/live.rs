//! Live capture on an interface (a SPAN/mirror port, a cloud mirror target, or any NIC).
//!
//! libpcap reads in its own thread and hands packets to the pipeline in batches through a
//! bounded channel, so a slow moment in parsing never stops the reads from the kernel buffer.
//! The pipeline watches the queue's fill level and sheds whole new flows when it passes half
//! (see [`crate::shedding`]); if the queue fills all the same (a burst, or the writers rolling
//! files), the reader waits for room while the kernel buffer holds the traffic, and drops a
//! batch (counted, `queue_dropped`) only when the pipeline stays stuck for seconds. Kernel and interface drops come from `pcap_stats`. Stopping (a signal, `--duration`,
//! `--max-exchanges`) ends the reads, then every packet already read is processed and every
//! open flow flushed before the files are closed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::decode::LinkType;
use crate::error::CaptureError;

/// Settings of a live capture source.
#[derive(Debug, Clone)]
pub struct LiveOptions {
    /// Interface name (`eth1`, `lo`, `any`).
    pub interface: String,
    /// Promiscuous mode (on for a dedicated mirror port).
    pub promisc: bool,
    /// Bytes captured per packet (0: the whole packet).
    pub snaplen: i32,
    /// Kernel buffer size in bytes.
    pub buffer_bytes: i32,
    /// BPF filter.
    pub filter: Option<String>,
    /// Deliver each packet as it arrives instead of in kernel blocks (lower latency, more
    /// CPU per packet).
    pub immediate: bool,
}

/// Counters of a live source.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct LiveStats {
    /// Packets the kernel handed to libpcap (`pcap_stats` `ps_recv`).
    pub received: u64,
    /// Packets dropped by the kernel because the buffer was full (`ps_drop`).
    pub kernel_dropped: u64,
    /// Packets dropped by the interface or driver (`ps_ifdrop`).
    pub interface_dropped: u64,
    /// Packets read but dropped because the pipeline was stuck (its queue stayed full for
    /// longer than a few seconds).
    pub queue_dropped: u64,
    /// Time the reader waited for room in a full queue, ms (the kernel buffer held the traffic
    /// meanwhile).
    pub queue_waited_ms: u64,
}

/// Counters the reader thread keeps current while it runs (pcap_stats about once a second).
#[derive(Debug, Default)]
pub struct LiveCounters {
    received: std::sync::atomic::AtomicU64,
    kernel_dropped: std::sync::atomic::AtomicU64,
    interface_dropped: std::sync::atomic::AtomicU64,
    queue_dropped: std::sync::atomic::AtomicU64,
    queue_waited_ms: std::sync::atomic::AtomicU64,
}

impl LiveCounters {
    /// A snapshot.
    pub fn snapshot(&self) -> LiveStats {
        LiveStats {
            received: self.received.load(Ordering::Relaxed),
            kernel_dropped: self.kernel_dropped.load(Ordering::Relaxed),
            interface_dropped: self.interface_dropped.load(Ordering::Relaxed),
            queue_dropped: self.queue_dropped.load(Ordering::Relaxed),
            queue_waited_ms: self.queue_waited_ms.load(Ordering::Relaxed),
        }
    }
}

/// An owned packet from the reader thread.
#[derive(Debug)]
pub struct OwnedPacket {
    /// Capture time, µs since the epoch.
    pub ts_us: i64,
    /// Captured bytes.
    pub data: Vec<u8>,
    /// Length on the wire.
    pub wire_len: u32,
}

/// A running live capture.
pub struct LiveSource {
    link: LinkType,
    rx: Receiver<Vec<OwnedPacket>>,
    stop: Arc<AtomicBool>,
    wake: pcap::BreakLoop,
    counters: Arc<LiveCounters>,
    /// Batches in the queue now.
    queued: Arc<AtomicUsize>,
    reader: Option<JoinHandle<Result<LiveStats, CaptureError>>>,
}

/// One interface as libpcap lists it.
#[derive(Debug, Clone)]
pub struct InterfaceInfo {
    /// Name to pass to `--interface`.
    pub name: String,
    /// Description, when the system has one.
    pub description: Option<String>,
    /// Addresses.
    pub addresses: Vec<String>,
}

/// Lists the interfaces libpcap can capture on.
pub fn list_interfaces() -> Result<Vec<InterfaceInfo>, CaptureError> {
    let devices = pcap::Device::list().map_err(|e| CaptureError::Interface {
        interface: "*".into(),
        message: e.to_string(),
    })?;
    Ok(devices
        .into_iter()
        .map(|d| InterfaceInfo {
            name: d.name,
            description: d.desc,
            addresses: d.addresses.iter().map(|a| a.addr.to_string()).collect(),
        })
        .collect())
}

const BATCH: usize = 256;
/// Batches the reader queue holds.
const QUEUE_BATCHES: usize = 256;
const FLUSH_EVERY: Duration = Duration::from_millis(50);
/// How long the reader waits for room in a full queue before it drops a batch.
const QUEUE_PATIENCE: Duration = Duration::from_secs(2);

impl LiveSource {
    /// Opens the interface and starts the reader thread.
    pub fn start(opts: &LiveOptions) -> Result<Self, CaptureError> {
        let iface_err = |e: pcap::Error| CaptureError::Interface {
            interface: opts.interface.clone(),
            message: e.to_string(),
        };
        let known = pcap::Device::list().map_err(iface_err)?;
        if !known.iter().any(|d| d.name == opts.interface) {
            let names: Vec<String> = known.into_iter().map(|d| d.name).collect();
            return Err(CaptureError::Interface {
                interface: opts.interface.clone(),
                message: format!("no such interface (available: {})", names.join(", ")),
            });
        }
        let mut cap = pcap::Capture::from_device(opts.interface.as_str())
            .map_err(iface_err)?
            .promisc(opts.promisc)
            .snaplen(if opts.snaplen <= 0 {
                262_144
            } else {
                opts.snaplen
            })
            .buffer_size(opts.buffer_bytes)
            // By default packets are handed over in kernel blocks, each retired after at most
            // 100 ms: cheaper than immediate mode on a busy mirror port. Either way a stop
            // does not wait for traffic: it wakes the reader with pcap_breakloop.
            .immediate_mode(opts.immediate)
            .timeout(100)
            .precision(pcap::Precision::Micro)
            .open()
            .map_err(iface_err)?;
        if let Some(expr) = &opts.filter {
            cap.filter(expr, true).map_err(|e| CaptureError::Filter {
                expr: expr.clone(),
                message: e.to_string(),
            })?;
        }
        let dlt = cap.get_datalink().0;
        let link = LinkType::from_dlt(dlt).ok_or_else(|| CaptureError::Interface {
            interface: opts.interface.clone(),
            message: format!("unsupported link type {dlt}"),
        })?;
        let wake = cap.breakloop_handle();
        let stop = Arc::new(AtomicBool::new(false));
        // On a quiet link libpcap may block in poll with packets already in our batch (with
        // TPACKET_V3 it waits for the next packet whatever the timeout): a second thread
        // wakes the reader when a partial batch has waited too long, so exchanges and stats
        // never lag behind a quiet link.
        let tail = Arc::new(Tail {
            epoch: Instant::now(),
            since_ms: AtomicU64::new(0),
        });
        {
            let (stop, tail, nudge) = (stop.clone(), tail.clone(), cap.breakloop_handle());
            std::thread::Builder::new()
                .name("shadowtap-pcap-tail".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(FLUSH_EVERY);
                        if tail.waiting() >= FLUSH_EVERY {
                            nudge.breakloop();
                        }
                    }
                })
                .map_err(|e| CaptureError::Interface {
                    interface: opts.interface.clone(),
                    message: e.to_string(),
                })?;
        }
        // 256 batches of up to 256 packets: bursts of ~65k packets are absorbed while the pipeline
        // catches up (the writers briefly stall it when they roll files).
        let (tx, rx) = mpsc::sync_channel(QUEUE_BATCHES);
        let queued = Arc::new(AtomicUsize::new(0));
        let queued_reader = queued.clone();
        let stop_reader = stop.clone();
        let iface = opts.interface.clone();
        let counters = Arc::new(LiveCounters::default());
        let counters_reader = counters.clone();
        let reader = std::thread::Builder::new()
            .name("shadowtap-pcap".into())
            .spawn(move || {
                read_loop(
                    cap,
                    tx,
                    stop_reader,
                    iface,
                    &counters_reader,
                    &queued_reader,
                    &tail,
                )
            })
            .map_err(|e| CaptureError::Interface {
                interface: opts.interface.clone(),
                message: e.to_string(),
            })?;
        Ok(LiveSource {
            link,
            rx,
            stop,
            wake,
            counters,
            queued,
            reader: Some(reader),
        })
    }

    /// The interface's link type.
    pub fn link_type(&self) -> LinkType {
        self.link
    }

    /// Counters so far (pcap_stats refreshed about once a second).
    pub fn counters(&self) -> LiveStats {
        self.counters.snapshot()
    }

    /// How full the reader queue is: 0.0 empty, 1.0 full (the next batch read is dropped).
    pub fn backlog(&self) -> f64 {
        // A batch waiting for room counts too: clamp to full.
        (self.queued.load(Ordering::Relaxed) as f64 / QUEUE_BATCHES as f64).min(1.0)
    }

    /// The next batch of packets; `Ok(None)` on a timeout with nothing read; an error when the
    /// reader stopped (its error, or `Closed` when it ended).
    pub fn next_batch(&self, wait: Duration) -> Result<Option<Vec<OwnedPacket>>, Closed> {
        match self.rx.recv_timeout(wait) {
            Ok(b) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                Ok(Some(b))
            }
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(Closed),
        }
    }

    /// Stops reading, returns the packets read but not yet handed out (nothing is lost), and
    /// the counters.
    pub fn stop(mut self) -> (Vec<OwnedPacket>, Result<LiveStats, CaptureError>) {
        self.stop.store(true, Ordering::SeqCst);
        // On an idle link libpcap's poll has no timeout; breakloop wakes it.
        self.wake.breakloop();
        let mut rest = Vec::new();
        let reader = self.reader.take().expect("stopped once");
        // Drain while the reader finishes, so its last blocking send cannot deadlock.
        while !reader.is_finished() {
            if let Ok(b) = self.rx.recv_timeout(Duration::from_millis(20)) {
                rest.extend(b);
            }
        }
        rest.extend(self.rx.try_iter().flatten());
        let stats = reader.join().unwrap_or_else(|_| {
            Err(CaptureError::Interface {
                interface: String::new(),
                message: "capture thread panicked".into(),
            })
        });
        (rest, stats)
    }
}

/// When the oldest packet of the reader's partial batch was read (0: the batch is empty).
struct Tail {
    epoch: Instant,
    since_ms: AtomicU64,
}

impl Tail {
    fn mark(&self, batch_len: usize) {
        if batch_len == 1 {
            self.since_ms.store(
                self.epoch.elapsed().as_millis() as u64 + 1,
                Ordering::Relaxed,
            );
        } else if batch_len == 0 {
            self.since_ms.store(0, Ordering::Relaxed);
        }
    }

    fn waiting(&self) -> Duration {
        match self.since_ms.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            ms => self
                .epoch
                .elapsed()
                .saturating_sub(Duration::from_millis(ms - 1)),
        }
    }
}

/// The reader thread has ended.
#[derive(Debug)]
pub struct Closed;

fn read_loop(
    mut cap: pcap::Capture<pcap::Active>,
    tx: SyncSender<Vec<OwnedPacket>>,
    stop: Arc<AtomicBool>,
    iface: String,
    counters: &LiveCounters,
    queued: &AtomicUsize,
    tail: &Tail,
) -> Result<LiveStats, CaptureError> {
    let mut batch = Vec::with_capacity(BATCH);
    let mut last_flush = Instant::now();
    let mut last_stats = Instant::now();
    let mut queue_dropped = 0u64;
    let mut queue_waited = Duration::ZERO;
    let send =
        |batch: &mut Vec<OwnedPacket>, queue_dropped: &mut u64, queue_waited: &mut Duration| {
            if batch.is_empty() {
                return;
            }
            tail.mark(0);
            // Counted before the send so that the receiver never sees the count go below zero.
            queued.fetch_add(1, Ordering::Relaxed);
            let mut pending = std::mem::replace(batch, Vec::with_capacity(BATCH));
            let mut waited_since = None;
            loop {
                match tx.try_send(pending) {
                    Ok(()) => break,
                    Err(TrySendError::Full(b)) => {
                        // The pipeline sheds whole flows long before the queue is full; a full
                        // queue is a burst or a stall. Waiting lets the kernel buffer (--buffer-size)
                        // absorb it, which it does as well as it does for tcpdump; only a pipeline
                        // stuck for longer than QUEUE_PATIENCE costs this batch.
                        let since = *waited_since.get_or_insert_with(Instant::now);
                        if since.elapsed() >= QUEUE_PATIENCE || stop.load(Ordering::Relaxed) {
                            queued.fetch_sub(1, Ordering::Relaxed);
                            *queue_dropped += b.len() as u64;
                            break;
                        }
                        pending = b;
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    Err(TrySendError::Disconnected(_)) => {
                        queued.fetch_sub(1, Ordering::Relaxed);
                        break;
                    }
                }
            }
            if let Some(since) = waited_since {
                *queue_waited += since.elapsed();
            }
        };
    let mut result = Ok(());
    while !stop.load(Ordering::Relaxed) {
        if last_stats.elapsed() >= Duration::from_secs(1) {
            last_stats = Instant::now();
            if let Ok(st) = cap.stats() {
                counters
                    .received
                    .store(u64::from(st.received), Ordering::Relaxed);
                counters
                    .kernel_dropped
                    .store(u64::from(st.dropped), Ordering::Relaxed);
                counters
                    .interface_dropped
                    .store(u64::from(st.if_dropped), Ordering::Relaxed);
            }
            counters
                .queue_dropped
                .store(queue_dropped, Ordering::Relaxed);
            counters
                .queue_waited_ms
                .store(queue_waited.as_millis() as u64, Ordering::Relaxed);
        }
        match cap.next_packet() {
            Ok(p) => {
                batch.push(OwnedPacket {
                    ts_us: p.header.ts.tv_sec * 1_000_000 + p.header.ts.tv_usec,
                    data: p.data.to_vec(),
                    wire_len: p.header.len,
                });
                tail.mark(batch.len());
                if batch.len() >= BATCH || last_flush.elapsed() >= FLUSH_EVERY {
                    send(&mut batch, &mut queue_dropped, &mut queue_waited);
                    last_flush = Instant::now();
                }
            }
            Err(pcap::Error::TimeoutExpired) => {
                send(&mut batch, &mut queue_dropped, &mut queue_waited);
                last_flush = Instant::now();
            }
            // pcap_breakloop: a stop (checked by the loop) or the tail thread's nudge.
            Err(pcap::Error::NoMorePackets) => {
                send(&mut batch, &mut queue_dropped, &mut queue_waited);
                last_flush = Instant::now();
            }
            Err(e) => {
                result = Err(CaptureError::Interface {
                    interface: iface.clone(),
                    message: e.to_string(),
                });
                break;
            }
        }
    }
    // The last batch was read from the kernel already: hand it over even if that waits.
    if !batch.is_empty() {
        queued.fetch_add(1, Ordering::Relaxed);
        let _ = tx.send(batch);
    }
    let st = cap.stats().unwrap_or(pcap::Stat {
        received: 0,
        dropped: 0,
        if_dropped: 0,
    });
    result.map(|()| LiveStats {
        received: u64::from(st.received),
        kernel_dropped: u64::from(st.dropped),
        interface_dropped: u64::from(st.if_dropped),
        queue_dropped,
        queue_waited_ms: queue_waited.as_millis() as u64,
    })
}

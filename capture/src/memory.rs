//! How capture spends its one byte budget (`--max-memory`), a bound on the process's resident
//! memory above its idle footprint: a quarter for the flows being reassembled (segments,
//! parser buffers, messages and bodies being read, requests waiting for their response, by
//! allocated capacity), a quarter for the exchanges already found on their way to disk (the
//! batch being filled, the batches handed to writer threads, the copies each writer makes
//! while encoding), and half left as headroom: the allocator keeps freed pages for a while
//! (mimalloc), and a batch passes its bound by one exchange. Stated bound, checked by cli's
//! memory-budget test (32 concurrent 4 MiB uploads, 2 writers, 48 MiB budget: 130–148 MiB
//! peak over a 77 MiB idle footprint): peak resident ≤ idle + budget + per writer thread
//! 3 × the largest exchange (its Arrow arrays, Parquet page and compressed page) + 8 MiB.
//! A pure function of the budget and the writer count, so the split is unit-tested and
//! documented in one place.

/// Batches a writer thread works on at once, with their copies: the exchanges, their Arrow
/// arrays, the encoded row group (bounded to one batch's bytes).
const COPIES_PER_WRITER: u64 = 2;
/// Batches outside the writers: the one being filled and, in live capture, two held for busy
/// writers.
const BATCHES_OUTSIDE: u64 = 3;
/// The largest batch: past it, bigger batches only add latency.
const MAX_BATCH_BYTES: u64 = 32 << 20;
/// The smallest batch: below it the per-batch costs (a Parquet write call, a channel send)
/// dominate. A budget too small for it is still honoured by the flow table and the hand-off;
/// only the writers' copies pass the budget then.
const MIN_BATCH_BYTES: u64 = 256 << 10;

/// The budget, split.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Bytes the open flows together may hold ([`crate::reassembly::ReassemblyConfig::max_memory`]).
    pub reassembly: u64,
    /// Body bytes of exchanges handed to the writer threads and not yet written: past it the
    /// packet loop waits for a writer (offline) or holds batches (live).
    pub in_flight_bytes: usize,
    /// Body bytes that close a batch of exchanges handed to a writer. A batch passes it by one
    /// exchange at most (its bodies are each bounded by `--max-body`).
    pub batch_bytes: usize,
    /// Body bytes of batches a live capture holds for busy writers before the packet loop waits.
    pub held_bytes: usize,
    /// A writer's row group is flushed to its file once its encoded size passes this.
    pub row_group_bytes: usize,
}

impl MemoryPlan {
    /// Splits `total` bytes for `writers` writer threads: a quarter to the flows, an eighth to
    /// the exchanges handed to writers, an eighth to the batch being filled, the batches held
    /// and the copies each writer makes while encoding; half stays headroom.
    pub fn split(total: u64, writers: usize) -> MemoryPlan {
        let reassembly = total / 4;
        let downstream = total / 4;
        let in_flight = downstream / 2;
        let units = COPIES_PER_WRITER * writers.max(1) as u64 + BATCHES_OUTSIDE;
        let batch = ((downstream - in_flight) / units).clamp(MIN_BATCH_BYTES, MAX_BATCH_BYTES);
        let batch_bytes = usize::try_from(batch).unwrap_or(usize::MAX);
        MemoryPlan {
            reassembly,
            in_flight_bytes: usize::try_from(in_flight).unwrap_or(usize::MAX),
            batch_bytes,
            held_bytes: batch_bytes.saturating_mul(2),
            row_group_bytes: batch_bytes,
        }
    }

    /// The most the plan lets exchanges on their way to disk hold, besides the one exchange
    /// each batch may pass its bound by.
    pub fn downstream_bytes(&self, writers: usize) -> u64 {
        self.in_flight_bytes as u64
            + (COPIES_PER_WRITER * writers.max(1) as u64 + BATCHES_OUTSIDE)
                * self.batch_bytes as u64
    }
}

/// The bytes handed to writer threads and not yet written, bounded by
/// [`MemoryPlan::in_flight_bytes`]. A batch is always let through when nothing is in flight,
/// so one exchange larger than the bound still moves; and nobody waits once a writer has
/// stopped (it failed: its bytes will never be given back, and the run is ending anyway).
pub(crate) struct InFlight {
    state: std::sync::Mutex<Gate>,
    freed: std::sync::Condvar,
    limit: usize,
}

struct Gate {
    bytes: usize,
    writers_stopped: bool,
}

impl InFlight {
    pub(crate) fn new(limit: usize) -> Self {
        InFlight {
            state: std::sync::Mutex::new(Gate {
                bytes: 0,
                writers_stopped: false,
            }),
            freed: std::sync::Condvar::new(),
            limit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Gate> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn fits(&self, g: &Gate, n: usize) -> bool {
        g.writers_stopped || g.bytes == 0 || g.bytes.saturating_add(n) <= self.limit
    }

    /// Waits until `n` more bytes fit, then counts them.
    pub(crate) fn acquire(&self, n: usize) {
        let mut g = self.lock();
        while !self.fits(&g, n) {
            g = self
                .freed
                .wait(g)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        g.bytes += n;
    }

    /// Counts `n` more bytes if they fit now.
    pub(crate) fn try_acquire(&self, n: usize) -> bool {
        let mut g = self.lock();
        let fits = self.fits(&g, n);
        if fits {
            g.bytes += n;
        }
        fits
    }

    /// `n` bytes were written (or given back unsent).
    pub(crate) fn release(&self, n: usize) {
        let mut g = self.lock();
        g.bytes = g.bytes.saturating_sub(n);
        drop(g);
        self.freed.notify_all();
    }

    /// A writer thread ended: nobody waits for it again.
    pub(crate) fn writer_stopped(&self) {
        self.lock().writers_stopped = true;
        self.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_add_up_to_the_budget() {
        for writers in 1..=8 {
            for total in [8u64 << 20, 64 << 20, 512 << 20, 4 << 30] {
                let plan = MemoryPlan::split(total, writers);
                let used = plan.reassembly + plan.downstream_bytes(writers);
                let at_floor = plan.batch_bytes as u64 == MIN_BATCH_BYTES;
                let half = total / 2;
                assert!(
                    used <= half || at_floor,
                    "{total} with {writers} writers uses {used}"
                );
                assert!(used >= half * 9 / 10 || plan.batch_bytes as u64 == MAX_BATCH_BYTES);
            }
        }
    }

    #[test]
    fn a_large_budget_keeps_the_batch_size_that_performs() {
        let plan = MemoryPlan::split(6 << 30, 2);
        assert_eq!(plan.batch_bytes, 32 << 20);
        assert_eq!(plan.held_bytes, 64 << 20);
        assert_eq!(plan.reassembly, 3 << 29);
        assert_eq!(plan.in_flight_bytes, 3 << 28);
    }

    #[test]
    fn a_tiny_budget_keeps_a_workable_batch() {
        let plan = MemoryPlan::split(1 << 20, 4);
        assert_eq!(plan.batch_bytes as u64, MIN_BATCH_BYTES);
        assert_eq!(plan.reassembly, 256 << 10);
    }

    #[test]
    fn the_gate_lets_one_large_batch_through_and_waits_past_the_bound() {
        let gate = std::sync::Arc::new(InFlight::new(100));
        assert!(
            gate.try_acquire(500),
            "nothing in flight: a batch over the bound moves"
        );
        assert!(!gate.try_acquire(1));
        gate.release(500);
        assert!(gate.try_acquire(60) && !gate.try_acquire(60) && gate.try_acquire(40));
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.acquire(50))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiter.is_finished(), "100 in flight: 50 more must wait");
        gate.release(60);
        waiter.join().unwrap();
        assert!(
            !gate.try_acquire(11) && gate.try_acquire(10),
            "90 in flight"
        );
        gate.writer_stopped();
        gate.acquire(1_000);
    }
}

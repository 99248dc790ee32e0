//! The sender's input: selection on the source's thread, then batches into the bounded
//! queues of the sending threads (the contract is in [`crate::sender`]).

use std::mem::take;

use shadowtap_core::criteria::MatchCriteria;
use shadowtap_core::sampling::Sampler;
use shadowtap_core::Exchange;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::error::ReplayError;

/// What travels from a source to a sending thread.
pub(crate) enum Item {
    /// A selected exchange, of pass `.0`.
    Exchange(u32, Box<Exchange>),
    /// Exchanges offered and not selected since the previous item.
    Skipped(Skipped),
    /// A pass over the source begins (pacing restarts from its first exchange).
    PassStart(u32),
    /// The source failed: sending stops and [`crate::Sender::finish`] returns the error.
    Failed(ReplayError),
}

/// Which exchanges are sent: match criteria, sampling, allowed methods. Applied on the
/// source's thread, so exchanges not sent never reach a sending thread.
pub(crate) struct Selection {
    pub(crate) criteria: MatchCriteria,
    pub(crate) sampler: Sampler,
    pub(crate) allow_methods: Vec<String>,
}

/// Exchanges the selection left out, counted on the source's thread and handed to the sending
/// thread in order with the selected ones (the summary counts what was dispatched).
#[derive(Default)]
pub(crate) struct Skipped {
    pub(crate) not_matched: u64,
    pub(crate) sampled_out: u64,
    /// Refused methods, upper-case, with counts.
    pub(crate) refused: Vec<(String, u64)>,
}

impl Skipped {
    fn is_empty(&self) -> bool {
        self.not_matched == 0 && self.sampled_out == 0 && self.refused.is_empty()
    }

    pub(crate) fn total(&self) -> u64 {
        self.not_matched + self.sampled_out + self.refused.iter().map(|(_, n)| n).sum::<u64>()
    }
}

impl Selection {
    /// Whether `ex` is sent; if not, counts why in `skipped`.
    fn admit(&self, ex: &Exchange, skipped: &mut Skipped) -> bool {
        if !self.criteria.matches(ex) {
            skipped.not_matched += 1;
        } else if !self.sampler.keep(ex) {
            skipped.sampled_out += 1;
        } else if !self
            .allow_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(&ex.method))
        {
            match skipped
                .refused
                .iter_mut()
                .find(|(m, _)| m.eq_ignore_ascii_case(&ex.method))
            {
                Some((_, n)) => *n += 1,
                None => skipped
                    .refused
                    .push((ex.method.to_ascii_uppercase().into(), 1)),
            }
        } else {
            return true;
        }
        false
    }
}

/// Exchanges per batch handed to a sending thread (one wake-up per batch, not per exchange).
pub const BATCH: usize = 128;

/// Why [`SenderInput::try_push`] did not take an exchange; it comes back with the reason.
#[derive(Debug)]
pub enum Rejected {
    /// Every sending thread's queue is full.
    Full(Box<Exchange>),
    /// Sending has stopped (`stop`, `duration`, or a failure).
    Closed(Box<Exchange>),
}

/// Sending has stopped: nothing more is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the sender has stopped")]
pub struct Closed;

/// Where a source offers exchanges (see [`crate::sender`] for the contract). Close it with
/// [`SenderInput::close`] or [`SenderInput::close_blocking`]: the last, partial batch is
/// handed over then, and a dropped input that still holds one logs an error.
pub struct SenderInput {
    txs: Vec<mpsc::Sender<Vec<Item>>>,
    /// The sending thread whose turn it is (round robin among those with room).
    turn: usize,
    selection: Selection,
    batch: Vec<Item>,
    skipped: Skipped,
}

impl SenderInput {
    pub(crate) fn new(txs: Vec<mpsc::Sender<Vec<Item>>>, selection: Selection) -> Self {
        SenderInput {
            txs,
            turn: 0,
            selection,
            batch: Vec::with_capacity(BATCH),
            skipped: Skipped::default(),
        }
    }

    /// Offers one exchange of pass `pass`, waiting while every queue is full. True when the
    /// selection took it.
    pub async fn push(&mut self, pass: u32, ex: Box<Exchange>) -> Result<bool, Closed> {
        let taken = self.select(pass, ex);
        if self.batch.len() >= BATCH {
            self.flush().await?;
        }
        Ok(taken)
    }

    /// [`SenderInput::push`] for a source on a thread of its own (not on a runtime).
    pub fn push_blocking(&mut self, pass: u32, ex: Box<Exchange>) -> Result<bool, Closed> {
        let taken = self.select(pass, ex);
        if self.batch.len() >= BATCH {
            self.flush_blocking()?;
        }
        Ok(taken)
    }

    /// Offers one exchange and hands it over at once, never waiting: when every queue is full
    /// it comes back as [`Rejected::Full`] (the caller counts it as shed). `Ok(false)`: the
    /// selection left it out.
    pub fn try_push(&mut self, pass: u32, ex: Box<Exchange>) -> Result<bool, Rejected> {
        if !self.selection.admit(&ex, &mut self.skipped) {
            self.flush_skipped_every_batch();
            return Ok(false);
        }
        self.flush_skipped();
        self.batch.push(Item::Exchange(pass, ex));
        let batch = take(&mut self.batch);
        let (mut back, closed) = match self.try_hand(batch) {
            Ok(()) => return Ok(true),
            Err(refused) => refused,
        };
        // The exchange just pushed is the batch's last item: it goes back to the caller, the
        // counts before it wait for the next hand-over.
        match back.pop() {
            Some(Item::Exchange(_, ex)) => {
                self.batch = back;
                Err(if closed {
                    Rejected::Closed(ex)
                } else {
                    Rejected::Full(ex)
                })
            }
            other => {
                back.extend(other);
                self.batch = back;
                Ok(false)
            }
        }
    }

    /// A new pass over the source begins: pacing restarts from its first exchange.
    pub fn start_pass(&mut self, pass: u32) {
        self.flush_skipped();
        self.batch.push(Item::PassStart(pass));
    }

    /// The source failed: sending stops once what came before is handed over, and
    /// [`crate::Sender::finish`] returns `error`.
    pub fn fail_blocking(mut self, error: ReplayError) {
        self.flush_skipped();
        self.batch.push(Item::Failed(error));
        let _ = self.flush_blocking();
    }

    /// Hands over the partial batch, waiting for room.
    pub async fn flush(&mut self) -> Result<(), Closed> {
        match self.hand_without_waiting()? {
            None => Ok(()),
            Some((i, batch)) => self.txs[i].send(batch).await.map_err(|_| Closed),
        }
    }

    /// [`SenderInput::flush`] for a source on a thread of its own.
    pub fn flush_blocking(&mut self) -> Result<(), Closed> {
        match self.hand_without_waiting()? {
            None => Ok(()),
            Some((i, batch)) => self.txs[i].blocking_send(batch).map_err(|_| Closed),
        }
    }

    /// Hands the partial batch to a sending thread with room; when every queue is full, the
    /// batch comes back with the queue whose turn it is, to wait on.
    fn hand_without_waiting(&mut self) -> Result<Option<(usize, Vec<Item>)>, Closed> {
        self.flush_skipped();
        if self.batch.is_empty() {
            return Ok(None);
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        match self.try_hand(batch) {
            Ok(()) => Ok(None),
            Err((_, true)) => Err(Closed),
            Err((b, false)) => Ok(Some((self.next_turn(), b))),
        }
    }

    /// Hands over the last batch and closes the input: the sending threads end once they
    /// have sent what is queued.
    pub async fn close(mut self) -> Result<(), Closed> {
        self.flush().await
    }

    /// [`SenderInput::close`] for a source on a thread of its own.
    pub fn close_blocking(mut self) -> Result<(), Closed> {
        self.flush_blocking()
    }

    /// Selection, and the selected exchange or the skip counts into the batch.
    fn select(&mut self, pass: u32, ex: Box<Exchange>) -> bool {
        if self.selection.admit(&ex, &mut self.skipped) {
            self.flush_skipped();
            self.batch.push(Item::Exchange(pass, ex));
            true
        } else {
            self.flush_skipped_every_batch();
            false
        }
    }

    /// The counts of skipped exchanges go out before the next item.
    fn flush_skipped(&mut self) {
        if !self.skipped.is_empty() {
            self.batch.push(Item::Skipped(take(&mut self.skipped)));
        }
    }

    /// ... and at least every [`BATCH`] skips (so progress moves during a long run of them).
    fn flush_skipped_every_batch(&mut self) {
        if self.skipped.total() >= BATCH as u64 {
            self.flush_skipped();
        }
    }

    /// Gives `batch` to the next sending thread with room; back with `true` when sending
    /// stopped, with `false` when every queue is full.
    fn try_hand(&mut self, mut batch: Vec<Item>) -> Result<(), (Vec<Item>, bool)> {
        let n = self.txs.len();
        for k in 0..n {
            let i = (self.turn + k) % n;
            match self.txs[i].try_send(batch) {
                Ok(()) => {
                    self.turn = i + 1;
                    return Ok(());
                }
                Err(TrySendError::Full(back)) => batch = back,
                Err(TrySendError::Closed(back)) => return Err((back, true)),
            }
        }
        Err((batch, false))
    }

    fn next_turn(&mut self) -> usize {
        let i = self.turn % self.txs.len();
        self.turn = i + 1;
        i
    }
}

impl Drop for SenderInput {
    fn drop(&mut self) {
        let held = self
            .batch
            .iter()
            .filter(|i| matches!(i, Item::Exchange(..)))
            .count();
        if held > 0 {
            tracing::error!(
                "{held} selected exchanges were never handed to the sender: its input was dropped without close()"
            );
        }
    }
}

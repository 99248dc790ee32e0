//! The replay stage: streams exchanges at named targets and records every response.
//!
//! A [`Sender`] is the typed pipeline every source feeds: selection (match criteria,
//! deterministic sampling, allowed methods) on the source's thread, a bounded queue
//! ([`sender`] states the contract), an [`request::OutgoingRequest`] passed through the
//! mutation hooks ([`rules`], [`script`], [`middleware`], in that order), pacing
//! ([`schedule`]), every target ([`client`]), and each target's response, after the response
//! hooks, one row of the `replays` table ([`shadowtap_core::replays`]) written on the writer
//! thread. [`replay`] is the recording as a source: it opens a capture ([`source`]), refuses
//! targets that are captured hosts ([`safety`]), and reads the recording into a sender.
//!
//! Modules by job: [`target`] (names and URLs), [`safety`] (the production guard), `reader`
//! (the recording source), `input` and `send` (the queue and the sending threads), `writer`
//! (rows to Parquet), [`summary`], `progress`; the transports behind [`client`] are `h2c` and
//! [`shadowtap_http1::client`], with the errors they share sorted in `transport`.

pub mod client;
pub mod error;
mod h2c;
mod input;
pub mod middleware;
pub mod order;
mod progress;
mod reader;
pub mod request;
pub mod rules;
pub mod run;
pub mod safety;
pub mod schedule;
pub mod script;
mod send;
pub mod sender;
pub mod source;
pub mod summary;
pub mod target;
mod transport;
mod writer;

pub use error::ReplayError;
pub use input::{Closed, BATCH};
pub use progress::ProgressMode;
pub use run::{replay, ReplayOptions};
pub use send::MAX_SENDERS;
pub use sender::{Rejected, Sender, SenderInput, SenderOptions, DEFAULT_MARKER, DEFAULT_METHODS};
pub use summary::{ReplaySummary, TargetSummary};
pub use target::Target;

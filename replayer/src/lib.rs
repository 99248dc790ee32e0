//! The replay stage: streams recorded exchanges at named targets and records every response.
//!
//! A replay is a typed pipeline: the recording ([`source`]) is read in request order, selected
//! (match criteria, deterministic sampling, allowed methods), turned into an
//! [`request::OutgoingRequest`], passed through the mutation hooks ([`rules`], [`script`],
//! [`middleware`], in that order), paced ([`schedule`]), sent to every target ([`client`]),
//! and each target's response, after the response hooks, becomes one row of the `replays`
//! table ([`shadowtap_core::replays`]). [`run::replay`] drives it all.

pub mod client;
pub mod error;
mod h2c;
pub mod middleware;
pub mod order;
pub mod request;
pub mod rules;
pub mod run;
pub mod schedule;
pub mod script;
pub mod source;
mod transport;

pub use error::ReplayError;
pub use run::{replay, ReplayOptions, ReplaySummary, Target};

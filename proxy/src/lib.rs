//! `shadowtap proxy`: the traffic mirroring module in front of production.
//!
//! Every request goes to production untouched and streamed ([`server`]); a share of them,
//! chosen when the head arrives ([`route`]: criteria, then a consistent share per shadow), is
//! copied to shadow pools ([`mirror`]: the replayer's sender, its hooks and its `replays` rows)
//! from a body tee that never waits ([`tee`]); in the testing phase a sticky share of users is
//! answered by a canary pool instead. Both answers are recorded ([`record`]) for
//! `shadowtap analyze`. Live statistics ([`stats`]) and runtime configuration are served by the
//! admin API ([`admin`], Prometheus text by [`exposition`]); [`config`] is the one type the flags, the TOML file and the API say.
//!
//! The rule that matters most: production never waits for a shadow. A copy is dropped and
//! counted (by reason) when its shadow's queue is full, its body is over the cap, or the
//! bodies being collected are over their byte budget; it is never waited for.

pub mod admin;
pub mod assembly;
pub mod config;
pub mod error;
pub mod exposition;
pub mod forwarded;
pub mod lifecycle;
pub mod mirror;
pub mod pairs;
pub mod record;
pub mod route;
pub mod server;
pub mod state;
pub mod stats;
pub mod summary;
pub mod tee;
pub mod tls;
pub mod upstream;

pub use config::ProxyConfig;
pub use error::ProxyError;
pub use server::{start, Running};
pub use summary::ProxySummary;

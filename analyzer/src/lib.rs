//! The analyze stage: SQL over shadowtap's Parquet tables, shadow diffs with noise
//! cancellation, and a canary verdict.
//!
//! [`tables`] registers `exchanges`, `replays` and `diffs` with DataFusion (plus helper UDFs);
//! [`pairs`] streams the replays, pairs each request's responses across targets and diffs them
//! ([`diff`]); [`analyze`] classifies noise, computes metrics with SQL, judges them with the
//! tests in [`stats`] under a [`policy`], and decides; [`report`] renders the verdict.

pub mod analyze;
pub mod diff;
pub mod error;
pub mod pairs;
pub mod policy;
pub mod report;
pub mod stats;
pub mod tables;
pub mod template;

pub use analyze::{analyze, AnalyzeOptions, Decision, Verdict};
pub use error::AnalyzeError;
pub use policy::Policy;

//! The analyze stage: SQL over shadowtap's Parquet tables, shadow diffs with noise
//! cancellation, and a calibrated canary verdict.
//!
//! The analysis is a pipeline: [`pairs`] streams the replays and pairs each request's
//! responses across targets (diffing them with [`diff`]) into the [`units`] of analysis;
//! [`measure`] computes paired statistics with the tests in [`stats`]; [`judge`] decides under
//! a [`policy`] (pure, no I/O), once [`references`] has checked the references against each
//! other; [`report`] renders the [`verdict`]. [`analyze`] runs the stages;
//! [`tables`] registers the tables with DataFusion for `shadowtap query`.

pub mod analyze;
pub mod diff;
pub mod engine;
pub mod error;
pub mod judge;
pub mod measure;
pub mod objects;
pub mod pairs;
pub mod pending;
pub mod policy;
pub mod references;
pub mod report;
pub mod stats;
pub mod structured;
pub mod tables;
pub mod template;
pub mod units;
pub mod verdict;

pub use analyze::{analyze, AnalyzeOptions};
pub use engine::Engine;
pub use error::AnalyzeError;
pub use policy::Policy;
pub use verdict::{Decision, Verdict};

//! placeholder during build
pub mod diff;
pub mod stats;
pub mod template;

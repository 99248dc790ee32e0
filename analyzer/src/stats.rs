//! The statistics behind the verdict: the `shadowtap-stats` crate (paired tests, estimates,
//! the bootstrap, the family-wise adjustment), shared with the control plane's live gate.

pub use shadowtap_stats::*;

//! The seedable generator every stage shares (it lives in `shadowtap-stats`, beside the
//! statistics that draw from it).

pub use shadowtap_stats::splitmix::SplitMix;

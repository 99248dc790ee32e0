//! The control plane's decisions, apart from all I/O: the deployment state machine of a load
//! balancer ([`machine`]: which moves are allowed, what each does to the weights) and the
//! monitor's step ([`shift`]: the shift algorithms, the hold / roll back / promote decision on
//! a window) and the live statistical gate ([`gate`]: is the new version significantly worse
//! than the stable one on this window). `shadowtap serve` (the store, the API, the background monitor driving the proxy)
//! is built on these; both are property-tested here.

pub mod gate;
pub mod machine;
pub mod shift;

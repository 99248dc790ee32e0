//! The capture stage: packets in, HTTP/1.x exchanges out.
//!
//! A typed pipeline: [`source`] reads packets (libpcap, offline), [`decode`] turns them into TCP
//! segments (link layers, VLANs, IP fragments), [`reassembly`] orders each flow's bytes by
//! sequence number, [`shadowtap_http1`]'s parser frames messages, [`connection`] pairs requests
//! with responses, [`pipeline`] samples the exchanges and hands them to a writer thread, where
//! [`prepare`] undoes content codings and [`redact`]s secrets before the Parquet sink of
//! `shadowtap-core`; [`summary`] counts everything read, skipped and lost.
//!
//! ```no_run
//! use shadowtap_capture::pipeline::{capture_files, CaptureOptions};
//! let opts = CaptureOptions::new(vec!["traffic.pcap".into()], "out".into());
//! let summary = capture_files(&opts).expect("capture");
//! println!("{} exchanges", summary.exchanges_written);
//! ```

#![forbid(unsafe_code)]

pub mod connection;
pub mod decode;
pub mod error;
pub mod h2;
pub mod live;
pub mod memory;
pub mod metrics;
pub mod pipeline;
pub mod prepare;
pub mod reassembly;
pub mod secrets;
pub mod shedding;
pub mod source;
pub mod summary;

pub use error::CaptureError;
/// Redaction lives in `shadowtap-core`, shared with the proxy's recordings.
pub use shadowtap_core::redact;
/// Match criteria and sampling live in `shadowtap-core`, shared with the replayer.
pub use shadowtap_core::{criteria, sampling};

//! Integration tests of the replay stage: real Parquet recordings, real HTTP servers on loopback.

mod common;
mod replay;
mod sender;

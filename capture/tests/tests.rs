//! Integration tests of the capture stage: one binary, one module per area.

mod bad_input;
mod common;
mod h2;
mod linktypes;
mod live;
mod live_tls;
mod lossy;
mod oracle;
mod secrets;
mod tls;

//! Integration tests of the capture stage: one binary, one module per area.

mod bad_input;
mod common;
mod linktypes;
mod live;
mod lossy;
mod oracle;
mod secrets;

//! Integration tests of the capture stage: one binary, one module per area.

mod common;
mod bad_input;
mod oracle;
mod linktypes;
mod live;

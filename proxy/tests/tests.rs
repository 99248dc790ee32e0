//! Integration tests of the proxy: real backends on loopback, real keep-alive clients, real
//! Parquet read back and judged. One binary, one module per area.

mod common;
mod framing;
mod hardening;
mod isolation;
mod protocols;
mod routing;
mod secrets;
mod smuggling;

//! `shadowtap serve` against real parts: backends and a webhook receiver on loopback, the real
//! proxies, a SQLite store in a temporary directory and a PostgreSQL server started by the test.

mod api;
mod common;
mod e2e;
mod pg;
mod postgres;

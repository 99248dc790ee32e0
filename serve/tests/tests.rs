//! `shadowtap serve` against real parts: backends and a webhook receiver on loopback, the real
//! proxies, a SQLite store in a temporary directory, a PostgreSQL server and an Alertmanager
//! started by the test.

mod api;
mod common;
mod e2e;
mod integrations;
mod pg;
mod postgres;
mod rollouts;

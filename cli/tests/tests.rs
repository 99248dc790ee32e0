//! Integration tests of the `shadowtap` binary: flags, exit codes, files and summaries.

mod canary;
mod capture_cli;
mod cluster_cli;
mod live_cli;
mod memory_budget;
mod notebook;
mod objects;
#[path = "../../serve/tests/pg.rs"]
mod pg;
mod proxy_cli;
mod replay_cli;
mod s3;
mod serve_cli;
mod verdict_scenarios;

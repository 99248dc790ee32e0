//! Integration tests of the `shadowtap` binary: flags, exit codes, files and summaries.

mod canary;
mod capture_cli;
mod live_cli;
mod notebook;
mod replay_cli;
mod verdict_scenarios;

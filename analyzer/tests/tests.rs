//! Integration tests of the analyze stage: SQL over real Parquet, verdicts on known data, and
//! the calibration harness of the judge.

mod calibration;
mod sql;

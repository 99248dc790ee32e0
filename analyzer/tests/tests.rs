//! Integration tests of the analyze stage: SQL over real Parquet, verdicts on known data.

mod sql;

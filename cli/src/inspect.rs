//! `shadowtap inspect`: a quick look at the exchanges in a directory, without SQL.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int64Type};
use clap::Args;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// Flags of `shadowtap inspect`.
///
/// Prints the first exchanges found in DIR (and its subdirectories) as a table, then counts by
/// status and by host. Bodies and header values are never printed.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Directory holding `exchanges-*.parquet` files (searched recursively).
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Rows to print.
    #[arg(long, default_value_t = 20)]
    limit: usize,
}

fn find_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            find_files(&path, out)?;
        } else if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("exchanges-") && n.ends_with(".parquet"))
        {
            out.push(path);
        }
    }
    Ok(())
}

fn col<'a>(b: &'a RecordBatch, name: &str) -> anyhow::Result<&'a dyn Array> {
    b.column_by_name(name)
        .map(|c| c.as_ref())
        .with_context(|| format!("column {name} missing: not an exchanges file?"))
}

/// Runs the subcommand.
pub fn run(args: InspectArgs) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    find_files(&args.dir, &mut files).with_context(|| format!("reading {}", args.dir.display()))?;
    files.sort();
    if files.is_empty() {
        bail!("no exchanges-*.parquet files under {}", args.dir.display());
    }
    let mut total = 0u64;
    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_host: BTreeMap<String, u64> = BTreeMap::new();
    let mut flagged = 0u64;
    println!(
        "{:<7} {:<42} {:>6} {:>10}  flags",
        "method", "host + path", "status", "latency"
    );
    for f in &files {
        let reader = ParquetRecordBatchReaderBuilder::try_new(
            File::open(f).with_context(|| f.display().to_string())?,
        )
        .with_context(|| format!("{}: not a Parquet file", f.display()))?
        .build()?;
        for batch in reader {
            let b = batch.with_context(|| format!("reading {}", f.display()))?;
            let method = col(&b, "method")?.as_string::<i32>();
            let host = col(&b, "host")?.as_string::<i32>();
            let path = col(&b, "path")?.as_string::<i32>();
            let status = col(&b, "status")?.as_primitive::<Int32Type>();
            let latency = col(&b, "latency_us")?.as_primitive::<Int64Type>();
            let flags: Vec<(&str, _)> = [
                "no_response",
                "incomplete",
                "gap",
                "parse_error",
                "truncated",
            ]
            .iter()
            .map(|n| col(&b, n).map(|c| (*n, c.as_boolean().clone())))
            .collect::<anyhow::Result<_>>()?;
            for i in 0..b.num_rows() {
                total += 1;
                let st = if status.is_valid(i) {
                    status.value(i).to_string()
                } else {
                    "-".into()
                };
                *by_status.entry(st.clone()).or_default() += 1;
                let h = if host.is_valid(i) { host.value(i) } else { "?" };
                *by_host.entry(h.to_owned()).or_default() += 1;
                let set: Vec<&str> = flags
                    .iter()
                    .filter(|(_, a)| a.value(i))
                    .map(|(n, _)| *n)
                    .collect();
                flagged += u64::from(!set.is_empty());
                if total as usize <= args.limit {
                    let target: String = format!("{h}{}", path.value(i)).chars().take(42).collect();
                    let lat = if latency.is_valid(i) {
                        format!("{:.1} ms", latency.value(i) as f64 / 1000.0)
                    } else {
                        "-".into()
                    };
                    println!(
                        "{:<7} {:<42} {:>6} {:>10}  {}",
                        method.value(i),
                        target,
                        st,
                        lat,
                        set.join(",")
                    );
                }
            }
        }
    }
    println!(
        "\n{total} exchanges in {} file(s), {flagged} flagged",
        files.len()
    );
    println!(
        "by status: {}",
        by_status
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut hosts: Vec<_> = by_host.into_iter().collect();
    hosts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    println!(
        "top hosts: {}",
        hosts
            .iter()
            .take(5)
            .map(|(k, v)| format!("{k} ({v})"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

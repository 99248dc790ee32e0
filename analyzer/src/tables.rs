//! The SQL side: shadowtap's Parquet files as DataFusion tables, helper UDFs, and query output.
//!
//! `exchanges`, `replays` and `diffs` are listing tables over `**/<table>-*.parquet` under a
//! directory; files in Hive partitions (`date=…/hour=…/`) get `date` and `hour` columns.
//! Helper functions: `path_template(path)`, `header(headers, name)`,
//! `json_get(body, '/json/pointer')`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::FairSpillPool;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionConfig;
pub use datafusion::prelude::SessionContext;

use crate::error::AnalyzeError;
use crate::template::path_template;

/// The tables shadowtap writes.
pub const TABLES: &[&str] = &["exchanges", "replays", "diffs"];

/// A session with the UDFs registered and the default memory limit ([`default_memory_limit`]).
pub fn session() -> SessionContext {
    session_with_memory(default_memory_limit())
}

/// Half the machine's memory (`MemTotal` in `/proc/meminfo`), or `None` where that cannot be
/// read.
pub fn default_memory_limit() -> Option<usize> {
    usize::try_from(shadowtap_core::units::machine_memory()? / 2).ok()
}

/// A session with the UDFs registered whose queries hold at most `limit` bytes in memory:
/// sorts, joins and aggregations past it spill to temporary files (the OS temp directory)
/// and fail with a clear "resources exhausted" error only when spilling cannot help.
/// `None`: no limit.
pub fn session_with_memory(limit: Option<usize>) -> SessionContext {
    let mut config = SessionConfig::new()
        .with_information_schema(true)
        .with_target_partitions(std::thread::available_parallelism().map_or(2, |n| n.get()));
    let mut runtime = RuntimeEnvBuilder::new().with_object_store_registry(object_store_registry());
    if let Some(limit) = limit {
        runtime = runtime.with_memory_pool(Arc::new(FairSpillPool::new(limit)));
        // What each sort keeps back for merging its spill files (10 MiB by default) must fit
        // a small pool several times over.
        let reserve = &mut config.options_mut().execution.sort_spill_reservation_bytes;
        *reserve = (*reserve).min(limit / 16);
    }
    let ctx = match runtime.build_arc() {
        Ok(rt) => SessionContext::new_with_config_rt(config, rt),
        Err(e) => {
            tracing::warn!("no memory-limited runtime ({e}): queries run without a limit");
            SessionContext::new_with_config(config)
        }
    };
    for udf in helper_functions() {
        ctx.register_udf(udf);
    }
    ctx
}

/// shadowtap's SQL functions (`path_template`, `header`, `json_get`): what a session, a
/// Ballista scheduler and its executors register.
pub fn helper_functions() -> Vec<ScalarUDF> {
    [Helper::PathTemplate, Helper::Header, Helper::JsonGet]
        .into_iter()
        .map(|kind| ScalarUDF::from(HelperUdf::new(kind)))
        .collect()
}

/// The object-store registry every session uses (local files, and object storage opened on
/// demand).
pub fn object_store_registry() -> Arc<dyn datafusion::execution::object_store::ObjectStoreRegistry>
{
    Arc::new(crate::objects::StorageRegistry::new())
}

fn files_of_ext(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            files_of_ext(&p, out);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            out.push(p);
        }
    }
}

/// How a table names its files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Listing {
    /// The directory and a `table-*.parquet` pattern, listed when a query runs.
    #[default]
    Pattern,
    /// Every file by name, listed now: what a Ballista cluster needs (a plan sent to it keeps
    /// a table's paths but not its pattern).
    Files,
}

/// Registers `table` over the `table-*.parquet` files under `dir`; returns how many files.
/// Zero files registers nothing.
pub async fn register(
    ctx: &SessionContext,
    table: &str,
    dir: &Path,
) -> Result<usize, AnalyzeError> {
    register_local(ctx, table, dir, Listing::Pattern).await
}

async fn register_local(
    ctx: &SessionContext,
    table: &str,
    dir: &Path,
    listing: Listing,
) -> Result<usize, AnalyzeError> {
    if !dir.is_dir() {
        return Err(AnalyzeError::Input(format!(
            "{}: not a directory",
            dir.display()
        )));
    }
    let files = crate::pairs::parquet_files(dir, table);
    if files.is_empty() {
        return Ok(0);
    }
    let abs = std::fs::canonicalize(dir)
        .map_err(|e| AnalyzeError::Input(format!("{}: {e}", dir.display())))?;
    let rels: Vec<String> = files
        .iter()
        .map(|f| {
            f.strip_prefix(dir)
                .unwrap_or(f)
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let partitioned = hive_partitioned(rels.iter().map(String::as_str));
    // The directory as a URL and the file pattern apart: a directory name holding glob
    // characters (`[`, `*`, `?`) is a name, not a pattern.
    let dir_url = url::Url::from_directory_path(&abs).map_err(|()| {
        AnalyzeError::Input(format!("{}: not an absolute directory path", abs.display()))
    })?;
    if partitioned {
        // A partitioned table is its directory (DataFusion does not combine globs with
        // partitions): every Parquet file in it must belong to the table.
        let mut all = Vec::new();
        files_of_ext(dir, &mut all);
        let names: Vec<String> = all.iter().map(|f| f.display().to_string()).collect();
        check_alone(table, &dir.display().to_string(), &names)?;
    }
    let paths = match listing {
        Listing::Files if !partitioned => Some(
            files
                .iter()
                .filter_map(|f| std::fs::canonicalize(f).ok())
                .filter_map(|f| url::Url::from_file_path(f).ok())
                .collect(),
        ),
        _ => None,
    };
    register_url(ctx, table, dir_url, partitioned, paths).await?;
    Ok(files.len())
}

/// Every Parquet file of a partitioned table's directory must be the table's.
fn check_alone(table: &str, dir: &str, parquet_files: &[String]) -> Result<(), AnalyzeError> {
    let prefix = format!("{table}-");
    if let Some(stranger) = parquet_files
        .iter()
        .find(|f| !f.rsplit('/').next().unwrap_or(f).starts_with(&prefix))
    {
        return Err(AnalyzeError::Input(format!(
            "{dir}: the partitioned `{table}` table shares its directory with {stranger}; keep each table in its own directory"
        )));
    }
    Ok(())
}

/// Whether every one of the table's files (paths relative to its directory) sits in Hive
/// partitions `date=…/hour=…/` (DataFusion skips files outside them).
fn hive_partitioned<'a>(rels: impl IntoIterator<Item = &'a str>) -> bool {
    rels.into_iter().all(|rel| {
        let parts: Vec<&str> = rel.split('/').collect();
        parts.len() == 3 && parts[0].starts_with("date=") && parts[1].starts_with("hour=")
    })
}

/// Registers `table` over the `table-*.parquet` objects under an object-storage prefix (read
/// in place: nothing is downloaded); returns how many objects. Zero registers nothing.
pub async fn register_remote(
    ctx: &SessionContext,
    table: &str,
    remote: &shadowtap_storage::Remote,
    listing: Listing,
) -> Result<usize, AnalyzeError> {
    let objects = remote
        .list()
        .await
        .map_err(|e| AnalyzeError::Input(e.to_string()))?;
    let parquet: Vec<String> = objects
        .into_iter()
        .map(|(rel, _)| rel)
        .filter(|rel| rel.ends_with(".parquet") && !rel.split('/').any(|p| p.starts_with('.')))
        .collect();
    let prefix = format!("{table}-");
    let files: Vec<&str> = parquet
        .iter()
        .map(String::as_str)
        .filter(|rel| rel.rsplit('/').next().unwrap_or(rel).starts_with(&prefix))
        .collect();
    if files.is_empty() {
        return Ok(0);
    }
    let partitioned = hive_partitioned(files.iter().copied());
    if partitioned {
        check_alone(table, remote.url().as_str(), &parquet)?;
    }
    let paths = match listing {
        Listing::Files if !partitioned => Some(
            files
                .iter()
                .filter_map(|rel| url::Url::parse(&remote.url_of(rel)).ok())
                .collect(),
        ),
        _ => None,
    };
    register_url(ctx, table, remote.url().clone(), partitioned, paths).await?;
    Ok(files.len())
}

/// Registers `table` under `dir` (a local directory or an object-storage prefix).
pub async fn register_location(
    ctx: &SessionContext,
    table: &str,
    dir: &shadowtap_storage::Location,
    listing: Listing,
) -> Result<usize, AnalyzeError> {
    match dir {
        shadowtap_storage::Location::Local(p) => register_local(ctx, table, p, listing).await,
        shadowtap_storage::Location::Remote(r) => register_remote(ctx, table, r, listing).await,
    }
}

/// The listing table over `table-*.parquet` under `dir_url` (or, partitioned, every file
/// under it with `date` and `hour` columns).
async fn register_url(
    ctx: &SessionContext,
    table: &str,
    dir_url: url::Url,
    partitioned: bool,
    files: Option<Vec<url::Url>>,
) -> Result<(), AnalyzeError> {
    let mut options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    let glob = if partitioned {
        options = options.with_table_partition_cols(vec![
            ("date".into(), DataType::Utf8),
            ("hour".into(), DataType::Utf8),
        ]);
        None
    } else {
        Some(
            glob::Pattern::new(&format!("**/{table}-*.parquet"))
                .map_err(|e| AnalyzeError::Sql(e.to_string()))?,
        )
    };
    let sql = |e: datafusion::error::DataFusionError| AnalyzeError::Sql(e.to_string());
    let url = ListingTableUrl::try_new(dir_url, glob).map_err(sql)?;
    let schema = options
        .infer_schema(&ctx.state(), &url)
        .await
        .map_err(sql)?;
    let paths = match files {
        Some(files) => files
            .into_iter()
            .map(|f| ListingTableUrl::try_new(f, None))
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)?,
        None => vec![url],
    };
    let config = ListingTableConfig::new_with_multi_paths(paths)
        .with_listing_options(options)
        .with_schema(schema);
    ctx.register_table(table, Arc::new(ListingTable::try_new(config).map_err(sql)?))
        .map_err(sql)?;
    Ok(())
}

/// Registers every shadowtap table found under `dirs`; returns the names registered.
pub async fn register_all(
    ctx: &SessionContext,
    dirs: &[PathBuf],
) -> Result<Vec<String>, AnalyzeError> {
    let dirs: Vec<shadowtap_storage::Location> = dirs
        .iter()
        .map(|d| shadowtap_storage::Location::Local(d.clone()))
        .collect();
    register_all_locations(ctx, &dirs, Listing::Pattern).await
}

/// Registers every shadowtap table found under `dirs` (local directories or object-storage
/// prefixes); returns the names registered.
pub async fn register_all_locations(
    ctx: &SessionContext,
    dirs: &[shadowtap_storage::Location],
    listing: Listing,
) -> Result<Vec<String>, AnalyzeError> {
    let mut found = Vec::new();
    for table in TABLES {
        for d in dirs {
            if ctx.table_exist(*table).unwrap_or(false) {
                break;
            }
            if register_location(ctx, table, d, listing).await? > 0 {
                found.push((*table).to_owned());
            }
        }
    }
    Ok(found)
}

/// Runs `sql`, returning the batches; a missing table becomes a message listing the tables.
pub async fn run_sql(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, AnalyzeError> {
    let tables = || {
        let mut names: Vec<String> = TABLES
            .iter()
            .filter(|t| ctx.table_exist(**t).unwrap_or(false))
            .map(|t| (*t).to_owned())
            .collect();
        if names.is_empty() {
            names.push("none".into());
        }
        names.join(", ")
    };
    let clean = |e: DataFusionError| {
        AnalyzeError::Sql(format!(
            "{} (tables: {})",
            e.to_string().replace('\n', " "),
            tables()
        ))
    };
    let df = ctx.sql(sql).await.map_err(clean)?;
    df.collect().await.map_err(clean)
}

fn utf8_arg(arg: &ColumnarValue, n: usize) -> Result<ArrayRef, DataFusionError> {
    let a = arg.to_array(n)?;
    Ok(match a.data_type() {
        DataType::Utf8 => a,
        _ => arrow::compute::cast(&a, &DataType::Utf8)?,
    })
}

/// The helper functions: one implementation struct, told apart by `kind`.
#[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
enum Helper {
    /// `path_template(path)`: identifier segments become `{id}`.
    PathTemplate,
    /// `header(headers, name)`: the first value of a header (case-insensitive) in a
    /// `list<struct<name, value>>` column.
    Header,
    /// `json_get(body, '/pointer')`: the value at a JSON pointer in a JSON body (binary or
    /// text), as text (strings unquoted); null when absent or not JSON.
    JsonGet,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct HelperUdf {
    kind: Helper,
    signature: Signature,
}

impl HelperUdf {
    fn new(kind: Helper) -> Self {
        let arity = if kind == Helper::PathTemplate { 1 } else { 2 };
        HelperUdf {
            kind,
            signature: Signature::any(arity, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for HelperUdf {
    fn name(&self) -> &str {
        match self.kind {
            Helper::PathTemplate => "path_template",
            Helper::Header => "header",
            Helper::JsonGet => "json_get",
        }
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        match self.kind {
            Helper::PathTemplate => path_template_udf(args),
            Helper::Header => header_udf(args),
            Helper::JsonGet => json_get_udf(args),
        }
    }
}

fn path_template_udf(args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
    let a = utf8_arg(&args.args[0], args.number_rows)?;
    let s = a.as_string::<i32>();
    let mut b = StringBuilder::with_capacity(s.len(), s.len() * 16);
    for i in 0..s.len() {
        if s.is_null(i) {
            b.append_null();
        } else {
            b.append_value(path_template(s.value(i)));
        }
    }
    Ok(ColumnarValue::Array(Arc::new(b.finish())))
}

fn header_udf(args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
    let n = args.number_rows;
    let lists = args.args[0].to_array(n)?;
    let names = utf8_arg(&args.args[1], n)?;
    let names = names.as_string::<i32>();
    let Some(lists) = lists.as_list_opt::<i32>() else {
        return Err(DataFusionError::Plan("header(headers, name): the first argument must be a headers column (list of {name, value})".into()));
    };
    let mut b = StringBuilder::with_capacity(n, n * 16);
    for i in 0..n {
        if lists.is_null(i) || names.is_null(i) {
            b.append_null();
            continue;
        }
        let want = names.value(i);
        let v = lists.value(i);
        let Some(s) = v.as_struct_opt() else {
            return Err(DataFusionError::Plan(
                "header(headers, name): the list must hold {name, value} structs".into(),
            ));
        };
        let (Some(ns), Some(vs)) = (
            s.column_by_name("name")
                .and_then(|c| c.as_string_opt::<i32>()),
            s.column_by_name("value")
                .and_then(|c| c.as_string_opt::<i32>()),
        ) else {
            return Err(DataFusionError::Plan(
                "header(headers, name): the list must hold {name utf8, value utf8} structs".into(),
            ));
        };
        match (0..s.len()).find(|&j| ns.value(j).eq_ignore_ascii_case(want)) {
            Some(j) => b.append_value(vs.value(j)),
            None => b.append_null(),
        }
    }
    Ok(ColumnarValue::Array(Arc::new(b.finish())))
}

fn json_get_udf(args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
    let n = args.number_rows;
    let bodies = args.args[0].to_array(n)?;
    let pointers = utf8_arg(&args.args[1], n)?;
    let pointers = pointers.as_string::<i32>();
    let get = |i: usize| -> Option<&[u8]> {
        if bodies.is_null(i) {
            return None;
        }
        match bodies.data_type() {
            DataType::Binary => Some(bodies.as_binary::<i32>().value(i)),
            DataType::LargeBinary => Some(bodies.as_binary::<i64>().value(i)),
            DataType::Utf8 => Some(bodies.as_string::<i32>().value(i).as_bytes()),
            DataType::Utf8View => Some(bodies.as_string_view().value(i).as_bytes()),
            DataType::BinaryView => Some(bodies.as_binary_view().value(i)),
            _ => None,
        }
    };
    let mut b = StringBuilder::with_capacity(n, n * 8);
    for i in 0..n {
        let value = get(i).filter(|_| !pointers.is_null(i)).and_then(|body| {
            let doc: serde_json::Value = serde_json::from_slice(body).ok()?;
            let p = pointers.value(i);
            let v = if p.is_empty() || p == "/" {
                Some(&doc)
            } else {
                doc.pointer(p)
            }?;
            Some(match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        });
        b.append_option(value);
    }
    Ok(ColumnarValue::Array(Arc::new(b.finish())))
}

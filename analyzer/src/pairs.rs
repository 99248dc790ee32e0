//! Pairing replayed responses across targets, diffing each pair, and writing the `diffs` table.
//!
//! The replayer writes all targets' rows of one request close together, so rows are grouped by
//! `(exchange_id, pass)` in a small pending map as the `replays` files stream by; a group is
//! compared as soon as every expected target has its row. Comparisons: `candidate` (candidate
//! vs baseline), `noise` (baseline2 vs baseline, when a second baseline ran), `recorded`
//! (the production response in the capture vs baseline: the noise source when there is no
//! second baseline) and `candidate_recorded` (the production response vs candidate).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, Int32Builder, Int64Builder, ListBuilder, RecordBatch,
    StringBuilder, StructBuilder,
};
use arrow::datatypes::{DataType, Field, Fields, Int32Type, Schema, SchemaRef};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use shadowtap_core::schema::{SCHEMA_VERSION_KEY, TABLE_KEY};
use shadowtap_core::sink::{ParquetSink, SinkOptions};

use crate::diff::{compare, field_pattern, Comparison, DiffOptions, Side};
use crate::error::AnalyzeError;
use crate::template::path_template;

/// Version of the `diffs` schema.
pub const DIFFS_SCHEMA_VERSION: u32 = 1;

/// Which two sides a diff compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ComparisonKind {
    /// Candidate against baseline: what the verdict judges.
    Candidate,
    /// Second baseline against baseline: noise between two copies of the current version.
    Noise,
    /// Baseline against the recorded production response: noise when there is no second
    /// baseline (timestamps, ids, data that changed since the capture).
    Recorded,
    /// Candidate against the recorded production response (for reading, not judged).
    CandidateRecorded,
}

impl ComparisonKind {
    /// Column value.
    pub fn as_str(self) -> &'static str {
        match self {
            ComparisonKind::Candidate => "candidate",
            ComparisonKind::Noise => "noise",
            ComparisonKind::Recorded => "recorded",
            ComparisonKind::CandidateRecorded => "candidate_recorded",
        }
    }
}

/// The `diffs` schema.
pub fn diffs_schema() -> SchemaRef {
    let diff_fields = Fields::from(vec![
        Field::new("field", DataType::Utf8, false),
        Field::new("pattern", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("left", DataType::Utf8, true),
        Field::new("right", DataType::Utf8, true),
    ]);
    let f = Field::new;
    let fields = vec![
        f("exchange_id", DataType::Utf8, false),
        f("pass", DataType::Int32, false),
        f("comparison", DataType::Utf8, false),
        f("left_target", DataType::Utf8, false),
        f("right_target", DataType::Utf8, false),
        f("method", DataType::Utf8, false),
        f("path", DataType::Utf8, false),
        f("endpoint", DataType::Utf8, false),
        f("left_status", DataType::Int32, true),
        f("right_status", DataType::Int32, true),
        f("body_kind", DataType::Utf8, false),
        f("differs", DataType::Boolean, false),
        f("difference_count", DataType::Int64, false),
        f(
            "differences",
            DataType::List(Arc::new(Field::new(
                "item",
                DataType::Struct(diff_fields),
                true,
            ))),
            false,
        ),
        f("text_diff", DataType::Utf8, true),
    ];
    let md = [
        (TABLE_KEY.to_owned(), "diffs".to_owned()),
        (
            SCHEMA_VERSION_KEY.to_owned(),
            DIFFS_SCHEMA_VERSION.to_string(),
        ),
    ];
    Arc::new(Schema::new(fields).with_metadata(md.into_iter().collect()))
}

/// One response as the analyzer needs it.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// Status (None: no response).
    pub status: Option<u16>,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body, content coding undone when possible.
    pub body: Vec<u8>,
}

impl Response {
    fn side(&self) -> Side<'_> {
        let ct = self
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str());
        Side {
            status: self.status,
            headers: &self.headers,
            body: &self.body,
            content_type: ct,
        }
    }
}

/// An example difference: exchange id, left value, right value, kind.
pub type Example = (String, Option<String>, Option<String>, String);

/// Counts gathered while diffing, for noise classification and the diff-rate metric.
#[derive(Debug, Default)]
pub struct DiffStats {
    /// Pairs compared, per (comparison, endpoint).
    pub pairs: BTreeMap<(ComparisonKind, String), u64>,
    /// Pairs where a field differs, per (comparison, endpoint, field pattern).
    pub field_pairs: BTreeMap<(ComparisonKind, String, String), u64>,
    /// For each compared pair of the candidate and the noise comparisons: its endpoint and
    /// the field patterns that differ (ids into `patterns`).
    pub pair_fields: HashMap<ComparisonKind, Vec<(u32, Vec<u32>)>>,
    /// Interned endpoints.
    pub endpoints: Vec<String>,
    /// Interned field patterns.
    pub patterns: Vec<String>,
    /// One example difference per (comparison, endpoint, pattern): exchange id, left, right.
    pub examples: BTreeMap<(ComparisonKind, String, String), Example>,
    /// Text diff excerpts, one per (comparison, endpoint).
    pub text_examples: BTreeMap<(ComparisonKind, String), (String, String)>,
    /// Diff rows written.
    pub rows: u64,
    /// Groups missing a target's row (should not happen with shadowtap's replayer).
    pub incomplete_groups: u64,
    endpoint_ids: HashMap<String, u32>,
    pattern_ids: HashMap<String, u32>,
}

impl DiffStats {
    fn intern(map: &mut HashMap<String, u32>, list: &mut Vec<String>, s: &str) -> u32 {
        if let Some(&i) = map.get(s) {
            return i;
        }
        let i = list.len() as u32;
        list.push(s.to_owned());
        map.insert(s.to_owned(), i);
        i
    }

    fn record(&mut self, kind: ComparisonKind, endpoint: &str, exchange_id: &str, c: &Comparison) {
        *self.pairs.entry((kind, endpoint.to_owned())).or_default() += 1;
        let mut seen: Vec<String> = Vec::new();
        for d in &c.differences {
            let pat = field_pattern(&d.field);
            if seen.contains(&pat) {
                continue;
            }
            *self
                .field_pairs
                .entry((kind, endpoint.to_owned(), pat.clone()))
                .or_default() += 1;
            self.examples
                .entry((kind, endpoint.to_owned(), pat.clone()))
                .or_insert_with(|| {
                    (
                        exchange_id.to_owned(),
                        d.left.clone(),
                        d.right.clone(),
                        d.kind.as_str().to_owned(),
                    )
                });
            seen.push(pat);
        }
        if let Some(t) = &c.text_diff {
            self.text_examples
                .entry((kind, endpoint.to_owned()))
                .or_insert_with(|| (exchange_id.to_owned(), t.clone()));
        }
        // Per-pair field lists feed the diff-rate metric: only the judged and noise comparisons.
        if matches!(
            kind,
            ComparisonKind::Candidate | ComparisonKind::Noise | ComparisonKind::Recorded
        ) {
            let e = Self::intern(&mut self.endpoint_ids, &mut self.endpoints, endpoint);
            let ps: Vec<u32> = seen
                .iter()
                .map(|p| Self::intern(&mut self.pattern_ids, &mut self.patterns, p))
                .collect();
            self.pair_fields.entry(kind).or_default().push((e, ps));
        }
    }
}

/// Lists `prefix-*.parquet` files under `dir`, sorted.
pub fn parquet_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    fn walk(d: &Path, prefix: &str, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let n = e.file_name().to_string_lossy().into_owned();
            if n.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                walk(&p, prefix, out);
            } else if n.starts_with(&format!("{prefix}-")) && n.ends_with(".parquet") {
                out.push(p);
            }
        }
    }
    walk(dir, prefix, &mut out);
    out.sort();
    out
}

/// Checks that every `table-*.parquet` under `dir` is a shadowtap file of that table with the
/// column types the analyzer reads; returns how many there are.
pub fn check_files(dir: &Path, table: &str) -> Result<usize, AnalyzeError> {
    let cols: &[&str] = match table {
        "replays" => &[
            "exchange_id",
            "pass",
            "target",
            "method",
            "path",
            "status",
            "error_kind",
            "total_us",
            "response_headers",
            "response_body",
            "response_body_decoded",
        ],
        _ => &[
            "exchange_id",
            "status",
            "response_headers",
            "response_body",
            "response_body_decoded",
        ],
    };
    let files = parquet_files(dir, table);
    for f in &files {
        open_projected(f, table, cols)?;
    }
    Ok(files.len())
}

/// Opens a shadowtap file of `table` reading only `cols`, after checking its table name and
/// that every column read has the type the table's schema gives it (so reading never meets a
/// column of another type).
fn open_projected(
    path: &Path,
    table: &str,
    cols: &[&str],
) -> Result<parquet::arrow::arrow_reader::ParquetRecordBatchReader, AnalyzeError> {
    let err = |e: String| AnalyzeError::Input(format!("{}: {e}", path.display()));
    let f = File::open(path).map_err(|e| err(e.to_string()))?;
    let b = ParquetRecordBatchReaderBuilder::try_new(f).map_err(|e| err(e.to_string()))?;
    let found = b.schema().metadata().get(TABLE_KEY).cloned();
    if found.as_deref() != Some(table) {
        return Err(err(format!(
            "is not a shadowtap `{table}` file (table: {})",
            found.as_deref().unwrap_or("none")
        )));
    }
    let expected = match table {
        "replays" => shadowtap_core::replays::replays_schema(),
        _ => shadowtap_core::schema::exchanges_schema(),
    };
    for c in cols {
        let want = expected
            .field_with_name(c)
            .map_err(|e| err(e.to_string()))?
            .data_type();
        match b.schema().field_with_name(c) {
            Ok(f) if f.data_type() == want => {}
            Ok(f) => {
                return Err(err(format!(
                    "column `{c}` is {}, not {want} (a different schema version?)",
                    f.data_type()
                )))
            }
            Err(_) => {
                return Err(err(format!(
                    "has no column `{c}` (a different schema version?)"
                )))
            }
        }
    }
    let mask = ProjectionMask::columns(b.parquet_schema(), cols.iter().copied());
    b.with_projection(mask)
        .with_batch_size(1024)
        .build()
        .map_err(|e| err(e.to_string()))
}

fn headers_at(col: &ArrayRef, i: usize) -> Vec<(String, String)> {
    let l = col.as_list::<i32>();
    if l.is_null(i) {
        return Vec::new();
    }
    let v = l.value(i);
    let s = v.as_struct();
    let (n, vv) = (
        s.column(0).as_string::<i32>(),
        s.column(1).as_string::<i32>(),
    );
    (0..s.len())
        .map(|j| (n.value(j).to_owned(), vv.value(j).to_owned()))
        .collect()
}

fn body_at(raw: &ArrayRef, decoded: &ArrayRef, i: usize) -> Vec<u8> {
    let d = decoded.as_binary::<i32>();
    if d.is_valid(i) {
        return d.value(i).to_vec();
    }
    raw.as_binary::<i32>().value(i).to_vec()
}

/// Recorded production responses, keyed by exchange id, for the `recorded` comparison: at most
/// `cap` of them, chosen by a hash of the id so the choice is stable.
pub fn load_recorded(
    capture_dir: &Path,
    cap: usize,
) -> Result<HashMap<String, Response>, AnalyzeError> {
    let files = parquet_files(capture_dir, "exchanges");
    let total: u64 = files
        .iter()
        .filter_map(|p| File::open(p).ok())
        .filter_map(|f| parquet::file::reader::SerializedFileReader::new(f).ok())
        .map(|r| {
            parquet::file::reader::FileReader::metadata(&r)
                .file_metadata()
                .num_rows()
                .max(0) as u64
        })
        .sum();
    let keep_bp = if total as usize <= cap {
        10_000
    } else {
        ((cap as f64 / total as f64) * 10_000.0) as u32
    };
    let mut out = HashMap::new();
    for p in files {
        let reader = open_projected(
            &p,
            "exchanges",
            &[
                "exchange_id",
                "status",
                "response_headers",
                "response_body",
                "response_body_decoded",
            ],
        )?;
        for b in reader {
            let b = b.map_err(|e| AnalyzeError::Input(format!("{}: {e}", p.display())))?;
            let ids = b
                .column_by_name("exchange_id")
                .expect("projected")
                .as_string::<i32>()
                .clone();
            let status = b
                .column_by_name("status")
                .expect("projected")
                .as_primitive::<Int32Type>()
                .clone();
            let (h, raw, dec) = (
                b.column_by_name("response_headers")
                    .expect("projected")
                    .clone(),
                b.column_by_name("response_body")
                    .expect("projected")
                    .clone(),
                b.column_by_name("response_body_decoded")
                    .expect("projected")
                    .clone(),
            );
            for i in 0..b.num_rows() {
                let id = ids.value(i);
                if status.is_null(i) || shadowtap_core::id::sample_bucket(id.as_bytes()) >= keep_bp
                {
                    continue;
                }
                out.insert(
                    id.to_owned(),
                    Response {
                        status: Some(status.value(i).clamp(0, 999) as u16),
                        headers: headers_at(&h, i),
                        body: body_at(&raw, &dec, i),
                    },
                );
            }
        }
    }
    Ok(out)
}

/// One replayed row, as grouped.
#[derive(Debug, Clone)]
struct Replayed {
    method: String,
    path: String,
    response: Response,
}

/// The diff rows being written.
struct DiffWriter {
    sink: ParquetSink,
    rows: Vec<DiffRow>,
}

struct DiffRow {
    exchange_id: String,
    pass: i32,
    kind: ComparisonKind,
    left: String,
    right: String,
    method: String,
    path: String,
    endpoint: String,
    left_status: Option<u16>,
    right_status: Option<u16>,
    cmp: Comparison,
}

impl DiffWriter {
    fn push(&mut self, r: DiffRow) -> Result<(), AnalyzeError> {
        self.rows.push(r);
        if self.rows.len() >= 4096 {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), AnalyzeError> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let batch = diffs_batch(&self.rows).map_err(|e| AnalyzeError::Input(e.to_string()))?;
        self.sink.write(&batch).map_err(|e| AnalyzeError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(e),
        })?;
        self.rows.clear();
        Ok(())
    }
}

fn diffs_batch(rows: &[DiffRow]) -> Result<RecordBatch, arrow::error::ArrowError> {
    let n = rows.len();
    let strings = |f: &dyn Fn(&DiffRow) -> Option<&str>| -> ArrayRef {
        let mut b = StringBuilder::with_capacity(n, n * 16);
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish())
    };
    let ints = |f: &dyn Fn(&DiffRow) -> Option<i32>| -> ArrayRef {
        let mut b = Int32Builder::with_capacity(n);
        rows.iter().for_each(|r| b.append_option(f(r)));
        Arc::new(b.finish())
    };
    let mut differs = BooleanBuilder::with_capacity(n);
    let mut count = Int64Builder::with_capacity(n);
    let schema = diffs_schema();
    let DataType::List(item) = schema.field_with_name("differences")?.data_type().clone() else {
        unreachable!("list")
    };
    let DataType::Struct(sf) = item.data_type().clone() else {
        unreachable!("struct")
    };
    let mut list = ListBuilder::new(StructBuilder::from_fields(sf, n)).with_field(item.clone());
    for r in rows {
        differs.append_value(r.cmp.count > 0);
        count.append_value(r.cmp.count as i64);
        let s = list.values();
        for d in &r.cmp.differences {
            s.field_builder::<StringBuilder>(0)
                .expect("utf8")
                .append_value(&d.field);
            s.field_builder::<StringBuilder>(1)
                .expect("utf8")
                .append_value(field_pattern(&d.field));
            s.field_builder::<StringBuilder>(2)
                .expect("utf8")
                .append_value(d.kind.as_str());
            s.field_builder::<StringBuilder>(3)
                .expect("utf8")
                .append_option(d.left.as_deref());
            s.field_builder::<StringBuilder>(4)
                .expect("utf8")
                .append_option(d.right.as_deref());
            s.append(true);
        }
        list.append(true);
    }
    let cols: Vec<ArrayRef> = vec![
        strings(&|r| Some(&r.exchange_id)),
        ints(&|r| Some(r.pass)),
        strings(&|r| Some(r.kind.as_str())),
        strings(&|r| Some(&r.left)),
        strings(&|r| Some(&r.right)),
        strings(&|r| Some(&r.method)),
        strings(&|r| Some(&r.path)),
        strings(&|r| Some(&r.endpoint)),
        ints(&|r| r.left_status.map(i32::from)),
        ints(&|r| r.right_status.map(i32::from)),
        strings(&|r| Some(r.cmp.body_kind)),
        Arc::new(differs.finish()),
        Arc::new(count.finish()),
        Arc::new(list.finish()),
        strings(&|r| r.cmp.text_diff.as_deref()),
    ];
    RecordBatch::try_new(schema, cols)
}

/// Endpoint name: method and path template.
pub fn endpoint(method: &str, path: &str) -> String {
    format!("{} {}", method.to_ascii_uppercase(), path_template(path))
}

/// Which targets to pair.
pub struct PairTargets<'a> {
    /// Baseline.
    pub baseline: &'a str,
    /// Candidate.
    pub candidate: &'a str,
    /// Second baseline, when it ran.
    pub baseline2: Option<&'a str>,
}

/// Streams the replays, diffs every group, writes `diffs-<run>-NNNNN.parquet` into `out` and
/// returns the counts.
pub fn diff_replays(
    replay_dir: &Path,
    targets: &PairTargets<'_>,
    recorded: Option<&HashMap<String, Response>>,
    opts: &DiffOptions,
    out: &Path,
    run_id: &str,
) -> Result<DiffStats, AnalyzeError> {
    let sink = ParquetSink::new(
        SinkOptions {
            dir: out.to_path_buf(),
            prefix: format!("diffs-{run_id}"),
            max_file_bytes: 256 << 20,
            max_row_group_rows: 64 * 1024,
        },
        diffs_schema(),
    )
    .map_err(|e| AnalyzeError::Io {
        path: out.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    let mut writer = DiffWriter {
        sink,
        rows: Vec::new(),
    };
    let mut stats = DiffStats::default();
    let expected: Vec<&str> = [
        Some(targets.baseline),
        Some(targets.candidate),
        targets.baseline2,
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut pending: HashMap<(String, i32), HashMap<String, Replayed>> = HashMap::new();
    let cols = [
        "exchange_id",
        "pass",
        "target",
        "method",
        "path",
        "status",
        "response_headers",
        "response_body",
        "response_body_decoded",
    ];
    for p in parquet_files(replay_dir, "replays") {
        for b in open_projected(&p, "replays", &cols)? {
            let b = b.map_err(|e| AnalyzeError::Input(format!("{}: {e}", p.display())))?;
            let col = |n: &str| b.column_by_name(n).expect("projected").clone();
            let (ids, passes, tgts, methods, paths) = (
                col("exchange_id"),
                col("pass"),
                col("target"),
                col("method"),
                col("path"),
            );
            let (ids, passes, tgts, methods, paths) = (
                ids.as_string::<i32>(),
                passes.as_primitive::<Int32Type>(),
                tgts.as_string::<i32>(),
                methods.as_string::<i32>(),
                paths.as_string::<i32>(),
            );
            let status = col("status");
            let status = status.as_primitive::<Int32Type>();
            let (h, raw, dec) = (
                col("response_headers"),
                col("response_body"),
                col("response_body_decoded"),
            );
            for i in 0..b.num_rows() {
                let t = tgts.value(i);
                if !expected.contains(&t) {
                    continue;
                }
                let key = (ids.value(i).to_owned(), passes.value(i));
                let response = Response {
                    status: status
                        .is_valid(i)
                        .then(|| status.value(i).clamp(0, 999) as u16),
                    headers: if status.is_valid(i) {
                        headers_at(&h, i)
                    } else {
                        Vec::new()
                    },
                    body: if status.is_valid(i) {
                        body_at(&raw, &dec, i)
                    } else {
                        Vec::new()
                    },
                };
                let group = pending.entry(key.clone()).or_default();
                group.insert(
                    t.to_owned(),
                    Replayed {
                        method: methods.value(i).to_owned(),
                        path: paths.value(i).to_owned(),
                        response,
                    },
                );
                if group.len() == expected.len() {
                    let group = pending.remove(&key).expect("present");
                    compare_group(
                        &key,
                        &group,
                        targets,
                        recorded,
                        opts,
                        &mut stats,
                        &mut writer,
                    )?;
                }
            }
        }
    }
    stats.incomplete_groups = pending.len() as u64;
    for (key, group) in pending {
        compare_group(
            &key,
            &group,
            targets,
            recorded,
            opts,
            &mut stats,
            &mut writer,
        )?;
    }
    writer.flush()?;
    writer.sink.finish().map_err(|e| AnalyzeError::Io {
        path: out.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    Ok(stats)
}

/// A side of a comparison: its name and its response.
type Named<'a> = (&'a str, &'a Response);

fn compare_group(
    key: &(String, i32),
    group: &HashMap<String, Replayed>,
    targets: &PairTargets<'_>,
    recorded: Option<&HashMap<String, Response>>,
    opts: &DiffOptions,
    stats: &mut DiffStats,
    writer: &mut DiffWriter,
) -> Result<(), AnalyzeError> {
    let Some(base) = group.get(targets.baseline) else {
        return Ok(());
    };
    let ep = endpoint(&base.method, &base.path);
    let answered = |name: &str| group.get(name).map(|r| &r.response);
    // (kind, left side, right side): the production response, when recorded, is the left side
    // of its comparisons, so "added" means the replayed version has it and production did not.
    let mut pairs: Vec<(ComparisonKind, Named<'_>, Named<'_>)> = Vec::new();
    let base_side = (targets.baseline, &base.response);
    if let Some(c) = answered(targets.candidate) {
        pairs.push((ComparisonKind::Candidate, base_side, (targets.candidate, c)));
    }
    if let Some((name, b2)) = targets.baseline2.and_then(|n| answered(n).map(|r| (n, r))) {
        pairs.push((ComparisonKind::Noise, base_side, (name, b2)));
    }
    if let Some(rec) = recorded.and_then(|r| r.get(&key.0)) {
        pairs.push((ComparisonKind::Recorded, ("recorded", rec), base_side));
        if let Some(c) = answered(targets.candidate) {
            pairs.push((
                ComparisonKind::CandidateRecorded,
                ("recorded", rec),
                (targets.candidate, c),
            ));
        }
    }
    for (kind, (left_name, left), (right_name, right)) in pairs {
        // Only pairs where both sides answered are diffed; transport errors are the error
        // metric's business.
        if left.status.is_none() || right.status.is_none() {
            continue;
        }
        let cmp = compare(&left.side(), &right.side(), opts);
        stats.record(kind, &ep, &key.0, &cmp);
        stats.rows += 1;
        writer.push(DiffRow {
            exchange_id: key.0.clone(),
            pass: key.1,
            kind,
            left: left_name.to_owned(),
            right: right_name.to_owned(),
            method: base.method.clone(),
            path: base.path.clone(),
            endpoint: ep.clone(),
            left_status: left.status,
            right_status: right.status,
            cmp,
        })?;
    }
    Ok(())
}

//! Pairing replayed responses across targets, diffing each pair, and writing the `diffs` table.
//!
//! The replayer writes all targets' rows of one request close together, so rows are grouped by
//! `(exchange_id, pass)` in a small pending map as the `replays` files stream by; a group is
//! compared as soon as every expected target has its row. Comparisons: `candidate` (candidate
//! vs baseline), `noise` (baseline2 vs baseline, when a second baseline ran), `recorded`
//! (the production response in the capture vs baseline: the noise source when there is no
//! second baseline) and `candidate_recorded` (the production response vs candidate).

use std::collections::{BTreeSet, HashMap, HashSet};
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
use crate::pending::Pending;
use crate::template::path_template;
use crate::units::{NoiseSource, Obs, Pair, PairSet};

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
        "replays" => PAIRING_COLUMNS,
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

/// The pseudo header a response gets when its `Content-Encoding` label does not decode (a plain
/// body labelled `gzip`): the label is a regression a client sees (it fails to decode), so it
/// is compared as a header difference, while the body is compared as it came.
pub const UNDECODABLE: &str = "x-shadowtap-undecodable-content-encoding";

/// Headers of row `i`, with [`UNDECODABLE`] when its coding label did not decode.
fn headers_checked(
    h: &ArrayRef,
    raw: &ArrayRef,
    decoded: &ArrayRef,
    i: usize,
) -> Vec<(String, String)> {
    let mut headers = headers_at(h, i);
    let coded = headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-encoding"))
        .flat_map(|(_, v)| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .find(|c| !c.is_empty() && c != "identity");
    let body = raw.as_binary::<i32>();
    if let Some(coding) = coded {
        if !decoded.as_binary::<i32>().is_valid(i) && body.is_valid(i) && !body.value(i).is_empty()
        {
            headers.push((UNDECODABLE.to_owned(), coding));
        }
    }
    headers
}

fn body_at(raw: &ArrayRef, decoded: &ArrayRef, i: usize) -> Vec<u8> {
    let d = decoded.as_binary::<i32>();
    if d.is_valid(i) {
        return d.value(i).to_vec();
    }
    raw.as_binary::<i32>().value(i).to_vec()
}

/// The exchange ids replayed in `run` (one column read; the responses are not).
pub fn replayed_ids(replay_dir: &Path, run: &str) -> Result<HashSet<String>, AnalyzeError> {
    let mut ids = HashSet::new();
    for p in parquet_files(replay_dir, "replays") {
        for b in open_projected(&p, "replays", &["run_id", "exchange_id"])? {
            let b = b.map_err(|e| AnalyzeError::Input(format!("{}: {e}", p.display())))?;
            let (r, e) = (
                b.column_by_name("run_id")
                    .expect("projected")
                    .as_string::<i32>()
                    .clone(),
                b.column_by_name("exchange_id")
                    .expect("projected")
                    .as_string::<i32>()
                    .clone(),
            );
            for i in 0..b.num_rows() {
                if r.value(i) == run && !ids.contains(e.value(i)) {
                    ids.insert(e.value(i).to_owned());
                }
            }
        }
    }
    Ok(ids)
}

/// Bounds on the recorded responses [`load_recorded`] holds.
#[derive(Debug, Clone, Copy)]
pub struct RecordedLimits {
    /// Responses at most.
    pub rows: usize,
    /// Bytes of their bodies (decoded where decoded) and headers at most.
    pub bytes: u64,
}

impl Default for RecordedLimits {
    /// 200,000 responses and an eighth of the machine's memory (1 GiB where it is unknown).
    fn default() -> Self {
        RecordedLimits {
            rows: 200_000,
            bytes: shadowtap_core::units::machine_memory().map_or(1 << 30, |m| m / 8),
        }
    }
}

/// What one recorded response costs to hold, besides its body: id, status, headers.
const RESPONSE_OVERHEAD: u64 = 256;

/// Recorded production responses, keyed by exchange id, for the `recorded` comparison: only
/// those of `replayed` exchanges (a sampled replay reads a sample of the recording's
/// responses, not all of them), within `limits` (count and bytes), chosen by a hash of the id
/// so the choice is stable. Two streaming passes over the recording: the first reads each
/// replayed response's size (a batch at a time, nothing kept but the size), which sets how many
/// hash buckets fit the limits; the second keeps the responses in those buckets.
pub fn load_recorded(
    capture_dir: &Path,
    replayed: &HashSet<String>,
    limits: RecordedLimits,
) -> Result<HashMap<String, Response>, AnalyzeError> {
    let files = parquet_files(capture_dir, "exchanges");
    let mut sizes: Vec<(u32, u64)> = Vec::new();
    for_each_recorded(&files, replayed, |id, b, i| {
        let (_, _, raw, dec) = recorded_columns(b);
        let dec = dec.as_binary::<i32>();
        let body = if dec.is_valid(i) {
            dec.value_length(i)
        } else {
            raw.as_binary::<i32>().value_length(i)
        };
        sizes.push((
            shadowtap_core::id::sample_bucket(id.as_bytes()),
            body as u64 + RESPONSE_OVERHEAD,
        ));
    })?;
    let keep_bp = buckets_within(sizes, limits);
    let mut out = HashMap::new();
    for_each_recorded(&files, replayed, |id, b, i| {
        if shadowtap_core::id::sample_bucket(id.as_bytes()) >= keep_bp {
            return;
        }
        let (status, h, raw, dec) = recorded_columns(b);
        out.insert(
            id.to_owned(),
            Response {
                status: Some(status.value(i).clamp(0, 999) as u16),
                headers: headers_checked(h, raw, dec, i),
                body: body_at(raw, dec, i),
            },
        );
    })?;
    Ok(out)
}

/// The hash buckets (of 10,000) kept: the most whose responses fit `limits`, lowest first.
fn buckets_within(mut sizes: Vec<(u32, u64)>, limits: RecordedLimits) -> u32 {
    sizes.sort_unstable();
    let (mut rows, mut bytes) = (0usize, 0u64);
    let mut i = 0;
    while i < sizes.len() {
        let bucket = sizes[i].0;
        let (mut n, mut b) = (0usize, 0u64);
        while i < sizes.len() && sizes[i].0 == bucket {
            n += 1;
            b += sizes[i].1;
            i += 1;
        }
        if rows + n > limits.rows || bytes + b > limits.bytes {
            return bucket;
        }
        rows += n;
        bytes += b;
    }
    10_000
}

type RecordedCols<'a> = (
    &'a arrow::array::PrimitiveArray<Int32Type>,
    &'a ArrayRef,
    &'a ArrayRef,
    &'a ArrayRef,
);

fn recorded_columns(b: &RecordBatch) -> RecordedCols<'_> {
    let col = |n: &str| b.column_by_name(n).expect("projected");
    (
        col("status").as_primitive::<Int32Type>(),
        col("response_headers"),
        col("response_body"),
        col("response_body_decoded"),
    )
}

/// Calls `f(id, batch, row)` for every recorded response (a row with a status) of a
/// `replayed` exchange, a batch at a time.
fn for_each_recorded(
    files: &[PathBuf],
    replayed: &HashSet<String>,
    mut f: impl FnMut(&str, &RecordBatch, usize),
) -> Result<(), AnalyzeError> {
    for p in files {
        let reader = open_projected(
            p,
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
            let status = recorded_columns(&b).0.clone();
            for i in 0..b.num_rows() {
                let id = ids.value(i);
                if !status.is_null(i) && replayed.contains(id) {
                    f(id, &b, i);
                }
            }
        }
    }
    Ok(())
}

/// One replayed row, as grouped.
#[derive(Debug, Clone)]
struct Replayed {
    method: String,
    path: String,
    response: Response,
    latency_us: Option<i64>,
    position: Option<u32>,
}

/// The diff rows being written.
struct DiffWriter {
    sink: ParquetSink,
    rows: Vec<DiffRow>,
    written: u64,
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
        self.written += 1;
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

/// Rows never sent, the same on every target (dropped by a hook, unreplayable): not compared.
const NOT_COUNTED: &[&str] = &["dropped", "unreplayable", "hook"];

/// The replay runs (`run_id`) and targets in a replay directory.
pub fn runs_and_targets(
    replay_dir: &Path,
) -> Result<(BTreeSet<String>, BTreeSet<String>), AnalyzeError> {
    let (mut runs, mut targets) = (BTreeSet::new(), BTreeSet::new());
    for p in parquet_files(replay_dir, "replays") {
        for b in open_projected(&p, "replays", &["run_id", "target"])? {
            let b = b.map_err(|e| AnalyzeError::Input(format!("{}: {e}", p.display())))?;
            let (r, t) = (
                b.column_by_name("run_id")
                    .expect("projected")
                    .as_string::<i32>()
                    .clone(),
                b.column_by_name("target")
                    .expect("projected")
                    .as_string::<i32>()
                    .clone(),
            );
            for i in 0..b.num_rows() {
                if !runs.contains(r.value(i)) {
                    runs.insert(r.value(i).to_owned());
                }
                if !targets.contains(t.value(i)) {
                    targets.insert(t.value(i).to_owned());
                }
            }
        }
    }
    Ok((runs, targets))
}

/// What to pair and where the `diffs` go.
pub struct PairingInput<'a> {
    /// The replay directory.
    pub replay_dir: &'a Path,
    /// Only rows of this replay run.
    pub run: &'a str,
    /// The targets.
    pub targets: PairTargets<'a>,
    /// Production responses from the capture, by exchange id.
    pub recorded: Option<&'a HashMap<String, Response>>,
    /// How to diff.
    pub opts: &'a DiffOptions,
    /// Output directory for `diffs-<analysis>-NNNNN.parquet`.
    pub out: &'a Path,
    /// The analysis id (file names).
    pub analysis_id: &'a str,
    /// Bytes of responses held for requests waiting for another target's row (see
    /// [`crate::pending`]).
    pub pending_bytes: usize,
}

/// The `replays` columns the pairing reads (and `send_position` where the files have it).
pub const PAIRING_COLUMNS: &[&str] = &[
    "run_id",
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
];

/// The replays files under the input's directory, batch by batch, projected on
/// [`PAIRING_COLUMNS`].
fn file_batches<'a>(
    replay_dir: &'a Path,
) -> impl Iterator<Item = Result<RecordBatch, AnalyzeError>> + 'a {
    parquet_files(replay_dir, "replays")
        .into_iter()
        .flat_map(move |p| {
            // `send_position` is in version 2 files only.
            let mut want: Vec<&str> = PAIRING_COLUMNS.to_vec();
            if has_column(&p, "send_position") {
                want.push("send_position");
            }
            let batches: Box<dyn Iterator<Item = Result<RecordBatch, AnalyzeError>>> =
                match open_projected(&p, "replays", &want) {
                    Ok(r) => Box::new(r.map(move |b| {
                        b.map_err(|e| AnalyzeError::Input(format!("{}: {e}", p.display())))
                    })),
                    Err(e) => Box::new(std::iter::once(Err(e))),
                };
            batches
        })
}

/// Streams the replays of one run, pairs every request's rows across targets, diffs each pair
/// (writing the `diffs` table) and returns the pairs and the number of diff rows written.
pub fn pair_replays(input: &PairingInput<'_>) -> Result<(PairSet, u64), AnalyzeError> {
    pair_batches(input, file_batches(input.replay_dir))
}

/// [`pair_replays`] over batches from elsewhere (a SQL engine): [`PAIRING_COLUMNS`] with the
/// types of the `replays` schema, `send_position` optional; rows of other runs and targets
/// are skipped here too.
pub fn pair_batches(
    input: &PairingInput<'_>,
    batches: impl Iterator<Item = Result<RecordBatch, AnalyzeError>>,
) -> Result<(PairSet, u64), AnalyzeError> {
    let out = input.out;
    let sink = ParquetSink::new(
        SinkOptions {
            dir: out.to_path_buf(),
            prefix: format!("diffs-{}", input.analysis_id),
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
        written: 0,
    };
    let targets = &input.targets;
    let noise = if targets.baseline2.is_some() {
        NoiseSource::Baseline2
    } else if input.recorded.is_some_and(|r| !r.is_empty()) {
        NoiseSource::Recorded
    } else {
        NoiseSource::None
    };
    let mut set = PairSet::new(
        targets.baseline,
        targets.candidate,
        targets.baseline2,
        noise,
    );
    set.recorded_known = input.recorded.is_some_and(|r| !r.is_empty());
    let expected: Vec<&str> = [
        Some(targets.baseline),
        Some(targets.candidate),
        targets.baseline2,
    ]
    .into_iter()
    .flatten()
    .collect();
    let mut pending: Pending<(String, i32), Replayed> = Pending::new(input.pending_bytes);
    for b in batches {
        {
            let b = b?;
            // Typed reads below: a column of another type is an error, never a panic.
            let schema = shadowtap_core::replays::replays_schema();
            for c in PAIRING_COLUMNS.iter().chain(&["send_position"]) {
                let want = schema.field_with_name(c).map(|f| f.data_type().clone());
                match (b.column_by_name(c), want) {
                    (Some(col), Ok(want)) if col.data_type() != &want => {
                        return Err(AnalyzeError::Input(format!(
                            "replays column `{c}` is {}, not {want}",
                            col.data_type()
                        )))
                    }
                    (None, _) if *c != "send_position" => {
                        return Err(AnalyzeError::Input(format!(
                            "the replays rows have no column `{c}`"
                        )))
                    }
                    _ => {}
                }
            }
            let has_position = b.column_by_name("send_position").is_some();
            let col = |n: &str| b.column_by_name(n).expect("projected").clone();
            let (runs, ids, passes, tgts, methods, paths, kinds) = (
                col("run_id"),
                col("exchange_id"),
                col("pass"),
                col("target"),
                col("method"),
                col("path"),
                col("error_kind"),
            );
            let (runs, ids, passes, tgts, methods, paths, kinds) = (
                runs.as_string::<i32>(),
                ids.as_string::<i32>(),
                passes.as_primitive::<Int32Type>(),
                tgts.as_string::<i32>(),
                methods.as_string::<i32>(),
                paths.as_string::<i32>(),
                kinds.as_string::<i32>(),
            );
            let status = col("status");
            let status = status.as_primitive::<Int32Type>();
            let total = col("total_us");
            let total = total.as_primitive::<arrow::datatypes::Int64Type>();
            let position = has_position.then(|| col("send_position"));
            let position = position.as_ref().map(|c| c.as_primitive::<Int32Type>());
            let (h, raw, dec) = (
                col("response_headers"),
                col("response_body"),
                col("response_body_decoded"),
            );
            for i in 0..b.num_rows() {
                let t = tgts.value(i);
                if !expected.contains(&t) || runs.value(i) != input.run {
                    continue;
                }
                if kinds.is_valid(i) && NOT_COUNTED.contains(&kinds.value(i)) {
                    continue;
                }
                let key = (ids.value(i).to_owned(), passes.value(i));
                let answered = status.is_valid(i);
                let response = Response {
                    status: answered.then(|| status.value(i).clamp(0, 999) as u16),
                    headers: if answered {
                        headers_checked(&h, &raw, &dec, i)
                    } else {
                        Vec::new()
                    },
                    body: if answered {
                        body_at(&raw, &dec, i)
                    } else {
                        Vec::new()
                    },
                };
                let size = response.body.len()
                    + response
                        .headers
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>();
                let row = Replayed {
                    method: methods.value(i).to_owned(),
                    path: paths.value(i).to_owned(),
                    response,
                    latency_us: total.is_valid(i).then(|| total.value(i)),
                    position: position
                        .filter(|c| c.is_valid(i))
                        .map(|c| c.value(i).max(0) as u32),
                };
                if let Some((key, group)) = pending.add(key, t, row, size, expected.len()) {
                    pair_group(&key, &group, input, &mut set, &mut writer)?;
                }
                while let Some((key, group)) = pending.over_budget() {
                    set.incomplete += 1;
                    pair_group(&key, &group, input, &mut set, &mut writer)?;
                }
            }
        }
    }
    set.pending_evicted = pending.evicted;
    set.pending_late = pending.late;
    set.pending_peak_bytes = pending.peak_bytes as u64;
    for (key, group) in pending.into_rest() {
        set.incomplete += 1;
        pair_group(&key, &group, input, &mut set, &mut writer)?;
    }
    writer.flush()?;
    writer.sink.finish().map_err(|e| AnalyzeError::Io {
        path: out.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    set.group_by_cluster();
    Ok((set, writer.written))
}

fn has_column(path: &Path, name: &str) -> bool {
    File::open(path)
        .ok()
        .and_then(|f| ParquetRecordBatchReaderBuilder::try_new(f).ok())
        .is_some_and(|b| b.schema().field_with_name(name).is_ok())
}

fn obs(r: &Replayed) -> Obs {
    Obs {
        status: r.response.status,
        latency_us: r.latency_us,
        position: r.position,
    }
}

/// Diffs one request's rows and adds its pair (when baseline and candidate both have a row).
fn pair_group(
    key: &(String, i32),
    group: &HashMap<String, Replayed>,
    input: &PairingInput<'_>,
    set: &mut PairSet,
    writer: &mut DiffWriter,
) -> Result<(), AnalyzeError> {
    let targets = &input.targets;
    let (Some(base), Some(cand)) = (group.get(targets.baseline), group.get(targets.candidate))
    else {
        return Ok(());
    };
    let ep_name = endpoint(&base.method, &base.path);
    let ep = set.endpoint_id(&ep_name);
    let cluster = set.cluster_id(&key.0);
    let b2 = targets.baseline2.and_then(|n| group.get(n).map(|r| (n, r)));
    let rec = input.recorded.and_then(|r| r.get(&key.0));
    let mut pair = Pair {
        endpoint: ep,
        cluster,
        baseline: obs(base),
        candidate: obs(cand),
        baseline2: b2.map(|(_, r)| obs(r)),
        recorded_status: rec.and_then(|r| r.status),
        candidate_diff: None,
        noise_diff: None,
    };
    // Only pairs where both sides answered are diffed; transport errors are the error
    // metric's business. The production response, when recorded, is the left side of its
    // comparisons, so "added" means the replayed version has it and production did not.
    let base_side = (targets.baseline, &base.response);
    let mut diff = |kind: ComparisonKind,
                    (ln, l): (&str, &Response),
                    (rn, r): (&str, &Response),
                    set: &mut PairSet|
     -> Result<Option<Vec<u32>>, AnalyzeError> {
        if l.status.is_none() || r.status.is_none() {
            return Ok(None);
        }
        let cmp = compare(&l.side(), &r.side(), input.opts);
        // The row is written whatever it holds; a 5xx side keeps it out of the tests.
        let statuses = (l.status, r.status);
        let fields = match kind {
            ComparisonKind::Candidate => set.judged_fields(&cmp, statuses, ep, Some(&key.0)),
            ComparisonKind::CandidateRecorded => None,
            _ => set.judged_fields(&cmp, statuses, ep, None),
        };
        writer.push(DiffRow {
            exchange_id: key.0.clone(),
            pass: key.1,
            kind,
            left: ln.to_owned(),
            right: rn.to_owned(),
            method: base.method.clone(),
            path: base.path.clone(),
            endpoint: ep_name.clone(),
            left_status: l.status,
            right_status: r.status,
            cmp,
        })?;
        Ok(fields)
    };
    pair.candidate_diff = diff(
        ComparisonKind::Candidate,
        base_side,
        (targets.candidate, &cand.response),
        set,
    )?;
    let noise = match (b2, rec) {
        (Some((n, r)), _) => diff(ComparisonKind::Noise, base_side, (n, &r.response), set)?,
        (None, Some(rec)) => {
            let mut ids = diff(ComparisonKind::Recorded, ("recorded", rec), base_side, set)?;
            if let Some(ids) = ids.as_mut() {
                set.absent_fields_as_volatile(ids);
            }
            ids
        }
        (None, None) => None,
    };
    pair.noise_diff = noise;
    if let Some(rec) = rec {
        if b2.is_some() {
            diff(ComparisonKind::Recorded, ("recorded", rec), base_side, set)?;
        }
        diff(
            ComparisonKind::CandidateRecorded,
            ("recorded", rec),
            (targets.candidate, &cand.response),
            set,
        )?;
    }
    set.pairs.push(pair);
    Ok(())
}

#[cfg(test)]
#[path = "pairs_tests.rs"]
mod tests;

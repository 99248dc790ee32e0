//! A rolling Parquet writer: zstd-compressed files, rolled by size, each written under a hidden
//! temporary name and renamed into place only when complete, so a reader (DuckDB, DataFusion,
//! Spark listing the directory) never sees a half-written file.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

/// Errors of the Parquet sink, naming the file concerned.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// Creating, renaming or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The Parquet encoder failed.
    #[error("{path}: parquet: {source}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: parquet::errors::ParquetError,
    },
}

/// A row group is closed once its encoded size in memory passes this, unless
/// [`ParquetSink::with_row_group_bytes`] says otherwise.
const MAX_ROW_GROUP_BYTES: usize = 64 << 20;

/// Settings of a [`ParquetSink`].
#[derive(Debug, Clone)]
pub struct SinkOptions {
    /// Directory the files are written to (created if missing).
    pub dir: PathBuf,
    /// File name prefix, e.g. `exchanges-20261123T101500Z`; files are `{prefix}-{n:05}.parquet`.
    pub prefix: String,
    /// A file is closed and a new one started once it holds at least this many bytes.
    pub max_file_bytes: u64,
    /// Rows per row group at most.
    pub max_row_group_rows: usize,
}

/// A Parquet file being written under its temporary name.
struct OpenFile {
    tmp: PathBuf,
    path: PathBuf,
    writer: ArrowWriter<File>,
}

/// Whether dictionary encoding is worth it for a column. Not for values that rarely repeat:
/// bodies, timestamps and durations (int64), and per-row ids and URLs. Interning each of those
/// costs a hash and a compare per value until the dictionary overflows and the writer falls
/// back to plain encoding anyway. Low-cardinality columns (method, target, status, run id,
/// header names) keep it; header values are handled with the list leaves in
/// [`ParquetSink::new`]. Only the encoding changes: the files read the same everywhere.
fn dictionary_pays(field: &Field) -> bool {
    let unique = matches!(
        field.data_type(),
        DataType::Binary | DataType::Int64 | DataType::Timestamp(..)
    );
    !unique && !matches!(field.name().as_str(), "exchange_id" | "url" | "uri")
}

/// Writes record batches to a sequence of complete Parquet files.
pub struct ParquetSink {
    options: SinkOptions,
    schema: SchemaRef,
    props: WriterProperties,
    open: Option<OpenFile>,
    next_index: u32,
    finished: Vec<PathBuf>,
    rows: u64,
    max_row_group_bytes: usize,
}

impl ParquetSink {
    /// Creates the directory; no file is created until the first batch arrives.
    pub fn new(options: SinkOptions, schema: SchemaRef) -> Result<Self, SinkError> {
        std::fs::create_dir_all(&options.dir).map_err(|source| SinkError::Io {
            path: options.dir.clone(),
            source,
        })?;
        let mut builder = WriterProperties::builder();
        for field in schema.fields() {
            let col = parquet::schema::types::ColumnPath::from(field.name().as_str());
            if !dictionary_pays(field) {
                builder = builder.set_column_dictionary_enabled(col.clone(), false);
            }
            // Min/max of a body, an id (a hash) or a URL is never used to skip data, and costs
            // a compare per value and a copy per page.
            if matches!(field.data_type(), DataType::Binary)
                || matches!(field.name().as_str(), "exchange_id" | "url" | "uri")
            {
                builder = builder.set_column_statistics_enabled(
                    col,
                    parquet::file::properties::EnabledStatistics::None,
                );
            }
        }
        // Header values (tokens, dates, ETags, lengths) mostly differ row to row; the names
        // repeat and keep their dictionary. Neither gets min/max statistics: no query skips
        // a row group by the smallest header name, and computing them is a string compare per
        // header line.
        if let Ok(parquet_schema) = parquet::arrow::ArrowSchemaConverter::new().convert(&schema) {
            for leaf in parquet_schema.columns() {
                let parts = leaf.path().parts();
                let in_header_list = parts
                    .first()
                    .is_some_and(|top| top.ends_with("_headers") || top.ends_with("_trailers"));
                if !in_header_list {
                    continue;
                }
                builder = builder.set_column_statistics_enabled(
                    leaf.path().clone(),
                    parquet::file::properties::EnabledStatistics::None,
                );
                if parts.last().is_some_and(|l| l == "value") {
                    builder = builder.set_column_dictionary_enabled(leaf.path().clone(), false);
                }
            }
        }
        let props = builder
            // Level 1 (the default): fast, and still 4-10x smaller than plain.
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(options.max_row_group_rows.max(1)))
            .set_created_by(format!("shadowtap {}", env!("CARGO_PKG_VERSION")))
            // The table name and schema version travel as plain Parquet key-value metadata, so
            // tools that ignore the embedded Arrow schema (Spark, DuckDB) can read them too.
            .set_key_value_metadata(Some(
                schema
                    .metadata()
                    .iter()
                    .map(|(k, v)| parquet::file::metadata::KeyValue::new(k.clone(), v.clone()))
                    .collect(),
            ))
            .build();
        Ok(ParquetSink {
            options,
            schema,
            props,
            open: None,
            next_index: 0,
            finished: Vec::new(),
            rows: 0,
            max_row_group_bytes: MAX_ROW_GROUP_BYTES,
        })
    }

    /// Flushes a row group once its encoded size in memory passes `bytes` (default 64 MiB):
    /// what a writer holds besides the batch it is given.
    pub fn with_row_group_bytes(mut self, bytes: usize) -> Self {
        self.max_row_group_bytes = bytes.max(1);
        self
    }

    /// Appends a batch, rolling to a new file when the current one is full.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<(), SinkError> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        let file = match &mut self.open {
            Some(file) => file,
            None => {
                let file = self.open_next()?;
                self.open.insert(file)
            }
        };
        file.writer
            .write(batch)
            .map_err(|source| SinkError::Parquet {
                path: file.tmp.clone(),
                source,
            })?;
        self.rows += batch.num_rows() as u64;
        // A row group is held in memory until it is flushed: bound it by bytes, not only rows
        // (bodies make rows large).
        if file.writer.in_progress_size() > self.max_row_group_bytes {
            file.writer.flush().map_err(|source| SinkError::Parquet {
                path: file.tmp.clone(),
                source,
            })?;
        }
        let size = file.writer.bytes_written() as u64 + file.writer.in_progress_size() as u64;
        if size >= self.options.max_file_bytes {
            self.close_current()?;
        }
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Closes the open file, if any, and returns every complete file written, in order.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, SinkError> {
        self.close_current()?;
        Ok(std::mem::take(&mut self.finished))
    }

    fn open_next(&mut self) -> Result<OpenFile, SinkError> {
        let name = format!("{}-{:05}.parquet", self.options.prefix, self.next_index);
        self.next_index += 1;
        let path = self.options.dir.join(&name);
        let tmp = self.options.dir.join(format!(".{name}.inprogress"));
        let f = File::create(&tmp).map_err(|source| SinkError::Io {
            path: tmp.clone(),
            source,
        })?;
        let writer = ArrowWriter::try_new(f, self.schema.clone(), Some(self.props.clone()))
            .map_err(|source| SinkError::Parquet {
                path: tmp.clone(),
                source,
            })?;
        Ok(OpenFile { tmp, path, writer })
    }

    fn close_current(&mut self) -> Result<(), SinkError> {
        let Some(file) = self.open.take() else {
            return Ok(());
        };
        let OpenFile { tmp, path, writer } = file;
        let f = writer.into_inner().map_err(|source| SinkError::Parquet {
            path: tmp.clone(),
            source,
        })?;
        f.sync_all().map_err(|source| SinkError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &path).map_err(|source| SinkError::Io {
            path: path.clone(),
            source,
        })?;
        self.finished.push(path);
        Ok(())
    }
}

impl Drop for ParquetSink {
    fn drop(&mut self) {
        // A sink dropped without `finish` (an error path) leaves no hidden partial file behind.
        if let Some(file) = self.open.take() {
            let _ = std::fs::remove_file(&file.tmp);
        }
    }
}

/// Lists the complete Parquet files directly inside `dir` whose names start with `prefix`.
pub fn list_parquet_files(dir: &Path, prefix: &str) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".parquet"))
        })
        .collect();
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{exchanges_schema, exchanges_to_batch, SCHEMA_VERSION_KEY};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    /// An `exchanges` sink into `dir` rolling files past `max_file_bytes`.
    fn exchanges_sink(dir: &Path, max_file_bytes: u64) -> ParquetSink {
        let opts = SinkOptions {
            dir: dir.to_path_buf(),
            prefix: "exchanges-t".into(),
            max_file_bytes,
            max_row_group_rows: 1024,
        };
        ParquetSink::new(opts, exchanges_schema()).unwrap()
    }

    #[test]
    fn rolls_files_and_keeps_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = exchanges_sink(dir.path(), 1);
        let batch = exchanges_to_batch(&[crate::schema::tests::sample()]).unwrap();
        sink.write(&batch).unwrap();
        sink.write(&batch).unwrap();
        let files = sink.finish().unwrap();
        assert_eq!(files.len(), 2, "max_file_bytes=1 rolls after every batch");
        assert_eq!(list_parquet_files(dir.path(), "exchanges-").unwrap(), files);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(
            names
                .iter()
                .all(|n| !n.to_string_lossy().contains("inprogress")),
            "{names:?}"
        );
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(File::open(&files[0]).unwrap()).unwrap();
        let kv = reader
            .metadata()
            .file_metadata()
            .key_value_metadata()
            .unwrap();
        assert!(kv.iter().any(|kv| kv.key == SCHEMA_VERSION_KEY
            && kv.value.as_deref()
                == Some(crate::schema::EXCHANGES_SCHEMA_VERSION.to_string().as_str())));
        let rows: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(rows, 1);
    }

    #[test]
    fn per_row_values_skip_the_dictionary_and_statistics_and_repeated_ones_keep_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = exchanges_sink(dir.path(), u64::MAX);
        let rows: Vec<_> = (0..100)
            .map(|i| {
                let mut ex = crate::schema::tests::sample();
                ex.exchange_id = format!("id-{i}");
                ex
            })
            .collect();
        sink.write(&exchanges_to_batch(&rows).unwrap()).unwrap();
        let files = sink.finish().unwrap();
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(File::open(&files[0]).unwrap()).unwrap();
        let meta = reader.metadata().clone();
        let group = meta.row_group(0);
        let dictionary = |name: &str| {
            let column = group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap_or_else(|| panic!("no column {name}"));
            column.dictionary_page_offset().is_some()
        };
        for per_row in [
            "exchange_id",
            "uri",
            "request_start",
            "latency_us",
            "request_body",
        ] {
            assert!(!dictionary(per_row), "{per_row} has a dictionary page");
        }
        for repeated in ["method", "connection_id", "status"] {
            assert!(dictionary(repeated), "{repeated} lost its dictionary");
        }
        let leaf = |list: &str, leaf: &str| {
            group
                .columns()
                .iter()
                .find(|c| {
                    let parts = c.column_path().parts();
                    parts[0] == list && parts.last().map(String::as_str) == Some(leaf)
                })
                .unwrap_or_else(|| panic!("no {list} {leaf}"))
                .dictionary_page_offset()
                .is_some()
        };
        assert!(
            !leaf("request_headers", "value"),
            "header values keep a dictionary"
        );
        assert!(
            leaf("request_headers", "name"),
            "header names lost their dictionary"
        );
        // Min/max only where a reader can skip row groups by them.
        let statistics = |path: &[&str]| {
            group
                .columns()
                .iter()
                .find(|c| {
                    let parts = c.column_path().parts();
                    parts[0] == path[0] && parts.last().map(String::as_str) == path.last().copied()
                })
                .unwrap_or_else(|| panic!("no column {path:?}"))
                .statistics()
                .is_some()
        };
        for kept in ["method", "status", "request_start", "latency_us"] {
            assert!(statistics(&[kept]), "{kept} lost its statistics");
        }
        for skipped in [
            &["exchange_id"][..],
            &["uri"],
            &["request_body"],
            &["request_headers", "name"],
            &["request_headers", "value"],
        ] {
            assert!(!statistics(skipped), "{skipped:?} has statistics");
        }
        // The encoding changes nothing that is read back.
        let back: usize = reader.build().unwrap().map(|b| b.unwrap().num_rows()).sum();
        assert_eq!(back, 100);
    }
}

//! Where the analysis reads the replays: the Parquet files directly ([`Engine::Files`], the
//! default), or SQL on a DataFusion session ([`Engine::Sql`]): the local engine, or a Ballista
//! cluster (`analyze --engine ballista`), whose executors scan, filter and sort the `replays`
//! table (on disk or in object storage, read in place) and stream back only the rows and
//! columns the pairing needs. Diffing, the statistics and the judge run here either way, on
//! the same rows, so both give the same verdict.
//!
//! [`Engine::Sql`] needs a multi-threaded Tokio runtime: the pairing (synchronous) pulls the
//! query's stream from inside `block_in_place`.

use std::collections::{BTreeSet, HashSet};

use arrow::array::{Array, AsArray, RecordBatch};
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use crate::error::AnalyzeError;
use crate::pairs::{pair_batches, PairingInput, PAIRING_COLUMNS};
use crate::tables::{register_location, Listing};
use crate::units::PairSet;

/// How the analysis reads the replays.
#[derive(Clone, Default)]
pub enum Engine {
    /// The `replays-*.parquet` files of the replay directory, read here.
    #[default]
    Files,
    /// SQL on this session, whose `replays` table [`Engine::sql`] registered.
    Sql(SessionContext),
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Files => "Files",
            Self::Sql(_) => "Sql",
        })
    }
}

fn sql_err(e: datafusion::error::DataFusionError) -> AnalyzeError {
    AnalyzeError::Sql(e.to_string().replace('\n', " "))
}

/// `'text'` as a SQL string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

impl Engine {
    /// SQL on `ctx` over the replays under `replay` (a directory or an object-storage prefix).
    /// Strings are read as the `replays` schema types them (not as views).
    pub async fn sql(
        ctx: SessionContext,
        replay: &shadowtap_storage::Location,
        listing: Listing,
    ) -> Result<Self, AnalyzeError> {
        ctx.sql("SET datafusion.execution.parquet.schema_force_view_types = false")
            .await
            .map_err(sql_err)?;
        if register_location(&ctx, "replays", replay, listing).await? == 0 {
            return Err(AnalyzeError::Input(format!(
                "{}: no replays-*.parquet files (is this the --out directory of `shadowtap replay`?)",
                replay.display()
            )));
        }
        Ok(Self::Sql(ctx))
    }

    async fn collect(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>, AnalyzeError> {
        ctx.sql(sql)
            .await
            .map_err(sql_err)?
            .collect()
            .await
            .map_err(sql_err)
    }

    /// The runs and targets of the `replays` table.
    pub(crate) async fn runs_and_targets(
        ctx: &SessionContext,
    ) -> Result<(BTreeSet<String>, BTreeSet<String>), AnalyzeError> {
        let batches = Self::collect(
            ctx,
            "SELECT DISTINCT CAST(run_id AS VARCHAR) AS r, CAST(target AS VARCHAR) AS t FROM replays",
        )
        .await?;
        let (mut runs, mut targets) = (BTreeSet::new(), BTreeSet::new());
        for b in &batches {
            let b = conform(b.clone())?;
            for i in 0..b.num_rows() {
                runs.insert(string_at(&b, 0, i));
                targets.insert(string_at(&b, 1, i));
            }
        }
        Ok((runs, targets))
    }

    /// The exchange ids replayed in `run`.
    pub(crate) async fn replayed_ids(
        ctx: &SessionContext,
        run: &str,
    ) -> Result<HashSet<String>, AnalyzeError> {
        let sql = format!(
            "SELECT DISTINCT CAST(exchange_id AS VARCHAR) FROM replays WHERE run_id = {}",
            literal(run)
        );
        let mut ids = HashSet::new();
        for b in Self::collect(ctx, &sql).await? {
            let b = conform(b)?;
            for i in 0..b.num_rows() {
                ids.insert(string_at(&b, 0, i));
            }
        }
        Ok(ids)
    }

    /// Pairs the run's rows of the input's targets, streamed from the query in exchange order
    /// (so only one request's rows wait for their partners).
    pub(crate) async fn pair(
        ctx: &SessionContext,
        input: &PairingInput<'_>,
    ) -> Result<(PairSet, u64), AnalyzeError> {
        let t = &input.targets;
        let targets: Vec<String> = [Some(t.baseline), Some(t.candidate), t.baseline2]
            .into_iter()
            .flatten()
            .map(literal)
            .collect();
        let table = ctx.table("replays").await.map_err(sql_err)?;
        let mut cols: Vec<&str> = PAIRING_COLUMNS.to_vec();
        if table
            .schema()
            .field_with_unqualified_name("send_position")
            .is_ok()
        {
            cols.push("send_position");
        }
        let sql = format!(
            "SELECT {} FROM replays WHERE run_id = {} AND target IN ({}) ORDER BY exchange_id, pass",
            cols.join(", "),
            literal(input.run),
            targets.join(", ")
        );
        let mut stream = ctx
            .sql(&sql)
            .await
            .map_err(sql_err)?
            .execute_stream()
            .await
            .map_err(sql_err)?;
        tokio::task::block_in_place(|| {
            let batches = std::iter::from_fn(|| {
                futures::executor::block_on(stream.next())
                    .map(|b| b.map_err(sql_err).and_then(conform))
            });
            pair_batches(input, batches)
        })
    }
}

fn string_at(b: &RecordBatch, col: usize, i: usize) -> String {
    let c = b.column(col).as_string::<i32>();
    if c.is_null(i) {
        String::new()
    } else {
        c.value(i).to_owned()
    }
}

/// Casts every column of `b` to the type the `replays` schema gives it (string views to
/// strings and the like), keeping the names; columns the schema lacks are cast to Utf8 when
/// they are string views.
fn conform(b: RecordBatch) -> Result<RecordBatch, AnalyzeError> {
    let schema = shadowtap_core::replays::replays_schema();
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        let want = match schema.field_with_name(f.name()) {
            Ok(s) => s.data_type().clone(),
            Err(_) if matches!(c.data_type(), arrow::datatypes::DataType::Utf8View) => {
                arrow::datatypes::DataType::Utf8
            }
            Err(_) => c.data_type().clone(),
        };
        let cast = if c.data_type() == &want {
            c.clone()
        } else {
            arrow::compute::cast(c, &want).map_err(|e| {
                AnalyzeError::Input(format!(
                    "replays column `{}` ({}) cannot be read as {want}: {e}",
                    f.name(),
                    c.data_type()
                ))
            })?
        };
        fields.push(arrow::datatypes::Field::new(
            f.name(),
            want,
            f.is_nullable() || cast.null_count() > 0,
        ));
        columns.push(cast);
    }
    RecordBatch::try_new(
        std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
        columns,
    )
    .map_err(|e| AnalyzeError::Input(e.to_string()))
}

//! The store's connection: SQLite or PostgreSQL through `sqlx`, behind a small synchronous
//! interface (statements with `$n` parameters, rows of text and integers, explicit
//! transactions) so one set of SQL serves both.
//!
//! sqlx is async; the store is called on tokio's blocking pool ([`super::Store::call`]), so
//! each connection has a current-thread runtime of its own that runs its statements. A
//! runtime cannot be dropped where async tasks run, so a connection is dropped on a thread of
//! its own.

use sqlx::{Connection, Row};

use crate::error::ServeError;

/// A parameter.
#[derive(Debug, Clone)]
pub(super) enum P {
    T(String),
    I(i64),
    F(f64),
    NullF,
}

/// A column's kind, to read it.
#[derive(Debug, Clone, Copy)]
pub(super) enum K {
    T,
    I,
}

/// A value read.
#[derive(Debug, Clone)]
pub(super) enum V {
    T(String),
    I(i64),
}

impl V {
    pub(super) fn text(&self) -> String {
        match self {
            V::T(s) => s.clone(),
            _ => String::new(),
        }
    }
    pub(super) fn int(&self) -> i64 {
        match self {
            V::I(i) => *i,
            _ => 0,
        }
    }
}

enum Db {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

/// One connection and the runtime that drives it.
pub(super) struct Backend {
    rt: Option<tokio::runtime::Runtime>,
    db: Option<Db>,
    /// PostgreSQL's URL, to connect again after the server closed the connection.
    url: String,
    /// An error said the connection is gone: connect again before the next statement.
    broken: bool,
}

/// Statements that take longer fail (the API and the monitor never hang on the store).
const PG_SETUP: &str = "SET statement_timeout = '10s'; SET lock_timeout = '10s'";

fn runtime() -> Result<tokio::runtime::Runtime, ServeError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| ServeError::Store(format!("the store's runtime: {e}")))
}

/// Connects to PostgreSQL (statement and lock timeouts set).
pub(super) async fn pg_connect(url: &str) -> Result<sqlx::PgConnection, ServeError> {
    let mut c = sqlx::PgConnection::connect(url)
        .await
        .map_err(|e| ServeError::Store(format!("{}: {e}", super::redact_url(url))))?;
    sqlx::raw_sql(PG_SETUP).execute(&mut c).await?;
    Ok(c)
}

/// Whether `e` means the connection itself is gone.
fn gone(e: &sqlx::Error) -> bool {
    matches!(
        e,
        sqlx::Error::Io(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::PoolClosed
    ) || e
        .as_database_error()
        .and_then(|d| d.code())
        .is_some_and(|c| c.starts_with("57P") || c.starts_with("08"))
}

impl Backend {
    /// A SQLite database file (created with its directory), WAL mode, synchronous writes.
    pub(super) fn sqlite(path: &str) -> Result<Self, ServeError> {
        use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
        let rt = runtime()?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        let c = rt
            .block_on(sqlx::SqliteConnection::connect_with(&options))
            .map_err(|e| ServeError::Store(format!("{path}: {e}")))?;
        Ok(Self {
            rt: Some(rt),
            db: Some(Db::Sqlite(c)),
            url: String::new(),
            broken: false,
        })
    }

    /// A PostgreSQL connection.
    pub(super) fn postgres(url: &str) -> Result<Self, ServeError> {
        let rt = runtime()?;
        let c = rt.block_on(pg_connect(url))?;
        Ok(Self {
            rt: Some(rt),
            db: Some(Db::Postgres(c)),
            url: url.to_owned(),
            broken: false,
        })
    }

    /// Connects again if an error said the server closed the connection.
    pub(super) fn reconnect_if_closed(&mut self) -> Result<(), ServeError> {
        if !self.broken || !matches!(self.db, Some(Db::Postgres(_))) {
            return Ok(());
        }
        let rt = self.rt.as_ref().expect("only taken on drop");
        let fresh = rt.block_on(pg_connect(&self.url))?;
        self.db = Some(Db::Postgres(fresh));
        self.broken = false;
        Ok(())
    }

    fn note(&mut self, e: sqlx::Error) -> ServeError {
        if gone(&e) {
            self.broken = true;
        }
        ServeError::from(e)
    }

    /// Runs a statement; the rows it changed.
    pub(super) fn exec(&mut self, sql: &'static str, params: &[P]) -> Result<u64, ServeError> {
        let rt = self.rt.as_ref().expect("only taken on drop");
        let r = match self.db.as_mut().expect("only taken on drop") {
            Db::Sqlite(c) => {
                let sql = sqlite_sql(sql);
                rt.block_on(bind_sqlite(sqlx::query(sql), params).execute(&mut *c))
                    .map(|r| r.rows_affected())
            }
            Db::Postgres(c) => rt
                .block_on(bind_pg(sqlx::query(sql), params).execute(&mut *c))
                .map(|r| r.rows_affected()),
        };
        r.map_err(|e| self.note(e))
    }

    /// Runs a query; its rows, read as `kinds` say.
    pub(super) fn query(
        &mut self,
        sql: &'static str,
        params: &[P],
        kinds: &[K],
    ) -> Result<Vec<Vec<V>>, ServeError> {
        fn read<R: Row>(r: &R, kinds: &[K]) -> Result<Vec<V>, sqlx::Error>
        where
            usize: sqlx::ColumnIndex<R>,
            for<'a> String: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
            for<'a> i64: sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
        {
            kinds
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    Ok(match k {
                        K::T => V::T(r.try_get(i)?),
                        K::I => V::I(r.try_get(i)?),
                    })
                })
                .collect()
        }
        let rt = self.rt.as_ref().expect("only taken on drop");
        let r = match self.db.as_mut().expect("only taken on drop") {
            Db::Sqlite(c) => {
                let sql = sqlite_sql(sql);
                rt.block_on(bind_sqlite(sqlx::query(sql), params).fetch_all(&mut *c))
                    .and_then(|rows| rows.iter().map(|r| read(r, kinds)).collect())
            }
            Db::Postgres(c) => rt
                .block_on(bind_pg(sqlx::query(sql), params).fetch_all(&mut *c))
                .and_then(|rows| rows.iter().map(|r| read(r, kinds)).collect()),
        };
        r.map_err(|e| self.note(e))
    }

    /// Runs statements without parameters (`BEGIN`, `COMMIT`, …).
    pub(super) fn batch(&mut self, sql: &'static str) -> Result<(), ServeError> {
        let rt = self.rt.as_ref().expect("only taken on drop");
        let r = match self.db.as_mut().expect("only taken on drop") {
            Db::Sqlite(c) => rt.block_on(sqlx::raw_sql(sql).execute(&mut *c)).map(drop),
            Db::Postgres(c) => rt.block_on(sqlx::raw_sql(sql).execute(&mut *c)).map(drop),
        };
        r.map_err(|e| self.note(e))
    }

    /// The database's clock in Unix milliseconds: PostgreSQL's `clock_timestamp()` (one clock
    /// for every instance, however far their own clocks drift), SQLite's `now` (the host's
    /// clock: an embedded store has no other).
    pub(super) fn now_ms(&mut self) -> Result<i64, ServeError> {
        let sql = match self.db {
            Some(Db::Sqlite(_)) => {
                "SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)"
            }
            _ => "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
        };
        let rows = self.query(sql, &[], &[K::I])?;
        Ok(rows.first().map_or(0, |r| r[0].int()))
    }

    /// `BEGIN` as the database wants it (SQLite takes its write lock at once).
    pub(super) fn begin_sql(&self) -> &'static str {
        match self.db {
            Some(Db::Sqlite(_)) => "BEGIN IMMEDIATE",
            _ => "BEGIN",
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let (rt, db) = (self.rt.take(), self.db.take());
        let _ = std::thread::spawn(move || {
            if let (Some(rt), Some(db)) = (&rt, db) {
                let _ = rt.block_on(async {
                    match db {
                        Db::Sqlite(c) => c.close().await,
                        Db::Postgres(c) => c.close().await,
                    }
                });
            }
            drop(rt);
        })
        .join();
    }
}

/// A statement of the store (a constant: parameters are always bound, never spliced) with
/// SQLite's numbered parameters (`?1`) for PostgreSQL's (`$1`).
fn sqlite_sql(sql: &'static str) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(sql.replace('$', "?"))
}

type SqliteQuery<'q> = sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments>;
type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

fn bind_sqlite<'q>(mut q: SqliteQuery<'q>, params: &[P]) -> SqliteQuery<'q> {
    for p in params {
        q = match p {
            P::T(s) => q.bind(s.clone()),
            P::I(i) => q.bind(*i),
            P::F(f) => q.bind(*f),
            P::NullF => q.bind(None::<f64>),
        };
    }
    q
}

fn bind_pg<'q>(mut q: PgQuery<'q>, params: &[P]) -> PgQuery<'q> {
    for p in params {
        q = match p {
            P::T(s) => q.bind(s.clone()),
            P::I(i) => q.bind(*i),
            P::F(f) => q.bind(*f),
            P::NullF => q.bind(None::<f64>),
        };
    }
    q
}

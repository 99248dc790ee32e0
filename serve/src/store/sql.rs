//! The store's connections: SQLite or PostgreSQL through an `sqlx` pool, behind a small
//! synchronous interface (statements with `$n` parameters, rows of text and integers, explicit
//! transactions on one connection taken from the pool) so one set of SQL serves both.
//!
//! sqlx is async; the store is called on tokio's blocking pool ([`super::Store::call`]), so
//! the pool has a runtime of its own (one worker: it drives the pool's upkeep) on which each
//! call blocks. Taking a connection waits at most [`ACQUIRE_TIMEOUT`]; a connection that an
//! error showed broken, or that may still be inside a transaction, is closed instead of going
//! back to the pool. A runtime cannot be dropped where async tasks run, so the pool is closed
//! and dropped on a thread of its own.

use sqlx::pool::PoolConnection;
use sqlx::Row;

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

/// Connections in the pool: few, as the store's work is small and SQLite has one writer.
const MAX_CONNECTIONS: u32 = 4;

/// How long a call waits for a connection from the pool.
pub(super) const ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3);

/// Statements that take longer fail (the API and the monitor never hang on the store).
const PG_SETUP: &str = "SET statement_timeout = '10s'; SET lock_timeout = '10s'";

enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// The pool and the runtime that drives it.
pub(super) struct Backend {
    rt: Option<tokio::runtime::Runtime>,
    pool: Option<Pool>,
}

enum Db {
    Sqlite(PoolConnection<sqlx::Sqlite>),
    Postgres(PoolConnection<sqlx::Postgres>),
}

/// One connection taken from the pool, given back when dropped (closed instead when it is
/// broken or may be inside a transaction).
pub(super) struct Conn<'a> {
    rt: &'a tokio::runtime::Runtime,
    /// Taken only on drop (given back inside the runtime, which the pool needs).
    db: Option<Db>,
    broken: bool,
}

fn runtime() -> Result<tokio::runtime::Runtime, ServeError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("store")
        .enable_all()
        .build()
        .map_err(|e| ServeError::Store(format!("the store's runtime: {e}")))
}

fn options<DB: sqlx::Database>() -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .min_connections(0)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(true)
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
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        let pool = rt
            .block_on(options().connect_with(connect))
            .map_err(|e| ServeError::Store(format!("{path}: {e}")))?;
        Ok(Self {
            rt: Some(rt),
            pool: Some(Pool::Sqlite(pool)),
        })
    }

    /// A PostgreSQL pool (statement and lock timeouts set on every connection).
    pub(super) fn postgres(url: &str) -> Result<Self, ServeError> {
        use std::str::FromStr;
        let rt = runtime()?;
        let redacted = || super::redact_url(url);
        let connect = sqlx::postgres::PgConnectOptions::from_str(url)
            .map_err(|e| ServeError::Store(format!("{}: {e}", redacted())))?;
        let pool = rt
            .block_on(
                options()
                    .after_connect(|c, _| {
                        Box::pin(async move {
                            sqlx::raw_sql(PG_SETUP).execute(&mut *c).await?;
                            Ok(())
                        })
                    })
                    .connect_with(connect),
            )
            .map_err(|e| ServeError::Store(format!("{}: {e}", redacted())))?;
        Ok(Self {
            rt: Some(rt),
            pool: Some(Pool::Postgres(pool)),
        })
    }

    /// A connection from the pool, waiting at most [`ACQUIRE_TIMEOUT`].
    pub(super) fn acquire(&self) -> Result<Conn<'_>, ServeError> {
        let rt = self.rt.as_ref().expect("only taken on drop");
        let db = match self.pool.as_ref().expect("only taken on drop") {
            Pool::Sqlite(p) => rt.block_on(p.acquire()).map(Db::Sqlite),
            Pool::Postgres(p) => rt.block_on(p.acquire()).map(Db::Postgres),
        }
        .map_err(|e| match e {
            sqlx::Error::PoolTimedOut => ServeError::Store(format!(
                "no connection to the store within {} s",
                ACQUIRE_TIMEOUT.as_secs()
            )),
            e => ServeError::from(e),
        })?;
        Ok(Conn {
            rt,
            db: Some(db),
            broken: false,
        })
    }
}

impl Conn<'_> {
    fn note(&mut self, e: sqlx::Error) -> ServeError {
        if gone(&e) {
            self.broken = true;
        }
        ServeError::from(e)
    }

    /// This connection must not go back to the pool (a transaction may still be open on it).
    pub(super) fn discard(&mut self) {
        self.broken = true;
    }

    /// Runs a statement; the rows it changed.
    pub(super) fn exec(&mut self, sql: &'static str, params: &[P]) -> Result<u64, ServeError> {
        let rt = self.rt;
        let r = match self.db.as_mut().expect("only taken on drop") {
            Db::Sqlite(c) => {
                let sql = sqlite_sql(sql);
                rt.block_on(bind_sqlite(sqlx::query(sql), params).execute(&mut **c))
                    .map(|r| r.rows_affected())
            }
            Db::Postgres(c) => rt
                .block_on(bind_pg(sqlx::query(sql), params).execute(&mut **c))
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
        let rt = self.rt;
        let r = match self.db.as_mut().expect("only taken on drop") {
            Db::Sqlite(c) => {
                let sql = sqlite_sql(sql);
                rt.block_on(bind_sqlite(sqlx::query(sql), params).fetch_all(&mut **c))
                    .and_then(|rows| rows.iter().map(|r| read(r, kinds)).collect())
            }
            Db::Postgres(c) => rt
                .block_on(bind_pg(sqlx::query(sql), params).fetch_all(&mut **c))
                .and_then(|rows| rows.iter().map(|r| read(r, kinds)).collect()),
        };
        r.map_err(|e| self.note(e))
    }

    /// Runs statements without parameters (`BEGIN`, `COMMIT`, …).
    pub(super) fn batch(&mut self, sql: &'static str) -> Result<(), ServeError> {
        let rt = self.rt;
        let r = match self.db.as_mut().expect("only taken on drop") {
            Db::Sqlite(c) => rt.block_on(sqlx::raw_sql(sql).execute(&mut **c)).map(drop),
            Db::Postgres(c) => rt.block_on(sqlx::raw_sql(sql).execute(&mut **c)).map(drop),
        };
        r.map_err(|e| self.note(e))
    }

    /// The database's clock in Unix milliseconds: PostgreSQL's `clock_timestamp()` (one clock
    /// for every instance, however far their own clocks drift), SQLite's `now` (the host's
    /// clock: an embedded store has no other).
    pub(super) fn now_ms(&mut self) -> Result<i64, ServeError> {
        let sql = match self.db.as_ref().expect("only taken on drop") {
            Db::Sqlite(_) => "SELECT CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)",
            Db::Postgres(_) => {
                "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)"
            }
        };
        let rows = self.query(sql, &[], &[K::I])?;
        Ok(rows.first().map_or(0, |r| r[0].int()))
    }

    /// `BEGIN` as the database wants it (SQLite takes its write lock at once).
    pub(super) fn begin_sql(&self) -> &'static str {
        match self.db.as_ref().expect("only taken on drop") {
            Db::Sqlite(_) => "BEGIN IMMEDIATE",
            Db::Postgres(_) => "BEGIN",
        }
    }
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        let Some(mut db) = self.db.take() else {
            return;
        };
        if self.broken {
            match &mut db {
                Db::Sqlite(c) => c.close_on_drop(),
                Db::Postgres(c) => c.close_on_drop(),
            }
        }
        // Giving a connection back spawns a task on the pool's runtime.
        let _inside = self.rt.enter();
        drop(db);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let (rt, pool) = (self.rt.take(), self.pool.take());
        let _ = std::thread::spawn(move || {
            if let (Some(rt), Some(pool)) = (&rt, pool) {
                rt.block_on(async {
                    match pool {
                        Pool::Sqlite(p) => p.close().await,
                        Pool::Postgres(p) => p.close().await,
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

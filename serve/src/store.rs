//! The store: the truth about every load balancer's deployment, its history and the alerts'
//! outbox, in SQLite (the embedded default, WAL mode) or PostgreSQL. One set of SQL statements
//! runs on both. A change is one transaction: the deployment's row is updated only if its
//! version is still the one the change was computed from (so two writers never both win), and
//! the history rows and the outbox rows of that change are written with it or not at all.
//!
//! The driver is `sqlx` (SQLite bundled, PostgreSQL): a pool of a few connections, each call
//! taking one (waiting at most 3 s) behind a synchronous interface ([`sql`]); callers run the
//! store on tokio's blocking pool ([`Store::call`], which gives up after 5 s), so the API, the
//! monitor and the alerts never wait for each other's statements. The migrations are embedded
//! (`MIGRATIONS`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::deployment::{Alert, Deployment, HistoryEntry, Outcome};
use crate::error::ServeError;
use shadowtap_control::gate::PairOutcome;

mod sql;

use sql::{Backend, K, P, V};

/// A connection from the pool, in a transaction or not.
struct Conn<'a> {
    b: sql::Conn<'a>,
}

impl Conn<'_> {
    fn exec(&mut self, sql: &'static str, params: &[P]) -> Result<u64, ServeError> {
        self.b.exec(sql, params)
    }

    fn query(
        &mut self,
        sql: &'static str,
        params: &[P],
        kinds: &[K],
    ) -> Result<Vec<Vec<V>>, ServeError> {
        self.b.query(sql, params, kinds)
    }

    fn begin(&mut self) -> Result<(), ServeError> {
        let begin = self.b.begin_sql();
        self.b.batch(begin)
    }

    fn commit(&mut self) -> Result<(), ServeError> {
        self.b.batch("COMMIT")
    }

    /// Ends the transaction; a connection that cannot is closed rather than given back to
    /// the pool inside it.
    fn rollback(&mut self) {
        if self.b.batch("ROLLBACK").is_err() {
            self.b.discard();
        }
    }

    /// The database's clock, Unix milliseconds: leases run out by it, never by an instance's.
    fn now_ms(&mut self) -> Result<i64, ServeError> {
        self.b.now_ms()
    }

    /// Whether `f` is still held and running (by the database's clock). Touching the lease
    /// row locks it (PostgreSQL) until the transaction ends: a takeover waits for the change
    /// made under `f`, or the change sees the takeover.
    fn holds(&mut self, f: &Fence) -> Result<bool, ServeError> {
        let now = self.now_ms()?;
        let held = self.exec(
            "UPDATE leases SET holder = holder WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_ms > $4",
            &[P::T(f.name.clone()), P::T(f.holder.clone()), P::I(f.epoch), P::I(now)],
        )?;
        Ok(held == 1)
    }
}

/// The schema's migrations, in order: each runs once, in a transaction, recorded in
/// `schema_migrations`; a store created by an older shadowtap is brought up to date at start,
/// and one newer than this binary is refused. Only ever append.
const MIGRATIONS: &[(i64, &[&str])] = &[
    (
        1,
        &[
            "CREATE TABLE IF NOT EXISTS deployments (id TEXT PRIMARY KEY, version BIGINT NOT NULL, doc TEXT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS history (transition_id TEXT PRIMARY KEY, lb TEXT NOT NULL, version BIGINT NOT NULL, doc TEXT NOT NULL)",
            "CREATE INDEX IF NOT EXISTS history_lb ON history (lb, version)",
            "CREATE TABLE IF NOT EXISTS outbox (id TEXT NOT NULL, sink TEXT NOT NULL, lb TEXT NOT NULL, doc TEXT NOT NULL, attempts BIGINT NOT NULL, next_at DOUBLE PRECISION NOT NULL, delivered_at DOUBLE PRECISION, last_error TEXT NOT NULL, PRIMARY KEY (id, sink))",
        ],
    ),
    (
        2,
        &[
            "CREATE TABLE IF NOT EXISTS leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, epoch BIGINT NOT NULL, expires_ms BIGINT NOT NULL)",
            "CREATE TABLE IF NOT EXISTS pool_seconds (instance TEXT NOT NULL, lb TEXT NOT NULL, pool TEXT NOT NULL, second BIGINT NOT NULL, requests BIGINT NOT NULL, errors BIGINT NOT NULL, hist TEXT NOT NULL, PRIMARY KEY (instance, lb, pool, second))",
        ],
    ),
    (
        3,
        &[
            // The mirrored pairs each instance completed in a second: [production error,
            // shadow error, production ms, shadow ms] per pair, so the shadow gate judges the
            // pairs of every instance.
            "CREATE TABLE IF NOT EXISTS pair_seconds (instance TEXT NOT NULL, lb TEXT NOT NULL, second BIGINT NOT NULL, pairs TEXT NOT NULL, PRIMARY KEY (instance, lb, second))",
        ],
    ),
    (
        4,
        &[
            // The lease epoch under which an alert was claimed for sending: a new leader
            // takes over the claims of an older epoch at once instead of waiting them out.
            "ALTER TABLE outbox ADD COLUMN claimed_epoch BIGINT",
        ],
    ),
];

/// `next_at` of a dead letter (never due).
const DEAD: f64 = 1e300;

/// The schema version this binary writes.
pub const SCHEMA_VERSION: i64 = 4;

/// An alert waiting in the outbox.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The alert.
    pub alert: Alert,
    /// `webhook` or `slack`.
    pub sink: String,
    /// Tries so far.
    pub attempts: u32,
}

/// The store, shared.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Backend>,
    /// `sqlite` or `postgres`.
    pub kind: &'static str,
    health: Arc<Mutex<Health>>,
    /// When each call still running began (by a call number), so a store that does not
    /// answer is unhealthy before the calls give up.
    running: Arc<Mutex<(u64, std::collections::BTreeMap<u64, f64>)>>,
}

/// A call running longer than this makes the store unhealthy (`degraded`) until it ends.
const SLOW_CALL_S: f64 = 1.0;

/// How long one call on the store may take before its caller stops waiting (the statement
/// may still finish in the background): a store that is down or black-holed must not hold a
/// rollback or the monitor.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// What the last calls on the store did, for `/healthz` and `/metrics`.
#[derive(Debug, Clone, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Unix seconds of the last call that succeeded.
    pub last_ok: Option<f64>,
    /// Since when every call failed (none: the last call succeeded).
    pub failing_since: Option<f64>,
    /// The last failure's message.
    pub last_error: Option<String>,
}

impl Health {
    /// `ok`, `degraded` (failing for less than `after` seconds) or `failed`.
    pub fn status(&self, now: f64, after: f64) -> &'static str {
        match self.failing_since {
            None => "ok",
            Some(t) if now - t < after => "degraded",
            Some(_) => "failed",
        }
    }
}

/// Whether a commit took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// Written.
    Yes,
    /// The version moved on meanwhile: recompute and retry.
    Conflict,
    /// The lease the change was computed under is gone: nothing was written.
    Fenced,
}

/// A lease held: who holds it and its epoch (raised by every new holder). A change made under
/// a lease carries it, and is written only while the lease is still this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease's name.
    pub name: String,
    /// Its holder (an instance id).
    pub holder: String,
    /// Its epoch.
    pub epoch: i64,
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn ms(t: f64) -> i64 {
    (t * 1000.0) as i64
}

impl Store {
    /// Opens `url` (`sqlite://PATH` or `postgres://…`) and creates the tables. Blocking.
    pub fn open(url: &str) -> Result<Store, ServeError> {
        let (backend, kind) = if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)
                    .map_err(|e| ServeError::Store(format!("{}: {e}", dir.display())))?;
            }
            (Backend::sqlite(path)?, "sqlite")
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::postgres(url)?, "postgres")
        } else {
            return Err(ServeError::Config {
                field: "store.url".into(),
                why: format!(
                    "{}: expected sqlite://PATH or postgres://…",
                    redact_url(url)
                ),
            });
        };
        let store = Store {
            inner: Arc::new(backend),
            kind,
            health: Arc::default(),
            running: Arc::default(),
        };
        store.migrate()?;
        Ok(store)
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Conn<'_>) -> Result<T, ServeError>,
    ) -> Result<T, ServeError> {
        let mut c = Conn {
            b: self.inner.acquire()?,
        };
        f(&mut c)
    }

    fn transaction<T>(
        &self,
        f: impl FnOnce(&mut Conn<'_>) -> Result<T, ServeError>,
    ) -> Result<T, ServeError> {
        self.with(|c| {
            c.begin()?;
            match f(c) {
                Ok(v) => match c.commit() {
                    Ok(()) => Ok(v),
                    Err(e) => {
                        // A failed COMMIT can leave the transaction open (PostgreSQL): end it,
                        // so the connection's next statement is not inside it.
                        c.rollback();
                        Err(e)
                    }
                },
                Err(e) => {
                    c.rollback();
                    Err(e)
                }
            }
        })
    }

    /// Applies the migrations the store lacks, one transaction each; several instances starting
    /// at once take turns (SQLite's write lock, PostgreSQL's advisory lock).
    fn migrate(&self) -> Result<(), ServeError> {
        self.with(|c| {
            c.exec(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
                &[],
            )
        })?;
        let postgres = self.kind == "postgres";
        for (version, statements) in MIGRATIONS {
            self.transaction(|c| {
                if postgres {
                    c.query("SELECT pg_advisory_xact_lock(7274)::TEXT", &[], &[K::T])?;
                }
                let done = c.query(
                    "SELECT version FROM schema_migrations WHERE version = $1",
                    &[P::I(*version)],
                    &[K::I],
                )?;
                if !done.is_empty() {
                    return Ok(());
                }
                for s in *statements {
                    c.exec(s, &[])?;
                }
                c.exec(
                    "INSERT INTO schema_migrations (version, applied_ms) VALUES ($1, $2)",
                    &[
                        P::I(*version),
                        P::I(ms(std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0.0, |d| d.as_secs_f64()))),
                    ],
                )?;
                Ok(())
            })?;
        }
        let newest =
            self.with(|c| c.query("SELECT MAX(version) FROM schema_migrations", &[], &[K::I]))?;
        let newest = newest.first().map_or(0, |r| r[0].int());
        if newest > SCHEMA_VERSION {
            return Err(ServeError::Store(format!(
                "the store's schema is version {newest}, newer than this shadowtap's {SCHEMA_VERSION}: upgrade shadowtap"
            )));
        }
        Ok(())
    }

    /// The store's schema version.
    pub fn schema_version(&self) -> Result<i64, ServeError> {
        let rows =
            self.with(|c| c.query("SELECT MAX(version) FROM schema_migrations", &[], &[K::I]))?;
        Ok(rows.first().map_or(0, |r| r[0].int()))
    }

    /// Runs `f` on the blocking pool, waiting at most [`CALL_TIMEOUT`]; its outcome goes
    /// into [`Store::health`].
    pub async fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, ServeError> + Send + 'static,
    ) -> Result<T, ServeError> {
        let s = self.clone();
        let number = {
            let mut r = self.running.lock().unwrap_or_else(|p| p.into_inner());
            r.0 += 1;
            let n = r.0;
            r.1.insert(n, unix_now());
            n
        };
        let task = tokio::task::spawn_blocking(move || f(&s));
        let out = match tokio::time::timeout(CALL_TIMEOUT, task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(ServeError::Store(format!("the store's task: {e}"))),
            Err(_) => Err(ServeError::Store(format!(
                "the store did not answer within {} s",
                CALL_TIMEOUT.as_secs()
            ))),
        };
        let now = unix_now();
        let started = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .remove(&number)
            .unwrap_or(now);
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        match &out {
            Ok(_) => {
                h.last_ok = Some(now);
                h.failing_since = None;
                h.last_error = None;
            }
            // Errors of the caller's own making (a bad row, a refused change) are answers;
            // only a store that cannot be reached or does not answer is unhealthy.
            Err(ServeError::Store(why)) => {
                // Failing since the call began: the store stopped answering then.
                h.failing_since.get_or_insert(started);
                h.last_error = Some(why.clone());
            }
            Err(_) => {
                h.last_ok = Some(now);
                h.failing_since = None;
            }
        }
        out
    }

    /// What the last calls on the store did; a call still running after [`SLOW_CALL_S`] counts
    /// as failing since it began (a black-holed store is unhealthy before its calls give up).
    pub fn health(&self) -> Health {
        let mut h = self
            .health
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let oldest = self
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .values()
            .copied()
            .fold(f64::INFINITY, f64::min);
        let now = unix_now();
        if now - oldest > SLOW_CALL_S {
            h.failing_since = Some(h.failing_since.map_or(oldest, |t| t.min(oldest)));
            h.last_error = Some(format!(
                "a call has waited {:.0} s for the store",
                now - oldest
            ));
        }
        h
    }

    /// A deployment.
    pub fn load(&self, id: &str) -> Result<Option<Deployment>, ServeError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT doc FROM deployments WHERE id = $1",
                &[P::T(id.into())],
                &[K::T],
            )
        })?;
        rows.first()
            .map(|r| {
                serde_json::from_str(&r[0].text())
                    .map_err(|e| ServeError::Store(format!("deployment {id}: {e}")))
            })
            .transpose()
    }

    /// Stores `d` unless the load balancer has a deployment already; the stored one.
    pub fn create(&self, d: &Deployment) -> Result<Deployment, ServeError> {
        let doc = serde_json::to_string(d).expect("deployment serialises");
        self.transaction(|c| {
            c.exec(
                "INSERT INTO deployments (id, version, doc) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING",
                &[P::T(d.id.clone()), P::I(d.rollout.version as i64), P::T(doc)],
            )
        })?;
        self.load(&d.id)?
            .ok_or_else(|| ServeError::Store(format!("deployment {} vanished", d.id)))
    }

    /// Takes or renews the lease `name` for `holder` for `ttl` seconds of the database's clock
    /// (PostgreSQL's, one for all instances: their own clocks may drift apart): its fence when
    /// held, `None` when another holder's lease is still running or this holder's was taken
    /// over meanwhile. A lease that ran out goes to the first to ask, with the next epoch.
    pub fn lease(&self, name: &str, holder: &str, ttl: f64) -> Result<Option<Fence>, ServeError> {
        let fence = |epoch| Fence {
            name: name.into(),
            holder: holder.into(),
            epoch,
        };
        let ttl_ms = ms(ttl);
        self.transaction(|c| {
            let now = c.now_ms()?;
            let n = c.exec(
                "INSERT INTO leases (name, holder, epoch, expires_ms) VALUES ($1, $2, 1, $3) ON CONFLICT (name) DO NOTHING",
                &[P::T(name.into()), P::T(holder.into()), P::I(now + ttl_ms)],
            )?;
            if n == 1 {
                return Ok(Some(fence(1)));
            }
            let rows = c.query(
                "SELECT holder, epoch, expires_ms FROM leases WHERE name = $1",
                &[P::T(name.into())],
                &[K::T, K::I, K::I],
            )?;
            let Some(r) = rows.first() else {
                return Ok(None);
            };
            let (who, epoch, expires) = (r[0].text(), r[1].int(), r[2].int());
            if who == holder && expires > now {
                let renewed = c.exec(
                    "UPDATE leases SET expires_ms = $1 WHERE name = $2 AND holder = $3 AND epoch = $4 AND expires_ms > $5",
                    &[
                        P::I(now + ttl_ms),
                        P::T(name.into()),
                        P::T(holder.into()),
                        P::I(epoch),
                        P::I(now),
                    ],
                )?;
                // Renewed only if the row is still ours: another holder may have taken it
                // between the read and the write.
                return Ok((renewed == 1).then(|| fence(epoch)));
            }
            if expires <= now {
                let n = c.exec(
                    "UPDATE leases SET holder = $1, epoch = $2, expires_ms = $3 WHERE name = $4 AND epoch = $5",
                    &[
                        P::T(holder.into()),
                        P::I(epoch + 1),
                        P::I(now + ttl_ms),
                        P::T(name.into()),
                        P::I(epoch),
                    ],
                )?;
                return Ok((n == 1).then(|| fence(epoch + 1)));
            }
            Ok(None)
        })
    }

    /// Gives the lease up (a graceful stop), so another instance takes it at once.
    pub fn release(&self, f: &Fence) -> Result<(), ServeError> {
        self.with(|c| {
            c.exec(
                "UPDATE leases SET expires_ms = 0 WHERE name = $1 AND holder = $2 AND epoch = $3",
                &[P::T(f.name.clone()), P::T(f.holder.clone()), P::I(f.epoch)],
            )
        })
        .map(|_| ())
    }

    /// Writes `o` if the stored version is still `expected` (and, with a `fence`, while that
    /// lease is still held and running): the deployment, its history rows and its alerts (one
    /// outbox row per sink), in one transaction.
    pub fn commit(
        &self,
        expected: u64,
        o: &Outcome,
        sinks: &[&str],
        now: f64,
        fence: Option<&Fence>,
    ) -> Result<Committed, ServeError> {
        let d = &o.deployment;
        let doc = serde_json::to_string(d).expect("deployment serialises");
        self.transaction(|c| {
            if let Some(f) = fence {
                if !c.holds(f)? {
                    return Ok(Committed::Fenced);
                }
            }
            let n = c.exec(
                "UPDATE deployments SET version = $1, doc = $2 WHERE id = $3 AND version = $4",
                &[
                    P::I(d.rollout.version as i64),
                    P::T(doc),
                    P::T(d.id.clone()),
                    P::I(expected as i64),
                ],
            )?;
            if n == 0 {
                return Ok(Committed::Conflict);
            }
            for h in &o.history {
                c.exec(
                    "INSERT INTO history (transition_id, lb, version, doc) VALUES ($1, $2, $3, $4)",
                    &[
                        P::T(h.transition_id.clone()),
                        P::T(d.id.clone()),
                        P::I(h.version as i64),
                        P::T(serde_json::to_string(h).expect("history serialises")),
                    ],
                )?;
            }
            for a in &o.alerts {
                for sink in sinks {
                    c.exec(
                        "INSERT INTO outbox (id, sink, lb, doc, attempts, next_at, delivered_at, last_error) VALUES ($1, $2, $3, $4, 0, $5, $6, '')",
                        &[
                            P::T(a.id.clone()),
                            P::T((*sink).into()),
                            P::T(d.id.clone()),
                            P::T(serde_json::to_string(a).expect("alert serialises")),
                            P::F(now),
                            P::NullF,
                        ],
                    )?;
                }
            }
            if self.kind == "postgres" {
                // Delivered to the other instances when (and only if) this commits.
                c.query(
                    "SELECT pg_notify('shadowtap_changes', $1)::TEXT",
                    &[P::T(d.id.clone())],
                    &[K::T],
                )?;
            }
            Ok(Committed::Yes)
        })
    }

    /// On PostgreSQL, the ids of load balancers other instances change, as they commit
    /// (LISTEN/NOTIFY on a connection of its own, on a thread of its own); `None` on SQLite.
    /// Best effort: a missed notification is caught by the once-a-second poll.
    pub fn listen(url: &str) -> Option<tokio::sync::mpsc::Receiver<String>> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return None;
        }
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let url = url.to_owned();
        let spawned = std::thread::Builder::new()
            .name("store-listen".into())
            .spawn(move || {
                let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                rt.block_on(async move {
                    let pause = std::time::Duration::from_secs(1);
                    while !tx.is_closed() {
                        let mut l = match sqlx::postgres::PgListener::connect(&url).await {
                            Ok(l) => l,
                            Err(_) => {
                                tokio::time::sleep(pause).await;
                                continue;
                            }
                        };
                        if l.listen("shadowtap_changes").await.is_err() {
                            tokio::time::sleep(pause).await;
                            continue;
                        }
                        while !tx.is_closed() {
                            match tokio::time::timeout(pause, l.recv()).await {
                                Ok(Ok(note)) => {
                                    let _ = tx.try_send(note.payload().to_owned());
                                }
                                Ok(Err(_)) => break,
                                Err(_) => {}
                            }
                        }
                    }
                });
            });
        spawned.ok().map(|_| rx)
    }

    /// A load balancer's history, oldest first.
    pub fn history(&self, id: &str) -> Result<Vec<HistoryEntry>, ServeError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT doc FROM history WHERE lb = $1 ORDER BY version",
                &[P::T(id.into())],
                &[K::T],
            )
        })?;
        rows.iter()
            .map(|r| {
                serde_json::from_str(&r[0].text())
                    .map_err(|e| ServeError::Store(format!("history of {id}: {e}")))
            })
            .collect()
    }

    /// Alerts due for a try at `now`, oldest first.
    pub fn due(&self, now: f64, limit: i64) -> Result<Vec<Pending>, ServeError> {
        let rows = self.with(|c| Self::due_rows(c, now, limit))?;
        Self::pending(&rows)
    }

    /// Claims the alerts due at `now` for the holder of `fence`, to send: they are not due
    /// again before `now + hold` (delivered, failed or dead meanwhile, they are written so),
    /// except to a later leader (a higher epoch), which takes over an earlier one's claims at
    /// once. `None` when the lease is no longer held: a deposed leader sends nothing, as it
    /// writes nothing.
    pub fn claim(
        &self,
        fence: &Fence,
        now: f64,
        limit: i64,
        hold: f64,
    ) -> Result<Option<Vec<Pending>>, ServeError> {
        let rows = self.transaction(|c| {
            if !c.holds(fence)? {
                return Ok(None);
            }
            let rows = c.query(
                "SELECT doc, sink, attempts, id FROM outbox WHERE delivered_at IS NULL AND (next_at <= $1 OR (claimed_epoch IS NOT NULL AND claimed_epoch < $2)) ORDER BY next_at, id LIMIT $3",
                &[P::F(now), P::I(fence.epoch), P::I(limit)],
                &[K::T, K::T, K::I, K::T],
            )?;
            for r in &rows {
                c.exec(
                    "UPDATE outbox SET next_at = $1, claimed_epoch = $2 WHERE id = $3 AND sink = $4 AND delivered_at IS NULL",
                    &[P::F(now + hold), P::I(fence.epoch), P::T(r[3].text()), P::T(r[1].text())],
                )?;
            }
            Ok(Some(rows))
        })?;
        rows.map(|r| Self::pending(&r)).transpose()
    }

    fn due_rows(c: &mut Conn<'_>, now: f64, limit: i64) -> Result<Vec<Vec<V>>, ServeError> {
        c.query(
            "SELECT doc, sink, attempts, id FROM outbox WHERE delivered_at IS NULL AND next_at <= $1 ORDER BY next_at, id LIMIT $2",
            &[P::F(now), P::I(limit)],
            &[K::T, K::T, K::I, K::T],
        )
    }

    fn pending(rows: &[Vec<V>]) -> Result<Vec<Pending>, ServeError> {
        rows.iter()
            .map(|r| {
                Ok(Pending {
                    alert: serde_json::from_str(&r[0].text())
                        .map_err(|e| ServeError::Store(format!("outbox: {e}")))?,
                    sink: r[1].text(),
                    attempts: r[2].int() as u32,
                })
            })
            .collect()
    }

    /// Alerts not yet delivered (dead letters excepted).
    pub fn undelivered(&self) -> Result<u64, ServeError> {
        self.outbox_count("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND next_at < $1")
    }

    /// Dead letters: alerts no longer retried (see [`Store::dead`]).
    pub fn dead_letters(&self) -> Result<u64, ServeError> {
        self.outbox_count(
            "SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND next_at >= $1",
        )
    }

    /// A count over the outbox, `$1` the dead letters' `next_at`.
    fn outbox_count(&self, sql: &'static str) -> Result<u64, ServeError> {
        let rows = self.with(|c| c.query(sql, &[P::F(DEAD)], &[K::I]))?;
        Ok(rows.first().map_or(0, |r| r[0].int() as u64))
    }

    /// Makes an alert a dead letter: kept with its last error, never due again.
    pub fn dead(&self, id: &str, sink: &str, why: &str) -> Result<(), ServeError> {
        self.with(|c| {
            c.exec(
                "UPDATE outbox SET attempts = attempts + 1, next_at = $1, last_error = $2, claimed_epoch = NULL WHERE id = $3 AND sink = $4",
                &[
                    P::F(DEAD),
                    P::T(format!("dead letter: {why}")),
                    P::T(id.into()),
                    P::T(sink.into()),
                ],
            )
        })
        .map(|_| ())
    }

    /// Publishes one instance's figures of one pool for one whole second (idempotent: the same
    /// second again replaces them). `hist` is the latency histogram.
    #[allow(clippy::too_many_arguments)]
    pub fn publish(
        &self,
        instance: &str,
        lb: &str,
        pool: &str,
        second: i64,
        requests: u64,
        errors: u64,
        hist: &[u64],
    ) -> Result<(), ServeError> {
        let sparse: Vec<(usize, u64)> = hist
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(k, c)| (k, *c))
            .collect();
        let hist = serde_json::to_string(&sparse).expect("pairs serialise");
        self.with(|c| {
            c.exec(
                "INSERT INTO pool_seconds (instance, lb, pool, second, requests, errors, hist) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (instance, lb, pool, second) DO UPDATE SET requests = excluded.requests, errors = excluded.errors, hist = excluded.hist",
                &[
                    P::T(instance.into()),
                    P::T(lb.into()),
                    P::T(pool.into()),
                    P::I(second),
                    P::I(requests as i64),
                    P::I(errors as i64),
                    P::T(hist),
                ],
            )
        })
        .map(|_| ())
    }

    /// A pool's figures summed over every instance for the seconds `from..=to`: requests,
    /// errors, histogram (`buckets` long), and how many instances published.
    pub fn combined(
        &self,
        lb: &str,
        pool: &str,
        from: i64,
        to: i64,
        buckets: usize,
    ) -> Result<(u64, u64, Vec<u64>, usize), ServeError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT instance, requests, errors, hist FROM pool_seconds WHERE lb = $1 AND pool = $2 AND second >= $3 AND second <= $4",
                &[P::T(lb.into()), P::T(pool.into()), P::I(from), P::I(to)],
                &[K::T, K::I, K::I, K::T],
            )
        })?;
        let (mut requests, mut errors, mut hist) = (0u64, 0u64, vec![0u64; buckets]);
        let mut instances = std::collections::BTreeSet::new();
        for r in &rows {
            instances.insert(r[0].text());
            requests += r[1].int().max(0) as u64;
            errors += r[2].int().max(0) as u64;
            let sparse: Vec<(usize, u64)> = serde_json::from_str(&r[3].text()).unwrap_or_default();
            for (k, n) in sparse {
                if let Some(h) = hist.get_mut(k) {
                    *h += n;
                }
            }
        }
        Ok((requests, errors, hist, instances.len()))
    }

    /// Publishes the mirrored pairs this instance completed in `second`.
    pub fn publish_pairs(
        &self,
        instance: &str,
        lb: &str,
        second: i64,
        pairs: &[PairOutcome],
    ) -> Result<(), ServeError> {
        let bit = |b: bool| u8::from(b);
        let rows: Vec<(u8, u8, Option<f64>, Option<f64>)> = pairs
            .iter()
            .map(|p| {
                (
                    bit(p.production_error),
                    bit(p.shadow_error),
                    p.production_ms,
                    p.shadow_ms,
                )
            })
            .collect();
        let text = serde_json::to_string(&rows).expect("pairs serialise");
        self.with(|c| {
            c.exec(
                "INSERT INTO pair_seconds (instance, lb, second, pairs) VALUES ($1, $2, $3, $4) ON CONFLICT (instance, lb, second) DO UPDATE SET pairs = excluded.pairs",
                &[P::T(instance.into()), P::T(lb.into()), P::I(second), P::T(text)],
            )
        })
        .map(|_| ())
    }

    /// The mirrored pairs every instance completed in the seconds `from..=to`.
    pub fn combined_pairs(
        &self,
        lb: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<PairOutcome>, ServeError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT pairs FROM pair_seconds WHERE lb = $1 AND second >= $2 AND second <= $3",
                &[P::T(lb.into()), P::I(from), P::I(to)],
                &[K::T],
            )
        })?;
        let mut out = Vec::new();
        for r in &rows {
            let pairs: Vec<(u8, u8, Option<f64>, Option<f64>)> =
                serde_json::from_str(&r[0].text()).unwrap_or_default();
            out.extend(pairs.into_iter().map(|(pe, se, pm, sm)| PairOutcome {
                production_error: pe != 0,
                shadow_error: se != 0,
                production_ms: pm,
                shadow_ms: sm,
            }));
        }
        Ok(out)
    }

    /// Instances other than `me` that published figures of `lb` since `since`.
    pub fn peers(&self, lb: &str, me: &str, since: i64) -> Result<u64, ServeError> {
        let rows = self.with(|c| {
            c.query(
                "SELECT COUNT(DISTINCT instance) FROM pool_seconds WHERE lb = $1 AND instance <> $2 AND second >= $3",
                &[P::T(lb.into()), P::T(me.into()), P::I(since)],
                &[K::I],
            )
        })?;
        Ok(rows.first().map_or(0, |r| r[0].int().max(0) as u64))
    }

    /// Forgets published figures older than `before` (Unix seconds).
    pub fn prune_seconds(&self, before: i64) -> Result<u64, ServeError> {
        let pools = self.with(|c| {
            c.exec(
                "DELETE FROM pool_seconds WHERE second < $1",
                &[P::I(before)],
            )
        })?;
        let pairs = self.with(|c| {
            c.exec(
                "DELETE FROM pair_seconds WHERE second < $1",
                &[P::I(before)],
            )
        })?;
        Ok(pools + pairs)
    }

    /// Forgets alerts delivered before `before` (the outbox does not grow without bound; the
    /// history keeps every transition).
    pub fn prune(&self, before: f64) -> Result<u64, ServeError> {
        self.with(|c| {
            c.exec(
                "DELETE FROM outbox WHERE delivered_at IS NOT NULL AND delivered_at < $1",
                &[P::F(before)],
            )
        })
    }

    /// Marks a delivery done.
    pub fn delivered(&self, id: &str, sink: &str, now: f64) -> Result<(), ServeError> {
        self.with(|c| {
            c.exec(
                "UPDATE outbox SET delivered_at = $1, attempts = attempts + 1, claimed_epoch = NULL WHERE id = $2 AND sink = $3",
                &[P::F(now), P::T(id.into()), P::T(sink.into())],
            )
        })
        .map(|_| ())
    }

    /// Records a failed try; the next one at `next_at`.
    pub fn failed(&self, id: &str, sink: &str, next_at: f64, why: &str) -> Result<(), ServeError> {
        self.with(|c| {
            c.exec(
                "UPDATE outbox SET attempts = attempts + 1, next_at = $1, last_error = $2, claimed_epoch = NULL WHERE id = $3 AND sink = $4",
                &[P::F(next_at), P::T(why.into()), P::T(id.into()), P::T(sink.into())],
            )
        })
        .map(|_| ())
    }
}

/// A store URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let cred = &url[s + 3..at];
            match cred.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_show() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/x"),
            "postgres://app:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://db/x"), "postgres://db/x");
    }
}

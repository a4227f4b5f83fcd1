//! The embedded SQLite log.
//!
//! One writer thread owns the only write connection. Appends from any number of tasks queue
//! on a bounded channel; the writer takes everything queued (up to a bound), writes it in one
//! transaction with a savepoint per append (so one failing batch does not sink the others)
//! and commits once: many publishers, one fsync. Seqs are assigned by the writer, so they are
//! strictly increasing and gapless in commit order by construction. After the commit the
//! writer hands the committed events to the commit sink (the live fan-out), then answers.
//!
//! Readers use a small pool of read connections; WAL mode lets them read a consistent
//! snapshot while the writer commits.
//!
//! `durability = "fsync"` runs with `synchronous=FULL` (the WAL is fsynced at every commit:
//! survives power loss); `"commit"` with `synchronous=NORMAL` (survives a crash of the
//! process, not of the machine).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crier_core::entity::{
    Applied, EntityError, EntityKey, EntityRow, EntityStore, LinkQuery, LinkRow, Mutation,
};
use crier_core::event::now_us;
use crier_core::log::{BoxFuture, CommitSink, EventCounts};
use crier_core::{
    AppendResult, Committed, EventLog, LogError, NewEvent, Principal, ReadPage, ReadQuery, Scope,
};
use rusqlite::{params, Connection, OpenFlags, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

mod entities;
pub mod filters;
pub mod keys;
mod read;
#[cfg(test)]
mod read_tests;
mod side;
mod writer;
#[cfg(test)]
mod writer_tests;

use crate::rows::{committed, EVENT_COLUMNS as COLUMNS};
use read::{last_received_before, read_blocking, to_i64};
pub(crate) use side::read_only;
use writer::Writer;

use crate::group_commit::{MutateReq, Reply};

pub use filters::SqliteFilters;
pub use keys::SqliteKeys;
pub use side::{SideStore, SideTables};

/// The schema version this build writes and understands.
const SCHEMA_VERSION: i64 = 1;
/// At most this many events go into one group commit.
const MAX_GROUP_EVENTS: usize = 20_000;
/// At most this many rows are examined by one read call.
const SCAN_BUDGET: usize = 20_000;
/// At most this many rows are deleted by one retention step.
const PRUNE_CHUNK: u64 = 10_000;
/// Queued write requests before appenders wait.
const WRITE_QUEUE: usize = 4096;
/// Reads run at once at most, each on a pooled connection kept open. More readers wait
/// their turn: hundreds of clients catching up at once would otherwise each get a blocking
/// thread and a fresh connection with a cold page cache, and the machine would spend itself
/// on SQLite's shared locks and the allocator instead of reading.
const READ_POOL: usize = 8;

/// How far a commit goes before it is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync at every group commit: survives power loss.
    #[default]
    Fsync,
    /// Written to the OS at every commit: survives a process crash, not a power loss.
    Commit,
}

enum WriteReq {
    Append {
        batch: Vec<NewEvent>,
        reply: Reply<Vec<AppendResult>>,
    },
    Mutate(Box<MutateReq>),
    Prune {
        upto: u64,
        reply: Reply<u64>,
    },
    Close {
        reply: Reply<()>,
    },
    /// A side table's write (subscriptions, saved filters), run between two groups.
    Side(side::SideJob),
    /// Runs a test's code on the writer's connection, between two groups.
    #[cfg(test)]
    Hook(Box<dyn FnOnce(&mut Connection) + Send>),
}

struct Shared {
    path: PathBuf,
    head: AtomicU64,
    pruned: AtomicU64,
    readers: Mutex<Vec<Connection>>,
    /// One permit per read running; [`READ_POOL`] in all.
    reading: Arc<tokio::sync::Semaphore>,
    sink: OnceLock<CommitSink>,
}

/// The SQLite event log. See the module docs.
pub struct SqliteLog {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<WriteReq>>>,
}

/// Opens a further connection to the log's file (keys, subscriptions) beside a running
/// writer and makes sure `schema` exists. The file is already in WAL mode when the log made
/// it, so the mode is set only on a file that is not in WAL yet. Setting up a connection
/// can meet `SQLITE_BUSY` at once, without SQLite's busy wait, while the writer commits;
/// that is retried for up to ten seconds, like a busy statement.
pub(crate) fn open_side_connection(path: &Path, schema: &str) -> rusqlite::Result<Connection> {
    let deadline = Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let attempt = (|| {
            let conn = Connection::open(path)?;
            conn.busy_timeout(std::time::Duration::from_secs(10))?;
            let mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                conn.pragma_update(None, "journal_mode", "WAL")?;
            }
            conn.execute_batch(schema)?;
            Ok(conn)
        })();
        match attempt {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy && Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

fn backend(e: rusqlite::Error) -> LogError {
    LogError::backend(e)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) STRICT;
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    time_us INTEGER NOT NULL,
    recv_us INTEGER NOT NULL,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    category TEXT,
    severity INTEGER NOT NULL,
    subject TEXT,
    tags TEXT NOT NULL,
    json BLOB NOT NULL
) STRICT;
CREATE UNIQUE INDEX IF NOT EXISTS events_tenant_id ON events (tenant, id);
CREATE INDEX IF NOT EXISTS events_tenant_seq ON events (tenant, seq);
CREATE INDEX IF NOT EXISTS events_tenant_time ON events (tenant, time_us);
";

/// The API key table (see [`crate::keys`]); created with the log and by key administration.
pub(crate) const KEYS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    tenant TEXT NOT NULL,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_us INTEGER NOT NULL,
    revoked_us INTEGER
) STRICT;
";

/// Per-tenant counters of stored events by dimension (`type`, `category`, `severity`,
/// `source`, and `total` with key `""`), updated in the same transaction as appends and
/// prunes.
const STATS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS stats (
    tenant TEXT NOT NULL,
    dim TEXT NOT NULL,
    key TEXT NOT NULL,
    n INTEGER NOT NULL,
    PRIMARY KEY (tenant, dim, key)
) STRICT, WITHOUT ROWID;
";

/// Rebuilds the counters of stored events from the events themselves (used once, when the
/// counters are new to a store).
const STATS_REBUILD: &str = "
DELETE FROM stats;
INSERT INTO stats (tenant, dim, key, n) SELECT tenant, 'total', '', COUNT(*) FROM events GROUP BY tenant;
INSERT INTO stats (tenant, dim, key, n) SELECT tenant, 'type', type, COUNT(*) FROM events GROUP BY tenant, type;
INSERT INTO stats (tenant, dim, key, n) SELECT tenant, 'category', category, COUNT(*) FROM events WHERE category IS NOT NULL GROUP BY tenant, category;
INSERT INTO stats (tenant, dim, key, n) SELECT tenant, 'severity', CAST(severity AS TEXT), COUNT(*) FROM events GROUP BY tenant, severity;
INSERT INTO stats (tenant, dim, key, n) SELECT tenant, 'source', source, COUNT(*) FROM events GROUP BY tenant, source;
";

/// Subtracts the events up to `?1` (and above the previous prune) from the counters.
const STATS_PRUNE: &str = "
INSERT INTO stats (tenant, dim, key, n) SELECT tenant, 'total', '', -COUNT(*) FROM events WHERE seq <= ?1 GROUP BY tenant
  ON CONFLICT (tenant, dim, key) DO UPDATE SET n = n + excluded.n;
INSERT INTO stats (tenant, dim, key, n) SELECT tenant, 'type', type, -COUNT(*) FROM events WHERE seq <= ?1 GROUP BY tenant, type
  ON CONFLICT (tenant, dim, key) DO UPDATE SET n = n + excluded.n;
INSERT INTO stats (tenant, dim, key, n) SELECT tenant, 'category', category, -COUNT(*) FROM events WHERE seq <= ?1 AND category IS NOT NULL GROUP BY tenant, category
  ON CONFLICT (tenant, dim, key) DO UPDATE SET n = n + excluded.n;
INSERT INTO stats (tenant, dim, key, n) SELECT tenant, 'severity', CAST(severity AS TEXT), -COUNT(*) FROM events WHERE seq <= ?1 GROUP BY tenant, severity
  ON CONFLICT (tenant, dim, key) DO UPDATE SET n = n + excluded.n;
INSERT INTO stats (tenant, dim, key, n) SELECT tenant, 'source', source, -COUNT(*) FROM events WHERE seq <= ?1 GROUP BY tenant, source
  ON CONFLICT (tenant, dim, key) DO UPDATE SET n = n + excluded.n;
";

/// Tags are stored joined by U+001F, a control character tags may not contain.
pub(crate) const TAG_SEP: char = '\u{1f}';

fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

fn open_conn(path: &Path, durability: Durability) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match durability {
        Durability::Fsync => "FULL",
        Durability::Commit => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    Ok(conn)
}

fn open_reader(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(conn)
}

impl SqliteLog {
    /// Opens (creating if needed) the log at `path` and starts its writer thread.
    pub fn open(path: &Path, durability: Durability) -> Result<SqliteLog, LogError> {
        let mut conn = open_conn(path, durability).map_err(backend)?;
        let tx = conn.transaction().map_err(backend)?;
        tx.execute_batch(SCHEMA).map_err(backend)?;
        tx.execute_batch(KEYS_SCHEMA).map_err(backend)?;
        tx.execute_batch(STATS_SCHEMA).map_err(backend)?;
        tx.execute_batch(&entities::entity_schema())
            .map_err(backend)?;
        if meta_get(&tx, "stats_ready").map_err(backend)?.is_none() {
            tx.execute_batch(STATS_REBUILD).map_err(backend)?;
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('stats_ready', 1)",
                [],
            )
            .map_err(backend)?;
        }
        let version = meta_get(&tx, "schema_version").map_err(backend)?;
        if crate::rows::schema_check(version, SCHEMA_VERSION)? {
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                [SCHEMA_VERSION],
            )
            .map_err(backend)?;
        }
        tx.commit().map_err(backend)?;
        let pruned = meta_get(&conn, "pruned_through")
            .map_err(backend)?
            .unwrap_or(0);
        let max: i64 = conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))
            .map_err(backend)?;
        let last_recv: i64 = conn
            .query_row("SELECT COALESCE(MAX(recv_us), 0) FROM events", [], |r| {
                r.get(0)
            })
            .map_err(backend)?;
        let head = u64::try_from(max.max(pruned)).unwrap_or(0);
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            head: AtomicU64::new(head),
            pruned: AtomicU64::new(u64::try_from(pruned).unwrap_or(0)),
            readers: Mutex::new(Vec::new()),
            reading: Arc::new(tokio::sync::Semaphore::new(READ_POOL)),
            sink: OnceLock::new(),
        });
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let writer = Writer {
            conn,
            shared: shared.clone(),
            next_seq: head + 1,
            last_recv,
        };
        std::thread::Builder::new()
            .name("crier-log-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(LogError::backend)?;
        Ok(SqliteLog {
            shared,
            tx: Mutex::new(Some(tx)),
        })
    }

    /// Where the database file lives.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    fn sender(&self) -> Result<mpsc::Sender<WriteReq>, LogError> {
        self.tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(LogError::Closed)
    }

    async fn request<T>(&self, make: impl FnOnce(Reply<T>) -> WriteReq) -> Result<T, LogError> {
        let (reply, rx) = oneshot::channel();
        self.sender()?
            .send(make(reply))
            .await
            .map_err(|_| LogError::Closed)?;
        rx.await.map_err(|_| LogError::Closed)?
    }

    /// Runs `f` on a pooled read connection on the blocking pool, once one of the
    /// [`READ_POOL`] turns is free (a caller that gives up while waiting leaves no work
    /// behind).
    async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, LogError> {
        let shared = self.shared.clone();
        let turn = shared
            .reading
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LogError::Closed)?;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let pooled = shared
                .readers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => open_reader(&shared.path).map_err(backend)?,
            };
            let out = f(&mut conn).map_err(backend);
            let mut pool = shared.readers.lock().unwrap_or_else(|p| p.into_inner());
            if pool.len() < READ_POOL {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(LogError::backend)?
    }
}

impl EventLog for SqliteLog {
    fn append(&self, batch: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<AppendResult>, LogError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            let t0 = Instant::now();
            let out = self
                .request(|reply| WriteReq::Append { batch, reply })
                .await;
            metrics::histogram!("crier_log_append_seconds").record(t0.elapsed().as_secs_f64());
            out
        })
    }

    fn read(&self, query: ReadQuery) -> BoxFuture<'_, Result<ReadPage, LogError>> {
        Box::pin(self.with_reader(move |conn| read_blocking(conn, &query)))
    }

    fn get(
        &self,
        tenant: &str,
        id: &str,
    ) -> BoxFuture<'_, Result<Option<Arc<Committed>>, LogError>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        Box::pin(self.with_reader(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE tenant = ?1 AND id = ?2"
            ))?
            .query_row(params![tenant, id], |r| committed(r))
            .optional()
        }))
    }

    fn head(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire)
    }

    fn pruned_through(&self) -> u64 {
        self.shared.pruned.load(Ordering::Acquire)
    }

    fn prune(
        &self,
        max_age_us: Option<i64>,
        max_events: Option<u64>,
    ) -> BoxFuture<'_, Result<u64, LogError>> {
        Box::pin(async move {
            let head = self.head();
            let mut target = self.pruned_through();
            if let Some(max) = max_events {
                target = target.max(head.saturating_sub(max));
            }
            if let Some(age) = max_age_us {
                let cutoff = now_us().saturating_sub(age);
                let from = target;
                let by_age = self
                    .with_reader(move |conn| last_received_before(conn, from, head, cutoff))
                    .await?;
                target = target.max(by_age);
            }
            let mut pruned = self.pruned_through();
            while pruned < target {
                let upto = target.min(pruned + PRUNE_CHUNK);
                pruned = self
                    .request(|reply| WriteReq::Prune { upto, reply })
                    .await?;
            }
            Ok(pruned)
        })
    }

    fn counts(&self, scope: Scope) -> BoxFuture<'_, Result<EventCounts, LogError>> {
        let head = self.head();
        let pruned = self.pruned_through();
        Box::pin(self.with_reader(move |conn| {
            let tenant = match &scope {
                Scope::Tenant(t) => Some(t.clone()),
                Scope::All => None,
            };
            let mut out = EventCounts::default();
            {
                let mut stmt = conn.prepare_cached(
                    "SELECT dim, key, SUM(n) FROM stats WHERE (?1 IS NULL OR tenant = ?1) GROUP BY dim, key",
                )?;
                let mut rows = stmt.query([&tenant])?;
                while let Some(r) = rows.next()? {
                    let dim: String = r.get(0)?;
                    let key: String = r.get(1)?;
                    let n = u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0);
                    out.add(&dim, key, n);
                }
            }
            let now = now_us();
            for (window, slot) in [(3_600_000_000i64, 0usize), (60_000_000, 1)] {
                let from = last_received_before(conn, pruned, head, now - window)?;
                let n: i64 = match &tenant {
                    Some(t) => conn
                        .prepare_cached("SELECT COUNT(*) FROM events WHERE tenant = ?1 AND seq > ?2")?
                        .query_row(params![t, to_i64(from)], |r| r.get(0))?,
                    None => conn
                        .prepare_cached("SELECT COUNT(*) FROM events WHERE seq > ?1")?
                        .query_row([to_i64(from)], |r| r.get(0))?,
                };
                let n = u64::try_from(n).unwrap_or(0);
                if slot == 0 {
                    out.last_hour = n;
                } else {
                    out.last_minute = n;
                }
            }
            Ok(out)
        }))
    }

    fn set_commit_sink(&self, sink: CommitSink) {
        // Installed once at start; a second call is ignored (the first sink stays).
        let _ = self.shared.sink.set(sink);
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            self.sender()?;
            self.with_reader(|conn| conn.query_row("SELECT 1", [], |_| Ok(())))
                .await
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            let Some(tx) = self.tx.lock().unwrap_or_else(|p| p.into_inner()).take() else {
                return Ok(());
            };
            let (reply, rx) = oneshot::channel();
            tx.send(WriteReq::Close { reply })
                .await
                .map_err(|_| LogError::Closed)?;
            rx.await.map_err(|_| LogError::Closed)?
        })
    }
}

impl EntityStore for SqliteLog {
    fn mutate(
        &self,
        mutation: Mutation,
        principal: Principal,
        max_event_bytes: usize,
    ) -> BoxFuture<'_, Result<Applied, EntityError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let req = MutateReq {
                mutation,
                principal,
                max_event_bytes,
                reply,
            };
            self.sender()?
                .send(WriteReq::Mutate(Box::new(req)))
                .await
                .map_err(|_| LogError::Closed)?;
            rx.await.map_err(|_| LogError::Closed)?
        })
    }

    fn entity(
        &self,
        tenant: &str,
        key: &EntityKey,
    ) -> BoxFuture<'_, Result<Option<EntityRow>, LogError>> {
        let (tenant, key) = (tenant.to_string(), key.clone());
        Box::pin(self.with_reader(move |conn| {
            Ok(entities::entity_row(conn, &tenant, &key)?.filter(EntityRow::live))
        }))
    }

    fn entities(
        &self,
        tenant: &str,
        kind: &str,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<EntityRow>, LogError>> {
        let (tenant, kind) = (tenant.to_string(), kind.to_string());
        let after = after.map(str::to_string);
        Box::pin(
            self.with_reader(move |conn| {
                entities::list(conn, &tenant, &kind, after.as_deref(), limit)
            }),
        )
    }

    fn links(&self, tenant: &str, q: LinkQuery) -> BoxFuture<'_, Result<Vec<LinkRow>, LogError>> {
        let tenant = tenant.to_string();
        Box::pin(self.with_reader(move |conn| entities::links(conn, &tenant, &q)))
    }
}

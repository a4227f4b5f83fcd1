//! The side tables of `crier.db` (webhook subscriptions, saved filters) and who writes them.
//!
//! SQLite lets one connection write at a time. A hub's side stores therefore never write on
//! a connection of their own: each write is a job for the log's writer thread, run in its own
//! transaction between two commit groups and answered through a oneshot, so it never waits
//! for SQLite's write lock against group commit (and group commit never waits for it). Their
//! reads go to a read-only connection, which WAL lets read beside the writer.
//!
//! Without a running log (the conformance suite, tools) a side store owns one read-write
//! connection instead; the data-directory lock keeps a hub from opening the same file then.

use std::marker::PhantomData;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crier_core::log::BoxFuture;
use crier_core::LogError;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::{backend, open_reader, SqliteLog, WriteReq};

/// A write for the log's writer thread: it runs the job with the writer's connection, outside
/// any group, and the job answers its caller itself.
pub(super) type SideJob = Box<dyn FnOnce(&mut Connection) + Send>;

/// How a side store reaches the file: reads on `conn`, writes through the log's writer (or on
/// `conn` when there is no log).
#[derive(Clone)]
pub(crate) struct SideConn {
    conn: Arc<Mutex<Connection>>,
    writer: Option<mpsc::Sender<WriteReq>>,
}

/// Tables a [`SideStore`] keeps in a SQLite file, beside the log's own.
pub trait SideTables: 'static {
    /// The statements that create them if needed.
    const SCHEMA: &'static str;
}

/// The side tables `T` of a SQLite file ([`crate::SqliteSubs`], [`crate::SqliteFilters`]).
pub struct SideStore<T> {
    pub(crate) side: SideConn,
    tables: PhantomData<fn() -> T>,
}

impl<T> Clone for SideStore<T> {
    fn clone(&self) -> Self {
        SideStore {
            side: self.side.clone(),
            tables: PhantomData,
        }
    }
}

impl<T: SideTables> SideStore<T> {
    /// Opens the tables of the store at `path` (creating them if needed) with a connection
    /// of their own: for a file no log runs on (a hub uses [`SideStore::with_log`]).
    pub fn open(path: &Path) -> Result<Self, LogError> {
        let side = SideConn::standalone(path, T::SCHEMA)?;
        Ok(SideStore {
            side,
            tables: PhantomData,
        })
    }

    /// The tables of `log`'s file: writes go through the log's writer thread, reads use a
    /// read-only connection.
    pub async fn with_log(log: &SqliteLog) -> Result<Self, LogError> {
        let side = SideConn::on_log(log, T::SCHEMA).await?;
        Ok(SideStore {
            side,
            tables: PhantomData,
        })
    }
}

/// Runs `f` in one `IMMEDIATE` transaction on `conn` and commits when it succeeds.
fn in_transaction<T>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
) -> Result<T, LogError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend)?;
    let v = f(&tx).map_err(backend)?;
    tx.commit().map_err(backend)?;
    Ok(v)
}

impl SideConn {
    /// A store of its own at `path` (no hub runs on it): one read-write connection, with
    /// `schema` created if needed.
    pub(crate) fn standalone(path: &Path, schema: &str) -> Result<SideConn, LogError> {
        let conn = super::open_side_connection(path, schema).map_err(backend)?;
        Ok(SideConn {
            conn: Arc::new(Mutex::new(conn)),
            writer: None,
        })
    }

    /// The side tables of `log`'s file: `schema` is created by the log's writer, reads use a
    /// read-only connection.
    pub(crate) async fn on_log(
        log: &SqliteLog,
        schema: &'static str,
    ) -> Result<SideConn, LogError> {
        let side = SideConn {
            conn: Arc::new(Mutex::new(open_reader(log.path()).map_err(backend)?)),
            writer: Some(log.sender()?),
        };
        side.write(move |tx| tx.execute_batch(schema)).await?;
        Ok(side)
    }

    /// Runs a read on the blocking pool.
    pub(crate) fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, LogError>> {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                // A std Mutex: held for one short statement, never across an await.
                let c = conn.lock().unwrap_or_else(|p| p.into_inner());
                f(&c).map_err(backend)
            })
            .await
            .map_err(LogError::backend)?
        })
    }

    /// Runs a write in one transaction, committed when `f` succeeds: on the log's writer
    /// thread when there is a log, else on the blocking pool.
    pub(crate) fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, LogError>> {
        let Some(writer) = self.writer.clone() else {
            let conn = self.conn.clone();
            return Box::pin(async move {
                tokio::task::spawn_blocking(move || {
                    // A std Mutex: held for one short transaction, never across an await.
                    let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
                    in_transaction(&mut c, f)
                })
                .await
                .map_err(LogError::backend)?
            });
        };
        Box::pin(async move {
            let (reply, answer) = oneshot::channel();
            let job: SideJob = Box::new(move |conn| {
                let _ = reply.send(in_transaction(conn, f));
            });
            writer
                .send(WriteReq::Side(job))
                .await
                .map_err(|_| LogError::Closed)?;
            answer.await.map_err(|_| LogError::Closed)?
        })
    }
}

/// A read-only connection to the file at `path`, for a store that only reads beside the log.
pub(crate) fn read_only(path: &Path) -> Result<Connection, LogError> {
    open_reader(path).map_err(backend)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sqlite::Durability;

    const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS side_t (v INTEGER NOT NULL) STRICT;";

    fn values(c: &Connection) -> rusqlite::Result<Vec<i64>> {
        let mut stmt = c.prepare("SELECT v FROM side_t ORDER BY v")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect()
    }

    #[tokio::test]
    async fn a_side_write_never_commits_what_a_failed_group_left_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = SqliteLog::open(&dir.path().join("s.db"), Durability::Commit).expect("open");
        let side = SideConn::on_log(&log, SCHEMA).await.expect("side");
        // As after a group whose ROLLBACK failed: the writer's connection is still inside a
        // transaction, with a write nobody was told is stored.
        let leftover = |conn: &mut Connection| {
            conn.execute_batch("BEGIN; INSERT INTO side_t (v) VALUES (1);")
                .expect("leftover transaction");
        };
        log.sender()
            .expect("open log")
            .send(WriteReq::Hook(Box::new(leftover)))
            .await
            .expect("writer runs");
        side.write(|tx| tx.execute("INSERT INTO side_t (v) VALUES (2)", []))
            .await
            .expect("side write");
        assert_eq!(side.read(values).await.expect("read"), vec![2]);
    }

    #[tokio::test]
    async fn a_failing_side_write_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let log = SqliteLog::open(&dir.path().join("s.db"), Durability::Commit).expect("open");
        let side = SideConn::on_log(&log, SCHEMA).await.expect("side");
        let failed = side
            .write(|tx| {
                tx.execute("INSERT INTO side_t (v) VALUES (1)", [])?;
                tx.execute("INSERT INTO no_such_table (v) VALUES (2)", [])
            })
            .await;
        assert!(failed.is_err());
        side.write(|tx| tx.execute("INSERT INTO side_t (v) VALUES (3)", []))
            .await
            .expect("the writer goes on");
        assert_eq!(side.read(values).await.expect("read"), vec![3]);
    }
}

//! Durable subscriptions and their delivery records (`subscriptions` and `deliveries` tables
//! of `crier.db`).
//!
//! A subscription is a cursor over the log with a webhook. Its `cursor` only moves forward
//! when a delivery succeeded (or was skipped as dead under `on_dead = "skip"`), except by an
//! explicit redeliver. Each attempted event has one delivery record, updated per attempt.

use std::path::Path;
use std::sync::{Arc, Mutex};

use crier_core::event::now_us;
use crier_core::log::BoxFuture;
use crier_core::LogError;
use rusqlite::{params, Connection, OptionalExtension};

pub(crate) const SUBS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    filter TEXT NOT NULL,
    url TEXT NOT NULL,
    secret TEXT NOT NULL,
    cursor INTEGER NOT NULL,
    status TEXT NOT NULL,
    expires_us INTEGER,
    created_us INTEGER NOT NULL,
    note TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS subscriptions_tenant ON subscriptions (tenant, created_us);
CREATE TABLE IF NOT EXISTS deliveries (
    sub_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    tenant TEXT NOT NULL,
    event_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    last_status_code INTEGER,
    last_error TEXT,
    next_attempt_us INTEGER,
    updated_us INTEGER NOT NULL,
    PRIMARY KEY (sub_id, seq)
) STRICT;
CREATE INDEX IF NOT EXISTS deliveries_tenant_status ON deliveries (tenant, status);
";

/// Counts by status.
pub type StatusCounts = Vec<(String, u64)>;

/// A stored subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Identifier (`sub_…`).
    pub id: String,
    /// Owner.
    pub tenant: String,
    /// Human name.
    pub name: String,
    /// The filter, as its JSON text.
    pub filter: String,
    /// Webhook URL.
    pub url: String,
    /// Signing secret (`whsec_…`); never shown after creation.
    pub secret: String,
    /// Every matching event up to here was delivered (or skipped).
    pub cursor: u64,
    /// `active`, `paused`, `disabled` (the receiver answered 410) or `expired`.
    pub status: String,
    /// Expiry, microseconds since the epoch.
    pub expires_us: Option<i64>,
    /// Creation time.
    pub created_us: i64,
    /// Why it paused, or that it skipped pruned events.
    pub note: Option<String>,
}

/// One delivery record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The subscription.
    pub sub_id: String,
    /// The event's seq.
    pub seq: u64,
    /// The event's id (`webhook-id`).
    pub event_id: String,
    /// `pending`, `delivered`, `failed` or `dead`.
    pub status: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Status code of the last answer.
    pub last_status_code: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
    /// When the next attempt is due.
    pub next_attempt_us: Option<i64>,
    /// Last change.
    pub updated_us: i64,
}

/// Subscriptions stored in a SQLite file.
#[derive(Clone)]
pub struct SqliteSubs {
    conn: Arc<Mutex<Connection>>,
}

fn backend(e: rusqlite::Error) -> LogError {
    LogError::backend(e)
}

const SUB_COLUMNS: &str =
    "id, tenant, name, filter, url, secret, cursor, status, expires_us, created_us, note";

fn row_to_sub(r: &rusqlite::Row<'_>) -> rusqlite::Result<Subscription> {
    let cursor: i64 = r.get(6)?;
    Ok(Subscription {
        id: r.get(0)?,
        tenant: r.get(1)?,
        name: r.get(2)?,
        filter: r.get(3)?,
        url: r.get(4)?,
        secret: r.get(5)?,
        cursor: u64::try_from(cursor).unwrap_or(0),
        status: r.get(7)?,
        expires_us: r.get(8)?,
        created_us: r.get(9)?,
        note: r.get(10)?,
    })
}

const DELIVERY_COLUMNS: &str =
    "sub_id, seq, event_id, status, attempts, last_status_code, last_error, next_attempt_us, updated_us";

fn row_to_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<Delivery> {
    let seq: i64 = r.get(1)?;
    let attempts: i64 = r.get(4)?;
    let code: Option<i64> = r.get(5)?;
    Ok(Delivery {
        sub_id: r.get(0)?,
        seq: u64::try_from(seq).unwrap_or(0),
        event_id: r.get(2)?,
        status: r.get(3)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_status_code: code.and_then(|c| u16::try_from(c).ok()),
        last_error: r.get(6)?,
        next_attempt_us: r.get(7)?,
        updated_us: r.get(8)?,
    })
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Fields a PATCH may change (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct SubPatch {
    /// New name.
    pub name: Option<String>,
    /// New filter JSON.
    pub filter: Option<String>,
    /// New URL.
    pub url: Option<String>,
    /// New secret.
    pub secret: Option<String>,
    /// New status (`active` / `paused`).
    pub status: Option<String>,
    /// New expiry (`Some(None)` clears it).
    pub expires_us: Option<Option<i64>>,
}

impl SqliteSubs {
    /// Opens the subscription tables of the store at `path`.
    pub fn open(path: &Path) -> Result<SqliteSubs, LogError> {
        let conn = crate::sqlite::open_side_connection(path, SUBS_SCHEMA).map_err(backend)?;
        Ok(SqliteSubs {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, LogError>> {
        let conn = self.conn.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                // A std Mutex: held for one short statement or transaction, never across an await.
                let mut c = conn.lock().unwrap_or_else(|p| p.into_inner());
                f(&mut c).map_err(backend)
            })
            .await
            .map_err(LogError::backend)?
        })
    }
}

/// Where subscriptions and their delivery records live (SQLite for one node, PostgreSQL
/// for a cluster). Every method takes owned arguments and returns a `'static` future so
/// callers can hold it across their own awaits.
pub trait SubStore: Send + Sync + 'static {
    /// Stores a new subscription.
    fn create(&self, s: Subscription) -> BoxFuture<'static, Result<Subscription, LogError>>;

    /// One subscription of a tenant (`None` tenant: any).
    fn get(
        &self,
        tenant: Option<String>,
        id: String,
    ) -> BoxFuture<'static, Result<Option<Subscription>, LogError>>;

    /// A tenant's subscriptions (`None`: all), oldest first.
    fn list(
        &self,
        tenant: Option<String>,
    ) -> BoxFuture<'static, Result<Vec<Subscription>, LogError>>;

    /// Applies a patch; returns the updated subscription, or `None` if absent.
    fn update(
        &self,
        tenant: String,
        id: String,
        p: SubPatch,
    ) -> BoxFuture<'static, Result<Option<Subscription>, LogError>>;

    /// Deletes a subscription and its records; false if absent.
    fn delete(&self, tenant: String, id: String) -> BoxFuture<'static, Result<bool, LogError>>;

    /// Moves the cursor forward (never back).
    fn advance(&self, id: String, seq: u64) -> BoxFuture<'static, Result<(), LogError>>;

    /// Sets the status and note.
    fn set_status(
        &self,
        id: String,
        status: &'static str,
        note: Option<String>,
    ) -> BoxFuture<'static, Result<(), LogError>>;

    /// Records a note without changing the status (e.g. events skipped by retention).
    fn set_note(&self, id: String, note: String) -> BoxFuture<'static, Result<(), LogError>>;

    /// Writes a delivery record (insert or replace).
    fn record(&self, tenant: String, d: Delivery) -> BoxFuture<'static, Result<(), LogError>>;

    /// The record of one event, if any.
    fn delivery(
        &self,
        sub_id: String,
        seq: u64,
    ) -> BoxFuture<'static, Result<Option<Delivery>, LogError>>;

    /// Records of a subscription, newest first, optionally by status.
    fn deliveries(
        &self,
        sub_id: String,
        status: Option<String>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Delivery>, LogError>>;

    /// Moves the cursor back to `after`, turns dead records above it back to pending and
    /// reactivates the subscription.
    fn redeliver(
        &self,
        tenant: String,
        id: String,
        after: u64,
    ) -> BoxFuture<'static, Result<Option<Subscription>, LogError>>;

    /// Counts of a tenant's (`None`: all) subscriptions by status and deliveries by status.
    fn counts(
        &self,
        tenant: Option<String>,
    ) -> BoxFuture<'static, Result<(StatusCounts, StatusCounts), LogError>>;
}

impl SubStore for SqliteSubs {
    /// Stores a new subscription.
    fn create(&self, s: Subscription) -> BoxFuture<'static, Result<Subscription, LogError>> {
        self.run(move |c| {
            c.execute(
                &format!("INSERT INTO subscriptions ({SUB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                params![s.id, s.tenant, s.name, s.filter, s.url, s.secret, i(s.cursor), s.status, s.expires_us, s.created_us, s.note],
            )?;
            Ok(s)
        })
    }

    /// One subscription of a tenant (`None` tenant: any).
    fn get(
        &self,
        tenant: Option<String>,
        id: String,
    ) -> BoxFuture<'static, Result<Option<Subscription>, LogError>> {
        self.run(move |c| {
            c.query_row(
                &format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = ?1"),
                [&id],
                row_to_sub,
            )
            .optional()
            .map(|s| s.filter(|s| tenant.as_ref().is_none_or(|t| *t == s.tenant)))
        })
    }

    /// A tenant's subscriptions (`None`: all), oldest first.
    fn list(
        &self,
        tenant: Option<String>,
    ) -> BoxFuture<'static, Result<Vec<Subscription>, LogError>> {
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {SUB_COLUMNS} FROM subscriptions WHERE (?1 IS NULL OR tenant = ?1) ORDER BY created_us, id"
            ))?;
            let rows = stmt.query_map([tenant], row_to_sub)?;
            rows.collect()
        })
    }

    /// Applies a patch; returns the updated subscription, or `None` if absent.
    fn update(
        &self,
        tenant: String,
        id: String,
        p: SubPatch,
    ) -> BoxFuture<'static, Result<Option<Subscription>, LogError>> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let Some(mut s) = tx
                .query_row(&format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = ?1 AND tenant = ?2"), [&id, &tenant], row_to_sub)
                .optional()?
            else {
                return Ok(None);
            };
            if let Some(v) = p.name {
                s.name = v;
            }
            if let Some(v) = p.filter {
                s.filter = v;
            }
            if let Some(v) = p.url {
                s.url = v;
            }
            if let Some(v) = p.secret {
                s.secret = v;
            }
            if let Some(v) = p.status {
                if v == "active" {
                    s.note = None;
                }
                s.status = v;
            }
            if let Some(v) = p.expires_us {
                s.expires_us = v;
            }
            tx.execute(
                "UPDATE subscriptions SET name = ?2, filter = ?3, url = ?4, secret = ?5, status = ?6, expires_us = ?7, note = ?8 WHERE id = ?1",
                params![s.id, s.name, s.filter, s.url, s.secret, s.status, s.expires_us, s.note],
            )?;
            tx.commit()?;
            Ok(Some(s))
        })
    }

    /// Deletes a subscription and its records; false if absent.
    fn delete(&self, tenant: String, id: String) -> BoxFuture<'static, Result<bool, LogError>> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "DELETE FROM subscriptions WHERE id = ?1 AND tenant = ?2",
                [&id, &tenant],
            )?;
            tx.execute(
                "DELETE FROM deliveries WHERE sub_id = ?1 AND tenant = ?2",
                [&id, &tenant],
            )?;
            tx.commit()?;
            Ok(n > 0)
        })
    }

    /// Moves the cursor forward (never back).
    fn advance(&self, id: String, seq: u64) -> BoxFuture<'static, Result<(), LogError>> {
        self.run(move |c| {
            c.execute(
                "UPDATE subscriptions SET cursor = MAX(cursor, ?2) WHERE id = ?1",
                params![id, i(seq)],
            )?;
            Ok(())
        })
    }

    /// Sets the status and note.
    fn set_status(
        &self,
        id: String,
        status: &'static str,
        note: Option<String>,
    ) -> BoxFuture<'static, Result<(), LogError>> {
        self.run(move |c| {
            c.execute(
                "UPDATE subscriptions SET status = ?2, note = ?3 WHERE id = ?1",
                params![id, status, note],
            )?;
            Ok(())
        })
    }

    /// Records a note without changing the status (e.g. events skipped by retention).
    fn set_note(&self, id: String, note: String) -> BoxFuture<'static, Result<(), LogError>> {
        self.run(move |c| {
            c.execute(
                "UPDATE subscriptions SET note = ?2 WHERE id = ?1",
                params![id, note],
            )?;
            Ok(())
        })
    }

    /// Writes a delivery record (insert or replace).
    fn record(&self, tenant: String, d: Delivery) -> BoxFuture<'static, Result<(), LogError>> {
        self.run(move |c| {
            c.execute(
                "INSERT INTO deliveries (sub_id, seq, tenant, event_id, status, attempts, last_status_code, last_error, next_attempt_us, updated_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (sub_id, seq) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
                   last_status_code = excluded.last_status_code, last_error = excluded.last_error,
                   next_attempt_us = excluded.next_attempt_us, updated_us = excluded.updated_us",
                params![d.sub_id, i(d.seq), tenant, d.event_id, d.status, i64::from(d.attempts), d.last_status_code.map(i64::from), d.last_error, d.next_attempt_us, d.updated_us],
            )?;
            Ok(())
        })
    }

    /// The record of one event, if any.
    fn delivery(
        &self,
        sub_id: String,
        seq: u64,
    ) -> BoxFuture<'static, Result<Option<Delivery>, LogError>> {
        self.run(move |c| {
            c.query_row(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE sub_id = ?1 AND seq = ?2"
                ),
                params![sub_id, i(seq)],
                row_to_delivery,
            )
            .optional()
        })
    }

    /// Records of a subscription, newest first, optionally by status.
    fn deliveries(
        &self,
        sub_id: String,
        status: Option<String>,
        limit: usize,
    ) -> BoxFuture<'static, Result<Vec<Delivery>, LogError>> {
        self.run(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE sub_id = ?1 AND (?2 IS NULL OR status = ?2) ORDER BY seq DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![sub_id, status, i64::try_from(limit).unwrap_or(i64::MAX)], row_to_delivery)?;
            rows.collect()
        })
    }

    /// Moves the cursor back to `after`, turns dead records above it back to pending and
    /// reactivates the subscription.
    fn redeliver(
        &self,
        tenant: String,
        id: String,
        after: u64,
    ) -> BoxFuture<'static, Result<Option<Subscription>, LogError>> {
        self.run(move |c| {
            let tx = c.transaction()?;
            let n = tx.execute(
                "UPDATE subscriptions SET cursor = ?3, status = CASE WHEN status = 'disabled' THEN status ELSE 'active' END, note = NULL WHERE id = ?1 AND tenant = ?2",
                params![id, tenant, i(after)],
            )?;
            if n == 0 {
                return Ok(None);
            }
            tx.execute(
                "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_us = NULL, updated_us = ?3 WHERE sub_id = ?1 AND seq > ?2 AND status = 'dead'",
                params![id, i(after), now_us()],
            )?;
            let s = tx.query_row(&format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = ?1"), [&id], row_to_sub)?;
            tx.commit()?;
            Ok(Some(s))
        })
    }

    /// Counts of a tenant's (`None`: all) subscriptions by status and deliveries by status.
    fn counts(
        &self,
        tenant: Option<String>,
    ) -> BoxFuture<'static, Result<(StatusCounts, StatusCounts), LogError>> {
        self.run(move |c| {
            let count = |sql: &str| -> rusqlite::Result<StatusCounts> {
                let mut stmt = c.prepare(sql)?;
                let rows = stmt.query_map([&tenant], |r| {
                    let n: i64 = r.get(1)?;
                    Ok((r.get::<_, String>(0)?, u64::try_from(n).unwrap_or(0)))
                })?;
                rows.collect()
            };
            let subs = count("SELECT status, COUNT(*) FROM subscriptions WHERE (?1 IS NULL OR tenant = ?1) GROUP BY status")?;
            let dels = count("SELECT status, COUNT(*) FROM deliveries WHERE (?1 IS NULL OR tenant = ?1) GROUP BY status")?;
            Ok((subs, dels))
        })
    }
}

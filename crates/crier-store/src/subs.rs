//! Webhook subscriptions and their delivery records in SQLite (`subscriptions` and
//! `deliveries` tables of `crier.db`): the [`WebhookStore`] of a single-node hub.
//!
//! The types and the contract are in [`crier_core::webhook`]. A hub's writes go through the
//! log's writer thread (see `sqlite/side.rs`), so they never compete with group commit. A tenant's cap is checked in
//! the same write transaction as the insert, so simultaneous creates never pass it together.

use crier_core::event::now_us;
use crier_core::log::BoxFuture;
use crier_core::webhook::{
    Delivery, DeliveryStatus, StatusCounts, WebhookError, WebhookPatch, WebhookStatus,
    WebhookStore, WebhookSub,
};
use crier_core::LogError;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::rows::{self, i, DELIVERY_COLUMNS, SUB_COLUMNS};
use crate::sqlite::{SideStore, SideTables};

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

/// The `subscriptions` and `deliveries` tables.
pub struct Subscriptions;

impl SideTables for Subscriptions {
    const SCHEMA: &'static str = SUBS_SCHEMA;
}

/// Webhook subscriptions stored in a SQLite file: opened with [`SideStore::open`], or
/// [`SideStore::with_log`] in a hub.
pub type SqliteSubs = SideStore<Subscriptions>;

impl SqliteSubs {
    fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, LogError>> {
        self.side.read(f)
    }

    fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, LogError>> {
        self.side.write(f)
    }
}

/// Whether `tenant` may store one more subscription under `max`: counted in the caller's
/// write transaction, so the count and the insert see the same table.
fn below_cap(tx: &Transaction<'_>, tenant: &str, max: Option<usize>) -> rusqlite::Result<bool> {
    let Some(max) = max else { return Ok(true) };
    let n: i64 = tx.query_row(
        "SELECT COUNT(*) FROM subscriptions WHERE tenant = ?1",
        [tenant],
        |r| r.get(0),
    )?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX) < max)
}

impl WebhookStore for SqliteSubs {
    fn create<'a>(
        &'a self,
        s: &'a WebhookSub,
        max: Option<usize>,
    ) -> BoxFuture<'a, Result<(), WebhookError>> {
        let s = s.clone();
        let stored = self.write(move |tx| {
            if !below_cap(tx, &s.tenant, max)? {
                return Ok(false);
            }
            tx.execute(
                &format!("INSERT INTO subscriptions ({SUB_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
                params![s.id, s.tenant, s.name, s.filter, s.url, s.secret, i(s.cursor), s.status.as_str(), s.expires_us, s.created_us, s.note],
            )?;
            Ok(true)
        });
        Box::pin(async move {
            match (stored.await?, max) {
                (false, Some(max)) => Err(WebhookError::TooMany { max }),
                _ => Ok(()),
            }
        })
    }

    fn get<'a>(
        &'a self,
        tenant: Option<&'a str>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>> {
        let (tenant, id) = (tenant.map(str::to_owned), id.to_owned());
        self.read(move |c| {
            c.query_row(
                &format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = ?1"),
                [&id],
                |r| rows::sub(r),
            )
            .optional()
            .map(|s| s.filter(|s| tenant.as_ref().is_none_or(|t| *t == s.tenant)))
        })
    }

    fn list<'a>(
        &'a self,
        tenant: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<WebhookSub>, LogError>> {
        let tenant = tenant.map(str::to_owned);
        self.read(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {SUB_COLUMNS} FROM subscriptions WHERE (?1 IS NULL OR tenant = ?1) ORDER BY created_us, id"
            ))?;
            let rows = stmt.query_map([tenant], |r| rows::sub(r))?;
            rows.collect()
        })
    }

    fn update<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        p: &'a WebhookPatch,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>> {
        let (tenant, id, p) = (tenant.to_owned(), id.to_owned(), p.clone());
        self.write(move |tx| {
            let Some(mut s) = tx
                .query_row(&format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = ?1 AND tenant = ?2"), [&id, &tenant], |r| rows::sub(r))
                .optional()?
            else {
                return Ok(None);
            };
            p.apply(&mut s);
            tx.execute(
                "UPDATE subscriptions SET name = ?2, filter = ?3, url = ?4, secret = ?5, status = ?6, expires_us = ?7, note = ?8 WHERE id = ?1",
                params![s.id, s.name, s.filter, s.url, s.secret, s.status.as_str(), s.expires_us, s.note],
            )?;
            Ok(Some(s))
        })
    }

    fn delete<'a>(&'a self, tenant: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, LogError>> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.write(move |tx| {
            let n = tx.execute(
                "DELETE FROM subscriptions WHERE id = ?1 AND tenant = ?2",
                [&id, &tenant],
            )?;
            tx.execute(
                "DELETE FROM deliveries WHERE sub_id = ?1 AND tenant = ?2",
                [&id, &tenant],
            )?;
            Ok(n > 0)
        })
    }

    fn advance<'a>(&'a self, id: &'a str, seq: u64) -> BoxFuture<'a, Result<(), LogError>> {
        let id = id.to_owned();
        self.write(move |tx| {
            tx.execute(
                "UPDATE subscriptions SET cursor = MAX(cursor, ?2) WHERE id = ?1",
                params![id, i(seq)],
            )?;
            Ok(())
        })
    }

    fn set_status<'a>(
        &'a self,
        id: &'a str,
        status: WebhookStatus,
        note: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), LogError>> {
        let (id, note) = (id.to_owned(), note.map(str::to_owned));
        self.write(move |tx| {
            tx.execute(
                "UPDATE subscriptions SET status = ?2, note = ?3 WHERE id = ?1",
                params![id, status.as_str(), note],
            )?;
            Ok(())
        })
    }

    fn set_note<'a>(&'a self, id: &'a str, note: &'a str) -> BoxFuture<'a, Result<(), LogError>> {
        let (id, note) = (id.to_owned(), note.to_owned());
        self.write(move |tx| {
            tx.execute(
                "UPDATE subscriptions SET note = ?2 WHERE id = ?1",
                params![id, note],
            )?;
            Ok(())
        })
    }

    fn record<'a>(
        &'a self,
        tenant: &'a str,
        d: &'a Delivery,
    ) -> BoxFuture<'a, Result<(), LogError>> {
        let (tenant, d) = (tenant.to_owned(), d.clone());
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO deliveries (sub_id, seq, tenant, event_id, status, attempts, last_status_code, last_error, next_attempt_us, updated_us)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (sub_id, seq) DO UPDATE SET status = excluded.status, attempts = excluded.attempts,
                   last_status_code = excluded.last_status_code, last_error = excluded.last_error,
                   next_attempt_us = excluded.next_attempt_us, updated_us = excluded.updated_us",
                params![d.sub_id, i(d.seq), tenant, d.event_id, d.status.as_str(), i64::from(d.attempts), d.last_status_code.map(i64::from), d.last_error, d.next_attempt_us, d.updated_us],
            )?;
            Ok(())
        })
    }

    fn delivery<'a>(
        &'a self,
        sub_id: &'a str,
        seq: u64,
    ) -> BoxFuture<'a, Result<Option<Delivery>, LogError>> {
        let sub_id = sub_id.to_owned();
        self.read(move |c| {
            c.query_row(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE sub_id = ?1 AND seq = ?2"
                ),
                params![sub_id, i(seq)],
                |r| rows::delivery(r),
            )
            .optional()
        })
    }

    fn deliveries<'a>(
        &'a self,
        sub_id: &'a str,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, LogError>> {
        let sub_id = sub_id.to_owned();
        self.read(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE sub_id = ?1 AND (?2 IS NULL OR status = ?2) ORDER BY seq DESC LIMIT ?3"
            ))?;
            let rows = stmt.query_map(params![sub_id, status.map(DeliveryStatus::as_str), i64::try_from(limit).unwrap_or(i64::MAX)], |r| rows::delivery(r))?;
            rows.collect()
        })
    }

    fn redeliver<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>> {
        let (tenant, id) = (tenant.to_owned(), id.to_owned());
        self.write(move |tx| {
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
            let s = tx.query_row(&format!("SELECT {SUB_COLUMNS} FROM subscriptions WHERE id = ?1"), [&id], |r| rows::sub(r))?;
            Ok(Some(s))
        })
    }

    fn counts<'a>(
        &'a self,
        tenant: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(StatusCounts, StatusCounts), LogError>> {
        let tenant = tenant.map(str::to_owned);
        self.read(move |c| {
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

//! Webhook subscriptions and their delivery records in PostgreSQL, for hubs that share one
//! log: the same contract ([`WebhookStore`]) as the SQLite tables, in the log's schema.
//!
//! A tenant's cap is counted under a per-tenant transaction-scoped advisory lock, so creates
//! on every node that shares the database take turns and never pass it together.

use std::sync::Arc;

use crier_core::event::now_us;
use crier_core::log::BoxFuture;
use crier_core::LogError;
use deadpool_postgres::Pool;

use super::side::{migrate, side_pool};
use crier_core::webhook::{
    Delivery, DeliveryStatus, StatusCounts, WebhookError, WebhookPatch, WebhookStatus,
    WebhookStore, WebhookSub,
};

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> LogError {
    LogError::backend(e)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Table names qualified by the schema.
struct Names {
    subs: String,
    deliveries: String,
}

/// Subscriptions stored in PostgreSQL.
#[derive(Clone)]
pub struct PgSubs {
    pool: Pool,
    names: Arc<Names>,
}

const SUB_COLUMNS: &str =
    "id, tenant, name, filter, url, secret, cursor, status, expires_us, created_us, note";
const DELIVERY_COLUMNS: &str =
    "sub_id, seq, event_id, status, attempts, last_status_code, last_error, next_attempt_us, updated_us";

/// A status column's value, or an error naming the unknown text.
fn status<T>(
    r: &tokio_postgres::Row,
    i: usize,
    parse: fn(&str) -> Option<T>,
) -> Result<T, LogError> {
    let s: String = r.try_get(i).map_err(backend)?;
    parse(&s).ok_or_else(|| backend(std::io::Error::other(format!("unknown status {s:?}"))))
}

fn row_to_sub(r: &tokio_postgres::Row) -> Result<WebhookSub, LogError> {
    Ok(WebhookSub {
        id: r.get(0),
        tenant: r.get(1),
        name: r.get(2),
        filter: r.get(3),
        url: r.get(4),
        secret: r.get(5),
        cursor: u(r.get(6)),
        status: status(r, 7, WebhookStatus::parse)?,
        expires_us: r.get(8),
        created_us: r.get(9),
        note: r.get(10),
    })
}

fn row_to_delivery(r: &tokio_postgres::Row) -> Result<Delivery, LogError> {
    let attempts: i32 = r.get(4);
    let code: Option<i32> = r.get(5);
    Ok(Delivery {
        sub_id: r.get(0),
        seq: u(r.get(1)),
        event_id: r.get(2),
        status: status(r, 3, DeliveryStatus::parse)?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        last_status_code: code.and_then(|c| u16::try_from(c).ok()),
        last_error: r.get(6),
        next_attempt_us: r.get(7),
        updated_us: r.get(8),
    })
}

impl PgSubs {
    /// Connects and creates the tables in `schema` (default `public`) if needed.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<PgSubs, LogError> {
        let (pool, schema) = side_pool(url, schema, 8)?;
        let names = Names {
            subs: format!("\"{schema}\".crier_subscriptions"),
            deliveries: format!("\"{schema}\".crier_deliveries"),
        };
        migrate(
            &pool,
            7401,
            &format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
CREATE TABLE IF NOT EXISTS {subs} (
    id TEXT PRIMARY KEY, tenant TEXT NOT NULL, name TEXT NOT NULL, filter TEXT NOT NULL, url TEXT NOT NULL,
    secret TEXT NOT NULL, cursor BIGINT NOT NULL, status TEXT NOT NULL, expires_us BIGINT, created_us BIGINT NOT NULL, note TEXT
);
CREATE INDEX IF NOT EXISTS crier_subscriptions_tenant ON {subs} (tenant, created_us);
CREATE TABLE IF NOT EXISTS {deliveries} (
    sub_id TEXT NOT NULL, seq BIGINT NOT NULL, tenant TEXT NOT NULL, event_id TEXT NOT NULL, status TEXT NOT NULL,
    attempts INTEGER NOT NULL, last_status_code INTEGER, last_error TEXT, next_attempt_us BIGINT, updated_us BIGINT NOT NULL,
    PRIMARY KEY (sub_id, seq)
);
CREATE INDEX IF NOT EXISTS crier_deliveries_tenant_status ON {deliveries} (tenant, status);",
            subs = names.subs,
            deliveries = names.deliveries
            ),
        )
        .await?;
        Ok(PgSubs {
            pool,
            names: Arc::new(names),
        })
    }

    /// A cheap write round-trip for readiness (§12.8): in a transaction like the log's own,
    /// refuses a read-only one (a standby, `default_transaction_read_only`), then takes a
    /// transaction id, which needs a writable server, and commits. Touches no table.
    pub async fn probe_write(&self) -> Result<(), LogError> {
        let mut client = self.pool.get().await.map_err(backend)?;
        let tx = client.transaction().await.map_err(backend)?;
        let read_only: String = tx
            .query_one("SELECT current_setting('transaction_read_only')", &[])
            .await
            .map_err(backend)?
            .try_get(0)
            .map_err(backend)?;
        if read_only == "on" {
            return Err(backend(std::io::Error::other(
                "the database is read-only (transaction_read_only = on)",
            )));
        }
        tx.query_one("SELECT txid_current()", &[])
            .await
            .map_err(backend)?;
        tx.commit().await.map_err(backend)
    }
}

impl WebhookStore for PgSubs {
    fn create<'a>(
        &'a self,
        s: &'a WebhookSub,
        max: Option<usize>,
    ) -> BoxFuture<'a, Result<(), WebhookError>> {
        Box::pin(async move {
            let mut c = self.pool.get().await.map_err(backend)?;
            let tx = c.transaction().await.map_err(backend)?;
            if let Some(max) = max {
                // One creator per tenant at a time, on every node: the count below and the
                // insert then see the same rows.
                tx.execute(
                    "SELECT pg_advisory_xact_lock(7401, hashtext($1))",
                    &[&s.tenant],
                )
                .await
                .map_err(backend)?;
                let n: i64 = tx
                    .query_one(
                        &format!("SELECT COUNT(*) FROM {} WHERE tenant = $1", self.names.subs),
                        &[&s.tenant],
                    )
                    .await
                    .map_err(backend)?
                    .get(0);
                if usize::try_from(n).unwrap_or(usize::MAX) >= max {
                    return Err(WebhookError::TooMany { max });
                }
            }
            tx.execute(
                &format!("INSERT INTO {} ({SUB_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)", self.names.subs),
                &[&s.id, &s.tenant, &s.name, &s.filter, &s.url, &s.secret, &i(s.cursor), &s.status.as_str(), &s.expires_us, &s.created_us, &s.note],
            )
            .await
            .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            Ok(())
        })
    }

    fn get<'a>(
        &'a self,
        tenant: Option<&'a str>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(backend)?;
            let row = c
                .query_opt(&format!("SELECT {SUB_COLUMNS} FROM {} WHERE id = $1 AND ($2::TEXT IS NULL OR tenant = $2)", self.names.subs), &[&id, &tenant])
                .await
                .map_err(backend)?;
            row.as_ref().map(row_to_sub).transpose()
        })
    }

    fn list<'a>(
        &'a self,
        tenant: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<WebhookSub>, LogError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(backend)?;
            let rows = c
                .query(&format!("SELECT {SUB_COLUMNS} FROM {} WHERE ($1::TEXT IS NULL OR tenant = $1) ORDER BY created_us, id", self.names.subs), &[&tenant])
                .await
                .map_err(backend)?;
            rows.iter().map(row_to_sub).collect()
        })
    }

    fn update<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        p: &'a WebhookPatch,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>> {
        Box::pin(async move {
            let mut c = self.pool.get().await.map_err(backend)?;
            let tx = c.transaction().await.map_err(backend)?;
            let row = tx
                .query_opt(
                    &format!(
                        "SELECT {SUB_COLUMNS} FROM {} WHERE id = $1 AND tenant = $2 FOR UPDATE",
                        self.names.subs
                    ),
                    &[&id, &tenant],
                )
                .await
                .map_err(backend)?;
            let Some(mut s) = row.as_ref().map(row_to_sub).transpose()? else {
                return Ok(None);
            };
            p.apply(&mut s);
            tx.execute(
                &format!("UPDATE {} SET name = $2, filter = $3, url = $4, secret = $5, status = $6, expires_us = $7, note = $8 WHERE id = $1", self.names.subs),
                &[&s.id, &s.name, &s.filter, &s.url, &s.secret, &s.status.as_str(), &s.expires_us, &s.note],
            )
            .await
            .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            Ok(Some(s))
        })
    }

    fn delete<'a>(&'a self, tenant: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, LogError>> {
        Box::pin(async move {
            let mut c = self.pool.get().await.map_err(backend)?;
            let tx = c.transaction().await.map_err(backend)?;
            let n = tx
                .execute(
                    &format!(
                        "DELETE FROM {} WHERE id = $1 AND tenant = $2",
                        self.names.subs
                    ),
                    &[&id, &tenant],
                )
                .await
                .map_err(backend)?;
            tx.execute(
                &format!(
                    "DELETE FROM {} WHERE sub_id = $1 AND tenant = $2",
                    self.names.deliveries
                ),
                &[&id, &tenant],
            )
            .await
            .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            Ok(n > 0)
        })
    }

    fn advance<'a>(&'a self, id: &'a str, seq: u64) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(backend)?;
            c.execute(
                &format!(
                    "UPDATE {} SET cursor = GREATEST(cursor, $2) WHERE id = $1",
                    self.names.subs
                ),
                &[&id, &i(seq)],
            )
            .await
            .map_err(backend)?;
            Ok(())
        })
    }

    fn set_status<'a>(
        &'a self,
        id: &'a str,
        status: WebhookStatus,
        note: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(backend)?;
            c.execute(
                &format!(
                    "UPDATE {} SET status = $2, note = $3 WHERE id = $1",
                    self.names.subs
                ),
                &[&id, &status.as_str(), &note],
            )
            .await
            .map_err(backend)?;
            Ok(())
        })
    }

    fn set_note<'a>(&'a self, id: &'a str, note: &'a str) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(backend)?;
            c.execute(
                &format!("UPDATE {} SET note = $2 WHERE id = $1", self.names.subs),
                &[&id, &note],
            )
            .await
            .map_err(backend)?;
            Ok(())
        })
    }

    fn record<'a>(
        &'a self,
        tenant: &'a str,
        d: &'a Delivery,
    ) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(backend)?;
            let attempts = i32::try_from(d.attempts).unwrap_or(i32::MAX);
            let code = d.last_status_code.map(i32::from);
            c.execute(
                &format!(
                    "INSERT INTO {} (sub_id, seq, tenant, event_id, status, attempts, last_status_code, last_error, next_attempt_us, updated_us)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                     ON CONFLICT (sub_id, seq) DO UPDATE SET status = EXCLUDED.status, attempts = EXCLUDED.attempts,
                       last_status_code = EXCLUDED.last_status_code, last_error = EXCLUDED.last_error,
                       next_attempt_us = EXCLUDED.next_attempt_us, updated_us = EXCLUDED.updated_us",
                    self.names.deliveries
                ),
                &[&d.sub_id, &i(d.seq), &tenant, &d.event_id, &d.status.as_str(), &attempts, &code, &d.last_error, &d.next_attempt_us, &d.updated_us],
            )
            .await
            .map_err(backend)?;
            Ok(())
        })
    }

    fn delivery<'a>(
        &'a self,
        sub_id: &'a str,
        seq: u64,
    ) -> BoxFuture<'a, Result<Option<Delivery>, LogError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(backend)?;
            let row = c
                .query_opt(
                    &format!(
                        "SELECT {DELIVERY_COLUMNS} FROM {} WHERE sub_id = $1 AND seq = $2",
                        self.names.deliveries
                    ),
                    &[&sub_id, &i(seq)],
                )
                .await
                .map_err(backend)?;
            row.as_ref().map(row_to_delivery).transpose()
        })
    }

    fn deliveries<'a>(
        &'a self,
        sub_id: &'a str,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, LogError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(backend)?;
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let status = status.map(DeliveryStatus::as_str);
            let rows = c
                .query(
                    &format!(
                        "SELECT {DELIVERY_COLUMNS} FROM {} WHERE sub_id = $1 AND ($2::TEXT IS NULL OR status = $2) ORDER BY seq DESC LIMIT $3",
                        self.names.deliveries
                    ),
                    &[&sub_id, &status, &limit],
                )
                .await
                .map_err(backend)?;
            rows.iter().map(row_to_delivery).collect()
        })
    }

    fn redeliver<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>> {
        Box::pin(async move {
            let mut c = self.pool.get().await.map_err(backend)?;
            let tx = c.transaction().await.map_err(backend)?;
            let n = tx
                .execute(
                    &format!(
                        "UPDATE {} SET cursor = $3, status = CASE WHEN status = 'disabled' THEN status ELSE 'active' END, note = NULL WHERE id = $1 AND tenant = $2",
                        self.names.subs
                    ),
                    &[&id, &tenant, &i(after)],
                )
                .await
                .map_err(backend)?;
            if n == 0 {
                return Ok(None);
            }
            tx.execute(
                &format!(
                    "UPDATE {} SET status = 'pending', attempts = 0, next_attempt_us = NULL, updated_us = $3 WHERE sub_id = $1 AND seq > $2 AND status = 'dead'",
                    self.names.deliveries
                ),
                &[&id, &i(after), &now_us()],
            )
            .await
            .map_err(backend)?;
            let row = tx
                .query_one(
                    &format!(
                        "SELECT {SUB_COLUMNS} FROM {} WHERE id = $1",
                        self.names.subs
                    ),
                    &[&id],
                )
                .await
                .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            row_to_sub(&row).map(Some)
        })
    }

    fn counts<'a>(
        &'a self,
        tenant: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(StatusCounts, StatusCounts), LogError>> {
        Box::pin(async move {
            let c = self.pool.get().await.map_err(backend)?;
            let mut out = Vec::new();
            for table in [&self.names.subs, &self.names.deliveries] {
                let rows = c
                    .query(&format!("SELECT status, COUNT(*) FROM {table} WHERE ($1::TEXT IS NULL OR tenant = $1) GROUP BY status"), &[&tenant])
                    .await
                    .map_err(backend)?;
                out.push(
                    rows.iter()
                        .map(|r| (r.get::<_, String>(0), u(r.get::<_, i64>(1))))
                        .collect::<StatusCounts>(),
                );
            }
            let dels = out.pop().unwrap_or_default();
            let subs = out.pop().unwrap_or_default();
            Ok((subs, dels))
        })
    }
}

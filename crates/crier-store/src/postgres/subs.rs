//! Webhook subscriptions and their delivery records in PostgreSQL, for hubs that share one
//! log: the same contract ([`WebhookStore`]) as the SQLite tables, in the log's schema.
//!
//! A tenant's cap is counted under a per-tenant transaction-scoped advisory lock, so creates
//! on every node that shares the database take turns and never pass it together.

use crier_core::event::now_us;
use crier_core::log::BoxFuture;
use crier_core::webhook::{
    Delivery, DeliveryStatus, StatusCounts, WebhookError, WebhookPatch, WebhookStatus,
    WebhookStore, WebhookSub,
};
use crier_core::LogError;

use super::backend;
use super::side::{Params, Side, Tables};
use crate::rows::{self, i, u, Columns};

/// The subscription and delivery tables; creates serialise on advisory lock 7401 (and the
/// tenant).
const TABLES: Tables = Tables {
    max: 8,
    lock: 7401,
    tables: &[
        ("subs", "crier_subscriptions"),
        ("deliveries", "crier_deliveries"),
    ],
    ddl: "CREATE TABLE IF NOT EXISTS {subs} (
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
};

/// Subscriptions stored in PostgreSQL.
#[derive(Clone)]
pub struct PgSubs {
    side: Side,
}

impl PgSubs {
    /// Connects and creates the tables in `schema` (default `public`) if needed.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<PgSubs, LogError> {
        let side = Side::open(url, schema, &TABLES).await?;
        Ok(PgSubs { side })
    }

    /// A cheap write round-trip for readiness (§12.8): in a transaction like the log's own,
    /// refuses a read-only one (a standby, `default_transaction_read_only`), then takes a
    /// transaction id, which needs a writable server, and commits. Touches no table.
    pub async fn probe_write(&self) -> Result<(), LogError> {
        let mut client = self.side.client().await?;
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

    /// Runs `sql` in `tx` with the columns of `s` as `$1` to `$11`, in `{sub_columns}` order.
    async fn write_sub(
        &self,
        tx: &deadpool_postgres::Transaction<'_>,
        sql: &str,
        s: &WebhookSub,
    ) -> Result<u64, LogError> {
        let (cursor, status) = (i(s.cursor), s.status.as_str());
        let params: Params = &[
            &s.id,
            &s.tenant,
            &s.name,
            &s.filter,
            &s.url,
            &s.secret,
            &cursor,
            &status,
            &s.expires_us,
            &s.created_us,
            &s.note,
        ];
        self.side.stmt(sql, params).exec(tx).await
    }

    /// Runs statement `sql` on a connection of its own, for what it does alone.
    async fn set(&self, sql: &str, params: Params<'_>) -> Result<(), LogError> {
        self.side.run(sql, params).await.map(drop)
    }
}

impl WebhookStore for PgSubs {
    fn create<'a>(
        &'a self,
        s: &'a WebhookSub,
        max: Option<usize>,
    ) -> BoxFuture<'a, Result<(), WebhookError>> {
        Box::pin(async move {
            let mut c = self.side.client().await?;
            let tx = c.transaction().await.map_err(backend)?;
            if let Some(max) = max {
                if self.side.count_locked(&tx, "{subs}", &s.tenant).await? >= max {
                    return Err(WebhookError::TooMany { max });
                }
            }
            let sql = "INSERT INTO {subs} ({sub_columns}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
            self.write_sub(&tx, sql, s).await?;
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
            let sql = "SELECT {sub_columns} FROM {subs} WHERE id = $1 AND ($2::TEXT IS NULL OR tenant = $2)";
            Ok(self
                .side
                .select(sql, &[&id, &tenant], rows::sub)
                .await?
                .pop())
        })
    }

    fn list<'a>(
        &'a self,
        tenant: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<WebhookSub>, LogError>> {
        Box::pin(async move {
            let sql = "SELECT {sub_columns} FROM {subs} WHERE ($1::TEXT IS NULL OR tenant = $1) ORDER BY created_us, id";
            self.side.select(sql, &[&tenant], rows::sub).await
        })
    }

    fn update<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        p: &'a WebhookPatch,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>> {
        Box::pin(async move {
            let mut c = self.side.client().await?;
            let tx = c.transaction().await.map_err(backend)?;
            let sql = "SELECT {sub_columns} FROM {subs} WHERE id = $1 AND tenant = $2 FOR UPDATE";
            let row = self.side.stmt(sql, &[&id, &tenant]).rows(&tx).await?.pop();
            let Some(mut s) = row.as_ref().map(rows::sub).transpose()? else {
                return Ok(None);
            };
            p.apply(&mut s);
            // The row is locked since the SELECT, so what it writes back of the columns a
            // patch leaves alone (the cursor among them) is what they hold.
            let sql = "UPDATE {subs} SET ({sub_columns}) = ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) WHERE id = $1";
            self.write_sub(&tx, sql, &s).await?;
            tx.commit().await.map_err(backend)?;
            Ok(Some(s))
        })
    }

    fn delete<'a>(&'a self, tenant: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, LogError>> {
        Box::pin(async move {
            let mut c = self.side.client().await?;
            let tx = c.transaction().await.map_err(backend)?;
            let sql = "DELETE FROM {subs} WHERE id = $1 AND tenant = $2";
            let n = self.side.stmt(sql, &[&id, &tenant]).exec(&tx).await?;
            let sql = "DELETE FROM {deliveries} WHERE sub_id = $1 AND tenant = $2";
            self.side.stmt(sql, &[&id, &tenant]).exec(&tx).await?;
            tx.commit().await.map_err(backend)?;
            Ok(n > 0)
        })
    }

    fn advance<'a>(&'a self, id: &'a str, seq: u64) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(async move {
            let sql = "UPDATE {subs} SET cursor = GREATEST(cursor, $2) WHERE id = $1";
            self.set(sql, &[&id, &i(seq)]).await
        })
    }

    fn set_status<'a>(
        &'a self,
        id: &'a str,
        status: WebhookStatus,
        note: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(async move {
            let sql = "UPDATE {subs} SET status = $2, note = $3 WHERE id = $1";
            self.set(sql, &[&id, &status.as_str(), &note]).await
        })
    }

    fn set_note<'a>(&'a self, id: &'a str, note: &'a str) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(async move {
            let sql = "UPDATE {subs} SET note = $2 WHERE id = $1";
            self.set(sql, &[&id, &note]).await
        })
    }

    fn record<'a>(
        &'a self,
        tenant: &'a str,
        d: &'a Delivery,
    ) -> BoxFuture<'a, Result<(), LogError>> {
        Box::pin(async move {
            let attempts = i32::try_from(d.attempts).unwrap_or(i32::MAX);
            let code = d.last_status_code.map(i32::from);
            let sql = "INSERT INTO {deliveries} (sub_id, seq, tenant, event_id, status, attempts, last_status_code, last_error, next_attempt_us, updated_us)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (sub_id, seq) DO UPDATE SET status = EXCLUDED.status, attempts = EXCLUDED.attempts,
                   last_status_code = EXCLUDED.last_status_code, last_error = EXCLUDED.last_error,
                   next_attempt_us = EXCLUDED.next_attempt_us, updated_us = EXCLUDED.updated_us";
            let params: Params = &[
                &d.sub_id,
                &i(d.seq),
                &tenant,
                &d.event_id,
                &d.status.as_str(),
                &attempts,
                &code,
                &d.last_error,
                &d.next_attempt_us,
                &d.updated_us,
            ];
            self.set(sql, params).await
        })
    }

    fn delivery<'a>(
        &'a self,
        sub_id: &'a str,
        seq: u64,
    ) -> BoxFuture<'a, Result<Option<Delivery>, LogError>> {
        Box::pin(async move {
            let sql = "SELECT {delivery_columns} FROM {deliveries} WHERE sub_id = $1 AND seq = $2";
            let params: Params = &[&sub_id, &i(seq)];
            Ok(self.side.select(sql, params, rows::delivery).await?.pop())
        })
    }

    fn deliveries<'a>(
        &'a self,
        sub_id: &'a str,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, LogError>> {
        Box::pin(async move {
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            let status = status.map(DeliveryStatus::as_str);
            let sql = "SELECT {delivery_columns} FROM {deliveries} WHERE sub_id = $1 AND ($2::TEXT IS NULL OR status = $2) ORDER BY seq DESC LIMIT $3";
            let params: Params = &[&sub_id, &status, &limit];
            self.side.select(sql, params, rows::delivery).await
        })
    }

    fn redeliver<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>> {
        Box::pin(async move {
            let mut c = self.side.client().await?;
            let tx = c.transaction().await.map_err(backend)?;
            let sql = "UPDATE {subs} SET cursor = $3, status = CASE WHEN status = 'disabled' THEN status ELSE 'active' END, note = NULL WHERE id = $1 AND tenant = $2";
            if self
                .side
                .stmt(sql, &[&id, &tenant, &i(after)])
                .exec(&tx)
                .await?
                == 0
            {
                return Ok(None);
            }
            let sql = "UPDATE {deliveries} SET status = 'pending', attempts = 0, next_attempt_us = NULL, updated_us = $3 WHERE sub_id = $1 AND seq > $2 AND status = 'dead'";
            self.side
                .stmt(sql, &[&id, &i(after), &now_us()])
                .exec(&tx)
                .await?;
            let sql = "SELECT {sub_columns} FROM {subs} WHERE id = $1";
            let row = self.side.stmt(sql, &[&id]).rows(&tx).await?.pop();
            tx.commit().await.map_err(backend)?;
            row.as_ref().map(rows::sub).transpose()
        })
    }

    fn counts<'a>(
        &'a self,
        tenant: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(StatusCounts, StatusCounts), LogError>> {
        Box::pin(async move {
            let c = self.side.client().await?;
            let mut out = Vec::new();
            for table in ["{subs}", "{deliveries}"] {
                let sql = format!("SELECT status, COUNT(*) FROM {table} WHERE ($1::TEXT IS NULL OR tenant = $1) GROUP BY status");
                let counts = self.side.stmt(&sql, &[&tenant]).rows(&c).await?;
                let counts = counts.iter().map(|r| Ok((r.text(0)?, u(r.int(1)?))));
                out.push(counts.collect::<Result<StatusCounts, LogError>>()?);
            }
            let dels = out.pop().unwrap_or_default();
            let subs = out.pop().unwrap_or_default();
            Ok((subs, dels))
        })
    }
}

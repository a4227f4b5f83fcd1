//! Saved named filters in PostgreSQL (the same contract as [`crate::filters::SqliteFilters`]),
//! for hubs that share one log: a filter saved on any node is usable on every node at once.

use std::sync::Arc;

use crier_core::log::BoxFuture;
use crier_core::LogError;
use deadpool_postgres::Pool;

use crate::filters::{Created, FilterStore, SavedFilter};

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> LogError {
    LogError::backend(e)
}

/// Saved filters stored in PostgreSQL.
#[derive(Clone)]
pub struct PgFilters {
    pool: Pool,
    table: Arc<String>,
}

const COLUMNS: &str = "tenant, name, filter, description, created_by, created_us, updated_us";

fn row_to_filter(r: &tokio_postgres::Row) -> SavedFilter {
    SavedFilter {
        tenant: r.get(0),
        name: r.get(1),
        filter: r.get(2),
        description: r.get(3),
        created_by: r.get(4),
        created_us: r.get(5),
        updated_us: r.get(6),
    }
}

impl PgFilters {
    /// Connects and creates the table in `schema` (default `public`) if needed.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<PgFilters, LogError> {
        let (pool, schema) = super::side::side_pool(url, schema, 4)?;
        let table = format!("\"{schema}\".crier_saved_filters");
        super::side::migrate(
            &pool,
            7403,
            &format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
CREATE TABLE IF NOT EXISTS {table} (
    tenant TEXT NOT NULL, name TEXT NOT NULL, filter TEXT NOT NULL, description TEXT,
    created_by TEXT NOT NULL, created_us BIGINT NOT NULL, updated_us BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);"
            ),
        )
        .await?;
        Ok(PgFilters {
            pool,
            table: Arc::new(table),
        })
    }
}

impl FilterStore for PgFilters {
    fn create(&self, f: SavedFilter, max: usize) -> BoxFuture<'static, Result<Created, LogError>> {
        let this = self.clone();
        Box::pin(async move {
            let mut c = this.pool.get().await.map_err(backend)?;
            let tx = c.transaction().await.map_err(backend)?;
            // One creator per tenant at a time, on every node: the count below and the
            // insert then see the same rows.
            tx.execute(
                "SELECT pg_advisory_xact_lock(7403, hashtext($1))",
                &[&f.tenant],
            )
            .await
            .map_err(backend)?;
            let n: i64 = tx
                .query_one(
                    &format!("SELECT COUNT(*) FROM {} WHERE tenant = $1", this.table),
                    &[&f.tenant],
                )
                .await
                .map_err(backend)?
                .get(0);
            let exists = tx
                .query_opt(
                    &format!(
                        "SELECT 1 FROM {} WHERE tenant = $1 AND name = $2",
                        this.table
                    ),
                    &[&f.tenant, &f.name],
                )
                .await
                .map_err(backend)?;
            if exists.is_some() {
                return Ok(Created::Exists);
            }
            if usize::try_from(n).unwrap_or(usize::MAX) >= max {
                return Ok(Created::Full);
            }
            tx.execute(
                &format!(
                    "INSERT INTO {} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    this.table
                ),
                &[
                    &f.tenant,
                    &f.name,
                    &f.filter,
                    &f.description,
                    &f.created_by,
                    &f.created_us,
                    &f.updated_us,
                ],
            )
            .await
            .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            Ok(Created::Stored(f))
        })
    }

    fn get(
        &self,
        tenant: String,
        name: String,
    ) -> BoxFuture<'static, Result<Option<SavedFilter>, LogError>> {
        let this = self.clone();
        Box::pin(async move {
            let c = this.pool.get().await.map_err(backend)?;
            let row = c
                .query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM {} WHERE tenant = $1 AND name = $2",
                        this.table
                    ),
                    &[&tenant, &name],
                )
                .await
                .map_err(backend)?;
            Ok(row.as_ref().map(row_to_filter))
        })
    }

    fn list(&self, tenant: String) -> BoxFuture<'static, Result<Vec<SavedFilter>, LogError>> {
        let this = self.clone();
        Box::pin(async move {
            let c = this.pool.get().await.map_err(backend)?;
            let rows = c
                .query(
                    &format!(
                        "SELECT {COLUMNS} FROM {} WHERE tenant = $1 ORDER BY name COLLATE \"C\"",
                        this.table
                    ),
                    &[&tenant],
                )
                .await
                .map_err(backend)?;
            Ok(rows.iter().map(row_to_filter).collect())
        })
    }

    fn update(
        &self,
        tenant: String,
        name: String,
        filter: String,
        description: Option<String>,
        updated_us: i64,
    ) -> BoxFuture<'static, Result<Option<SavedFilter>, LogError>> {
        let this = self.clone();
        Box::pin(async move {
            let c = this.pool.get().await.map_err(backend)?;
            let row = c
                .query_opt(
                    &format!(
                        "UPDATE {} SET filter = $3, description = $4, updated_us = $5
                         WHERE tenant = $1 AND name = $2 RETURNING {COLUMNS}",
                        this.table
                    ),
                    &[&tenant, &name, &filter, &description, &updated_us],
                )
                .await
                .map_err(backend)?;
            Ok(row.as_ref().map(row_to_filter))
        })
    }

    fn delete(&self, tenant: String, name: String) -> BoxFuture<'static, Result<bool, LogError>> {
        let this = self.clone();
        Box::pin(async move {
            let c = this.pool.get().await.map_err(backend)?;
            let n = c
                .execute(
                    &format!("DELETE FROM {} WHERE tenant = $1 AND name = $2", this.table),
                    &[&tenant, &name],
                )
                .await
                .map_err(backend)?;
            Ok(n > 0)
        })
    }
}

//! Saved named filters in PostgreSQL (the same contract as [`crate::filters::SqliteFilters`]),
//! for hubs that share one log: a filter saved on any node is usable on every node at once.

use crier_core::log::BoxFuture;
use crier_core::LogError;

use super::backend;
use super::side::{Params, Side, Tables};
use crate::filters::{Created, FilterStore, SavedFilter};
use crate::rows;

/// The saved-filter table; creates serialise on advisory lock 7403 (and the tenant).
const TABLES: Tables = Tables {
    max: 4,
    lock: 7403,
    tables: &[("table", "crier_saved_filters")],
    ddl: "CREATE TABLE IF NOT EXISTS {table} (
    tenant TEXT NOT NULL, name TEXT NOT NULL, filter TEXT NOT NULL, description TEXT,
    created_by TEXT NOT NULL, created_us BIGINT NOT NULL, updated_us BIGINT NOT NULL,
    PRIMARY KEY (tenant, name)
);",
};

/// Saved filters stored in PostgreSQL.
#[derive(Clone)]
pub struct PgFilters {
    side: Side,
}

impl PgFilters {
    /// Connects and creates the table in `schema` (default `public`) if needed.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<PgFilters, LogError> {
        let side = Side::open(url, schema, &TABLES).await?;
        Ok(PgFilters { side })
    }
}

impl FilterStore for PgFilters {
    fn create(&self, f: SavedFilter, max: usize) -> BoxFuture<'static, Result<Created, LogError>> {
        let side = self.side.clone();
        Box::pin(async move {
            let mut c = side.client().await?;
            let tx = c.transaction().await.map_err(backend)?;
            let n = side.count_locked(&tx, "{table}", &f.tenant).await?;
            let sql = "SELECT 1 FROM {table} WHERE tenant = $1 AND name = $2";
            if !side
                .stmt(sql, &[&f.tenant, &f.name])
                .rows(&tx)
                .await?
                .is_empty()
            {
                return Ok(Created::Exists);
            }
            if n >= max {
                return Ok(Created::Full);
            }
            let sql = "INSERT INTO {table} ({filter_columns}) VALUES ($1, $2, $3, $4, $5, $6, $7)";
            let params: Params = &[
                &f.tenant,
                &f.name,
                &f.filter,
                &f.description,
                &f.created_by,
                &f.created_us,
                &f.updated_us,
            ];
            side.stmt(sql, params).exec(&tx).await?;
            tx.commit().await.map_err(backend)?;
            Ok(Created::Stored(f))
        })
    }

    fn get(
        &self,
        tenant: String,
        name: String,
    ) -> BoxFuture<'static, Result<Option<SavedFilter>, LogError>> {
        let side = self.side.clone();
        Box::pin(async move {
            let sql = "SELECT {filter_columns} FROM {table} WHERE tenant = $1 AND name = $2";
            let mut found = side
                .select(sql, &[&tenant, &name], rows::saved_filter)
                .await?;
            Ok(found.pop())
        })
    }

    fn list(&self, tenant: String) -> BoxFuture<'static, Result<Vec<SavedFilter>, LogError>> {
        let side = self.side.clone();
        Box::pin(async move {
            let sql = "SELECT {filter_columns} FROM {table} WHERE tenant = $1 ORDER BY name COLLATE \"C\"";
            side.select(sql, &[&tenant], rows::saved_filter).await
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
        let side = self.side.clone();
        Box::pin(async move {
            let sql = "UPDATE {table} SET filter = $3, description = $4, updated_us = $5
                       WHERE tenant = $1 AND name = $2 RETURNING {filter_columns}";
            let params: Params = &[&tenant, &name, &filter, &description, &updated_us];
            Ok(side.select(sql, params, rows::saved_filter).await?.pop())
        })
    }

    fn delete(&self, tenant: String, name: String) -> BoxFuture<'static, Result<bool, LogError>> {
        let side = self.side.clone();
        Box::pin(async move {
            let sql = "DELETE FROM {table} WHERE tenant = $1 AND name = $2";
            Ok(side.run(sql, &[&tenant, &name]).await? > 0)
        })
    }
}

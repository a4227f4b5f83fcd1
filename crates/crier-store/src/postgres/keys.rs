//! API keys in PostgreSQL, for hubs that share one log: the same contract as the SQLite key
//! table, in the log's schema.

use std::sync::Arc;

use crier_core::event::now_us;
use crier_core::log::BoxFuture;
use crier_core::LogError;
use deadpool_postgres::Pool;

use super::backend;
use super::side::{migrate, side_pool};

/// API keys in PostgreSQL (the same contract as [`crate::SqliteKeys`]), for hubs that share
/// one log: a key created or revoked on any node holds on every node at once.
#[derive(Clone)]
pub struct PgKeys {
    pool: Pool,
    table: Arc<String>,
}

fn row_to_key(r: &tokio_postgres::Row) -> crier_core::keys::ApiKey {
    let role: String = r.get(3);
    crier_core::keys::ApiKey {
        id: r.get(0),
        name: r.get(1),
        tenant: r.get(2),
        role: crier_core::Role::parse(&role).unwrap_or(crier_core::Role::Subscriber),
        created_us: r.get(4),
        revoked_us: r.get(5),
    }
}

const KEY_COLUMNS: &str = "id, name, tenant, role, created_us, revoked_us";

impl PgKeys {
    /// Connects and creates the key table in `schema` (default `public`) if needed.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<PgKeys, LogError> {
        let (pool, schema) = side_pool(url, schema, 4)?;
        let table = format!("\"{schema}\".crier_api_keys");
        migrate(
            &pool,
            7402,
            &format!(
                "CREATE SCHEMA IF NOT EXISTS \"{schema}\";
CREATE TABLE IF NOT EXISTS {table} (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT NOT NULL, role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE, created_us BIGINT NOT NULL, revoked_us BIGINT
);"
            ),
        )
        .await?;
        Ok(PgKeys {
            pool,
            table: Arc::new(table),
        })
    }

    /// Creates a key; returns it with its secret, which is not stored and cannot be shown again.
    pub async fn create(
        &self,
        tenant: &str,
        role: crier_core::Role,
        name: &str,
    ) -> Result<(crier_core::keys::ApiKey, String), LogError> {
        let (key, secret) = crate::keys::new_key(tenant, role, name);
        let c = self.pool.get().await.map_err(backend)?;
        c.execute(
            &format!("INSERT INTO {} (id, name, tenant, role, hash, created_us) VALUES ($1, $2, $3, $4, $5, $6)", self.table),
            &[&key.id, &key.name, &key.tenant, &key.role.as_str(), &crate::keys::hash_secret(&secret), &key.created_us],
        )
        .await
        .map_err(backend)?;
        Ok((key, secret))
    }

    /// Every key, newest first.
    pub async fn list(&self) -> Result<Vec<crier_core::keys::ApiKey>, LogError> {
        let c = self.pool.get().await.map_err(backend)?;
        let rows = c
            .query(
                &format!(
                    "SELECT {KEY_COLUMNS} FROM {} ORDER BY created_us DESC, id",
                    self.table
                ),
                &[],
            )
            .await
            .map_err(backend)?;
        Ok(rows.iter().map(row_to_key).collect())
    }

    /// Revokes a key by id; false if there is no such key.
    pub async fn revoke(&self, id: &str) -> Result<bool, LogError> {
        let c = self.pool.get().await.map_err(backend)?;
        let n = c
            .execute(
                &format!(
                    "UPDATE {} SET revoked_us = COALESCE(revoked_us, $2) WHERE id = $1",
                    self.table
                ),
                &[&id, &now_us()],
            )
            .await
            .map_err(backend)?;
        Ok(n > 0)
    }
}

impl crier_core::keys::KeyStore for PgKeys {
    fn find(
        &self,
        hash: &str,
    ) -> BoxFuture<'_, Result<Option<crier_core::keys::ApiKey>, LogError>> {
        let hash = hash.to_string();
        Box::pin(async move {
            let c = self.pool.get().await.map_err(backend)?;
            let row = c
                .query_opt(
                    &format!("SELECT {KEY_COLUMNS} FROM {} WHERE hash = $1", self.table),
                    &[&hash],
                )
                .await
                .map_err(backend)?;
            Ok(row.as_ref().map(row_to_key))
        })
    }
}

//! API keys in PostgreSQL, for hubs that share one log: the same contract as the SQLite key
//! table, in the log's schema.

use crier_core::event::now_us;
use crier_core::keys::ApiKey;
use crier_core::log::BoxFuture;
use crier_core::LogError;

use super::side::{Params, Side, Tables};
use crate::rows;

/// The key table.
const TABLES: Tables = Tables {
    max: 4,
    lock: 7402,
    tables: &[("table", "crier_api_keys")],
    ddl: "CREATE TABLE IF NOT EXISTS {table} (
    id TEXT PRIMARY KEY, name TEXT NOT NULL, tenant TEXT NOT NULL, role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE, created_us BIGINT NOT NULL, revoked_us BIGINT
);",
};

/// API keys in PostgreSQL (the same contract as [`crate::SqliteKeys`]), for hubs that share
/// one log: a key created or revoked on any node holds on every node at once.
#[derive(Clone)]
pub struct PgKeys {
    side: Side,
}

impl PgKeys {
    /// Connects and creates the key table in `schema` (default `public`) if needed.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<PgKeys, LogError> {
        let side = Side::open(url, schema, &TABLES).await?;
        Ok(PgKeys { side })
    }

    /// Creates a key; returns it with its secret, which is not stored and cannot be shown again.
    pub async fn create(
        &self,
        tenant: &str,
        role: crier_core::Role,
        name: &str,
    ) -> Result<(ApiKey, String), LogError> {
        let (key, secret) = crate::keys::new_key(tenant, role, name);
        let sql = "INSERT INTO {table} (id, name, tenant, role, hash, created_us) VALUES ($1, $2, $3, $4, $5, $6)";
        let hash = crate::keys::hash_secret(&secret);
        let params: Params = &[
            &key.id,
            &key.name,
            &key.tenant,
            &key.role.as_str(),
            &hash,
            &key.created_us,
        ];
        self.side.run(sql, params).await?;
        Ok((key, secret))
    }

    /// Every key, newest first.
    pub async fn list(&self) -> Result<Vec<ApiKey>, LogError> {
        let sql = "SELECT {key_columns} FROM {table} ORDER BY created_us DESC, id";
        self.side.select(sql, &[], rows::api_key).await
    }

    /// Revokes a key by id; false if there is no such key.
    pub async fn revoke(&self, id: &str) -> Result<bool, LogError> {
        let sql = "UPDATE {table} SET revoked_us = COALESCE(revoked_us, $2) WHERE id = $1";
        Ok(self.side.run(sql, &[&id, &now_us()]).await? > 0)
    }
}

impl crier_core::keys::KeyStore for PgKeys {
    fn find(&self, hash: &str) -> BoxFuture<'_, Result<Option<ApiKey>, LogError>> {
        let hash = hash.to_string();
        Box::pin(async move {
            let sql = "SELECT {key_columns} FROM {table} WHERE hash = $1";
            Ok(self.side.select(sql, &[&hash], rows::api_key).await?.pop())
        })
    }
}

//! API keys in the SQLite store (`api_keys` table of `crier.db`).
//!
//! A key's secret is `crier_` plus 32 random bytes in base64url; only its SHA-256 (hex) is
//! stored. Administration (`crier keys create|list|revoke`) opens the store file directly, so
//! it works whether or not a hub is running on it; the hub looks keys up on every request,
//! so a revocation takes effect at once.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use crier_core::event::now_us;
use crier_core::keys::{ApiKey, KeyStore};
use crier_core::log::BoxFuture;
use crier_core::{LogError, Role};
use rand::RngCore;
use rusqlite::{params, Connection, OptionalExtension};
use sha2::{Digest, Sha256};

use crate::rows::{self, KEY_COLUMNS};
use crate::sqlite::SqliteLog;

/// The prefix of every API key secret.
pub const KEY_PREFIX: &str = "crier_";

/// Hex SHA-256 of a presented secret.
pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new key and its secret (the secret is stored nowhere; only its hash is).
pub(crate) fn new_key(tenant: &str, role: Role, name: &str) -> (ApiKey, String) {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret = format!(
        "{KEY_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    let mut idb = [0u8; 8];
    rand::rng().fill_bytes(&mut idb);
    let id = format!(
        "key_{}",
        idb.iter().map(|b| format!("{b:02x}")).collect::<String>()
    );
    let key = ApiKey {
        id,
        name: name.to_string(),
        tenant: tenant.to_string(),
        role,
        created_us: now_us(),
        revoked_us: None,
    };
    (key, secret)
}

/// API keys stored in a SQLite file.
pub struct SqliteKeys {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

fn backend(e: rusqlite::Error) -> LogError {
    LogError::backend(e)
}

impl SqliteKeys {
    /// Opens the key table of the store at `path` (creating it if needed).
    pub fn open(path: &Path) -> Result<SqliteKeys, LogError> {
        let conn = crate::sqlite::open_side_connection(path, crate::sqlite::KEYS_SCHEMA)
            .map_err(backend)?;
        Ok(SqliteKeys {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// The hub's view of the keys of `log`'s file: lookups on a read-only connection. A hub
    /// never writes keys (`crier keys` does, from its own process), so nothing here competes
    /// with the log's writer; `create` and `revoke` on this handle fail.
    pub fn with_log(log: &SqliteLog) -> Result<SqliteKeys, LogError> {
        Ok(SqliteKeys {
            path: log.path().to_path_buf(),
            conn: Arc::new(Mutex::new(crate::sqlite::read_only(log.path())?)),
        })
    }

    /// Where the keys live.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A std Mutex: each use is one short statement, never held across an await.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a key; returns it with its secret, which is not stored and cannot be shown again.
    pub fn create(
        &self,
        tenant: &str,
        role: Role,
        name: &str,
    ) -> Result<(ApiKey, String), LogError> {
        let (key, secret) = new_key(tenant, role, name);
        self.lock()
            .execute(
                "INSERT INTO api_keys (id, name, tenant, role, hash, created_us) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![key.id, key.name, key.tenant, key.role.as_str(), hash_secret(&secret), key.created_us],
            )
            .map_err(backend)?;
        Ok((key, secret))
    }

    /// Every key, newest first.
    pub fn list(&self) -> Result<Vec<ApiKey>, LogError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare(&format!(
                "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_us DESC, id"
            ))
            .map_err(backend)?;
        let rows = stmt.query_map([], |r| rows::api_key(r)).map_err(backend)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend)
    }

    /// Revokes a key by id; false if there is no such key.
    pub fn revoke(&self, id: &str) -> Result<bool, LogError> {
        let n = self
            .lock()
            .execute(
                "UPDATE api_keys SET revoked_us = COALESCE(revoked_us, ?2) WHERE id = ?1",
                params![id, now_us()],
            )
            .map_err(backend)?;
        Ok(n > 0)
    }

    fn find_blocking(conn: &Mutex<Connection>, hash: &str) -> Result<Option<ApiKey>, LogError> {
        let conn = conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.prepare_cached(&format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?1"
        ))
        .and_then(|mut s| s.query_row([hash], |r| rows::api_key(r)).optional())
        .map_err(backend)
    }
}

impl KeyStore for SqliteKeys {
    fn find(&self, hash: &str) -> BoxFuture<'_, Result<Option<ApiKey>, LogError>> {
        let conn = self.conn.clone();
        let hash = hash.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || SqliteKeys::find_blocking(&conn, &hash))
                .await
                .map_err(LogError::backend)?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn create_find_revoke() {
        let dir = tempfile::tempdir().unwrap();
        let keys = SqliteKeys::open(&dir.path().join("k.db")).unwrap();
        let (k, secret) = keys.create("acme", Role::Publisher, "ci").unwrap();
        assert!(secret.starts_with(KEY_PREFIX) && secret.len() > 40);
        let found = keys.find(&hash_secret(&secret)).await.unwrap().unwrap();
        assert_eq!(found, k);
        assert!(keys
            .find(&hash_secret("crier_nope"))
            .await
            .unwrap()
            .is_none());
        assert!(keys.revoke(&k.id).unwrap());
        assert!(!keys.revoke("key_missing").unwrap());
        assert!(keys
            .find(&hash_secret(&secret))
            .await
            .unwrap()
            .unwrap()
            .revoked_us
            .is_some());
        assert_eq!(keys.list().unwrap().len(), 1);
        let raw: String = keys
            .lock()
            .query_row("SELECT hash FROM api_keys", [], |r| r.get(0))
            .unwrap();
        assert!(!raw.contains(&secret[6..]), "only the hash is stored");
    }
}

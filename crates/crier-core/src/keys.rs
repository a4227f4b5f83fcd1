//! API keys: long random secrets stored only as SHA-256 hashes. The hub looks a presented
//! key up by its hash on every request (and on every heartbeat of an open stream), so a
//! revoked key stops working at once.

use crate::log::{BoxFuture, LogError};
use crate::principal::Role;

/// A stored API key (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// Public identifier, used to list and revoke.
    pub id: String,
    /// Human name; becomes the `actor` of what the key publishes.
    pub name: String,
    /// The tenant the key belongs to.
    pub tenant: String,
    /// What it may do.
    pub role: Role,
    /// Creation time, microseconds since the epoch.
    pub created_us: i64,
    /// Revocation time, if revoked.
    pub revoked_us: Option<i64>,
}

/// Where API keys live.
pub trait KeyStore: Send + Sync + 'static {
    /// The key whose secret hashes to `hash` (hex SHA-256), revoked or not.
    fn find(&self, hash: &str) -> BoxFuture<'_, Result<Option<ApiKey>, LogError>>;
}

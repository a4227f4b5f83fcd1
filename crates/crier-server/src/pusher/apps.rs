//! `[[pusher.apps]]`: the Pusher apps this hub serves, as configured and as validated.
//!
//! An app is what Pusher clients and server SDKs name with a key and an id; here each app
//! writes to and reads from one tenant's log. Validation happens once at start, so the
//! protocol and HTTP paths look apps up by key or id without re-checking anything.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// `[pusher]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PusherConfig {
    /// The apps served.
    pub apps: Vec<AppConfig>,
    /// In a cluster, how often a node tells the others it is alive.
    pub presence_heartbeat: String,
    /// In a cluster, how long without a heartbeat before a node's presence members leave.
    pub presence_timeout: String,
}

impl Default for PusherConfig {
    fn default() -> Self {
        PusherConfig {
            apps: Vec::new(),
            presence_heartbeat: "5s".into(),
            presence_timeout: "15s".into(),
        }
    }
}

/// One `[[pusher.apps]]` table.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The `app_id` of the server SDKs: digits.
    pub id: String,
    /// The public key clients connect with.
    pub key: String,
    /// The shared secret that signs channel authorizations and HTTP API requests.
    pub secret: String,
    /// The tenant whose log this app writes and reads.
    #[serde(default = "default_tenant")]
    pub tenant: String,
    /// Whether `client-*` events are allowed on private and presence channels.
    #[serde(default)]
    pub client_events: bool,
    /// Seconds of silence after which the server pings a connection.
    #[serde(default = "default_activity_timeout")]
    pub activity_timeout: u64,
    /// Pusher-style webhook URLs.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// Largest `data` of one event, in bytes (Pusher's limit is 10 KB).
    #[serde(default = "default_max_data_bytes")]
    pub max_data_bytes: u64,
}

impl fmt::Debug for AppConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppConfig")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

fn default_tenant() -> String {
    "default".into()
}

fn default_activity_timeout() -> u64 {
    120
}

fn default_max_data_bytes() -> u64 {
    10_240
}

/// A validated app.
pub struct App {
    /// `app_id`.
    pub id: String,
    /// Public key.
    pub key: String,
    /// Secret (never logged).
    pub secret: String,
    /// Tenant of its events.
    pub tenant: String,
    /// `client-*` events allowed.
    pub client_events: bool,
    /// Server ping after this many seconds of silence.
    pub activity_timeout: u64,
    /// Webhook URLs, parsed.
    pub webhooks: Vec<url::Url>,
    /// Largest event `data` in bytes.
    pub max_data_bytes: usize,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("id", &self.id)
            .field("key", &self.key)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// Every configured app.
#[derive(Debug, Clone, Default)]
pub struct Apps(pub Arc<Vec<Arc<App>>>);

impl Apps {
    /// The app with this public key.
    pub fn by_key(&self, key: &str) -> Option<&Arc<App>> {
        self.0.iter().find(|a| a.key == key)
    }

    /// The app with this id.
    pub fn by_id(&self, id: &str) -> Option<&Arc<App>> {
        self.0.iter().find(|a| a.id == id)
    }

    /// Whether any app is configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

fn err(i: usize, field: &str, message: impl Into<String>) -> ConfigError {
    crate::config::err(&format!("pusher.apps[{i}].{field}"), message)
}

impl PusherConfig {
    /// Checks every app: digits for ids, unique ids and keys, a secret, a valid tenant,
    /// http(s) webhook URLs.
    pub fn validate(&self) -> Result<Apps, ConfigError> {
        let mut out: Vec<Arc<App>> = Vec::with_capacity(self.apps.len());
        for (i, a) in self.apps.iter().enumerate() {
            if a.id.is_empty() || a.id.len() > 32 || !a.id.bytes().all(|b| b.is_ascii_digit()) {
                return Err(err(
                    i,
                    "id",
                    "must be 1 to 32 digits (some SDKs accept nothing else)",
                ));
            }
            if a.key.is_empty()
                || a.key.len() > 128
                || !a
                    .key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
            {
                return Err(err(
                    i,
                    "key",
                    "must be 1 to 128 letters, digits, '-', '_' or '.'",
                ));
            }
            if a.secret.len() < 8 {
                return Err(err(i, "secret", "must be at least 8 characters"));
            }
            crier_core::event::check_tenant(&a.tenant).map_err(|e| err(i, "tenant", e.message))?;
            if !(1..=3600).contains(&a.activity_timeout) {
                return Err(err(i, "activity_timeout", "must be 1 to 3600 seconds"));
            }
            if !(1..=1 << 20).contains(&a.max_data_bytes) {
                return Err(err(i, "max_data_bytes", "must be 1 to 1048576"));
            }
            if out.iter().any(|o| o.id == a.id) {
                return Err(err(
                    i,
                    "id",
                    format!("app id {:?} is configured twice", a.id),
                ));
            }
            if out.iter().any(|o| o.key == a.key) {
                return Err(err(
                    i,
                    "key",
                    format!("app key {:?} is configured twice", a.key),
                ));
            }
            let mut webhooks = Vec::with_capacity(a.webhooks.len());
            for w in &a.webhooks {
                let u = url::Url::parse(w)
                    .map_err(|e| err(i, "webhooks", format!("{w:?} is not a URL: {e}")))?;
                if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
                    return Err(err(i, "webhooks", format!("{w:?} is not an http(s) URL")));
                }
                webhooks.push(u);
            }
            out.push(Arc::new(App {
                id: a.id.clone(),
                key: a.key.clone(),
                secret: a.secret.clone(),
                tenant: a.tenant.clone(),
                client_events: a.client_events,
                activity_timeout: a.activity_timeout,
                webhooks,
                max_data_bytes: a.max_data_bytes as usize,
            }));
        }
        Ok(Apps(Arc::new(out)))
    }
}

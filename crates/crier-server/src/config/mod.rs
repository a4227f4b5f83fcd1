//! Configuration: a serde struct filled from TOML, then `CRIER_*` environment variables, then
//! flags, and validated into typed [`Settings`] at start.
//!
//! The environment name of a key is `CRIER_` plus its path in upper case joined by `_`
//! (`auth.jwt_secret` → `CRIER_AUTH_JWT_SECRET`). Every layer is merged as TOML values over the
//! defaults, so the environment and flags know the type of each key from its default (see
//! [`load`]). A bad value is an error naming the key path and the file, variable or
//! flag that set it; nothing falls back silently.

pub mod credentials;
pub mod doc;
mod file;
pub mod load;
pub mod origins;
mod settings;
mod validate;

pub use credentials::{load_keys, AuthSettings, JwtKeys};
pub use file::{
    AuthConfig, Config, LimitsConfig, OutboxConfig, RetentionConfig, TlsConfig, WebhooksConfig,
};
pub use settings::{BrokerKind, Limits, OutboxSettings, Settings, StoreKind, WebhookSettings};
pub use validate::listen_addr;

/// A configuration error, naming the key at fault and where its value was set.
#[derive(Debug)]
pub struct ConfigError {
    /// Dotted path of the key (empty for an error of the file as a whole).
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// Where the value came from: the file's path, the `CRIER_*` variable or the flag.
    pub origin: Option<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.key.is_empty(), &self.origin) {
            (true, Some(o)) => write!(f, "configuration file {o}: {}", self.message),
            (true, None) => write!(f, "configuration: {}", self.message),
            (false, Some(o)) => {
                write!(
                    f,
                    "configuration key `{}` (set in {o}): {}",
                    self.key, self.message
                )
            }
            (false, None) => write!(f, "configuration key `{}`: {}", self.key, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// The same error, saying which file, variable or flag set the value.
    pub fn set_by(self, origin: &str) -> ConfigError {
        ConfigError {
            origin: Some(origin.to_string()),
            ..self
        }
    }
}

pub(crate) fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_string(),
        message: message.into(),
        origin: None,
    }
}

#[cfg(test)]
mod tests {
    use super::load::load_with_var;
    use super::*;

    #[test]
    fn layers_override_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "heartbeat = \"5s\"\n[limits]\nmax_batch = 10\nqueue_per_connection = 7\n",
        )
        .unwrap();
        let env = |k: &str| match k {
            "CRIER_LIMITS_MAX_BATCH" => Some("20".to_string()),
            "CRIER_ALLOWED_ORIGINS" => Some("https://a.example,https://b.example".to_string()),
            _ => None,
        };
        let c = Config::load(Some(&file), env, &[("limits.max_batch", "30".into())]).unwrap();
        assert_eq!(c.heartbeat, "5s");
        assert_eq!(c.limits.max_batch, 30);
        assert_eq!(c.limits.queue_per_connection, 7);
        assert_eq!(c.allowed_origins.len(), 2);
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[limits]\nmax_batchh = 10\n").unwrap();
        let e = Config::load(Some(&file), |_| None, &[]).unwrap_err();
        assert!(e.to_string().contains("max_batchh"), "{e}");
        let e = load_with_var("CRIER_LIMITS_MAX_BATCH", "ten").unwrap_err();
        assert_eq!(e.key, "limits.max_batch");
        let c = Config {
            heartbeat: "soon".into(),
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "heartbeat");
        let c = Config {
            listen: "0.0.0.0:7400".into(),
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "listen");
        let c = Config {
            durability: "maybe".into(),
            ..Config::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "durability");
        let c = Config {
            stream_threads: 5000,
            ..Config::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.key, "stream_threads");
        assert!(e.to_string().contains("0: half the cores"), "{e}");
    }

    #[test]
    fn auth_settings_are_checked_and_open_non_loopback() {
        let mut c = Config {
            listen: "0.0.0.0:7400".into(),
            ..Config::default()
        };
        c.auth.jwt_secret = "short".into();
        assert_eq!(c.validate().unwrap_err().key, "auth.jwt_secret");
        c.auth.jwt_secret = "a-secret-of-at-least-thirty-two-chars".into();
        assert!(
            c.validate().unwrap().auth.enabled,
            "with auth any address is allowed"
        );
        c.auth.jwt_secret.clear();
        c.auth.required = true;
        c.validate().unwrap();
        c.auth.algorithm = "HS512".into();
        c.auth.jwt_public_key = "/nonexistent.pem".into();
        assert_eq!(c.validate().unwrap_err().key, "auth.algorithm");
        c.auth.algorithm = "RS256".into();
        assert_eq!(c.validate().unwrap_err().key, "auth.jwt_public_key");
    }
}

//! Turns a [`Config`] into typed [`Settings`]: every key parsed and checked, a refusal naming
//! the key at fault. Nothing falls back silently.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crier_store::Durability;

/// The most worker threads `stream_threads` may ask for.
const MAX_STREAM_THREADS: usize = 1024;

use super::{
    err, BrokerKind, Config, ConfigError, Limits, OutboxConfig, OutboxSettings, Settings,
    StoreKind, WebhookSettings,
};

impl Config {
    /// Validates every key into typed settings.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let listen = listen_addr("listen", &self.listen)?;
        let durability = match self.durability.as_str() {
            "fsync" => Durability::Fsync,
            "commit" => Durability::Commit,
            other => return Err(not_one_of("durability", other, "\"fsync\" or \"commit\"")),
        };
        let store = match self.store.as_str() {
            "sqlite" => StoreKind::Sqlite,
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                needs_feature(cfg!(feature = "postgres"), "store", "postgres")?;
                #[cfg(feature = "postgres")]
                url.parse::<crier_store::postgres::PgConfig>()
                    .map_err(|e| err("store", format!("not a PostgreSQL URL: {e}")))?;
                StoreKind::Postgres(url.to_string())
            }
            other => {
                return Err(not_one_of(
                    "store",
                    other,
                    "\"sqlite\" or a postgres://user@host:5432/db URL",
                ))
            }
        };
        let broker = match self.broker.as_str() {
            "local" => BrokerKind::Local,
            url if url.starts_with("nats://") => {
                needs_feature(cfg!(feature = "nats"), "broker", "nats")?;
                BrokerKind::Nats(url.to_string())
            }
            url if url.starts_with("redis://") => {
                needs_feature(cfg!(feature = "redis"), "broker", "redis")?;
                BrokerKind::Redis(url.to_string())
            }
            other => {
                return Err(not_one_of(
                    "broker",
                    other,
                    "\"local\", a nats:// URL or a redis:// URL",
                ))
            }
        };
        if broker != BrokerKind::Local && store == StoreKind::Sqlite {
            return Err(err(
                "broker",
                "a broker connects nodes that share one log; it needs store = \"postgres://…\"",
            ));
        }
        if self.store_schema.is_empty()
            || !self
                .store_schema
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(err("store_schema", "letters, digits and underscores only"));
        }
        let node_id = if self.node_id.is_empty() {
            format!("node-{}", std::process::id())
        } else {
            self.node_id.clone()
        };
        let jwt = super::load_keys(
            &self.auth.jwt_secret,
            &self.auth.jwt_public_key,
            &self.auth.jwks_file,
            &self.auth.algorithm,
        )
        .map_err(|(key, msg)| err(key, msg))?;
        let auth = super::AuthSettings {
            enabled: jwt.is_some() || self.auth.required,
            jwt,
            single_tenant: self.single_tenant,
        };
        if !auth.enabled && !listen.ip().is_loopback() {
            return Err(err(
                "listen",
                format!(
                    "{listen} is not a loopback address and no authentication is configured \
                     (auth.jwt_secret, auth.jwt_public_key, auth.jwks_file or auth.required); \
                     crier refuses to serve an open hub beyond this machine"
                ),
            ));
        }
        let max_age = match self.retention.max_age.trim() {
            "" | "0" => None,
            s => Some(duration("retention.max_age", s)?),
        };
        let l = &self.limits;
        let positive = |key: &str, v: u64| -> Result<usize, ConfigError> {
            if v == 0 {
                return Err(err(key, "must be greater than 0"));
            }
            usize::try_from(v).map_err(|_| err(key, "is too large"))
        };
        if !self.metrics_token.is_empty() && self.metrics_token.len() < 16 {
            return Err(err(
                "metrics_token",
                "must be at least 16 characters (it is a password for /metrics)",
            ));
        }
        let log_json = match self.log_format.as_str() {
            "text" => false,
            "json" => true,
            other => return Err(not_one_of("log_format", other, "\"text\" or \"json\"")),
        };
        let backoff = self
            .webhooks
            .backoff
            .iter()
            .map(|b| duration("webhooks.backoff", b))
            .collect::<Result<Vec<_>, _>>()?;
        let skip_dead = match self.webhooks.on_dead.as_str() {
            "pause" => false,
            "skip" => true,
            _ => return Err(err("webhooks.on_dead", "must be \"pause\" or \"skip\"")),
        };
        let webhooks = WebhookSettings {
            allow_private: self.webhooks.allow_private,
            timeout: duration("webhooks.timeout", &self.webhooks.timeout)?,
            backoff,
            skip_dead,
        };
        let tls = match (self.tls.cert.trim(), self.tls.key.trim()) {
            ("", "") => None,
            ("", _) => return Err(err("tls.cert", "tls.key is set; set the certificate too")),
            (_, "") => return Err(err("tls.key", "tls.cert is set; set its private key too")),
            (cert, key) => Some(
                crate::tls::load(Path::new(cert), Path::new(key))
                    .map_err(|(key, msg)| err(key, msg))?,
            ),
        };
        let max_batch = positive("limits.max_batch", l.max_batch)?;
        let max_event_bytes = positive("limits.max_event_bytes", l.max_event_bytes)?;
        let max_body_bytes = positive("limits.max_body_bytes", l.max_body_bytes)?;
        if max_event_bytes < 256 {
            return Err(err("limits.max_event_bytes", "must be at least 256"));
        }
        let reader_buffer_bytes = positive("limits.reader_buffer_bytes", l.reader_buffer_bytes)?;
        if reader_buffer_bytes < max_event_bytes.saturating_mul(2) {
            return Err(err(
                "limits.reader_buffer_bytes",
                "must be at least twice limits.max_event_bytes (half holds a catch-up page, half the live queue, each at least one event)",
            ));
        }
        let presence_heartbeat =
            duration("pusher.presence_heartbeat", &self.pusher.presence_heartbeat)?;
        let presence_timeout = duration("pusher.presence_timeout", &self.pusher.presence_timeout)?;
        if presence_heartbeat.is_zero() {
            return Err(err("pusher.presence_heartbeat", "must be greater than 0"));
        }
        if presence_timeout < presence_heartbeat.saturating_mul(2) {
            return Err(err(
                "pusher.presence_timeout",
                "must be at least twice pusher.presence_heartbeat (one lost heartbeat is no death)",
            ));
        }
        Ok(Settings {
            store,
            broker,
            presence_heartbeat,
            presence_timeout,
            store_schema: self.store_schema.clone(),
            node_id,
            listen,
            auth,
            webhooks,
            tls,
            pusher: self.pusher.validate()?,
            max_replays_per_tenant: positive(
                "limits.max_replays_per_tenant",
                l.max_replays_per_tenant,
            )?,
            data_dir: self.data_dir.clone(),
            durability,
            heartbeat: duration("heartbeat", &self.heartbeat)?,
            sse_retry: duration("sse_retry", &self.sse_retry)?,
            shutdown_timeout: duration("shutdown_timeout", &self.shutdown_timeout)?,
            stream_threads: match self.stream_threads {
                n @ 0..=MAX_STREAM_THREADS => n,
                _ => {
                    return Err(err(
                        "stream_threads",
                        format!("at most {MAX_STREAM_THREADS} (0: half the cores, rounded up)"),
                    ))
                }
            },
            allowed_origins: self.allowed_origins.clone(),
            public_url: super::origins::public_origin(&self.public_url)
                .map_err(|m| err("public_url", m))?,
            allowed_hosts: self.allowed_hosts.clone(),
            log_json,
            access_log: self.access_log,
            metrics_token: (!self.metrics_token.is_empty()).then(|| self.metrics_token.clone()),
            retention_max_age: max_age,
            retention_max_events: (self.retention.max_events > 0)
                .then_some(self.retention.max_events),
            retention_interval: duration("retention.interval", &self.retention.interval)?,
            outbox: outbox_settings(&self.outbox)?,
            limits: Limits {
                max_event_bytes,
                max_body_bytes,
                max_batch,
                max_ws_frame_bytes: positive("limits.max_ws_frame_bytes", l.max_ws_frame_bytes)?,
                max_subscriptions_per_connection: positive(
                    "limits.max_subscriptions_per_connection",
                    l.max_subscriptions_per_connection,
                )?,
                max_connections_per_tenant: positive(
                    "limits.max_connections_per_tenant",
                    l.max_connections_per_tenant,
                )?,
                publish_rate_per_tenant: l.publish_rate_per_tenant,
                queue_per_connection: positive(
                    "limits.queue_per_connection",
                    l.queue_per_connection,
                )?,
                max_filter_patterns: positive("limits.max_filter_patterns", l.max_filter_patterns)?,
                max_filter_bytes: positive("limits.max_filter_bytes", l.max_filter_bytes)?,
                max_filters_per_tenant: positive(
                    "limits.max_filters_per_tenant",
                    l.max_filters_per_tenant,
                )?,
                reader_buffer_bytes,
                replay_idle_timeout: duration(
                    "limits.replay_idle_timeout",
                    &l.replay_idle_timeout,
                )?,
                max_response_bytes: positive("limits.max_response_bytes", l.max_response_bytes)?,
                graphql_max_batch: positive("limits.graphql_max_batch", l.graphql_max_batch)?,
                header_read_timeout: duration(
                    "limits.header_read_timeout",
                    &l.header_read_timeout,
                )?,
                max_connections: (l.max_connections > 0)
                    .then(|| positive("limits.max_connections", l.max_connections))
                    .transpose()?,
                max_subscriptions_per_tenant: positive(
                    "limits.max_subscriptions_per_tenant",
                    l.max_subscriptions_per_tenant,
                )?,
            },
        })
    }
}

/// An address like `127.0.0.1:7400`, `[::1]:7400` or `localhost:7400` (a host name is
/// resolved once, at start; the first address it resolves to is used).
pub fn listen_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    let bad = |why: String| {
        err(
            key,
            format!("{s:?} is not an address like 127.0.0.1:7400 or localhost:7400{why}"),
        )
    };
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(bad(String::new()));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(bad(String::new()));
    }
    let mut addrs = std::net::ToSocketAddrs::to_socket_addrs(s)
        .map_err(|e| bad(format!(" ({host} does not resolve: {e})")))?
        .collect::<Vec<_>>();
    // Prefer IPv4 for `localhost`: it is what clients reach by default.
    addrs.sort_by_key(|a| !a.is_ipv4());
    addrs
        .first()
        .copied()
        .ok_or_else(|| bad(format!(" ({host} resolves to no address)")))
}

/// The refusal of a backend this build was compiled without.
/// The error of key `key` set to `given`, which is not one of the `expected` values.
fn not_one_of(key: &str, given: &str, expected: &str) -> ConfigError {
    err(key, format!("{given:?} is not {expected}"))
}

/// Refuses key `key` when this build lacks `feature` (`built` is `cfg!(feature = …)`).
fn needs_feature(built: bool, key: &str, feature: &str) -> Result<(), ConfigError> {
    if built {
        Ok(())
    } else {
        Err(err(key, missing_feature(feature)))
    }
}

fn missing_feature(feature: &str) -> String {
    format!("this build of crier has no {feature} support (build it with the `{feature}` feature)")
}

/// Validates `[outbox]`: the table name becomes SQL identifiers (the table, `<table>_rejected`,
/// the trigger and its function), so it is a plain lower-case name short enough for all four.
fn outbox_settings(c: &OutboxConfig) -> Result<Option<OutboxSettings>, ConfigError> {
    if c.url.is_empty() {
        return Ok(None);
    }
    if !(c.url.starts_with("postgres://") || c.url.starts_with("postgresql://")) {
        return Err(err(
            "outbox.url",
            "the outbox lives in PostgreSQL: give a postgres:// URL",
        ));
    }
    needs_feature(cfg!(feature = "postgres"), "outbox.url", "postgres")?;
    let t = &c.table;
    let ok = t.len() <= 40
        && t.starts_with(|ch: char| ch.is_ascii_lowercase() || ch == '_')
        && t.chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_');
    if !ok {
        return Err(err(
            "outbox.table",
            format!("{t:?} is not a table name of 1 to 40 characters a-z, 0-9 and _ (not starting with a digit)"),
        ));
    }
    Ok(Some(OutboxSettings {
        url: c.url.clone(),
        table: t.clone(),
    }))
}

fn duration(key: &str, s: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| {
        err(
            key,
            format!("{s:?} is not a duration like \"15s\" or \"7d\": {e}"),
        )
    })?;
    if d.is_zero() {
        return Err(err(key, "must be longer than zero"));
    }
    Ok(d)
}

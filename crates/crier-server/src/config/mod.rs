//! Configuration: a serde struct filled from TOML, then `CRIER_*` environment variables, then
//! flags, and validated into typed [`Settings`] at start.
//!
//! The environment name of a key is `CRIER_` plus its path in upper case joined by `_`
//! (`auth.jwt_secret` → `CRIER_AUTH_JWT_SECRET`). Every layer is merged as TOML values over the
//! defaults, so the environment and flags know the type of each key from its default (see
//! [`load`]). A bad value is an error naming the key path and the file, variable or
//! flag that set it; nothing falls back silently.

pub mod doc;
pub mod load;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crier_store::Durability;
use serde::{Deserialize, Serialize};

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

/// The configuration file's shape (§10). Unknown keys are errors.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address.
    pub listen: String,
    /// Where the SQLite log lives.
    pub data_dir: PathBuf,
    /// `sqlite` or a `postgres://` URL.
    pub store: String,
    /// `local`, `nats://...` or `redis://...`.
    pub broker: String,
    /// The PostgreSQL schema holding the shared log's tables.
    pub store_schema: String,
    /// This node's name in a cluster (default `node-<pid>`).
    pub node_id: String,
    /// Keep-alive interval of SSE and WebSocket.
    pub heartbeat: String,
    /// `fsync` or `commit`.
    pub durability: String,
    /// Browser origins allowed besides the hub's own (§12.7).
    pub allowed_origins: Vec<String>,
    /// The hub's own origin, e.g. `https://events.example.com` (empty: the listen address).
    pub public_url: String,
    /// Host names a hub without authentication answers besides loopback (§12.7).
    pub allowed_hosts: Vec<String>,
    /// Tokens need no `tenant` claim; everything is tenant `default`.
    pub single_tenant: bool,
    /// The `retry:` the SSE stream announces.
    pub sse_retry: String,
    /// How long shutdown waits for connections to finish.
    pub shutdown_timeout: String,
    /// `text` or `json` log lines.
    pub log_format: String,
    /// Log every HTTP request at info level (off: at debug level).
    pub access_log: bool,
    /// A bearer token that may read `/metrics` alone (empty: admins only).
    pub metrics_token: String,
    /// Credentials.
    pub auth: AuthConfig,
    /// Retention.
    pub retention: RetentionConfig,
    /// Limits of §9.
    pub limits: LimitsConfig,
    /// Webhook delivery.
    pub webhooks: WebhooksConfig,
    /// TLS on the listen address.
    pub tls: TlsConfig,
    /// Pusher Channels apps (§13).
    pub pusher: crate::pusher::apps::PusherConfig,
    /// Where each key set by a layer came from (file, variable or flag), for error messages.
    #[serde(skip)]
    pub origins: std::collections::BTreeMap<String, String>,
    /// The transactional outbox (§14.2).
    pub outbox: OutboxConfig,
}

/// `[tls]`: both set, or neither (plain HTTP).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert: String,
    /// PEM private key of the certificate.
    pub key: String,
}

/// `[auth]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// HS256 secret.
    pub jwt_secret: String,
    /// PEM public key file for RS256 / ES256 / EdDSA.
    pub jwt_public_key: String,
    /// JWKS file.
    pub jwks_file: String,
    /// The one algorithm accepted.
    pub algorithm: String,
    /// Require credentials even without a JWT key (API keys only).
    pub required: bool,
}

/// `[retention]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Events older than this are removed (`0` or empty: keep).
    pub max_age: String,
    /// At most this many events are kept (0: no limit).
    pub max_events: u64,
    /// How often pruning runs.
    pub interval: String,
}

/// `[limits]` (§9).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest serialised event.
    pub max_event_bytes: u64,
    /// Largest request body.
    pub max_body_bytes: u64,
    /// Most events per publish.
    pub max_batch: u64,
    /// Largest WebSocket message.
    pub max_ws_frame_bytes: u64,
    /// Most subscriptions on one WebSocket.
    pub max_subscriptions_per_connection: u64,
    /// Most open streams and sockets per tenant.
    pub max_connections_per_tenant: u64,
    /// Events per second per tenant (0: unlimited).
    pub publish_rate_per_tenant: u64,
    /// Live queue bound of each reader, in events.
    pub queue_per_connection: u64,
    /// Most patterns and tags in one reader's filter, all keys together (§12.2).
    pub max_filter_patterns: u64,
    /// Largest reader filter, as JSON (§12.2).
    pub max_filter_bytes: u64,
    /// Most bytes of events held in memory for one reader, catching up or live (§12.2).
    pub reader_buffer_bytes: u64,
    /// Most replays running at once per tenant.
    pub max_replays_per_tenant: u64,
    /// Most saved named filters per tenant.
    pub max_filters_per_tenant: u64,
    /// A replay nobody streams for this long is stopped (§12.6).
    pub replay_idle_timeout: String,
    /// Most bytes of events one request may load (§12.3).
    pub max_response_bytes: u64,
    /// Most operations in one GraphQL request (§12.3).
    pub graphql_max_batch: u64,
    /// A connection that has not sent a complete request head by then is closed (§12.4).
    pub header_read_timeout: String,
    /// Most open connections (0: what the open-file limit allows, §12.4).
    pub max_connections: u64,
    /// Most webhook subscriptions per tenant (§12.9).
    pub max_subscriptions_per_tenant: u64,
}

/// `[webhooks]` (§8).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Allow URLs resolving to private addresses.
    pub allow_private: bool,
    /// Per-attempt timeout.
    pub timeout: String,
    /// Retry schedule.
    pub backoff: Vec<String>,
    /// `pause` or `skip`.
    pub on_dead: String,
}

/// `[outbox]` (§14.2): an application's PostgreSQL table the hub drains into the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutboxConfig {
    /// The application's database (`postgres://...`); empty: no outbox.
    pub url: String,
    /// The outbox table's name.
    pub table: String,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig {
            url: String::new(),
            table: "crier_outbox".into(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:7400".into(),
            data_dir: PathBuf::from("./crier-data"),
            store: "sqlite".into(),
            broker: "local".into(),
            store_schema: "public".into(),
            node_id: String::new(),
            heartbeat: "15s".into(),
            durability: "fsync".into(),
            allowed_origins: vec![],
            public_url: String::new(),
            allowed_hosts: vec![],
            single_tenant: false,
            sse_retry: "1s".into(),
            shutdown_timeout: "10s".into(),
            log_format: "text".into(),
            access_log: true,
            metrics_token: String::new(),
            auth: AuthConfig {
                algorithm: "HS256".into(),
                ..AuthConfig::default()
            },
            retention: RetentionConfig::default(),
            limits: LimitsConfig::default(),
            webhooks: WebhooksConfig::default(),
            tls: TlsConfig::default(),
            pusher: Default::default(),
            origins: Default::default(),
            outbox: OutboxConfig::default(),
        }
    }
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            max_age: "7d".into(),
            max_events: 10_000_000,
            interval: "1m".into(),
        }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_event_bytes: 65536,
            max_body_bytes: 1 << 20,
            max_batch: 1000,
            max_ws_frame_bytes: 1 << 20,
            max_subscriptions_per_connection: 64,
            max_connections_per_tenant: 10_000,
            publish_rate_per_tenant: 0,
            queue_per_connection: 1024,
            max_filter_patterns: 64,
            max_filter_bytes: 4096,
            reader_buffer_bytes: 1 << 20,
            max_replays_per_tenant: 8,
            max_filters_per_tenant: 200,
            replay_idle_timeout: "60s".into(),
            max_response_bytes: 16 << 20,
            graphql_max_batch: 10,
            header_read_timeout: "10s".into(),
            max_connections: 0,
            max_subscriptions_per_tenant: 1000,
        }
    }
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            allow_private: false,
            timeout: "10s".into(),
            backoff: ["5s", "30s", "2m", "10m", "30m", "1h", "2h", "4h"]
                .map(String::from)
                .to_vec(),
            on_dead: "pause".into(),
        }
    }
}

impl Config {
    /// The environment variable name of a dotted key.
    pub fn env_name(key: &str) -> String {
        format!("CRIER_{}", key.replace('.', "_").to_uppercase())
    }

    /// Validates every key into typed settings.
    pub fn validate(&self) -> Result<Settings, ConfigError> {
        let listen = listen_addr("listen", &self.listen)?;
        let durability = match self.durability.as_str() {
            "fsync" => Durability::Fsync,
            "commit" => Durability::Commit,
            other => {
                return Err(err(
                    "durability",
                    format!("{other:?} is not \"fsync\" or \"commit\""),
                ))
            }
        };
        let store = match self.store.as_str() {
            "sqlite" => StoreKind::Sqlite,
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                if !cfg!(feature = "postgres") {
                    return Err(err("store", missing_feature("postgres")));
                }
                #[cfg(feature = "postgres")]
                url.parse::<crier_store::postgres::PgConfig>()
                    .map_err(|e| err("store", format!("not a PostgreSQL URL: {e}")))?;
                StoreKind::Postgres(url.to_string())
            }
            other => {
                return Err(err(
                    "store",
                    format!("{other:?} is not \"sqlite\" or a postgres://user@host:5432/db URL"),
                ))
            }
        };
        let broker = match self.broker.as_str() {
            "local" => BrokerKind::Local,
            url if url.starts_with("nats://") => {
                if !cfg!(feature = "nats") {
                    return Err(err("broker", missing_feature("nats")));
                }
                BrokerKind::Nats(url.to_string())
            }
            url if url.starts_with("redis://") => {
                if !cfg!(feature = "redis") {
                    return Err(err("broker", missing_feature("redis")));
                }
                BrokerKind::Redis(url.to_string())
            }
            other => {
                return Err(err(
                    "broker",
                    format!("{other:?} is not \"local\", a nats:// URL or a redis:// URL"),
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
        let jwt = crate::auth::load_keys(
            &self.auth.jwt_secret,
            &self.auth.jwt_public_key,
            &self.auth.jwks_file,
            &self.auth.algorithm,
        )
        .map_err(|(key, msg)| err(key, msg))?;
        let auth = crate::auth::AuthSettings {
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
            other => {
                return Err(err(
                    "log_format",
                    format!("{other:?} is not \"text\" or \"json\""),
                ))
            }
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
            allowed_origins: self.allowed_origins.clone(),
            public_url: crate::browser::public_origin(&self.public_url)
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
    if !cfg!(feature = "postgres") {
        return Err(err("outbox.url", missing_feature("postgres")));
    }
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

/// `[outbox]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxSettings {
    /// The application's database.
    pub url: String,
    /// The outbox table.
    pub table: String,
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

/// `[webhooks]`, typed.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// Allow URLs that resolve to private, loopback or link-local addresses.
    pub allow_private: bool,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Waits between attempts; after the last one the delivery is dead.
    pub backoff: Vec<Duration>,
    /// Skip dead deliveries instead of pausing the subscription.
    pub skip_dead: bool,
}

/// The limits of §9, typed.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest serialised event.
    pub max_event_bytes: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Most events per publish.
    pub max_batch: usize,
    /// Largest WebSocket message.
    pub max_ws_frame_bytes: usize,
    /// Most subscriptions on one WebSocket.
    pub max_subscriptions_per_connection: usize,
    /// Most open streams and sockets per tenant.
    pub max_connections_per_tenant: usize,
    /// Events per second per tenant (0: unlimited).
    pub publish_rate_per_tenant: u64,
    /// Live queue bound per reader, in events.
    pub queue_per_connection: usize,
    /// Most patterns and tags in one reader's filter.
    pub max_filter_patterns: usize,
    /// Largest reader filter, as JSON.
    pub max_filter_bytes: usize,
    /// Most saved named filters per tenant.
    pub max_filters_per_tenant: usize,
    /// Most bytes of events held in memory for one reader.
    pub reader_buffer_bytes: usize,
    /// A replay nobody streams for this long is stopped.
    pub replay_idle_timeout: Duration,
    /// Most bytes of events one request may load.
    pub max_response_bytes: usize,
    /// Most operations in one GraphQL request.
    pub graphql_max_batch: usize,
    /// Time a connection has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Most open connections (`None`: what the open-file limit allows).
    pub max_connections: Option<usize>,
    /// Most webhook subscriptions per tenant.
    pub max_subscriptions_per_tenant: usize,
}

/// Where the log lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreKind {
    /// Embedded SQLite under `data_dir`.
    Sqlite,
    /// A PostgreSQL log several nodes share.
    Postgres(String),
}

/// How nodes learn of each other's commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerKind {
    /// In-process (one node).
    Local,
    /// NATS at this URL.
    Nats(String),
    /// Redis at this URL.
    Redis(String),
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The log's store.
    pub store: StoreKind,
    /// The fan-out between nodes.
    pub broker: BrokerKind,
    /// PostgreSQL schema of the shared log.
    pub store_schema: String,
    /// This node's name.
    pub node_id: String,
    /// Listen address.
    pub listen: SocketAddr,
    /// Credentials.
    pub auth: crate::auth::AuthSettings,
    /// Webhook delivery.
    pub webhooks: WebhookSettings,
    /// TLS on the listen address (`None`: plain HTTP).
    pub tls: Option<std::sync::Arc<tokio_rustls::rustls::ServerConfig>>,
    /// Pusher Channels apps (§13).
    pub pusher: crate::pusher::apps::Apps,
    /// In a cluster, the interval of this node's presence heartbeat.
    pub presence_heartbeat: Duration,
    /// In a cluster, the silence after which another node's presence members leave.
    pub presence_timeout: Duration,
    /// Most replays running at once per tenant.
    pub max_replays_per_tenant: usize,
    /// SQLite directory.
    pub data_dir: PathBuf,
    /// Commit durability.
    pub durability: Durability,
    /// Keep-alive interval.
    pub heartbeat: Duration,
    /// SSE `retry:`.
    pub sse_retry: Duration,
    /// Drain bound at shutdown.
    pub shutdown_timeout: Duration,
    /// Browser origins allowed besides the hub's own (§12.7).
    pub allowed_origins: Vec<String>,
    /// The hub's own origin (`scheme://host[:port]`), when `public_url` names it.
    pub public_url: Option<String>,
    /// Host names a hub without authentication answers besides loopback.
    pub allowed_hosts: Vec<String>,
    /// JSON log lines.
    pub log_json: bool,
    /// Log every request at info level.
    pub access_log: bool,
    /// Bearer token that may read `/metrics` alone.
    pub metrics_token: Option<String>,
    /// Retention by age.
    pub retention_max_age: Option<Duration>,
    /// Retention by count.
    pub retention_max_events: Option<u64>,
    /// Pruning interval.
    pub retention_interval: Duration,
    /// The transactional outbox, when configured.
    pub outbox: Option<OutboxSettings>,
    /// Limits.
    pub limits: Limits,
}

impl Settings {
    /// Settings for tests and embedders: defaults with the given data directory.
    pub fn for_data_dir(dir: &Path) -> Settings {
        let c = Config {
            data_dir: dir.to_path_buf(),
            ..Config::default()
        };
        c.validate()
            .unwrap_or_else(|e| unreachable!("the defaults are valid: {e}"))
    }
}

#[cfg(test)]
mod tests {
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
        let e = Config::load(
            None,
            |k| (k == "CRIER_LIMITS_MAX_BATCH").then(|| "ten".into()),
            &[],
        )
        .unwrap_err();
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

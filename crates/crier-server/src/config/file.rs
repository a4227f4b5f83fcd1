//! The configuration file's shape (§10): the serde structs `crier.toml`, `CRIER_*` variables
//! and flags fill, with their defaults. Unknown keys are errors. What the values mean is
//! decided by `validate`, which turns them into [`super::Settings`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

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
    /// Worker threads of the runtime that serves event streams and WebSockets (0: one per
    /// core).
    pub stream_threads: usize,
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
    /// Most patterns and tags in one filter, wherever a client gives one, all keys
    /// together (§12.2).
    pub max_filter_patterns: u64,
    /// Largest filter, as JSON (§12.2).
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
            stream_threads: 0,
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
}

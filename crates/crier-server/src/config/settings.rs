//! The validated configuration the hub runs on: typed values (durations, addresses, limits,
//! backends), built once at start by `Config::validate`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crier_store::Durability;

use super::Config;

/// `[outbox]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxSettings {
    /// The application's database.
    pub url: String,
    /// The outbox table.
    pub table: String,
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
    /// Most patterns and tags in one filter, wherever a client gives one (history reads included).
    pub max_filter_patterns: usize,
    /// Largest filter, as JSON.
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
    pub auth: super::AuthSettings,
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
    /// Worker threads of the runtime that serves event streams and WebSockets, apart from
    /// the one that answers requests (0: half the cores, rounded up).
    pub stream_threads: usize,
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

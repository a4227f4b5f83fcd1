//! `crier config defaults`: every configuration key with its default and a comment, as TOML
//! that `crier serve --config` accepts, so a new user starts from a complete, explained file.

use super::load::leaves;
use crate::config::Config;

/// One comment per key path. A key missing here fails the test below, so a new key cannot
/// ship without an explanation.
const COMMENTS: &[(&str, &str)] = &[
    (
        "listen",
        "Address to serve HTTP, SSE and WebSocket on (host:port; `localhost` works).",
    ),
    (
        "data_dir",
        "Directory of the embedded SQLite log (store = \"sqlite\").",
    ),
    (
        "store",
        "\"sqlite\", or a postgres://user@host:5432/db URL for a log several nodes share.",
    ),
    (
        "broker",
        "\"local\", \"nats://host:4222\" or \"redis://host:6379\" (needs a PostgreSQL store).",
    ),
    (
        "store_schema",
        "PostgreSQL schema holding the shared log's tables.",
    ),
    (
        "node_id",
        "This node's name in a cluster (empty: node-<pid>).",
    ),
    (
        "heartbeat",
        "Keep-alive interval of SSE and WebSocket connections.",
    ),
    (
        "durability",
        "\"fsync\" (survives a power loss) or \"commit\" (survives a process crash).",
    ),
    (
        "allowed_origins",
        "Browser origins allowed besides the hub's own: CORS, WebSocket upgrades and POST/PUT/PATCH/DELETE (empty: any when authentication is on, none when it is off; \"*\": any).",
    ),
    (
        "public_url",
        "The hub's own origin as browsers see it, e.g. https://events.example.com (empty: the listen address).",
    ),
    (
        "allowed_hosts",
        "Without authentication, Host names answered besides localhost and loopback addresses (others get 421).",
    ),
    (
        "single_tenant",
        "Tokens need no `tenant` claim; everything is tenant `default`.",
    ),
    (
        "sse_retry",
        "The `retry:` the SSE stream announces to browsers.",
    ),
    (
        "shutdown_timeout",
        "How long shutdown waits for connections to finish.",
    ),
    (
        "stream_threads",
        "Worker threads of the runtime that serves event streams and WebSockets, apart from the one that answers publishes and other requests, so that a busy fan-out never delays their answers (0: half the cores, rounded up).",
    ),
    (
        "log_format",
        "\"text\" or \"json\" log lines (on standard error).",
    ),
    (
        "access_log",
        "Log every HTTP request at info level (false: at debug level).",
    ),
    (
        "metrics_token",
        "Bearer token that may read /metrics alone, at least 16 characters (empty: admins only).",
    ),
    ("auth.jwt_secret", "HS256 secret, at least 32 characters."),
    (
        "auth.jwt_public_key",
        "PEM public key file, for RS256 / ES256 / EdDSA.",
    ),
    ("auth.jwks_file", "JWKS file with the verification keys."),
    ("auth.algorithm", "The one JWT algorithm accepted."),
    (
        "auth.required",
        "Require credentials even without a JWT key (API keys only).",
    ),
    (
        "retention.max_age",
        "Events older than this are removed (\"0\": keep forever).",
    ),
    (
        "retention.max_events",
        "At most this many events are kept (0: no limit).",
    ),
    ("retention.interval", "How often pruning runs."),
    (
        "limits.max_event_bytes",
        "Largest serialised event, in bytes.",
    ),
    ("limits.max_body_bytes", "Largest request body, in bytes."),
    ("limits.max_batch", "Most events in one publish."),
    (
        "limits.max_ws_frame_bytes",
        "Largest WebSocket message, in bytes.",
    ),
    (
        "limits.max_subscriptions_per_connection",
        "Most subscriptions on one WebSocket.",
    ),
    (
        "limits.max_connections_per_tenant",
        "Most open streams and sockets per tenant.",
    ),
    (
        "limits.publish_rate_per_tenant",
        "Events per second per tenant (0: unlimited).",
    ),
    (
        "limits.queue_per_connection",
        "Live queue bound of each reader, in events.",
    ),
    (
        "limits.max_filter_patterns",
        "Most patterns and tags in one filter, wherever a client gives one, all keys together.",
    ),
    (
        "limits.max_filter_bytes",
        "Largest filter, as JSON.",
    ),
    (
        "limits.reader_buffer_bytes",
        "Most bytes of events held in memory for one reader, catching up or live (at least twice max_event_bytes).",
    ),
    (
        "limits.max_filters_per_tenant",
        "Most saved named filters (/v1/filters) per tenant.",
    ),
    (
        "limits.max_replays_per_tenant",
        "Most replays running at once per tenant.",
    ),
    (
        "limits.replay_idle_timeout",
        "A replay whose stream nobody opens within this is stopped, freeing its slot.",
    ),
    (
        "limits.max_response_bytes",
        "Most bytes of events one request loads: history pages stop early, GraphQL fails.",
    ),
    (
        "limits.graphql_max_batch",
        "Most operations in one GraphQL request.",
    ),
    (
        "limits.header_read_timeout",
        "A connection that has not sent a whole request head by then is closed.",
    ),
    (
        "limits.max_connections",
        "Most open connections (0: what the open-file limit allows, less a reserve).",
    ),
    (
        "limits.max_subscriptions_per_tenant",
        "Most webhook subscriptions per tenant; beyond it creating one is 409 too_many_subscriptions.",
    ),
    (
        "webhooks.allow_private",
        "Allow webhook URLs that resolve to private or loopback addresses.",
    ),
    ("webhooks.timeout", "Timeout of one delivery attempt."),
    (
        "webhooks.backoff",
        "Waits between attempts; after the last one the delivery is dead.",
    ),
    (
        "webhooks.on_dead",
        "\"pause\" the subscription on a dead delivery, or \"skip\" it.",
    ),
    (
        "tls.cert",
        "PEM certificate chain (leaf first); with tls.key, https and wss on `listen`.",
    ),
    ("tls.key", "PEM private key of tls.cert."),
    (
        "pusher.apps",
        "Pusher Channels apps, one [[pusher.apps]] table each: id, key, secret, tenant, client_events, activity_timeout, webhooks, max_data_bytes.",
    ),
    (
        "pusher.presence_heartbeat",
        "In a cluster, how often each node tells the others (through the broker) that it is alive.",
    ),
    (
        "pusher.presence_timeout",
        "In a cluster, a node silent this long is dead: its presence members leave (at least twice presence_heartbeat).",
    ),
    (
        "outbox.url",
        "The application's PostgreSQL database holding the outbox table; empty: no outbox.",
    ),
    (
        "outbox.table",
        "The outbox table (create it with `crier outbox init`).",
    ),
];

/// The comment of a key path, if it has one.
pub fn comment(key: &str) -> Option<&'static str> {
    COMMENTS.iter().find(|(k, _)| *k == key).map(|(_, c)| *c)
}

/// Every key with its default value and comment, as a TOML document.
pub fn defaults_toml() -> String {
    let mut keys = Vec::new();
    if let Ok(v) = toml::Value::try_from(Config::default()) {
        leaves("", &v, &mut keys);
    }
    let mut out = String::from(
        "# crier configuration: every key with its default.\n\
         # Each key can also be set by CRIER_<PATH> (e.g. CRIER_LIMITS_MAX_BATCH).\n",
    );
    // Top-level keys first: TOML puts every key after a [table] header into that table.
    let (top, nested): (Vec<_>, Vec<_>) = keys.into_iter().partition(|(k, _)| !k.contains('.'));
    out.push('\n');
    for (key, value) in &top {
        push_key(&mut out, key, key, value);
    }
    let mut table = "";
    for (key, value) in &nested {
        let (t, name) = key.split_once('.').unwrap_or(("", key));
        if t != table {
            out.push_str(&format!("\n[{t}]\n"));
            table = t;
        }
        push_key(&mut out, key, name, value);
    }
    out
}

fn push_key(out: &mut String, path: &str, name: &str, value: &toml::Value) {
    if let Some(c) = comment(path) {
        out.push_str(&format!("# {c}\n"));
    }
    out.push_str(&format!("{name} = {value}\n"));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_a_comment_and_the_output_loads_as_the_defaults() {
        let text = defaults_toml();
        let mut keys = Vec::new();
        leaves(
            "",
            &toml::Value::try_from(Config::default()).unwrap(),
            &mut keys,
        );
        for (key, _) in &keys {
            assert!(comment(key).is_some(), "key {key} has no comment");
        }
        for (key, _) in COMMENTS {
            assert!(keys.iter().any(|(k, _)| k == key), "{key} is no key");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("defaults.toml");
        std::fs::write(&path, &text).unwrap();
        let loaded = Config::load(Some(&path), |_| None, &[]).unwrap();
        assert_eq!(loaded.origins.len(), keys.len(), "every key is in the file");
        assert_eq!(
            toml::Value::try_from(&loaded).unwrap(),
            toml::Value::try_from(Config::default()).unwrap()
        );
        loaded.validate().unwrap();
    }
}

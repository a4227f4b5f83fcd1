//! The catalogue of crier's Prometheus metrics: each one described (`# HELP`) and every
//! series with a known, bounded set of labels registered at zero when the hub starts, so
//! dashboards and alerts see a flat line instead of a missing series. Process metrics (CPU
//! seconds, resident memory, open file descriptors) come from `metrics-process` at each
//! scrape, and `crier_build_info` carries the version.

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

use crate::config::{BrokerKind, Settings, StoreKind};

/// The limits that count their hits in `crier_limit_hits_total{limit}`.
const LIMITS: &[&str] = &[
    "max_event_bytes",
    "max_body_bytes",
    "max_batch",
    "max_ws_frame_bytes",
    "max_subscriptions_per_connection",
    "max_connections_per_tenant",
    "publish_rate_per_tenant",
    "max_replays_per_tenant",
    "max_filters_per_tenant",
    "pusher_client_events",
    "max_filter_patterns",
    "max_filter_bytes",
    "replay_idle_timeout",
    "max_response_bytes",
    "graphql_max_batch",
    "header_read_timeout",
    "max_connections",
    "max_subscriptions_per_tenant",
];

fn process() -> &'static metrics_process::Collector {
    static COLLECTOR: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// Describes every metric and registers its series at zero. Call once the recorder is
/// installed (idempotent: registering again changes no value).
pub fn register(settings: &Settings) {
    describe_gauge!(
        "crier_build_info",
        "Always 1; the `version` label is the running crier's version."
    );
    metrics::gauge!("crier_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);

    describe_counter!(
        "crier_events_published_total",
        "Events stored in the log (duplicates excluded)."
    );
    describe_counter!(
        "crier_events_duplicate_total",
        "Published events whose id was already stored (answered with the stored seq)."
    );
    describe_counter!(
        "crier_publish_requests_total",
        "Publish requests accepted, by transport (http, ws or pusher)."
    );
    describe_counter!(
        "crier_entity_changes_total",
        "Entity and link mutations applied."
    );
    describe_counter!(
        "crier_limit_hits_total",
        "Requests refused by a configured limit, by limit."
    );
    describe_counter!(
        "crier_stream_events_sent_total",
        "Events sent to live subscribers, by transport (sse, ws, graphql, pusher); webhooks are counted apart."
    );
    describe_counter!(
        "crier_webhook_attempts_total",
        "Webhook delivery attempts, by result (delivered: a 2xx answer; failed: anything else)."
    );
    describe_counter!(
        "crier_webhook_dead_total",
        "Webhook deliveries given up after the last retry."
    );
    describe_counter!(
        "crier_http_errors_total",
        "Error answers of the HTTP API, by error code."
    );
    describe_counter!(
        "crier_graphql_requests_total",
        "GraphQL queries and mutations over HTTP."
    );
    describe_counter!(
        "crier_queue_fallbacks_total",
        "Readers that fell behind their live queue and went on from the log."
    );
    describe_counter!(
        "crier_pusher_evictions_total",
        "Pusher connections closed with 4200 because they read slower than their channels publish."
    );
    describe_counter!(
        "crier_pusher_webhooks_total",
        "Pusher-style webhook posts, by outcome (delivered, or dead after the last retry)."
    );
    describe_counter!(
        "crier_pusher_webhooks_dropped_total",
        "Pusher webhook events dropped because an app's webhook queue was full."
    );
    describe_counter!(
        "crier_fanout_overflows_total",
        "Tenants whose fan-out work queue passed its bound; their live readers went on from the log."
    );
    describe_counter!(
        "crier_store_probe_failures_total",
        "Writability probes of the store that failed (/readyz answers 503 meanwhile)."
    );
    describe_counter!(
        "crier_webhook_bookkeeping_errors_total",
        "Failed writes of webhook delivery state (retried before delivery moves on), by operation."
    );
    describe_gauge!(
        "crier_connections",
        "Open streams and sockets, by transport."
    );
    describe_gauge!("crier_log_head", "Seq of the newest committed event.");
    describe_gauge!(
        "crier_live_cursors",
        "Readers following the live tail of the log."
    );
    describe_gauge!(
        "crier_log_pruned_through",
        "Retention removed every event up to this seq."
    );
    describe_histogram!(
        "crier_log_append_seconds",
        Unit::Seconds,
        "Time from handing a batch to the log until it is committed."
    );
    describe_histogram!(
        "crier_log_commit_seconds",
        Unit::Seconds,
        "Time of one group commit of the log."
    );
    describe_histogram!(
        "crier_log_group_events",
        "Events written by one group commit."
    );
    describe_histogram!(
        "crier_http_request_duration_seconds",
        Unit::Seconds,
        "Time until an HTTP answer's head is sent, by route template, method and status."
    );

    for c in [
        "crier_events_published_total",
        "crier_events_duplicate_total",
        "crier_entity_changes_total",
        "crier_webhook_dead_total",
        "crier_graphql_requests_total",
        "crier_queue_fallbacks_total",
        "crier_pusher_evictions_total",
        "crier_pusher_webhooks_dropped_total",
        "crier_fanout_overflows_total",
        "crier_store_probe_failures_total",
    ] {
        metrics::counter!(c).increment(0);
    }
    for o in ["delivered", "dead"] {
        metrics::counter!("crier_pusher_webhooks_total", "outcome" => o).increment(0);
    }
    for t in ["http", "ws", "pusher"] {
        metrics::counter!("crier_publish_requests_total", "transport" => t).increment(0);
    }
    for l in LIMITS {
        metrics::counter!("crier_limit_hits_total", "limit" => *l).increment(0);
    }
    for t in ["sse", "ws", "graphql", "pusher"] {
        metrics::counter!("crier_stream_events_sent_total", "transport" => t).increment(0);
    }
    for r in ["delivered", "failed"] {
        metrics::counter!("crier_webhook_attempts_total", "result" => r).increment(0);
    }
    for op in ["record", "advance", "status", "note", "lookup"] {
        metrics::counter!("crier_webhook_bookkeeping_errors_total", "op" => op).increment(0);
    }
    for t in ["sse", "ws", "pusher"] {
        metrics::gauge!("crier_connections", "transport" => t).increment(0.0);
    }
    for g in [
        "crier_log_head",
        "crier_live_cursors",
        "crier_log_pruned_through",
    ] {
        metrics::gauge!(g).increment(0.0);
    }
    for h in [
        "crier_log_append_seconds",
        "crier_log_commit_seconds",
        "crier_log_group_events",
    ] {
        // Registering creates the series; it has no observation until the first commit.
        let _ = metrics::histogram!(h);
    }

    // Cluster metrics exist only where they mean something: a 0 would read as "down".
    if let StoreKind::Postgres(_) = settings.store {
        describe_gauge!(
            "crier_lease_held",
            "1 while this node holds the lease (dispatches webhooks, prunes)."
        );
        metrics::gauge!("crier_lease_held").increment(0.0);
    }
    if settings.broker != BrokerKind::Local || settings.store != StoreKind::Sqlite {
        describe_gauge!("crier_broker_up", "1 while the broker is reachable.");
        describe_counter!(
            "crier_cluster_ingested_total",
            "Events another node committed that this node read from the shared log."
        );
        metrics::counter!("crier_cluster_ingested_total").increment(0);
        describe_counter!(
            "crier_pusher_presence_nodes_lost_total",
            "Other nodes whose presence members left because the node fell silent or restarted."
        );
        describe_counter!(
            "crier_pusher_presence_malformed_total",
            "Presence signals from the broker that were not well-formed and were ignored."
        );
        metrics::counter!("crier_pusher_presence_nodes_lost_total").increment(0);
        metrics::counter!("crier_pusher_presence_malformed_total").increment(0);
    }
    process().describe();
}

/// Refreshes the process metrics; called at each scrape.
pub fn collect_process() {
    process().collect();
}

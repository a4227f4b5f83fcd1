//! The transactional outbox (§14.2): applications insert events into a table of their own
//! PostgreSQL database in the same transaction as their change, and the hub drains it.
//!
//! This module holds what every build knows about the outbox: the SQL that creates its table
//! and trigger (`crier outbox init`) and the drainer's progress shown by `/readyz` and
//! `/metrics`. The drainer itself needs the `postgres` feature.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

/// The notification channel of an outbox table: the table's own name.
pub fn channel(table: &str) -> String {
    table.to_string()
}

/// The SQL `crier outbox init` runs: the outbox table, the table of rejected rows and a
/// trigger that notifies the hub when a transaction that inserted rows commits.
///
/// `table` must be a validated name (`config::OutboxSettings`): it is spliced into SQL.
pub fn init_sql(table: &str) -> String {
    format!(
        r#"CREATE TABLE IF NOT EXISTS {table} (
    id bigserial PRIMARY KEY,
    tenant text NOT NULL DEFAULT 'default',
    event jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {table}_rejected (
    id bigint PRIMARY KEY,
    tenant text NOT NULL,
    event jsonb NOT NULL,
    created_at timestamptz NOT NULL,
    error text NOT NULL,
    rejected_at timestamptz NOT NULL DEFAULT now()
);
CREATE OR REPLACE FUNCTION {table}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{channel}', '');
    RETURN NULL;
END
$$;
DROP TRIGGER IF EXISTS {table}_notify ON {table};
CREATE TRIGGER {table}_notify AFTER INSERT ON {table}
    FOR EACH STATEMENT EXECUTE FUNCTION {table}_notify();
"#,
        channel = channel(table)
    )
}

/// The drainer's progress. All zero until it first looks at the table.
#[derive(Default)]
pub struct OutboxStatus {
    draining: AtomicBool,
    rows: AtomicU64,
    lag_ms: AtomicU64,
    published: AtomicU64,
    rejected: AtomicU64,
    error: Mutex<Option<String>>,
}

impl OutboxStatus {
    /// Records whether this node drains the outbox now (it holds the lease).
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
        metrics::gauge!("crier_outbox_draining").set(if on { 1.0 } else { 0.0 });
    }

    /// Records the rows waiting and the age of the oldest, in seconds.
    pub fn set_lag(&self, rows: u64, seconds: f64) {
        self.rows.store(rows, Ordering::Relaxed);
        let ms = (seconds.max(0.0) * 1000.0).round();
        self.lag_ms.store(ms as u64, Ordering::Relaxed);
        metrics::gauge!("crier_outbox_lag_rows").set(rows as f64);
        metrics::gauge!("crier_outbox_lag_seconds").set(seconds.max(0.0));
    }

    /// Counts rows published and rows moved to the rejected table.
    pub fn count(&self, published: u64, rejected: u64) {
        self.published.fetch_add(published, Ordering::Relaxed);
        self.rejected.fetch_add(rejected, Ordering::Relaxed);
        metrics::counter!("crier_outbox_published_total").increment(published);
        metrics::counter!("crier_outbox_rejected_total").increment(rejected);
    }

    /// Records the last failure to reach the outbox (`None`: the last pass succeeded).
    pub fn set_error(&self, e: Option<String>) {
        *self.error.lock().unwrap_or_else(|p| p.into_inner()) = e;
    }

    /// The `outbox` member of `/readyz`.
    pub fn to_json(&self) -> Value {
        let error = self.error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        json!({
            "draining": self.draining.load(Ordering::Relaxed),
            "lag_rows": self.rows.load(Ordering::Relaxed),
            "lag_seconds": self.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0,
            "published": self.published.load(Ordering::Relaxed),
            "rejected": self.rejected.load(Ordering::Relaxed),
            "error": error,
        })
    }
}

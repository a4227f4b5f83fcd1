//! The PostgreSQL log's schema: the embedded, versioned migrations run when a node opens the
//! log, under an advisory lock so nodes starting together migrate one at a time. A store
//! written by a newer crier is refused.

use crier_core::LogError;

use super::entities::migrations as entity_migrations;
use super::side::exec;
use super::{backend, Names};
use crate::rows::schema_check;

/// The schema version this build writes and understands.
const SCHEMA_VERSION: i64 = 1;

fn tables(n: &Names, schema: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {events} (
    seq BIGINT PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    time_us BIGINT NOT NULL,
    recv_us BIGINT NOT NULL,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    category TEXT,
    severity SMALLINT NOT NULL,
    subject TEXT,
    tags TEXT[] NOT NULL,
    json BYTEA NOT NULL,
    UNIQUE (tenant, id)
);
CREATE INDEX IF NOT EXISTS crier_events_tenant_seq ON {events} (tenant, seq);
CREATE INDEX IF NOT EXISTS crier_events_tenant_time ON {events} (tenant, time_us);
CREATE INDEX IF NOT EXISTS crier_events_time ON {events} (time_us);
CREATE INDEX IF NOT EXISTS crier_events_recv ON {events} (recv_us);
CREATE INDEX IF NOT EXISTS crier_events_tenant_type ON {events} (tenant, type, seq);
CREATE TABLE IF NOT EXISTS {stats} (
    tenant TEXT NOT NULL, dim TEXT NOT NULL, key TEXT NOT NULL, n BIGINT NOT NULL,
    PRIMARY KEY (tenant, dim, key)
);
INSERT INTO {meta} (key, value) VALUES ('head', 0), ('pruned_through', 0) ON CONFLICT (key) DO NOTHING;",
        meta = n.meta,
        events = n.events,
        stats = n.stats,
    )
}

/// Creates or checks the log's tables in `schema` in one transaction, and records or checks
/// the schema version.
pub(super) async fn migrate(
    client: &mut deadpool_postgres::Object,
    names: &Names,
    schema: &str,
) -> Result<(), LogError> {
    let tx = client.transaction().await.map_err(backend)?;
    // Serialise concurrent migrations of several nodes starting together.
    tx.execute("SELECT pg_advisory_xact_lock(7400)", &[])
        .await
        .map_err(backend)?;
    tx.batch_execute(&tables(names, schema))
        .await
        .map_err(backend)?;
    tx.batch_execute(&entity_migrations(&names.entities))
        .await
        .map_err(backend)?;
    let version: Option<i64> = tx
        .query_opt(
            &format!(
                "SELECT value FROM {} WHERE key = 'schema_version'",
                names.meta
            ),
            &[],
        )
        .await
        .map_err(backend)?
        .map(|r| r.get(0));
    if schema_check(version, SCHEMA_VERSION)? {
        let sql = format!(
            "INSERT INTO {} (key, value) VALUES ('schema_version', $1)",
            names.meta
        );
        exec(&tx, &sql, &[&SCHEMA_VERSION]).await?;
    }
    tx.commit().await.map_err(backend)?;
    Ok(())
}

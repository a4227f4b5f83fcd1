//! The outbox drainer (§14.2): moves committed outbox rows into the log, exactly once each.
//!
//! While this node holds the lease it LISTENs on the table's channel and, on each
//! notification or every second, drains: in one transaction it locks the visible rows in
//! `id` order (`FOR UPDATE`), validates each row's event as the tenant's publisher with actor
//! `outbox`, appends the valid ones to the log and waits until they are durable, copies the
//! invalid ones with their error to `<table>_rejected`, and only then deletes them all and
//! commits. A crash anywhere before the commit leaves the rows in place; the next pass
//! publishes them again under the same ids (`outbox-<table>-<row id>`), which the log answers
//! as duplicates, so no event is lost or doubled.
//!
//! Rows are read as they become visible: a row of a transaction that commits after rows
//! with higher ids (a lower `bigserial` taken earlier) is published on the pass after it
//! commits, behind the rows already drained.

use std::sync::Arc;
use std::time::Duration;

use crier_core::{Principal, Role};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::sync::Notify;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use crate::config::OutboxSettings;
use crate::state::AppState;

/// Rows per transaction.
const BATCH: i64 = 500;

/// Why a drain pass stopped.
#[derive(Debug, thiserror::Error)]
enum DrainError {
    #[error("outbox database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("log: {0}")]
    Log(String),
    #[error("the outbox database connection closed")]
    Closed,
}

/// Drains while `lease` is held, until shutdown.
pub(crate) async fn run(state: AppState, outbox: OutboxSettings, lease: crier_store::Lease) {
    loop {
        if state.shutdown.is_cancelled() {
            state.outbox.set_draining(false);
            return;
        }
        if !lease.held() {
            state.outbox.set_draining(false);
            tokio::select! {
                _ = state.shutdown.cancelled() => {}
                _ = lease.changed() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        if let Err(e) = session(&state, &outbox, &lease).await {
            state.outbox.set_draining(false);
            tracing::warn!(table = %outbox.table, error = %e, "outbox drain failed; retrying");
            state.outbox.set_error(Some(e.to_string()));
            tokio::select! {
                _ = state.shutdown.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

/// Aborts the connection task when the session ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One connection: listen, then drain on each wake-up while the lease is held.
async fn session(
    state: &AppState,
    outbox: &OutboxSettings,
    lease: &crier_store::Lease,
) -> Result<(), DrainError> {
    let (mut client, mut conn) = tokio_postgres::connect(&outbox.url, NoTls).await?;
    let wake = Arc::new(Notify::new());
    let w = wake.clone();
    let conn_task = AbortOnDrop(tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = messages.next().await {
            match m {
                Ok(AsyncMessage::Notification(_)) => w.notify_one(),
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "outbox connection ended");
                    break;
                }
            }
        }
        // Wake the drainer so it notices the closed connection at once.
        w.notify_one();
    }));
    client
        .batch_execute(&format!(
            "LISTEN \"{}\"",
            crate::outbox::channel(&outbox.table)
        ))
        .await?;
    tracing::info!(table = %outbox.table, node = %state.settings.node_id, "draining the outbox");
    state.outbox.set_draining(true);
    while lease.held() && !state.shutdown.is_cancelled() {
        if conn_task.0.is_finished() || client.is_closed() {
            return Err(DrainError::Closed);
        }
        while drain_batch(state, outbox, &mut client).await? >= BATCH as usize {}
        let row = client
            .query_one(
                &format!(
                    "SELECT count(*), COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 FROM {}",
                    outbox.table
                ),
                &[],
            )
            .await?;
        let rows: i64 = row.get(0);
        let secs: f64 = row.get(1);
        state.outbox.set_lag(u64::try_from(rows).unwrap_or(0), secs);
        state.outbox.set_error(None);
        tokio::select! {
            _ = state.shutdown.cancelled() => {}
            _ = lease.changed() => {}
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
    state.outbox.set_draining(false);
    Ok(())
}

/// The publisher an outbox row publishes as.
fn publisher(tenant: &str) -> Principal {
    Principal {
        tenant: tenant.to_string(),
        role: Role::Publisher,
        subject: "outbox".to_string(),
        subscribe: None,
        publish: None,
        expires_at: None,
        key_hash: None,
    }
}

/// Validates one row's event; `Err` is the reason it is rejected.
fn prepare_row(
    state: &AppState,
    table: &str,
    id: i64,
    tenant: &str,
    event: &str,
) -> Result<crier_core::NewEvent, String> {
    crier_core::event::check_tenant(tenant).map_err(|e| e.message)?;
    let mut v: Value = crier_core::strict_json::from_str(event)
        .map_err(|e| format!("the event is not valid JSON: {e}"))?;
    let Value::Object(obj) = &mut v else {
        return Err("the event is not a JSON object".to_string());
    };
    if !obj.contains_key("id") {
        obj.insert("id".into(), Value::String(format!("outbox-{table}-{id}")));
    }
    let mut batch = crate::service::publish::prepare(state, &publisher(tenant), vec![v], false)
        .map_err(|e| e.to_string())?;
    batch
        .pop()
        .ok_or_else(|| "the event could not be prepared".to_string())
}

/// One transaction: publish (or reject) up to [`BATCH`] visible rows, then delete them.
/// Returns how many rows it took.
async fn drain_batch(
    state: &AppState,
    outbox: &OutboxSettings,
    client: &mut Client,
) -> Result<usize, DrainError> {
    let t = &outbox.table;
    let tx = client.transaction().await?;
    // An event far over the size limit is not even fetched: it is rejected by its length.
    let max = i32::try_from(state.settings.limits.max_event_bytes)
        .unwrap_or(i32::MAX)
        .saturating_mul(2);
    let rows = tx
        .query(
            &format!(
                "SELECT id, tenant, CASE WHEN octet_length(event::text) > $1 THEN NULL ELSE event::text END, \
                 octet_length(event::text) FROM {t} ORDER BY id LIMIT {BATCH} FOR UPDATE"
            ),
            &[&max],
        )
        .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut ids = Vec::with_capacity(rows.len());
    let mut valid = Vec::with_capacity(rows.len());
    let mut rejected = Vec::new();
    for row in &rows {
        let id: i64 = row.get(0);
        let tenant: String = row.get(1);
        let event: Option<String> = row.get(2);
        ids.push(id);
        let prepared = match event {
            Some(event) => prepare_row(state, t, id, &tenant, &event),
            None => Err(format!(
                "the event is {} bytes; the limit is {} (limits.max_event_bytes)",
                row.get::<_, i32>(3),
                state.settings.limits.max_event_bytes
            )),
        };
        match prepared {
            Ok(ev) => valid.push(ev),
            Err(reason) => rejected.push((id, reason)),
        }
    }
    let published = valid.len() as u64;
    if !valid.is_empty() {
        // Durable before the rows go: `append` answers once the log has committed.
        crate::service::publish::append(state, valid)
            .await
            .map_err(|e| DrainError::Log(e.to_string()))?;
        metrics::counter!("crier_publish_requests_total", "transport" => "outbox").increment(1);
    }
    for (id, reason) in &rejected {
        tracing::warn!(table = %t, row = id, error = %reason, "outbox row rejected");
        tx.execute(
            &format!(
                "INSERT INTO {t}_rejected (id, tenant, event, created_at, error) \
                 SELECT id, tenant, event, created_at, $2 FROM {t} WHERE id = $1 \
                 ON CONFLICT (id) DO NOTHING"
            ),
            &[id, reason],
        )
        .await?;
    }
    tx.execute(&format!("DELETE FROM {t} WHERE id = ANY($1)"), &[&ids])
        .await?;
    tx.commit().await?;
    state.outbox.count(published, rejected.len() as u64);
    Ok(rows.len())
}

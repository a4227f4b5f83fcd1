//! The hub's background loops: retention on a single node, and on a cluster the leader loop
//! that dispatches webhooks and prunes while this node holds the lease.

#[cfg(feature = "postgres")]
use std::time::Duration;

use crate::state::AppState;

#[cfg(feature = "postgres")]
/// While this node holds the lease it dispatches webhooks (reconciling with subscriptions
/// changed on any node) and prunes; when the lease moves, it stops.
pub(crate) async fn leader_loop(state: AppState, lease: crier_store::Lease) {
    let s = &state.settings;
    let max_age = s
        .retention_max_age
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let mut last_prune: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = lease.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        if lease.held() {
            if !state.webhooks.is_active() {
                tracing::info!(node = %s.node_id, "this node holds the lease: dispatching webhooks and pruning");
                state.webhooks.activate(&state);
            }
            state.webhooks.reconcile(&state).await;
            if last_prune.is_none_or(|t| t.elapsed() >= s.retention_interval) {
                last_prune = Some(tokio::time::Instant::now());
                if let Err(e) = state.log.prune(max_age, s.retention_max_events).await {
                    tracing::warn!(error = %e, "retention pass failed");
                }
            }
        } else if state.webhooks.is_active() {
            tracing::warn!(node = %s.node_id, "this node lost the lease: it stops dispatching");
            state.webhooks.deactivate();
        }
    }
}

/// Prunes the log by age and count every `retention_interval` (one node on its own file).
pub(crate) async fn retention_loop(state: AppState) {
    let s = &state.settings;
    let max_age = s
        .retention_max_age
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    let mut tick = tokio::time::interval(s.retention_interval);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match state.log.prune(max_age, s.retention_max_events).await {
            Ok(p) => metrics::gauge!("crier_log_pruned_through").set(p as f64),
            Err(e) => tracing::warn!(error = %e, "retention pass failed"),
        }
    }
}

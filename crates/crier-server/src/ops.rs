//! Operational endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::{require, Auth};
use crate::state::AppState;
use crier_core::Role;

/// The OpenAPI 3.1 description of the API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: the store answers and the hub is not shutting down.
pub async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({"status": "shutting_down"})),
        )
            .into_response();
    }
    // A broker outage degrades delivery to polling the log: the node stays ready, and says so.
    let broker = match state.broker_up() {
        None => "local",
        Some(true) => "ok",
        Some(false) => "unreachable (polling the log)",
    };
    let node = &state.settings.node_id;
    // Whether this node dispatches webhooks and prunes (always, for a single node).
    let leader = state.webhooks.is_active();
    match state.log.ping().await {
        Ok(()) => {
            let body = json!({"status": "ready", "store": "ok", "broker": broker, "node": node, "leader": leader});
            axum::Json(body).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            let body = json!({"status": "unavailable", "store": "unreachable", "broker": broker, "node": node});
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}

/// `GET /metrics` (admins only when credentials are configured).
pub async fn metrics(State(state): State<AppState>, Auth(p): Auth) -> Response {
    if let Err(e) = require(&p, Role::Admin) {
        return e.into_response();
    }
    metrics::gauge!("crier_log_head").set(state.log.head() as f64);
    metrics::gauge!("crier_live_cursors").set(state.hub.live_cursors() as f64);
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

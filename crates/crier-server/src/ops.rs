//! Operational endpoints: liveness, readiness, Prometheus metrics and the OpenAPI document.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::auth::{require, Auth};
use crate::state::AppState;
use crate::ApiError;
use crier_core::Role;

/// The OpenAPI 3.1 description of the API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: the store answers, its last write probe succeeded (§12.8) and the hub is
/// not shutting down.
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
    // The store answers reads but cannot write (read-only or full file system, a database
    // refusing writes): not ready, with the reason, until a probe succeeds again.
    if let Some(reason) = state.readiness.failure() {
        let body = json!({"status": "unavailable", "store": "not_writable", "reason": reason, "broker": broker, "node": node});
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    match state.log.ping().await {
        Ok(()) => {
            let mut body = json!({"status": "ready", "store": "ok", "broker": broker, "node": node, "leader": leader});
            if state.settings.outbox.is_some() {
                body["outbox"] = state.outbox.to_json();
            }
            axum::Json(body).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            let body = json!({"status": "unavailable", "store": "unreachable", "broker": broker, "node": node});
            (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
        }
    }
}

/// Whether the request carries `metrics_token` as its bearer token (compared through
/// SHA-256 digests, so the time taken says nothing about the token).
fn has_metrics_token(state: &AppState, headers: &HeaderMap) -> bool {
    use sha2::{Digest, Sha256};
    let Some(expected) = &state.settings.metrics_token else {
        return false;
    };
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    Sha256::digest(given.trim().as_bytes()) == Sha256::digest(expected.as_bytes())
}

/// `GET /metrics`: for admins when credentials are configured, or for the bearer of
/// `metrics_token`, which opens this endpoint and nothing else.
pub async fn metrics(
    State(state): State<AppState>,
    headers: HeaderMap,
    auth: Result<Auth, ApiError>,
) -> Response {
    if !has_metrics_token(&state, &headers) {
        let allowed = auth.and_then(|Auth(p)| require(&p, Role::Admin));
        if let Err(e) = allowed {
            return e.into_response();
        }
    }
    crate::metrics_catalog::collect_process();
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

/// The served OpenAPI document: [`OPENAPI`] with `info.version` set to this binary's
/// version, built once.
pub fn openapi_document() -> &'static str {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DOC.get_or_init(|| {
        let Ok(mut doc) = serde_json::from_str::<serde_json::Value>(OPENAPI) else {
            tracing::error!("the embedded OpenAPI document is not JSON; serving it unchanged");
            return OPENAPI.to_string();
        };
        if let Some(info) = doc.get_mut("info").and_then(|i| i.as_object_mut()) {
            info.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
        }
        doc.to_string()
    })
}

/// `GET /openapi.json`.
pub async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi_document(),
    )
        .into_response()
}

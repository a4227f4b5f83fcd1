//! `GET /v1/stats` (§3): counts kept by the log as it appends and prunes, live connection and
//! subscription counts. Nothing here scans the log.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::auth::{read_scope, Auth};
use crate::error::ApiError;
use crate::query::Query;
use crate::state::AppState;

fn count(list: &[(String, u64)], key: &str) -> u64 {
    list.iter().filter(|(k, _)| k == key).map(|(_, n)| n).sum()
}

/// `GET /v1/stats`: the caller's tenant; an admin may pass `tenant=<name>` or `tenant=*`.
pub async fn stats(
    State(state): State<AppState>,
    Auth(p): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref(), &["tenant"])?;
    if q.filter()? != crier_core::Filter::default() {
        return Err(ApiError::bad(
            "invalid_query",
            "stats take no filter; only `tenant`",
        ));
    }
    let scope = read_scope(&p, q.get("tenant"))?;
    let tenant = match &scope {
        crier_core::Scope::Tenant(t) => Some(t.clone()),
        crier_core::Scope::All => None,
    };
    let counts = state.log.counts(scope).await?;
    let (sse, ws) = state.conns.count(tenant.as_deref());
    let pusher = state.conns.count_pusher(tenant.as_deref());
    let (subs, dels) = state.subs.counts(tenant).await?;
    let rate = counts.last_minute as f64 / 60.0;
    let body: Value = json!({
        "head": state.log.head(),
        "events": {
            "total": counts.total,
            "last_hour": counts.last_hour,
            "by_type": counts.by_type,
            "by_category": counts.by_category,
            "by_severity": counts.by_severity,
            "by_source": counts.by_source,
        },
        "connections": {"sse": sse, "ws": ws, "pusher": pusher},
        "subscriptions": {
            "active": count(&subs, "active"),
            "paused": count(&subs, "paused"),
            "disabled": count(&subs, "disabled"),
            "expired": count(&subs, "expired"),
        },
        "deliveries": {
            "delivered": count(&dels, "delivered"),
            "failed": count(&dels, "failed"),
            "pending": count(&dels, "pending"),
            "dead": count(&dels, "dead"),
        },
        "publish_rate_per_s": (rate * 100.0).round() / 100.0,
    });
    Ok(Json(body).into_response())
}

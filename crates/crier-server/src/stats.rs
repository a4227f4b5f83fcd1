//! `GET /v1/stats` (§3): counts kept by the log as it appends and prunes, live connection and
//! subscription counts, and `series` (events received per 10 s over the last 15 minutes,
//! from counters the log keeps per bucket). Nothing here scans the log.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::auth::{read_scope, Auth};
use crate::error::ApiError;
use crate::query::Query;
use crate::state::AppState;

/// How far back `series` reaches.
const SERIES_SPAN_SECS: i64 = 15 * 60;

/// `series` of the answer: one point per 10 s bucket from [`SERIES_SPAN_SECS`] ago to the
/// current (partial) bucket, oldest first, zero where nothing was received.
fn series(buckets: &std::collections::BTreeMap<i64, u64>, now_us: i64) -> Value {
    let step = crier_core::log::SERIES_BUCKET_SECS;
    let last = crier_core::log::series_bucket(now_us);
    let points: Vec<Value> = (0..=SERIES_SPAN_SECS / step)
        .rev()
        .map(|back| last - back * step)
        .map(|start| {
            let t = time::OffsetDateTime::from_unix_timestamp(start)
                .ok()
                .and_then(|t| {
                    t.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
            json!({"t": t, "events": buckets.get(&start).copied().unwrap_or(0)})
        })
        .collect();
    json!({"interval_s": step, "points": points})
}

fn count(list: &[(String, u64)], key: &str) -> u64 {
    list.iter().filter(|(k, _)| k == key).map(|(_, n)| n).sum()
}

/// `GET /v1/stats`: the caller's tenant; an admin may pass `tenant=<name>` or `tenant=*`.
pub async fn stats(
    State(state): State<AppState>,
    Auth(p): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    // §12.5: counts by type, category and source would tell a narrowed credential about
    // events it may not read.
    if p.subscribe.is_some() && p.role != crier_core::Role::Admin {
        return Err(ApiError::forbidden(
            "this credential's `subscribe` patterns narrow what it may read; stats count every event of the tenant and need a credential without them (or an admin)",
        ));
    }
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
    let (subs, dels) = state.subs.counts(tenant.as_deref()).await?;
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
        "series": series(&counts.series, crier_core::event::now_us()),
    });
    Ok(Json(body).into_response())
}

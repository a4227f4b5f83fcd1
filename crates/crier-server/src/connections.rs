//! `GET /v1/connections`: the HTTP face of the connection registry ([`crate::monitor`]), so
//! the transports that register their connections never import an HTTP handler module.

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use crier_core::{Role, Scope};
use serde_json::{json, Value};

use crate::auth::{read_scope, require, Auth};
use crate::error::ApiError;
use crate::query::Query;
use crate::state::{AppState, Transport};

/// Connections per page by default.
const DEFAULT_LIMIT: u64 = 100;
/// Most connections per page.
pub const MAX_LIMIT: u64 = 1000;
/// Most presence channels in one answer.
pub const MAX_PRESENCE: usize = 1000;

/// The transports named by `transport=` (comma-separated; all when absent).
fn transports(q: &Query) -> Result<Vec<Transport>, ApiError> {
    let Some(list) = q.get("transport") else {
        return Ok(Transport::ALL.to_vec());
    };
    let mut out = Vec::new();
    for name in list.split(',').map(str::trim) {
        let t = Transport::parse(name).ok_or_else(|| {
            ApiError::bad(
                "invalid_query",
                format!(
                    "`transport` takes sse, ws, graphql or pusher (comma-separated), not {name:?}"
                ),
            )
        })?;
        if !out.contains(&t) {
            out.push(t);
        }
    }
    Ok(out)
}

/// `GET /v1/connections`: the open connections of the caller's tenant on this node (an
/// admin may pass `tenant=<name>` or `tenant=*`), `transport=` to narrow, pages of `limit`
/// (default 100, at most 1000) after the id `after`; and the presence channels with their
/// members.
pub async fn list(
    State(state): State<AppState>,
    Auth(p): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    require(&p, Role::Admin)?;
    let q = Query::parse_only(raw.as_deref(), &["tenant", "transport", "limit", "after"])?;
    let tenant = match read_scope(&p, q.get("tenant"))? {
        Scope::Tenant(t) => Some(t),
        Scope::All => None,
    };
    let transports = transports(&q)?;
    let limit = q.u64("limit")?.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(ApiError::bad(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let after = q.u64("after")?.unwrap_or(0);
    let head = state.hub.head();
    let page = state.conns.page(
        tenant.as_deref(),
        &transports,
        after,
        usize::try_from(limit).unwrap_or(usize::MAX),
    );
    let next_after = page.more.then(|| page.conns.last().map(|c| c.id)).flatten();
    let conns: Vec<Value> = page.conns.iter().map(|c| c.to_json(head)).collect();
    let (presence, truncated) = if transports.contains(&Transport::Pusher) {
        state.pusher.presence(tenant.as_deref(), MAX_PRESENCE)
    } else {
        (Vec::new(), false)
    };
    Ok(Json(json!({
        "head": head,
        "total": page.total,
        "connections": conns,
        "next_after": next_after,
        "presence": presence,
        "presence_truncated": truncated,
    }))
    .into_response())
}

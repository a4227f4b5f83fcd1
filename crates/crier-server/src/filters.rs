//! `/v1/filters`: saved named filters per tenant, and `filter=NAME` wherever a reader gives a
//! filter.
//!
//! A saved filter is a §2 filter under a short name (`[a-z0-9][a-z0-9._-]{0,63}`), with an
//! optional description, its creator and its times. It is validated exactly as a stream's
//! filter is (the filter language, `max_filter_patterns`, `max_filter_bytes`) before it is
//! stored, and a tenant holds at most `limits.max_filters_per_tenant` of them.
//!
//! Roles: every credential of the tenant may list, read and save filters; a filter may be
//! replaced or deleted by whoever created it, or by a publisher or admin of the tenant.
//! Another tenant's filters are `404`. A filter is stored as written; whoever uses it still
//! receives only what their own credential may read (its `subscribe` patterns narrow it).
//!
//! Resolving a name where a reader uses it is [`crate::service::filters`].
//!
//! Use: `?filter=NAME` on `GET /v1/stream` and `GET /v1/events`, and `"filter": "NAME"` (a
//! string instead of an object) in `POST /v1/replays` and the WebSocket `subscribe`,
//! `history` and `replay` ops. The name is resolved once, when the reader opens: a later
//! change to the saved filter does not reach readers already open. An unknown name is `404
//! unknown_filter` (an `error` op on the WebSocket). A query that names a saved filter and
//! also gives filter parameters (`type`, `severity`, …) is refused with `400
//! conflicting_filter` rather than guessing how to combine them.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use crier_core::event::{format_time, now_us, time_from_us};
use crier_core::{Filter, Principal, Role};
use crier_store::filters::{Created, SavedFilter};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::service::filters::{check_name, not_found};
use crate::state::AppState;

/// The longest description.
pub const MAX_DESCRIPTION: usize = 256;

fn check_description(d: Option<String>) -> Result<Option<String>, ApiError> {
    let d = d.filter(|d| !d.trim().is_empty());
    if let Some(d) = &d {
        if d.chars().count() > MAX_DESCRIPTION || d.chars().any(char::is_control) {
            return Err(ApiError::bad(
                "invalid_filter",
                format!(
                    "`description` has at most {MAX_DESCRIPTION} characters and no control characters"
                ),
            ));
        }
    }
    Ok(d)
}

/// Parses and bounds a filter exactly as a stream's filter is; returns its stored text.
fn filter_text(state: &AppState, v: Option<&Value>) -> Result<String, ApiError> {
    if matches!(v, Some(Value::String(_))) {
        return Err(ApiError::bad(
            "invalid_filter",
            "a saved filter's `filter` is a filter object, not the name of another saved filter",
        ));
    }
    let f = Filter::from_json(v.unwrap_or(&Value::Null))?;
    crate::reader_limits::check_filter(&state.settings.limits, &f)?;
    Ok(f.to_json().to_string())
}

fn time(us: i64) -> Value {
    time_from_us(us)
        .map(format_time)
        .map_or(Value::Null, Value::from)
}

/// The public form of a saved filter.
pub fn filter_json(f: &SavedFilter) -> Value {
    json!({
        "name": f.name,
        "filter": serde_json::from_str::<Value>(&f.filter).unwrap_or_else(|_| json!({})),
        "description": f.description,
        "created_by": f.created_by,
        "created_at": time(f.created_us),
        "updated_at": time(f.updated_us),
    })
}

/// Parses a JSON body; a body sent as anything but `application/json` is 415 (§12.7: a
/// browser's form or `text/plain` post cannot change saved filters).
fn parse_body<T: serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    if let Some(ct) = headers.get(header::CONTENT_TYPE) {
        let mime = crate::transport::essence(ct.to_str().unwrap_or(""));
        if mime != "application/json" {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("content type {mime:?} is not accepted; send application/json"),
            ));
        }
    }
    crier_core::strict_json::parse(body).map_err(|e| {
        ApiError::bad(
            "invalid_json",
            format!("the body is not a valid saved filter: {e}"),
        )
    })
}

fn may_change(p: &Principal, f: &SavedFilter) -> Result<(), ApiError> {
    if f.created_by == p.subject || p.has(Role::Publisher) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "the saved filter {:?} was created by {:?}; only its creator, a publisher or an \
             admin may change or delete it",
            f.name, f.created_by
        )))
    }
}

/// `GET /v1/filters`.
pub async fn list(State(state): State<AppState>, Auth(p): Auth) -> Result<Response, ApiError> {
    let list = state.filters.list(p.tenant.clone()).await?;
    Ok(Json(json!({"filters": list.iter().map(filter_json).collect::<Vec<_>>()})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInput {
    name: String,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    description: Option<String>,
}

/// `POST /v1/filters`.
pub async fn create(
    State(state): State<AppState>,
    Auth(p): Auth,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let input: CreateInput = parse_body(&headers, &body)?;
    check_name(&input.name)?;
    let filter = filter_text(&state, input.filter.as_ref())?;
    let description = check_description(input.description)?;
    let now = now_us();
    let saved = SavedFilter {
        tenant: p.tenant.clone(),
        name: input.name.clone(),
        filter,
        description,
        created_by: p.subject.clone(),
        created_us: now,
        updated_us: now,
    };
    let max = state.settings.limits.max_filters_per_tenant;
    match state.filters.create(saved, max).await? {
        Created::Stored(f) => Ok((StatusCode::CREATED, Json(filter_json(&f))).into_response()),
        Created::Exists => Err(ApiError::new(
            StatusCode::CONFLICT,
            "filter_exists",
            format!(
                "this tenant already has a saved filter {:?}; PUT /v1/filters/{} replaces it",
                input.name, input.name
            ),
        )),
        Created::Full => {
            metrics::counter!("crier_limit_hits_total", "limit" => "max_filters_per_tenant")
                .increment(1);
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "too_many_filters",
                format!(
                    "this tenant has {max} saved filters, the most allowed \
                     (limits.max_filters_per_tenant); delete one first"
                ),
            ))
        }
    }
}

async fn owned(state: &AppState, p: &Principal, name: &str) -> Result<SavedFilter, ApiError> {
    check_name(name)?;
    state
        .filters
        .get(p.tenant.clone(), name.to_string())
        .await?
        .ok_or_else(|| not_found(name).into())
}

/// `GET /v1/filters/{name}`.
pub async fn get(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(filter_json(&owned(&state, &p, &name).await?)).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutInput {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    description: Option<String>,
}

/// `PUT /v1/filters/{name}`: replaces the definition and description of an existing filter.
pub async fn put(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    check_name(&name)?;
    let input: PutInput = parse_body(&headers, &body)?;
    if input.name.as_ref().is_some_and(|n| *n != name) {
        return Err(ApiError::bad(
            "invalid_filter",
            "`name` in the body must be the name in the path (a saved filter cannot be renamed; \
             save it under the new name and delete the old one)",
        ));
    }
    let filter = filter_text(&state, input.filter.as_ref())?;
    let description = check_description(input.description)?;
    let current = owned(&state, &p, &name).await?;
    may_change(&p, &current)?;
    let f = state
        .filters
        .update(
            p.tenant.clone(),
            name.clone(),
            filter,
            description,
            now_us(),
        )
        .await?
        .ok_or_else(|| not_found(&name))?;
    Ok(Json(filter_json(&f)).into_response())
}

/// `DELETE /v1/filters/{name}`.
pub async fn delete(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let current = owned(&state, &p, &name).await?;
    may_change(&p, &current)?;
    if !state.filters.delete(p.tenant.clone(), name.clone()).await? {
        return Err(not_found(&name).into());
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

//! `POST /v1/events` (publish), `GET /v1/events` (history) and `GET /v1/events/{id}`.
//!
//! This file is the HTTP face of two services: it reads the publish body (content type,
//! size, JSON, NDJSON or CloudEvents) and the history query, and writes the answers. The
//! rules are [`crate::service::publish`] (a batch is all-or-nothing and answered only after
//! the log acknowledged durability) and [`crate::service::history`] (answers assembled from
//! the stored event bytes without re-encoding them).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use crier_core::log::Order;
use crier_core::{NewEvent, Principal, ReadQuery, Role};
use serde_json::Value;

use crate::auth::{narrow, read_scope, require, Auth};
use crate::error::ApiError;
use crate::query::Query;
use crate::service::history::{self, json_array, MAX_PAGE};
use crate::service::publish::{self, result_json};
use crate::state::AppState;

/// Body formats of a publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Json,
    Ndjson,
    CloudEvent,
    CloudEventBatch,
}

fn format_of(headers: &HeaderMap) -> Result<Format, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = crate::transport::essence(ct);
    match mime.as_str() {
        "application/json" | "" => Ok(Format::Json),
        "application/x-ndjson" | "application/ndjson" | "application/jsonl" => Ok(Format::Ndjson),
        "application/cloudevents+json" => Ok(Format::CloudEvent),
        "application/cloudevents-batch+json" => Ok(Format::CloudEventBatch),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "content type {other:?} is not accepted; send application/json, application/x-ndjson, \
                 application/cloudevents+json or application/cloudevents-batch+json"
            ),
        )),
    }
}

fn json_error(e: serde_json::Error) -> ApiError {
    ApiError::bad("invalid_json", format!("the body is not valid JSON: {e}"))
}

/// Splits a body into one JSON value per event, in input order.
fn split_body(format: Format, body: &[u8]) -> Result<Vec<Value>, ApiError> {
    match format {
        Format::Ndjson => {
            let mut out = Vec::new();
            for (i, line) in body.split(|b| *b == b'\n').enumerate() {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                out.push(crier_core::strict_json::from_slice(line).map_err(|e| {
                    ApiError::bad(
                        "invalid_json",
                        format!("line {}: not valid JSON: {e}", i + 1),
                    )
                })?);
            }
            Ok(out)
        }
        Format::Json | Format::CloudEventBatch | Format::CloudEvent => {
            let v: Value = crier_core::strict_json::from_slice(body).map_err(json_error)?;
            match v {
                Value::Array(items) if format != Format::CloudEvent => Ok(items),
                Value::Object(_) if format != Format::CloudEventBatch => Ok(vec![v]),
                _ => Err(ApiError::bad(
                    "invalid_json",
                    match format {
                        Format::CloudEventBatch => "a CloudEvents batch is a JSON array",
                        Format::CloudEvent => "a structured CloudEvent is a JSON object",
                        _ => "the body must be an event object or an array of events",
                    },
                )),
            }
        }
    }
}

/// `POST /v1/events`.
pub async fn publish(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(&principal, Role::Publisher)?;
    let format = format_of(&headers)?;
    let max = state.settings.limits.max_body_bytes;
    let too_big = || {
        metrics::counter!("crier_limit_hits_total", "limit" => "max_body_bytes").increment(1);
        ApiError::too_large(
            "body_too_large",
            format!("the request body is larger than {max} bytes (limits.max_body_bytes)"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_big());
    }
    let bytes: Bytes = axum::body::to_bytes(body, max)
        .await
        .map_err(|_| too_big())?;
    let items = split_body(format, &bytes)?;
    let cloudevent = matches!(format, Format::CloudEvent | Format::CloudEventBatch);
    let batch = publish::prepare(&state, &principal, items, cloudevent)?;
    publish::admit(&state, &principal.tenant, batch.len())?;
    let results = publish::append(&state, batch).await?;
    let events: Vec<Value> = results.iter().map(result_json).collect();
    metrics::counter!("crier_publish_requests_total", "transport" => "http").increment(1);
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({"events": events})),
    )
        .into_response())
}

/// Decodes and validates a publish body exactly as `POST /v1/events` does for `principal`
/// (content type, body splitting, every event's rules), without storing it: the entry point
/// of the publish-body fuzz targets (`fuzz/`).
pub fn decode_publish(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<NewEvent>, ApiError> {
    let format = format_of(headers)?;
    let items = split_body(format, body)?;
    let cloudevent = matches!(format, Format::CloudEvent | Format::CloudEventBatch);
    Ok(publish::prepare(state, principal, items, cloudevent)?)
}

fn json_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// `GET /v1/events`.
pub async fn history(
    State(state): State<AppState>,
    Auth(principal): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(
        raw.as_deref(),
        &[
            "after", "before", "since", "until", "limit", "order", "tenant", "filter",
        ],
    )?;
    let (scope, filter) = crate::service::filters::from_query(&state, &principal, &q).await?;
    crate::reader_limits::check_filter(&state.settings.limits, &filter)?;
    let filter = Arc::new(narrow(&principal, filter));
    let limit = q.u64("limit")?.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_PAGE}"),
        ));
    }
    let order = match q.get("order") {
        None | Some("asc") => Order::Asc,
        Some("desc") => Order::Desc,
        Some(o) => {
            return Err(ApiError::bad(
                "invalid_query",
                format!("`order` is \"asc\" or \"desc\", not {o:?}"),
            ))
        }
    };
    let mut query = ReadQuery::after(scope, filter, q.u64("after")?.unwrap_or(0), limit as usize);
    query.before = q.u64("before")?;
    query.since_us = q.time("since")?;
    query.until_us = q.time("until")?;
    query.order = order;
    let head = state.log.head();
    let (events, next) = history::read(&state, query).await?;
    let mut body = b"{\"events\":".to_vec();
    body.extend_from_slice(&json_array(&events));
    let next = next.map_or("null".to_string(), |s| s.to_string());
    let tail = match order {
        Order::Asc => format!(",\"next_after\":{next},\"head\":{head}}}"),
        Order::Desc => format!(",\"next_after\":null,\"next_before\":{next},\"head\":{head}}}"),
    };
    body.extend_from_slice(tail.as_bytes());
    Ok(json_response(body))
}

/// `GET /v1/events/{id}`.
pub async fn get_event(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse(raw.as_deref(), &["tenant"])?;
    let tenant = match read_scope(&principal, q.get("tenant"))? {
        crier_core::Scope::Tenant(t) => t,
        crier_core::Scope::All => {
            return Err(ApiError::bad(
                "invalid_query",
                "name one tenant to fetch an event by id",
            ))
        }
    };
    let not_found = || ApiError::not_found(format!("no event with id {id:?}"));
    let ev = state.log.get(&tenant, &id).await?.ok_or_else(not_found)?;
    if !narrow(&principal, crier_core::Filter::default()).matches(&ev) {
        return Err(not_found());
    }
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from(ev.json.clone()),
    )
        .into_response())
}

//! Entities and links over HTTP (§11): `/v1/entities/...` and `/v1/links/...`.
//!
//! Every change goes through [`crate::service::entities::mutate`], which the GraphQL
//! mutations use too, so both paths apply the same rules, limits and metrics. Answers carry
//! the entity's version as an `ETag` and the seqs of the change's events in `Crier-Seq`
//! (comma-separated, empty when nothing changed), so a client can read its own write from a
//! stream (`after` = first seq − 1).

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use crier_core::entity::{
    Applied, EntityKey, LinkKey, LinkQuery, Mutation, Outcome, Precondition, MAX_LIST,
};
use crier_core::{Principal, Role};
use serde_json::{json, Map, Value};

use crate::auth::{require, Auth};
use crate::error::ApiError;
use crate::query::Query;
use crate::service::entities::{may_read_kind, mutate};
use crate::state::AppState;

/// The answer header listing the seqs of a change's events.
pub const SEQ_HEADER: &str = "crier-seq";

fn may_read_links(p: &Principal) -> bool {
    p.subscribe.as_ref().is_none_or(|pats| {
        ["link.created", "link.deleted"]
            .iter()
            .any(|t| pats.iter().any(|pat| pat.matches(t)))
    })
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Result<Option<&str>, ApiError> {
    headers
        .get(&name)
        .map(|v| {
            v.to_str().map(str::trim).map_err(|_| {
                ApiError::bad("invalid_header", format!("`{name}` is not readable text"))
            })
        })
        .transpose()
}

/// Parses one entity tag: `3`, `"3"` or `W/"3"`.
fn version_tag(field: &str, v: &str) -> Result<i64, ApiError> {
    let t = v.strip_prefix("W/").unwrap_or(v);
    let t = t
        .strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or(t);
    t.parse::<i64>().ok().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::bad(
            "invalid_header",
            format!("`{field}` is {v:?}; give an entity version (e.g. \"3\") or *"),
        )
    })
}

/// The precondition of a change from `If-Match` / `If-None-Match`.
fn precondition(headers: &HeaderMap, put: bool) -> Result<Precondition, ApiError> {
    let if_match = header_text(headers, header::IF_MATCH)?;
    let if_none = header_text(headers, header::IF_NONE_MATCH)?;
    match (if_match, if_none) {
        (Some(_), Some(_)) => Err(ApiError::bad(
            "invalid_header",
            "give If-Match or If-None-Match, not both",
        )),
        (Some("*"), None) => Ok(Precondition::Exists),
        (Some(v), None) => Ok(Precondition::Version(version_tag("If-Match", v)?)),
        (None, Some("*")) if put => Ok(Precondition::Absent),
        (None, Some(v)) => Err(ApiError::bad(
            "invalid_header",
            format!("If-None-Match {v:?} is not supported here; only `If-None-Match: *` on PUT (create only)"),
        )),
        (None, None) => Ok(Precondition::None),
    }
}

/// Reads a JSON object body within `max_body_bytes`.
async fn json_object(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    optional: bool,
) -> Result<Option<Map<String, Value>>, ApiError> {
    if let Some(ct) = header_text(headers, header::CONTENT_TYPE)? {
        let mime = crate::transport::essence(ct);
        let ok =
            mime == "application/json" || mime == "application/merge-patch+json" || mime.is_empty();
        if !ok {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("content type {mime:?} is not accepted; send application/json (or application/merge-patch+json)"),
            ));
        }
    }
    let max = state.settings.limits.max_body_bytes;
    let bytes: Bytes = axum::body::to_bytes(body, max).await.map_err(|_| {
        metrics::counter!("crier_limit_hits_total", "limit" => "max_body_bytes").increment(1);
        ApiError::too_large(
            "body_too_large",
            format!("the request body is larger than {max} bytes (limits.max_body_bytes)"),
        )
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if optional {
            return Ok(None);
        }
        return Err(ApiError::bad(
            "invalid_json",
            "the body must be a JSON object",
        ));
    }
    match crier_core::strict_json::from_slice(&bytes) {
        Ok(Value::Object(m)) => Ok(Some(m)),
        Ok(_) => Err(ApiError::bad(
            "invalid_json",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad(
            "invalid_json",
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

fn with_seqs(mut res: Response, seqs: &[u64]) -> Response {
    let list = seqs
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    if let Ok(v) = HeaderValue::from_str(&list) {
        res.headers_mut().insert(SEQ_HEADER, v);
    }
    res
}

fn etag(version: i64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{version}\"")).unwrap_or(HeaderValue::from_static("\"0\""))
}

/// The HTTP answer of an applied mutation. A writer whose `subscribe` patterns do not cover
/// the kind (`readable` false) learns the version but not the stored value, which may hold
/// what others wrote (§12.5).
fn answer(applied: Applied, readable: bool) -> Response {
    let res = match &applied.outcome {
        Outcome::Entity { row, created } => {
            let status = if *created { StatusCode::CREATED } else { StatusCode::OK };
            let mut body = row.to_json();
            if !readable {
                if let Some(o) = body.as_object_mut() {
                    o.remove("value");
                }
            }
            let mut res = (status, axum::Json(body)).into_response();
            res.headers_mut().insert(header::ETAG, etag(row.version));
            if *created {
                let loc = format!("/v1/entities/{}/{}", row.key.kind, row.key.id);
                if let Ok(v) = HeaderValue::from_str(&loc) {
                    res.headers_mut().insert(header::LOCATION, v);
                }
            }
            res
        }
        Outcome::Deleted { key, version, links } => axum::Json(json!({
            "kind": key.kind, "id": key.id, "version": version, "deleted": true, "links_deleted": links,
        }))
        .into_response(),
        Outcome::Linked { row, created } => {
            let status = if *created { StatusCode::CREATED } else { StatusCode::OK };
            (status, axum::Json(row.to_json())).into_response()
        }
        Outcome::Unlinked(key) => axum::Json(json!({
            "type": key.kind, "source": key.source.path(), "target": key.target.path(), "deleted": true,
        }))
        .into_response(),
    };
    with_seqs(res, &applied.seqs)
}

/// `PUT /v1/entities/{kind}/{id}` (create or replace) and `PATCH` (JSON Merge Patch): the
/// role, the key, the precondition (`If-None-Match: *` on PUT only) and a JSON object body.
pub async fn write(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((kind, id)): Path<(String, String)>,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(&p, Role::Publisher)?;
    let key = EntityKey::new(&kind, &id)?;
    let put = method == Method::PUT;
    let cond = precondition(&headers, put)?;
    let object = json_object(&state, &headers, body, false)
        .await?
        .unwrap_or_default();
    let readable = may_read_kind(&p, &key.kind);
    let m = if put {
        Mutation::Put {
            key,
            value: object,
            cond,
        }
    } else {
        Mutation::Patch {
            key,
            patch: object,
            cond,
        }
    };
    let applied = mutate(&state, &p, m).await?;
    Ok(answer(applied, readable))
}

/// `DELETE /v1/entities/{kind}/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((kind, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    require(&p, Role::Publisher)?;
    let key = EntityKey::new(&kind, &id)?;
    let cond = precondition(&headers, false)?;
    let applied = mutate(&state, &p, Mutation::Delete { key, cond }).await?;
    Ok(answer(applied, true))
}

/// `GET /v1/entities/{kind}/{id}` (`If-None-Match: "<version>"` answers 304 when current).
pub async fn get(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path((kind, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    Query::parse(raw.as_deref(), &[])?;
    let key = EntityKey::new(&kind, &id)?;
    if !may_read_kind(&p, &key.kind) {
        return Err(ApiError::not_found(format!("no entity {}", key.path())));
    }
    let row = state
        .entities
        .entity(&p.tenant, &key)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no entity {}", key.path())))?;
    let tag = etag(row.version);
    if let Some(v) = header_text(&headers, header::IF_NONE_MATCH)? {
        if v.split(',').any(|t| {
            t.trim() == "*" || version_tag("If-None-Match", t.trim()).ok() == Some(row.version)
        }) {
            let mut res = StatusCode::NOT_MODIFIED.into_response();
            res.headers_mut().insert(header::ETAG, tag);
            return Ok(res);
        }
    }
    let mut res = axum::Json(row.to_json()).into_response();
    res.headers_mut().insert(header::ETAG, tag);
    Ok(res)
}

fn page_limit(q: &Query) -> Result<usize, ApiError> {
    let limit = q.u64("limit")?.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST as u64 {
        return Err(ApiError::bad(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_LIST}"),
        ));
    }
    Ok(usize::try_from(limit).unwrap_or(MAX_LIST))
}

/// `GET /v1/entities/{kind}?after=&limit=`: live entities by id.
pub async fn list(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(kind): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse_only(raw.as_deref(), &["after", "limit"])?;
    crier_core::entity::check_kind("kind", &kind)?;
    let limit = page_limit(&q)?;
    let after = q.get("after");
    if let Some(a) = after {
        crier_core::entity::check_id("after", a)?;
    }
    if !may_read_kind(&p, &kind) {
        return Ok(axum::Json(json!({"entities": [], "next_after": null})).into_response());
    }
    let rows = state
        .entities
        .entities(&p.tenant, &kind, after, limit)
        .await?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.key.id.clone()))
        .flatten();
    let items: Vec<Value> = rows.iter().map(|r| r.to_json()).collect();
    Ok(axum::Json(json!({"entities": items, "next_after": next})).into_response())
}

fn link_key(parts: (String, String, String, String, String)) -> Result<LinkKey, ApiError> {
    let (kind, sk, si, tk, ti) = parts;
    let source = EntityKey::new(&sk, &si).map_err(|e| e.at("source"))?;
    let target = EntityKey::new(&tk, &ti).map_err(|e| e.at("target"))?;
    Ok(LinkKey::new(&kind, source, target)?)
}

/// `PUT /v1/links/{type}/{source_kind}/{source_id}/{target_kind}/{target_id}`.
pub async fn link(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(parts): Path<(String, String, String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require(&p, Role::Publisher)?;
    let key = link_key(parts)?;
    let metadata = json_object(&state, &headers, body, true)
        .await?
        .unwrap_or_default();
    let applied = mutate(
        &state,
        &p,
        Mutation::Link {
            key,
            metadata: Value::Object(metadata),
        },
    )
    .await?;
    Ok(answer(applied, true))
}

/// `DELETE` on a link's path.
pub async fn unlink(
    State(state): State<AppState>,
    Auth(p): Auth,
    Path(parts): Path<(String, String, String, String, String)>,
) -> Result<Response, ApiError> {
    require(&p, Role::Publisher)?;
    let key = link_key(parts)?;
    let applied = mutate(&state, &p, Mutation::Unlink { key }).await?;
    Ok(answer(applied, true))
}

/// `GET /v1/links?type=&source=kind/id&target=kind/id&after=&limit=`.
pub async fn links(
    State(state): State<AppState>,
    Auth(p): Auth,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q = Query::parse_only(
        raw.as_deref(),
        &["type", "source", "target", "after", "limit"],
    )?;
    let limit = page_limit(&q)?;
    let kind = q.get("type").map(str::to_string);
    if let Some(k) = &kind {
        crier_core::entity::check_kind("type", k)?;
    }
    let source = q
        .get("source")
        .map(|s| EntityKey::parse("source", s))
        .transpose()?;
    let target = q
        .get("target")
        .map(|s| EntityKey::parse("target", s))
        .transpose()?;
    let after = q.get("after").map(LinkKey::parse_cursor).transpose()?;
    if !may_read_links(&p) {
        return Ok(axum::Json(json!({"links": [], "next_after": null})).into_response());
    }
    let rows = state
        .entities
        .links(
            &p.tenant,
            LinkQuery {
                kind,
                source,
                target,
                after,
                limit,
            },
        )
        .await?;
    let next = (rows.len() == limit)
        .then(|| rows.last().map(|r| r.key.cursor()))
        .flatten();
    let items: Vec<Value> = rows.iter().map(|r| r.to_json()).collect();
    Ok(axum::Json(json!({"links": items, "next_after": next})).into_response())
}

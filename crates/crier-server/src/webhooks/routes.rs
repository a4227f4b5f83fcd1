//! `/v1/subscriptions`: durable subscriptions with webhooks (§3). Publishers and admins
//! manage their tenant's subscriptions; another tenant's are `404`.

use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crier_core::event::{format_time, now_us, parse_time_us, time_from_us};
use crier_core::webhook::{
    Delivery, DeliveryStatus, WebhookError, WebhookPatch, WebhookStatus, WebhookSub,
};
use crier_core::{Filter, Principal, Role};
use serde::Deserialize;
use serde_json::{json, Value};

use super::signing::{new_secret, secret_key};
use super::ssrf::check_url;
use crate::auth::{require, Auth};
use crate::error::ApiError;
use crate::state::AppState;

fn time(us: i64) -> Value {
    time_from_us(us)
        .map(format_time)
        .map_or(Value::Null, Value::from)
}

/// The public form of a subscription (never its secret). The filter shows as the client
/// wrote it; the narrowing of the credential that made it (§12.5) as `narrowed_to`.
pub fn sub_json(s: &WebhookSub) -> Value {
    let mut filter = serde_json::from_str::<Value>(&s.filter).unwrap_or(Value::Null);
    let narrowed = match &mut filter {
        Value::Object(m) => m.remove(crier_core::filter::NARROWED_TO),
        _ => None,
    };
    json!({
        "id": s.id,
        "name": s.name,
        "filter": filter,
        "narrowed_to": narrowed.unwrap_or(Value::Null),
        "webhook": {"url": s.url},
        "cursor": s.cursor,
        "status": s.status,
        "paused": s.status == WebhookStatus::Paused,
        "note": s.note,
        "created_at": time(s.created_us),
        "expires_at": s.expires_us.map_or(Value::Null, time),
    })
}

fn delivery_json(d: &Delivery) -> Value {
    json!({
        "seq": d.seq,
        "event_id": d.event_id,
        "status": d.status,
        "attempts": d.attempts,
        "last_status_code": d.last_status_code,
        "last_error": d.last_error,
        "next_attempt_at": d.next_attempt_us.map_or(Value::Null, time),
        "updated_at": time(d.updated_us),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookInput {
    url: String,
    #[serde(default)]
    secret: Option<String>,
}

/// The body of `POST /v1/subscriptions`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateInput {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    filter: Option<Value>,
    webhook: WebhookInput,
    #[serde(default)]
    after: Option<u64>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    paused: Option<bool>,
}

fn parse_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    crier_core::strict_json::parse(body).map_err(|e| {
        ApiError::bad(
            "invalid_json",
            format!("the body is not a valid subscription: {e}"),
        )
    })
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::bad(
            "invalid_subscription",
            "`name` has at most 128 characters and no control characters",
        ));
    }
    Ok(())
}

fn outside() -> ApiError {
    ApiError::forbidden(
        "the filter's `type` patterns lie wholly outside this credential's `subscribe` patterns",
    )
}

/// The stored text of a new filter: checked, and narrowed to what `p` may read (§12.5), so
/// that deliveries honour the creator's `subscribe` patterns for the subscription's life.
fn filter_text(state: &AppState, p: &Principal, v: Option<&Value>) -> Result<String, ApiError> {
    let f = Filter::from_json(v.unwrap_or(&Value::Null))?;
    crate::reader_limits::check_filter(&state.settings.limits, &f)?;
    let f = f.narrowed(p.subscribe.as_deref()).ok_or_else(outside)?;
    Ok(f.to_stored_json().to_string())
}

/// A subscription's stored filter narrowed again for `p`, when `p` is narrowed and changes
/// it: a narrowed credential never points a wider subscription at a new URL.
fn renarrow(p: &Principal, stored: &str) -> Result<Option<String>, ApiError> {
    if p.subscribe.is_none() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(stored)
        .map_err(|e| ApiError::bad("invalid_subscription", format!("stored filter: {e}")))?;
    let f = Filter::from_stored_json(&v)?;
    let n = f
        .clone()
        .narrowed(p.subscribe.as_deref())
        .ok_or_else(outside)?;
    Ok((n != f).then(|| n.to_stored_json().to_string()))
}

fn expiry(v: Option<&str>) -> Result<Option<i64>, ApiError> {
    v.map(|t| {
        parse_time_us(t).ok_or_else(|| {
            ApiError::bad(
                "invalid_subscription",
                format!("`expires_at` {t:?} is not an RFC 3339 time"),
            )
        })
    })
    .transpose()
}

fn not_found(id: &str) -> ApiError {
    ApiError::not_found(format!("no subscription {id:?}"))
}

/// The hub and the principal of a request that manages subscriptions: a publisher or an
/// admin, refused before anything else is read.
pub struct Manager {
    state: AppState,
    p: Principal,
}

impl FromRequestParts<AppState> for Manager {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Auth(p) = Auth::from_request_parts(parts, state).await?;
        require(&p, Role::Publisher)?;
        Ok(Manager {
            state: state.clone(),
            p,
        })
    }
}

/// A subscription request's JSON body, parsed strictly into `T`.
pub struct SubBody<T>(T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for SubBody<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let body = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(IntoResponse::into_response)?;
        parse_body(&body)
            .map(SubBody)
            .map_err(IntoResponse::into_response)
    }
}

/// `POST /v1/subscriptions`.
pub async fn create(
    Manager { state, p }: Manager,
    SubBody(input): SubBody<CreateInput>,
) -> Result<Response, ApiError> {
    let name = input.name.unwrap_or_default();
    check_name(&name)?;
    let filter = filter_text(&state, &p, input.filter.as_ref())?;
    let secret = match input.webhook.secret {
        Some(s) => {
            secret_key(&s)?;
            s
        }
        None => new_secret(),
    };
    let expires_us = expiry(input.expires_at.as_deref())?;
    let url = check_url(&input.webhook.url, state.settings.webhooks.allow_private).await?;
    let limit = state.settings.limits.max_subscriptions_per_tenant;
    let head = state.log.head();
    let mut idb = [0u8; 8];
    rand::Rng::fill(&mut rand::rng(), &mut idb);
    let sub = WebhookSub {
        id: format!(
            "sub_{}",
            idb.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
        tenant: p.tenant.clone(),
        name,
        filter,
        url: url.to_string(),
        secret: secret.clone(),
        cursor: input.after.unwrap_or(head).min(head),
        status: if input.paused == Some(true) {
            WebhookStatus::Paused
        } else {
            WebhookStatus::Active
        },
        expires_us,
        created_us: now_us(),
        note: None,
    };
    // The store counts and inserts in one step, on every node that shares it.
    match state.subs.create(&sub, Some(limit)).await {
        Ok(()) => {}
        Err(WebhookError::TooMany { max }) => {
            metrics::counter!("crier_limit_hits_total", "limit" => "max_subscriptions_per_tenant")
                .increment(1);
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "too_many_subscriptions",
                format!(
                    "this tenant has {max} webhook subscriptions already (limits.max_subscriptions_per_tenant); delete one first"
                ),
            ));
        }
        Err(WebhookError::Log(e)) => return Err(e.into()),
    }
    let mut v = sub_json(&sub);
    state.webhooks.restart(&state, sub);
    v["webhook"]["secret"] = Value::from(secret);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `GET /v1/subscriptions`.
pub async fn list(Manager { state, p }: Manager) -> Result<Response, ApiError> {
    let subs = state.subs.list(Some(&p.tenant)).await?;
    Ok(
        Json(json!({"subscriptions": subs.iter().map(sub_json).collect::<Vec<_>>()}))
            .into_response(),
    )
}

async fn owned(state: &AppState, p: &Principal, id: &str) -> Result<WebhookSub, ApiError> {
    state
        .subs
        .get(Some(&p.tenant), id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// `GET /v1/subscriptions/{id}`.
pub async fn get(
    Manager { state, p }: Manager,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(sub_json(&owned(&state, &p, &id).await?)).into_response())
}

/// The body of `PATCH /v1/subscriptions/{id}`: the fields to change.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchInput {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    webhook: Option<WebhookInput>,
    #[serde(default)]
    paused: Option<bool>,
    #[serde(default, with = "double_option")]
    expires_at: Option<Option<String>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<String>>, D::Error> {
        Option::<String>::deserialize(d).map(Some)
    }
}

/// `PATCH /v1/subscriptions/{id}`.
pub async fn patch(
    Manager { state, p }: Manager,
    Path(id): Path<String>,
    SubBody(input): SubBody<PatchInput>,
) -> Result<Response, ApiError> {
    let current = owned(&state, &p, &id).await?;
    let mut patch = WebhookPatch::default();
    if let Some(n) = input.name {
        check_name(&n)?;
        patch.name = Some(n);
    }
    if input.filter.is_some() {
        patch.filter = Some(filter_text(&state, &p, input.filter.as_ref())?);
    } else {
        patch.filter = renarrow(&p, &current.filter)?;
    }
    if let Some(w) = input.webhook {
        patch.url = Some(
            check_url(&w.url, state.settings.webhooks.allow_private)
                .await?
                .to_string(),
        );
        if let Some(s) = w.secret {
            secret_key(&s)?;
            patch.secret = Some(s);
        }
    }
    if let Some(paused) = input.paused {
        // `paused: false` also re-activates a subscription that was paused by a dead delivery
        // or disabled by a 410: an explicit resume.
        patch.status = Some(if paused {
            WebhookStatus::Paused
        } else {
            WebhookStatus::Active
        });
    }
    if let Some(e) = input.expires_at {
        patch.expires_us = Some(expiry(e.as_deref())?);
    }
    let sub = state
        .subs
        .update(&p.tenant, &id, &patch)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let body = sub_json(&sub);
    state.webhooks.restart(&state, sub);
    Ok(Json(body).into_response())
}

/// `DELETE /v1/subscriptions/{id}`.
pub async fn delete(
    Manager { state, p }: Manager,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if !state.subs.delete(&p.tenant, &id).await? {
        return Err(not_found(&id));
    }
    state.webhooks.stop(&id);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/subscriptions/{id}/deliveries`.
pub async fn deliveries(
    Manager { state, p }: Manager,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let q: Vec<(String, String)> = serde_urlencoded::from_str(raw.as_deref().unwrap_or(""))
        .map_err(|e| ApiError::bad("invalid_query", e.to_string()))?;
    let mut status = None;
    let mut limit = 100usize;
    for (k, v) in q {
        match k.as_str() {
            "status" => {
                status = Some(DeliveryStatus::parse(&v).ok_or_else(|| {
                    ApiError::bad(
                        "invalid_query",
                        "`status` is pending, delivered, failed or dead",
                    )
                })?)
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| ApiError::bad("invalid_query", "`limit` is 1 to 1000"))?
            }
            "token" => {}
            other => {
                return Err(ApiError::bad(
                    "invalid_query",
                    format!("unknown query parameter `{other}`"),
                ))
            }
        }
    }
    let sub = owned(&state, &p, &id).await?;
    // Deliveries name events (their seq and id): a narrowed credential sees them only for
    // a subscription that reads nothing beyond its own patterns (§12.5).
    if renarrow(&p, &sub.filter)?.is_some() {
        return Err(ApiError::forbidden(
            "this subscription reads events beyond this credential's `subscribe` patterns; its deliveries would name them",
        ));
    }
    let list = state.subs.deliveries(&id, status, limit).await?;
    Ok(
        Json(json!({"deliveries": list.iter().map(delivery_json).collect::<Vec<_>>()}))
            .into_response(),
    )
}

/// The body of `POST /v1/subscriptions/{id}/redeliver`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedeliverInput {
    after: u64,
}

/// `POST /v1/subscriptions/{id}/redeliver`.
pub async fn redeliver(
    Manager { state, p }: Manager,
    Path(id): Path<String>,
    SubBody(input): SubBody<RedeliverInput>,
) -> Result<Response, ApiError> {
    let sub = state
        .subs
        .redeliver(&p.tenant, &id, input.after)
        .await?
        .ok_or_else(|| not_found(&id))?;
    let body = sub_json(&sub);
    state.webhooks.restart(&state, sub);
    Ok(Json(body).into_response())
}

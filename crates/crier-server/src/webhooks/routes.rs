//! `/v1/subscriptions`: durable subscriptions with webhooks (§3). Publishers and admins
//! manage their tenant's subscriptions; another tenant's are `404`.

use axum::extract::{FromRequest, FromRequestParts, Path, RawQuery, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crier_core::event::{format_time, time_from_us};
use crier_core::webhook::{Delivery, DeliveryStatus, WebhookStatus, WebhookSub};
use crier_core::{Principal, Role};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{require, Auth};
use crate::error::ApiError;
use crate::service::subscriptions::{self, Change, NewSubscription};
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
    let new = NewSubscription {
        name: input.name,
        filter: input.filter,
        url: input.webhook.url,
        secret: input.webhook.secret,
        after: input.after,
        expires_at: input.expires_at,
        paused: input.paused,
    };
    let sub = subscriptions::create(&state, &p, new).await?;
    let mut v = sub_json(&sub);
    v["webhook"]["secret"] = Value::from(sub.secret);
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

/// `GET /v1/subscriptions`.
pub async fn list(Manager { state, p }: Manager) -> Result<Response, ApiError> {
    let subs = subscriptions::list(&state, &p).await?;
    Ok(
        Json(json!({"subscriptions": subs.iter().map(sub_json).collect::<Vec<_>>()}))
            .into_response(),
    )
}

/// `GET /v1/subscriptions/{id}`.
pub async fn get(
    Manager { state, p }: Manager,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    Ok(Json(sub_json(&subscriptions::get(&state, &p, &id).await?)).into_response())
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
    let change = Change {
        name: input.name,
        filter: input.filter,
        webhook: input.webhook.map(|w| (w.url, w.secret)),
        paused: input.paused,
        expires_at: input.expires_at,
    };
    let sub = subscriptions::change(&state, &p, &id, change).await?;
    Ok(Json(sub_json(&sub)).into_response())
}

/// `DELETE /v1/subscriptions/{id}`.
pub async fn delete(
    Manager { state, p }: Manager,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    subscriptions::delete(&state, &p, &id).await?;
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
    let list = subscriptions::deliveries(&state, &p, &id, status, limit).await?;
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
    let sub = subscriptions::redeliver(&state, &p, &id, input.after).await?;
    Ok(Json(sub_json(&sub)).into_response())
}

//! Pusher's signed HTTP API (§13): trigger events, batches, and read channels and presence
//! users, with every request signed the way the Pusher server SDKs sign it.
//!
//! A request carries `auth_key`, `auth_timestamp` (within 600 s), `auth_version=1.0` and
//! `auth_signature`: hex HMAC-SHA256 under the app secret of `METHOD\nPATH\nQUERY`, where
//! QUERY is every other parameter, keys lower-cased and sorted, as `key=value` joined by `&`,
//! values unescaped. A non-empty body must come with `body_md5`, and a `body_md5` must match
//! the body. Triggered events become crier events of the app's tenant (one per channel, one
//! atomic append per request) and reach subscribers through the log.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use md5::{Digest, Md5};
use serde_json::{json, Map, Value};

use super::apps::App;
use super::protocol::{self, Data, Kind, Trigger};
use crate::error::ApiError;
use crate::state::AppState;

/// How far `auth_timestamp` may be from the hub's clock.
const MAX_SKEW_S: u64 = 600;
/// Channels of one trigger.
const MAX_CHANNELS: usize = 100;
/// Events of one batch.
const MAX_BATCH: usize = 10;

/// A request's query parameters, keys lower-cased, values decoded.
type Params = Vec<(String, String)>;

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

/// A request to app `{id}` of the Pusher HTTP API, with the parts its signature covers: the
/// method, the path and the query.
pub struct Signed {
    state: AppState,
    id: String,
    method: Method,
    uri: Uri,
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Path(path) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        Ok(Signed {
            state: state.clone(),
            id: path.get("id").cloned().unwrap_or_default(),
            method: parts.method.clone(),
            uri: parts.uri.clone(),
        })
    }
}

impl Signed {
    /// Checks the signature with `body`; gives the hub, the app and the query parameters.
    fn check(&self, body: &[u8]) -> Result<(&AppState, Arc<App>, Params), ApiError> {
        let (app, params) = authenticate(&self.state, &self.id, self, body)?;
        Ok((&self.state, app, params))
    }

    /// Reads the body, checks the signature with it, and parses the body as JSON; gives the
    /// hub, the app and the body.
    async fn json(&self, body: Body) -> Result<(&AppState, Arc<App>, Value), ApiError> {
        let bytes = read_body(&self.state, body).await?;
        let (state, app, _) = self.check(&bytes)?;
        Ok((state, app, body_json(&bytes)?))
    }
}

/// The value of query parameter `k`, if given.
fn param<'a>(params: &'a Params, k: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(pk, _)| pk == k)
        .map(|(_, v)| v.as_str())
}

/// Checks the signature of `req`, a request to app `id`, with `body`: the app and the query
/// parameters.
fn authenticate(
    state: &AppState,
    id: &str,
    req: &Signed,
    body: &[u8],
) -> Result<(Arc<App>, Params), ApiError> {
    let (method, uri) = (&req.method, &req.uri);
    let app = state
        .pusher
        .apps
        .by_id(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("Unknown app id {id:?}")))?;
    let params: Params = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .collect();
    let get = |k: &str| param(&params, k);
    for (i, (k, _)) in params.iter().enumerate() {
        if params[..i].iter().any(|(pk, _)| pk == k) {
            return Err(unauthorized(format!(
                "query parameter {k:?} is given twice"
            )));
        }
    }
    let key = get("auth_key").ok_or_else(|| unauthorized("auth_key is required"))?;
    if key != app.key {
        return Err(unauthorized(format!("Unknown auth_key {key:?}")));
    }
    if get("auth_version") != Some("1.0") {
        return Err(unauthorized("auth_version must be 1.0"));
    }
    let ts: u64 = get("auth_timestamp")
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| unauthorized("auth_timestamp is required: Unix seconds"))?;
    let now = (crier_core::event::now_us() / 1_000_000).max(0) as u64;
    if ts.abs_diff(now) > MAX_SKEW_S {
        return Err(unauthorized(format!(
            "Timestamp expired: Given timestamp ({ts}) not within {MAX_SKEW_S}s of server time ({now})"
        )));
    }
    let md5_hex = protocol::hex(&Md5::digest(body));
    match get("body_md5") {
        Some(given) if !given.eq_ignore_ascii_case(&md5_hex) => {
            return Err(unauthorized("body_md5 does not match the body"));
        }
        None if !body.is_empty() => {
            return Err(unauthorized("body_md5 is required with a body"));
        }
        _ => {}
    }
    let signature =
        get("auth_signature").ok_or_else(|| unauthorized("auth_signature is required"))?;
    let mut signed: Vec<(&str, &str)> = params
        .iter()
        .filter(|(k, _)| k != "auth_signature")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let to_sign = protocol::string_to_sign(method.as_str(), uri.path(), &mut signed);
    if !protocol::verify(&app.secret, to_sign.as_bytes(), signature) {
        return Err(unauthorized(format!(
            "Invalid signature: Expected HMAC SHA256 hex digest of {to_sign:?}"
        )));
    }
    Ok((app, params))
}

async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    let max = state.settings.limits.max_body_bytes;
    axum::body::to_bytes(body, max).await.map_err(|_| {
        ApiError::too_large(
            "body_too_large",
            format!("the request body is larger than {max} bytes (limits.max_body_bytes)"),
        )
    })
}

/// One event of a trigger request, checked.
struct Event {
    name: String,
    data: Data,
    channels: Vec<String>,
    socket_id: Option<String>,
    info: Vec<String>,
}

fn str_field<'a>(m: &'a Map<String, Value>, k: &str) -> Result<Option<&'a str>, ApiError> {
    match m.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::bad(
            "invalid_request",
            format!("{k} must be a string"),
        )),
    }
}

fn parse_event(app: &App, v: Value, batch: bool) -> Result<Event, ApiError> {
    let Value::Object(m) = v else {
        return Err(ApiError::bad(
            "invalid_request",
            "an event is a JSON object",
        ));
    };
    let name = str_field(&m, "name")?
        .ok_or_else(|| ApiError::bad("invalid_request", "name is required"))?;
    if !protocol::valid_event(name) {
        return Err(ApiError::bad(
            "invalid_request",
            format!(
                "Event name is invalid: 1 to {} characters",
                protocol::MAX_EVENT
            ),
        ));
    }
    let data = str_field(&m, "data")?.ok_or_else(|| {
        ApiError::bad(
            "invalid_request",
            "data is required: the event's data as a string",
        )
    })?;
    if data.len() > app.max_data_bytes {
        return Err(ApiError::too_large(
            "data_too_large",
            format!(
                "Payload too large: data is {} bytes; the limit is {} bytes",
                data.len(),
                app.max_data_bytes
            ),
        ));
    }
    let mut channels: Vec<String> = match (m.get("channel"), m.get("channels")) {
        (Some(Value::String(c)), None) => vec![c.clone()],
        (None, Some(Value::Array(cs))) if !batch => cs
            .iter()
            .map(|c| {
                c.as_str().map(String::from).ok_or_else(|| {
                    ApiError::bad("invalid_request", "channels must be an array of strings")
                })
            })
            .collect::<Result<_, _>>()?,
        (None, None) => {
            return Err(ApiError::bad(
                "invalid_request",
                "channel or channels is required",
            ))
        }
        _ => {
            return Err(ApiError::bad(
                "invalid_request",
                if batch {
                    "each batch event names one channel, as a string"
                } else {
                    "give either channel (a string) or channels (an array of strings)"
                },
            ))
        }
    };
    count_within(
        channels.len(),
        MAX_CHANNELS,
        "channels must not be empty",
        || format!("Too many channels: at most {MAX_CHANNELS} per event"),
    )?;
    for c in &channels {
        if !protocol::valid_channel(c) {
            return Err(ApiError::bad(
                "invalid_request",
                format!(
                    "Invalid channel name {c:?}: 1 to 164 characters of a-z A-Z 0-9 - _ = @ , . ;"
                ),
            ));
        }
    }
    channels.dedup();
    let socket_id = str_field(&m, "socket_id")?.map(String::from);
    if let Some(s) = &socket_id {
        let ok = s.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        });
        if !ok || s.len() > 64 {
            return Err(ApiError::bad(
                "invalid_request",
                format!("Invalid socket id {s:?}"),
            ));
        }
    }
    let info = parse_info(str_field(&m, "info")?)?;
    Ok(Event {
        name: name.to_string(),
        data: Data::Text(data.to_string()),
        channels,
        socket_id,
        info,
    })
}

/// Refuses `n` items when there are none (saying `empty`) or more than `max` (saying what
/// `too_many` writes).
fn count_within(
    n: usize,
    max: usize,
    empty: &str,
    too_many: impl FnOnce() -> String,
) -> Result<(), ApiError> {
    if n == 0 {
        return Err(ApiError::bad("invalid_request", empty.to_string()));
    }
    if n > max {
        return Err(ApiError::bad("invalid_request", too_many()));
    }
    Ok(())
}

fn parse_info(info: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(info) = info else { return Ok(vec![]) };
    let mut out = Vec::new();
    for a in info.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match a {
            "user_count" | "subscription_count" => out.push(a.to_string()),
            other => {
                return Err(ApiError::bad(
                    "invalid_request",
                    format!(
                    "info attribute {other:?} is not known: use user_count or subscription_count"
                ),
                ))
            }
        }
    }
    Ok(out)
}

/// The `info` attributes of a channel: `user_count` for presence channels only.
fn channel_attrs(
    state: &AppState,
    app: &App,
    channel: &str,
    info: &[String],
) -> Map<String, Value> {
    let c = state.pusher.info(&app.tenant, channel);
    let mut m = Map::new();
    for a in info {
        match a.as_str() {
            "user_count" if Kind::of(channel) == Kind::Presence => {
                m.insert("user_count".into(), c.user_count.into());
            }
            "subscription_count" => {
                m.insert("subscription_count".into(), c.subscription_count.into());
            }
            _ => {}
        }
    }
    m
}

fn body_json(body: &[u8]) -> Result<Value, ApiError> {
    crier_core::strict_json::parse(body)
        .map_err(|e| ApiError::bad("invalid_json", format!("the body is not valid JSON: {e}")))
}

async fn trigger(state: &AppState, app: &App, events: &[Event]) -> Result<(), ApiError> {
    let mut inputs = Vec::new();
    for e in events {
        for c in &e.channels {
            inputs.push(protocol::to_input(&Trigger {
                channel: c,
                name: &e.name,
                data: &e.data,
                exclude: e.socket_id.as_deref(),
                user_id: None,
            }));
        }
    }
    super::conn::publish(state, app, format!("pusher:{}", app.id), inputs).await
}

/// `POST /apps/{id}/events`.
pub async fn events(req: Signed, body: Body) -> Result<Response, ApiError> {
    let (state, app, json) = req.json(body).await?;
    let ev = parse_event(&app, json, false)?;
    trigger(state, &app, std::slice::from_ref(&ev)).await?;
    if ev.info.is_empty() {
        return Ok(axum::Json(json!({})).into_response());
    }
    let channels: Map<String, Value> = ev
        .channels
        .iter()
        .map(|c| {
            (
                c.clone(),
                Value::Object(channel_attrs(state, &app, c, &ev.info)),
            )
        })
        .collect();
    Ok(axum::Json(json!({"channels": channels})).into_response())
}

/// `POST /apps/{id}/batch_events`.
pub async fn batch_events(req: Signed, body: Body) -> Result<Response, ApiError> {
    let (state, app, mut json) = req.json(body).await?;
    let Some(Value::Array(items)) = json.get_mut("batch").map(Value::take) else {
        return Err(ApiError::bad(
            "invalid_request",
            "the body is {\"batch\": [events]}",
        ));
    };
    count_within(items.len(), MAX_BATCH, "the batch holds no events", || {
        format!("Batch too large: at most {MAX_BATCH} events per batch")
    })?;
    let events = items
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            parse_event(&app, v, true).map_err(|mut e| {
                e.message = format!("batch[{i}]: {}", e.message);
                e
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    trigger(state, &app, &events).await?;
    if events.iter().all(|e| e.info.is_empty()) {
        return Ok(axum::Json(json!({})).into_response());
    }
    let batch: Vec<Value> = events
        .iter()
        .map(|e| Value::Object(channel_attrs(state, &app, &e.channels[0], &e.info)))
        .collect();
    Ok(axum::Json(json!({"batch": batch})).into_response())
}

/// `GET /apps/{id}/channels`.
pub async fn channels(req: Signed) -> Result<Response, ApiError> {
    let (state, app, params) = req.check(&[])?;
    let prefix = param(&params, "filter_by_prefix").unwrap_or("");
    let info = parse_info(param(&params, "info"))?;
    if info.iter().any(|a| a == "user_count") && !prefix.starts_with("presence-") {
        return Err(ApiError::bad(
            "invalid_request",
            "info=user_count is only valid with filter_by_prefix=presence-",
        ));
    }
    let channels: Map<String, Value> = state
        .pusher
        .channels(&app.tenant, prefix)
        .into_iter()
        .map(|(name, c)| {
            let mut m = Map::new();
            for a in &info {
                match a.as_str() {
                    "user_count" => m.insert("user_count".into(), c.user_count.into()),
                    _ => m.insert("subscription_count".into(), c.subscription_count.into()),
                };
            }
            (name, Value::Object(m))
        })
        .collect();
    Ok(axum::Json(json!({"channels": channels})).into_response())
}

/// `GET /apps/{id}/channels/{channel}`.
pub async fn channel(
    req: Signed,
    Path((_, channel)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (state, app, params) = req.check(&[])?;
    if !protocol::valid_channel(&channel) {
        return Err(ApiError::bad(
            "invalid_request",
            format!("Invalid channel name {channel:?}"),
        ));
    }
    let info = parse_info(param(&params, "info"))?;
    if info.iter().any(|a| a == "user_count") && Kind::of(&channel) != Kind::Presence {
        return Err(ApiError::bad(
            "invalid_request",
            "info=user_count is only valid for presence channels",
        ));
    }
    let c = state.pusher.info(&app.tenant, &channel);
    let mut m = channel_attrs(state, &app, &channel, &info);
    // A presence channel with members on another node is occupied there.
    m.insert(
        "occupied".into(),
        (c.subscription_count > 0 || c.user_count > 0).into(),
    );
    Ok(axum::Json(Value::Object(m)).into_response())
}

/// `GET /apps/{id}/channels/{channel}/users`.
pub async fn users(
    req: Signed,
    Path((_, channel)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (state, app, _) = req.check(&[])?;
    if Kind::of(&channel) != Kind::Presence || !protocol::valid_channel(&channel) {
        return Err(ApiError::bad(
            "invalid_request",
            "users are only available for presence channels",
        ));
    }
    let users: Vec<Value> = state
        .pusher
        .users(&app.tenant, &channel)
        .into_iter()
        .map(|id| json!({"id": id}))
        .collect();
    Ok(axum::Json(json!({"users": users})).into_response())
}

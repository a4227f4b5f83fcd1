//! Replays over HTTP (§3): `POST /v1/replays`, `GET /v1/replays`, `GET /v1/replays/{id}`,
//! `POST /v1/replays/{id}/stop` and the replay's one SSE stream, `GET
//! /v1/replays/{id}/stream`. The replays themselves (registry, range, pacing, slots) are
//! [`crate::service::replays`], shared with the `/v1/ws` `replay` op.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use crier_core::Principal;
use serde_json::{json, Value};

use crate::auth::Auth;
use crate::error::ApiError;
use crate::lifetime::Lifetime;
use crate::service::replays::{Pacer, Replay, ReplaySpec, Speed};
use crate::state::AppState;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateInput {
    #[serde(default)]
    filter: Option<Value>,
    #[serde(default)]
    since: Option<String>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    speed: Option<Value>,
}

/// `POST /v1/replays`.
pub async fn create(
    State(state): State<AppState>,
    Auth(p): Auth,
    body: Bytes,
) -> Result<Response, ApiError> {
    let input: CreateInput = crier_core::strict_json::parse(&body).map_err(|e| {
        ApiError::bad(
            "invalid_json",
            format!("the body is not a valid replay: {e}"),
        )
    })?;
    let spec = ReplaySpec {
        filter: crate::service::filters::from_json(&state, &p.tenant, input.filter.as_ref())
            .await?,
        since: input.since,
        until: input.until,
        speed: Speed::parse(input.speed.as_ref())?,
    };
    let r = state.replays.create(&state, &p, spec).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": r.id, "total": r.total, "state": r.state(), "speed": r.speed.json()})),
    )
        .into_response())
}

/// `GET /v1/replays`: the tenant's replays, newest first.
pub async fn list(State(state): State<AppState>, Auth(p): Auth) -> Result<Response, ApiError> {
    let replays: Vec<Value> = state
        .replays
        .list(&p.tenant)
        .iter()
        .map(|r| r.summary(&p))
        .collect();
    Ok(Json(json!({ "replays": replays })).into_response())
}

/// The replay a request names (`{id}`), among its credential's tenant's, and the credential.
pub struct Named {
    replay: Arc<Replay>,
    p: Principal,
}

impl FromRequestParts<AppState> for Named {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Auth(p) = Auth::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let replay = state
            .replays
            .get(&p.tenant, &id)
            .map_err(|e| ApiError::from(e).into_response())?;
        Ok(Named { replay, p })
    }
}

/// `GET /v1/replays/{id}`.
pub async fn status(Named { replay, p }: Named) -> Result<Response, ApiError> {
    Ok(Json(replay.status_for(&p)).into_response())
}

/// `POST /v1/replays/{id}/stop`.
pub async fn stop(Named { replay, p }: Named) -> Result<Response, ApiError> {
    replay.stop();
    Ok(Json(replay.status_for(&p)).into_response())
}

/// `GET /v1/replays/{id}/stream`: the events as SSE, then `event: crier.replay_done`.
pub async fn stream(
    State(state): State<AppState>,
    Named { replay: r, p }: Named,
) -> Result<Response, ApiError> {
    if !r.claim_stream() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_streaming",
            "a replay is streamed once; create another",
        ));
    }
    let pacer = Pacer::new(&state, r.clone()).reading_as(&p);
    let shutdown = state.shutdown.clone();
    let watch = (Lifetime::new(&state, &p), StopOnDrop(r.clone()));
    let body = futures_util::stream::unfold(
        (pacer, watch, false),
        move |(mut pacer, mut watch, done)| {
            let shutdown = shutdown.clone();
            async move {
                if done {
                    return None;
                }
                let replay = pacer.replay().clone();
                let next = tokio::select! {
                    biased;
                    _ = replay.cancel.cancelled() => Ok(None),
                    _ = shutdown.cancelled() => Ok(None),
                    ended = watch.0.ended() => {
                        // The credential ended: the stream ends as SSE streams do (§12.1).
                        replay.stop();
                        let frame = Bytes::from_static(ended.sse_comment());
                        return Some((Ok(frame), (pacer, watch, true)));
                    }
                    n = pacer.next() => n,
                };
                match next {
                    Ok(Some(e)) => {
                        pacer.sent();
                        let mut chunk =
                            format!("id: {}\nevent: {}\ndata: ", e.seq, e.kind).into_bytes();
                        chunk.extend_from_slice(&e.json);
                        chunk.extend_from_slice(b"\n\n");
                        Some((
                            Ok::<_, std::convert::Infallible>(Bytes::from(chunk)),
                            (pacer, watch, false),
                        ))
                    }
                    Ok(None) | Err(_) => {
                        replay.finish_done();
                        let frame =
                            format!("event: crier.replay_done\ndata: {}\n\n", pacer.status());
                        Some((Ok(Bytes::from(frame)), (pacer, watch, true)))
                    }
                }
            }
        },
    );
    Ok(crate::transport::event_stream(Body::from_stream(body)))
}

/// Ends its replay when a stream is dropped before the replay finished: the client went
/// away, and a replay is streamed once, so its slot is free again at once.
struct StopOnDrop(Arc<Replay>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

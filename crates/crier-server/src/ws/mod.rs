//! `GET /v1/ws`: the WebSocket protocol of §5.
//!
//! Each connection has one writer task that owns the socket's sending half and a bounded
//! outbound queue. Every subscription is a task over its own cursor that pushes frames into
//! that queue; when the client reads slowly the queue fills, the subscription task waits, its
//! cursor's live queue overflows and it falls back to the log: memory stays bounded and
//! nothing is lost. Publishes go through one task per connection, so a connection's publishes
//! are committed in the order it sent them without blocking its reads. Errors are answered
//! with an `error` op and the connection stays open.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use crier_core::{Principal, ReadQuery, Role, Scope};
use futures_util::StreamExt;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::auth::{narrow, read_scope, require, Auth};
use crate::error::ApiError;
use crate::lifetime::Lifetime;
use crate::monitor::{ConnInfo, Peer};
use crate::query::Query;
use crate::service::history::{self, json_array, MAX_PAGE};
use crate::service::replays::{Replay, ReplaySpec, Speed};
use crate::state::{AppState, ConnGuard, Transport};
use crate::transport::{check_origin, start_position};

pub mod oneshot;
mod tasks;

use tasks::{publish_loop, replay_loop, sub_loop, write_loop};

/// Frames queued for the socket before producers wait.
const OUTBOUND_QUEUE: usize = 256;
/// Publishes queued per connection before the reader waits.
const PUBLISH_QUEUE: usize = 64;

/// `GET /v1/ws`.
pub async fn upgrade(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Peer(remote): Peer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    Query::parse(raw.as_deref(), &[])?;
    let ws = ws.map_err(|e| {
        ApiError::bad(
            "websocket_required",
            format!("this path speaks WebSocket only: {e}"),
        )
    })?;
    check_origin(&state, &headers)?;
    let guard = state.conns.open(
        &state,
        &principal.tenant,
        Transport::Ws,
        &principal.subject,
        remote,
    )?;
    // The library's limit is twice ours, so a message between the two gets a readable
    // `error` op and the connection lives; beyond that the library closes with 1009.
    let max = state.settings.limits.max_ws_frame_bytes;
    Ok(ws
        .max_message_size(max.saturating_mul(2))
        .max_frame_size(max.saturating_mul(2))
        // The library's defaults reserve 128 KiB per direction per connection; client
        // messages are small and the writer below batches frames itself.
        .read_buffer_size(4096)
        .write_buffer_size(8192)
        .on_upgrade(move |socket| Conn::run(state, principal, guard, socket)))
}

fn error_frame(r: Option<&Value>, code: &str, message: &str) -> Message {
    let mut m = Map::new();
    m.insert("op".into(), "error".into());
    if let Some(r) = r {
        m.insert("ref".into(), r.clone());
    }
    m.insert("code".into(), code.into());
    m.insert("message".into(), message.into());
    text(Value::Object(m).to_string())
}

fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

fn reply(op: &str, r: Option<&Value>, mut fields: Map<String, Value>) -> Message {
    fields.insert("op".into(), op.into());
    if let Some(r) = r {
        fields.insert("ref".into(), r.clone());
    }
    text(Value::Object(fields).to_string())
}

/// A client message's error: code and message, answered with the message's `ref`.
struct OpError(&'static str, String);

impl From<ApiError> for OpError {
    fn from(e: ApiError) -> Self {
        OpError(e.code, e.message)
    }
}

impl From<crate::service::Error> for OpError {
    fn from(e: crate::service::Error) -> Self {
        let (code, message) = e.into_parts();
        OpError(code, message)
    }
}

/// A publish op waiting for its turn: `ref`, the event, the credential at the time.
type PublishReq = (Option<Value>, Value, Principal);

struct Sub {
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

struct Conn {
    state: AppState,
    principal: Principal,
    out: mpsc::Sender<Message>,
    subs: HashMap<String, Sub>,
    replays: HashMap<String, (Arc<Replay>, JoinHandle<()>)>,
    /// The connection's publish task, started by its first publish.
    publisher: Option<(mpsc::Sender<Box<PublishReq>>, JoinHandle<()>)>,
    cancel: CancellationToken,
    /// The connection's entry in the registry.
    info: Arc<ConnInfo>,
}

fn get_u64(m: &Map<String, Value>, key: &str) -> Result<Option<u64>, OpError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            OpError(
                "invalid_message",
                format!("`{key}` must be a non-negative integer"),
            )
        }),
    }
}

fn get_str<'a>(m: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, OpError> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(OpError(
            "invalid_message",
            format!("`{key}` must be a string"),
        )),
    }
}

fn only_keys(m: &Map<String, Value>, allowed: &[&str]) -> Result<(), OpError> {
    for k in m.keys() {
        if k != "op" && k != "ref" && !allowed.contains(&k.as_str()) {
            return Err(OpError(
                "invalid_message",
                format!("unknown field `{k}` for this op"),
            ));
        }
    }
    Ok(())
}

impl Conn {
    async fn run(state: AppState, principal: Principal, guard: ConnGuard, socket: WebSocket) {
        let (sink, mut stream) = socket.split();
        let (out, out_rx) = mpsc::channel::<Message>(OUTBOUND_QUEUE);
        let cancel = state.shutdown.child_token();
        let last_seen = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let writer = tokio::spawn(write_loop(
            sink,
            out_rx,
            cancel.clone(),
            state.settings.heartbeat,
            last_seen.clone(),
            started,
        ));
        let welcome = json!({
            "op": "welcome",
            "session": uuid::Uuid::now_v7().to_string(),
            "tenant": principal.tenant,
            "head": state.hub.head(),
            "heartbeat_ms": state.settings.heartbeat.as_millis() as u64,
        });
        let mut conn = Conn {
            state,
            principal,
            out,
            subs: HashMap::new(),
            replays: HashMap::new(),
            publisher: None,
            cancel,
            info: guard.info().clone(),
        };
        if conn.out.send(text(welcome.to_string())).await.is_ok() {
            conn.read_loop(&mut stream, &last_seen, started).await;
        }
        for (_, (replay, task)) in conn.replays.drain() {
            replay.stop();
            let _ = task.await;
        }
        for (_, sub) in conn.subs.drain() {
            sub.cancel.cancel();
            let _ = sub.task.await;
        }
        if let Some((tx, task)) = conn.publisher.take() {
            drop(tx);
            let _ = task.await;
        }
        drop(conn.out);
        let _ = writer.await;
        drop(guard);
    }

    async fn read_loop(
        &mut self,
        stream: &mut futures_util::stream::SplitStream<WebSocket>,
        last_seen: &AtomicU64,
        started: Instant,
    ) {
        let max = self.state.settings.limits.max_ws_frame_bytes;
        let mut lifetime = Lifetime::new(&self.state, &self.principal);
        loop {
            let msg = tokio::select! {
                _ = self.cancel.cancelled() => return,
                ended = lifetime.ended() => {
                    let _ = self.out.send(close_frame(4001, ended.message())).await;
                    return;
                }
                m = stream.next() => m,
            };
            let msg = match msg {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read ended");
                    if let Some((code, reason)) = crate::transport::close::for_read_error(&e) {
                        let _ = self.out.send(close_frame(code, reason)).await;
                    }
                    return;
                }
                None => return,
            };
            // No operation is served once the credential has ended, even between re-checks.
            if matches!(msg, Message::Text(_) | Message::Binary(_)) {
                if let Err(ended) = crate::lifetime::check(&self.state, &self.principal).await {
                    let _ = self.out.send(close_frame(4001, ended.message())).await;
                    return;
                }
            }
            last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            let answer = match msg {
                Message::Text(t) if t.len() > max => {
                    metrics::counter!("crier_limit_hits_total", "limit" => "max_ws_frame_bytes")
                        .increment(1);
                    Some(error_frame(
                        None,
                        "frame_too_large",
                        &format!("a message is at most {max} bytes (limits.max_ws_frame_bytes)"),
                    ))
                }
                // Boxed: the handler's state machine is large and only needed while it runs,
                // so idle connections do not carry it.
                Message::Text(t) => Box::pin(self.handle(t.as_str())).await,
                Message::Binary(_) => Some(error_frame(
                    None,
                    "invalid_message",
                    "send text frames holding JSON",
                )),
                Message::Close(_) => return,
                Message::Ping(_) | Message::Pong(_) => None,
            };
            if let Some(a) = answer {
                if self.out.send(a).await.is_err() {
                    return;
                }
            }
            // An `auth` refresh may have replaced the credential.
            lifetime.renew(&self.principal);
        }
    }

    async fn handle(&mut self, text: &str) -> Option<Message> {
        let v: Value = match crier_core::strict_json::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return Some(error_frame(
                    None,
                    "invalid_message",
                    &format!("not valid JSON: {e}"),
                ))
            }
        };
        let Value::Object(m) = v else {
            return Some(error_frame(
                None,
                "invalid_message",
                "a message is a JSON object with an `op`",
            ));
        };
        let r = m.get("ref").cloned();
        let op = m
            .get("op")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let res = match op.as_str() {
            "subscribe" => self.subscribe(&m, r.as_ref()).await,
            "unsubscribe" => self.unsubscribe(&m, r.as_ref()).await,
            "publish" => self.publish(m, r.clone()).await,
            "history" => self.history(&m, r.as_ref()).await,
            "ping" => only_keys(&m, &[]).map(|()| Some(reply("pong", r.as_ref(), Map::new()))),
            "auth" => self.auth(&m, r.as_ref()).await,
            "replay" => self.replay(&m, r.as_ref()).await,
            "replay_stop" => self.replay_stop(&m, r.as_ref()).await,
            "" => Err(OpError("invalid_message", "a message needs an `op`".into())),
            other => Err(OpError("unknown_op", format!("unknown op {other:?}"))),
        };
        match res {
            Ok(answer) => answer,
            Err(OpError(code, message)) => Some(error_frame(r.as_ref(), code, &message)),
        }
    }

    async fn auth(
        &mut self,
        m: &Map<String, Value>,
        r: Option<&Value>,
    ) -> Result<Option<Message>, OpError> {
        only_keys(m, &["token"])?;
        let settings = &self.state.settings.auth;
        if !settings.enabled {
            return Err(OpError(
                "auth_not_configured",
                "this hub runs without authentication; there is nothing to refresh".into(),
            ));
        }
        let token = get_str(m, "token")?
            .ok_or_else(|| OpError("invalid_message", "`token` is required".into()))?;
        let p = settings
            .authenticate(self.state.keys.as_ref(), token)
            .await?;
        if p.tenant != self.principal.tenant {
            return Err(OpError(
                "tenant_mismatch",
                "a refreshed credential must belong to the connection's tenant".into(),
            ));
        }
        // The connection's subscriptions and replays were narrowed by the credential's
        // `subscribe` patterns when they began (§12.5): a refresh may not narrow further,
        // or they would go on delivering what the new credential may not read.
        if p.subscribe.is_some() && p.subscribe != self.principal.subscribe {
            return Err(OpError(
                "forbidden",
                "a refreshed credential with `subscribe` patterns must carry the connection's own patterns; reconnect with it instead".into(),
            ));
        }
        let exp = p.expires_at;
        self.info.set_actor(&p.subject);
        self.principal = p;
        let fields = Map::from_iter([("exp".into(), exp.map_or(Value::Null, Value::from))]);
        Ok(Some(reply("authed", r, fields)))
    }

    async fn replay(
        &mut self,
        m: &Map<String, Value>,
        r: Option<&Value>,
    ) -> Result<Option<Message>, OpError> {
        only_keys(m, &["filter", "since", "until", "speed"])?;
        let spec = ReplaySpec {
            filter: crate::service::filters::from_json(
                &self.state,
                &self.principal.tenant,
                m.get("filter"),
            )
            .await?,
            since: get_str(m, "since")?.map(String::from),
            until: get_str(m, "until")?.map(String::from),
            speed: Speed::parse(m.get("speed"))?,
        };
        let replay = self
            .state
            .replays
            .create(&self.state, &self.principal, spec)
            .await?;
        replay.mark_streamed();
        let started = Map::from_iter([
            ("replay".into(), replay.id.clone().into()),
            ("total".into(), replay.total.into()),
        ]);
        let _ = self.out.send(reply("replay_started", r, started)).await;
        let task = tokio::spawn(replay_loop(
            self.state.clone(),
            replay.clone(),
            self.out.clone(),
        ));
        self.replays.retain(|_, (_, t)| !t.is_finished());
        self.replays.insert(replay.id.clone(), (replay, task));
        Ok(None)
    }

    async fn replay_stop(
        &mut self,
        m: &Map<String, Value>,
        r: Option<&Value>,
    ) -> Result<Option<Message>, OpError> {
        only_keys(m, &["replay"])?;
        let id = get_str(m, "replay")?
            .ok_or_else(|| OpError("invalid_message", "`replay` is required".into()))?;
        if let Some((replay, task)) = self.replays.remove(id) {
            // The replay's task answers with its final status once it has stopped.
            replay.stop();
            let _ = task.await;
            return Ok(None);
        }
        let replay = self.state.replays.get(&self.principal.tenant, id)?;
        replay.stop();
        let Value::Object(mut status) = replay.status_for(&self.principal) else {
            return Ok(None);
        };
        let id = status.remove("id").unwrap_or(Value::Null);
        status.insert("replay".into(), id);
        Ok(Some(reply("replay_status", r, status)))
    }

    async fn subscribe(
        &mut self,
        m: &Map<String, Value>,
        r: Option<&Value>,
    ) -> Result<Option<Message>, OpError> {
        only_keys(m, &["id", "filter", "after", "last", "tenant"])?;
        let id = get_str(m, "id")?
            .ok_or_else(|| OpError("invalid_message", "`id` is required".into()))?;
        if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
            return Err(OpError(
                "invalid_message",
                "`id` has 1 to 128 characters and no control characters".into(),
            ));
        }
        if self.subs.contains_key(id) {
            return Err(OpError(
                "duplicate_subscription",
                format!("a subscription {id:?} already exists on this connection"),
            ));
        }
        let max = self.state.settings.limits.max_subscriptions_per_connection;
        if self.subs.len() >= max {
            metrics::counter!("crier_limit_hits_total", "limit" => "max_subscriptions_per_connection").increment(1);
            return Err(OpError(
                "too_many_subscriptions",
                format!("a connection holds at most {max} subscriptions (limits.max_subscriptions_per_connection)"),
            ));
        }
        let scope = read_scope(&self.principal, get_str(m, "tenant")?)?;
        let filter = crate::service::filters::from_json(
            &self.state,
            crate::service::filters::tenant_of(&self.principal, &scope),
            m.get("filter"),
        )
        .await?;
        crate::reader_limits::check_filter(&self.state.settings.limits, &filter)?;
        let start = start_position(None, get_u64(m, "after")?, get_u64(m, "last")?)?;
        let queue = self.state.settings.limits.queue_per_connection;
        // `head` is the one the cursor opened at: a live subscription sends every matching
        // event above it, so a client that saw nothing yet can resume after it without a gap
        // (the hub's head read afterwards could already be past events this cursor sends).
        let filter = Arc::new(narrow(&self.principal, filter));
        let (cursor, head) = self
            .state
            .hub
            .open(scope, filter.clone(), start, queue)
            .await
            .map_err(ApiError::from)?;
        let reader = self.info.reader(Some(id), &filter, cursor.position());
        // `subscribed` goes through the outbound queue before the task starts, so it precedes
        // the subscription's first event.
        let _ = self
            .out
            .send(reply(
                "subscribed",
                r,
                Map::from_iter([("id".into(), id.into()), ("head".into(), head.into())]),
            ))
            .await;
        let cancel = self.cancel.child_token();
        let task = tokio::spawn(sub_loop(
            id.to_string(),
            cursor,
            reader,
            self.out.clone(),
            cancel.clone(),
        ));
        self.subs.insert(id.to_string(), Sub { cancel, task });
        Ok(None)
    }

    async fn unsubscribe(
        &mut self,
        m: &Map<String, Value>,
        r: Option<&Value>,
    ) -> Result<Option<Message>, OpError> {
        only_keys(m, &["id"])?;
        let id = get_str(m, "id")?
            .ok_or_else(|| OpError("invalid_message", "`id` is required".into()))?;
        let sub = self.subs.remove(id).ok_or_else(|| {
            OpError(
                "unknown_subscription",
                format!("no subscription {id:?} on this connection"),
            )
        })?;
        // Wait for the task to stop so no event of this subscription follows `unsubscribed`.
        sub.cancel.cancel();
        let _ = sub.task.await;
        Ok(Some(reply(
            "unsubscribed",
            r,
            Map::from_iter([("id".into(), id.into())]),
        )))
    }

    async fn publish(
        &mut self,
        m: Map<String, Value>,
        r: Option<Value>,
    ) -> Result<Option<Message>, OpError> {
        only_keys(&m, &["event"])?;
        require(&self.principal, Role::Publisher)?;
        let event = m
            .get("event")
            .cloned()
            .ok_or_else(|| OpError("invalid_message", "`event` is required".into()))?;
        // Sent to the connection's publish task: committed in the order sent, answered once durable.
        let (tx, _) = self.publisher.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
            (
                tx,
                tokio::spawn(publish_loop(self.state.clone(), rx, self.out.clone())),
            )
        });
        let _ = tx.send(Box::new((r, event, self.principal.clone()))).await;
        Ok(None)
    }

    async fn history(
        &mut self,
        m: &Map<String, Value>,
        r: Option<&Value>,
    ) -> Result<Option<Message>, OpError> {
        only_keys(m, &["filter", "after", "limit", "since", "until", "tenant"])?;
        let scope: Scope = read_scope(&self.principal, get_str(m, "tenant")?)?;
        let filter = crate::service::filters::from_json(
            &self.state,
            crate::service::filters::tenant_of(&self.principal, &scope),
            m.get("filter"),
        )
        .await?;
        let limit = get_u64(m, "limit")?.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(OpError(
                "invalid_message",
                format!("`limit` must be between 1 and {MAX_PAGE}"),
            ));
        }
        let now = crier_core::event::now_us();
        let time = |key: &str| -> Result<Option<i64>, OpError> {
            get_str(m, key)?
                .map(|s| {
                    crier_core::event::parse_time_or_ago_us(s, now).ok_or_else(|| {
                        OpError(
                            "invalid_message",
                            format!(
                                "`{key}` must be an RFC 3339 time or a duration before now \
                                 like 15m"
                            ),
                        )
                    })
                })
                .transpose()
        };
        let mut query = ReadQuery::after(
            scope,
            Arc::new(narrow(&self.principal, filter)),
            get_u64(m, "after")?.unwrap_or(0),
            limit as usize,
        );
        query.since_us = time("since")?;
        query.until_us = time("until")?;
        let (events, next) = history::read(&self.state, query).await?;
        let mut s = String::from("{\"op\":\"history\",");
        if let Some(r) = r {
            s.push_str("\"ref\":");
            s.push_str(&r.to_string());
            s.push(',');
        }
        s.push_str("\"events\":");
        s.push_str(&String::from_utf8_lossy(&json_array(&events)));
        s.push_str(",\"next_after\":");
        s.push_str(&next.map_or("null".to_string(), |n| n.to_string()));
        s.push('}');
        Ok(Some(text(s)))
    }
}

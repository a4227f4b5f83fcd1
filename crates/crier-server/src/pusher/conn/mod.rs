//! `GET /app/{key}`: one Pusher protocol connection (protocol 7; 5 and 6 are accepted too).
//!
//! A connection is a single task that owns its socket: it reads the client's frames, writes
//! what the bridge and the channels queue for it (draining the queue into one flush), and
//! keeps the activity timer. Nothing else per connection is spawned, which keeps an idle
//! connection small. A connection whose queue fills (a reader slower than its channels) is
//! closed with 4200 so the client reconnects: Pusher delivery is live-only, and the
//! durable copy of every event stays in the log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use crier_core::queue;
use futures_util::SinkExt;
use serde_json::json;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::apps::App;
use super::protocol::{self, Kind};
use crate::error::ApiError;
use crate::monitor::{ConnInfo, Peer};
use crate::state::{AppState, ConnGuard, Transport};

mod ops;
pub use ops::publish;

/// What a queued frame weighs besides its bytes: a connection is too slow once its queue
/// passes `reader_buffer_bytes`, many small frames or a few large ones.
const FRAME_OVERHEAD: usize = 64;
/// Frames written per flush.
const BATCH: usize = 64;
/// How long an evicted connection's last frames may take.
const FAREWELL: Duration = Duration::from_secs(1);
/// How long a pong may take after the server's ping.
const PONG_WAIT: Duration = Duration::from_secs(30);
/// Client events per second per connection (Pusher's limit).
const CLIENT_EVENTS_PER_S: u32 = 10;

/// `GET /app/{key}?protocol=7`.
pub async fn upgrade(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Peer(remote): Peer,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let ws = ws.map_err(|e| {
        ApiError::bad(
            "websocket_required",
            format!("this path speaks the Pusher WebSocket protocol only: {e}"),
        )
    })?;
    crate::transport::check_origin(&state, &headers)?;
    let protocol = url::form_urlencoded::parse(raw.as_deref().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "protocol")
        .and_then(|(_, v)| v.parse::<u32>().ok());
    let app = state.pusher.apps.by_key(&key).cloned();
    // Refusals are Pusher's: an error event and a close code the client library understands.
    let refusal: Option<(u16, String)> = match (&app, protocol) {
        (None, _) => Some((4001, format!("App key {key} not in this cluster"))),
        (_, Some(5..=7)) => None,
        (_, p) => Some((
            4007,
            format!(
                "Unsupported protocol version {}; this server speaks 5 to 7",
                p.map_or_else(|| "(none)".to_string(), |p| p.to_string())
            ),
        )),
    };
    let guard = match (&app, &refusal) {
        (Some(app), None) => match state.conns.open(
            &state,
            &app.tenant,
            Transport::Pusher,
            &format!("pusher:{}", app.id),
            remote,
        ) {
            Ok(g) => Some(g),
            Err(e) => return Ok(refuse(ws, 4100, e.message)),
        },
        _ => None,
    };
    let (Some(app), Some(guard)) = (app, guard) else {
        let (code, msg) = refusal.unwrap_or((4000, "refused".into()));
        return Ok(refuse(ws, code, msg));
    };
    let max = app.max_data_bytes.saturating_mul(2).saturating_add(8192);
    Ok(ws
        .max_message_size(max)
        .max_frame_size(max)
        // Client frames are small; frames to the client are batched by the loop below and
        // written once per flush (the write buffer is allocated only when used).
        .read_buffer_size(1024)
        .write_buffer_size(8192)
        .on_upgrade(move |socket| run(state, app, guard, socket)))
}

fn refuse(ws: WebSocketUpgrade, code: u16, message: String) -> Response {
    ws.on_upgrade(move |mut socket| async move {
        let _ = socket
            .send(text(protocol::error_frame(Some(code), &message)))
            .await;
        let _ = socket.send(close(code, "")).await;
    })
}

fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Writes `first` and up to [`BATCH`] frames in all from the queue, then flushes once.
async fn write_batch(
    socket: &mut WebSocket,
    first: Utf8Bytes,
    rx: &mut queue::Receiver<Utf8Bytes>,
) -> Result<(), axum::Error> {
    socket.feed(Message::Text(first)).await?;
    for _ in 1..BATCH {
        let Some(f) = rx.try_recv() else { break };
        socket.feed(Message::Text(f)).await?;
    }
    socket.flush().await
}

/// Sends a connection's last frames, after whatever it still had buffered, for at most
/// [`FAREWELL`]: a client that stopped reading may never take them.
async fn farewell(socket: &mut WebSocket, last: Vec<Message>) {
    let send = async {
        for m in last {
            socket.send(m).await?;
        }
        Ok::<(), axum::Error>(())
    };
    let _ = tokio::time::timeout(FAREWELL, send).await;
}

/// Ends a connection at the hub's shutdown.
async fn shutting_down(socket: &mut WebSocket) {
    farewell(socket, vec![close(4200, "server shutting down")]).await;
}

/// Tells an evicted connection why, if it still reads, and ends it.
async fn evicted(socket: &mut WebSocket) {
    let why = "this connection fell too far behind its channels; reconnect";
    let last = vec![
        text(protocol::error_frame(Some(4200), why)),
        close(4200, "too slow"),
    ];
    farewell(socket, last).await;
}

/// A channel this connection is subscribed to.
struct Joined {
    kind: Kind,
    user_id: Option<Arc<str>>,
}

struct Conn {
    state: AppState,
    app: Arc<App>,
    socket_id: Arc<str>,
    tx: queue::Sender<Utf8Bytes>,
    evict: CancellationToken,
    channels: HashMap<String, Joined>,
    /// The connection's entry in the registry.
    info: Arc<ConnInfo>,
    /// Client-event budget: tokens and when they were last refilled.
    bucket: (u32, Instant),
}

async fn run(state: AppState, app: Arc<App>, guard: ConnGuard, socket: WebSocket) {
    state.pusher.ensure_bridge(&state).await;
    let socket_id: Arc<str> = state.pusher.socket_id().into();
    let (mut conn, rx) = Conn::new(&state, app, socket_id, guard.info().clone());
    let queue = conn.tx.downgrade();
    guard
        .info()
        .set_pusher(&conn.app.id, &conn.socket_id, move || queue.queued());
    conn.serve(socket, rx).await;
    conn.leave_all();
    drop(guard);
}

/// Answers client frames, one per line of `frames`, as connection `socket_id` of `app`
/// would, without a socket: every frame the connection would write (its direct answers and
/// what its channels queue for it), in order. The channels it joined are left at the end.
/// It is the connection's own frame handling, for the fuzz target and protocol tests.
pub async fn answer(state: &AppState, app: Arc<App>, socket_id: &str, frames: &str) -> Vec<String> {
    state.pusher.ensure_bridge(state).await;
    // Not in the connection registry: nothing is listening on a socket.
    let actor = format!("pusher:{socket_id}");
    let info = Arc::new(ConnInfo::new(
        0,
        &app.tenant,
        Transport::Pusher,
        &actor,
        None,
    ));
    let (mut conn, mut rx) = Conn::new(state, app, socket_id.into(), info);
    let mut out = Vec::new();
    for raw in frames.lines() {
        let direct = Box::pin(conn.handle(raw)).await;
        while let Some(f) = rx.try_recv() {
            out.push(f.as_str().to_owned());
        }
        out.extend(direct);
    }
    conn.leave_all();
    while let Some(f) = rx.try_recv() {
        out.push(f.as_str().to_owned());
    }
    out
}

impl Conn {
    /// Connection `socket_id` of `app` listed as `info`, and the queue its channels write to.
    fn new(
        state: &AppState,
        app: Arc<App>,
        socket_id: Arc<str>,
        info: Arc<ConnInfo>,
    ) -> (Conn, queue::Receiver<Utf8Bytes>) {
        // Bounded in bytes (§12.2 `reader_buffer_bytes`), a little per frame besides.
        let (tx, rx) = queue::weighed(
            state.settings.limits.reader_buffer_bytes,
            |f: &Utf8Bytes| FRAME_OVERHEAD + f.len(),
        );
        let conn = Conn {
            state: state.clone(),
            app,
            socket_id,
            tx,
            evict: CancellationToken::new(),
            channels: HashMap::new(),
            info,
            bucket: (CLIENT_EVENTS_PER_S, Instant::now()),
        };
        (conn, rx)
    }

    /// Leaves every channel (the connection ended).
    fn leave_all(&mut self) {
        for (channel, _) in std::mem::take(&mut self.channels) {
            self.leave(&channel);
        }
    }

    async fn serve(&mut self, mut socket: WebSocket, mut rx: queue::Receiver<Utf8Bytes>) {
        let established = json!({
            "socket_id": &*self.socket_id,
            "activity_timeout": self.app.activity_timeout,
        })
        .to_string();
        let hello = json!({"event": "pusher:connection_established", "data": established});
        if socket.send(text(hello.to_string())).await.is_err() {
            return;
        }
        let activity = Duration::from_secs(self.app.activity_timeout);
        let mut deadline = Instant::now() + activity;
        let mut awaiting_pong = false;
        // One future each for the connection's life, polled per wake without taking a lock
        // that other connections share (a child token of the hub's shutdown), and one timer
        // moved only when the deadline moves.
        let shutdown = self.state.shutdown.child_token().cancelled_owned();
        let evict = self.evict.clone().cancelled_owned();
        let timer = tokio::time::sleep_until(deadline);
        tokio::pin!(shutdown, evict, timer);
        loop {
            if timer.deadline() != deadline {
                timer.as_mut().reset(deadline);
            }
            // A fixed order, the outbound queue last, so that a queue that never empties
            // starves neither the ping timer nor the client's frames.
            tokio::select! {
                biased;
                _ = &mut shutdown => return shutting_down(&mut socket).await,
                _ = &mut evict => return evicted(&mut socket).await,
                _ = &mut timer => {
                    if awaiting_pong {
                        let _ = socket.send(close(4201, "pong reply not received")).await;
                        return;
                    }
                    awaiting_pong = true;
                    deadline = Instant::now() + PONG_WAIT;
                    let ping = json!({"event": "pusher:ping", "data": "{}"}).to_string();
                    if socket.send(text(ping)).await.is_err() {
                        return;
                    }
                }
                m = socket.recv() => {
                    let msg = match m {
                        Some(Ok(m)) => m,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "pusher connection read ended");
                            // A broken frame (too big, bad UTF-8, bad framing) gets the
                            // close code RFC 6455 names for it, as on `/v1/ws`.
                            if let Some((code, reason)) = crate::transport::close::for_read_error(&e) {
                                let _ = socket.send(close(code, reason)).await;
                            }
                            return;
                        }
                        None => return,
                    };
                    awaiting_pong = false;
                    deadline = Instant::now() + activity;
                    let answer = match msg {
                        Message::Text(t) => Box::pin(self.handle(t.as_str())).await,
                        Message::Binary(_) => Some(protocol::error_frame(None, "send text frames holding JSON")),
                        Message::Close(_) => {
                            // The library queued the closing handshake's answer; send it.
                            let _ = socket.flush().await;
                            return;
                        }
                        Message::Ping(_) => {
                            // The library queued a pong: it goes out before the next frame is
                            // read, so a client that sends pings and reads nothing stops
                            // being read instead of growing the library's buffer a pong per
                            // ping.
                            if socket.flush().await.is_err() {
                                return;
                            }
                            None
                        }
                        Message::Pong(_) => None,
                    };
                    if let Some(a) = answer {
                        if socket.send(text(a)).await.is_err() {
                            return;
                        }
                    }
                }
                f = rx.recv() => {
                    let Some(f) = f else { return };
                    // A client that stops reading blocks this write once the kernel's
                    // buffers are full; its queue then overflows and it is let go here.
                    tokio::select! {
                        biased;
                        _ = &mut evict => return evicted(&mut socket).await,
                        _ = &mut shutdown => return shutting_down(&mut socket).await,
                        written = write_batch(&mut socket, f, &mut rx) => if written.is_err() { return },
                    }
                }
            }
        }
    }
}

//! One `/v1/ws` connection: the state its ops share, the read loop (frame limits, the
//! credential's lifetime, heartbeats seen) and the teardown that ends every task it started.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::extract::ws::Message;
use crier_core::{queue, Principal};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use serde_json::{json, Map};
use tokio::io::ReadHalf;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tungstenite::protocol::{Role, WebSocketConfig};
use tungstenite::Message as Incoming;

use super::outbound_bytes;
use super::protocol::{
    self, close_frame, error_frame, reply, text, ClientOp, OpError, PublishReq, Request,
};
use super::tasks::{write_loop, Out, Stop};
use super::wire::{Control, ReadSide, Wire, CONTROL_MAX};
use crate::lifetime::Lifetime;
use crate::monitor::ConnInfo;
use crate::service::replays::Replay;
use crate::state::{AppState, ConnGuard};

/// The socket as the WebSocket library reads it.
type WsStream = WebSocketStream<ReadSide<ReadHalf<TokioIo<Upgraded>>>>;

/// One `subscribe` of the connection: what ends the stream of its cursor that the writer
/// polls. (Not a webhook subscription, nor GraphQL's `Subscription` type: a live reader on
/// this socket.)
pub(super) struct LiveSub {
    pub(super) stop: Stop,
}

impl LiveSub {
    /// Ends the subscription: the writer takes no frame of it after this, and drops its
    /// cursor at its next wake.
    pub(super) fn stop(self) {
        self.stop.stop();
    }
}

/// One `/v1/ws` connection: its credential (replaced by `auth`), its outbound queue, and
/// what its ops started.
pub(super) struct Conn {
    pub(super) state: AppState,
    pub(super) principal: Principal,
    pub(super) out: queue::Sender<Out>,
    pub(super) subs: HashMap<String, LiveSub>,
    pub(super) replays: HashMap<String, (Arc<Replay>, JoinHandle<()>)>,
    /// The connection's publish task, started by its first publish.
    pub(super) publisher: Option<(mpsc::Sender<Box<PublishReq>>, JoinHandle<()>)>,
    pub(super) cancel: CancellationToken,
    /// The connection's entry in the registry.
    pub(super) info: Arc<ConnInfo>,
}

impl Conn {
    /// A connection with no subscription, replay or publish task yet.
    pub(super) fn new(
        state: AppState,
        principal: Principal,
        out: queue::Sender<Out>,
        cancel: CancellationToken,
        info: Arc<ConnInfo>,
    ) -> Conn {
        Conn {
            state,
            principal,
            out,
            subs: HashMap::new(),
            replays: HashMap::new(),
            publisher: None,
            cancel,
            info,
        }
    }

    /// Serves an upgraded socket until it closes, then ends what it started.
    pub(super) async fn run(
        state: AppState,
        principal: Principal,
        guard: ConnGuard,
        socket: Upgraded,
    ) {
        let (read, write) = tokio::io::split(TokioIo::new(socket));
        let control = Arc::new(Control::default());
        // The library's limit is twice ours, so a message between the two gets a readable
        // `error` op and the connection lives; beyond that the library closes with 1009.
        let max = state.settings.limits.max_ws_frame_bytes;
        let config = WebSocketConfig::default()
            .max_message_size(Some(max.saturating_mul(2)))
            .max_frame_size(Some(max.saturating_mul(2)))
            // The library's default reserves 128 KiB; client messages are small.
            .read_buffer_size(1024)
            // It writes only its answers to pings and closes, at once, to the writer, and
            // holds at most a few: a client that sends pings and reads nothing would
            // otherwise grow the library's buffer by a pong per ping, without bound.
            .write_buffer_size(0)
            .max_write_buffer_size(CONTROL_MAX);
        let mut stream = WebSocketStream::from_raw_socket(
            ReadSide::new(read, control.clone()),
            Role::Server,
            Some(config),
        )
        .await;
        let sink = Wire::new(write, control);
        let (out, out_rx) = queue::weighed::<Out>(outbound_bytes(&state), Out::weight);
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
        // Built and dropped here: a value alive across the awaits below would be stored in
        // this task for the connection's whole life.
        let welcome = text(
            json!({
                "op": "welcome",
                "session": uuid::Uuid::now_v7().to_string(),
                "tenant": principal.tenant,
                "head": state.hub.head(),
                "heartbeat_ms": state.settings.heartbeat.as_millis() as u64,
            })
            .to_string(),
        );
        let info = guard.info().clone();
        let mut conn = Conn::new(state, principal, out, cancel, info);
        if conn.out.send(welcome.into()).await.is_ok() {
            conn.read_loop(&mut stream, &last_seen, started).await;
        }
        conn.stop_tasks().await;
        drop(conn.out);
        let _ = writer.await;
        drop(guard);
    }

    /// Ends every task the connection's ops started and waits for each: nothing of theirs
    /// is queued after this.
    pub(super) async fn stop_tasks(&mut self) {
        for (_, (replay, task)) in self.replays.drain() {
            replay.stop();
            let _ = task.await;
        }
        for (_, sub) in self.subs.drain() {
            sub.stop();
        }
        if let Some((tx, task)) = self.publisher.take() {
            drop(tx);
            let _ = task.await;
        }
    }

    async fn read_loop(&mut self, stream: &mut WsStream, last_seen: &AtomicU64, started: Instant) {
        let max = self.state.settings.limits.max_ws_frame_bytes;
        let mut lifetime = Lifetime::new(&self.state, &self.principal);
        loop {
            let msg = tokio::select! {
                // The writer does not watch the token (a check per event it writes): the
                // close frame tells it. With no room for it, the writer ends once it has
                // written what is queued and finds the queue closed.
                _ = self.cancel.cancelled() => {
                    let _ = self.out.try_send(close_frame(1001, "server shutting down").into());
                    return;
                }
                ended = lifetime.ended() => {
                    let _ = self.out.send(close_frame(4001, ended.message()).into()).await;
                    return;
                }
                m = stream.next() => m,
            };
            let msg = match msg {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read ended");
                    if let Some((code, reason)) = crate::transport::close::for_ws_error(&e) {
                        let _ = self.out.send(close_frame(code, reason).into()).await;
                    }
                    return;
                }
                None => return,
            };
            // No operation is served once the credential has ended, even between re-checks.
            if matches!(msg, Incoming::Text(_) | Incoming::Binary(_)) {
                if let Err(ended) = crate::lifetime::check(&self.state, &self.principal).await {
                    let _ = self
                        .out
                        .send(close_frame(4001, ended.message()).into())
                        .await;
                    return;
                }
            }
            last_seen.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            let answer = match msg {
                Incoming::Text(t) if t.len() > max => {
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
                Incoming::Text(t) => Box::pin(self.handle(t.as_str())).await,
                Incoming::Binary(_) => Some(error_frame(
                    None,
                    "invalid_message",
                    "send text frames holding JSON",
                )),
                Incoming::Close(_) => {
                    // Has the library write its reply to the writer, which sends it last.
                    let _ = self.flush(stream).await;
                    return;
                }
                Incoming::Ping(_) => {
                    // The library queued a pong: it goes to the writer before the next frame
                    // is read, so a client that sends pings and reads nothing stops being
                    // read, as on every WebSocket of the hub.
                    if !self.flush(stream).await {
                        return;
                    }
                    None
                }
                Incoming::Pong(_) | Incoming::Frame(_) => None,
            };
            if let Some(a) = answer {
                if self.out.send(a.into()).await.is_err() {
                    return;
                }
            }
            // An `auth` refresh may have replaced the credential.
            lifetime.renew(&self.principal);
        }
    }

    /// Hands what the library queued (a pong, the reply to a close) to the writer, waiting
    /// for room while the writer waits on a client that does not read. False when the
    /// connection is ending.
    async fn flush(&self, stream: &mut WsStream) -> bool {
        tokio::select! {
            r = stream.flush() => r.is_ok(),
            _ = self.cancel.cancelled() => false,
        }
    }

    /// Answers one text frame: parses it into an op and runs it.
    pub(super) async fn handle(&mut self, text: &str) -> Option<Message> {
        let Request { r, op } = match protocol::parse(text) {
            Ok(req) => req,
            Err((r, OpError(code, message))) => {
                return Some(error_frame(r.as_ref(), code, &message))
            }
        };
        let res = match op {
            ClientOp::Subscribe(m) => self.subscribe(m, r.as_ref()).await,
            ClientOp::Unsubscribe(m) => self.unsubscribe(m, r.as_ref()).await,
            ClientOp::Publish(m) => self.publish(m, r.clone()).await,
            ClientOp::History(m) => self.history(m, r.as_ref()).await,
            ClientOp::Ping(_) => Ok(Some(reply("pong", r.as_ref(), Map::new()))),
            ClientOp::Auth(m) => self.auth(m, r.as_ref()).await,
            ClientOp::Replay(m) => self.replay(m, r.as_ref()).await,
            ClientOp::ReplayStop(m) => self.replay_stop(m, r.as_ref()).await,
        };
        match res {
            Ok(answer) => answer,
            Err(OpError(code, message)) => Some(error_frame(r.as_ref(), code, &message)),
        }
    }
}

//! Connection monitoring: what every open connection is (the registry `GET /v1/connections`
//! reads, in `connections.rs`).
//!
//! Every SSE stream, `/v1/ws` WebSocket, GraphQL WebSocket and Pusher connection is entered
//! in the registry of [`crate::state::Connections`] when it opens and leaves it when its
//! [`crate::state::ConnGuard`] is dropped, whichever way the connection ends. An entry
//! ([`ConnInfo`]) holds what does not change (id, tenant, transport, remote address, when it
//! opened) and, behind its own lock, what changes rarely: the actor (a WebSocket `auth`
//! refresh may change it), the readers (the SSE stream's filter, each WebSocket or GraphQL
//! subscription) and a Pusher connection's channels. Opening and closing a connection take
//! the registry's one short lock, as counting connections always did; subscribing takes the
//! connection's own lock; delivering an event only stores to the reader's atomics.
//!
//! Lag. A reader of the log (SSE, `/v1/ws`, GraphQL) records the seq of the last event it
//! handed to its socket (for `/v1/ws`, to the connection's writer queue) and whether it is
//! waiting with nothing left to send. Its `lag` is 0 while it waits, else `head −
//! delivered_seq`: the seqs of the log between what it has sent and the head. Seqs are
//! global, so for a reader that is behind this counts the log's events after its position,
//! whatever their tenant and whether its filter matches them: an upper bound of what it
//! still has to send, which grows while it does not read. A Pusher connection gets frames
//! pushed by the node's bridge from the log; its `lag` is the number of frames queued for
//! its socket and not yet written (a connection whose queue fills is closed with 4200).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use crier_core::{CursorItem, Filter, Reset};
use serde_json::{json, Value};

use crate::state::Transport;

/// The peer address of the request's connection, when the server knows it (the hub's own
/// listener always does; an application that mounts the router gives it with axum's
/// `into_make_service_with_connect_info::<SocketAddr>()`).
pub struct Peer(pub Option<SocketAddr>);

impl<S: Send + Sync> FromRequestParts<S> for Peer {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        Ok(Peer(peer_of(parts)))
    }
}

/// The peer address recorded in a request's extensions.
pub fn peer_of(parts: &Parts) -> Option<SocketAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
}

/// Where a reader stands once it has sent `item`: the event's seq, or where a reset moved it.
pub fn position_after(item: &CursorItem) -> u64 {
    match item {
        CursorItem::Event(e) => e.seq,
        CursorItem::Reset(Reset::Retention { oldest }) => oldest.saturating_sub(1),
        CursorItem::Reset(Reset::UnknownCursor { head }) => *head,
    }
}

/// One reader of the log on a connection: an SSE stream, or one subscription of a WebSocket
/// or GraphQL socket.
pub struct Reader {
    id: Option<String>,
    /// The cursor's own filter, shared: rendered only when the registry is listed.
    filter: Arc<Filter>,
    delivered: AtomicU64,
    waiting: AtomicBool,
}

impl Reader {
    /// Notes an item handed to the socket.
    pub fn sent(&self, item: &CursorItem) {
        self.delivered(position_after(item));
    }

    /// Notes that everything up to `seq` was handed to the socket.
    pub fn delivered(&self, seq: u64) {
        self.delivered.store(seq, Ordering::Relaxed);
        self.waiting.store(false, Ordering::Relaxed);
    }

    /// Notes whether the reader waits with nothing left to send (its cursor live and empty).
    pub fn waiting(&self, waiting: bool) {
        self.waiting.store(waiting, Ordering::Relaxed);
    }

    /// The reader's position and lag, each atomic read once so the two agree with each other
    /// (the reader moves on while the registry is listed).
    fn position(&self, head: u64) -> (u64, u64) {
        let delivered = self.delivered.load(Ordering::Relaxed);
        let lag = if self.waiting.load(Ordering::Relaxed) {
            0
        } else {
            head.saturating_sub(delivered)
        };
        (delivered, lag)
    }

    fn to_json(&self, (delivered, lag): (u64, u64)) -> Value {
        json!({
            "id": self.id,
            "filter": self.filter.to_json(),
            "delivered_seq": delivered,
            "lag": lag,
        })
    }
}

/// A reader's place in its connection's entry; leaves it when dropped.
pub struct ReaderSlot {
    conn: Arc<ConnInfo>,
    reader: Arc<Reader>,
}

impl Deref for ReaderSlot {
    type Target = Reader;
    fn deref(&self) -> &Reader {
        &self.reader
    }
}

impl Drop for ReaderSlot {
    fn drop(&mut self) {
        self.conn
            .detail()
            .readers
            .retain(|r| !Arc::ptr_eq(r, &self.reader));
    }
}

/// Frames queued for a Pusher connection's socket.
type QueueProbe = Box<dyn Fn() -> usize + Send + Sync>;

struct PusherSide {
    app: String,
    socket_id: String,
    queued: QueueProbe,
}

#[derive(Default)]
struct Detail {
    actor: String,
    readers: Vec<Arc<Reader>>,
    /// A Pusher connection's channels and its presence user on each.
    channels: BTreeMap<String, Option<String>>,
    pusher: Option<PusherSide>,
}

/// One open connection in the registry.
pub struct ConnInfo {
    /// Registry id, increasing with each connection of this node.
    pub id: u64,
    /// The tenant it reads (a Pusher app's tenant).
    pub tenant: String,
    /// Its transport.
    pub transport: Transport,
    /// The peer's address, when known.
    pub remote: Option<SocketAddr>,
    /// When it opened, in microseconds since the epoch.
    pub since_us: i64,
    detail: Mutex<Detail>,
}

impl ConnInfo {
    /// A new entry.
    pub fn new(
        id: u64,
        tenant: &str,
        transport: Transport,
        actor: &str,
        remote: Option<SocketAddr>,
    ) -> ConnInfo {
        ConnInfo {
            id,
            tenant: tenant.to_string(),
            transport,
            remote,
            since_us: crier_core::event::now_us(),
            detail: Mutex::new(Detail {
                actor: actor.to_string(),
                ..Detail::default()
            }),
        }
    }

    fn detail(&self) -> MutexGuard<'_, Detail> {
        // A std Mutex: held for a field update or a copy only, never across an await.
        self.detail.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a reader with `filter`, starting at `start` (its cursor's position when opened).
    pub fn reader(
        self: &Arc<Self>,
        id: Option<&str>,
        filter: &Arc<Filter>,
        start: u64,
    ) -> ReaderSlot {
        let reader = Arc::new(Reader {
            id: id.map(str::to_string),
            filter: filter.clone(),
            delivered: AtomicU64::new(start),
            waiting: AtomicBool::new(false),
        });
        self.detail().readers.push(reader.clone());
        ReaderSlot {
            conn: self.clone(),
            reader,
        }
    }

    /// Replaces the actor (a WebSocket `auth` refresh).
    pub fn set_actor(&self, actor: &str) {
        let mut d = self.detail();
        if d.actor != actor {
            d.actor = actor.to_string();
        }
    }

    /// Makes this a Pusher connection's entry: its app, socket id and queue.
    pub fn set_pusher(
        &self,
        app: &str,
        socket_id: &str,
        queued: impl Fn() -> usize + Send + Sync + 'static,
    ) {
        let mut d = self.detail();
        d.actor = format!("pusher:{socket_id}");
        d.pusher = Some(PusherSide {
            app: app.to_string(),
            socket_id: socket_id.to_string(),
            queued: Box::new(queued),
        });
    }

    /// A Pusher connection joined `channel` (as presence user `user_id`).
    pub fn joined(&self, channel: &str, user_id: Option<&str>) {
        let mut d = self.detail();
        d.channels
            .insert(channel.to_string(), user_id.map(str::to_string));
        // §13's actor of a presence connection is its user.
        if let (Some(u), Some(p)) = (user_id, &d.pusher) {
            let actor = format!("pusher:{u}");
            if d.actor == format!("pusher:{}", p.socket_id) {
                d.actor = actor;
            }
        }
    }

    /// A Pusher connection left `channel`.
    pub fn left(&self, channel: &str) {
        let mut d = self.detail();
        d.channels.remove(channel);
        if let Some(p) = &d.pusher {
            let user = d.channels.values().flatten().next().cloned();
            d.actor = format!("pusher:{}", user.as_deref().unwrap_or(&p.socket_id));
        }
    }

    /// The entry as `GET /v1/connections` shows it.
    pub fn to_json(&self, head: u64) -> Value {
        let d = self.detail();
        let since = crier_core::event::time_from_us(self.since_us)
            .map(crier_core::event::format_time)
            .unwrap_or_default();
        let mut v = json!({
            "id": self.id,
            "tenant": self.tenant,
            "transport": self.transport.as_str(),
            "actor": d.actor,
            "remote": self.remote.map(|a| a.to_string()),
            "connected_since": since,
        });
        match &d.pusher {
            Some(p) => {
                v["pusher"] = json!({"app": p.app, "socket_id": p.socket_id});
                v["channels"] = d
                    .channels
                    .iter()
                    .map(|(name, user)| json!({"name": name, "user_id": user}))
                    .collect();
                v["filters"] = json!([]);
                v["delivered_seq"] = Value::Null;
                v["lag"] = ((p.queued)() as u64).into();
            }
            None => {
                // One snapshot per reader: the connection's figures are those of its filters.
                let at: Vec<(u64, u64)> = d.readers.iter().map(|r| r.position(head)).collect();
                v["channels"] = json!([]);
                v["filters"] = d
                    .readers
                    .iter()
                    .zip(&at)
                    .map(|(r, p)| r.to_json(*p))
                    .collect();
                v["delivered_seq"] = at
                    .iter()
                    .map(|p| p.0)
                    .min()
                    .map_or(Value::Null, Value::from);
                v["lag"] = at.iter().map(|p| p.1).max().unwrap_or(0).into();
            }
        }
        v
    }
}

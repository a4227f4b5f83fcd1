//! Pusher Channels compatibility (§13): pusher-js, Laravel Echo and the Pusher server SDKs
//! work unchanged against the hub, with crier's durable log underneath.
//!
//! Every event triggered through Pusher (HTTP API or client event) is appended to the app's
//! tenant log like any publish. One bridge per node reads the log live through a hub cursor
//! and hands each event whose subject names a channel to that channel's Pusher subscribers on
//! this node, as one frame encoded once and shared. So Pusher traffic is durable and in
//! history, native publishes reach Pusher subscribers, and in a cluster every node delivers
//! what any node committed. Subscriptions and presence members live in [`Registry`]; the
//! channels of one tenant are shared by every app of that tenant.

pub mod apps;
pub mod conn;
pub mod http_api;
mod presence_view;
pub mod protocol;
pub mod webhooks;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use crier_core::{Committed, CursorItem, Filter, Scope, Start};
use rand::Rng;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::state::AppState;
use apps::Apps;

/// Events queued for the bridge before its cursor falls back to reading the log.
const BRIDGE_QUEUE: usize = 65_536;

/// One connection's place in a channel.
pub struct Sub {
    /// The connection's socket id.
    pub socket_id: Arc<str>,
    /// The connection's outbound queue.
    pub tx: mpsc::Sender<Utf8Bytes>,
    /// Cancelled to drop a connection that cannot keep up.
    pub evict: CancellationToken,
    /// The presence user, on presence channels.
    pub user_id: Option<Arc<str>>,
}

/// A presence member: its info and how many of its sockets are subscribed here.
struct Member {
    info: Value,
    sockets: usize,
}

#[derive(Default)]
struct Channel {
    subs: Vec<Sub>,
    members: BTreeMap<Arc<str>, Member>,
}

impl Channel {
    /// Sends `frame` to every subscriber but `except`; a full queue evicts its connection.
    fn send(&self, frame: &Utf8Bytes, except: Option<&str>) -> u64 {
        let mut sent = 0;
        for s in &self.subs {
            if except.is_some_and(|x| x == &*s.socket_id) {
                continue;
            }
            match s.tx.try_send(frame.clone()) {
                Ok(()) => sent += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!("crier_pusher_evictions_total").increment(1);
                    s.evict.cancel();
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        sent
    }
}

/// What a presence subscriber sees when it joins.
pub struct Joined {
    /// `{"presence": {"ids", "hash", "count"}}`.
    pub presence: Value,
}

/// The channels with subscribers on this node, per tenant.
#[derive(Default)]
pub struct Registry {
    by_tenant: HashMap<String, HashMap<String, Channel>>,
}

/// A channel's counts for the HTTP API.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChannelInfo {
    /// Subscribed connections.
    pub subscription_count: usize,
    /// Distinct presence users.
    pub user_count: usize,
}

/// The Pusher side of the server state.
pub struct Pusher {
    /// The configured apps.
    pub apps: Apps,
    registry: Mutex<Registry>,
    node: u32,
    next_socket: AtomicU64,
    bridge: tokio::sync::OnceCell<()>,
    /// Pusher-style webhook queues.
    pub hooks: webhooks::Hooks,
}

impl Pusher {
    /// The Pusher state over the configured apps.
    pub fn new(apps: Apps) -> Pusher {
        Pusher {
            apps,
            registry: Mutex::new(Registry::default()),
            node: rand::rng().random_range(1..1_000_000_000),
            next_socket: AtomicU64::new(1),
            bridge: tokio::sync::OnceCell::new(),
            hooks: webhooks::Hooks::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        // A std Mutex: held for map updates and non-blocking sends only, never across an await.
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new socket id, `<node>.<counter>` as Pusher's (digits, a dot, digits).
    pub fn socket_id(&self) -> String {
        format!(
            "{}.{}",
            self.node,
            self.next_socket.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Starts this node's bridge from the log to Pusher subscribers (once).
    pub async fn ensure_bridge(&self, state: &AppState) {
        self.bridge
            .get_or_init(|| async {
                match state
                    .hub
                    .open(
                        Scope::All,
                        Arc::new(Filter::default()),
                        Start::Live,
                        BRIDGE_QUEUE,
                    )
                    .await
                {
                    Ok((cursor, head)) => {
                        state.tasks.spawn(bridge(state.clone(), cursor, head));
                    }
                    Err(e) => tracing::error!(error = %e, "cannot start the Pusher bridge"),
                }
            })
            .await;
    }

    /// Adds `sub` to a channel and queues `first` (the subscription's answer) to it before any
    /// event of the channel. On a presence channel with `member = (user_id, user_info)`, the
    /// other subscribers get `member_added` when the user is new, and the answer is the member
    /// list. Returns whether the channel was empty before, and whether the user is new.
    pub fn join(
        &self,
        tenant: &str,
        channel: &str,
        sub: Sub,
        member: Option<Value>,
    ) -> (bool, bool) {
        let mut reg = self.lock();
        let ch = reg
            .by_tenant
            .entry(tenant.to_string())
            .or_default()
            .entry(channel.to_string())
            .or_default();
        let occupied_now = ch.subs.is_empty();
        let mut new_user = false;
        let answer = match (&sub.user_id, member) {
            (Some(uid), Some(info)) => {
                let m = ch.members.entry(uid.clone()).or_insert_with(|| {
                    new_user = true;
                    Member {
                        info: info.clone(),
                        sockets: 0,
                    }
                });
                m.sockets += 1;
                if new_user {
                    let data =
                        serde_json::json!({"user_id": &**uid, "user_info": info}).to_string();
                    let frame = protocol::channel_frame(
                        "pusher_internal:member_added",
                        channel,
                        &Value::from(data).to_string(),
                        None,
                    );
                    ch.send(&Utf8Bytes::from(frame), None);
                }
                let ids: Vec<&str> = ch.members.keys().map(|k| &**k).collect();
                let hash: serde_json::Map<String, Value> = ch
                    .members
                    .iter()
                    .map(|(k, m)| (k.to_string(), m.info.clone()))
                    .collect();
                serde_json::json!({"presence": {"ids": ids, "hash": hash, "count": ids.len()}})
                    .to_string()
            }
            _ => "{}".to_string(),
        };
        let frame = protocol::channel_frame(
            "pusher_internal:subscription_succeeded",
            channel,
            &Value::from(answer).to_string(),
            None,
        );
        if sub.tx.try_send(Utf8Bytes::from(frame)).is_err() {
            sub.evict.cancel();
        }
        ch.subs.push(sub);
        (occupied_now, new_user)
    }

    /// Removes a socket from a channel. On presence channels the last socket of a user makes
    /// the others get `member_removed`. Returns `(vacated, removed user)`.
    pub fn leave(&self, tenant: &str, channel: &str, socket_id: &str) -> (bool, Option<Arc<str>>) {
        let mut reg = self.lock();
        let Some(chans) = reg.by_tenant.get_mut(tenant) else {
            return (false, None);
        };
        let Some(ch) = chans.get_mut(channel) else {
            return (false, None);
        };
        let Some(i) = ch.subs.iter().position(|s| &*s.socket_id == socket_id) else {
            return (false, None);
        };
        let sub = ch.subs.swap_remove(i);
        let mut removed = None;
        if let Some(uid) = sub.user_id {
            if let Some(m) = ch.members.get_mut(&uid) {
                m.sockets = m.sockets.saturating_sub(1);
                if m.sockets == 0 {
                    ch.members.remove(&uid);
                    let data = serde_json::json!({"user_id": &*uid}).to_string();
                    let frame = protocol::channel_frame(
                        "pusher_internal:member_removed",
                        channel,
                        &Value::from(data).to_string(),
                        None,
                    );
                    ch.send(&Utf8Bytes::from(frame), None);
                    removed = Some(uid);
                }
            }
        }
        let vacated = ch.subs.is_empty();
        if vacated {
            chans.remove(channel);
            if chans.is_empty() {
                reg.by_tenant.remove(tenant);
            }
        }
        (vacated, removed)
    }

    /// Counts of one channel.
    pub fn info(&self, tenant: &str, channel: &str) -> ChannelInfo {
        let reg = self.lock();
        reg.by_tenant
            .get(tenant)
            .and_then(|c| c.get(channel))
            .map_or_else(ChannelInfo::default, |c| ChannelInfo {
                subscription_count: c.subs.len(),
                user_count: c.members.len(),
            })
    }

    /// Occupied channels of a tenant whose names start with `prefix`, sorted.
    pub fn channels(&self, tenant: &str, prefix: &str) -> Vec<(String, ChannelInfo)> {
        let reg = self.lock();
        let mut out: Vec<(String, ChannelInfo)> = reg
            .by_tenant
            .get(tenant)
            .map(|chans| {
                chans
                    .iter()
                    .filter(|(name, _)| name.starts_with(prefix))
                    .map(|(name, c)| {
                        (
                            name.clone(),
                            ChannelInfo {
                                subscription_count: c.subs.len(),
                                user_count: c.members.len(),
                            },
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// The user ids of a presence channel.
    pub fn users(&self, tenant: &str, channel: &str) -> Vec<String> {
        let reg = self.lock();
        reg.by_tenant
            .get(tenant)
            .and_then(|c| c.get(channel))
            .map(|c| c.members.keys().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// Hands a committed event to the Pusher subscribers of its channel on this node.
    pub fn dispatch(&self, ev: &Committed) {
        let Some(channel) = ev.subject.as_deref() else {
            return;
        };
        if !protocol::valid_channel(channel) {
            return;
        }
        // Look first, encode outside the lock, then send under it.
        if !self
            .lock()
            .by_tenant
            .get(&ev.tenant)
            .is_some_and(|c| c.contains_key(channel))
        {
            return;
        }
        let Some(out) = protocol::outgoing(ev, channel) else {
            return;
        };
        let frame = Utf8Bytes::from(out.frame);
        let reg = self.lock();
        if let Some(ch) = reg.by_tenant.get(&ev.tenant).and_then(|c| c.get(channel)) {
            let sent = ch.send(&frame, out.exclude.as_deref());
            metrics::counter!("crier_stream_events_sent_total", "transport" => "pusher")
                .increment(sent);
        }
    }
}

/// Reads the log live (falling back to reading it when it lags) and dispatches every event to
/// the Pusher subscribers of its channel, in seq order.
async fn bridge(state: AppState, mut cursor: crier_core::Cursor, mut pos: u64) {
    loop {
        let item = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            i = cursor.next() => i,
        };
        match item {
            Ok(CursorItem::Event(ev)) => {
                pos = ev.seq;
                state.pusher.dispatch(&ev);
                while let Some(CursorItem::Event(ev)) = cursor.try_next() {
                    pos = ev.seq;
                    state.pusher.dispatch(&ev);
                }
            }
            Ok(CursorItem::Reset(_)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "the Pusher bridge cannot read the log; retrying");
                tokio::select! {
                    _ = state.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                }
                match state
                    .hub
                    .open(
                        Scope::All,
                        Arc::new(Filter::default()),
                        Start::After(pos),
                        BRIDGE_QUEUE,
                    )
                    .await
                {
                    Ok((c, _)) => cursor = c,
                    Err(e) => tracing::warn!(error = %e, "the Pusher bridge cannot reopen"),
                }
            }
        }
    }
}

/// The Pusher routes: the WebSocket and the HTTP API.
pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post};
    axum::Router::new()
        .route("/app/{key}", get(conn::upgrade))
        .route("/apps/{id}/events", post(http_api::events))
        .route("/apps/{id}/batch_events", post(http_api::batch_events))
        .route("/apps/{id}/channels", get(http_api::channels))
        .route("/apps/{id}/channels/{channel}", get(http_api::channel))
        .route("/apps/{id}/channels/{channel}/users", get(http_api::users))
}

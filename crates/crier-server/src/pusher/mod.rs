//! Pusher Channels compatibility (§13): pusher-js, Laravel Echo and the Pusher server SDKs
//! work unchanged against the hub, with crier's durable log underneath.
//!
//! Every event triggered through Pusher (HTTP API or client event) is appended to the app's
//! tenant log like any publish. One bridge per node reads the log live through a hub cursor
//! and hands each event whose subject names a channel to that channel's Pusher subscribers on
//! this node, as one frame encoded once and shared. So Pusher traffic is durable and in
//! history, native publishes reach Pusher subscribers, and in a cluster every node delivers
//! what any node committed. Subscriptions and presence members live in [`Registry`]; the
//! channels of one tenant are shared by every app of that tenant. In a cluster, [`presence`]
//! keeps the members of the other nodes next to this node's own, so every presence view is
//! the union over the live nodes.

pub mod apps;
pub mod conn;
pub mod http_api;
pub mod presence;
mod presence_view;
pub mod protocol;
pub mod webhooks;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::extract::ws::Utf8Bytes;
use crier_core::{queue, Committed, CursorItem, Filter, Scope, Start};
use rand::Rng;
use serde_json::Value;
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
    pub tx: queue::Sender<Utf8Bytes>,
    /// Cancelled to drop a connection that cannot keep up.
    pub evict: CancellationToken,
    /// The presence user, on presence channels.
    pub user_id: Option<Arc<str>>,
}

/// A presence member: its info, the app it joined through and how many of its sockets are
/// subscribed here.
struct Member {
    info: Value,
    app: Arc<str>,
    sockets: usize,
}

/// Presence members on other nodes of one channel: user → node → (app, user_info).
type RemoteUsers = BTreeMap<Arc<str>, BTreeMap<Arc<str>, (Arc<str>, Value)>>;

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
                // The connection is ending.
                Err(_) if s.tx.is_closed() => {}
                // Over `reader_buffer_bytes`: a reader that does not keep up is let go.
                Err(_) => {
                    metrics::counter!("crier_pusher_evictions_total").increment(1);
                    s.evict.cancel();
                }
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

/// The channels with subscribers on this node, per tenant, and the presence members of the
/// other nodes of a cluster.
#[derive(Default)]
pub struct Registry {
    by_tenant: HashMap<String, HashMap<String, Channel>>,
    /// Presence members on other nodes, per tenant and channel (empty on a single node).
    remote: HashMap<String, HashMap<String, RemoteUsers>>,
}

impl Registry {
    fn local(&self, tenant: &str, channel: &str) -> Option<&Channel> {
        self.by_tenant.get(tenant).and_then(|c| c.get(channel))
    }

    fn remote_users(&self, tenant: &str, channel: &str) -> Option<&RemoteUsers> {
        self.remote.get(tenant).and_then(|c| c.get(channel))
    }

    /// Whether `user` is present on another node.
    fn remote_has(&self, tenant: &str, channel: &str, user: &str) -> bool {
        self.remote_users(tenant, channel)
            .is_some_and(|u| u.contains_key(user))
    }

    /// Whether `user` is present on any node.
    fn present(&self, tenant: &str, channel: &str, user: &str) -> bool {
        self.local(tenant, channel)
            .is_some_and(|c| c.members.contains_key(user))
            || self.remote_has(tenant, channel, user)
    }

    /// The members of a presence channel over every live node, with their info (this node's
    /// when the user is here too).
    fn members(&self, tenant: &str, channel: &str) -> BTreeMap<Arc<str>, Value> {
        let mut out = BTreeMap::new();
        if let Some(r) = self.remote_users(tenant, channel) {
            for (user, nodes) in r {
                if let Some((_, info)) = nodes.values().next() {
                    out.insert(user.clone(), info.clone());
                }
            }
        }
        if let Some(c) = self.local(tenant, channel) {
            for (user, m) in &c.members {
                out.insert(user.clone(), m.info.clone());
            }
        }
        out
    }

    /// Distinct presence users of a channel over every live node.
    fn user_count(&self, tenant: &str, channel: &str) -> usize {
        let local = self.local(tenant, channel);
        let remote = self.remote_users(tenant, channel);
        let only_remote = remote.map_or(0, |r| {
            r.keys()
                .filter(|u| !local.is_some_and(|c| c.members.contains_key(*u)))
                .count()
        });
        local.map_or(0, |c| c.members.len()) + only_remote
    }

    /// Sends `frame` to this node's subscribers of a channel.
    fn notify(&self, tenant: &str, channel: &str, frame: &Utf8Bytes) {
        if let Some(c) = self.local(tenant, channel) {
            c.send(frame, None);
        }
    }
}

/// `pusher_internal:member_added` of a channel.
fn member_added(channel: &str, user: &str, info: &Value) -> Utf8Bytes {
    let data = serde_json::json!({"user_id": user, "user_info": info}).to_string();
    Utf8Bytes::from(protocol::channel_frame(
        "pusher_internal:member_added",
        channel,
        &Value::from(data).to_string(),
        None,
    ))
}

/// `pusher_internal:member_removed` of a channel.
fn member_removed(channel: &str, user: &str) -> Utf8Bytes {
    let data = serde_json::json!({"user_id": user}).to_string();
    Utf8Bytes::from(protocol::channel_frame(
        "pusher_internal:member_removed",
        channel,
        &Value::from(data).to_string(),
        None,
    ))
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
    /// In a cluster, the queue of this node's presence signals.
    signals: std::sync::OnceLock<presence::Outbox>,
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
            signals: std::sync::OnceLock::new(),
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

    /// Adds `sub` (a connection of `app`) to a channel and queues the subscription's answer
    /// to it before any event of the channel. On a presence channel with `member =
    /// user_info`, the other subscribers get `member_added` when the user is present on no
    /// node yet, and the answer is the member list of every node. Returns whether the
    /// channel was empty here before, and whether the user is new to the cluster.
    pub fn join(
        &self,
        app: &str,
        tenant: &str,
        channel: &str,
        sub: Sub,
        member: Option<Value>,
    ) -> (bool, bool) {
        let mut guard = self.lock();
        let reg = &mut *guard;
        let elsewhere = sub
            .user_id
            .as_deref()
            .is_some_and(|u| reg.remote_has(tenant, channel, u));
        let ch = reg
            .by_tenant
            .entry(tenant.to_string())
            .or_default()
            .entry(channel.to_string())
            .or_default();
        let occupied_now = ch.subs.is_empty();
        let mut new_here = false;
        let presence = match (&sub.user_id, member) {
            (Some(uid), Some(info)) => {
                let m = ch.members.entry(uid.clone()).or_insert_with(|| {
                    new_here = true;
                    Member {
                        info: info.clone(),
                        app: Arc::from(app),
                        sockets: 0,
                    }
                });
                m.sockets += 1;
                if new_here {
                    if !elsewhere {
                        ch.send(&member_added(channel, uid, &info), None);
                    }
                    self.signal(presence::Body::Join {
                        member: crier_cluster::presence::Member {
                            tenant: tenant.to_string(),
                            channel: channel.to_string(),
                            app: app.to_string(),
                            user_id: uid.to_string(),
                            user_info: info,
                        },
                    });
                }
                true
            }
            _ => false,
        };
        let answer = if presence {
            let members = reg.members(tenant, channel);
            let ids: Vec<&str> = members.keys().map(|k| &**k).collect();
            let hash: serde_json::Map<String, Value> = members
                .iter()
                .map(|(k, info)| (k.to_string(), info.clone()))
                .collect();
            serde_json::json!({"presence": {"ids": ids, "hash": hash, "count": ids.len()}})
                .to_string()
        } else {
            "{}".to_string()
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
        if let Some(ch) = reg
            .by_tenant
            .get_mut(tenant)
            .and_then(|c| c.get_mut(channel))
        {
            ch.subs.push(sub);
        }
        (occupied_now, new_here && !elsewhere)
    }

    /// Removes a socket from a channel. On presence channels the last socket of a user here
    /// makes the others get `member_removed`, unless the user is still present on another
    /// node. Returns `(vacated, user removed from the cluster)`.
    pub fn leave(&self, tenant: &str, channel: &str, socket_id: &str) -> (bool, Option<Arc<str>>) {
        let mut guard = self.lock();
        let reg = &mut *guard;
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
        let mut gone_here = None;
        if let Some(uid) = sub.user_id {
            if let Some(m) = ch.members.get_mut(&uid) {
                m.sockets = m.sockets.saturating_sub(1);
                if m.sockets == 0 {
                    ch.members.remove(&uid);
                    gone_here = Some(uid);
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
        let mut removed = None;
        if let Some(uid) = gone_here {
            self.signal(presence::Body::Leave {
                tenant: tenant.to_string(),
                channel: channel.to_string(),
                user_id: uid.to_string(),
            });
            if !reg.remote_has(tenant, channel, &uid) {
                reg.notify(tenant, channel, &member_removed(channel, &uid));
                removed = Some(uid);
            }
        }
        (vacated, removed)
    }

    /// Counts of one channel: subscriptions on this node, presence users on every node.
    pub fn info(&self, tenant: &str, channel: &str) -> ChannelInfo {
        let reg = self.lock();
        ChannelInfo {
            subscription_count: reg.local(tenant, channel).map_or(0, |c| c.subs.len()),
            user_count: reg.user_count(tenant, channel),
        }
    }

    /// Occupied channels of a tenant whose names start with `prefix`, sorted: those with
    /// subscribers here and the presence channels with members on other nodes.
    pub fn channels(&self, tenant: &str, prefix: &str) -> Vec<(String, ChannelInfo)> {
        let reg = self.lock();
        let mut names: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        if let Some(chans) = reg.by_tenant.get(tenant) {
            names.extend(chans.keys().map(String::as_str));
        }
        if let Some(chans) = reg.remote.get(tenant) {
            names.extend(chans.keys().map(String::as_str));
        }
        names
            .into_iter()
            .filter(|name| name.starts_with(prefix))
            .map(|name| {
                (
                    name.to_string(),
                    ChannelInfo {
                        subscription_count: reg.local(tenant, name).map_or(0, |c| c.subs.len()),
                        user_count: reg.user_count(tenant, name),
                    },
                )
            })
            .collect()
    }

    /// The user ids of a presence channel, over every live node.
    pub fn users(&self, tenant: &str, channel: &str) -> Vec<String> {
        let reg = self.lock();
        reg.members(tenant, channel)
            .into_keys()
            .map(|k| k.to_string())
            .collect()
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

//! Presence across the nodes of a cluster (§13: members are the same on every node; a dead
//! node's members leave within 30 s).
//!
//! Each node publishes the members of its own presence channels through the broker as
//! [`crier_cluster::presence`] signals — a join when a user's first socket here joins a
//! channel, a leave when its last one leaves, a heartbeat every `pusher.presence_heartbeat` —
//! and keeps the members the other nodes announce, per node, in the [`Registry`]. Presence
//! views (the member list of `subscription_succeeded`, `member_added` / `member_removed`, the
//! users and `user_count` of the HTTP API) are the union over the live nodes, a user counted
//! once however many nodes it is connected to.
//!
//! Convergence: on (re)subscribing, a node asks every node for its whole state; a gap in a
//! node's sequence (a lost signal, a broker outage) makes the receiver ask that node again; a
//! node that restarts shows a new incarnation and its old members leave at once. A node silent
//! for `pusher.presence_timeout` is dead: every node drops its members, telling its own
//! subscribers, and the node holding the cluster lease (the one dispatching webhooks) sends
//! the `member_removed` webhooks, so they go out once. Joins and leaves of live nodes are
//! reported by the node where they happen, when the user is present on no other node.
//!
//! [`Registry`]: super::Registry

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use crier_cluster::presence::{state_parts, Member, Signal};
use crier_cluster::Broker;
use futures_util::StreamExt;
use rand::Rng;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

pub use crier_cluster::presence::Body;

use super::{member_added, member_removed, Pusher};
use crate::state::AppState;

/// The queue of this node's presence signals, in the order the registry changed.
pub type Outbox = mpsc::UnboundedSender<Body>;

/// (tenant, channel, user) of a member.
type Key = (String, String, String);

impl Pusher {
    /// Queues a presence signal of this node (nothing on a single node). Called with the
    /// registry locked, so signals leave in the order the registry changed.
    pub(super) fn signal(&self, body: Body) {
        if let Some(tx) = self.signals.get() {
            let _ = tx.send(body);
        }
    }

    /// Queues this node's whole state, taken in one piece.
    fn publish_state(&self) {
        let reg = self.lock();
        let mut members = Vec::new();
        for (tenant, chans) in &reg.by_tenant {
            for (channel, c) in chans {
                for (user, m) in &c.members {
                    members.push(Member {
                        tenant: tenant.clone(),
                        channel: channel.clone(),
                        app: m.app.to_string(),
                        user_id: user.to_string(),
                        user_info: m.info.clone(),
                    });
                }
            }
        }
        for part in state_parts(members) {
            self.signal(part);
        }
    }

    /// `node` has `m`: this node's subscribers see `member_added` if the user is new to the
    /// cluster.
    fn remote_join(&self, node: &str, m: &Member) {
        let mut guard = self.lock();
        let reg = &mut *guard;
        let was = reg.present(&m.tenant, &m.channel, &m.user_id);
        reg.remote
            .entry(m.tenant.clone())
            .or_default()
            .entry(m.channel.clone())
            .or_default()
            .entry(Arc::from(m.user_id.as_str()))
            .or_default()
            .insert(
                Arc::from(node),
                (Arc::from(m.app.as_str()), m.user_info.clone()),
            );
        if !was {
            let frame = member_added(&m.channel, &m.user_id, &m.user_info);
            reg.notify(&m.tenant, &m.channel, &frame);
        }
    }

    /// `node` no longer has a member: if the user is now present on no node, this node's
    /// subscribers see `member_removed` and the app it joined through is returned.
    fn remote_leave(&self, node: &str, (tenant, channel, user): &Key) -> Option<Arc<str>> {
        let mut guard = self.lock();
        let reg = &mut *guard;
        let chans = reg.remote.get_mut(tenant)?;
        let users = chans.get_mut(channel)?;
        let nodes = users.get_mut(user.as_str())?;
        let (app, _) = nodes.remove(node)?;
        if nodes.is_empty() {
            users.remove(user.as_str());
            if users.is_empty() {
                chans.remove(channel);
                if chans.is_empty() {
                    reg.remote.remove(tenant);
                }
            }
        }
        if reg.present(tenant, channel, user) {
            return None;
        }
        reg.notify(tenant, channel, &member_removed(channel, user));
        Some(app)
    }
}

/// Starts this node's presence signals over `broker`: a publisher and a receiver.
pub fn start(state: &AppState, broker: Arc<dyn Broker>) {
    let (tx, rx) = mpsc::unbounded_channel();
    if state.pusher.signals.set(tx).is_err() {
        return;
    }
    let inc: u64 = rand::rng().random();
    let node = state.settings.node_id.clone();
    state.tasks.spawn(publish_loop(
        state.clone(),
        broker.clone(),
        node.clone(),
        inc,
        rx,
    ));
    state
        .tasks
        .spawn(receive_loop(state.clone(), broker, node, inc));
}

/// Publishes queued signals in order, numbering them, and a heartbeat on a timer. A signal
/// the broker refuses is dropped with whatever is queued behind it: their numbers are spent,
/// so receivers see the gap and ask for this node's state. At shutdown, an empty state tells
/// the others this node's members left.
async fn publish_loop(
    state: AppState,
    broker: Arc<dyn Broker>,
    node: String,
    inc: u64,
    mut rx: mpsc::UnboundedReceiver<Body>,
) {
    let mut seq = 0u64;
    let mut beat = tokio::time::interval(state.settings.presence_heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let body = tokio::select! {
            _ = state.shutdown.cancelled() => break,
            b = rx.recv() => match b {
                Some(b) => b,
                None => break,
            },
            _ = beat.tick() => Body::Heartbeat,
        };
        if !matches!(body, Body::Heartbeat) {
            seq += 1;
        }
        let signal = Signal {
            node: node.clone(),
            inc,
            seq,
            body,
        };
        if let Err(e) = broker.signal(signal.encode()).await {
            tracing::debug!(error = %e, "presence signals are not getting through");
            // The broker is away: what is queued now would arrive stale. Skip it (its numbers
            // are spent, so the others ask for this node's state once they hear from it).
            while let Ok(b) = rx.try_recv() {
                if !matches!(b, Body::Heartbeat) {
                    seq += 1;
                }
            }
        }
    }
    let bye = Signal {
        node,
        inc,
        seq: seq + 1,
        body: Body::State {
            members: Vec::new(),
            first: true,
            last: true,
        },
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), broker.signal(bye.encode())).await;
}

/// What this node knows of another node.
struct NodeView {
    inc: u64,
    /// The last sequence number seen.
    seq: u64,
    /// When the last signal came.
    seen: Instant,
    /// The members it has.
    members: HashSet<Key>,
    /// A whole state being received in parts.
    pending: Option<Vec<Member>>,
    /// When its state was last asked for.
    asked: Option<Instant>,
}

impl NodeView {
    fn new(inc: u64, now: Instant) -> NodeView {
        NodeView {
            inc,
            seq: 0,
            seen: now,
            members: HashSet::new(),
            pending: None,
            asked: None,
        }
    }
}

fn key(m: &Member) -> Key {
    (m.tenant.clone(), m.channel.clone(), m.user_id.clone())
}

/// Receives the other nodes' signals, keeps their members, and drops the members of nodes
/// that fell silent. Resubscribes with backoff when the broker connection is lost.
async fn receive_loop(state: AppState, broker: Arc<dyn Broker>, me: String, inc: u64) {
    let mut nodes: HashMap<String, NodeView> = HashMap::new();
    let mut backoff = Duration::from_millis(100);
    let timeout = state.settings.presence_timeout;
    loop {
        let subscribed = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            s = broker.signals() => s,
        };
        match subscribed {
            Ok(mut stream) => {
                backoff = Duration::from_millis(100);
                // Whatever was missed comes back with every node's state.
                resume(&state, &mut nodes);
                let mut sweep = tokio::time::interval(Duration::from_secs(1));
                let mut was_connected = true;
                loop {
                    tokio::select! {
                        _ = state.shutdown.cancelled() => return,
                        m = stream.next() => match m {
                            None => break,
                            Some(bytes) => match Signal::decode(&bytes) {
                                Some(s) => handle(&state, &me, inc, &mut nodes, s),
                                None => {
                                    metrics::counter!("crier_pusher_presence_malformed_total").increment(1);
                                    tracing::debug!("ignored a malformed presence signal");
                                }
                            },
                        },
                        _ = sweep.tick() => {
                            // While the broker is away no heartbeat can come: nobody dies of it.
                            let connected = broker.connected();
                            if connected && !was_connected {
                                resume(&state, &mut nodes);
                            }
                            was_connected = connected;
                            if connected {
                                expire(&state, &mut nodes, timeout);
                            }
                        }
                    }
                }
                tracing::warn!("the presence subscription ended; subscribing again");
            }
            Err(e) => tracing::warn!(error = %e, "cannot subscribe to presence signals; retrying"),
        }
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// After (re)subscribing: every known node gets a full timeout to be heard from, and every
/// node is asked for its state.
fn resume(state: &AppState, nodes: &mut HashMap<String, NodeView>) {
    let now = Instant::now();
    for v in nodes.values_mut() {
        v.seen = now;
    }
    state.pusher.signal(Body::Sync { to: None });
}

/// Asks `node` for its whole state, at most once per two heartbeats.
fn ask(state: &AppState, node: &str, v: &mut NodeView, now: Instant) {
    let again = state.settings.presence_heartbeat * 2;
    if v.asked.is_some_and(|t| now.duration_since(t) < again) {
        return;
    }
    v.asked = Some(now);
    state.pusher.signal(Body::Sync {
        to: Some(node.to_string()),
    });
}

fn handle(
    state: &AppState,
    me: &str,
    my_inc: u64,
    nodes: &mut HashMap<String, NodeView>,
    s: Signal,
) {
    if s.node == me {
        if s.inc != my_inc {
            tracing::warn!(node = %me, "another process signals presence under this node's name; node_id must differ per node");
        }
        return;
    }
    let now = Instant::now();
    if nodes.get(&s.node).is_some_and(|v| v.inc != s.inc) {
        // The node restarted: what it had is gone.
        if let Some(old) = nodes.remove(&s.node) {
            tracing::info!(node = %s.node, "a node restarted; its former presence members leave");
            drop_node(state, &s.node, old);
        }
    }
    let v = nodes
        .entry(s.node.clone())
        .or_insert_with(|| NodeView::new(s.inc, now));
    v.seen = now;
    let in_order = s.seq == v.seq.wrapping_add(1);
    match s.body {
        Body::Heartbeat => {
            if s.seq != v.seq {
                ask(state, &s.node, v, now);
            }
        }
        Body::Join { member } => {
            v.seq = s.seq;
            if !in_order {
                ask(state, &s.node, v, now);
            }
            state.pusher.remote_join(&s.node, &member);
            v.members.insert(key(&member));
        }
        Body::Leave {
            tenant,
            channel,
            user_id,
        } => {
            v.seq = s.seq;
            if !in_order {
                ask(state, &s.node, v, now);
            }
            let k = (tenant, channel, user_id);
            v.members.remove(&k);
            state.pusher.remote_leave(&s.node, &k);
        }
        Body::Sync { to } => {
            v.seq = s.seq;
            if !in_order {
                ask(state, &s.node, v, now);
            }
            if to.as_deref().is_none_or(|t| t == me) {
                state.pusher.publish_state();
            }
        }
        Body::State {
            members,
            first,
            last,
        } => {
            if first {
                v.pending = Some(members);
            } else if let (true, Some(p)) = (in_order, v.pending.as_mut()) {
                p.extend(members);
            } else {
                // A part went missing: this state is incomplete.
                v.pending = None;
                ask(state, &s.node, v, now);
            }
            v.seq = s.seq;
            if last {
                if let Some(all) = v.pending.take() {
                    v.asked = None;
                    replace(state, &s.node, v, all);
                }
            }
        }
    }
}

/// `node`'s members are now exactly `all`.
fn replace(state: &AppState, node: &str, v: &mut NodeView, all: Vec<Member>) {
    let now: HashMap<Key, Member> = all.into_iter().map(|m| (key(&m), m)).collect();
    for k in v.members.iter().filter(|k| !now.contains_key(*k)) {
        state.pusher.remote_leave(node, k);
    }
    for m in now.values() {
        state.pusher.remote_join(node, m);
    }
    v.members = now.into_keys().collect();
}

/// Drops the nodes silent for longer than `timeout`.
fn expire(state: &AppState, nodes: &mut HashMap<String, NodeView>, timeout: Duration) {
    let now = Instant::now();
    let dead: Vec<String> = nodes
        .iter()
        .filter(|(_, v)| now.duration_since(v.seen) > timeout)
        .map(|(n, _)| n.clone())
        .collect();
    for node in dead {
        if let Some(v) = nodes.remove(&node) {
            tracing::warn!(%node, silent_for = ?timeout, "a node fell silent; its presence members leave");
            drop_node(state, &node, v);
        }
    }
}

/// A node is gone: its members leave. The lease holder reports them to the apps' webhooks.
fn drop_node(state: &AppState, node: &str, v: NodeView) {
    let report = state.webhooks.is_active();
    for k in &v.members {
        let Some(app) = state.pusher.remote_leave(node, k) else {
            continue;
        };
        if !report {
            continue;
        }
        if let Some(app) = state.pusher.apps.by_id(&app) {
            let e = json!({"name": "member_removed", "channel": &k.1, "user_id": &k.2});
            state.pusher.hooks.send(state, app, e);
        }
    }
    metrics::counter!("crier_pusher_presence_nodes_lost_total").increment(1);
}

//! Shared server state: settings, the log and hub, metrics, shutdown and connection
//! accounting.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use std::num::NonZeroU32;

use crier_core::entity::EntityStore;
use crier_core::keys::KeyStore;
use crier_core::{EventLog, Hub};
use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::error::ApiError;
use crate::monitor::ConnInfo;

/// Everything a handler needs. Cheap to clone.
#[derive(Clone)]
pub struct AppState(Arc<StateInner>);

/// The contents of [`AppState`].
pub struct StateInner {
    /// Validated configuration.
    pub settings: Settings,
    /// The log.
    pub log: Arc<dyn EventLog>,
    /// Entities, stored with the log and changed in its transactions.
    pub entities: Arc<dyn EntityStore>,
    /// The GraphQL schema.
    pub graphql: crate::graphql::CrierSchema,
    /// Cursors and live fan-out.
    pub hub: Hub,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Cancelled at shutdown; every stream selects on it.
    pub shutdown: CancellationToken,
    /// Background tasks to wait for at shutdown.
    pub tasks: TaskTracker,
    /// Open streams and sockets.
    pub conns: Connections,
    /// API keys.
    pub keys: Arc<dyn KeyStore>,
    /// Durable subscriptions.
    pub subs: Arc<dyn crier_core::WebhookStore>,
    /// Saved named filters.
    pub filters: Arc<dyn crier_store::filters::FilterStore>,
    /// Webhook delivery tasks.
    pub webhooks: crate::webhooks::Dispatcher,
    /// The HTTP client of webhook deliveries.
    pub webhook_client: reqwest::Client,
    /// Replays in progress (and recently finished).
    pub replays: crate::service::replays::Replays,
    /// The cluster follower, when this node shares its log with others.
    pub follower: OnceLock<Option<crier_cluster::Follower>>,
    /// Per-tenant publish rate (`None`: unlimited).
    pub rate: Option<RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock>>,
    /// Pusher Channels apps, channels and presence (§13).
    pub pusher: crate::pusher::Pusher,
    /// The transactional outbox's progress, for `/readyz`.
    pub outbox: crate::outbox::OutboxStatus,
    /// Whether the store can write, for `/readyz` (§12.8).
    pub readiness: crate::readiness::Readiness,
    /// The lock on the SQLite data directory, held until the log is closed (§12.8).
    pub dir_lock: Mutex<Option<crate::datadir::DirLock>>,
    /// The address the hub serves on, once it does: its own origin without `public_url`.
    pub bound_addr: OnceLock<std::net::SocketAddr>,
}

impl Deref for AppState {
    type Target = StateInner;
    fn deref(&self) -> &StateInner {
        &self.0
    }
}

impl AppState {
    /// Builds the state.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        settings: Settings,
        log: Arc<dyn EventLog>,
        entities: Arc<dyn EntityStore>,
        hub: Hub,
        keys: Arc<dyn KeyStore>,
        subs: Arc<dyn crier_core::WebhookStore>,
        filters: Arc<dyn crier_store::filters::FilterStore>,
        shutdown: CancellationToken,
    ) -> Self {
        let metrics = metrics_handle(&settings.node_id);
        let webhook_client =
            crate::webhooks::client(settings.webhooks.allow_private, settings.webhooks.timeout);
        let rate = NonZeroU32::new(
            u32::try_from(settings.limits.publish_rate_per_tenant).unwrap_or(u32::MAX),
        )
        .map(|per_s| RateLimiter::keyed(Quota::per_second(per_s)));
        AppState(Arc::new(StateInner {
            keys,
            subs,
            filters,
            webhooks: crate::webhooks::Dispatcher::default(),
            webhook_client,
            replays: Default::default(),
            follower: OnceLock::new(),
            rate,
            pusher: crate::pusher::Pusher::new(settings.pusher.clone()),
            outbox: Default::default(),
            readiness: Default::default(),
            dir_lock: Mutex::new(None),
            bound_addr: OnceLock::new(),
            settings,
            log,
            entities,
            graphql: crate::graphql::schema(),
            hub,
            metrics,
            shutdown,
            tasks: TaskTracker::new(),
            conns: Connections::default(),
        }))
    }
}

impl AppState {
    /// Installs the cluster follower (once, at start).
    pub fn set_follower(&self, f: Option<crier_cluster::Follower>) {
        let _ = self.follower.set(f);
    }

    /// `None` for a single node; else whether the broker is up.
    pub fn broker_up(&self) -> Option<bool> {
        self.follower
            .get()
            .and_then(|f| f.as_ref())
            .map(|f| f.broker_up())
    }

    /// Takes `n` events from the tenant's publish budget, or refuses with `rate_limited` and
    /// the seconds to wait. Checked before anything is appended, so a refused batch leaves
    /// nothing behind.
    pub fn check_rate(&self, tenant: &str, n: usize) -> Result<(), crate::service::Error> {
        let Some(limiter) = &self.rate else {
            return Ok(());
        };
        let per_s = self.settings.limits.publish_rate_per_tenant;
        let n32 = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        let refuse = |wait_s: u64, msg: String| {
            metrics::counter!("crier_limit_hits_total", "limit" => "publish_rate_per_tenant")
                .increment(1);
            Err(crate::service::Error::limit_hit(
                "rate_limited",
                msg,
                wait_s,
            ))
        };
        match limiter.check_key_n(&tenant.to_string(), n32) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(not_until)) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                refuse(
                    wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
                    format!("this tenant may publish {per_s} events per second (limits.publish_rate_per_tenant); retry later"),
                )
            }
            Err(_) => refuse(
                1,
                format!("a batch of {n} events exceeds the tenant's rate of {per_s} events per second; send smaller batches"),
            ),
        }
    }
}

/// The process-wide Prometheus recorder (installed once; later calls share it). Every
/// series carries the `node_id` label of the node that installed it.
pub fn metrics_handle(node_id: &str) -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let latency = [
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ];
            let builder = PrometheusBuilder::new()
                .add_global_label("node_id", node_id)
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &latency)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("crier_log_group_events".into()),
                        &[
                            1.0, 2.0, 5.0, 10.0, 50.0, 100.0, 500.0, 1000.0, 5000.0, 20000.0,
                        ],
                    )
                });
            match builder {
                Ok(b) => {
                    let recorder = b.build_recorder();
                    let handle = recorder.handle();
                    if metrics::set_global_recorder(recorder).is_err() {
                        tracing::warn!(
                            "a metrics recorder was already installed; /metrics will be empty"
                        );
                    }
                    handle
                }
                Err(e) => {
                    tracing::warn!(error = %e, "metrics buckets rejected; using summaries");
                    let recorder = PrometheusBuilder::new().build_recorder();
                    let handle = recorder.handle();
                    let _ = metrics::set_global_recorder(recorder);
                    handle
                }
            }
        })
        .clone()
}

/// A transport, for accounting and the connection registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Server-Sent Events.
    Sse,
    /// WebSocket (`/v1/ws`).
    Ws,
    /// The GraphQL WebSocket (`GET /graphql`); counted with WebSocket in stats and metrics.
    Graphql,
    /// The Pusher protocol (§13).
    Pusher,
}

impl Transport {
    /// Every transport, in the order of their counters.
    pub const ALL: [Transport; 4] = [
        Transport::Sse,
        Transport::Ws,
        Transport::Graphql,
        Transport::Pusher,
    ];

    /// Its name in the connection registry (`GET /v1/connections`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::Graphql => "graphql",
            Transport::Pusher => "pusher",
        }
    }

    /// The transport of that name.
    pub fn parse(s: &str) -> Option<Transport> {
        Transport::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// The `transport` label of `crier_connections`: GraphQL sockets count as `ws`, as they
    /// do in `GET /v1/stats`.
    fn metric_label(self) -> &'static str {
        match self {
            Transport::Graphql => "ws",
            t => t.as_str(),
        }
    }
}

/// One tenant's open connections: counts per transport and the registry's entries by id.
#[derive(Default)]
struct TenantConns {
    counts: [usize; 4],
    open: BTreeMap<u64, Arc<ConnInfo>>,
}

/// Open connections per tenant and transport, and the registry behind
/// `GET /v1/connections`. Opening and closing take one short lock; delivering an event
/// touches only the connection's own atomics (see [`crate::monitor`]).
#[derive(Default)]
pub struct Connections {
    next_id: AtomicU64,
    // A std Mutex: held for a map update or a page copy only, never across an await.
    by_tenant: Mutex<HashMap<String, TenantConns>>,
}

/// A page of the registry.
pub struct ConnPage {
    /// Connections in id order.
    pub conns: Vec<Arc<ConnInfo>>,
    /// Open connections of the selected tenants and transports.
    pub total: usize,
    /// Whether more follow the page.
    pub more: bool,
}

impl Connections {
    /// Counts and registers a new connection, refusing it past the per-tenant limit.
    pub fn open(
        &self,
        state: &AppState,
        tenant: &str,
        transport: Transport,
        actor: &str,
        remote: Option<SocketAddr>,
    ) -> Result<ConnGuard, ApiError> {
        let limit = state.settings.limits.max_connections_per_tenant;
        let info = Arc::new(ConnInfo::new(
            self.next_id.fetch_add(1, Ordering::Relaxed) + 1,
            tenant,
            transport,
            actor,
            remote,
        ));
        let mut map = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        let conns = map.entry(tenant.to_string()).or_default();
        if conns.counts.iter().sum::<usize>() >= limit {
            if conns.open.is_empty() {
                map.remove(tenant);
            }
            metrics::counter!("crier_limit_hits_total", "limit" => "max_connections_per_tenant")
                .increment(1);
            return Err(ApiError::too_many(
                "too_many_connections",
                format!("this tenant has {limit} open connections, the most allowed (limits.max_connections_per_tenant)"),
                1,
            ));
        }
        conns.counts[transport as usize] += 1;
        conns.open.insert(info.id, info.clone());
        drop(map);
        metrics::gauge!("crier_connections", "transport" => transport.metric_label())
            .increment(1.0);
        Ok(ConnGuard {
            state: state.clone(),
            info,
        })
    }

    /// Open connections of a tenant (`None`: all tenants) per transport: `(sse, ws)`, GraphQL
    /// sockets counted with WebSocket.
    pub fn count(&self, tenant: Option<&str>) -> (usize, usize) {
        let map = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = (0, 0);
        for (t, c) in map.iter() {
            if tenant.is_none_or(|x| x == t) {
                out.0 += c.counts[Transport::Sse as usize];
                out.1 += c.counts[Transport::Ws as usize] + c.counts[Transport::Graphql as usize];
            }
        }
        out
    }

    /// Open Pusher connections of a tenant (`None`: all tenants).
    pub fn count_pusher(&self, tenant: Option<&str>) -> usize {
        let map = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(t, _)| tenant.is_none_or(|x| x == *t))
            .map(|(_, c)| c.counts[Transport::Pusher as usize])
            .sum()
    }

    /// Up to `limit` open connections with ids above `after`, of a tenant (`None`: all) and
    /// the transports in `transports`, in id order. Costs the page, not the registry: each
    /// tenant's entries are kept in id order.
    pub fn page(
        &self,
        tenant: Option<&str>,
        transports: &[Transport],
        after: u64,
        limit: usize,
    ) -> ConnPage {
        let map = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        let mut conns = Vec::new();
        let mut total = 0;
        let mut more = false;
        for (t, c) in map.iter() {
            if tenant.is_some_and(|x| x != t) {
                continue;
            }
            total += transports
                .iter()
                .map(|x| c.counts[*x as usize])
                .sum::<usize>();
            let mut taken = 0;
            for info in c.open.range(after.saturating_add(1)..).map(|(_, i)| i) {
                if !transports.contains(&info.transport) {
                    continue;
                }
                if taken == limit {
                    more = true;
                    break;
                }
                conns.push(info.clone());
                taken += 1;
            }
        }
        drop(map);
        conns.sort_by_key(|c| c.id);
        if conns.len() > limit {
            conns.truncate(limit);
            more = true;
        }
        ConnPage { conns, total, more }
    }
}

/// Releases a connection's slot and its registry entry when dropped, whichever way the
/// connection ends.
pub struct ConnGuard {
    state: AppState,
    info: Arc<ConnInfo>,
}

impl ConnGuard {
    /// The connection's registry entry.
    pub fn info(&self) -> &Arc<ConnInfo> {
        &self.info
    }
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        let transport = self.info.transport;
        metrics::gauge!("crier_connections", "transport" => transport.metric_label())
            .decrement(1.0);
        let mut map = self
            .state
            .conns
            .by_tenant
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get_mut(&self.info.tenant) {
            c.counts[transport as usize] = c.counts[transport as usize].saturating_sub(1);
            c.open.remove(&self.info.id);
            if c.counts.iter().sum::<usize>() == 0 && c.open.is_empty() {
                map.remove(&self.info.tenant);
            }
        }
    }
}

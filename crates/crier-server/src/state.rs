//! Shared server state: settings, the log and hub, metrics, shutdown and connection
//! accounting.

use std::collections::HashMap;
use std::ops::Deref;
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
    pub subs: Arc<dyn crier_store::subs::SubStore>,
    /// Webhook delivery tasks.
    pub webhooks: crate::webhooks::Dispatcher,
    /// The HTTP client of webhook deliveries.
    pub webhook_client: reqwest::Client,
    /// Replays in progress (and recently finished).
    pub replays: crate::replays::Replays,
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
    pub fn new(
        settings: Settings,
        log: Arc<dyn EventLog>,
        entities: Arc<dyn EntityStore>,
        hub: Hub,
        keys: Arc<dyn KeyStore>,
        subs: Arc<dyn crier_store::subs::SubStore>,
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

    /// Takes `n` events from the tenant's publish budget, or answers 429 with `Retry-After`.
    /// Checked before anything is appended, so a refused batch leaves nothing behind.
    pub fn check_rate(&self, tenant: &str, n: usize) -> Result<(), ApiError> {
        let Some(limiter) = &self.rate else {
            return Ok(());
        };
        let per_s = self.settings.limits.publish_rate_per_tenant;
        let n32 = NonZeroU32::new(u32::try_from(n).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        let refuse = |wait_s: u64, msg: String| {
            metrics::counter!("crier_limit_hits_total", "limit" => "publish_rate_per_tenant")
                .increment(1);
            Err(ApiError::too_many("rate_limited", msg, wait_s))
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

/// A transport, for accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Server-Sent Events.
    Sse,
    /// WebSocket.
    Ws,
    /// The Pusher protocol (§13).
    Pusher,
}

impl Transport {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Sse => "sse",
            Transport::Ws => "ws",
            Transport::Pusher => "pusher",
        }
    }
}

/// Open connections per tenant and transport.
#[derive(Default)]
pub struct Connections {
    // A std Mutex: held for a map update only, never across an await.
    by_tenant: Mutex<HashMap<String, [usize; 3]>>,
}

impl Connections {
    /// Counts a new connection, refusing it past the per-tenant limit.
    pub fn open(
        &self,
        state: &AppState,
        tenant: &str,
        transport: Transport,
    ) -> Result<ConnGuard, ApiError> {
        let limit = state.settings.limits.max_connections_per_tenant;
        let mut map = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        let counts = map.entry(tenant.to_string()).or_default();
        if counts.iter().sum::<usize>() >= limit {
            metrics::counter!("crier_limit_hits_total", "limit" => "max_connections_per_tenant")
                .increment(1);
            return Err(ApiError::too_many(
                "too_many_connections",
                format!("this tenant has {limit} open connections, the most allowed (limits.max_connections_per_tenant)"),
                1,
            ));
        }
        counts[transport as usize] += 1;
        metrics::gauge!("crier_connections", "transport" => transport.as_str()).increment(1.0);
        Ok(ConnGuard {
            state: state.clone(),
            tenant: tenant.to_string(),
            transport,
        })
    }

    /// Open connections of a tenant (`None`: all tenants) per transport: `(sse, ws)`.
    pub fn count(&self, tenant: Option<&str>) -> (usize, usize) {
        let map = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = (0, 0);
        for (t, c) in map.iter() {
            if tenant.is_none_or(|x| x == t) {
                out.0 += c[0];
                out.1 += c[1];
            }
        }
        out
    }

    /// Open Pusher connections of a tenant (`None`: all tenants).
    pub fn count_pusher(&self, tenant: Option<&str>) -> usize {
        let map = self.by_tenant.lock().unwrap_or_else(|p| p.into_inner());
        map.iter()
            .filter(|(t, _)| tenant.is_none_or(|x| x == *t))
            .map(|(_, c)| c[Transport::Pusher as usize])
            .sum()
    }
}

/// Releases a connection's slot when dropped.
pub struct ConnGuard {
    state: AppState,
    tenant: String,
    transport: Transport,
}

impl Drop for ConnGuard {
    fn drop(&mut self) {
        metrics::gauge!("crier_connections", "transport" => self.transport.as_str()).decrement(1.0);
        let mut map = self
            .state
            .conns
            .by_tenant
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get_mut(&self.tenant) {
            c[self.transport as usize] = c[self.transport as usize].saturating_sub(1);
            if c.iter().sum::<usize>() == 0 {
                map.remove(&self.tenant);
            }
        }
    }
}

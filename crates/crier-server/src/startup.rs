//! The composition root: opens the stores the configuration names, builds the [`AppState`],
//! starts the background work (cluster follower, readiness, presence, webhooks, retention,
//! the outbox), serves the router on a listener, and closes everything in order.

use std::sync::Arc;
#[cfg(feature = "postgres")]
use std::time::Duration;

use crier_core::entity::EntityStore;
use crier_core::keys::KeyStore;
use crier_core::{EventLog, Hub};
use crier_store::filters::FilterStore;
#[cfg(feature = "postgres")]
use crier_store::{PgFilters, PgKeys, PgSubs, PostgresLog};
use crier_store::{SqliteFilters, SqliteKeys, SqliteLog, SqliteSubs};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[cfg(feature = "postgres")]
use crate::background::leader_loop;
use crate::background::retention_loop;
use crate::config::{BrokerKind, Settings, StoreKind};
#[cfg(feature = "postgres")]
use crate::outbox_drain;
use crate::state::AppState;
use crate::{datadir, listener, metrics_catalog, pusher, readiness, router, webhooks};

/// Errors that stop the hub from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServeError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}: {source}")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The log could not be opened or closed.
    #[error(transparent)]
    Log(#[from] crier_core::LogError),
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    /// The broker could not be set up.
    #[error("broker: {0}")]
    Broker(String),
    /// The configured connection limit does not fit in the open-file limit.
    #[error("{0}")]
    Capacity(String),
    /// The configuration names a backend this build was compiled without.
    #[error("{0}")]
    Unsupported(&'static str),
    /// Another process serves the data directory, or it cannot be locked (§12.8).
    #[error(transparent)]
    DataDirLock(#[from] datadir::LockError),
}

/// Opens the embedded SQLite log under `data_dir`.
pub fn open_log(settings: &Settings) -> Result<Arc<SqliteLog>, ServeError> {
    std::fs::create_dir_all(&settings.data_dir).map_err(|source| ServeError::DataDir {
        path: settings.data_dir.display().to_string(),
        source,
    })?;
    let path = settings.data_dir.join("crier.db");
    Ok(Arc::new(SqliteLog::open(&path, settings.durability)?))
}

/// Runs the hub on `listener` until `shutdown` is cancelled; then ends streams, waits for
/// connections up to `shutdown_timeout`, and closes (flushes) the log last.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServeError> {
    let state = start(settings, shutdown).await?;
    serve(state, listener).await
}

/// Opens the stores and starts the hub's background work (cluster follower, webhooks,
/// retention) without serving: the state's router can then be served by [`serve`] or mounted
/// in another application. `shutdown` stops the background work; [`close`] waits for it and
/// flushes the log.
pub async fn start(
    settings: Settings,
    shutdown: CancellationToken,
) -> Result<AppState, ServeError> {
    type Stores = (
        Arc<dyn EventLog>,
        Arc<dyn EntityStore>,
        Arc<dyn KeyStore>,
        Arc<dyn crier_core::WebhookStore>,
        Arc<dyn FilterStore>,
    );
    // Without the `postgres` feature every path that reaches its use assigns it.
    #[cfg_attr(not(feature = "postgres"), allow(unused_assignments))]
    let mut dir_lock = None;
    #[cfg(feature = "postgres")]
    let mut pg_probe = None;
    let (log, entities, keys, subs, filters): Stores = match &settings.store {
        StoreKind::Sqlite => {
            // One process per data directory: taken before the log is opened, so a second
            // hub leaves the first one's file alone.
            std::fs::create_dir_all(&settings.data_dir).map_err(|source| ServeError::DataDir {
                path: settings.data_dir.display().to_string(),
                source,
            })?;
            dir_lock = Some(datadir::lock(&settings.data_dir)?);
            let log = open_log(&settings)?;
            // One writer for the whole file: the side tables write through the log's writer
            // thread and read on read-only connections (ARCHITECTURE.md).
            let keys = Arc::new(SqliteKeys::with_log(&log)?);
            let subs = Arc::new(SqliteSubs::with_log(&log).await?);
            let filters = Arc::new(SqliteFilters::with_log(&log).await?);
            (log.clone(), log, keys, subs, filters)
        }
        #[cfg(not(feature = "postgres"))]
        StoreKind::Postgres(_) => {
            return Err(ServeError::Unsupported(
                "a PostgreSQL store needs the `postgres` feature",
            ))
        }
        #[cfg(feature = "postgres")]
        StoreKind::Postgres(url) => {
            let schema = Some(settings.store_schema.as_str());
            let log = Arc::new(PostgresLog::open(url, schema).await?);
            let subs = Arc::new(PgSubs::open(url, schema).await?);
            pg_probe = Some(subs.clone());
            (
                log.clone(),
                log,
                Arc::new(PgKeys::open(url, schema).await?),
                subs,
                Arc::new(PgFilters::open(url, schema).await?),
            )
        }
    };
    let probe = match &settings.store {
        StoreKind::Sqlite => Some(readiness::WriteProbe::Dir(settings.data_dir.clone())),
        #[cfg(feature = "postgres")]
        StoreKind::Postgres(_) => pg_probe.map(readiness::WriteProbe::Postgres),
        #[cfg(not(feature = "postgres"))]
        StoreKind::Postgres(_) => None,
    };
    let hub = Hub::with_reader_buffer_bytes(log.clone(), settings.limits.reader_buffer_bytes);
    let (follower, presence_broker) = match (&settings.store, &settings.broker) {
        // One node on its own file: committed events go straight to the hub.
        (StoreKind::Sqlite, BrokerKind::Local) => {
            log.set_commit_sink(hub.commit_sink());
            (None, None)
        }
        (_, kind) => {
            #[cfg(any(feature = "nats", feature = "redis"))]
            let subject = format!("crier.{}.head", settings.store_schema);
            let broker: Arc<dyn crier_cluster::Broker> = match kind {
                BrokerKind::Local => Arc::new(crier_cluster::LocalBroker::default()),
                #[cfg(not(feature = "nats"))]
                BrokerKind::Nats(_) => {
                    return Err(ServeError::Unsupported(
                        "a NATS broker needs the `nats` feature",
                    ))
                }
                #[cfg(feature = "nats")]
                BrokerKind::Nats(url) => Arc::new(
                    crier_cluster::nats::NatsBroker::connect(url, &subject)
                        .await
                        .map_err(|e| ServeError::Broker(e.to_string()))?,
                ),
                #[cfg(not(feature = "redis"))]
                BrokerKind::Redis(_) => {
                    return Err(ServeError::Unsupported(
                        "a Redis broker needs the `redis` feature",
                    ))
                }
                #[cfg(feature = "redis")]
                BrokerKind::Redis(url) => Arc::new(
                    crier_cluster::redis::RedisBroker::new(url, &subject)
                        .map_err(|e| ServeError::Broker(e.to_string()))?,
                ),
            };
            let cfg = crier_cluster::FollowerConfig {
                node_id: settings.node_id.clone(),
                ..Default::default()
            };
            let f = crier_cluster::Follower::spawn(
                cfg,
                hub.clone(),
                log.clone(),
                broker.clone(),
                shutdown.child_token(),
            );
            log.set_commit_sink(f.commit_sink());
            (Some(f), Some(broker))
        }
    };
    let state = AppState::new(
        settings.clone(),
        log.clone(),
        entities,
        hub,
        keys,
        subs,
        filters,
        shutdown.clone(),
    );
    state.set_follower(follower);
    *state.dir_lock.lock().unwrap_or_else(|p| p.into_inner()) = dir_lock;
    if let Some(p) = probe {
        readiness::start(&state, p).await;
    }
    // Presence members shared with the other nodes through the same broker.
    if let Some(broker) = presence_broker {
        pusher::presence::start(&state, broker);
    }
    metrics_catalog::register(&settings);
    match &settings.store {
        StoreKind::Sqlite => {
            webhooks::start_all(&state).await;
            state.tasks.spawn(retention_loop(state.clone()));
            // One drainer per outbox table, whichever hub it belongs to.
            #[cfg(feature = "postgres")]
            if let Some(o) = &settings.outbox {
                let lease = crier_store::Lease::contend(
                    o.url.clone(),
                    lease_key(&format!("outbox:{}", o.table)),
                    Duration::from_secs(2),
                    shutdown.child_token(),
                );
                state
                    .tasks
                    .spawn(outbox_drain::run(state.clone(), o.clone(), lease));
            }
        }
        #[cfg(not(feature = "postgres"))]
        StoreKind::Postgres(_) => {}
        #[cfg(feature = "postgres")]
        StoreKind::Postgres(url) => {
            // Webhook dispatch and retention run on one node at a time: the lease holder.
            let lease = crier_store::Lease::contend(
                url.clone(),
                lease_key(&settings.store_schema),
                Duration::from_secs(2),
                shutdown.child_token(),
            );
            // The outbox drains on the node that holds the lease, like webhooks.
            if let Some(o) = &settings.outbox {
                state
                    .tasks
                    .spawn(outbox_drain::run(state.clone(), o.clone(), lease.clone()));
            }
            state.tasks.spawn(leader_loop(state.clone(), lease));
        }
    }
    Ok(state)
}

/// Serves a started hub on `listener` until its shutdown token is cancelled; then ends
/// streams, waits for connections up to `shutdown_timeout`, and closes the hub ([`close`]).
pub async fn serve(state: AppState, listener: TcpListener) -> Result<(), ServeError> {
    let settings = &state.settings;
    let shutdown = state.shutdown.clone();
    // A connection limit that cannot hold stops the hub before it accepts anything.
    let capacity = match listener::plan(settings.limits.max_connections) {
        Ok(c) => c,
        Err(e) => {
            state.shutdown.cancel();
            close(&state).await?;
            return Err(ServeError::Capacity(e));
        }
    };
    tracing::info!(
        max_connections = capacity.max_connections,
        open_files = capacity.open_files,
        "connection capacity"
    );
    let addr = listener.local_addr()?;
    // The hub's own origin, without `public_url`, is that of the address it listens on.
    let _ = state.bound_addr.set(addr);
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let streams = match StreamRuntime::start(settings.stream_threads) {
        Ok(rt) => rt,
        Err(e) => {
            state.shutdown.cancel();
            close(&state).await?;
            return Err(ServeError::Io(e));
        }
    };
    tracing::info!(%addr, %scheme, head = state.log.head(), "crier is listening");
    let server = listener::serve(
        listener,
        router::app(state.clone()),
        listener::Serving {
            capacity,
            header_read_timeout: settings.limits.header_read_timeout,
            tls: settings.tls.clone(),
            streams: streams.handle(),
        },
        shutdown.clone(),
    );
    let mut server = std::pin::pin!(server);
    tokio::select! {
        () = &mut server => {}
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(settings.shutdown_timeout).await;
        } => {
            tracing::warn!("connections did not finish within shutdown_timeout; closing them");
        }
    }
    // Background tasks a stream started still run there until the hub is closed.
    let closed = close(&state).await;
    drop(streams);
    closed
}

/// The runtime that serves event streams and WebSockets, apart from the one that answers
/// requests: a fan-out wakes thousands of socket writers at once, and a publish answered
/// on the same runtime would wait behind them (its answer and its reply from the log's
/// writer are queued after every writer woken before).
struct StreamRuntime(Option<tokio::runtime::Runtime>);

impl StreamRuntime {
    fn start(threads: usize) -> std::io::Result<StreamRuntime> {
        let threads = match threads {
            0 => {
                default_stream_threads(std::thread::available_parallelism().map_or(2, usize::from))
            }
            n => n,
        };
        // Its threads log where the hub's caller logs, even to a subscriber it set for its
        // own thread only (an embedding application, a test).
        let dispatch = tracing::dispatcher::get_default(|d| d.clone());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("crier-streams")
            .on_thread_start(move || {
                // Kept for the thread's life.
                std::mem::forget(tracing::dispatcher::set_default(&dispatch));
            })
            .enable_all()
            .build()?;
        Ok(StreamRuntime(Some(rt)))
    }

    fn handle(&self) -> Option<tokio::runtime::Handle> {
        self.0.as_ref().map(|rt| rt.handle().clone())
    }
}

/// Half the cores, rounded up. Writing to sockets is as much the kernel's work as the
/// stream threads' own (its TCP stack runs in the writer's time), and the request runtime,
/// the fan-out stage and the log's writer need cores too: on two cores, two stream threads
/// measured about twice the CPU per delivery of one and delivered about a third less.
fn default_stream_threads(cores: usize) -> usize {
    cores.div_ceil(2).max(1)
}

impl Drop for StreamRuntime {
    /// Ends whatever still runs there (connections past `shutdown_timeout`) without blocking:
    /// this is dropped on the hub's own runtime.
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Waits for the background tasks of a hub whose shutdown token was cancelled, then closes
/// (flushes) the log.
pub async fn close(state: &AppState) -> Result<(), ServeError> {
    state.tasks.close();
    state.tasks.wait().await;
    let closed = state.log.close().await;
    // The data directory is free for the next process once the log is flushed (or failed
    // to flush: this process writes nothing more either way).
    state
        .dir_lock
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    closed?;
    tracing::info!("crier stopped; the log is flushed");
    Ok(())
}

#[cfg(feature = "postgres")]
/// The advisory-lock key of a cluster's lease: one per log schema, so clusters sharing a
/// database do not share a leader.
fn lease_key(schema: &str) -> i64 {
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in schema.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    #[test]
    fn stream_threads_default_to_half_the_cores_rounded_up() {
        let half = super::default_stream_threads;
        assert_eq!(
            [half(0), half(1), half(2), half(3), half(8)],
            [1, 1, 1, 2, 4]
        );
    }
}

//! The PostgreSQL log: the same contract as SQLite, for a log shared by several hub nodes.
//!
//! Seq assignment: every append transaction first locks the one `head` row of `crier_meta`
//! (`SELECT … FOR UPDATE`), takes the next seqs from it, inserts, writes the new head and
//! commits. The row lock is held until commit, so appends from every node are serialised on
//! it: a transaction can only take seq `n + 1` after the one that took `n` has committed or
//! rolled back. Seqs are therefore strictly increasing and gapless *in commit order*, and a
//! reader never sees seq 11 committed while 10 is still in flight. The cost is that commits
//! to one log are sequential across the cluster; each node batches its appends (group commit
//! through one writer task per node, a savepoint per append), so one lock round trip and one
//! commit carry many events.
//!
//! Schema migrations are embedded and versioned in `crier_meta.schema_version`; a store
//! written by a newer crier is refused. Every table lives in one PostgreSQL schema (default
//! `public`), so several logs can share a database.
//!
//! The files follow those seams: `migrate.rs` holds the schema, `writer.rs` group commit,
//! `read.rs` reads and counters, `prune.rs` retention, `entities.rs` the entity tables; this
//! file opens the log and implements the traits. `keys.rs`, `filters.rs` and `tables.rs`
//! (subscriptions) are the side stores hubs share through the same database, opened through
//! `side.rs`; `lease.rs` is the cluster lease.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crier_core::entity::{
    Applied, EntityError, EntityKey, EntityRow, EntityStore, LinkQuery, LinkRow, Mutation,
};
use crier_core::log::{BoxFuture, CommitSink, EventCounts};
use crier_core::{
    AppendResult, Committed, EventLog, LogError, NewEvent, Principal, ReadPage, ReadQuery, Scope,
};
use deadpool_postgres::Pool;
use tokio::sync::{mpsc, oneshot};

use entities::{Entities, EntityNames};
use writer::writer_loop;

use crate::group_commit::{MutateReq, Pending};
use crate::rows::{committed, i, u, EVENT_COLUMNS as COLUMNS};

mod columns;
mod entities;
mod filters;
mod keys;
pub mod lease;
mod migrate;
mod prune;
mod read;
mod side;
mod subs;
mod writer;

pub use filters::PgFilters;
pub use keys::PgKeys;
pub use lease::Lease;
pub use subs::PgSubs;

/// A parsed PostgreSQL connection string (for validating configuration).
pub use tokio_postgres::Config as PgConfig;

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> LogError {
    LogError::backend(e)
}

fn pool_err(e: deadpool_postgres::PoolError) -> LogError {
    LogError::backend(e)
}

/// Table names qualified by the log's schema.
#[derive(Clone)]
struct Names {
    meta: String,
    events: String,
    stats: String,
    entities: EntityNames,
}

struct Shared {
    pool: Pool,
    names: Names,
    head: AtomicU64,
    pruned: AtomicU64,
    sink: OnceLock<CommitSink>,
    /// The series bucket of the last group this node committed: when a group opens a new
    /// one, buckets past `SERIES_KEEP_SECS` are dropped.
    series_bucket: std::sync::atomic::AtomicI64,
}

/// The PostgreSQL event log. See the module docs.
pub struct PostgresLog {
    shared: Arc<Shared>,
    tx: Mutex<Option<mpsc::Sender<Pending>>>,
    writer: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

fn quote_ident(s: &str) -> Result<String, LogError> {
    if s.is_empty() || !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(backend(std::io::Error::other(format!(
            "schema name {s:?} must be letters, digits and underscores"
        ))));
    }
    Ok(format!("\"{s}\""))
}

impl PostgresLog {
    /// Hands `p` to this node's writer task; `Closed` once the log is closed.
    async fn to_writer(&self, p: Pending) -> Result<(), LogError> {
        let tx = self
            .tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(LogError::Closed)?;
        tx.send(p).await.map_err(|_| LogError::Closed)
    }

    /// Connects to `url` (`postgres://user@host:port/db`), migrates the tables in `schema`
    /// (default `public`) and starts this node's writer task.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<PostgresLog, LogError> {
        let pool = side::pool(url, 16)?;
        let schema = quote_ident(schema.unwrap_or("public"))?;
        let names = Names {
            meta: format!("{schema}.crier_meta"),
            events: format!("{schema}.crier_events"),
            stats: format!("{schema}.crier_stats"),
            entities: EntityNames {
                entities: format!("{schema}.crier_entities"),
                links: format!("{schema}.crier_links"),
            },
        };
        let mut client = pool.get().await.map_err(pool_err)?;
        migrate::migrate(&mut client, &names, &schema).await?;
        let (head, pruned) = read_bounds(&client, &names).await?;
        drop(client);
        let shared = Arc::new(Shared {
            pool,
            names,
            head: AtomicU64::new(head),
            pruned: AtomicU64::new(pruned),
            sink: OnceLock::new(),
            series_bucket: std::sync::atomic::AtomicI64::new(i64::MIN),
        });
        let (tx, rx) = mpsc::channel(4096);
        let writer = tokio::spawn(writer_loop(shared.clone(), rx));
        Ok(PostgresLog {
            shared,
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Re-reads the head and retention bound from the database (other nodes append too).
    pub async fn refresh(&self) -> Result<u64, LogError> {
        let client = self.shared.pool.get().await.map_err(pool_err)?;
        let (head, pruned) = read_bounds(&client, &self.shared.names).await?;
        self.shared.head.fetch_max(head, Ordering::AcqRel);
        self.shared.pruned.fetch_max(pruned, Ordering::AcqRel);
        Ok(head)
    }
}

async fn read_bounds(client: &tokio_postgres::Client, n: &Names) -> Result<(u64, u64), LogError> {
    let rows = client
        .query(
            &format!(
                "SELECT key, value FROM {} WHERE key IN ('head', 'pruned_through')",
                n.meta
            ),
            &[],
        )
        .await
        .map_err(backend)?;
    let mut head = 0;
    let mut pruned = 0;
    for r in rows {
        let k: String = r.get(0);
        let v: i64 = r.get(1);
        if k == "head" {
            head = u(v);
        } else {
            pruned = u(v);
        }
    }
    Ok((head, pruned))
}

impl EventLog for PostgresLog {
    fn append(&self, batch: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<AppendResult>, LogError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            let t0 = Instant::now();
            let (reply, rx) = oneshot::channel();
            self.to_writer(Pending::Append { batch, reply }).await?;
            let out = rx.await.map_err(|_| LogError::Closed)?;
            metrics::histogram!("crier_log_append_seconds").record(t0.elapsed().as_secs_f64());
            out
        })
    }

    fn read(&self, query: ReadQuery) -> BoxFuture<'_, Result<ReadPage, LogError>> {
        Box::pin(self.read_impl(query))
    }

    fn get(
        &self,
        tenant: &str,
        id: &str,
    ) -> BoxFuture<'_, Result<Option<Arc<Committed>>, LogError>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        Box::pin(async move {
            let client = self.shared.pool.get().await.map_err(pool_err)?;
            let row = client
                .query_opt(
                    &format!(
                        "SELECT {COLUMNS} FROM {} WHERE tenant = $1 AND id = $2",
                        self.shared.names.events
                    ),
                    &[&tenant, &id],
                )
                .await
                .map_err(backend)?;
            row.as_ref().map(committed).transpose()
        })
    }

    fn head(&self) -> u64 {
        self.shared.head.load(Ordering::Acquire)
    }

    fn pruned_through(&self) -> u64 {
        self.shared.pruned.load(Ordering::Acquire)
    }

    fn prune(
        &self,
        max_age_us: Option<i64>,
        max_events: Option<u64>,
    ) -> BoxFuture<'_, Result<u64, LogError>> {
        Box::pin(self.prune_impl(max_age_us, max_events))
    }

    fn counts(&self, scope: Scope) -> BoxFuture<'_, Result<EventCounts, LogError>> {
        Box::pin(self.counts_impl(scope))
    }

    fn set_commit_sink(&self, sink: CommitSink) {
        // Installed once at start; a second call is ignored (the first sink stays).
        let _ = self.shared.sink.set(sink);
    }

    fn ping(&self) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            let client = self.shared.pool.get().await.map_err(pool_err)?;
            client.simple_query("SELECT 1").await.map_err(backend)?;
            Ok(())
        })
    }

    fn close(&self) -> BoxFuture<'_, Result<(), LogError>> {
        Box::pin(async move {
            drop(self.tx.lock().unwrap_or_else(|p| p.into_inner()).take());
            let writer = self.writer.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(w) = writer {
                w.await.map_err(backend)?;
            }
            self.shared.pool.close();
            Ok(())
        })
    }
}

impl EntityStore for PostgresLog {
    fn mutate(
        &self,
        mutation: Mutation,
        principal: Principal,
        max_event_bytes: usize,
    ) -> BoxFuture<'_, Result<Applied, EntityError>> {
        Box::pin(async move {
            let (reply, rx) = oneshot::channel();
            let req = MutateReq {
                mutation,
                principal,
                max_event_bytes,
                reply,
            };
            self.to_writer(Pending::Mutate(Box::new(req))).await?;
            rx.await.map_err(|_| LogError::Closed)?
        })
    }

    fn entity(
        &self,
        tenant: &str,
        key: &EntityKey,
    ) -> BoxFuture<'_, Result<Option<EntityRow>, LogError>> {
        let (tenant, key) = (tenant.to_string(), key.clone());
        Box::pin(async move {
            let client = self.shared.pool.get().await.map_err(pool_err)?;
            let tables = Entities::new(&**client, &self.shared.names.entities);
            let row = tables.entity_row(&tenant, &key).await?;
            Ok(row.filter(EntityRow::live))
        })
    }

    fn entities(
        &self,
        tenant: &str,
        kind: &str,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<EntityRow>, LogError>> {
        let (tenant, kind) = (tenant.to_string(), kind.to_string());
        let after = after.map(str::to_string);
        Box::pin(async move {
            let client = self.shared.pool.get().await.map_err(pool_err)?;
            let tables = Entities::new(&**client, &self.shared.names.entities);
            tables.list(&tenant, &kind, after.as_deref(), limit).await
        })
    }

    fn links(&self, tenant: &str, q: LinkQuery) -> BoxFuture<'_, Result<Vec<LinkRow>, LogError>> {
        let tenant = tenant.to_string();
        Box::pin(async move {
            let client = self.shared.pool.get().await.map_err(pool_err)?;
            let tables = Entities::new(&**client, &self.shared.names.entities);
            tables.links(&tenant, &q).await
        })
    }
}

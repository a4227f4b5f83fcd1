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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use crier_core::entity::{
    self, Applied, EntityError, EntityKey, EntityRow, EntityStore, LinkQuery, LinkRow, Mutation,
    Outcome,
};
use crier_core::event::now_us;
use crier_core::log::{series_bucket, BoxFuture, CommitSink, EventCounts, Order, SERIES_KEEP_SECS};
use crier_core::{
    AppendResult, Committed, EventLog, LogError, NewEvent, Principal, PublishContext, ReadPage,
    ReadQuery, Scope, Severity,
};

use entities::{
    apply as entity_apply, load as entity_load, migrations as entity_migrations, EntityNames,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::types::ToSql;
use tokio_postgres::NoTls;

mod entities;
mod filters;
pub mod lease;
mod tables;

pub use filters::PgFilters;
pub use lease::Lease;
pub use tables::{PgKeys, PgSubs};

/// A parsed PostgreSQL connection string (for validating configuration).
pub use tokio_postgres::Config as PgConfig;

/// The schema version this build writes and understands.
const SCHEMA_VERSION: i64 = 1;
/// At most this many events go into one group commit.
const MAX_GROUP_EVENTS: usize = 10_000;
/// At most this many rows are examined by one read call.
const SCAN_BUDGET: i64 = 10_000;
/// At most this many rows are deleted by one retention step.
const PRUNE_CHUNK: u64 = 10_000;

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> LogError {
    LogError::backend(e)
}

fn pool_err(e: deadpool_postgres::PoolError) -> LogError {
    LogError::backend(e)
}

type Reply<T> = oneshot::Sender<Result<T, LogError>>;

struct Append {
    batch: Vec<NewEvent>,
    reply: Reply<Vec<AppendResult>>,
}

type MutateReply = oneshot::Sender<Result<Applied, EntityError>>;

/// An entity change: applied in the writer's group transaction, with its events.
struct MutateReq {
    mutation: Mutation,
    principal: Principal,
    max_event_bytes: usize,
    reply: MutateReply,
}

/// A request to this node's writer task.
enum WriteReq {
    Append(Append),
    Mutate(Box<MutateReq>),
}

impl WriteReq {
    fn events(&self) -> usize {
        match self {
            WriteReq::Append(a) => a.batch.len(),
            WriteReq::Mutate(_) => 1,
        }
    }

    fn fail(self, msg: &str) {
        let err = || backend(std::io::Error::other(msg.to_string()));
        match self {
            WriteReq::Append(a) => {
                let _ = a.reply.send(Err(err()));
            }
            WriteReq::Mutate(m) => {
                let _ = m.reply.send(Err(EntityError::Log(err())));
            }
        }
    }
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
    tx: Mutex<Option<mpsc::Sender<WriteReq>>>,
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

fn migrations(n: &Names, schema: &str) -> String {
    format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS {events} (
    seq BIGINT PRIMARY KEY,
    tenant TEXT NOT NULL,
    id TEXT NOT NULL,
    time_us BIGINT NOT NULL,
    recv_us BIGINT NOT NULL,
    type TEXT NOT NULL,
    source TEXT NOT NULL,
    category TEXT,
    severity SMALLINT NOT NULL,
    subject TEXT,
    tags TEXT[] NOT NULL,
    json BYTEA NOT NULL,
    UNIQUE (tenant, id)
);
CREATE INDEX IF NOT EXISTS crier_events_tenant_seq ON {events} (tenant, seq);
CREATE INDEX IF NOT EXISTS crier_events_tenant_time ON {events} (tenant, time_us);
CREATE INDEX IF NOT EXISTS crier_events_time ON {events} (time_us);
CREATE INDEX IF NOT EXISTS crier_events_recv ON {events} (recv_us);
CREATE INDEX IF NOT EXISTS crier_events_tenant_type ON {events} (tenant, type, seq);
CREATE TABLE IF NOT EXISTS {stats} (
    tenant TEXT NOT NULL, dim TEXT NOT NULL, key TEXT NOT NULL, n BIGINT NOT NULL,
    PRIMARY KEY (tenant, dim, key)
);
INSERT INTO {meta} (key, value) VALUES ('head', 0), ('pruned_through', 0) ON CONFLICT (key) DO NOTHING;",
        meta = n.meta,
        events = n.events,
        stats = n.stats,
    )
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn severity_key(s: Severity) -> &'static str {
    ["0", "1", "2", "3", "4"][usize::from(s.rank())]
}

const COLUMNS: &str =
    "seq, tenant, id, time_us, type, source, category, severity, subject, tags, json";

fn row_to_committed(r: &tokio_postgres::Row) -> Result<Arc<Committed>, tokio_postgres::Error> {
    let sev: i16 = r.try_get(7)?;
    let json: Vec<u8> = r.try_get(10)?;
    Ok(Arc::new(Committed {
        seq: u(r.try_get(0)?),
        tenant: r.try_get(1)?,
        id: r.try_get(2)?,
        time_us: r.try_get(3)?,
        kind: r.try_get(4)?,
        source: r.try_get(5)?,
        category: r.try_get(6)?,
        severity: Severity::from_rank(i64::from(sev)).unwrap_or_default(),
        subject: r.try_get(8)?,
        tags: r.try_get(9)?,
        json: Bytes::from(json),
        frames: Default::default(),
    }))
}

impl PostgresLog {
    /// Connects to `url` (`postgres://user@host:port/db`), migrates the tables in `schema`
    /// (default `public`) and starts this node's writer task.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<PostgresLog, LogError> {
        let pg: tokio_postgres::Config = url.parse().map_err(backend)?;
        let mgr = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(mgr).max_size(16).build().map_err(backend)?;
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
        {
            let tx = client.transaction().await.map_err(backend)?;
            // Serialise concurrent migrations of several nodes starting together.
            tx.execute("SELECT pg_advisory_xact_lock(7400)", &[])
                .await
                .map_err(backend)?;
            tx.batch_execute(&migrations(&names, &schema))
                .await
                .map_err(backend)?;
            tx.batch_execute(&entity_migrations(&names.entities))
                .await
                .map_err(backend)?;
            let version: Option<i64> = tx
                .query_opt(
                    &format!(
                        "SELECT value FROM {} WHERE key = 'schema_version'",
                        names.meta
                    ),
                    &[],
                )
                .await
                .map_err(backend)?
                .map(|r| r.get(0));
            match version {
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(LogError::SchemaTooNew {
                        found: v,
                        known: SCHEMA_VERSION,
                    })
                }
                Some(_) => {}
                None => {
                    tx.execute(
                        &format!(
                            "INSERT INTO {} (key, value) VALUES ('schema_version', $1)",
                            names.meta
                        ),
                        &[&SCHEMA_VERSION],
                    )
                    .await
                    .map_err(backend)?;
                }
            }
            tx.commit().await.map_err(backend)?;
        }
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

async fn writer_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<WriteReq>) {
    while let Some(first) = rx.recv().await {
        let mut n = first.events();
        let mut group = vec![first];
        while n < MAX_GROUP_EVENTS {
            match rx.try_recv() {
                Ok(a) => {
                    n += a.events();
                    group.push(a);
                }
                Err(_) => break,
            }
        }
        let t0 = Instant::now();
        match commit_group(&shared, group).await {
            Ok((committed, answers)) => {
                if let Some(last) = committed.last() {
                    shared.head.fetch_max(last.seq, Ordering::AcqRel);
                    if let Some(sink) = shared.sink.get() {
                        sink(&committed);
                    }
                }
                for a in answers {
                    a.send();
                }
            }
            Err((e, reqs)) => {
                tracing::error!(error = %e, "group commit failed");
                let msg = e.to_string();
                for r in reqs {
                    r.fail(&msg);
                }
            }
        }
        metrics::histogram!("crier_log_commit_seconds").record(t0.elapsed().as_secs_f64());
        metrics::histogram!("crier_log_group_events").record(n as f64);
    }
}

/// Where the answer of one request of a group goes, and what it is.
enum Slot {
    /// An append: its batch's index in the group insert.
    Append(Reply<Vec<AppendResult>>, usize),
    /// A mutation that was applied: its events' batch index and its outcome.
    Mutated(MutateReply, usize, Outcome),
    /// A mutation that was refused or failed (rolled back to its savepoint).
    Refused(MutateReply, EntityError),
}

/// The answer to send once the group has committed.
enum Answer {
    Append(Reply<Vec<AppendResult>>, Vec<AppendResult>),
    Mutate(MutateReply, Result<Applied, EntityError>),
}

impl Answer {
    fn send(self) {
        match self {
            Answer::Append(reply, r) => {
                let _ = reply.send(Ok(r));
            }
            Answer::Mutate(reply, r) => {
                let _ = reply.send(r);
            }
        }
    }
}

type Failed = (LogError, Vec<WriteReq>);

/// Applies one mutation inside the group transaction: load, plan, write. Returns the plan's
/// events for the group insert. A refusal writes nothing; a database error aborts the
/// transaction, so it fails the whole group (nothing of it is committed or acknowledged).
async fn apply_mutation(
    tx: &deadpool_postgres::Transaction<'_>,
    n: &Names,
    mutation: Mutation,
    principal: &Principal,
    max_event_bytes: usize,
) -> Result<(Vec<NewEvent>, Outcome), EntityError> {
    let tenant = &principal.tenant;
    let loaded = entity_load(&**tx, &n.entities, tenant, &mutation).await?;
    let ctx = PublishContext {
        principal,
        max_event_bytes,
        now_us: now_us(),
    };
    let plan = entity::plan(mutation, loaded, &ctx)?;
    entity_apply(&**tx, &n.entities, tenant, &plan.writes).await?;
    Ok((plan.events, plan.outcome))
}

async fn commit_group(
    shared: &Shared,
    group: Vec<WriteReq>,
) -> Result<(Vec<Arc<Committed>>, Vec<Answer>), Failed> {
    let n = &shared.names;
    let mut client = match shared.pool.get().await {
        Ok(c) => c,
        Err(e) => return Err((pool_err(e), group)),
    };
    let mut slots: Vec<Slot> = Vec::with_capacity(group.len());
    let mut answers: Vec<Answer> = Vec::with_capacity(group.len());
    let mut committed: Vec<Arc<Committed>> = Vec::new();
    // Requests not yet turned into slots, kept so that a failure before the commit can
    // answer every one of them.
    let mut pending: std::collections::VecDeque<WriteReq> = group.into();
    let outcome: Result<(), LogError> = async {
        let tx = client.transaction().await.map_err(backend)?;
        let head: i64 = tx
            .query_one(&format!("SELECT value FROM {} WHERE key = 'head' FOR UPDATE", n.meta), &[])
            .await
            .map_err(backend)?
            .get(0);
        let mut next = u(head) + 1;
        let recv = now_us();
        // One duplicate check, one insert and one counter update for the whole group: a
        // group costs the same few round trips however many appends it carries. Validation
        // happened before the group; a database failure fails the whole group, so every
        // append in it is still all-or-nothing and none is acknowledged. Entity changes are
        // applied first, in order, each seeing the ones before it; their events join the
        // group insert.
        let mut batches = Vec::with_capacity(pending.len());
        while let Some(req) = pending.pop_front() {
            match req {
                WriteReq::Append(a) => {
                    slots.push(Slot::Append(a.reply, batches.len()));
                    batches.push(a.batch);
                }
                WriteReq::Mutate(m) => {
                    let MutateReq { mutation, principal, max_event_bytes, reply } = *m;
                    match apply_mutation(&tx, n, mutation, &principal, max_event_bytes).await {
                        Ok((events, outcome)) => {
                            slots.push(Slot::Mutated(reply, batches.len(), outcome));
                            batches.push(events);
                        }
                        Err(EntityError::Log(e)) => {
                            // The transaction is aborted: this change fails with the group.
                            let msg = e.to_string();
                            let _ = reply.send(Err(EntityError::Log(backend(std::io::Error::other(msg)))));
                            return Err(e);
                        }
                        Err(e) => slots.push(Slot::Refused(reply, e)),
                    }
                }
            }
        }
        let (mut results, stored) = insert_group(&tx, n, batches, &mut next, recv).await?;
        let mut counts: HashMap<(&str, &'static str, &str), i64> = HashMap::new();
        let bucket = series_bucket(recv);
        if shared.series_bucket.swap(bucket, Ordering::Relaxed) != bucket {
            tx.execute(
                &format!("DELETE FROM {} WHERE dim = 'series' AND (CASE WHEN dim = 'series' THEN key::BIGINT END) < $1", n.stats),
                &[&(bucket - SERIES_KEEP_SECS)],
            )
            .await
            .map_err(backend)?;
        }
        let bucket_key = bucket.to_string();
        for e in &stored {
            *counts.entry((&e.tenant, "series", &bucket_key)).or_default() += 1;
            *counts.entry((&e.tenant, "total", "")).or_default() += 1;
            *counts.entry((&e.tenant, "type", &e.kind)).or_default() += 1;
            *counts.entry((&e.tenant, "source", &e.source)).or_default() += 1;
            *counts.entry((&e.tenant, "severity", severity_key(e.severity))).or_default() += 1;
            if let Some(c) = &e.category {
                *counts.entry((&e.tenant, "category", c)).or_default() += 1;
            }
        }
        let (mut tenants, mut dims, mut keys, mut ns) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((t, d, k), c) in counts {
            tenants.push(t.to_string());
            dims.push(d.to_string());
            keys.push(k.to_string());
            ns.push(c);
        }
        if next - 1 > u(head) {
            tx.execute(&format!("UPDATE {} SET value = $1 WHERE key = 'head'", n.meta), &[&i(next - 1)])
                .await
                .map_err(backend)?;
        }
        if !tenants.is_empty() {
            tx.execute(
                &format!(
                    "INSERT INTO {s} (tenant, dim, key, n) SELECT * FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[])
                     ON CONFLICT (tenant, dim, key) DO UPDATE SET n = {s}.n + EXCLUDED.n",
                    s = n.stats
                ),
                &[&tenants, &dims, &keys, &ns],
            )
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        committed = stored;
        for slot in slots.drain(..) {
            answers.push(match slot {
                Slot::Append(reply, i) => Answer::Append(reply, std::mem::take(&mut results[i])),
                Slot::Mutated(reply, i, outcome) => {
                    let seqs = results[i].iter().map(|a| a.seq).collect();
                    Answer::Mutate(reply, Ok(Applied { outcome, seqs }))
                }
                Slot::Refused(reply, e) => Answer::Mutate(reply, Err(e)),
            });
        }
        Ok(())
    }
    .await;
    match outcome {
        Ok(()) => Ok((committed, answers)),
        Err(e) => {
            // Nothing was committed: every request of the group fails, refusals included
            // (they are answered with their own refusal).
            let mut reqs: Vec<WriteReq> = Vec::new();
            for slot in slots {
                match slot {
                    Slot::Append(reply, _) => {
                        let _ = reply.send(Err(backend(std::io::Error::other(e.to_string()))));
                    }
                    Slot::Mutated(reply, _, _) => {
                        let _ = reply.send(Err(EntityError::Log(backend(std::io::Error::other(
                            e.to_string(),
                        )))));
                    }
                    Slot::Refused(reply, r) => {
                        let _ = reply.send(Err(r));
                    }
                }
            }
            reqs.extend(pending);
            Err((e, reqs))
        }
    }
}

/// One column per field, for a single `INSERT … SELECT FROM UNNEST(…)`.
#[derive(Default)]
struct Columns {
    seq: Vec<i64>,
    tenant: Vec<String>,
    id: Vec<String>,
    time: Vec<i64>,
    kind: Vec<String>,
    source: Vec<String>,
    category: Vec<Option<String>>,
    severity: Vec<i16>,
    subject: Vec<Option<String>>,
    tags: Vec<String>,
    json: Vec<Vec<u8>>,
}

async fn insert_group(
    tx: &deadpool_postgres::Transaction<'_>,
    n: &Names,
    batches: Vec<Vec<NewEvent>>,
    next: &mut u64,
    recv: i64,
) -> Result<(Vec<Vec<AppendResult>>, Vec<Arc<Committed>>), LogError> {
    // Existing ids of the whole group, per tenant, in one query each.
    let mut existing: HashMap<(String, String), u64> = HashMap::new();
    {
        let mut by_tenant: HashMap<&str, Vec<&str>> = HashMap::new();
        for e in batches.iter().flatten() {
            by_tenant.entry(&e.tenant).or_default().push(&e.id);
        }
        for (tenant, ids) in &by_tenant {
            let rows = tx
                .query(
                    &format!(
                        "SELECT id, seq FROM {} WHERE tenant = $1 AND id = ANY($2)",
                        n.events
                    ),
                    &[tenant, ids],
                )
                .await
                .map_err(backend)?;
            for r in rows {
                existing.insert((tenant.to_string(), r.get(0)), u(r.get(1)));
            }
        }
    }
    let mut all_answers = Vec::with_capacity(batches.len());
    let mut stored = Vec::new();
    let mut cols = Columns::default();
    for batch in batches {
        let mut answers = Vec::with_capacity(batch.len());
        for ev in batch {
            let key = (ev.tenant.clone(), ev.id.clone());
            if let Some(seq) = existing.get(&key) {
                answers.push(AppendResult {
                    id: ev.id,
                    seq: *seq,
                    duplicate: true,
                });
                continue;
            }
            let seq = *next;
            *next += 1;
            existing.insert(key, seq);
            let json = Committed::encode(seq, &ev.tail);
            cols.seq.push(i(seq));
            cols.tenant.push(ev.tenant.clone());
            cols.id.push(ev.id.clone());
            cols.time.push(ev.time_us);
            cols.kind.push(ev.kind.clone());
            cols.source.push(ev.source.clone());
            cols.category.push(ev.category.clone());
            cols.severity.push(i16::from(ev.severity.rank()));
            cols.subject.push(ev.subject.clone());
            // Tags travel as one text per row (joined by U+001F, which tags may not contain) and
            // are split back in SQL: arrays of arrays cannot be unnested row by row.
            cols.tags.push(ev.tags.join("\u{1f}"));
            cols.json.push(json.clone());
            answers.push(AppendResult {
                id: ev.id.clone(),
                seq,
                duplicate: false,
            });
            stored.push(Committed::from_new(ev, seq, Bytes::from(json)));
        }
        all_answers.push(answers);
    }
    if !stored.is_empty() {
        let sql = format!(
            "INSERT INTO {} (seq, tenant, id, time_us, recv_us, type, source, category, severity, subject, tags, json)
             SELECT s, t, i, tu, $12, ty, so, c, sv, su,
                    CASE WHEN tg = '' THEN ARRAY[]::TEXT[] ELSE string_to_array(tg, E'\\x1f') END, j
             FROM UNNEST($1::BIGINT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[], $7::TEXT[],
                         $8::SMALLINT[], $9::TEXT[], $10::TEXT[], $11::BYTEA[])
                  AS x(s, t, i, tu, ty, so, c, sv, su, tg, j)",
            n.events
        );
        let params: [&(dyn ToSql + Sync); 12] = [
            &cols.seq,
            &cols.tenant,
            &cols.id,
            &cols.time,
            &cols.kind,
            &cols.source,
            &cols.category,
            &cols.severity,
            &cols.subject,
            &cols.tags,
            &cols.json,
            &recv,
        ];
        tx.execute(&sql, &params).await.map_err(backend)?;
    }
    Ok((all_answers, stored))
}

impl PostgresLog {
    async fn read_impl(&self, q: ReadQuery) -> Result<ReadPage, LogError> {
        let n = &self.shared.names;
        let client = self.shared.pool.get().await.map_err(pool_err)?;
        let head: i64 = client
            .query_one(
                &format!("SELECT value FROM {} WHERE key = 'head'", n.meta),
                &[],
            )
            .await
            .map_err(backend)?
            .get(0);
        let tenant = match &q.scope {
            Scope::Tenant(t) => Some(t.clone()),
            Scope::All => None,
        };
        let mut lo = i(q.after);
        let mut hi = q.before.map_or(i64::MAX, i);
        if let Some(since) = q.since_us {
            let first: Option<i64> = client
                .query_one(
                    &format!("SELECT MIN(seq) FROM {} WHERE ($1::TEXT IS NULL OR tenant = $1) AND time_us >= $2", n.events),
                    &[&tenant, &since],
                )
                .await
                .map_err(backend)?
                .get(0);
            lo = lo.max(first.map_or(head, |f| f - 1));
        }
        if let Some(until) = q.until_us {
            let last: Option<i64> = client
                .query_one(
                    &format!("SELECT MAX(seq) FROM {} WHERE ($1::TEXT IS NULL OR tenant = $1) AND time_us < $2", n.events),
                    &[&tenant, &until],
                )
                .await
                .map_err(backend)?
                .get(0);
            hi = hi.min(last.map_or(0, |l| l + 1));
        }
        let since = q.since_us.unwrap_or(i64::MIN);
        let until = q.until_us.unwrap_or(i64::MAX);
        let mut events = Vec::new();
        let mut rows_seen = 0i64;
        let mut last_seq: Option<i64> = None;
        let mut limit_hit = false;
        if lo.saturating_add(1) < hi && q.limit > 0 {
            let order = if q.order == Order::Asc { "ASC" } else { "DESC" };
            let tenant_clause = if tenant.is_some() {
                "AND tenant = $6"
            } else {
                "AND $6::TEXT IS NULL"
            };
            let sql = format!(
                "SELECT {COLUMNS} FROM {} WHERE seq > $1 AND seq < $2 {tenant_clause} AND time_us >= $3 AND time_us < $4 ORDER BY seq {order} LIMIT $5",
                n.events
            );
            let rows = client
                .query(&sql, &[&lo, &hi, &since, &until, &SCAN_BUDGET, &tenant])
                .await
                .map_err(backend)?;
            let mut bytes = 0usize;
            for r in &rows {
                rows_seen += 1;
                let ev = row_to_committed(r).map_err(backend)?;
                if q.filter.matches(&ev) {
                    if q.over_bytes(&events, bytes, &ev) {
                        limit_hit = true;
                        break;
                    }
                    last_seq = Some(i(ev.seq));
                    bytes += ev.json.len();
                    events.push(ev);
                    if events.len() >= q.limit {
                        limit_hit = true;
                        break;
                    }
                } else {
                    last_seq = Some(i(ev.seq));
                }
            }
        }
        let exhausted = !limit_hit && rows_seen < SCAN_BUDGET;
        let scanned_to = match q.order {
            Order::Asc if exhausted => lo.max((hi - 1).min(head)).max(last_seq.unwrap_or(0)),
            Order::Asc => last_seq.unwrap_or(lo),
            Order::Desc if exhausted => lo + 1,
            Order::Desc => last_seq.unwrap_or(hi),
        };
        self.shared.head.fetch_max(u(head), Ordering::AcqRel);
        Ok(ReadPage {
            events,
            scanned_to: u(scanned_to),
            exhausted,
        })
    }

    async fn prune_impl(
        &self,
        max_age_us: Option<i64>,
        max_events: Option<u64>,
    ) -> Result<u64, LogError> {
        let n = &self.shared.names;
        let mut client = self.shared.pool.get().await.map_err(pool_err)?;
        let (head, mut pruned) = read_bounds(&client, n).await?;
        let mut target = pruned;
        if let Some(max) = max_events {
            target = target.max(head.saturating_sub(max));
        }
        if let Some(age) = max_age_us {
            let cutoff = now_us().saturating_sub(age);
            let by_age: Option<i64> = client
                .query_one(
                    &format!("SELECT MAX(seq) FROM {} WHERE recv_us < $1", n.events),
                    &[&cutoff],
                )
                .await
                .map_err(backend)?
                .get(0);
            // recv_us is taken under the head lock, so it never decreases with seq.
            target = target.max(by_age.map_or(0, u).min(head));
        }
        while pruned < target {
            let upto = i(target.min(pruned + PRUNE_CHUNK));
            let tx = client.transaction().await.map_err(backend)?;
            for (dim, key, cond, group) in [
                ("'total'", "''", "TRUE", "tenant"),
                ("'type'", "type", "TRUE", "tenant, type"),
                (
                    "'category'",
                    "category",
                    "category IS NOT NULL",
                    "tenant, category",
                ),
                ("'severity'", "severity::TEXT", "TRUE", "tenant, severity"),
                ("'source'", "source", "TRUE", "tenant, source"),
            ] {
                tx.execute(
                    &format!(
                        "INSERT INTO {s} (tenant, dim, key, n) SELECT tenant, {dim}, {key}, -COUNT(*) FROM {e} WHERE seq <= $1 AND {cond} GROUP BY {group}
                         ON CONFLICT (tenant, dim, key) DO UPDATE SET n = {s}.n + EXCLUDED.n",
                        s = n.stats,
                        e = n.events
                    ),
                    &[&upto],
                )
                .await
                .map_err(backend)?;
            }
            tx.execute(
                &format!("DELETE FROM {} WHERE n <= 0 AND dim <> 'total'", n.stats),
                &[],
            )
            .await
            .map_err(backend)?;
            tx.execute(
                &format!("DELETE FROM {} WHERE seq <= $1", n.events),
                &[&upto],
            )
            .await
            .map_err(backend)?;
            tx.execute(
                &format!(
                    "UPDATE {} SET value = GREATEST(value, $1) WHERE key = 'pruned_through'",
                    n.meta
                ),
                &[&upto],
            )
            .await
            .map_err(backend)?;
            tx.commit().await.map_err(backend)?;
            pruned = u(upto);
            self.shared.pruned.fetch_max(pruned, Ordering::AcqRel);
        }
        Ok(pruned)
    }

    async fn counts_impl(&self, scope: Scope) -> Result<EventCounts, LogError> {
        let n = &self.shared.names;
        let client = self.shared.pool.get().await.map_err(pool_err)?;
        let tenant = match &scope {
            Scope::Tenant(t) => Some(t.clone()),
            Scope::All => None,
        };
        let mut out = EventCounts::default();
        let rows = client
            .query(
                &format!("SELECT dim, key, SUM(n)::BIGINT FROM {} WHERE ($1::TEXT IS NULL OR tenant = $1) GROUP BY dim, key", n.stats),
                &[&tenant],
            )
            .await
            .map_err(backend)?;
        for r in rows {
            let dim: String = r.get(0);
            let key: String = r.get(1);
            out.add(&dim, key, u(r.get(2)));
        }
        let now = now_us();
        for (window, hour) in [(3_600_000_000i64, true), (60_000_000, false)] {
            let c: i64 = client
                .query_one(
                    &format!("SELECT COUNT(*) FROM {} WHERE recv_us >= $1 AND ($2::TEXT IS NULL OR tenant = $2)", n.events),
                    &[&(now - window), &tenant],
                )
                .await
                .map_err(backend)?
                .get(0);
            if hour {
                out.last_hour = u(c);
            } else {
                out.last_minute = u(c);
            }
        }
        Ok(out)
    }
}

impl EventLog for PostgresLog {
    fn append(&self, batch: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<AppendResult>, LogError>> {
        Box::pin(async move {
            if batch.is_empty() {
                return Ok(Vec::new());
            }
            let t0 = Instant::now();
            let tx = self
                .tx
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .ok_or(LogError::Closed)?;
            let (reply, rx) = oneshot::channel();
            tx.send(WriteReq::Append(Append { batch, reply }))
                .await
                .map_err(|_| LogError::Closed)?;
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
            row.map(|r| row_to_committed(&r).map_err(backend))
                .transpose()
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
            let tx = self
                .tx
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .ok_or(LogError::Closed)?;
            let (reply, rx) = oneshot::channel();
            let req = MutateReq {
                mutation,
                principal,
                max_event_bytes,
                reply,
            };
            tx.send(WriteReq::Mutate(Box::new(req)))
                .await
                .map_err(|_| LogError::Closed)?;
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
            let row = entities::entity_row(
                &**client,
                &self.shared.names.entities,
                &tenant,
                &key,
            )
            .await?;
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
            entities::list(
                &**client,
                &self.shared.names.entities,
                &tenant,
                &kind,
                after.as_deref(),
                limit,
            )
            .await
        })
    }

    fn links(&self, tenant: &str, q: LinkQuery) -> BoxFuture<'_, Result<Vec<LinkRow>, LogError>> {
        let tenant = tenant.to_string();
        Box::pin(async move {
            let client = self.shared.pool.get().await.map_err(pool_err)?;
            entities::links(&**client, &self.shared.names.entities, &tenant, &q)
                .await
        })
    }
}

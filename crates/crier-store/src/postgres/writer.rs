//! This node's writer task: group commit. Appends and entity changes queue on one channel;
//! the task takes what is queued (up to a bound), applies the entity changes in order, inserts
//! every event of the group with one statement, updates the counters and the head row, and
//! commits once; then it hands the committed events to the commit sink and answers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crier_core::entity::{self, Applied, EntityError, Mutation, Outcome};
use crier_core::event::now_us;
use crier_core::log::{series_bucket, SERIES_KEEP_SECS};
use crier_core::{
    AppendResult, Committed, LogError, NewEvent, Principal, PublishContext, Severity,
};
use tokio::sync::mpsc;
use tokio_postgres::types::ToSql;

use super::entities::Entities;
use super::{backend, i, pool_err, u, Names, Shared};
use crate::group_commit::{gather, Answer, MutateReply, MutateReq, Pending, Reply};

/// At most this many events go into one group commit.
const MAX_GROUP_EVENTS: usize = 10_000;

fn severity_key(s: Severity) -> &'static str {
    ["0", "1", "2", "3", "4"][usize::from(s.rank())]
}

pub(super) async fn writer_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let (group, n) = gather(first, MAX_GROUP_EVENTS, || rx.try_recv().ok());
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

type Failed = (LogError, Vec<Pending>);

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
    let tables = Entities::new(&**tx, &n.entities);
    let loaded = tables.load(tenant, &mutation).await?;
    let ctx = PublishContext {
        principal,
        max_event_bytes,
        now_us: now_us(),
    };
    let plan = entity::plan(mutation, loaded, &ctx)?;
    tables.apply(tenant, &plan.writes).await?;
    Ok((plan.events, plan.outcome))
}

async fn commit_group(
    shared: &Shared,
    group: Vec<Pending>,
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
    let mut pending: std::collections::VecDeque<Pending> = group.into();
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
                Pending::Append { batch, reply } => {
                    slots.push(Slot::Append(reply, batches.len()));
                    batches.push(batch);
                }
                Pending::Mutate(m) => {
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
                Slot::Append(reply, i) => Answer::Append(reply, Ok(std::mem::take(&mut results[i]))),
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
            let mut reqs: Vec<Pending> = Vec::new();
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

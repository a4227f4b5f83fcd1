//! The single writer: group commit with a savepoint per append or entity change, seq
//! assignment, counters, retention steps, and the hand-off of committed events to the
//! commit sink.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crier_core::entity::{self, Applied, EntityError, Mutation};
use crier_core::event::now_us;
use crier_core::{AppendResult, Committed, NewEvent, Principal, PublishContext};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::mpsc;

use super::read::{severity_key, to_i64};
use super::{backend, entities, Shared, WriteReq, MAX_GROUP_EVENTS, STATS_PRUNE, TAG_SEP};
use crate::group_commit::{gather, Answer, MutateReq, Pending};
use crier_core::log::{series_bucket, SERIES_KEEP_SECS};

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) shared: Arc<Shared>,
    pub(super) next_seq: u64,
    pub(super) last_recv: i64,
}

/// The request as one of a commit group, or back as it was if it is not one.
fn pending(req: WriteReq) -> Result<Pending, WriteReq> {
    match req {
        WriteReq::Append { batch, reply } => Ok(Pending::Append { batch, reply }),
        WriteReq::Mutate(m) => Ok(Pending::Mutate(m)),
        other => Err(other),
    }
}

impl Writer {
    pub(super) fn run(mut self, mut rx: mpsc::Receiver<WriteReq>) {
        let mut deferred: Option<WriteReq> = None;
        loop {
            let req = match deferred.take() {
                Some(r) => r,
                None => match rx.blocking_recv() {
                    Some(r) => r,
                    None => break,
                },
            };
            let req = match pending(req) {
                Ok(first) => {
                    // A request that is not an append or an entity change ends the group
                    // and is served right after it.
                    let (group, _) = gather(first, MAX_GROUP_EVENTS, || {
                        match rx.try_recv().map(pending) {
                            Ok(Ok(p)) => Some(p),
                            Ok(Err(other)) => {
                                deferred = Some(other);
                                None
                            }
                            Err(_) => None,
                        }
                    });
                    self.commit_group(group);
                    continue;
                }
                Err(other) => other,
            };
            match req {
                WriteReq::Append { .. } | WriteReq::Mutate(_) => {}
                WriteReq::Prune { upto, reply } => {
                    let _ = reply.send(self.prune(upto).map_err(backend));
                }
                WriteReq::Side(job) => {
                    // A transaction left open by a failed group is never committed by a
                    // side write: it is rolled back first (and if that fails, the job's own
                    // BEGIN fails and it is answered with the error).
                    if !self.conn.is_autocommit() {
                        if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                            tracing::error!(error = %e, "rolling back before a side write failed");
                        }
                    }
                    job(&mut self.conn)
                }
                #[cfg(test)]
                WriteReq::Hook(f) => f(&mut self.conn),
                WriteReq::Close { reply } => {
                    let r = self
                        .conn
                        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                        .map_err(backend);
                    let _ = reply.send(r);
                    break;
                }
            }
        }
        tracing::debug!("log writer stopped");
    }

    fn prune(&mut self, upto: u64) -> rusqlite::Result<u64> {
        let tx = self.conn.transaction()?;
        for stmt in STATS_PRUNE
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            tx.execute(stmt, [to_i64(upto)])?;
        }
        tx.execute("DELETE FROM stats WHERE n <= 0 AND dim <> 'total'", [])?;
        tx.execute("DELETE FROM events WHERE seq <= ?1", [to_i64(upto)])?;
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('pruned_through', ?1)
             ON CONFLICT (key) DO UPDATE SET value = MAX(value, excluded.value)",
            [to_i64(upto)],
        )?;
        tx.commit()?;
        let now = self
            .shared
            .pruned
            .fetch_max(upto, Ordering::AcqRel)
            .max(upto);
        Ok(now)
    }

    /// Inserts one append's events; returns answers and the events it stored.
    fn insert_batch(
        &mut self,
        batch: Vec<NewEvent>,
        recv: i64,
    ) -> rusqlite::Result<(Vec<AppendResult>, Vec<Arc<Committed>>)> {
        let mut answers = Vec::with_capacity(batch.len());
        let mut stored = Vec::with_capacity(batch.len());
        let mut find = self
            .conn
            .prepare_cached("SELECT seq FROM events WHERE tenant = ?1 AND id = ?2")?;
        let mut insert = self.conn.prepare_cached(
            "INSERT INTO events (seq, tenant, id, time_us, recv_us, type, source, category, severity, subject, tags, json)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?;
        for ev in batch {
            let existing: Option<i64> = find
                .query_row(params![ev.tenant, ev.id], |r| r.get(0))
                .optional()?;
            if let Some(seq) = existing {
                answers.push(AppendResult {
                    id: ev.id,
                    seq: u64::try_from(seq).unwrap_or(0),
                    duplicate: true,
                });
                continue;
            }
            let seq = self.next_seq;
            let json = Committed::encode(seq, &ev.tail);
            let tags = ev.tags.join(&TAG_SEP.to_string());
            insert.execute(params![
                to_i64(seq),
                ev.tenant,
                ev.id,
                ev.time_us,
                recv,
                ev.kind,
                ev.source,
                ev.category,
                i64::from(ev.severity.rank()),
                ev.subject,
                tags,
                json,
            ])?;
            self.next_seq += 1;
            answers.push(AppendResult {
                id: ev.id.clone(),
                seq,
                duplicate: false,
            });
            stored.push(Committed::from_new(ev, seq, Bytes::from(json)));
        }
        Ok((answers, stored))
    }

    /// Adds the group's events to the per-tenant counters (a handful of upserts per group),
    /// including the 10 s bucket of `recv`; when a new bucket starts, buckets past
    /// `SERIES_KEEP_SECS` are dropped.
    fn add_counts(&mut self, events: &[Arc<Committed>], recv: i64) -> rusqlite::Result<()> {
        let mut agg: std::collections::HashMap<(&str, &'static str, &str), i64> =
            std::collections::HashMap::new();
        let bucket = series_bucket(recv);
        if bucket != series_bucket(self.last_recv) {
            self.conn.execute(
                "DELETE FROM stats WHERE dim = 'series' AND CAST(key AS INTEGER) < ?1",
                [bucket - SERIES_KEEP_SECS],
            )?;
        }
        let bucket = bucket.to_string();
        for e in events {
            *agg.entry((&e.tenant, "series", &bucket)).or_default() += 1;
            *agg.entry((&e.tenant, "total", "")).or_default() += 1;
            *agg.entry((&e.tenant, "type", &e.kind)).or_default() += 1;
            *agg.entry((&e.tenant, "source", &e.source)).or_default() += 1;
            *agg.entry((&e.tenant, "severity", severity_key(e.severity)))
                .or_default() += 1;
            if let Some(c) = &e.category {
                *agg.entry((&e.tenant, "category", c)).or_default() += 1;
            }
        }
        let mut stmt = self.conn.prepare_cached(
            "INSERT INTO stats (tenant, dim, key, n) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (tenant, dim, key) DO UPDATE SET n = n + excluded.n",
        )?;
        for ((tenant, dim, key), n) in agg {
            stmt.execute(params![tenant, dim, key, n])?;
        }
        Ok(())
    }

    /// Applies one mutation in the open transaction: load, plan, write, append its events.
    /// Refusals write nothing; a database error is rolled back to the caller's savepoint.
    fn mutate(
        &mut self,
        mutation: Mutation,
        principal: &Principal,
        max_event_bytes: usize,
        recv: i64,
    ) -> Result<(Applied, Vec<Arc<Committed>>), EntityError> {
        let tenant = &principal.tenant;
        let loaded = entities::load(&self.conn, tenant, &mutation).map_err(backend)?;
        let ctx = PublishContext {
            principal,
            max_event_bytes,
            now_us: now_us(),
        };
        let plan = entity::plan(mutation, loaded, &ctx)?;
        entities::apply(&self.conn, tenant, &plan.writes).map_err(backend)?;
        let (answers, stored) = self.insert_batch(plan.events, recv).map_err(backend)?;
        Ok((
            Applied {
                outcome: plan.outcome,
                seqs: answers.iter().map(|a| a.seq).collect(),
            },
            stored,
        ))
    }

    /// Rolls the whole open transaction back (the group it held is answered with errors by
    /// the caller) and forgets the seqs it had assigned. If even `ROLLBACK` fails, the
    /// connection stays in its transaction; [`Writer::commit_group`] rolls that back before
    /// it begins anything, so none of it is ever committed by a later group.
    fn abort(&mut self, start_seq: u64) {
        self.next_seq = start_seq;
        if let Err(e) = self.conn.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "rolling back a failed group failed");
        }
        if !self.conn.is_autocommit() {
            tracing::error!("the failed group's transaction is still open; it is rolled back before the next group");
        }
    }

    /// Rolls back the group that started at `start_seq` and answers each of its requests,
    /// those done (`answers`) and those not reached (`rest`), with the error `msg`.
    fn fail_group(
        &mut self,
        start_seq: u64,
        msg: &str,
        answers: Vec<Answer>,
        rest: impl IntoIterator<Item = Pending>,
    ) {
        self.abort(start_seq);
        for a in answers {
            a.fail(msg);
        }
        for p in rest {
            p.fail(msg);
        }
    }

    fn commit_group(&mut self, group: Vec<Pending>) {
        let t0 = Instant::now();
        let recv = now_us().max(self.last_recv);
        let start_seq = self.next_seq;
        let mut answers: Vec<Answer> = Vec::with_capacity(group.len());
        let mut committed: Vec<Arc<Committed>> = Vec::new();
        let events: usize = group.iter().map(Pending::events).sum();
        // A transaction left open by a group whose rollback failed holds only writes whose
        // requests were all answered with an error: it must never reach a COMMIT.
        let begin = if self.conn.is_autocommit() {
            "BEGIN IMMEDIATE"
        } else {
            "ROLLBACK; BEGIN IMMEDIATE"
        };
        if let Err(e) = self.conn.execute_batch(begin) {
            let msg = e.to_string();
            for p in group {
                p.fail(&msg);
            }
            return;
        }
        // A statement about a request's savepoint that fails leaves the transaction in a
        // state nobody can vouch for (a failed batch's rows kept, or a savepoint still open),
        // so the whole group is rolled back and every request of it is answered with an
        // error: no publisher is told "stored" for an event that is not, or "failed" for
        // one that is.
        let mut broken: Option<String> = None;
        let mut rest = group.into_iter();
        for p in rest.by_ref() {
            let before = self.next_seq;
            if let Err(e) = self.conn.execute_batch("SAVEPOINT batch") {
                let msg = format!("SAVEPOINT failed: {e}");
                p.fail(&msg);
                broken = Some(msg);
                break;
            }
            let (ok, answer) = match p {
                Pending::Append { batch, reply } => match self.insert_batch(batch, recv) {
                    Ok((a, stored)) => {
                        committed.extend(stored);
                        (true, Answer::Append(reply, Ok(a)))
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "append failed; batch rolled back");
                        (false, Answer::Append(reply, Err(backend(e))))
                    }
                },
                Pending::Mutate(m) => {
                    let MutateReq {
                        mutation,
                        principal,
                        max_event_bytes,
                        reply,
                    } = *m;
                    match self.mutate(mutation, &principal, max_event_bytes, recv) {
                        Ok((applied, stored)) => {
                            committed.extend(stored);
                            (true, Answer::Mutate(reply, Ok(applied)))
                        }
                        Err(e) => {
                            if let EntityError::Log(e) = &e {
                                tracing::error!(error = %e, "entity change failed; rolled back");
                            }
                            (false, Answer::Mutate(reply, Err(e)))
                        }
                    }
                }
            };
            answers.push(answer);
            let end = if ok {
                "RELEASE batch"
            } else {
                self.next_seq = before;
                "ROLLBACK TO batch; RELEASE batch"
            };
            if let Err(e) = self.conn.execute_batch(end) {
                broken = Some(format!("{end} failed: {e}"));
                break;
            }
        }
        if let Some(msg) = broken {
            tracing::error!(error = %msg, "a savepoint statement failed; the whole group is rolled back");
            self.fail_group(start_seq, &msg, answers, rest);
            return;
        }
        let done = match self.add_counts(&committed, recv) {
            Err(e) => Err((
                e,
                "updating event counters failed; the group is rolled back",
            )),
            Ok(()) => self
                .conn
                .execute_batch("COMMIT")
                .map_err(|e| (e, "group commit failed")),
        };
        if let Err((e, what)) = done {
            tracing::error!(error = %e, "{what}");
            self.fail_group(start_seq, &e.to_string(), answers, Vec::new());
            return;
        }
        self.last_recv = recv;
        if let Some(last) = committed.last() {
            self.shared.head.store(last.seq, Ordering::Release);
            if let Some(sink) = self.shared.sink.get() {
                sink(&committed);
            }
        }
        metrics::histogram!("crier_log_commit_seconds").record(t0.elapsed().as_secs_f64());
        metrics::histogram!("crier_log_group_events").record(events as f64);
        for a in answers {
            a.send();
        }
    }
}

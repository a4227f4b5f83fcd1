//! The single writer: group commit with a savepoint per append, seq assignment, counters,
//! retention steps, and the hand-off of committed events to the commit sink.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use crier_core::event::now_us;
use crier_core::{AppendResult, Committed, LogError, NewEvent};
use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::mpsc;

use super::read::{severity_key, to_i64};
use super::{backend, Reply, Shared, WriteReq, MAX_GROUP_EVENTS, STATS_PRUNE, TAG_SEP};

pub(super) struct Writer {
    pub(super) conn: Connection,
    pub(super) shared: Arc<Shared>,
    pub(super) next_seq: u64,
    pub(super) last_recv: i64,
}

type Outcome = (
    Reply<Vec<AppendResult>>,
    Result<Vec<AppendResult>, LogError>,
);

struct Pending {
    batch: Vec<NewEvent>,
    reply: Reply<Vec<AppendResult>>,
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
            match req {
                WriteReq::Append { batch, reply } => {
                    let mut group = vec![Pending { batch, reply }];
                    let mut n = group[0].batch.len();
                    while n < MAX_GROUP_EVENTS {
                        match rx.try_recv() {
                            Ok(WriteReq::Append { batch, reply }) => {
                                n += batch.len();
                                group.push(Pending { batch, reply });
                            }
                            Ok(other) => {
                                deferred = Some(other);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    self.commit_group(group);
                }
                WriteReq::Prune { upto, reply } => {
                    let _ = reply.send(self.prune(upto).map_err(backend));
                }
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

    /// Adds the group's events to the per-tenant counters (a handful of upserts per group).
    fn add_counts(&mut self, events: &[Arc<Committed>]) -> rusqlite::Result<()> {
        let mut agg: std::collections::HashMap<(&str, &'static str, &str), i64> =
            std::collections::HashMap::new();
        for e in events {
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

    fn commit_group(&mut self, group: Vec<Pending>) {
        let t0 = Instant::now();
        let recv = now_us().max(self.last_recv);
        let start_seq = self.next_seq;
        let mut outcomes: Vec<Outcome> = Vec::with_capacity(group.len());
        let mut committed: Vec<Arc<Committed>> = Vec::new();
        let events: usize = group.iter().map(|p| p.batch.len()).sum();
        if let Err(e) = self.conn.execute_batch("BEGIN IMMEDIATE") {
            let msg = e.to_string();
            for p in group {
                let _ = p
                    .reply
                    .send(Err(LogError::backend(std::io::Error::other(msg.clone()))));
            }
            return;
        }
        for p in group {
            let before = self.next_seq;
            let sp = self.conn.execute_batch("SAVEPOINT batch");
            let res = sp.and_then(|()| self.insert_batch(p.batch, recv));
            match res {
                Ok((answers, stored)) => {
                    let _ = self.conn.execute_batch("RELEASE batch");
                    committed.extend(stored);
                    outcomes.push((p.reply, Ok(answers)));
                }
                Err(e) => {
                    let _ = self.conn.execute_batch("ROLLBACK TO batch; RELEASE batch");
                    self.next_seq = before;
                    tracing::error!(error = %e, "append failed; batch rolled back");
                    outcomes.push((p.reply, Err(backend(e))));
                }
            }
        }
        if let Err(e) = self.add_counts(&committed) {
            tracing::error!(error = %e, "updating event counters failed; the group is rolled back");
            let _ = self.conn.execute_batch("ROLLBACK");
            self.next_seq = start_seq;
            for (reply, _) in outcomes {
                let _ = reply.send(Err(backend(rusqlite::Error::InvalidQuery)));
            }
            return;
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            tracing::error!(error = %e, "group commit failed");
            let _ = self.conn.execute_batch("ROLLBACK");
            self.next_seq = start_seq;
            let msg = e.to_string();
            for (reply, _) in outcomes {
                let _ = reply.send(Err(LogError::backend(std::io::Error::other(msg.clone()))));
            }
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
        for (reply, r) in outcomes {
            let _ = reply.send(r);
        }
    }
}

//! Reads of the PostgreSQL log: pages of events by seq and time range, and the event
//! counters.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use crier_core::event::now_us;
use crier_core::log::{EventCounts, Order};
use crier_core::{Committed, LogError, ReadPage, ReadQuery, Scope, Severity};

use super::{backend, i, pool_err, u, PostgresLog};

/// At most this many rows are examined by one read call.
const SCAN_BUDGET: i64 = 10_000;

pub(super) const COLUMNS: &str =
    "seq, tenant, id, time_us, type, source, category, severity, subject, tags, json";

pub(super) fn row_to_committed(
    r: &tokio_postgres::Row,
) -> Result<Arc<Committed>, tokio_postgres::Error> {
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
    pub(super) async fn read_impl(&self, q: ReadQuery) -> Result<ReadPage, LogError> {
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

    pub(super) async fn counts_impl(&self, scope: Scope) -> Result<EventCounts, LogError> {
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

//! Reads of the PostgreSQL log: pages of events by seq and time range, and the event
//! counters.

use std::sync::atomic::Ordering;

use crier_core::event::now_us;
use crier_core::log::{EventCounts, Order};
use crier_core::{LogError, ReadPage, ReadQuery, Scope};

use super::{backend, pool_err, PostgresLog};
use crate::rows::{committed, i, u, EVENT_COLUMNS as COLUMNS};
use crate::scan::Scan;

/// At most this many rows are examined by one read call.
const SCAN_BUDGET: usize = 10_000;

impl PostgresLog {
    /// The `agg` (`MIN` or `MAX`) seq of `tenant`'s events (everyone's for `None`) whose
    /// time is `cmp` `time_us`: where a time range starts or ends in seqs.
    async fn seq_at(
        &self,
        client: &deadpool_postgres::Client,
        agg: &str,
        cmp: &str,
        tenant: &Option<String>,
        time_us: i64,
    ) -> Result<Option<i64>, LogError> {
        let sql = format!(
            "SELECT {agg}(seq) FROM {} WHERE ($1::TEXT IS NULL OR tenant = $1) AND time_us {cmp} $2",
            self.shared.names.events
        );
        let row = client.query_one(&sql, &[tenant, &time_us]).await;
        row.and_then(|r| r.try_get(0)).map_err(backend)
    }

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
            let first = self.seq_at(&client, "MIN", ">=", &tenant, since).await?;
            lo = lo.max(first.map_or(head, |f| f - 1));
        }
        if let Some(until) = q.until_us {
            let last = self.seq_at(&client, "MAX", "<", &tenant, until).await?;
            hi = hi.min(last.map_or(0, |l| l + 1));
        }
        let since = q.since_us.unwrap_or(i64::MIN);
        let until = q.until_us.unwrap_or(i64::MAX);
        let mut scan = Scan::new(&q);
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
            let budget = i64::try_from(SCAN_BUDGET).unwrap_or(i64::MAX);
            let rows = client
                .query(&sql, &[&lo, &hi, &since, &until, &budget, &tenant])
                .await
                .map_err(backend)?;
            for r in &rows {
                if !scan.push(committed(r)?) {
                    break;
                }
            }
        }
        self.shared.head.fetch_max(u(head), Ordering::AcqRel);
        Ok(scan.page(lo, hi, head, SCAN_BUDGET))
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

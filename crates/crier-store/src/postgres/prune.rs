//! Retention of the PostgreSQL log: removes a prefix of the log in chunks, each in one
//! transaction that also takes its events out of the counters and records
//! `pruned_through`.

use std::sync::atomic::Ordering;

use crier_core::event::now_us;
use crier_core::LogError;

use super::side::exec;
use super::{backend, pool_err, read_bounds, PostgresLog};
use crate::rows::{i, u};

/// At most this many rows are deleted by one retention step.
const PRUNE_CHUNK: u64 = 10_000;

impl PostgresLog {
    pub(super) async fn prune_impl(
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
                let sql = format!(
                    "INSERT INTO {s} (tenant, dim, key, n) SELECT tenant, {dim}, {key}, -COUNT(*) FROM {e} WHERE seq <= $1 AND {cond} GROUP BY {group}
                     ON CONFLICT (tenant, dim, key) DO UPDATE SET n = {s}.n + EXCLUDED.n",
                    s = n.stats,
                    e = n.events
                );
                exec(&tx, &sql, &[&upto]).await?;
            }
            let sql = format!("DELETE FROM {} WHERE n <= 0 AND dim <> 'total'", n.stats);
            exec(&tx, &sql, &[]).await?;
            let sql = format!("DELETE FROM {} WHERE seq <= $1", n.events);
            exec(&tx, &sql, &[&upto]).await?;
            let sql = format!(
                "UPDATE {} SET value = GREATEST(value, $1) WHERE key = 'pruned_through'",
                n.meta
            );
            exec(&tx, &sql, &[&upto]).await?;
            tx.commit().await.map_err(backend)?;
            pruned = u(upto);
            self.shared.pruned.fetch_max(pruned, Ordering::AcqRel);
        }
        Ok(pruned)
    }
}

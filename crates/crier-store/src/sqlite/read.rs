//! Reads: filtered, bounded range scans that return the stored event bytes untouched, and
//! the binary search over commit times used by retention and stats.

use crier_core::log::Order;
use crier_core::{ReadPage, ReadQuery, Scope, Severity};
use rusqlite::{params, Connection, OptionalExtension};

use super::SCAN_BUDGET;
use crate::rows::{committed, EVENT_COLUMNS as COLUMNS};
use crate::scan::Scan;

/// The stored key of a severity in the counters (its rank, as text).
pub(super) fn severity_key(s: Severity) -> &'static str {
    ["0", "1", "2", "3", "4"][usize::from(s.rank())]
}

pub(super) use crate::rows::i as to_i64;

pub(super) fn read_blocking(conn: &mut Connection, q: &ReadQuery) -> rusqlite::Result<ReadPage> {
    let tx = conn.transaction()?;
    let head: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
    let mut lo = to_i64(q.after); // exclusive
    let mut hi = q.before.map_or(i64::MAX, to_i64); // exclusive
    let tenant = match &q.scope {
        Scope::Tenant(t) => Some(t.as_str()),
        Scope::All => None,
    };
    // The `agg` (`MIN` or `MAX`) seq of the scope's events whose time is `cmp` `time_us`.
    let seq_at = |agg: &str, cmp: &str, time_us: i64| -> rusqlite::Result<Option<i64>> {
        let sql = match tenant {
            Some(_) => {
                format!("SELECT {agg}(seq) FROM events WHERE tenant = ?1 AND time_us {cmp} ?2")
            }
            None => format!("SELECT {agg}(seq) FROM events WHERE time_us {cmp} ?2"),
        };
        tx.query_row(&sql, params![tenant, time_us], |r| r.get(0))
    };
    // Narrow the seq range with the time index: every event in [since, until) has a seq
    // within [min seq with time >= since, max seq with time < until].
    if let Some(since) = q.since_us {
        let first = seq_at("MIN", ">=", since)?;
        lo = lo.max(first.map_or(head, |f| f - 1));
    }
    if let Some(until) = q.until_us {
        let last = seq_at("MAX", "<", until)?;
        hi = hi.min(last.map_or(0, |l| l + 1));
    }
    let empty_range = lo.saturating_add(1) >= hi;
    let mut sql = format!("SELECT {COLUMNS} FROM events WHERE seq > ?1 AND seq < ?2");
    if tenant.is_some() {
        sql.push_str(" AND tenant = ?5");
    }
    sql.push_str(" AND time_us >= ?3 AND time_us < ?4");
    sql.push_str(match q.order {
        Order::Asc => " ORDER BY seq ASC LIMIT ?6",
        Order::Desc => " ORDER BY seq DESC LIMIT ?6",
    });
    let since = q.since_us.unwrap_or(i64::MIN);
    let until = q.until_us.unwrap_or(i64::MAX);
    let mut scan = Scan::new(q);
    if !empty_range && q.limit > 0 {
        let mut stmt = tx.prepare_cached(&sql)?;
        let budget = i64::try_from(SCAN_BUDGET).unwrap_or(i64::MAX);
        let mut rows = stmt.query(params![lo, hi, since, until, tenant, budget])?;
        while let Some(row) = rows.next()? {
            if !scan.push(committed(row)?) {
                break;
            }
        }
    }
    Ok(scan.page(lo, hi, head, SCAN_BUDGET))
}

/// The highest seq in `(from, head]` received before `cutoff`. `recv_us` never decreases
/// with seq (the writer makes it monotonic), so a binary search over point reads finds it.
pub(super) fn last_received_before(
    conn: &mut Connection,
    from: u64,
    head: u64,
    cutoff: i64,
) -> rusqlite::Result<u64> {
    let mut stmt =
        conn.prepare_cached("SELECT recv_us FROM events WHERE seq >= ?1 ORDER BY seq LIMIT 1")?;
    let mut recv_at = |seq: u64| -> rusqlite::Result<Option<i64>> {
        stmt.query_row([to_i64(seq)], |r| r.get(0)).optional()
    };
    let (mut lo, mut hi) = (from, head); // answer in [lo, hi]
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        match recv_at(mid)? {
            Some(t) if t < cutoff => lo = mid,
            _ => hi = mid - 1,
        }
    }
    Ok(lo)
}

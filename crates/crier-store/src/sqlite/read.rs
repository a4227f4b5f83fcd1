//! Reads: filtered, bounded range scans that return the stored event bytes untouched, and
//! the binary search over commit times used by retention and stats.

use std::sync::Arc;

use bytes::Bytes;
use crier_core::log::Order;
use crier_core::{Committed, ReadPage, ReadQuery, Scope, Severity};
use rusqlite::{params, Connection, OptionalExtension};

use super::{SCAN_BUDGET, TAG_SEP};

pub(super) fn row_to_committed(r: &rusqlite::Row<'_>) -> rusqlite::Result<Arc<Committed>> {
    let tags: String = r.get(9)?;
    let seq: i64 = r.get(0)?;
    let sev: i64 = r.get(7)?;
    let json: Vec<u8> = r.get(10)?;
    Ok(Arc::new(Committed {
        seq: u64::try_from(seq).unwrap_or(0),
        tenant: r.get(1)?,
        id: r.get(2)?,
        time_us: r.get(3)?,
        kind: r.get(4)?,
        source: r.get(5)?,
        category: r.get(6)?,
        severity: Severity::from_rank(sev).unwrap_or_default(),
        subject: r.get(8)?,
        tags: if tags.is_empty() {
            Vec::new()
        } else {
            tags.split(TAG_SEP).map(String::from).collect()
        },
        json: Bytes::from(json),
        frames: Default::default(),
    }))
}

pub(super) const COLUMNS: &str =
    "seq, tenant, id, time_us, type, source, category, severity, subject, tags, json";

/// The stored key of a severity in the counters (its rank, as text).
pub(super) fn severity_key(s: Severity) -> &'static str {
    ["0", "1", "2", "3", "4"][usize::from(s.rank())]
}

pub(super) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(super) fn read_blocking(conn: &mut Connection, q: &ReadQuery) -> rusqlite::Result<ReadPage> {
    let tx = conn.transaction()?;
    let head: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM events", [], |r| r.get(0))?;
    let mut lo = to_i64(q.after); // exclusive
    let mut hi = q.before.map_or(i64::MAX, to_i64); // exclusive
    let tenant = match &q.scope {
        Scope::Tenant(t) => Some(t.as_str()),
        Scope::All => None,
    };
    // Narrow the seq range with the time index: every event in [since, until) has a seq
    // within [min seq with time >= since, max seq with time < until].
    if let Some(since) = q.since_us {
        let first: Option<i64> = match tenant {
            Some(t) => tx.query_row(
                "SELECT MIN(seq) FROM events WHERE tenant = ?1 AND time_us >= ?2",
                params![t, since],
                |r| r.get(0),
            )?,
            None => tx.query_row(
                "SELECT MIN(seq) FROM events WHERE time_us >= ?1",
                [since],
                |r| r.get(0),
            )?,
        };
        match first {
            Some(f) => lo = lo.max(f - 1),
            None => lo = lo.max(head),
        }
    }
    if let Some(until) = q.until_us {
        let last: Option<i64> = match tenant {
            Some(t) => tx.query_row(
                "SELECT MAX(seq) FROM events WHERE tenant = ?1 AND time_us < ?2",
                params![t, until],
                |r| r.get(0),
            )?,
            None => tx.query_row(
                "SELECT MAX(seq) FROM events WHERE time_us < ?1",
                [until],
                |r| r.get(0),
            )?,
        };
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
    let mut events = Vec::new();
    let mut rows_seen = 0usize;
    let mut last_seq: Option<i64> = None;
    let mut limit_hit = false;
    if !empty_range && q.limit > 0 {
        let mut stmt = tx.prepare_cached(&sql)?;
        let budget = i64::try_from(SCAN_BUDGET).unwrap_or(i64::MAX);
        let mut rows = match tenant {
            Some(t) => stmt.query(params![lo, hi, since, until, t, budget])?,
            None => stmt.query(params![lo, hi, since, until, rusqlite::types::Null, budget])?,
        };
        let mut bytes = 0usize;
        while let Some(row) = rows.next()? {
            rows_seen += 1;
            let ev = row_to_committed(row)?;
            if q.filter.matches(&ev) {
                if q.over_bytes(&events, bytes, &ev) {
                    limit_hit = true;
                    break;
                }
                last_seq = Some(to_i64(ev.seq));
                bytes += ev.json.len();
                events.push(ev);
                if events.len() >= q.limit {
                    limit_hit = true;
                    break;
                }
            } else {
                last_seq = Some(to_i64(ev.seq));
            }
        }
    }
    drop(tx);
    let budget_hit = rows_seen >= SCAN_BUDGET;
    let exhausted = !limit_hit && !budget_hit;
    let scanned_to = match q.order {
        Order::Asc => {
            if exhausted {
                // Everything up to min(hi - 1, head) has been examined.
                lo.max((hi - 1).min(head)).max(last_seq.unwrap_or(0))
            } else {
                last_seq.unwrap_or(lo)
            }
        }
        Order::Desc => {
            if exhausted {
                lo + 1
            } else {
                last_seq.unwrap_or(hi)
            }
        }
    };
    Ok(ReadPage {
        events,
        scanned_to: u64::try_from(scanned_to).unwrap_or(0),
        exhausted,
    })
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

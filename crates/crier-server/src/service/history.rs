//! History reads, for every transport: a page of the log bounded by `max_response_bytes`,
//! with its paging cursor, and the stored bytes joined into a JSON array without being
//! re-encoded. `GET /v1/events` and the `/v1/ws` `history` op both read through here.

use std::sync::Arc;

use crier_core::{Committed, ReadQuery};

use super::Error;
use crate::state::AppState;

/// Largest `limit` of a history page.
pub const MAX_PAGE: u64 = 1000;

/// Reads a history page for `query`; returns the events and the paging cursor. A page stops
/// early at `max_response_bytes` (§12.3); its cursor then points past its last event as
/// usual.
pub async fn read(
    state: &AppState,
    query: ReadQuery,
) -> Result<(Vec<Arc<Committed>>, Option<u64>), Error> {
    let limit = query.limit;
    let l = &state.settings.limits;
    let page = crate::budget::read(
        state.log.as_ref(),
        query,
        l.max_response_bytes,
        l.max_event_bytes,
    )
    .await?;
    if page.cut {
        metrics::counter!("crier_limit_hits_total", "limit" => "max_response_bytes").increment(1);
    }
    // A full page may have more behind it; its last seq is where the next page starts.
    let next = if page.events.len() >= limit || page.cut {
        page.events.last().map(|e| e.seq)
    } else {
        None
    };
    Ok((page.events, next))
}

/// Joins stored event bytes into a JSON array without re-encoding them.
pub fn json_array(events: &[Arc<Committed>]) -> Vec<u8> {
    let len: usize = events.iter().map(|e| e.json.len() + 1).sum();
    let mut out = Vec::with_capacity(len + 2);
    out.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(&e.json);
    }
    out.push(b']');
    out
}

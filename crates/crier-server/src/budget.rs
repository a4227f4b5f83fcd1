//! How much data one request may load (`max_response_bytes`, §12.3).
//!
//! Reads are taken from the log in chunks sized so that even a chunk of events of the largest
//! allowed size (`max_event_bytes`) fits in what is left of the budget; the read stops before
//! a chunk could overflow it. So a request never holds more than `max_response_bytes` of
//! events in memory, whatever its `limit`, and nothing is read only to be thrown away. A
//! history page that stops early answers `next_after` as usual; a GraphQL request, whose
//! fields share one [`ResponseBudget`], fails with `response_too_large` instead. The fields of
//! one GraphQL request load one after another (the budget's lock), so aliases resolved
//! concurrently cannot each see the whole budget as free.

use std::sync::Arc;

use crier_core::log::Order;
use crier_core::{Committed, EventLog, ReadQuery};

use crate::service::Error;

/// The answer of a bounded read.
pub struct Bounded {
    /// The events, in the query's order.
    pub events: Vec<Arc<Committed>>,
    /// The serialised size of `events`.
    pub bytes: usize,
    /// The read stopped before `limit` for lack of budget, with more possibly behind it.
    pub cut: bool,
}

/// Reads up to `query.limit` events and at most `max_bytes` bytes of them. At least one
/// event is returned when there is one, so paging always moves forward.
pub async fn read(
    log: &dyn EventLog,
    mut query: ReadQuery,
    max_bytes: usize,
    max_event_bytes: usize,
) -> Result<Bounded, Error> {
    let limit = query.limit;
    let mut out = Bounded {
        events: Vec::new(),
        bytes: 0,
        cut: false,
    };
    while out.events.len() < limit {
        let left = max_bytes.saturating_sub(out.bytes);
        let fits = left / max_event_bytes.max(1);
        let chunk = if out.events.is_empty() {
            fits.max(1)
        } else {
            fits
        }
        .min(limit - out.events.len());
        if chunk == 0 {
            out.cut = true;
            break;
        }
        query.limit = chunk;
        let page = log.read(query.clone()).await?;
        out.bytes += page.events.iter().map(|e| e.json.len()).sum::<usize>();
        out.events.extend(page.events);
        if page.exhausted {
            break;
        }
        match query.order {
            Order::Asc => query.after = page.scanned_to,
            Order::Desc => query.before = Some(page.scanned_to),
        }
    }
    if out.bytes > max_bytes {
        // Only possible for a lone event larger than the whole budget.
        out.cut = true;
    }
    Ok(out)
}

/// The refusal of a request that would load more than allowed.
pub fn too_large(max: usize) -> Error {
    metrics::counter!("crier_limit_hits_total", "limit" => "max_response_bytes").increment(1);
    Error::too_large(
        "response_too_large",
        format!(
            "this request would load more than {max} bytes (limits.max_response_bytes); \
             ask for fewer items or fewer fields at once"
        ),
    )
}

/// The bytes one GraphQL request (every operation of a batch together) may still load.
pub struct ResponseBudget {
    max: usize,
    // A tokio Mutex: held across the store reads it accounts for, so fields load in turn.
    used: tokio::sync::Mutex<usize>,
}

impl ResponseBudget {
    /// A fresh budget of `max` bytes.
    pub fn new(max: usize) -> Arc<ResponseBudget> {
        Arc::new(ResponseBudget {
            max,
            used: tokio::sync::Mutex::new(0),
        })
    }

    /// Reads `query` within what is left; fails with `response_too_large` when the events it
    /// asks for do not fit.
    pub async fn read(
        &self,
        log: &dyn EventLog,
        query: ReadQuery,
        max_event_bytes: usize,
    ) -> Result<Vec<Arc<Committed>>, Error> {
        let mut used = self.used.lock().await;
        let left = self.max.saturating_sub(*used);
        if left == 0 {
            return Err(too_large(self.max));
        }
        let page = read(log, query, left, max_event_bytes).await?;
        if page.cut {
            *used = self.max;
            return Err(too_large(self.max));
        }
        *used += page.bytes;
        Ok(page.events)
    }

    /// Accounts for `n` bytes already loaded (entities, whose size is known only once read).
    pub async fn charge(&self, n: usize) -> Result<(), Error> {
        let mut used = self.used.lock().await;
        *used = used.saturating_add(n);
        if *used > self.max {
            return Err(too_large(self.max));
        }
        Ok(())
    }
}

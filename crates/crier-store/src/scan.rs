//! The page a read call builds while it scans the log's rows, shared by the SQLite and
//! PostgreSQL logs: which events it takes, when it is full, and how far the scan got.

use std::sync::Arc;

use crier_core::log::Order;
use crier_core::{Committed, ReadPage, ReadQuery};

use crate::rows::{i, u};

/// A read's page in the making.
pub(crate) struct Scan<'q> {
    q: &'q ReadQuery,
    events: Vec<Arc<Committed>>,
    bytes: usize,
    rows_seen: usize,
    last_seq: Option<i64>,
    limit_hit: bool,
}

impl<'q> Scan<'q> {
    /// An empty page for `q`.
    pub(crate) fn new(q: &'q ReadQuery) -> Scan<'q> {
        Scan {
            q,
            events: Vec::new(),
            bytes: 0,
            rows_seen: 0,
            last_seq: None,
            limit_hit: false,
        }
    }

    /// Takes the next scanned event if it matches; false once the page is full (by count
    /// or by bytes) and the scan must stop.
    pub(crate) fn push(&mut self, ev: Arc<Committed>) -> bool {
        self.rows_seen += 1;
        if !self.q.filter.matches(&ev) {
            self.last_seq = Some(i(ev.seq));
            return true;
        }
        if self.q.over_bytes(&self.events, self.bytes, &ev) {
            self.limit_hit = true;
            return false;
        }
        self.last_seq = Some(i(ev.seq));
        self.bytes += ev.json.len();
        self.events.push(ev);
        self.limit_hit = self.events.len() >= self.q.limit;
        !self.limit_hit
    }

    /// The page of a scan over seqs in `(lo, hi)` that may examine `budget` rows, with the
    /// log's head at `head`: exhausted when it stopped for neither the page nor the budget.
    pub(crate) fn page(self, lo: i64, hi: i64, head: i64, budget: usize) -> ReadPage {
        let exhausted = !self.limit_hit && self.rows_seen < budget;
        let scanned_to = match self.q.order {
            // Everything up to min(hi - 1, head) has been examined.
            Order::Asc if exhausted => lo.max((hi - 1).min(head)).max(self.last_seq.unwrap_or(0)),
            Order::Asc => self.last_seq.unwrap_or(lo),
            Order::Desc if exhausted => lo + 1,
            Order::Desc => self.last_seq.unwrap_or(hi),
        };
        ReadPage {
            events: self.events,
            scanned_to: u(scanned_to),
            exhausted,
        }
    }
}

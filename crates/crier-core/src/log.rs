//! The [`EventLog`] contract: a durable, totally ordered log of events.
//!
//! Invariants every implementation keeps (and the conformance suite in `crier-store`
//! checks):
//!
//! * `seq` is strictly increasing and gapless in commit order: a reader never sees seq
//!   `n + 1` before `n` is committed, and every seq up to [`EventLog::head`] is either
//!   readable or pruned (≤ [`EventLog::pruned_through`]).
//! * An append is all-or-nothing per call, and is acknowledged only once durable.
//! * `(tenant, id)` is unique: appending an existing id stores nothing and returns the stored
//!   seq with `duplicate = true`.
//! * After each commit, the committed events are handed to the commit sink, in seq order,
//!   before the appenders are answered; the sink feeds the live fan-out.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::event::{Committed, NewEvent};
use crate::filter::Filter;

/// A boxed, sendable future; keeps [`EventLog`] usable as a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Receives committed events in seq order, right after each commit.
pub type CommitSink = Arc<dyn Fn(&[Arc<Committed>]) + Send + Sync>;

/// Errors of a log backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The log has shut down.
    #[error("the event log is closed")]
    Closed,
    /// The backend failed (disk, database, connection).
    #[error("event log backend error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The store was written by a newer crier than this one.
    #[error("the store's schema version {found} is newer than this crier understands ({known})")]
    SchemaTooNew {
        /// Version found in the store.
        found: i64,
        /// Newest version this build knows.
        known: i64,
    },
}

impl LogError {
    /// Wraps any backend error.
    pub fn backend(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        LogError::Backend(Box::new(e))
    }
}

/// The answer to one appended event, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// The event's id.
    pub id: String,
    /// Its seq (the stored one, for a duplicate).
    pub seq: u64,
    /// Whether the id existed and nothing was stored.
    pub duplicate: bool,
}

/// Which tenants a read covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One tenant.
    Tenant(String),
    /// Every tenant (admins only).
    All,
}

impl Scope {
    /// Whether an event of `tenant` is in scope.
    pub fn includes(&self, tenant: &str) -> bool {
        match self {
            Scope::Tenant(t) => t == tenant,
            Scope::All => true,
        }
    }
}

/// Read order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// A filtered range read.
#[derive(Debug, Clone)]
pub struct ReadQuery {
    /// Tenants covered.
    pub scope: Scope,
    /// Which events.
    pub filter: Arc<Filter>,
    /// Exclusive lower bound on seq.
    pub after: u64,
    /// Exclusive upper bound on seq (`None`: up to the head).
    pub before: Option<u64>,
    /// Inclusive lower bound on event time, microseconds.
    pub since_us: Option<i64>,
    /// Exclusive upper bound on event time, microseconds.
    pub until_us: Option<i64>,
    /// At most this many matching events.
    pub limit: usize,
    /// Direction.
    pub order: Order,
    /// Stop once the page holds this many bytes of event JSON, without going over (a page
    /// holds at least one event); the page is then not exhausted. `None`: no bound.
    pub max_bytes: Option<usize>,
}

impl ReadQuery {
    /// Everything of `scope` matching `filter` after `after`, ascending, `limit` at a time.
    pub fn after(scope: Scope, filter: Arc<Filter>, after: u64, limit: usize) -> Self {
        ReadQuery {
            scope,
            filter,
            after,
            before: None,
            since_us: None,
            until_us: None,
            limit,
            order: Order::Asc,
            max_bytes: None,
        }
    }

    /// Whether taking `ev` into a page that holds `events` (`bytes` of JSON) would carry it
    /// past [`ReadQuery::max_bytes`]; a page always takes its first event.
    pub fn over_bytes(&self, events: &[Arc<Committed>], bytes: usize, ev: &Committed) -> bool {
        self.max_bytes
            .is_some_and(|m| !events.is_empty() && bytes + ev.json.len() > m)
    }
}

/// One page of a read.
#[derive(Debug, Clone, Default)]
pub struct ReadPage {
    /// Matching events in the requested order.
    pub events: Vec<Arc<Committed>>,
    /// Every seq in the range between the query bound and this one has been examined: for
    /// `Asc`, no unreturned match exists in `(after, scanned_to]`; for `Desc`, none in
    /// `[scanned_to, before)`.
    pub scanned_to: u64,
    /// Whether the range was exhausted (no more matches exist in it as of this read).
    pub exhausted: bool,
}

/// Counts of stored events (§3 `GET /v1/stats`), kept by the log as it appends and prunes so
/// that reading them never scans the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Events stored.
    pub total: u64,
    /// Events received in the last hour.
    pub last_hour: u64,
    /// Events received in the last minute.
    pub last_minute: u64,
    /// Stored events by type.
    pub by_type: std::collections::BTreeMap<String, u64>,
    /// Stored events by category (events without one are not counted here).
    pub by_category: std::collections::BTreeMap<String, u64>,
    /// Stored events by severity.
    pub by_severity: std::collections::BTreeMap<String, u64>,
    /// Stored events by source.
    pub by_source: std::collections::BTreeMap<String, u64>,
    /// Events received per [`SERIES_BUCKET_SECS`], keyed by the bucket's start in unix
    /// seconds. Counted at commit (pruning does not lower them) and kept for
    /// [`SERIES_KEEP_SECS`], so a chart can draw recent history at once.
    pub series: std::collections::BTreeMap<i64, u64>,
}

/// The width of one bucket of [`EventCounts::series`], in seconds.
pub const SERIES_BUCKET_SECS: i64 = 10;

/// How long stores keep the buckets of [`EventCounts::series`], in seconds.
pub const SERIES_KEEP_SECS: i64 = 3600;

/// The key of the series bucket holding a commit at `now_us` (microseconds since the epoch):
/// the bucket's start in unix seconds.
pub fn series_bucket(now_us: i64) -> i64 {
    let secs = now_us.div_euclid(1_000_000);
    secs - secs.rem_euclid(SERIES_BUCKET_SECS)
}

impl EventCounts {
    /// Adds one stored counter row: `dim` is `total`, `type`, `category`, `severity` (its key
    /// the severity's rank as text), `source` or `series` (its key a bucket's start). Unknown dimensions and zero counts are ignored.
    pub fn add(&mut self, dim: &str, key: String, n: u64) {
        if n == 0 {
            return;
        }
        let map = match dim {
            "total" => {
                self.total += n;
                return;
            }
            "type" => &mut self.by_type,
            "category" => &mut self.by_category,
            "source" => &mut self.by_source,
            "series" => {
                if let Ok(start) = key.parse::<i64>() {
                    *self.series.entry(start).or_default() += n;
                }
                return;
            }
            "severity" => {
                let name = key
                    .parse::<i64>()
                    .ok()
                    .and_then(crate::event::Severity::from_rank)
                    .map_or(key, |s| s.as_str().to_string());
                *self.by_severity.entry(name).or_default() += n;
                return;
            }
            _ => return,
        };
        *map.entry(key).or_default() += n;
    }
}

/// A durable, totally ordered event log. See the module docs for its invariants.
pub trait EventLog: Send + Sync + 'static {
    /// Appends one all-or-nothing batch; answers in input order once durable.
    fn append(&self, batch: Vec<NewEvent>) -> BoxFuture<'_, Result<Vec<AppendResult>, LogError>>;

    /// Reads matching events. Implementations bound the rows examined per call and report how
    /// far they got in [`ReadPage::scanned_to`].
    fn read(&self, query: ReadQuery) -> BoxFuture<'_, Result<ReadPage, LogError>>;

    /// One event of a tenant by id.
    fn get(
        &self,
        tenant: &str,
        id: &str,
    ) -> BoxFuture<'_, Result<Option<Arc<Committed>>, LogError>>;

    /// The highest committed seq (0 for an empty log).
    fn head(&self) -> u64;

    /// Every seq up to this one has been removed by retention (0 if none).
    fn pruned_through(&self) -> u64;

    /// Removes events older than `max_age_us` (by commit time) and beyond the newest
    /// `max_events`, always a prefix of the log. Returns the new `pruned_through`.
    fn prune(
        &self,
        max_age_us: Option<i64>,
        max_events: Option<u64>,
    ) -> BoxFuture<'_, Result<u64, LogError>>;

    /// Counts of stored events in `scope`, maintained incrementally (no scan per call).
    fn counts(&self, scope: Scope) -> BoxFuture<'_, Result<EventCounts, LogError>>;

    /// Installs the sink that receives committed events in order. Called once, before the
    /// first append.
    fn set_commit_sink(&self, sink: CommitSink);

    /// Checks the backend is reachable (for readiness).
    fn ping(&self) -> BoxFuture<'_, Result<(), LogError>>;

    /// Stops accepting appends, finishes the ones in flight and flushes to disk.
    fn close(&self) -> BoxFuture<'_, Result<(), LogError>>;
}

//! Cursors over the log and the live fan-out that feeds the caught-up ones.
//!
//! Every reader is a [`Cursor`]: `(scope, filter, position)`. A cursor reads the log until it
//! has caught up, then registers with the [`Hub`] for live events through a bounded queue.
//! The hub pushes each committed event, in seq order, to the queues of the matching
//! registrations with `try_send`; a queue that is full is *dropped* from the hub (counted as a
//! fallback) and its cursor, after draining what was queued, goes back to reading the log
//! from its position and rejoins live when caught up. So a slow reader costs at most its
//! queue bound in memory, never slows the hub or other readers, and misses nothing.
//!
//! The seam between history and live is closed by registering *before* reading the last
//! stretch of history: registration records the hub's head `H` under the same lock that
//! publishes, so every event above `H` goes to the queue and every event up to `H` is in the
//! log. The cursor reads `(position, H]` from the log, then takes the queue, skipping anything
//! at or below its position. Nothing is lost and nothing is doubled.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::json;
use tokio::sync::mpsc;

use crate::event::Committed;
use crate::filter::Filter;
use crate::log::{EventLog, LogError, Order, ReadPage, ReadQuery, Scope};

/// Events read from the log per round trip while catching up.
const CATCH_UP_CHUNK: usize = 1000;

/// Where a cursor starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Live from now.
    Live,
    /// Every matching event with a greater seq, then live.
    After(u64),
    /// The last `n` matching events, then live.
    Last(usize),
}

/// A notice to the reader that its position could not be honoured as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reset {
    /// Events after the cursor were removed by retention; reading continues at `oldest`.
    Retention {
        /// The oldest seq still stored.
        oldest: u64,
    },
    /// The cursor is above the head (the log was replaced); reading continues live.
    UnknownCursor {
        /// The current head.
        head: u64,
    },
}

impl Reset {
    /// The `crier.reset` payload of §4.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Reset::Retention { oldest } => json!({"reason": "retention", "oldest": oldest}),
            Reset::UnknownCursor { head } => json!({"reason": "unknown_cursor", "head": head}),
        }
    }
}

/// What a cursor yields.
#[derive(Debug, Clone)]
pub enum CursorItem {
    /// The next matching event.
    Event(Arc<Committed>),
    /// A reset notice; events follow.
    Reset(Reset),
}

struct Registration {
    id: u64,
    filter: Arc<Filter>,
    tx: mpsc::Sender<Arc<Committed>>,
}

#[derive(Default)]
struct Registry {
    next_id: u64,
    /// Published head: every event up to here has been offered to the registrations.
    head: u64,
    by_tenant: HashMap<String, Vec<Registration>>,
    all_tenants: Vec<Registration>,
}

struct Inner {
    log: Arc<dyn EventLog>,
    registry: Mutex<Registry>,
    live_cursors: AtomicU64,
}

impl Inner {
    // A std Mutex: the critical sections are short, never await, and `publish` is called
    // from the log's writer thread, outside any runtime.
    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The live fan-out over one log. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

fn offer(list: &mut Vec<Registration>, ev: &Arc<Committed>) {
    list.retain(|r| {
        if !r.filter.matches(ev) {
            return true;
        }
        match r.tx.try_send(ev.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("crier_queue_fallbacks_total").increment(1);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    });
}

impl Hub {
    /// A hub over `log`, starting at its current head. The caller installs
    /// [`Hub::commit_sink`] into the log (or feeds [`Hub::publish`] from a broker).
    pub fn new(log: Arc<dyn EventLog>) -> Hub {
        let head = log.head();
        let registry = Registry {
            head,
            ..Registry::default()
        };
        Hub {
            inner: Arc::new(Inner {
                log,
                registry: Mutex::new(registry),
                live_cursors: AtomicU64::new(0),
            }),
        }
    }

    /// The log under this hub.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.inner.log
    }

    /// The head as published to live readers.
    pub fn head(&self) -> u64 {
        self.inner.lock().head
    }

    /// Number of cursors currently registered for live events.
    pub fn live_cursors(&self) -> u64 {
        self.inner.live_cursors.load(Ordering::Relaxed)
    }

    /// A sink for [`EventLog::set_commit_sink`] that publishes into this hub.
    pub fn commit_sink(&self) -> crate::log::CommitSink {
        let weak = Arc::downgrade(&self.inner);
        Arc::new(move |events: &[Arc<Committed>]| {
            if let Some(inner) = weak.upgrade() {
                Hub { inner }.publish(events);
            }
        })
    }

    /// Offers committed events, in seq order, to the live registrations. Events at or below
    /// the published head are ignored (already offered).
    pub fn publish(&self, events: &[Arc<Committed>]) {
        let mut reg = self.inner.lock();
        for ev in events {
            if ev.seq <= reg.head {
                continue;
            }
            reg.head = ev.seq;
            if let Some(list) = reg.by_tenant.get_mut(&ev.tenant) {
                offer(list, ev);
            }
            if !reg.all_tenants.is_empty() {
                offer(&mut reg.all_tenants, ev);
            }
        }
    }

    fn register(&self, scope: &Scope, filter: Arc<Filter>, cap: usize) -> (LiveReg, u64) {
        let (tx, rx) = mpsc::channel(cap.max(1));
        let mut reg = self.inner.lock();
        reg.next_id += 1;
        let id = reg.next_id;
        let head = reg.head;
        let r = Registration { id, filter, tx };
        let tenant = match scope {
            Scope::Tenant(t) => {
                reg.by_tenant.entry(t.clone()).or_default().push(r);
                Some(t.clone())
            }
            Scope::All => {
                reg.all_tenants.push(r);
                None
            }
        };
        drop(reg);
        self.inner.live_cursors.fetch_add(1, Ordering::Relaxed);
        (
            LiveReg {
                inner: self.inner.clone(),
                id,
                tenant,
                rx,
            },
            head,
        )
    }

    /// Opens a cursor. Returns it with the log head at opening (for `welcome`/head comments).
    pub async fn open(
        &self,
        scope: Scope,
        filter: Arc<Filter>,
        start: Start,
        queue_cap: usize,
    ) -> Result<(Cursor, u64), LogError> {
        let head = self.inner.log.head().max(self.head());
        let mut c = Cursor {
            hub: self.clone(),
            scope,
            filter,
            queue_cap,
            pos: 0,
            pending: VecDeque::new(),
            resets: VecDeque::new(),
            live: None,
            live_from: 0,
        };
        match start {
            Start::Live => {
                c.pos = head;
                c.go_live();
            }
            // The head counters trail the database by a moment (a commit is readable just
            // before its writer publishes the new head), so a cursor a reader has just seen
            // may look ahead of them: ask the log whether that seq exists before calling the
            // cursor unknown.
            Start::After(s) if s > head && !self.exists(s).await? => {
                c.resets.push_back(Reset::UnknownCursor { head });
                c.pos = head;
                c.go_live();
            }
            Start::After(s) => c.pos = s,
            Start::Last(n) => {
                c.go_live();
                let upto = c.live_from;
                let mut q = ReadQuery::after(c.scope.clone(), c.filter.clone(), 0, n);
                q.before = Some(upto.saturating_add(1));
                q.order = Order::Desc;
                let mut events = read_full(self.inner.log.as_ref(), q).await?.events;
                events.reverse();
                c.pending.extend(events);
                c.pos = upto;
            }
        }
        Ok((c, head))
    }
}

impl Hub {
    /// Whether the log holds an event with this seq (of any tenant).
    async fn exists(&self, seq: u64) -> Result<bool, LogError> {
        let mut q = ReadQuery::after(Scope::All, Arc::new(Filter::default()), seq - 1, 1);
        q.before = Some(seq.saturating_add(1));
        Ok(self
            .inner
            .log
            .read(q)
            .await?
            .events
            .iter()
            .any(|e| e.seq == seq))
    }
}

/// Reads until `query.limit` matches are found or the range is exhausted (the log bounds
/// the rows each call examines).
pub async fn read_full(log: &dyn EventLog, mut query: ReadQuery) -> Result<ReadPage, LogError> {
    let limit = query.limit;
    let mut out = ReadPage {
        scanned_to: query.after,
        ..ReadPage::default()
    };
    if limit == 0 {
        return Ok(out);
    }
    loop {
        query.limit = limit - out.events.len();
        let page = log.read(query.clone()).await?;
        out.events.extend(page.events);
        out.scanned_to = page.scanned_to;
        out.exhausted = page.exhausted;
        if page.exhausted || out.events.len() >= limit {
            return Ok(out);
        }
        match query.order {
            Order::Asc => query.after = page.scanned_to,
            Order::Desc => query.before = Some(page.scanned_to),
        }
    }
}

struct LiveReg {
    inner: Arc<Inner>,
    id: u64,
    tenant: Option<String>,
    rx: mpsc::Receiver<Arc<Committed>>,
}

impl Drop for LiveReg {
    fn drop(&mut self) {
        self.inner.live_cursors.fetch_sub(1, Ordering::Relaxed);
        let mut reg = self.inner.lock();
        let list = match &self.tenant {
            Some(t) => match reg.by_tenant.get_mut(t) {
                Some(l) => l,
                None => return,
            },
            None => &mut reg.all_tenants,
        };
        if let Some(i) = list.iter().position(|r| r.id == self.id) {
            list.swap_remove(i);
        }
        if let Some(t) = &self.tenant {
            if reg.by_tenant.get(t).is_some_and(Vec::is_empty) {
                reg.by_tenant.remove(t);
            }
        }
    }
}

/// A reader: `(scope, filter, position)` over the log, fed live once caught up.
pub struct Cursor {
    hub: Hub,
    scope: Scope,
    filter: Arc<Filter>,
    queue_cap: usize,
    /// Every matching event up to here has been handed out or is in `pending`.
    pos: u64,
    pending: VecDeque<Arc<Committed>>,
    resets: VecDeque<Reset>,
    live: Option<LiveReg>,
    /// The published head when `live` was registered: history must be read up to here.
    live_from: u64,
}

impl Cursor {
    fn go_live(&mut self) {
        let (reg, head) = self
            .hub
            .register(&self.scope, self.filter.clone(), self.queue_cap);
        self.live = Some(reg);
        self.live_from = head;
    }

    /// Whether the cursor is currently fed live (false while it reads the log).
    pub fn is_live(&self) -> bool {
        self.live.is_some() && self.pos >= self.live_from && self.pending.is_empty()
    }

    async fn read_page(&self, before: Option<u64>) -> Result<ReadPage, LogError> {
        let mut q = ReadQuery::after(
            self.scope.clone(),
            self.filter.clone(),
            self.pos,
            CATCH_UP_CHUNK,
        );
        q.before = before;
        self.hub.inner.log.read(q).await
    }

    /// The next item if one is ready without waiting or reading the log (buffered history or
    /// queued live events); lets transports pack several events into one write.
    pub fn try_next(&mut self) -> Option<CursorItem> {
        if let Some(r) = self.resets.pop_front() {
            return Some(CursorItem::Reset(r));
        }
        if let Some(e) = self.pending.pop_front() {
            return Some(CursorItem::Event(e));
        }
        if self.pos < self.live_from {
            return None;
        }
        let live = self.live.as_mut()?;
        while let Ok(e) = live.rx.try_recv() {
            if e.seq > self.pos {
                self.pos = e.seq;
                return Some(CursorItem::Event(e));
            }
        }
        None
    }

    /// The next item. Cancel-safe between items: dropping the future loses nothing that a
    /// new call would not hand out.
    pub async fn next(&mut self) -> Result<CursorItem, LogError> {
        loop {
            if let Some(r) = self.resets.pop_front() {
                return Ok(CursorItem::Reset(r));
            }
            if let Some(e) = self.pending.pop_front() {
                return Ok(CursorItem::Event(e));
            }
            if self.live.is_none() {
                let pruned = self.hub.inner.log.pruned_through();
                if self.pos < pruned {
                    self.resets
                        .push_back(Reset::Retention { oldest: pruned + 1 });
                    self.pos = pruned;
                    continue;
                }
                let page = self.read_page(None).await?;
                self.pos = self.pos.max(page.scanned_to);
                self.pending.extend(page.events);
                if page.exhausted {
                    self.go_live();
                }
                continue;
            }
            if self.pos < self.live_from {
                let page = self.read_page(Some(self.live_from + 1)).await?;
                self.pos = if page.exhausted {
                    self.live_from
                } else {
                    page.scanned_to.max(self.pos)
                };
                self.pending.extend(page.events);
                continue;
            }
            let Some(live) = self.live.as_mut() else {
                continue;
            };
            match live.rx.recv().await {
                Some(e) if e.seq <= self.pos => continue,
                Some(e) => {
                    self.pos = e.seq;
                    return Ok(CursorItem::Event(e));
                }
                // The hub dropped this registration (queue full): read the log from `pos`.
                None => self.live = None,
            }
        }
    }
}

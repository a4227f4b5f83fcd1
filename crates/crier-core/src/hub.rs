//! Cursors over the log and the live fan-out that feeds the caught-up ones.
//!
//! Every reader is a [`Cursor`]: `(scope, filter, position)`. A cursor reads the log until it
//! has caught up, then registers with the [`Hub`] for live events through a bounded queue.
//! The hub hands each committed event, in seq order, to its fan-out stage
//! (`crate::fanout`), which matches it on its own thread and pushes it to the queues of the
//! matching registrations with `try_send`; a queue that is full — in events
//! (`queue_per_connection`) or in bytes (half of `reader_buffer_bytes`) — is *dropped* from
//! the stage (counted as a fallback) and its cursor, after draining what was queued, goes back
//! to reading the log from its position and rejoins live when caught up. Catch-up pages are
//! bounded in bytes by the other half. So a slow reader costs at most its buffer in memory,
//! never slows publishers or other readers, and misses nothing.
//!
//! The seam between history and live is closed by registering *before* reading the last
//! stretch of history: registration records the stage's offered head `H` under the lock that
//! queues events for matching, so every event above `H` goes to the queue and every event up
//! to `H` is in the log. The cursor reads `(position, H]` from the log, then takes the queue,
//! skipping anything at or below its position. Nothing is lost and nothing is doubled.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde_json::json;

use crate::event::Committed;
use crate::fanout::{Engine, LiveQueue, PartKey};
use crate::filter::Filter;
use crate::log::{EventLog, LogError, Order, ReadPage, ReadQuery, Scope};

/// Events read from the log per round trip while catching up (pages are also bounded in
/// bytes, by half the reader's buffer).
const CATCH_UP_CHUNK: usize = 1000;

/// The default of §12.2 `reader_buffer_bytes`: what one reader may hold in memory.
pub const DEFAULT_READER_BUFFER_BYTES: usize = 1 << 20;

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

struct Inner {
    log: Arc<dyn EventLog>,
    engine: Arc<Engine>,
    reader_buffer_bytes: usize,
    live_cursors: AtomicU64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.engine.close();
    }
}

/// The live fan-out over one log. Cheap to clone.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Hub {
    /// A hub over `log`, starting at its current head, holding at most
    /// [`DEFAULT_READER_BUFFER_BYTES`] per reader. The caller installs [`Hub::commit_sink`]
    /// into the log (or feeds [`Hub::publish`] from a broker).
    ///
    /// # Panics
    /// When the operating system refuses to start the fan-out thread.
    pub fn new(log: Arc<dyn EventLog>) -> Hub {
        Hub::with_reader_buffer_bytes(log, DEFAULT_READER_BUFFER_BYTES)
    }

    /// A hub whose readers each hold at most `bytes` of events in memory (§12.2
    /// `reader_buffer_bytes`): half for a catch-up page read from the log, half for the
    /// live queue.
    ///
    /// # Panics
    /// When the operating system refuses to start the fan-out thread.
    pub fn with_reader_buffer_bytes(log: Arc<dyn EventLog>, bytes: usize) -> Hub {
        let head = log.head();
        let engine = Engine::start(head).expect("the fan-out thread could not be started");
        Hub {
            inner: Arc::new(Inner {
                log,
                engine,
                reader_buffer_bytes: bytes.max(2),
                live_cursors: AtomicU64::new(0),
            }),
        }
    }

    /// The log under this hub.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.inner.log
    }

    /// The head as handed to the fan-out stage: every event up to here is either offered to
    /// the live readers or queued to be, in order.
    pub fn head(&self) -> u64 {
        self.inner.engine.head()
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
                inner.engine.publish(events);
            }
        })
    }

    /// Hands committed events, in seq order, to the fan-out stage and returns at once; the
    /// stage matches them to the live readers on its own thread. Events at or below the
    /// head are ignored (already handed over).
    pub fn publish(&self, events: &[Arc<Committed>]) {
        self.inner.engine.publish(events);
    }

    fn register(&self, scope: &Scope, filter: Arc<Filter>, cap: usize) -> (LiveReg, u64) {
        let key = match scope {
            Scope::Tenant(t) => PartKey::Tenant(Arc::from(t.as_str())),
            Scope::All => PartKey::All,
        };
        let (id, queue, head) =
            self.inner
                .engine
                .register(key.clone(), filter, cap, self.live_bytes());
        self.inner.live_cursors.fetch_add(1, Ordering::Relaxed);
        (
            LiveReg {
                inner: self.inner.clone(),
                id,
                key,
                queue,
            },
            head,
        )
    }

    /// Bytes a reader's live queue may hold.
    fn live_bytes(&self) -> usize {
        self.inner.reader_buffer_bytes / 2
    }

    /// Bytes a reader's catch-up page may hold.
    fn page_bytes(&self) -> usize {
        self.inner.reader_buffer_bytes - self.live_bytes()
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
                c.pos = self.nth_last(&c, n, upto).await?;
            }
        }
        Ok((c, head))
    }
}

impl Hub {
    /// The position just below the `n`-th last event of `c` up to `upto` (or `upto` when
    /// there is none), found with pages bounded in bytes so that `last=10000` of large
    /// events never sits in memory at once; the cursor then reads them forward.
    async fn nth_last(&self, c: &Cursor, n: usize, upto: u64) -> Result<u64, LogError> {
        let mut before = upto.saturating_add(1);
        let mut found = 0;
        let mut lowest = None;
        while found < n {
            let mut q = ReadQuery::after(c.scope.clone(), c.filter.clone(), 0, n - found);
            q.before = Some(before);
            q.order = Order::Desc;
            q.max_bytes = Some(self.page_bytes());
            let page = self.inner.log.read(q).await?;
            found += page.events.len();
            if let Some(e) = page.events.last() {
                lowest = Some(e.seq);
            }
            if page.exhausted {
                break;
            }
            before = page.scanned_to;
        }
        Ok(lowest.map_or(upto, |s| s - 1))
    }

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

/// Slots of read-ahead history a caught-up cursor keeps.
const PENDING_KEEP: usize = 64;

struct LiveReg {
    inner: Arc<Inner>,
    id: u64,
    key: PartKey,
    /// Shared with the fan-out stage, which pushes the matching events.
    queue: Arc<LiveQueue>,
}

impl Drop for LiveReg {
    fn drop(&mut self) {
        self.queue.events.receiver_gone();
        self.inner.live_cursors.fetch_sub(1, Ordering::Relaxed);
        self.inner.engine.unregister(&self.key, self.id);
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

    /// The cursor's position: every matching event up to this seq has been handed out or is
    /// buffered to be. Right after [`Hub::open`] it is where the reader starts.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// The next event of the history read ahead. A caught-up cursor gives the page's storage
    /// back, so a reader that once caught up over a long history does not keep it.
    fn take_pending(&mut self) -> Option<Arc<Committed>> {
        let e = self.pending.pop_front()?;
        if self.pending.is_empty() && self.pending.capacity() > PENDING_KEEP {
            self.pending = VecDeque::new();
        }
        Some(e)
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
        q.max_bytes = Some(self.hub.page_bytes());
        self.hub.inner.log.read(q).await
    }

    /// The next item if one is ready without waiting or reading the log (buffered history or
    /// queued live events); lets transports pack several events into one write.
    pub fn try_next(&mut self) -> Option<CursorItem> {
        if let Some(r) = self.resets.pop_front() {
            return Some(CursorItem::Reset(r));
        }
        if let Some(e) = self.take_pending() {
            return Some(CursorItem::Event(e));
        }
        if self.pos < self.live_from {
            return None;
        }
        let live = self.live.as_mut()?;
        while let Some(e) = live.queue.took(live.queue.events.try_pop()) {
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
            if let Some(e) = self.take_pending() {
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
            let got = live.queue.events.pop_wait().await;
            match live.queue.took(got) {
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

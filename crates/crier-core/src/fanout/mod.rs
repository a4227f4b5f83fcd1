//! The fan-out stage: matches committed events to live readers off the path that commits
//! and answers publishers.
//!
//! The log's writer (or a cluster follower) hands each committed group to
//! [`Engine::publish`], which only appends the events, in seq order, to the work queue of
//! each partition that has live readers — one partition per tenant, plus one for readers of
//! every tenant — and returns. Matching and queueing to readers happen on the engine's own
//! thread, which serves the partitions with work round-robin, each for at most
//! [`SLICE`] of matching per turn ([`CHUNK`] events at most). So a publish costs the same
//! whatever the readers, their filters or their speed, and a tenant whose filters are heavy
//! delays its own deliveries, not another tenant's: every other tenant with work gets a
//! turn between two of its slices.
//!
//! The history/live seam: a registration records the partition's *offered head* `H` — the
//! seq below the partition's first queued event, or the engine's head when nothing is
//! queued — and is only offered events above `H`. Registration and queueing take the same
//! lock, so every event of the tenant above `H` is still queued (or not yet published) when
//! the registration arrives, and the engine adds new registrations to its index before it
//! matches anything it takes from the queue afterwards. Every event up to `H` is committed,
//! so the cursor reads it from the log.
//!
//! A partition whose queue grows past [`PART_QUEUE_EVENTS`] or [`PART_QUEUE_BYTES`] (its
//! readers' filters cost more than the machine's share it gets) is not allowed to grow: its
//! queue is dropped with every registration made before, and those cursors read the log
//! from their positions, losing nothing.

mod index;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::event::Committed;
use crate::filter::Filter;
use crate::queue::Queue;
use index::Index;

/// Most events taken from one partition per turn.
const CHUNK: usize = 256;
/// Most time one partition's matching holds the engine per turn.
const SLICE: Duration = Duration::from_millis(1);
/// Events a partition may have waiting for matching before its readers fall back.
pub(crate) const PART_QUEUE_EVENTS: usize = 65_536;
/// Bytes of events a partition may have waiting for matching before its readers fall back.
pub(crate) const PART_QUEUE_BYTES: usize = 64 << 20;

/// A live reader as the engine sees it.
pub(crate) struct Reg {
    pub(crate) id: u64,
    /// Only events above this seq are offered (the history/live seam).
    pub(crate) from: u64,
    pub(crate) filter: Arc<Filter>,
    pub(crate) live: Arc<LiveQueue>,
    /// Events the reader's queue holds at most.
    pub(crate) cap: usize,
    /// Bytes of event JSON the reader's queue holds at most.
    pub(crate) max_bytes: usize,
}

impl Drop for Reg {
    /// The engine forgets the reader (it fell behind, or went away): its cursor drains what
    /// is queued, then reads the log.
    fn drop(&mut self) {
        self.live.events.close();
    }
}

/// A live reader's queue: the engine pushes, the reader's cursor pops.
pub(crate) struct LiveQueue {
    pub(crate) events: Queue<Arc<Committed>>,
    /// Bytes of event JSON queued and not yet taken.
    pub(crate) bytes: AtomicUsize,
}

/// Slots a drained live queue keeps: a reader that gets an event now and then does not
/// allocate for each, and one that fell behind gives its backlog's storage back.
const LIVE_KEEP: usize = 16;

impl Default for LiveQueue {
    fn default() -> LiveQueue {
        LiveQueue {
            events: Queue::new(LIVE_KEEP),
            bytes: AtomicUsize::new(0),
        }
    }
}

impl LiveQueue {
    /// The next queued event, if any, with its bytes given back.
    pub(crate) fn took(&self, e: Option<Arc<Committed>>) -> Option<Arc<Committed>> {
        if let Some(e) = &e {
            self.bytes.fetch_sub(e.json.len(), Ordering::AcqRel);
        }
        e
    }
}

/// A partition's name: one tenant, or the readers of every tenant.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum PartKey {
    All,
    Tenant(Arc<str>),
}

#[derive(Default)]
struct Part {
    /// Live registrations (made and not yet dropped by their cursors).
    regs: usize,
    queue: VecDeque<Arc<Committed>>,
    queued_bytes: usize,
    incoming: Vec<Reg>,
    removed: Vec<u64>,
    /// Registrations with ids up to here are to be dropped (the queue overflowed).
    drop_through: u64,
    /// Bumped on overflow, so that events a turn took before it are not put back.
    epoch: u64,
    /// In the ready ring or being served.
    scheduled: bool,
}

impl Part {
    fn has_work(&self) -> bool {
        !self.queue.is_empty() || !self.incoming.is_empty() || !self.removed.is_empty()
    }
}

#[derive(Default)]
struct Router {
    /// Every event up to here has been queued to its partitions (or had no readers).
    head: u64,
    next_id: u64,
    all: Part,
    tenants: HashMap<Arc<str>, Part>,
    ready: VecDeque<PartKey>,
    parked: bool,
    closed: bool,
}

impl Router {
    fn part(&mut self, key: &PartKey) -> Option<&mut Part> {
        match key {
            PartKey::All => Some(&mut self.all),
            PartKey::Tenant(t) => self.tenants.get_mut(t),
        }
    }
}

/// Queues one event to a partition; false if the partition had to be reset.
fn enqueue(part: &mut Part, key: &PartKey, ev: &Arc<Committed>, next_id: u64) -> bool {
    if part.queue.len() >= PART_QUEUE_EVENTS || part.queued_bytes >= PART_QUEUE_BYTES {
        part.queue.clear();
        part.queued_bytes = 0;
        part.incoming.clear();
        part.drop_through = next_id;
        part.epoch += 1;
        metrics::counter!("crier_fanout_overflows_total").increment(1);
        tracing::warn!(
            partition = match key {
                PartKey::All => "*",
                PartKey::Tenant(t) => t,
            },
            "fan-out queue over its bound; this partition's live readers go back to the log"
        );
        // The event that found the queue full is not offered either: readers registered
        // from now on start above it.
        return false;
    }
    part.queued_bytes += ev.json.len();
    part.queue.push_back(ev.clone());
    true
}

/// The fan-out stage of one hub.
pub(crate) struct Engine {
    router: Mutex<Router>,
    wake: Condvar,
}

/// What one turn of the engine works on.
struct Turn {
    key: PartKey,
    events: Vec<Arc<Committed>>,
    incoming: Vec<Reg>,
    removed: Vec<u64>,
    drop_through: u64,
    epoch: u64,
}

impl Engine {
    /// Starts an engine whose head is `head` (events up to it are never offered).
    pub(crate) fn start(head: u64) -> std::io::Result<Arc<Engine>> {
        let engine = Arc::new(Engine {
            router: Mutex::new(Router {
                head,
                ..Router::default()
            }),
            wake: Condvar::new(),
        });
        let e = engine.clone();
        std::thread::Builder::new()
            .name("crier-fanout".into())
            .spawn(move || e.run())?;
        Ok(engine)
    }

    // A std Mutex: every critical section is a few queue operations, never awaits, and
    // `publish` is called from the log's writer thread, outside any runtime.
    fn lock(&self) -> MutexGuard<'_, Router> {
        self.router
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The head queued for matching.
    pub(crate) fn head(&self) -> u64 {
        self.lock().head
    }

    /// Stops the engine's thread.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Queues committed events, in seq order, for matching. Events at or below the head are
    /// ignored (already queued). Costs a few queue operations per event and partition with
    /// readers, whatever those readers are.
    pub(crate) fn publish(&self, events: &[Arc<Committed>]) {
        let mut guard = self.lock();
        let r = &mut *guard;
        let mut woke = false;
        for ev in events {
            if ev.seq <= r.head {
                continue;
            }
            r.head = ev.seq;
            if let Some((key, part)) = r.tenants.get_key_value(ev.tenant.as_str()) {
                if part.regs > 0 {
                    let key = PartKey::Tenant(key.clone());
                    let Some(part) = r.tenants.get_mut(ev.tenant.as_str()) else {
                        continue;
                    };
                    enqueue(part, &key, ev, r.next_id);
                    if !part.scheduled {
                        part.scheduled = true;
                        r.ready.push_back(key);
                        woke = true;
                    }
                }
            }
            if r.all.regs > 0 {
                enqueue(&mut r.all, &PartKey::All, ev, r.next_id);
                if !r.all.scheduled {
                    r.all.scheduled = true;
                    r.ready.push_back(PartKey::All);
                    woke = true;
                }
            }
        }
        if woke && r.parked {
            r.parked = false;
            drop(guard);
            self.wake.notify_one();
        }
    }

    /// Registers a live reader of `key` with a queue of `cap` events and `max_bytes` bytes.
    /// Returns its id, the queue it shares with the engine and the offered head `H`: the
    /// reader gets every matching event above `H`.
    pub(crate) fn register(
        &self,
        key: PartKey,
        filter: Arc<Filter>,
        cap: usize,
        max_bytes: usize,
    ) -> (u64, Arc<LiveQueue>, u64) {
        let live = Arc::new(LiveQueue::default());
        let mut guard = self.lock();
        let r = &mut *guard;
        r.next_id += 1;
        let id = r.next_id;
        let head = r.head;
        let part = match &key {
            PartKey::All => &mut r.all,
            PartKey::Tenant(t) => r.tenants.entry(t.clone()).or_default(),
        };
        let from = part.queue.front().map_or(head, |e| e.seq - 1);
        part.regs += 1;
        part.incoming.push(Reg {
            id,
            from,
            filter,
            live: live.clone(),
            cap: cap.max(1),
            max_bytes,
        });
        let wake = !part.scheduled;
        if wake {
            part.scheduled = true;
            r.ready.push_back(key);
        }
        let notify = wake && r.parked;
        if notify {
            r.parked = false;
        }
        drop(guard);
        if notify {
            self.wake.notify_one();
        }
        (id, live, from)
    }

    /// Forgets a registration (its cursor was dropped or went back to the log).
    pub(crate) fn unregister(&self, key: &PartKey, id: u64) {
        let mut guard = self.lock();
        let r = &mut *guard;
        let Some(part) = r.part(key) else { return };
        part.regs = part.regs.saturating_sub(1);
        if let Some(i) = part.incoming.iter().position(|g| g.id == id) {
            part.incoming.swap_remove(i);
        } else {
            part.removed.push(id);
        }
        if part.scheduled {
            return;
        }
        part.scheduled = true;
        r.ready.push_back(key.clone());
        if r.parked {
            r.parked = false;
            drop(guard);
            self.wake.notify_one();
        }
    }

    /// Takes the next partition's turn, waiting for work; `None` once closed.
    fn take(&self) -> Option<Turn> {
        let mut r = self.lock();
        loop {
            if r.closed {
                return None;
            }
            while let Some(key) = r.ready.pop_front() {
                let Some(part) = r.part(&key) else { continue };
                let n = part.queue.len().min(CHUNK);
                let events: Vec<_> = part.queue.drain(..n).collect();
                part.queued_bytes -= events.iter().map(|e| e.json.len()).sum::<usize>();
                return Some(Turn {
                    key,
                    events,
                    incoming: std::mem::take(&mut part.incoming),
                    removed: std::mem::take(&mut part.removed),
                    drop_through: std::mem::take(&mut part.drop_through),
                    epoch: part.epoch,
                });
            }
            r.parked = true;
            r = self.wake.wait(r).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Ends a turn: puts back what the slice did not reach, and reschedules or retires the
    /// partition.
    fn finish(&self, turn: Turn, done: usize, index_len: usize) -> bool {
        let mut guard = self.lock();
        let r = &mut *guard;
        let Some(part) = r.part(&turn.key) else {
            return true;
        };
        if part.epoch == turn.epoch {
            for ev in turn.events[done..].iter().rev() {
                part.queued_bytes += ev.json.len();
                part.queue.push_front(ev.clone());
            }
        }
        if part.has_work() || part.drop_through > 0 {
            r.ready.push_back(turn.key);
            return false;
        }
        part.scheduled = false;
        let retire = part.regs == 0 && index_len == 0;
        if retire {
            if let PartKey::Tenant(t) = &turn.key {
                r.tenants.remove(t);
            }
        }
        retire
    }

    fn run(self: Arc<Self>) {
        let mut indexes: HashMap<PartKey, Index> = HashMap::new();
        while let Some(mut turn) = self.take() {
            let index = indexes.entry(turn.key.clone()).or_default();
            if turn.drop_through > 0 {
                index.remove_through(turn.drop_through);
            }
            for id in &turn.removed {
                index.remove(*id);
            }
            for reg in turn.incoming.drain(..) {
                index.insert(reg);
            }
            let started = Instant::now();
            let mut done = 0;
            for ev in &turn.events {
                index.offer(ev);
                done += 1;
                if started.elapsed() >= SLICE {
                    break;
                }
            }
            let len = index.len();
            let key = turn.key.clone();
            if self.finish(turn, done, len) {
                indexes.remove(&key);
            }
        }
        tracing::debug!("fan-out stopped");
    }
}

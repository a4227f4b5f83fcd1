//! Replays (§3, §5): history re-sent with its original spacing divided by a speed of 1 to 10,
//! or as fast as the reader takes it (`max`). Events keep their original `seq` and `time`.
//!
//! A replay is a bounded range of the log (fixed at creation, so `total` is exact) read as a
//! cursor in pages; pacing follows a schedule anchored at the first event, so slow reads do
//! not accumulate drift. Replays live in memory while running and for a while after.
//!
//! A replay holds one of its tenant's slots while `running`. It gives the slot back when it
//! ends, when it is stopped, when its stream is closed before the end (a replay is streamed
//! once, so it could never go on), when nobody opened its stream within
//! `replay_idle_timeout` (§12.6), and when the credential of its stream ends (§12.1).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crier_core::log::Order;
use crier_core::{Committed, Filter, ReadQuery, Scope};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::Error;
use crate::auth::narrow;
use crate::state::AppState;

/// How fast a replay goes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Speed {
    /// Original spacing divided by this factor (1 to 10).
    Factor(f64),
    /// As fast as the reader takes it.
    Max,
}

impl Speed {
    /// Parses `1..10` or `"max"`.
    pub fn parse(v: Option<&Value>) -> Result<Speed, Error> {
        match v {
            None | Some(Value::Null) => Ok(Speed::Factor(1.0)),
            Some(Value::String(s)) if s == "max" => Ok(Speed::Max),
            Some(Value::Number(n)) => match n.as_f64() {
                Some(f) if (1.0..=10.0).contains(&f) => Ok(Speed::Factor(f)),
                _ => Err(Error::invalid(
                    "invalid_replay",
                    "`speed` is a number from 1 to 10, or \"max\"",
                )),
            },
            _ => Err(Error::invalid(
                "invalid_replay",
                "`speed` is a number from 1 to 10, or \"max\"",
            )),
        }
    }

    /// The speed as JSON: `"max"` or the factor.
    pub fn json(self) -> Value {
        match self {
            Speed::Max => "max".into(),
            Speed::Factor(f) if f.fract() == 0.0 => Value::from(f as u64),
            Speed::Factor(f) => f.into(),
        }
    }
}

/// One replay.
pub struct Replay {
    /// Identifier (`rp_…`).
    pub id: String,
    /// Owner.
    pub tenant: String,
    query: ReadQuery,
    /// Pacing.
    pub speed: Speed,
    /// Matching events in the range.
    pub total: u64,
    /// Events sent so far.
    pub sent: AtomicU64,
    state: Mutex<&'static str>,
    /// Cancelled by stop.
    pub cancel: CancellationToken,
    streamed: std::sync::atomic::AtomicBool,
    finished_at: Mutex<Option<Instant>>,
    /// When it was created, microseconds since the epoch.
    pub created_us: i64,
    /// Who created it (the credential's subject).
    pub actor: String,
    /// The creator's `subscribe` patterns, sorted (`None`: unrestricted). `total` and `sent`
    /// count events inside them, so they are shown only to readers with the same view.
    scope: Option<Vec<String>>,
}

/// A credential's `subscribe` patterns, sorted, for comparing views.
fn scope_of(p: &crier_core::Principal) -> Option<Vec<String>> {
    p.subscribe.as_ref().map(|s| {
        let mut s: Vec<String> = s.iter().map(|p| p.as_str().to_string()).collect();
        s.sort();
        s.dedup();
        s
    })
}

impl Replay {
    /// `running`, `done` or `stopped`.
    pub fn state(&self) -> &'static str {
        *self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn finish(&self, state: &'static str) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *s == "running" {
            *s = state;
            *self.finished_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        }
    }

    /// Marks it finished after its last event.
    pub fn finish_done(&self) {
        self.finish("done");
    }

    /// Claims the replay's one stream (WebSocket replays are streamed on their connection).
    pub fn mark_streamed(&self) {
        self.streamed.store(true, Ordering::Release);
    }

    /// Claims the replay's one stream; false when it was claimed already.
    pub fn claim_stream(&self) -> bool {
        !self.streamed.swap(true, Ordering::AcqRel)
    }

    /// The entry of `GET /v1/replays`, as `viewer` may see it.
    pub fn summary(&self, viewer: &crier_core::Principal) -> Value {
        let created = crier_core::event::time_from_us(self.created_us)
            .map(crier_core::event::format_time)
            .unwrap_or_default();
        let mut v = self.status_for(viewer);
        v["created_at"] = created.into();
        v["actor"] = self.actor.as_str().into();
        v
    }

    /// Stops it.
    pub fn stop(&self) {
        self.finish("stopped");
        self.cancel.cancel();
    }

    /// Whether `viewer` reads exactly what the creator read, so the counts tell it nothing
    /// about events outside its `subscribe` patterns (§12.5).
    pub fn counts_visible_to(&self, viewer: &crier_core::Principal) -> bool {
        viewer.subscribe.is_none() || scope_of(viewer) == self.scope
    }

    /// The status object of §3, with the creator's counts.
    pub fn status(&self) -> Value {
        json!({
            "id": self.id,
            "state": self.state(),
            "sent": self.sent.load(Ordering::Relaxed),
            "total": self.total,
            "speed": self.speed.json(),
        })
    }

    /// The status object as `viewer` may see it: a credential narrower than (or other than)
    /// the creator's gets `null` counts, since they count events it may not read.
    pub fn status_for(&self, viewer: &crier_core::Principal) -> Value {
        let mut v = self.status();
        if !self.counts_visible_to(viewer) {
            v["sent"] = Value::Null;
            v["total"] = Value::Null;
        }
        v
    }
}

/// The replays of this hub.
#[derive(Default)]
pub struct Replays {
    // A std Mutex: map updates only, never held across an await.
    map: Mutex<HashMap<String, Arc<Replay>>>,
}

/// How long a finished replay stays queryable.
const KEEP_FINISHED: Duration = Duration::from_secs(600);

/// What a replay covers.
pub struct ReplaySpec {
    /// Which events.
    pub filter: Filter,
    /// Inclusive start (RFC 3339).
    pub since: Option<String>,
    /// Exclusive end (RFC 3339); default now.
    pub until: Option<String>,
    /// Pacing.
    pub speed: Speed,
}

fn time(v: Option<&str>, key: &str) -> Result<Option<i64>, Error> {
    let now = crier_core::event::now_us();
    v.map(|s| {
        crier_core::event::parse_time_or_ago_us(s, now).ok_or_else(|| {
            Error::invalid(
                "invalid_replay",
                format!("`{key}` must be an RFC 3339 time or a duration before now like 15m"),
            )
        })
    })
    .transpose()
}

impl Replays {
    /// Creates a replay for `tenant`, counting its events.
    pub async fn create(
        &self,
        state: &AppState,
        p: &crier_core::Principal,
        spec: ReplaySpec,
    ) -> Result<Arc<Replay>, Error> {
        let since = time(spec.since.as_deref(), "since")?
            .ok_or_else(|| Error::invalid("invalid_replay", "`since` is required"))?;
        let until = time(spec.until.as_deref(), "until")?;
        if until.is_some_and(|u| u <= since) {
            return Err(Error::invalid(
                "invalid_replay",
                "`until` must be after `since`",
            ));
        }
        crate::reader_limits::check_filter(&state.settings.limits, &spec.filter)?;
        let limit = state.settings.max_replays_per_tenant;
        {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, r| {
                r.finished_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_none_or(|t| t.elapsed() < KEEP_FINISHED)
            });
            let running = map
                .values()
                .filter(|r| r.tenant == p.tenant && r.state() == "running")
                .count();
            if running >= limit {
                metrics::counter!("crier_limit_hits_total", "limit" => "max_replays_per_tenant")
                    .increment(1);
                return Err(Error::limit_hit(
                    "too_many_replays",
                    format!(
                        "this tenant runs {limit} replays already (limits.max_replays_per_tenant)"
                    ),
                    1,
                ));
            }
        }
        let mut query = ReadQuery::after(
            Scope::Tenant(p.tenant.clone()),
            Arc::new(narrow(p, spec.filter)),
            0,
            1000,
        );
        query.before = Some(state.log.head() + 1);
        // A replay's pages, counting and streaming, hold at most `reader_buffer_bytes`.
        query.max_bytes = Some(state.settings.limits.reader_buffer_bytes);
        query.since_us = Some(since);
        query.until_us = until;
        let mut total = 0u64;
        let mut q = query.clone();
        loop {
            let page = state.log.read(q.clone()).await?;
            total += page.events.len() as u64;
            if page.exhausted {
                break;
            }
            q.after = page.scanned_to;
        }
        let mut idb = [0u8; 8];
        rand::Rng::fill(&mut rand::rng(), &mut idb);
        let replay = Arc::new(Replay {
            id: format!(
                "rp_{}",
                idb.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
            tenant: p.tenant.clone(),
            query,
            speed: spec.speed,
            total,
            sent: AtomicU64::new(0),
            state: Mutex::new("running"),
            cancel: state.shutdown.child_token(),
            streamed: Default::default(),
            finished_at: Mutex::new(None),
            created_us: crier_core::event::now_us(),
            actor: p.subject.clone(),
            scope: scope_of(p),
        });
        state.tasks.spawn(stop_when_idle(
            replay.clone(),
            state.settings.limits.replay_idle_timeout,
        ));
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(replay.id.clone(), replay.clone());
        Ok(replay)
    }

    /// The replays of `tenant`, newest first.
    pub fn list(&self, tenant: &str) -> Vec<Arc<Replay>> {
        let mut out: Vec<Arc<Replay>> = self
            .map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|r| r.tenant == tenant)
            .cloned()
            .collect();
        out.sort_by(|a, b| b.created_us.cmp(&a.created_us).then(b.id.cmp(&a.id)));
        out
    }

    /// A replay of `tenant` by id.
    pub fn get(&self, tenant: &str, id: &str) -> Result<Arc<Replay>, Error> {
        self.map
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .filter(|r| r.tenant == tenant)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("no replay {id:?}")))
    }
}

/// Stops `replay` when nobody has opened its stream within `idle` of its creation.
async fn stop_when_idle(replay: Arc<Replay>, idle: Duration) {
    tokio::select! {
        _ = replay.cancel.cancelled() => {}
        _ = tokio::time::sleep(idle) => {
            if !replay.streamed.load(Ordering::Acquire) && replay.state() == "running" {
                metrics::counter!("crier_limit_hits_total", "limit" => "replay_idle_timeout")
                    .increment(1);
                tracing::debug!(replay = %replay.id, "nobody streamed the replay; stopping it");
                replay.stop();
            }
        }
    }
}

/// Reads a replay's events with their pacing.
pub struct Pacer {
    replay: Arc<Replay>,
    state: AppState,
    pending: VecDeque<Arc<Committed>>,
    after: u64,
    exhausted: bool,
    origin: Option<(i64, Instant)>,
    /// The narrowing of whoever streams the replay (§12.5), on top of its creator's.
    reader: Option<Filter>,
    /// Events this pacer handed out.
    delivered: u64,
}

impl Pacer {
    /// Starts pacing now.
    pub fn new(state: &AppState, replay: Arc<Replay>) -> Pacer {
        Pacer {
            replay,
            state: state.clone(),
            pending: VecDeque::new(),
            after: 0,
            exhausted: false,
            origin: None,
            reader: None,
            delivered: 0,
        }
    }

    /// Streams only what `p` may read: a replay created by a credential that reads more
    /// is narrowed again for the one streaming it.
    pub fn reading_as(mut self, p: &crier_core::Principal) -> Pacer {
        self.reader = (!self.replay.counts_visible_to(p)).then(|| narrow(p, Filter::default()));
        self
    }

    /// The status object for the one streaming: a narrowed reader's counts are its own
    /// (`total` is known once the range is read to its end), never the creator's.
    pub fn status(&self) -> Value {
        let mut v = self.replay.status();
        if self.reader.is_some() {
            v["sent"] = self.delivered.into();
            v["total"] =
                if self.replay.state() == "done" && self.exhausted && self.pending.is_empty() {
                    self.delivered.into()
                } else {
                    Value::Null
                };
        }
        v
    }

    /// The next event when it is due, or `None` at the end.
    pub async fn next(&mut self) -> Result<Option<Arc<Committed>>, Error> {
        loop {
            if self.pending.is_empty() && !self.exhausted {
                let mut q = self.replay.query.clone();
                q.after = self.after;
                q.order = Order::Asc;
                // Half the reader's buffer: the other half is for what its transport queues.
                q.max_bytes = Some(self.state.settings.limits.reader_buffer_bytes / 2);
                let page = self.state.log.read(q).await?;
                self.after = page.scanned_to;
                self.exhausted = page.exhausted;
                self.pending.extend(page.events);
            }
            let Some(e) = self.pending.pop_front() else {
                return Ok(None);
            };
            if self.reader.as_ref().is_some_and(|f| !f.matches(&e)) {
                continue;
            }
            if let Speed::Factor(f) = self.replay.speed {
                match self.origin {
                    None => self.origin = Some((e.time_us, Instant::now())),
                    Some((t0, start)) => {
                        let offset_us = ((e.time_us - t0).max(0) as f64 / f) as u64;
                        tokio::time::sleep_until(start + Duration::from_micros(offset_us)).await;
                    }
                }
            }
            return Ok(Some(e));
        }
    }

    /// The replay it paces.
    pub fn replay(&self) -> &Arc<Replay> {
        &self.replay
    }

    /// Counts one event as sent.
    pub fn sent(&mut self) -> u64 {
        self.delivered += 1;
        self.replay.sent.fetch_add(1, Ordering::Relaxed) + 1
    }
}

//! The conformance suites every store implementation must pass, run by each backend's
//! tests: the `EventLog` suite ([`run`], in `log.rs`), and the subscription ([`subs`]),
//! saved-filter ([`filters`]) and entity ([`entities`]) store suites.
//!
//! The `EventLog` suite is called with a way to open (and reopen) a log by name. It checks
//! the invariants of [`crier_core::log`]: gapless commit-ordered seqs, all-or-nothing
//! idempotent appends, filtered and ranged reads in both orders, tenant scoping, retention
//! as a prefix that survives a restart, and the commit sink's ordering under concurrent
//! appenders.
//!
//! Failures panic with a message naming the broken property, as tests do. The module is the
//! `conformance` feature, which only test builds turn on: release builds do not compile it.

use std::sync::Arc;

use crier_core::log::BoxFuture;
use crier_core::{EventInput, EventLog, NewEvent, Principal, PublishContext};

mod entities;
mod filters;
mod log;
mod subs;

pub use self::entities::entities;
pub use self::filters::filters;
pub use self::log::run;
pub use self::subs::subs;

/// Opens the log called `name`; opening a name again after `close` reopens the same log.
pub type Opener = Arc<dyn Fn(String) -> BoxFuture<'static, Arc<dyn EventLog>> + Send + Sync>;

/// Runs one appending task per entry of `writers`, all at once: task `w` appends
/// `batch(w, i)` for each `i` in `0..rounds` to its log. Returns every acknowledged seq,
/// sorted.
pub async fn appended_seqs(
    writers: Vec<Arc<dyn EventLog>>,
    rounds: usize,
    batch: fn(usize, usize) -> Vec<NewEvent>,
) -> Vec<u64> {
    let tasks: Vec<_> = writers
        .into_iter()
        .enumerate()
        .map(|(w, log)| {
            tokio::spawn(async move {
                let mut acked = Vec::new();
                for i in 0..rounds {
                    let r = log.append(batch(w, i)).await.expect("append");
                    acked.extend(r.iter().map(|x| x.seq));
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("writer"));
    }
    acked.sort_unstable();
    acked
}

/// Builds a valid event for the suite.
pub fn event(tenant: &str, id: Option<&str>, kind: &str, tags: &[&str]) -> NewEvent {
    let mut p = Principal::anonymous_admin();
    p.tenant = tenant.to_string();
    let input = EventInput {
        id: id.map(String::from),
        kind: Some(kind.to_string()),
        tags: Some(tags.iter().map(|t| t.to_string()).collect()),
        data: Some(serde_json::json!({"n": id})),
        ..EventInput::default()
    };
    input
        .validate(&PublishContext {
            principal: &p,
            max_event_bytes: 65536,
            now_us: crier_core::event::now_us(),
        })
        .expect("suite events are valid")
}

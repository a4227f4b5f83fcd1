//! Which delivery tasks run: one per active webhook subscription, on the node that
//! dispatches (every node of a single-node hub; the lease holder of a cluster), restarted when
//! a subscription changes and reconciled with the store for changes made on other nodes.

use std::collections::HashMap;
use std::sync::Mutex;

use crier_core::webhook::{WebhookStatus, WebhookSub};
use tokio_util::sync::CancellationToken;

use crate::state::AppState;

/// Running delivery tasks, one per active subscription, on the node that dispatches (every
/// node of a single-node hub; the lease holder of a cluster).
#[derive(Default)]
pub struct Dispatcher {
    // A std Mutex: map updates only, never held across an await.
    tasks: Mutex<HashMap<String, Running>>,
    generation: std::sync::atomic::AtomicU64,
    /// Set while this node dispatches; every task is a child of it.
    active: Mutex<Option<CancellationToken>>,
}

struct Running {
    generation: u64,
    cancel: CancellationToken,
    /// The subscription as the task started it (to notice changes made on other nodes).
    started: WebhookSub,
}

/// Whether two versions of a subscription deliver the same way (cursor and note aside).
fn same_delivery(a: &WebhookSub, b: &WebhookSub) -> bool {
    a.filter == b.filter
        && a.url == b.url
        && a.secret == b.secret
        && a.status == b.status
        && a.expires_us == b.expires_us
}

impl Dispatcher {
    /// Makes this node the one that delivers (idempotent).
    pub fn activate(&self, state: &AppState) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.is_none() {
            *active = Some(state.shutdown.child_token());
        }
    }

    /// Stops every delivery task of this node (the lease moved elsewhere).
    pub fn deactivate(&self) {
        if let Some(t) = self.active.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.cancel();
        }
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Whether this node delivers.
    pub fn is_active(&self) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// (Re)starts delivery for a subscription according to its status. On a node that does
    /// not dispatch this does nothing; the dispatching node picks the change up when it
    /// reconciles.
    pub fn restart(&self, state: &AppState, sub: WebhookSub) {
        let Some(parent) = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return;
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = tasks.remove(&sub.id) {
            old.cancel.cancel();
        }
        if sub.status != WebhookStatus::Active {
            return;
        }
        let cancel = parent.child_token();
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tasks.insert(
            sub.id.clone(),
            Running {
                generation,
                cancel: cancel.clone(),
                started: sub.clone(),
            },
        );
        state
            .tasks
            .spawn(super::delivery::run(state.clone(), sub, cancel, generation));
    }

    /// Stops delivery for a subscription.
    pub fn stop(&self, id: &str) {
        if let Some(r) = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
        {
            r.cancel.cancel();
        }
    }

    /// Forgets a task that ended by itself (unless a newer one replaced it).
    pub(crate) fn finished(&self, id: &str, generation: u64) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if tasks.get(id).is_some_and(|r| r.generation == generation) {
            tasks.remove(id);
        }
    }

    /// Brings the running tasks in line with the stored subscriptions: starts new or
    /// resumed ones, restarts changed ones, stops deleted or paused ones.
    pub async fn reconcile(&self, state: &AppState) {
        if !self.is_active() {
            return;
        }
        let subs = match state.subs.list(None).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load subscriptions; retrying later");
                return;
            }
        };
        let stored: HashMap<&str, &WebhookSub> = subs.iter().map(|s| (s.id.as_str(), s)).collect();
        let gone: Vec<String> = {
            let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks
                .keys()
                .filter(|id| !stored.contains_key(id.as_str()))
                .cloned()
                .collect()
        };
        for id in gone {
            self.stop(&id);
        }
        for s in &subs {
            let current = {
                let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
                tasks.get(&s.id).map(|r| same_delivery(&r.started, s))
            };
            match current {
                Some(true) => {}
                Some(false) => self.restart(state, s.clone()),
                None if s.status == WebhookStatus::Active => self.restart(state, s.clone()),
                None => {}
            }
        }
    }
}

/// Starts delivery on a node that dispatches by itself (a single-node hub).
pub async fn start_all(state: &AppState) {
    state.webhooks.activate(state);
    state.webhooks.reconcile(state).await;
}

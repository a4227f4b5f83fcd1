//! A subscription of the embedding API: a cursor over the log (§4) as a `Stream` of events.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crier_core::{Cursor, CursorItem, Filter, Scope, Start};
use crier_server::AppState;
use futures_util::Stream;

use crate::Event;

/// The events of one tenant that match a filter, from a starting point, then live.
///
/// It follows §4's resume rules: after a retention gap it goes on from the oldest stored
/// event and counts the gap in [`Subscription::resets`]; a start beyond the head goes on
/// live. A slow reader never slows the hub: when it falls behind its queue it reads the log
/// instead, and misses nothing. The stream ends when the hub shuts down.
pub struct Subscription {
    inner: Pin<Box<dyn Stream<Item = Event> + Send>>,
    resets: Arc<AtomicU64>,
}

impl Subscription {
    /// How many times the subscription could not go on where it was (§4 `crier.reset`):
    /// events were removed by retention, or the start was beyond the head.
    pub fn resets(&self) -> u64 {
        self.resets.load(Ordering::Relaxed)
    }

    pub(crate) fn open(state: AppState, tenant: String, filter: Filter, start: Start) -> Self {
        let resets = Arc::new(AtomicU64::new(0));
        let reader = Reader {
            state,
            scope: Scope::Tenant(tenant),
            filter: Arc::new(filter),
            start,
            cursor: None,
            resets: resets.clone(),
        };
        let inner = futures_util::stream::unfold(reader, |mut r| async move {
            let ev = r.next().await?;
            Some((ev, r))
        });
        Subscription {
            inner: Box::pin(inner),
            resets,
        }
    }
}

impl Stream for Subscription {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.inner.as_mut().poll_next(cx)
    }
}

struct Reader {
    state: AppState,
    scope: Scope,
    filter: Arc<Filter>,
    start: Start,
    cursor: Option<Cursor>,
    resets: Arc<AtomicU64>,
}

impl Reader {
    /// The next event; `None` once the hub shuts down. A log that fails is retried every
    /// second: the cursor keeps its place, so nothing is lost or doubled meanwhile.
    async fn next(&mut self) -> Option<Event> {
        let shutdown = self.state.shutdown.clone();
        loop {
            if shutdown.is_cancelled() {
                return None;
            }
            let failed = match &mut self.cursor {
                None => {
                    let queue = self.state.settings.limits.queue_per_connection;
                    let opened = tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        r = self.state.hub.open(self.scope.clone(), self.filter.clone(), self.start, queue) => r,
                    };
                    match opened {
                        Ok((c, _head)) => {
                            self.cursor = Some(c);
                            continue;
                        }
                        Err(e) => e,
                    }
                }
                Some(c) => {
                    let item = tokio::select! {
                        _ = shutdown.cancelled() => return None,
                        r = c.next() => r,
                    };
                    match item {
                        Ok(CursorItem::Event(e)) => {
                            match serde_json::from_slice::<Event>(&e.json) {
                                Ok(ev) => return Some(ev),
                                Err(err) => {
                                    tracing::warn!(seq = e.seq, error = %err, "a stored event does not decode; skipped");
                                    continue;
                                }
                            }
                        }
                        Ok(CursorItem::Reset(_)) => {
                            self.resets.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        Err(e) => e,
                    }
                }
            };
            tracing::warn!(error = %failed, "subscription cannot read the log; retrying");
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}

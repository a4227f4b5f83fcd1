//! The §12.2 bounds on what a client's filter may ask of the hub: its size.
//!
//! Every path that takes a client's filter — SSE streams, WebSocket and GraphQL
//! subscriptions, replays, webhook subscriptions, and history reads (`GET /v1/events`, the
//! WebSocket `history` op, the GraphQL `events` query) — checks it here before anything is
//! registered or read, so a refusal never disturbs what the connection already holds, and
//! each refusal is counted in `crier_limit_hits_total` under the limit it hit. History is
//! bounded too because a read tests every event it scans against every pattern: one
//! `history` op of 10,000 patterns kept a core busy for tens of seconds over a 50,000-event
//! log. The GraphQL WebSocket's count of open subscriptions
//! (`max_subscriptions_per_connection`) lives here too.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crier_core::Filter;

use crate::config::Limits;
use crate::service::Error;

/// Refuses a filter beyond `max_filter_patterns` or `max_filter_bytes` with 400
/// `filter_too_large`, counting the hit.
pub fn check_filter(limits: &Limits, filter: &Filter) -> Result<(), Error> {
    let limit = if filter.pattern_count() > limits.max_filter_patterns {
        "max_filter_patterns"
    } else {
        "max_filter_bytes"
    };
    filter
        .check_size(limits.max_filter_patterns, limits.max_filter_bytes)
        .map_err(|e| {
            metrics::counter!("crier_limit_hits_total", "limit" => limit).increment(1);
            Error::from(e)
        })
}

/// The subscriptions open on one connection, held against
/// `max_subscriptions_per_connection` (the GraphQL WebSocket's; `/v1/ws` counts its own map).
#[derive(Debug, Default)]
pub struct SubscriptionSlots {
    open: AtomicUsize,
}

/// One subscription's place on its connection; gives it back when dropped.
#[derive(Debug)]
pub struct SlotGuard(Arc<SubscriptionSlots>);

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

impl SubscriptionSlots {
    /// Takes a place for one more subscription, or refuses with `too_many_subscriptions`
    /// (counted) when `max` are open.
    pub fn acquire(self: &Arc<Self>, max: usize) -> Result<SlotGuard, Error> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1))
            .map_err(|_| {
                metrics::counter!("crier_limit_hits_total", "limit" => "max_subscriptions_per_connection").increment(1);
                Error::invalid(
                    "too_many_subscriptions",
                    format!("a connection holds at most {max} subscriptions (limits.max_subscriptions_per_connection)"),
                )
            })?;
        Ok(SlotGuard(self.clone()))
    }
}

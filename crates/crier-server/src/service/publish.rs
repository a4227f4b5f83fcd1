//! Publishing, for every transport: validate a batch all-or-nothing (the hub's reserved
//! names included), take it from the tenant's rate, append it and count it. `POST
//! /v1/events`, the `/v1/ws` `publish` op, GraphQL's `publish`, Pusher triggers, the outbox
//! and the embedded hub all come through here, so an event is accepted by the same rules
//! whichever way it arrives.

use crier_core::event::now_us;
use crier_core::{cloudevents, AppendResult, EventInput, NewEvent, Principal, PublishContext};
use serde_json::Value;

use super::Error;
use crate::state::AppState;

/// Validates a batch of raw events for `principal`. All-or-nothing: the first bad event
/// rejects the batch, and its position is named.
pub fn prepare(
    state: &AppState,
    principal: &Principal,
    items: Vec<Value>,
    cloudevent: bool,
) -> Result<Vec<NewEvent>, Error> {
    let limits = &state.settings.limits;
    if items.is_empty() {
        return Err(Error::invalid("empty_batch", "the batch holds no events"));
    }
    if items.len() > limits.max_batch {
        metrics::counter!("crier_limit_hits_total", "limit" => "max_batch").increment(1);
        return Err(Error::too_large(
            "batch_too_large",
            format!(
                "{} events in one batch; at most {} are allowed (limits.max_batch)",
                items.len(),
                limits.max_batch
            ),
        ));
    }
    let ctx = PublishContext {
        principal,
        max_event_bytes: limits.max_event_bytes,
        now_us: now_us(),
    };
    let many = items.len() > 1;
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let place =
            |e: crier_core::ValidationError| if many { e.at(format!("event {i}")) } else { e };
        let input = if cloudevent {
            cloudevents::to_input(item).map_err(place)?
        } else {
            EventInput::deserialize_value(item).map_err(|e| {
                let e = crier_core::ValidationError::bad("invalid_event", e.to_string());
                Error::from(place(e))
            })?
        };
        let ev = input.validate(&ctx).map_err(|e| {
            if e.kind == crier_core::ErrorKind::TooLarge {
                metrics::counter!("crier_limit_hits_total", "limit" => "max_event_bytes")
                    .increment(1);
            }
            place(e)
        })?;
        check_reserved(&ev).map_err(place)?;
        out.push(ev);
    }
    Ok(out)
}

/// Whether an event type is the hub's own (`crier` or `crier.*`, in any case).
pub fn reserved_type(kind: &str) -> bool {
    let lower = kind.to_ascii_lowercase();
    lower == "crier" || lower.starts_with("crier.")
}

/// §12.11: the hub's own names are not for clients. Types starting with `crier.` (any
/// case) and the source `entities` (the entity store's events) are `reserved`.
pub fn check_reserved(ev: &NewEvent) -> Result<(), crier_core::ValidationError> {
    if reserved_type(&ev.kind) {
        return Err(crier_core::ValidationError::bad(
            "reserved",
            format!(
                "the event type `{}` is reserved: types starting with `crier.` are the hub's own",
                ev.kind
            ),
        ));
    }
    if ev.source.eq_ignore_ascii_case(crier_core::entity::SOURCE) {
        return Err(crier_core::ValidationError::bad(
            "reserved",
            format!(
                "the source `{}` is reserved for the events of the entity store",
                ev.source
            ),
        ));
    }
    Ok(())
}

/// Appends a validated batch and records the publish metrics.
pub async fn append(state: &AppState, batch: Vec<NewEvent>) -> Result<Vec<AppendResult>, Error> {
    let n = batch.len() as u64;
    let results = state.log.append(batch).await?;
    let stored = results.iter().filter(|r| !r.duplicate).count() as u64;
    metrics::counter!("crier_events_published_total").increment(stored);
    metrics::counter!("crier_events_duplicate_total").increment(n - stored);
    Ok(results)
}

/// The `{"id","seq","duplicate"}` of an append result.
pub fn result_json(r: &AppendResult) -> Value {
    serde_json::json!({"id": r.id, "seq": r.seq, "duplicate": r.duplicate})
}

/// Takes `n` events from `tenant`'s publish budget (`limits.publish_rate_per_tenant`).
/// Checked before anything is appended, so a refused batch leaves nothing behind.
pub fn admit(state: &AppState, tenant: &str, n: usize) -> Result<(), Error> {
    state.check_rate(tenant, n)
}

trait DeserializeValue: Sized {
    fn deserialize_value(v: Value) -> Result<Self, serde_json::Error>;
}

impl DeserializeValue for EventInput {
    fn deserialize_value(v: Value) -> Result<Self, serde_json::Error> {
        if !v.is_object() {
            return Err(serde::de::Error::custom("an event is a JSON object"));
        }
        serde_json::from_value(v)
    }
}

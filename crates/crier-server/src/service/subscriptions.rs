//! Durable webhook subscriptions (§3, §8): creating, reading, changing and deleting a
//! tenant's subscriptions, their delivery records, and redelivery. The rules live here (names,
//! filters narrowed to the creator's credential, secrets, SSRF-checked URLs, the per-tenant
//! cap); `webhooks::routes` is their HTTP face and `webhooks::dispatcher` runs what they
//! start.

use crier_core::event::{now_us, parse_time_us};
use crier_core::webhook::{
    Delivery, DeliveryStatus, WebhookError, WebhookPatch, WebhookStatus, WebhookSub,
};
use crier_core::{Filter, Principal};
use serde_json::Value;

use super::Error;
use crate::state::AppState;
use crate::webhooks::{check_url, new_secret, secret_key};

/// A subscription to create, as the client described it.
pub struct NewSubscription {
    /// A label, at most 128 characters.
    pub name: Option<String>,
    /// The filter (§2 JSON form); none matches every event of the tenant.
    pub filter: Option<Value>,
    /// Where deliveries go.
    pub url: String,
    /// The signing secret (`whsec_…`); a new one when none.
    pub secret: Option<String>,
    /// Deliver events after this seq (at most the head); the head when none.
    pub after: Option<u64>,
    /// RFC 3339 time after which the subscription ends.
    pub expires_at: Option<String>,
    /// Created paused.
    pub paused: Option<bool>,
}

/// What to change in a subscription; `None` leaves a field as it is.
#[derive(Default)]
pub struct Change {
    /// A new label.
    pub name: Option<String>,
    /// A new filter.
    pub filter: Option<Value>,
    /// A new URL, and with it optionally a new secret.
    pub webhook: Option<(String, Option<String>)>,
    /// Pause, or resume (which also re-activates a subscription paused by a dead delivery
    /// or disabled by a 410).
    pub paused: Option<bool>,
    /// A new expiry, or `Some(None)` for none.
    pub expires_at: Option<Option<String>>,
}

fn check_name(name: &str) -> Result<(), Error> {
    if name.chars().count() > 128 || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "invalid_subscription",
            "`name` has at most 128 characters and no control characters",
        ));
    }
    Ok(())
}

fn outside() -> Error {
    Error::forbidden(
        "the filter's `type` patterns lie wholly outside this credential's `subscribe` patterns",
    )
}

/// The stored text of a new filter: checked, and narrowed to what `p` may read (§12.5), so
/// that deliveries honour the creator's `subscribe` patterns for the subscription's life.
fn filter_text(state: &AppState, p: &Principal, v: Option<&Value>) -> Result<String, Error> {
    let f = Filter::from_json(v.unwrap_or(&Value::Null))?;
    crate::reader_limits::check_filter(&state.settings.limits, &f)?;
    let f = f.narrowed(p.subscribe.as_deref()).ok_or_else(outside)?;
    Ok(f.to_stored_json().to_string())
}

/// A subscription's stored filter narrowed again for `p`, when `p` is narrowed and changes
/// it: a narrowed credential never points a wider subscription at a new URL.
fn renarrow(p: &Principal, stored: &str) -> Result<Option<String>, Error> {
    if p.subscribe.is_none() {
        return Ok(None);
    }
    let v: Value = serde_json::from_str(stored)
        .map_err(|e| Error::invalid("invalid_subscription", format!("stored filter: {e}")))?;
    let f = Filter::from_stored_json(&v)?;
    let n = f
        .clone()
        .narrowed(p.subscribe.as_deref())
        .ok_or_else(outside)?;
    Ok((n != f).then(|| n.to_stored_json().to_string()))
}

fn expiry(v: Option<&str>) -> Result<Option<i64>, Error> {
    v.map(|t| {
        parse_time_us(t).ok_or_else(|| {
            Error::invalid(
                "invalid_subscription",
                format!("`expires_at` {t:?} is not an RFC 3339 time"),
            )
        })
    })
    .transpose()
}

fn not_found(id: &str) -> Error {
    Error::not_found(format!("no subscription {id:?}"))
}

fn new_id() -> String {
    let mut idb = [0u8; 8];
    rand::Rng::fill(&mut rand::rng(), &mut idb);
    format!(
        "sub_{}",
        idb.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Creates a subscription of `p`'s tenant and starts its deliveries. The answer holds the
/// secret: the only time it is shown.
pub async fn create(
    state: &AppState,
    p: &Principal,
    new: NewSubscription,
) -> Result<WebhookSub, Error> {
    let name = new.name.unwrap_or_default();
    check_name(&name)?;
    let filter = filter_text(state, p, new.filter.as_ref())?;
    let secret = match new.secret {
        Some(s) => {
            secret_key(&s)?;
            s
        }
        None => new_secret(),
    };
    let expires_us = expiry(new.expires_at.as_deref())?;
    let url = check_url(&new.url, state.settings.webhooks.allow_private).await?;
    let limit = state.settings.limits.max_subscriptions_per_tenant;
    let head = state.log.head();
    let sub = WebhookSub {
        id: new_id(),
        tenant: p.tenant.clone(),
        name,
        filter,
        url: url.to_string(),
        secret,
        cursor: new.after.unwrap_or(head).min(head),
        status: if new.paused == Some(true) {
            WebhookStatus::Paused
        } else {
            WebhookStatus::Active
        },
        expires_us,
        created_us: now_us(),
        note: None,
    };
    // The store counts and inserts in one step, on every node that shares it.
    match state.subs.create(&sub, Some(limit)).await {
        Ok(()) => {}
        Err(WebhookError::TooMany { max }) => {
            metrics::counter!("crier_limit_hits_total", "limit" => "max_subscriptions_per_tenant")
                .increment(1);
            return Err(Error::Conflict {
                code: "too_many_subscriptions",
                message: format!(
                    "this tenant has {max} webhook subscriptions already (limits.max_subscriptions_per_tenant); delete one first"
                ),
            });
        }
        Err(WebhookError::Log(e)) => return Err(e.into()),
    }
    state.webhooks.restart(state, sub.clone());
    Ok(sub)
}

/// The subscriptions of `p`'s tenant.
pub async fn list(state: &AppState, p: &Principal) -> Result<Vec<WebhookSub>, Error> {
    Ok(state.subs.list(Some(&p.tenant)).await?)
}

/// One subscription of `p`'s tenant (another tenant's is not found).
pub async fn get(state: &AppState, p: &Principal, id: &str) -> Result<WebhookSub, Error> {
    state
        .subs
        .get(Some(&p.tenant), id)
        .await?
        .ok_or_else(|| not_found(id))
}

/// Applies `change` and restarts the subscription's deliveries with it.
pub async fn change(
    state: &AppState,
    p: &Principal,
    id: &str,
    change: Change,
) -> Result<WebhookSub, Error> {
    let current = get(state, p, id).await?;
    let mut patch = WebhookPatch::default();
    if let Some(n) = change.name {
        check_name(&n)?;
        patch.name = Some(n);
    }
    patch.filter = match change.filter {
        Some(f) => Some(filter_text(state, p, Some(&f))?),
        None => renarrow(p, &current.filter)?,
    };
    if let Some((url, secret)) = change.webhook {
        patch.url = Some(
            check_url(&url, state.settings.webhooks.allow_private)
                .await?
                .to_string(),
        );
        if let Some(s) = secret {
            secret_key(&s)?;
            patch.secret = Some(s);
        }
    }
    if let Some(paused) = change.paused {
        patch.status = Some(if paused {
            WebhookStatus::Paused
        } else {
            WebhookStatus::Active
        });
    }
    if let Some(e) = change.expires_at {
        patch.expires_us = Some(expiry(e.as_deref())?);
    }
    let sub = state
        .subs
        .update(&p.tenant, id, &patch)
        .await?
        .ok_or_else(|| not_found(id))?;
    state.webhooks.restart(state, sub.clone());
    Ok(sub)
}

/// Deletes a subscription and stops its deliveries.
pub async fn delete(state: &AppState, p: &Principal, id: &str) -> Result<(), Error> {
    if !state.subs.delete(&p.tenant, id).await? {
        return Err(not_found(id));
    }
    state.webhooks.stop(id);
    Ok(())
}

/// The latest delivery records of a subscription, `limit` at most, of one `status` if given.
pub async fn deliveries(
    state: &AppState,
    p: &Principal,
    id: &str,
    status: Option<DeliveryStatus>,
    limit: usize,
) -> Result<Vec<Delivery>, Error> {
    let sub = get(state, p, id).await?;
    // Deliveries name events (their seq and id): a narrowed credential sees them only for
    // a subscription that reads nothing beyond its own patterns (§12.5).
    if renarrow(p, &sub.filter)?.is_some() {
        return Err(Error::forbidden(
            "this subscription reads events beyond this credential's `subscribe` patterns; its deliveries would name them",
        ));
    }
    Ok(state.subs.deliveries(id, status, limit).await?)
}

/// Delivers again every matching event after `after`, and restarts the deliveries.
pub async fn redeliver(
    state: &AppState,
    p: &Principal,
    id: &str,
    after: u64,
) -> Result<WebhookSub, Error> {
    let sub = state
        .subs
        .redeliver(&p.tenant, id, after)
        .await?
        .ok_or_else(|| not_found(id))?;
    state.webhooks.restart(state, sub.clone());
    Ok(sub)
}

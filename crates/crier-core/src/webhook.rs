//! Webhook subscriptions (§3, §8): the durable subscription that pushes a tenant's matching
//! events to a URL, its delivery records, and the [`WebhookStore`] contract every store
//! implements (SQLite for one node, PostgreSQL for a cluster).
//!
//! A [`WebhookSub`] is a cursor over the log with a webhook. Its `cursor` only moves forward
//! when a delivery succeeded (or was skipped as dead under `on_dead = "skip"`), except by an
//! explicit redeliver. Each attempted event has one [`Delivery`] record, updated per attempt.
//!
//! "Subscription" alone names the WebSocket's and the client's live subscriptions too; this
//! module's types say `Webhook` so that the durable one is never mistaken for them.

use serde::{Deserialize, Serialize};

use crate::log::{BoxFuture, LogError};

/// Counts by status, as the statuses are stored.
pub type StatusCounts = Vec<(String, u64)>;

/// Where a webhook subscription stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookStatus {
    /// Delivering.
    Active,
    /// Paused by its owner or by a dead delivery.
    Paused,
    /// The receiver answered 410 Gone.
    Disabled,
    /// Past its `expires_at`.
    Expired,
}

impl WebhookStatus {
    /// The status as the API and the stores spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Active => "active",
            WebhookStatus::Paused => "paused",
            WebhookStatus::Disabled => "disabled",
            WebhookStatus::Expired => "expired",
        }
    }

    /// The status spelled `s`, if any.
    pub fn parse(s: &str) -> Option<WebhookStatus> {
        Some(match s {
            "active" => WebhookStatus::Active,
            "paused" => WebhookStatus::Paused,
            "disabled" => WebhookStatus::Disabled,
            "expired" => WebhookStatus::Expired,
            _ => return None,
        })
    }
}

/// Where the delivery of one event stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Not attempted yet (or turned back by a redeliver).
    Pending,
    /// The receiver answered 2xx.
    Delivered,
    /// The last attempt failed; another may follow.
    Failed,
    /// Every attempt failed.
    Dead,
}

impl DeliveryStatus {
    /// The status as the API and the stores spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Dead => "dead",
        }
    }

    /// The status spelled `s`, if any.
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            "dead" => DeliveryStatus::Dead,
            _ => return None,
        })
    }
}

/// A stored webhook subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookSub {
    /// Identifier (`sub_…`).
    pub id: String,
    /// Owner.
    pub tenant: String,
    /// Human name.
    pub name: String,
    /// The filter, as its JSON text.
    pub filter: String,
    /// Webhook URL.
    pub url: String,
    /// Signing secret (`whsec_…`); never shown after creation.
    pub secret: String,
    /// Every matching event up to here was delivered (or skipped).
    pub cursor: u64,
    /// Where it stands.
    pub status: WebhookStatus,
    /// Expiry, microseconds since the epoch.
    pub expires_us: Option<i64>,
    /// Creation time.
    pub created_us: i64,
    /// Why it paused, or that it skipped pruned events.
    pub note: Option<String>,
}

/// One delivery record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The subscription.
    pub sub_id: String,
    /// The event's seq.
    pub seq: u64,
    /// The event's id (`webhook-id`).
    pub event_id: String,
    /// Where it stands.
    pub status: DeliveryStatus,
    /// Attempts so far.
    pub attempts: u32,
    /// Status code of the last answer.
    pub last_status_code: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
    /// When the next attempt is due.
    pub next_attempt_us: Option<i64>,
    /// Last change.
    pub updated_us: i64,
}

/// Fields a PATCH may change (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct WebhookPatch {
    /// New name.
    pub name: Option<String>,
    /// New filter JSON.
    pub filter: Option<String>,
    /// New URL.
    pub url: Option<String>,
    /// New secret.
    pub secret: Option<String>,
    /// New status (`active` / `paused`).
    pub status: Option<WebhookStatus>,
    /// New expiry (`Some(None)` clears it).
    pub expires_us: Option<Option<i64>>,
}

impl WebhookPatch {
    /// Applies the patch to `s`, the way every store does inside its update transaction.
    /// Making a subscription active again clears its note (why it paused).
    pub fn apply(&self, s: &mut WebhookSub) {
        if let Some(v) = &self.name {
            s.name.clone_from(v);
        }
        if let Some(v) = &self.filter {
            s.filter.clone_from(v);
        }
        if let Some(v) = &self.url {
            s.url.clone_from(v);
        }
        if let Some(v) = &self.secret {
            s.secret.clone_from(v);
        }
        if let Some(v) = self.status {
            if v == WebhookStatus::Active {
                s.note = None;
            }
            s.status = v;
        }
        if let Some(v) = self.expires_us {
            s.expires_us = v;
        }
    }
}

/// Why a webhook subscription was not created.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The tenant already holds the most webhook subscriptions allowed.
    #[error("the tenant has {max} webhook subscriptions already")]
    TooMany {
        /// The cap that was reached.
        max: usize,
    },
    /// The store failed.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// Where webhook subscriptions and their delivery records live (SQLite for one node,
/// PostgreSQL for a cluster). Arguments are borrowed for the life of the returned future.
pub trait WebhookStore: Send + Sync + 'static {
    /// Stores a new subscription unless its tenant already holds `max` (`None`: no cap).
    /// The count and the insert are one step on every node that shares the store.
    fn create<'a>(
        &'a self,
        s: &'a WebhookSub,
        max: Option<usize>,
    ) -> BoxFuture<'a, Result<(), WebhookError>>;

    /// One subscription of a tenant (`None` tenant: any).
    fn get<'a>(
        &'a self,
        tenant: Option<&'a str>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>>;

    /// A tenant's subscriptions (`None`: all), oldest first.
    fn list<'a>(
        &'a self,
        tenant: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<WebhookSub>, LogError>>;

    /// Applies a patch ([`WebhookPatch::apply`]); returns the updated subscription, or
    /// `None` if absent.
    fn update<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        p: &'a WebhookPatch,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>>;

    /// Deletes a subscription and its records; false if absent.
    fn delete<'a>(&'a self, tenant: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, LogError>>;

    /// Moves the cursor forward (never back).
    fn advance<'a>(&'a self, id: &'a str, seq: u64) -> BoxFuture<'a, Result<(), LogError>>;

    /// Sets the status and note.
    fn set_status<'a>(
        &'a self,
        id: &'a str,
        status: WebhookStatus,
        note: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), LogError>>;

    /// Records a note without changing the status (e.g. events skipped by retention).
    fn set_note<'a>(&'a self, id: &'a str, note: &'a str) -> BoxFuture<'a, Result<(), LogError>>;

    /// Writes a delivery record (insert or replace).
    fn record<'a>(
        &'a self,
        tenant: &'a str,
        d: &'a Delivery,
    ) -> BoxFuture<'a, Result<(), LogError>>;

    /// The record of one event, if any.
    fn delivery<'a>(
        &'a self,
        sub_id: &'a str,
        seq: u64,
    ) -> BoxFuture<'a, Result<Option<Delivery>, LogError>>;

    /// Records of a subscription, newest first, optionally by status.
    fn deliveries<'a>(
        &'a self,
        sub_id: &'a str,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, LogError>>;

    /// Moves the cursor back to `after`, turns dead records above it back to pending and
    /// reactivates the subscription (unless the receiver disabled it).
    fn redeliver<'a>(
        &'a self,
        tenant: &'a str,
        id: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>>;

    /// Counts of a tenant's (`None`: all) subscriptions by status and deliveries by status.
    fn counts<'a>(
        &'a self,
        tenant: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(StatusCounts, StatusCounts), LogError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub() -> WebhookSub {
        WebhookSub {
            id: "sub_1".into(),
            tenant: "acme".into(),
            name: "n".into(),
            filter: "{}".into(),
            url: "https://a.example/".into(),
            secret: "whsec_x".into(),
            cursor: 3,
            status: WebhookStatus::Paused,
            expires_us: Some(5),
            created_us: 1,
            note: Some("paused: delivery of seq 4 is dead".into()),
        }
    }

    /// Each of `names` parses to a status that `as_str` and serde spell as that name.
    fn spelled_as_the_api_does<T: Copy + Serialize>(
        names: &[&str],
        as_str: fn(T) -> &'static str,
        parse: fn(&str) -> Option<T>,
    ) {
        for &name in names {
            let s = parse(name).unwrap_or_else(|| panic!("{name:?} is a status"));
            assert_eq!(as_str(s), name);
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::Value::from(name))
            );
        }
    }

    #[test]
    fn statuses_spell_as_the_api_does() {
        let webhook = ["active", "paused", "disabled", "expired"];
        spelled_as_the_api_does(&webhook, WebhookStatus::as_str, WebhookStatus::parse);
        let delivery = ["pending", "delivered", "failed", "dead"];
        spelled_as_the_api_does(&delivery, DeliveryStatus::as_str, DeliveryStatus::parse);
        assert_eq!(WebhookStatus::parse("Active"), None);
        assert_eq!(DeliveryStatus::parse(""), None);
    }

    #[test]
    fn a_patch_changes_what_it_names_and_resuming_clears_the_note() {
        let mut s = sub();
        WebhookPatch::default().apply(&mut s);
        assert_eq!(s, sub());
        let p = WebhookPatch {
            name: Some("m".into()),
            url: Some("https://b.example/".into()),
            expires_us: Some(None),
            ..WebhookPatch::default()
        };
        p.apply(&mut s);
        assert_eq!(
            (s.name.as_str(), s.url.as_str()),
            ("m", "https://b.example/")
        );
        assert_eq!(s.expires_us, None);
        assert!(s.note.is_some(), "a patch without a status keeps the note");
        let resume = WebhookPatch {
            status: Some(WebhookStatus::Active),
            ..WebhookPatch::default()
        };
        resume.apply(&mut s);
        assert_eq!(s.status, WebhookStatus::Active);
        assert_eq!(s.note, None);
        let mut t = sub();
        WebhookPatch {
            status: Some(WebhookStatus::Paused),
            ..WebhookPatch::default()
        }
        .apply(&mut t);
        assert!(t.note.is_some(), "pausing keeps the note");
    }
}

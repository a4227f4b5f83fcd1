//! The event types of the embedding API: what an application publishes ([`NewEvent`]), what
//! the hub answers ([`Ack`]) and what a subscription yields ([`Event`]).

use serde::Deserialize;
use serde_json::{Map, Value};

/// The setters of an event's string fields: `name(value)` sets field `key` to the string.
/// (Seven methods that differ only in their field; a function cannot define methods.)
macro_rules! string_fields {
    ($($(#[$doc:meta])* $name:ident => $key:literal;)*) => {
        $(
            $(#[$doc])*
            pub fn $name(self, $name: impl Into<String>) -> NewEvent {
                self.with($key, Value::String($name.into()))
            }
        )*
    };
}

/// An event to publish, built field by field (§1). Only the type is required; everything
/// else gets the same defaults as over HTTP.
///
/// ```
/// use serde_json::json;
/// let ev = crier::NewEvent::new("site.created")
///     .id("site-1-created")
///     .subject("site/1")
///     .source("sites")
///     .category("sites")
///     .severity("info")
///     .tag("web")
///     .data(json!({"name": "Example"}))
///     .metadata(json!({"request": "abc"}));
/// assert_eq!(ev.kind(), "site.created");
/// ```
#[derive(Debug, Clone)]
pub struct NewEvent {
    fields: Map<String, Value>,
}

impl NewEvent {
    /// An event of type `kind` (`site.created`).
    pub fn new(kind: impl Into<String>) -> NewEvent {
        let mut fields = Map::new();
        fields.insert("type".into(), Value::String(kind.into()));
        NewEvent { fields }
    }

    /// The event's type.
    pub fn kind(&self) -> &str {
        self.fields
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    fn with(mut self, key: &str, v: Value) -> NewEvent {
        self.fields.insert(key.to_string(), v);
        self
    }

    string_fields! {
        /// The idempotency key (a UUIDv7 when not set): publishing the same id again in the
        /// same tenant answers the stored event with `duplicate: true`.
        id => "id";
        /// The event time, RFC 3339 (the hub's clock when not set).
        time => "time";
        /// `subject`: what the event is about (`site/1`).
        subject => "subject";
        /// `source` (default `api`).
        source => "source";
        /// `category`.
        category => "category";
        /// `severity`: `debug`, `info` (default), `warning`, `error` or `critical`.
        severity => "severity";
        /// `actor`: who caused the event (default `embedded`).
        actor => "actor";
    }

    /// Adds one tag.
    pub fn tag(mut self, tag: impl Into<String>) -> NewEvent {
        let tags = self
            .fields
            .entry("tags")
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(list) = tags {
            list.push(Value::String(tag.into()));
        }
        self
    }

    /// Replaces the tags.
    pub fn tags<I, T>(self, tags: I) -> NewEvent
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let list = tags.into_iter().map(|t| Value::String(t.into())).collect();
        self.with("tags", Value::Array(list))
    }

    /// `data`: any JSON value.
    pub fn data(self, data: impl Into<Value>) -> NewEvent {
        self.with("data", data.into())
    }

    /// `metadata`: any JSON value (`{}` when not set).
    pub fn metadata(self, metadata: impl Into<Value>) -> NewEvent {
        self.with("metadata", metadata.into())
    }

    /// The JSON the HTTP API would receive for this event.
    pub(crate) fn into_value(self) -> Value {
        Value::Object(self.fields)
    }
}

/// The hub's answer to a publish: the event's id and seq, and whether the id was already
/// stored (then `seq` is the stored event's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// The event id (given, or assigned).
    pub id: String,
    /// Its position in the log.
    pub seq: u64,
    /// The id was already stored; nothing new was appended.
    pub duplicate: bool,
}

/// A committed event (§1), as subscribers receive it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Event {
    /// Position in the log, increasing without gaps across tenants.
    pub seq: u64,
    /// Idempotency key, unique per tenant.
    pub id: String,
    /// Event time, RFC 3339 UTC with microseconds.
    pub time: String,
    /// Tenant.
    pub tenant: String,
    /// Dotted type (`site.created`).
    pub r#type: String,
    /// Where it came from.
    pub source: String,
    /// Category.
    #[serde(default)]
    pub category: Option<String>,
    /// `debug`, `info`, `warning`, `error` or `critical`.
    pub severity: String,
    /// What it is about.
    #[serde(default)]
    pub subject: Option<String>,
    /// Who caused it.
    pub actor: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The payload.
    #[serde(default)]
    pub data: Value,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: Value,
}

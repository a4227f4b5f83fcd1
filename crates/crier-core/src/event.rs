//! The event (§1): what publishers send ([`EventInput`]), what the log stores
//! ([`NewEvent`], validated and pre-encoded) and what readers receive ([`Committed`]).
//!
//! Encode once: a publish request is validated and serialised in the request handler, all
//! but the `seq`, which only the log writer knows. The writer prepends `{"seq":N,` to the
//! pre-encoded tail and the resulting bytes are stored, fanned out and framed by every
//! transport without being serialised again.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::principal::{Principal, Role};
use crate::validate::{
    check_charset, check_text, check_type_chars, is_source_char, ValidationError,
};

/// Event severity, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Severity {
    /// Diagnostic noise.
    Debug,
    /// Normal operation (the default).
    #[default]
    Info,
    /// Something deserves attention.
    Warning,
    /// Something failed.
    Error,
    /// Something failed badly.
    Critical,
}

impl Severity {
    /// All severities, in order.
    pub const ALL: [Severity; 5] = [
        Severity::Debug,
        Severity::Info,
        Severity::Warning,
        Severity::Error,
        Severity::Critical,
    ];

    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Debug => "debug",
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// A small integer preserving the order, for storage.
    pub fn rank(self) -> u8 {
        self as u8
    }

    /// The inverse of [`Severity::rank`].
    pub fn from_rank(rank: i64) -> Option<Severity> {
        usize::try_from(rank)
            .ok()
            .and_then(|i| Severity::ALL.get(i).copied())
    }
}

/// Formats a timestamp as RFC 3339 UTC with microseconds, the contract's `time` format.
pub fn format_time(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

/// Parses an RFC 3339 timestamp (any offset) into microseconds since the Unix epoch.
pub fn parse_time_us(s: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1000).ok()
}

/// Parses a time given to a query or command: an RFC 3339 timestamp, or a duration before
/// `now_us` such as `15m`, `2h` or `7d` (§10). `None` when it is neither, or lies before the
/// Unix epoch.
pub fn parse_time_or_ago_us(s: &str, now_us: i64) -> Option<i64> {
    let s = s.trim();
    if let Some(t) = parse_time_us(s) {
        return Some(t);
    }
    let ago = humantime::parse_duration(s).ok()?;
    let t = now_us.checked_sub(i64::try_from(ago.as_micros()).ok()?)?;
    (t >= 0).then_some(t)
}

/// Microseconds since the Unix epoch to a timestamp.
pub fn time_from_us(us: i64) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(us) * 1000).ok()
}

/// Now, in microseconds since the Unix epoch.
pub fn now_us() -> i64 {
    i64::try_from(OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000).unwrap_or(i64::MAX)
}

/// An event as a publisher sends it. Unknown fields are rejected.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventInput {
    /// Refused: the hub assigns `seq`. Present only to give a clear error.
    #[serde(default)]
    pub seq: Option<Value>,
    /// Idempotency key; a UUIDv7 when absent.
    #[serde(default)]
    pub id: Option<String>,
    /// RFC 3339; the hub's clock when absent.
    #[serde(default)]
    pub time: Option<String>,
    /// Only an admin may set it to another tenant than its own.
    #[serde(default)]
    pub tenant: Option<String>,
    /// Required.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// Default `api`.
    #[serde(default)]
    pub source: Option<String>,
    /// Optional.
    #[serde(default)]
    pub category: Option<String>,
    /// Default `info`.
    #[serde(default)]
    pub severity: Option<String>,
    /// Optional, at most 256 characters.
    #[serde(default)]
    pub subject: Option<String>,
    /// Only an admin may set it.
    #[serde(default)]
    pub actor: Option<String>,
    /// At most 32 tags of 1 to 64 characters.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Any JSON value.
    #[serde(default)]
    pub data: Option<Value>,
    /// Any JSON value; `{}` when absent.
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// What validation needs to know besides the event itself.
#[derive(Debug, Clone)]
pub struct PublishContext<'a> {
    /// The credential publishing.
    pub principal: &'a Principal,
    /// `limits.max_event_bytes`.
    pub max_event_bytes: usize,
    /// The hub's clock, microseconds since the epoch.
    pub now_us: i64,
}

/// A validated event waiting for its `seq`, with everything but the `seq` already encoded.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Tenant (from the credential, or set by an admin).
    pub tenant: String,
    /// Idempotency key, unique per tenant.
    pub id: String,
    /// Event time, microseconds since the epoch.
    pub time_us: i64,
    /// `type`.
    pub kind: String,
    /// `source`.
    pub source: String,
    /// `category`.
    pub category: Option<String>,
    /// `severity`.
    pub severity: Severity,
    /// `subject`.
    pub subject: Option<String>,
    /// `tags`.
    pub tags: Vec<String>,
    /// The JSON encoding of every field after `seq`, starting at `"id"` and ending with `}`.
    pub tail: Vec<u8>,
}

/// Upper bound on the bytes the writer prepends: `{"seq":` + 20 digits + `,`.
const SEQ_PREFIX_MAX: usize = 28;

#[derive(Serialize)]
struct Tail<'a> {
    id: &'a str,
    time: &'a str,
    tenant: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    source: &'a str,
    category: Option<&'a str>,
    severity: &'a str,
    subject: Option<&'a str>,
    actor: &'a str,
    tags: &'a [String],
    data: &'a Value,
    metadata: &'a Value,
}

impl EventInput {
    /// Validates the input against every rule of §1 and encodes it.
    pub fn validate(self, ctx: &PublishContext<'_>) -> Result<NewEvent, ValidationError> {
        let p = ctx.principal;
        if self.seq.is_some() {
            return Err(ValidationError::bad(
                "invalid_event",
                "`seq` is assigned by the hub and cannot be published",
            ));
        }
        let kind = self
            .kind
            .ok_or_else(|| ValidationError::bad("invalid_event", "`type` is required"))?;
        check_type("type", &kind)?;
        if !p.may_publish_type(&kind) {
            return Err(ValidationError::forbidden(
                "forbidden",
                format!("this credential may not publish events of type `{kind}`"),
            ));
        }
        let id = match self.id {
            Some(id) => {
                check_text("id", &id, 128)?;
                id
            }
            None => uuid::Uuid::now_v7().to_string(),
        };
        let tenant = match self.tenant {
            Some(t) if t != p.tenant => {
                if p.role != Role::Admin {
                    return Err(ValidationError::forbidden(
                        "forbidden",
                        "only an admin may publish to another tenant",
                    ));
                }
                check_tenant(&t)?;
                t
            }
            _ => p.tenant.clone(),
        };
        let actor = match self.actor {
            Some(a) if a != p.subject => {
                if p.role != Role::Admin {
                    return Err(ValidationError::forbidden(
                        "forbidden",
                        "only an admin may set `actor`",
                    ));
                }
                check_text("actor", &a, 256)?;
                a
            }
            _ => p.subject.clone(),
        };
        let source = self.source.unwrap_or_else(|| "api".to_string());
        check_charset(
            "source",
            &source,
            128,
            is_source_char,
            "letters, digits and . _ : / -",
        )?;
        if let Some(c) = &self.category {
            check_type_chars("category", c, 128)?;
        }
        if let Some(s) = &self.subject {
            check_text("subject", s, 256)?;
        }
        let severity = match self.severity.as_deref() {
            None => Severity::Info,
            Some(s) => Severity::parse(s).ok_or_else(|| {
                ValidationError::bad(
                    "invalid_event",
                    format!(
                        "`severity` is {s:?}; use one of debug, info, warning, error, critical"
                    ),
                )
            })?,
        };
        let tags = self.tags.unwrap_or_default();
        if tags.len() > 32 {
            return Err(ValidationError::bad(
                "invalid_event",
                format!("{} tags given; at most 32 are allowed", tags.len()),
            ));
        }
        for t in &tags {
            check_text("tags[]", t, 64)?;
        }
        let time_us = match &self.time {
            None => ctx.now_us,
            Some(t) => parse_time_us(t).ok_or_else(|| {
                ValidationError::bad(
                    "invalid_event",
                    format!("`time` is {t:?}, not an RFC 3339 timestamp"),
                )
            })?,
        };
        let time = time_from_us(time_us)
            .map(format_time)
            .ok_or_else(|| ValidationError::bad("invalid_event", "`time` is out of range"))?;
        let data = self.data.unwrap_or(Value::Null);
        let metadata = self
            .metadata
            .unwrap_or_else(|| Value::Object(Default::default()));
        let mut tail = serde_json::to_vec(&Tail {
            id: &id,
            time: &time,
            tenant: &tenant,
            kind: &kind,
            source: &source,
            category: self.category.as_deref(),
            severity: severity.as_str(),
            subject: self.subject.as_deref(),
            actor: &actor,
            tags: &tags,
            data: &data,
            metadata: &metadata,
        })
        .map_err(|e| ValidationError::bad("invalid_event", format!("cannot encode event: {e}")))?;
        tail.remove(0); // the writer supplies the opening brace along with `seq`
        if tail.len() + SEQ_PREFIX_MAX > ctx.max_event_bytes {
            return Err(ValidationError::too_large(
                "event_too_large",
                format!(
                    "the event encodes to about {} bytes; the limit is {} (limits.max_event_bytes)",
                    tail.len() + SEQ_PREFIX_MAX,
                    ctx.max_event_bytes
                ),
            ));
        }
        Ok(NewEvent {
            tenant,
            id,
            time_us,
            kind,
            source,
            category: self.category,
            severity,
            subject: self.subject,
            tags,
            tail,
        })
    }
}

/// Checks a `type`: the charset, 1 to 128 characters, dot-separated non-empty segments.
pub fn check_type(field: &str, value: &str) -> Result<(), ValidationError> {
    check_type_chars(field, value, 128)?;
    if value.split('.').any(str::is_empty) {
        return Err(ValidationError::bad(
            "invalid_event",
            format!("`{field}` {value:?} has an empty dot-separated segment"),
        ));
    }
    Ok(())
}

/// Checks a tenant name: `[A-Za-z0-9._:-]{1,64}`.
pub fn check_tenant(value: &str) -> Result<(), ValidationError> {
    check_type_chars("tenant", value, 64)
}

/// A committed event: its stored JSON bytes plus the fields filters look at.
///
/// Shared by `Arc` between the log reader, the hub and every transport; `json` is the single
/// encoding used by every frame.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Position in the log.
    pub seq: u64,
    /// Tenant.
    pub tenant: String,
    /// Idempotency key.
    pub id: String,
    /// Event time, microseconds since the epoch.
    pub time_us: i64,
    /// `type`.
    pub kind: String,
    /// `source`.
    pub source: String,
    /// `category`.
    pub category: Option<String>,
    /// `severity`.
    pub severity: Severity,
    /// `subject`.
    pub subject: Option<String>,
    /// `tags`.
    pub tags: Vec<String>,
    /// The whole event as one line of JSON.
    pub json: Bytes,
    /// Its transport frames, built once and shared by every reader.
    pub frames: crate::frames::Frames,
}

impl Committed {
    /// The writer's side of encode-once: `{"seq":N,` + the pre-encoded tail.
    pub fn encode(seq: u64, tail: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(tail.len() + SEQ_PREFIX_MAX);
        out.extend_from_slice(b"{\"seq\":");
        out.extend_from_slice(seq.to_string().as_bytes());
        out.push(b',');
        out.extend_from_slice(tail);
        out
    }

    /// Builds the committed form of a new event once the writer gave it `seq` and bytes.
    pub fn from_new(ev: NewEvent, seq: u64, json: Bytes) -> Arc<Committed> {
        Arc::new(Committed {
            seq,
            tenant: ev.tenant,
            id: ev.id,
            time_us: ev.time_us,
            kind: ev.kind,
            source: ev.source,
            category: ev.category,
            severity: ev.severity,
            subject: ev.subject,
            tags: ev.tags,
            json,
            frames: Default::default(),
        })
    }

    /// The event as a JSON value (for APIs that embed it in a larger document).
    pub fn to_value(&self) -> Value {
        serde_json::from_slice(&self.json).unwrap_or(Value::Null)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_are_rfc3339_or_a_duration_before_now() {
        let now = parse_time_us("2026-01-02T03:04:05Z").unwrap();
        assert_eq!(
            parse_time_or_ago_us("2026-01-01T00:00:00Z", now),
            parse_time_us("2026-01-01T00:00:00Z")
        );
        assert_eq!(
            parse_time_or_ago_us("15m", now),
            Some(now - 15 * 60 * 1_000_000)
        );
        assert_eq!(
            parse_time_or_ago_us("2h", now),
            Some(now - 2 * 3600 * 1_000_000)
        );
        assert_eq!(
            parse_time_or_ago_us(" 7d ", now),
            Some(now - 7 * 86400 * 1_000_000)
        );
        assert_eq!(parse_time_or_ago_us("soon", now), None);
        assert_eq!(parse_time_or_ago_us("-5m", now), None);
        assert_eq!(
            parse_time_or_ago_us("100000y", now),
            None,
            "before the epoch"
        );
        assert_eq!(parse_time_or_ago_us("", now), None);
    }

    use super::*;

    fn ctx(p: &Principal) -> PublishContext<'_> {
        PublishContext {
            principal: p,
            max_event_bytes: 65536,
            now_us: 1_700_000_000_000_000,
        }
    }

    fn input(v: Value) -> Result<EventInput, serde_json::Error> {
        serde_json::from_value(v)
    }

    #[test]
    fn encodes_a_full_event_once() {
        let p = Principal::anonymous_admin();
        let ev = input(serde_json::json!({
            "id": "e1", "type": "site.created", "subject": "site/1", "tags": ["a"],
            "data": {"x": 1}, "time": "2026-11-23T02:02:03.456789+01:00"
        }))
        .unwrap()
        .validate(&ctx(&p))
        .unwrap();
        let json = Committed::encode(7, &ev.tail);
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["seq"], 7);
        assert_eq!(v["time"], "2026-11-23T01:02:03.456789Z");
        assert_eq!(v["tenant"], "default");
        assert_eq!(v["actor"], "anonymous");
        assert_eq!(v["source"], "api");
        assert_eq!(v["severity"], "info");
        assert_eq!(v["category"], Value::Null);
        assert_eq!(v["metadata"], serde_json::json!({}));
        assert_eq!(v["data"]["x"], 1);
    }

    #[test]
    fn rejects_bad_events() {
        let p = Principal::anonymous_admin();
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"type": ""}),
            serde_json::json!({"type": "a..b"}),
            serde_json::json!({"type": ".a"}),
            serde_json::json!({"type": "a b"}),
            serde_json::json!({"type": "a\u{7}b"}),
            serde_json::json!({"type": "x".repeat(129)}),
            serde_json::json!({"type": "a", "id": "x\ny"}),
            serde_json::json!({"type": "a", "id": "x".repeat(129)}),
            serde_json::json!({"type": "a", "source": "a b"}),
            serde_json::json!({"type": "a", "source": "a\tb"}),
            serde_json::json!({"type": "a", "category": "a/b"}),
            serde_json::json!({"type": "a", "subject": "a\u{0}"}),
            serde_json::json!({"type": "a", "subject": "s".repeat(257)}),
            serde_json::json!({"type": "a", "severity": "fatal"}),
            serde_json::json!({"type": "a", "tags": [""]}),
            serde_json::json!({"type": "a", "tags": ["t".repeat(65)]}),
            serde_json::json!({"type": "a", "tags": vec!["t"; 33]}),
            serde_json::json!({"type": "a", "time": "yesterday"}),
            serde_json::json!({"type": "a", "seq": 4}),
        ] {
            let r = input(bad.clone()).unwrap().validate(&ctx(&p));
            assert!(r.is_err(), "accepted {bad}");
        }
        assert!(input(serde_json::json!({"type": "a", "colour": "red"})).is_err());
    }

    #[test]
    fn size_limit_is_413() {
        let p = Principal::anonymous_admin();
        let mut c = ctx(&p);
        c.max_event_bytes = 300;
        let e = input(serde_json::json!({"type": "a", "data": "x".repeat(400)}))
            .unwrap()
            .validate(&c)
            .unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::TooLarge);
    }

    #[test]
    fn only_admin_sets_tenant_and_actor() {
        let mut p = Principal::anonymous_admin();
        p.role = Role::Publisher;
        let e = input(serde_json::json!({"type": "a", "tenant": "other"}))
            .unwrap()
            .validate(&ctx(&p))
            .unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Forbidden);
        let e = input(serde_json::json!({"type": "a", "actor": "root"}))
            .unwrap()
            .validate(&ctx(&p))
            .unwrap_err();
        assert_eq!(e.kind, crate::ErrorKind::Forbidden);
        // Restating one's own tenant is fine.
        input(serde_json::json!({"type": "a", "tenant": "default"}))
            .unwrap()
            .validate(&ctx(&p))
            .unwrap();
    }
}

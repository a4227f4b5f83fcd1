//! Entities (§11): a small document store whose every change is an event.
//!
//! The rules live here, once, as a pure function: a store loads what a [`Mutation`] touches
//! ([`Loaded`]), calls [`plan`], and applies the returned [`Plan`] — row writes plus the
//! events that describe them — in the same transaction that appends those events to the
//! log. So no backend can write a change without its event, or an event without its change,
//! and SQLite and PostgreSQL cannot disagree on versions, `changed` lists or link cascades.
//!
//! Versions start at 1 and grow by one per change. A deleted entity leaves a tombstone that
//! keeps its version, so re-creating it continues the count: a client holding version 3 of a
//! deleted entity can never match a different entity's version 3 (`If-Match` stays sound).

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::event::{format_time, time_from_us, EventInput, NewEvent, PublishContext};
use crate::log::{BoxFuture, LogError};
use crate::validate::{check_charset, is_type_char, ErrorKind, ValidationError};

/// `source` of every entity and link event.
pub const SOURCE: &str = "entities";
/// Entity kinds clients cannot use (§12.11): `link` names the hub's link events, `crier`
/// its own event types.
pub const RESERVED_KINDS: [&str; 2] = ["link", "crier"];
/// Most entities or links one list call returns.
pub const MAX_LIST: usize = 1000;

/// Checks a `kind` or link `type`: the `type` charset without dots, 1–128 characters.
pub fn check_kind(field: &str, value: &str) -> Result<(), ValidationError> {
    check_charset(field, value, 128, is_kind_char, "letters, digits and _ : -").map_err(|e| {
        ValidationError {
            code: "invalid_entity",
            ..e
        }
    })
}

fn is_kind_char(c: char) -> bool {
    is_type_char(c) && c != '.'
}

/// Checks an entity `id`: 1–128 characters of `[A-Za-z0-9._:-]`.
pub fn check_id(field: &str, value: &str) -> Result<(), ValidationError> {
    check_charset(
        field,
        value,
        128,
        is_type_char,
        "letters, digits and . _ : -",
    )
    .map_err(|e| ValidationError {
        code: "invalid_entity",
        ..e
    })
}

/// An entity's address within a tenant.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EntityKey {
    /// Its kind (`site`).
    pub kind: String,
    /// Its id within the kind (`abc123`).
    pub id: String,
}

impl EntityKey {
    /// A checked key.
    pub fn new(kind: &str, id: &str) -> Result<Self, ValidationError> {
        check_kind("kind", kind)?;
        if RESERVED_KINDS.contains(&kind) {
            return Err(ValidationError::bad(
                "reserved",
                format!("the entity kind `{kind}` is reserved: its events would carry the hub's own `{kind}.*` types"),
            ));
        }
        check_id("id", id)?;
        Ok(EntityKey {
            kind: kind.to_string(),
            id: id.to_string(),
        })
    }

    /// Parses `kind/id`, as links and GraphQL write it.
    pub fn parse(field: &str, s: &str) -> Result<Self, ValidationError> {
        let (kind, id) = s.split_once('/').ok_or_else(|| {
            ValidationError::bad(
                "invalid_entity",
                format!("`{field}` is {s:?}; write it as kind/id"),
            )
        })?;
        EntityKey::new(kind, id).map_err(|e| e.at(field))
    }

    /// `kind/id`: the events' `subject` and the links' `source` / `target`.
    pub fn path(&self) -> String {
        format!("{}/{}", self.kind, self.id)
    }
}

/// A stored entity row; `value` is `None` for the tombstone of a deleted entity.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityRow {
    /// Kind and id.
    pub key: EntityKey,
    /// Current version (the tombstone keeps the last one).
    pub version: i64,
    /// The JSON object, or `None` once deleted.
    pub value: Option<Map<String, Value>>,
    /// Creation time, microseconds.
    pub created_us: i64,
    /// Last change, microseconds.
    pub updated_us: i64,
}

impl EntityRow {
    /// Whether the entity exists (is not a tombstone).
    pub fn live(&self) -> bool {
        self.value.is_some()
    }

    /// The entity as the API answers it: `{"kind", "id", "version", "value", "created_at",
    /// "updated_at"}`.
    pub fn to_json(&self) -> Value {
        json!({
            "kind": self.key.kind,
            "id": self.key.id,
            "version": self.version,
            "value": self.value.clone().map(Value::Object).unwrap_or(Value::Null),
            "created_at": time_text(self.created_us),
            "updated_at": time_text(self.updated_us),
        })
    }
}

/// RFC 3339 text of a microsecond timestamp.
pub fn time_text(us: i64) -> String {
    time_from_us(us).map(format_time).unwrap_or_default()
}

/// A link's identity: `type` from `source` to `target`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LinkKey {
    /// The link type (`member_of`).
    pub kind: String,
    /// Where it starts.
    pub source: EntityKey,
    /// Where it points.
    pub target: EntityKey,
}

impl LinkKey {
    /// A checked key.
    pub fn new(kind: &str, source: EntityKey, target: EntityKey) -> Result<Self, ValidationError> {
        check_kind("type", kind)?;
        Ok(LinkKey {
            kind: kind.to_string(),
            source,
            target,
        })
    }

    /// The list cursor of this link: `type/source_kind/source_id/target_kind/target_id`
    /// (no part may contain `/`).
    pub fn cursor(&self) -> String {
        format!(
            "{}/{}/{}",
            self.kind,
            self.source.path(),
            self.target.path()
        )
    }

    /// Parses [`LinkKey::cursor`].
    pub fn parse_cursor(s: &str) -> Result<Self, ValidationError> {
        let parts: Vec<&str> = s.split('/').collect();
        let bad = || {
            ValidationError::bad(
                "invalid_query",
                format!("`after` is {s:?}, not a link cursor from a previous page"),
            )
        };
        let [kind, sk, si, tk, ti] = parts[..] else {
            return Err(bad());
        };
        let source = EntityKey::new(sk, si).map_err(|_| bad())?;
        let target = EntityKey::new(tk, ti).map_err(|_| bad())?;
        LinkKey::new(kind, source, target).map_err(|_| bad())
    }
}

/// A stored link.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRow {
    /// Type, source and target.
    pub key: LinkKey,
    /// The metadata object given when linking (`{}` if none).
    pub metadata: Value,
    /// When it was created, microseconds.
    pub created_us: i64,
}

impl LinkRow {
    /// The link as the API answers it (and as its events carry it, without `created_at`).
    pub fn to_json(&self) -> Value {
        json!({
            "type": self.key.kind,
            "source": self.key.source.path(),
            "target": self.key.target.path(),
            "metadata": self.metadata,
            "created_at": time_text(self.created_us),
        })
    }

    fn event_data(&self) -> Value {
        json!({
            "type": self.key.kind,
            "source": self.key.source.path(),
            "target": self.key.target.path(),
            "metadata": self.metadata,
        })
    }
}

/// A condition on the entity's current version (`If-Match` / `If-None-Match`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    /// Unconditional.
    #[default]
    None,
    /// `If-Match: <version>`: the entity exists at exactly this version.
    Version(i64),
    /// `If-Match: *`: the entity exists.
    Exists,
    /// `If-None-Match: *`: the entity does not exist (create only).
    Absent,
}

/// One change requested by a client.
#[derive(Debug, Clone)]
pub enum Mutation {
    /// Create or replace with `value`.
    Put {
        /// Which entity.
        key: EntityKey,
        /// The whole new value (a JSON object).
        value: Map<String, Value>,
        /// Condition on the current version.
        cond: Precondition,
    },
    /// Apply a JSON Merge Patch (RFC 7396) to an existing entity.
    Patch {
        /// Which entity.
        key: EntityKey,
        /// The patch (a JSON object).
        patch: Map<String, Value>,
        /// Condition on the current version.
        cond: Precondition,
    },
    /// Delete an entity and every link that touches it.
    Delete {
        /// Which entity.
        key: EntityKey,
        /// Condition on the current version.
        cond: Precondition,
    },
    /// Link two existing entities.
    Link {
        /// Type, source, target.
        key: LinkKey,
        /// Metadata object (`{}` if none).
        metadata: Value,
    },
    /// Remove a link.
    Unlink {
        /// Type, source, target.
        key: LinkKey,
    },
}

/// What a store must load, inside its write transaction, before calling [`plan`].
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// The row of the entity being put, patched or deleted (tombstones included).
    pub entity: Option<EntityRow>,
    /// For a delete: every link whose source or target is the entity.
    pub links: Vec<LinkRow>,
    /// For a link: whether the source entity exists (not a tombstone).
    pub source_exists: bool,
    /// For a link: whether the target entity exists.
    pub target_exists: bool,
    /// For a link or unlink: the link as stored, if it is.
    pub link: Option<LinkRow>,
}

/// A row change the store applies.
#[derive(Debug, Clone)]
pub enum Write {
    /// Insert or overwrite an entity row (a tombstone when `value` is `None`).
    Entity(EntityRow),
    /// Insert a link.
    InsertLink(LinkRow),
    /// Remove a link.
    DeleteLink(LinkKey),
}

/// What a mutation did, for the answer.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The entity after a put or patch.
    Entity {
        /// The row as now stored.
        row: EntityRow,
        /// Whether it was created (201) rather than replaced or patched (200).
        created: bool,
    },
    /// The entity was deleted at this version.
    Deleted {
        /// Which entity.
        key: EntityKey,
        /// The version the deletion was given.
        version: i64,
        /// How many links went with it.
        links: usize,
    },
    /// The link as now stored.
    Linked {
        /// The link.
        row: LinkRow,
        /// Whether it is new (201) or was already there, identical (200).
        created: bool,
    },
    /// The link was removed.
    Unlinked(LinkKey),
}

/// The writes and events of one mutation: applied together or not at all.
#[derive(Debug)]
pub struct Plan {
    /// Row changes, in order.
    pub writes: Vec<Write>,
    /// Their events, in order (none for an update that changes nothing).
    pub events: Vec<NewEvent>,
    /// The answer.
    pub outcome: Outcome,
}

/// What a store answers for an applied mutation.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The outcome.
    pub outcome: Outcome,
    /// The seqs its events were given, in order.
    pub seqs: Vec<u64>,
}

/// Why a mutation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum EntityError {
    /// The request breaks a rule (bad value, precondition, missing entity, too large...).
    #[error(transparent)]
    Refused(#[from] ValidationError),
    /// The store failed; nothing was written.
    #[error(transparent)]
    Log(#[from] LogError),
}

fn refused(kind: ErrorKind, code: &'static str, message: String) -> ValidationError {
    ValidationError {
        kind,
        code,
        message,
    }
}

fn not_found(key: &EntityKey) -> ValidationError {
    refused(
        ErrorKind::NotFound,
        "not_found",
        format!("no entity {}", key.path()),
    )
}

fn check_precondition(
    cond: Precondition,
    key: &EntityKey,
    current: Option<&EntityRow>,
) -> Result<(), ValidationError> {
    let live = current.filter(|r| r.live());
    let failed = |msg: String| refused(ErrorKind::PreconditionFailed, "precondition_failed", msg);
    match (cond, live) {
        (Precondition::None, _) => Ok(()),
        (Precondition::Absent, Some(r)) => Err(failed(format!(
            "{} already exists (version {}); If-None-Match: * only creates",
            key.path(),
            r.version
        ))),
        (Precondition::Absent, None) => Ok(()),
        (Precondition::Exists, Some(_)) => Ok(()),
        (Precondition::Exists | Precondition::Version(_), None) => Err(failed(format!(
            "{} does not exist; If-Match needs an existing entity",
            key.path()
        ))),
        (Precondition::Version(v), Some(r)) if r.version == v => Ok(()),
        (Precondition::Version(v), Some(r)) => Err(failed(format!(
            "{} is at version {}, not {v}",
            key.path(),
            r.version
        ))),
    }
}

/// Applies a JSON Merge Patch (RFC 7396) to `target` (the `json-patch` crate's `merge`).
pub fn merge_patch(target: &mut Value, patch: &Value) {
    json_patch::merge(target, patch);
}

/// The top-level fields that differ between two values (added, removed or changed), sorted.
pub fn changed_fields(old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<String> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .cloned()
        .collect()
}

fn event(
    ctx: &PublishContext<'_>,
    kind: String,
    subject: String,
    data: Value,
) -> Result<NewEvent, ValidationError> {
    EventInput {
        kind: Some(kind),
        source: Some(SOURCE.to_string()),
        subject: Some(subject),
        data: Some(data),
        ..EventInput::default()
    }
    .validate(ctx)
}

fn check_value_size(value: &Map<String, Value>, max: usize) -> Result<(), ValidationError> {
    let n = serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if n > max {
        return Err(ValidationError::too_large(
            "entity_too_large",
            format!("the entity's value is {n} bytes; the limit is {max} (limits.max_event_bytes)"),
        ));
    }
    Ok(())
}

/// Decides what `m` does given the current state `l`: the rules of §11 in one place.
/// `ctx` carries the credential (tenant, actor, publish narrowing), the clock and the size
/// limit; events are built and validated like any published event.
pub fn plan(m: Mutation, l: Loaded, ctx: &PublishContext<'_>) -> Result<Plan, ValidationError> {
    let now = ctx.now_us;
    match m {
        Mutation::Put { key, value, cond } => {
            check_precondition(cond, &key, l.entity.as_ref())?;
            check_value_size(&value, ctx.max_event_bytes)?;
            write_value(key, value, l.entity, ctx, now)
        }
        Mutation::Patch { key, patch, cond } => {
            check_precondition(cond, &key, l.entity.as_ref())?;
            let Some(current) = l.entity.filter(EntityRow::live) else {
                return Err(not_found(&key));
            };
            let mut merged = Value::Object(current.value.clone().unwrap_or_default());
            merge_patch(&mut merged, &Value::Object(patch));
            let Value::Object(value) = merged else {
                return Err(ValidationError::bad(
                    "invalid_entity",
                    "the patched value is not a JSON object",
                ));
            };
            check_value_size(&value, ctx.max_event_bytes)?;
            write_value(key, value, Some(current), ctx, now)
        }
        Mutation::Delete { key, cond } => {
            check_precondition(cond, &key, l.entity.as_ref())?;
            let Some(current) = l.entity.filter(EntityRow::live) else {
                return Err(not_found(&key));
            };
            let version = current.version + 1;
            let mut writes = Vec::with_capacity(l.links.len() + 1);
            let mut events = Vec::with_capacity(l.links.len() + 1);
            // Links first: a subscriber sees them go before the entity they pointed at.
            for link in &l.links {
                writes.push(Write::DeleteLink(link.key.clone()));
                events.push(event(
                    ctx,
                    "link.deleted".into(),
                    link.key.source.path(),
                    link.event_data(),
                )?);
            }
            events.push(event(
                ctx,
                format!("{}.deleted", key.kind),
                key.path(),
                json!({"kind": key.kind, "id": key.id, "version": version}),
            )?);
            writes.push(Write::Entity(EntityRow {
                key: key.clone(),
                version,
                value: None,
                created_us: current.created_us,
                updated_us: now,
            }));
            Ok(Plan {
                writes,
                events,
                outcome: Outcome::Deleted {
                    key,
                    version,
                    links: l.links.len(),
                },
            })
        }
        Mutation::Link { key, metadata } => {
            if !metadata.is_object() {
                return Err(ValidationError::bad(
                    "invalid_entity",
                    "link metadata must be a JSON object",
                ));
            }
            if !l.source_exists {
                return Err(not_found(&key.source).at("source"));
            }
            if !l.target_exists {
                return Err(not_found(&key.target).at("target"));
            }
            if let Some(existing) = l.link {
                if existing.metadata == metadata {
                    return Ok(Plan {
                        writes: vec![],
                        events: vec![],
                        outcome: Outcome::Linked {
                            row: existing,
                            created: false,
                        },
                    });
                }
                return Err(refused(
                    ErrorKind::Conflict,
                    "link_exists",
                    format!(
                        "the link {} already exists with other metadata; unlink it first to change them",
                        key.cursor()
                    ),
                ));
            }
            let row = LinkRow {
                key,
                metadata,
                created_us: now,
            };
            let ev = event(
                ctx,
                "link.created".into(),
                row.key.source.path(),
                row.event_data(),
            )?;
            Ok(Plan {
                writes: vec![Write::InsertLink(row.clone())],
                events: vec![ev],
                outcome: Outcome::Linked { row, created: true },
            })
        }
        Mutation::Unlink { key } => {
            let Some(existing) = l.link else {
                return Err(refused(
                    ErrorKind::NotFound,
                    "not_found",
                    format!("no link {}", key.cursor()),
                ));
            };
            let ev = event(
                ctx,
                "link.deleted".into(),
                existing.key.source.path(),
                existing.event_data(),
            )?;
            Ok(Plan {
                writes: vec![Write::DeleteLink(key.clone())],
                events: vec![ev],
                outcome: Outcome::Unlinked(key),
            })
        }
    }
}

fn write_value(
    key: EntityKey,
    value: Map<String, Value>,
    current: Option<EntityRow>,
    ctx: &PublishContext<'_>,
    now: i64,
) -> Result<Plan, ValidationError> {
    match current {
        Some(cur) if cur.live() => {
            let old = cur.value.clone().unwrap_or_default();
            let changed = changed_fields(&old, &value);
            if changed.is_empty() {
                // Nothing changes: no write, no event, same version.
                return Ok(Plan {
                    writes: vec![],
                    events: vec![],
                    outcome: Outcome::Entity {
                        row: cur,
                        created: false,
                    },
                });
            }
            let row = EntityRow {
                key: key.clone(),
                version: cur.version + 1,
                value: Some(value),
                created_us: cur.created_us,
                updated_us: now,
            };
            let ev = event(
                ctx,
                format!("{}.updated", key.kind),
                key.path(),
                json!({
                    "kind": key.kind,
                    "id": key.id,
                    "version": row.version,
                    "value": row.value,
                    "previous_version": cur.version,
                    "changed": changed,
                }),
            )?;
            Ok(Plan {
                writes: vec![Write::Entity(row.clone())],
                events: vec![ev],
                outcome: Outcome::Entity {
                    row,
                    created: false,
                },
            })
        }
        tombstone => {
            let version = tombstone.map_or(1, |t| t.version + 1);
            let row = EntityRow {
                key: key.clone(),
                version,
                value: Some(value),
                created_us: now,
                updated_us: now,
            };
            let ev = event(
                ctx,
                format!("{}.created", key.kind),
                key.path(),
                json!({"kind": key.kind, "id": key.id, "version": version, "value": row.value}),
            )?;
            Ok(Plan {
                writes: vec![Write::Entity(row.clone())],
                events: vec![ev],
                outcome: Outcome::Entity { row, created: true },
            })
        }
    }
}

/// Which links to list.
#[derive(Debug, Clone, Default)]
pub struct LinkQuery {
    /// Only links of this type.
    pub kind: Option<String>,
    /// Only links from this entity.
    pub source: Option<EntityKey>,
    /// Only links to this entity.
    pub target: Option<EntityKey>,
    /// Only links after this one, in (type, source, target) order.
    pub after: Option<LinkKey>,
    /// At most this many.
    pub limit: usize,
}

/// The entity store of a log: mutations applied in the log's own write transactions, and
/// reads. Implemented by every log backend that supports entities.
pub trait EntityStore: Send + Sync + 'static {
    /// Applies `m` for `ctx.principal`'s tenant; its events are appended in the same
    /// transaction and reach the commit sink like any other.
    fn mutate(
        &self,
        m: Mutation,
        principal: crate::Principal,
        max_event_bytes: usize,
    ) -> BoxFuture<'_, Result<Applied, EntityError>>;

    /// One live entity.
    fn entity(
        &self,
        tenant: &str,
        key: &EntityKey,
    ) -> BoxFuture<'_, Result<Option<EntityRow>, LogError>>;

    /// Live entities of a kind by id, after `after`, at most `limit`.
    fn entities(
        &self,
        tenant: &str,
        kind: &str,
        after: Option<&str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Vec<EntityRow>, LogError>>;

    /// Links matching `q`, in (type, source, target) order.
    fn links(&self, tenant: &str, q: LinkQuery) -> BoxFuture<'_, Result<Vec<LinkRow>, LogError>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Principal;

    fn ctx(p: &Principal) -> PublishContext<'_> {
        PublishContext {
            principal: p,
            max_event_bytes: 65536,
            now_us: 1_700_000_000_000_000,
        }
    }

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn key() -> EntityKey {
        EntityKey::new("site", "abc").expect("key")
    }

    fn row(version: i64, value: Option<Value>) -> EntityRow {
        EntityRow {
            key: key(),
            version,
            value: value.map(obj),
            created_us: 1,
            updated_us: 2,
        }
    }

    fn data(e: &NewEvent) -> Value {
        let mut s = b"{".to_vec();
        s.extend_from_slice(&e.tail);
        let v: Value = serde_json::from_slice(&s).expect("event json");
        v["data"].clone()
    }

    #[test]
    fn merge_patch_follows_rfc_7396_examples() {
        // The examples of RFC 7396, appendix A.
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (
                json!({"a":"b","b":"c"}),
                json!({"a":null}),
                json!({"b":"c"}),
            ),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, want) in cases {
            let mut t = target.clone();
            merge_patch(&mut t, &patch);
            assert_eq!(t, want, "{target} + {patch}");
        }
    }

    #[test]
    fn put_creates_then_updates_with_changed_fields() {
        let p = Principal::anonymous_admin();
        let create = plan(
            Mutation::Put {
                key: key(),
                value: obj(json!({"name":"NYC","n":1})),
                cond: Precondition::Absent,
            },
            Loaded::default(),
            &ctx(&p),
        )
        .expect("create");
        assert!(
            matches!(create.outcome, Outcome::Entity { created: true, ref row } if row.version == 1)
        );
        assert_eq!(create.events.len(), 1);
        assert_eq!(create.events[0].kind, "site.created");
        assert_eq!(create.events[0].subject.as_deref(), Some("site/abc"));
        assert_eq!(create.events[0].source, SOURCE);
        assert_eq!(
            data(&create.events[0]),
            json!({"kind":"site","id":"abc","version":1,"value":{"name":"NYC","n":1}})
        );

        let update = plan(
            Mutation::Put {
                key: key(),
                value: obj(json!({"name":"NYC","x":true})),
                cond: Precondition::Version(1),
            },
            Loaded {
                entity: Some(row(1, Some(json!({"name":"NYC","n":1})))),
                ..Loaded::default()
            },
            &ctx(&p),
        )
        .expect("update");
        assert_eq!(update.events[0].kind, "site.updated");
        let d = data(&update.events[0]);
        assert_eq!(d["version"], 2);
        assert_eq!(d["previous_version"], 1);
        assert_eq!(d["changed"], json!(["n", "x"]));
    }

    #[test]
    fn an_update_that_changes_nothing_emits_nothing() {
        let p = Principal::anonymous_admin();
        let loaded = || Loaded {
            entity: Some(row(4, Some(json!({"a":1,"b":{"c":2}})))),
            ..Loaded::default()
        };
        let same_put = plan(
            Mutation::Put {
                key: key(),
                value: obj(json!({"b":{"c":2},"a":1})),
                cond: Precondition::None,
            },
            loaded(),
            &ctx(&p),
        )
        .expect("put");
        assert!(same_put.events.is_empty() && same_put.writes.is_empty());
        assert!(matches!(same_put.outcome, Outcome::Entity { ref row, .. } if row.version == 4));
        let same_patch = plan(
            Mutation::Patch {
                key: key(),
                patch: obj(json!({"a":1,"zzz":null})),
                cond: Precondition::None,
            },
            loaded(),
            &ctx(&p),
        )
        .expect("patch");
        assert!(same_patch.events.is_empty() && same_patch.writes.is_empty());
    }

    #[test]
    fn preconditions() {
        let p = Principal::anonymous_admin();
        let put = |cond, entity| {
            plan(
                Mutation::Put {
                    key: key(),
                    value: obj(json!({"a":2})),
                    cond,
                },
                Loaded {
                    entity,
                    ..Loaded::default()
                },
                &ctx(&p),
            )
        };
        let live = || Some(row(3, Some(json!({"a":1}))));
        let gone = || Some(row(5, None));
        let code = |r: Result<Plan, ValidationError>| r.err().map(|e| e.kind);
        assert_eq!(code(put(Precondition::Version(3), live())), None);
        assert_eq!(
            code(put(Precondition::Version(2), live())),
            Some(ErrorKind::PreconditionFailed)
        );
        assert_eq!(
            code(put(Precondition::Absent, live())),
            Some(ErrorKind::PreconditionFailed)
        );
        assert_eq!(code(put(Precondition::Absent, gone())), None);
        assert_eq!(
            code(put(Precondition::Exists, None)),
            Some(ErrorKind::PreconditionFailed)
        );
        assert_eq!(
            code(put(Precondition::Version(5), gone())),
            Some(ErrorKind::PreconditionFailed)
        );
        // Re-creating over a tombstone continues the version count.
        let again = put(Precondition::Absent, gone()).expect("recreate");
        assert!(
            matches!(again.outcome, Outcome::Entity { ref row, created: true } if row.version == 6)
        );
    }

    #[test]
    fn delete_takes_its_links_with_it() {
        let p = Principal::anonymous_admin();
        let other = EntityKey::new("group", "g1").expect("key");
        let link = |kind: &str, s: &EntityKey, t: &EntityKey| LinkRow {
            key: LinkKey::new(kind, s.clone(), t.clone()).expect("link"),
            metadata: json!({}),
            created_us: 1,
        };
        let plan = plan(
            Mutation::Delete {
                key: key(),
                cond: Precondition::None,
            },
            Loaded {
                entity: Some(row(2, Some(json!({"a":1})))),
                links: vec![
                    link("member_of", &key(), &other),
                    link("owns", &other, &key()),
                ],
                ..Loaded::default()
            },
            &ctx(&p),
        )
        .expect("delete");
        let kinds: Vec<&str> = plan.events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(kinds, ["link.deleted", "link.deleted", "site.deleted"]);
        assert_eq!(
            data(&plan.events[2]),
            json!({"kind":"site","id":"abc","version":3})
        );
        assert_eq!(
            data(&plan.events[1]),
            json!({"type":"owns","source":"group/g1","target":"site/abc","metadata":{}})
        );
        assert_eq!(plan.events[1].subject.as_deref(), Some("group/g1"));
        assert_eq!(plan.writes.len(), 3);
    }

    #[test]
    fn keys_and_cursors_are_checked() {
        assert!(EntityKey::new("site", "a.b:c-d_1").is_ok());
        assert!(EntityKey::new("si.te", "a").is_err());
        assert!(EntityKey::new("site", "a/b").is_err());
        assert!(EntityKey::new("", "a").is_err());
        assert!(EntityKey::new("site", &"x".repeat(129)).is_err());
        assert!(EntityKey::parse("source", "site").is_err());
        let k = LinkKey::new(
            "member_of",
            EntityKey::new("user", "u1").expect("k"),
            EntityKey::new("group", "g.1").expect("k"),
        )
        .expect("link");
        assert_eq!(LinkKey::parse_cursor(&k.cursor()).expect("cursor"), k);
        assert!(LinkKey::parse_cursor("a/b/c").is_err());
    }

    #[test]
    fn value_size_is_limited() {
        let p = Principal::anonymous_admin();
        let c = PublishContext {
            principal: &p,
            max_event_bytes: 1000,
            now_us: 1,
        };
        let r = plan(
            Mutation::Put {
                key: key(),
                value: obj(json!({"big": "x".repeat(2000)})),
                cond: Precondition::None,
            },
            Loaded::default(),
            &c,
        );
        assert_eq!(r.err().map(|e| e.kind), Some(ErrorKind::TooLarge));
    }

    #[test]
    fn publish_narrowing_applies_to_entity_events() {
        let mut p = Principal::anonymous_admin();
        p.publish = Some(vec![crate::Pattern::new("policy.*").expect("pattern")]);
        let r = plan(
            Mutation::Put {
                key: key(),
                value: obj(json!({})),
                cond: Precondition::None,
            },
            Loaded::default(),
            &ctx(&p),
        );
        assert_eq!(r.err().map(|e| e.kind), Some(ErrorKind::Forbidden));
    }
}

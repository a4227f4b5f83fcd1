//! The entity model: keys and their checks, rows, links, the mutations a client can ask
//! for, what a store loads for one and the plan it gets back, and the errors.

use serde_json::{json, Map, Value};

use crate::event::{format_time, time_from_us, NewEvent};
use crate::log::LogError;
use crate::validate::{check_charset, check_type_chars, is_type_char, ValidationError};

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
    check_type_chars(field, value, 128).map_err(|e| ValidationError {
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

    pub(super) fn event_data(&self) -> Value {
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

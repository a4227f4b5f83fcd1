//! Row → type conversions shared by the SQLite and PostgreSQL backends. Both store the
//! same columns in the same order, so each stored type is read in one place, through
//! [`Columns`], which each backend implements for its own row type.

use std::sync::Arc;

use bytes::Bytes;
use crier_core::entity::{EntityKey, EntityRow, LinkKey, LinkRow};
use crier_core::keys::ApiKey;
use crier_core::webhook::{Delivery, DeliveryStatus, WebhookStatus, WebhookSub};
use crier_core::{Committed, LogError, Role, Severity};

use crate::filters::SavedFilter;

/// A stored row, read by column index. Integer columns of any width read as `i64`.
pub(crate) trait Columns {
    /// The backend's error for a column that cannot be read.
    type Error;

    /// A nullable text column.
    fn opt_text(&self, i: usize) -> Result<Option<String>, Self::Error>;
    /// A nullable integer column.
    fn opt_int(&self, i: usize) -> Result<Option<i64>, Self::Error>;
    /// A byte column.
    fn bytes(&self, i: usize) -> Result<Vec<u8>, Self::Error>;
    /// An event's tags, however the backend stores the list.
    fn tags(&self, i: usize) -> Result<Vec<String>, Self::Error>;
    /// The error for column `i` holding `what`, a value no reader accepts.
    fn invalid(&self, i: usize, what: String) -> Self::Error;

    /// A text column that is never NULL.
    fn text(&self, i: usize) -> Result<String, Self::Error> {
        self.opt_text(i)?
            .ok_or_else(|| self.invalid(i, "NULL".into()))
    }

    /// An integer column that is never NULL.
    fn int(&self, i: usize) -> Result<i64, Self::Error> {
        self.opt_int(i)?
            .ok_or_else(|| self.invalid(i, "NULL".into()))
    }
}

/// A status column parsed by `parse`, or an error naming the unknown text.
fn status<R: Columns, T>(r: &R, i: usize, parse: fn(&str) -> Option<T>) -> Result<T, R::Error> {
    let s = r.text(i)?;
    parse(&s).ok_or_else(|| r.invalid(i, format!("unknown status {s:?}")))
}

/// A stored count or seq, which is never negative.
pub(crate) fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A seq or count as the `BIGINT`/`INTEGER` the backends store.
pub(crate) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Whether a store whose recorded schema version is `found` (`None`: not recorded yet) can
/// be opened by code that knows version `known`; `Ok(true)` when `known` is to be recorded.
pub(crate) fn schema_check(found: Option<i64>, known: i64) -> Result<bool, LogError> {
    match found {
        Some(v) if v > known => Err(LogError::SchemaTooNew { found: v, known }),
        Some(_) => Ok(false),
        None => Ok(true),
    }
}

/// The event columns, in the order [`committed`] reads them.
pub(crate) const EVENT_COLUMNS: &str =
    "seq, tenant, id, time_us, type, source, category, severity, subject, tags, json";

/// A committed event from a row of [`EVENT_COLUMNS`].
pub(crate) fn committed<R: Columns>(r: &R) -> Result<Arc<Committed>, R::Error> {
    Ok(Arc::new(Committed {
        seq: u(r.int(0)?),
        tenant: r.text(1)?,
        id: r.text(2)?,
        time_us: r.int(3)?,
        kind: r.text(4)?,
        source: r.text(5)?,
        category: r.opt_text(6)?,
        severity: Severity::from_rank(r.int(7)?).unwrap_or_default(),
        subject: r.opt_text(8)?,
        tags: r.tags(9)?,
        json: Bytes::from(r.bytes(10)?),
        frames: Default::default(),
    }))
}

/// The subscription columns, in the order [`sub`] reads them.
pub(crate) const SUB_COLUMNS: &str =
    "id, tenant, name, filter, url, secret, cursor, status, expires_us, created_us, note";

/// A webhook subscription from a row of [`SUB_COLUMNS`].
pub(crate) fn sub<R: Columns>(r: &R) -> Result<WebhookSub, R::Error> {
    Ok(WebhookSub {
        id: r.text(0)?,
        tenant: r.text(1)?,
        name: r.text(2)?,
        filter: r.text(3)?,
        url: r.text(4)?,
        secret: r.text(5)?,
        cursor: u(r.int(6)?),
        status: status(r, 7, WebhookStatus::parse)?,
        expires_us: r.opt_int(8)?,
        created_us: r.int(9)?,
        note: r.opt_text(10)?,
    })
}

/// The delivery columns, in the order [`delivery`] reads them.
pub(crate) const DELIVERY_COLUMNS: &str =
    "sub_id, seq, event_id, status, attempts, last_status_code, last_error, next_attempt_us, updated_us";

/// A delivery record from a row of [`DELIVERY_COLUMNS`].
pub(crate) fn delivery<R: Columns>(r: &R) -> Result<Delivery, R::Error> {
    Ok(Delivery {
        sub_id: r.text(0)?,
        seq: u(r.int(1)?),
        event_id: r.text(2)?,
        status: status(r, 3, DeliveryStatus::parse)?,
        attempts: u32::try_from(r.int(4)?).unwrap_or(0),
        last_status_code: r.opt_int(5)?.and_then(|c| u16::try_from(c).ok()),
        last_error: r.opt_text(6)?,
        next_attempt_us: r.opt_int(7)?,
        updated_us: r.int(8)?,
    })
}

/// The saved-filter columns, in the order [`saved_filter`] reads them.
pub(crate) const FILTER_COLUMNS: &str =
    "tenant, name, filter, description, created_by, created_us, updated_us";

/// A saved filter from a row of [`FILTER_COLUMNS`].
pub(crate) fn saved_filter<R: Columns>(r: &R) -> Result<SavedFilter, R::Error> {
    Ok(SavedFilter {
        tenant: r.text(0)?,
        name: r.text(1)?,
        filter: r.text(2)?,
        description: r.opt_text(3)?,
        created_by: r.text(4)?,
        created_us: r.int(5)?,
        updated_us: r.int(6)?,
    })
}

/// The API key columns, in the order [`api_key`] reads them.
pub(crate) const KEY_COLUMNS: &str = "id, name, tenant, role, created_us, revoked_us";

/// An API key from a row of [`KEY_COLUMNS`]; a role no reader knows reads as subscriber.
pub(crate) fn api_key<R: Columns>(r: &R) -> Result<ApiKey, R::Error> {
    Ok(ApiKey {
        id: r.text(0)?,
        name: r.text(1)?,
        tenant: r.text(2)?,
        role: Role::parse(&r.text(3)?).unwrap_or(Role::Subscriber),
        created_us: r.int(4)?,
        revoked_us: r.opt_int(5)?,
    })
}

/// The entity and link tables, for a backend whose 64-bit integer type is `int`, whose
/// tables end with `options`, and whose index names start with `prefix`. A NULL `value` is
/// the tombstone of a deleted entity, keeping its version.
pub(crate) fn entity_ddl(
    entities: &str,
    links: &str,
    int: &str,
    options: &str,
    prefix: &str,
) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {entities} (
    tenant TEXT NOT NULL,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    version {int} NOT NULL,
    value TEXT,
    created_us {int} NOT NULL,
    updated_us {int} NOT NULL,
    PRIMARY KEY (tenant, kind, id)
){options};
CREATE TABLE IF NOT EXISTS {links} (
    tenant TEXT NOT NULL,
    type TEXT NOT NULL,
    source_kind TEXT NOT NULL,
    source_id TEXT NOT NULL,
    target_kind TEXT NOT NULL,
    target_id TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_us {int} NOT NULL,
    PRIMARY KEY (tenant, type, source_kind, source_id, target_kind, target_id)
){options};
CREATE INDEX IF NOT EXISTS {prefix}links_source ON {links} (tenant, source_kind, source_id);
CREATE INDEX IF NOT EXISTS {prefix}links_target ON {links} (tenant, target_kind, target_id);"
    )
}

/// An entity's stored value: its JSON text, or NULL for a tombstone.
pub(crate) fn value_text(row: &EntityRow) -> serde_json::Result<Option<String>> {
    row.value.as_ref().map(serde_json::to_string).transpose()
}

/// The error for JSON text in column `i` that does not parse.
fn bad_json<R: Columns>(r: &R, i: usize) -> impl Fn(serde_json::Error) -> R::Error + '_ {
    move |e| r.invalid(i, format!("bad JSON: {e}"))
}

/// The row of entity `key` from columns `version, value, created_us, updated_us`, the first
/// of them at `at`.
pub(crate) fn entity<R: Columns>(r: &R, key: EntityKey, at: usize) -> Result<EntityRow, R::Error> {
    Ok(EntityRow {
        key,
        version: r.int(at)?,
        value: match r.opt_text(at + 1)? {
            Some(t) => Some(serde_json::from_str(&t).map_err(bad_json(r, at + 1))?),
            None => None,
        },
        created_us: r.int(at + 2)?,
        updated_us: r.int(at + 3)?,
    })
}

/// The values that name link `key` of `tenant`, in the order of the links table's key:
/// tenant, type, source kind and id, target kind and id.
pub(crate) fn link_key<'a>(tenant: &'a str, key: &'a LinkKey) -> [&'a str; 6] {
    let (s, t) = (&key.source, &key.target);
    [tenant, &key.kind, &s.kind, &s.id, &t.kind, &t.id]
}

/// The link columns, in the order [`link`] reads them.
pub(crate) const LINK_COLUMNS: &str =
    "type, source_kind, source_id, target_kind, target_id, metadata, created_us";

/// A link from a row of [`LINK_COLUMNS`].
pub(crate) fn link<R: Columns>(r: &R) -> Result<LinkRow, R::Error> {
    let source = EntityKey {
        kind: r.text(1)?,
        id: r.text(2)?,
    };
    let target = EntityKey {
        kind: r.text(3)?,
        id: r.text(4)?,
    };
    Ok(LinkRow {
        key: LinkKey {
            kind: r.text(0)?,
            source,
            target,
        },
        metadata: serde_json::from_str(&r.text(5)?).map_err(bad_json(r, 5))?,
        created_us: r.int(6)?,
    })
}

impl Columns for rusqlite::Row<'_> {
    type Error = rusqlite::Error;

    fn opt_text(&self, i: usize) -> rusqlite::Result<Option<String>> {
        self.get(i)
    }

    fn opt_int(&self, i: usize) -> rusqlite::Result<Option<i64>> {
        self.get(i)
    }

    fn bytes(&self, i: usize) -> rusqlite::Result<Vec<u8>> {
        self.get(i)
    }

    /// One text column, the tags joined by [`crate::sqlite::TAG_SEP`].
    fn tags(&self, i: usize) -> rusqlite::Result<Vec<String>> {
        let tags: String = self.get(i)?;
        if tags.is_empty() {
            return Ok(Vec::new());
        }
        Ok(tags
            .split(crate::sqlite::TAG_SEP)
            .map(String::from)
            .collect())
    }

    fn invalid(&self, i: usize, what: String) -> rusqlite::Error {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    }
}

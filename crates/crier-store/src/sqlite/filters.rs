//! Saved named filters (`saved_filters` table of `crier.db`): a tenant's filters stored
//! under short names, so streams, replays and the dashboard can use `filter=NAME` instead of
//! spelling the filter out each time.
//!
//! The store keeps the filter as its JSON text; validating it against the filter language
//! and the reader limits is the caller's job, before it is stored. A name is unique per
//! tenant, and a tenant holds at most the number of filters the caller passes to
//! [`FilterStore::create`]; both are checked in the same transaction as the insert.

use crier_core::log::BoxFuture;
use crier_core::LogError;
use rusqlite::{params, OptionalExtension};

use crate::rows::{self, FILTER_COLUMNS};
use crate::sqlite::{SideStore, SideTables};

pub(crate) const FILTERS_SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS saved_filters (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    filter TEXT NOT NULL,
    description TEXT,
    created_by TEXT NOT NULL,
    created_us INTEGER NOT NULL,
    updated_us INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) STRICT;
";

/// A stored named filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedFilter {
    /// Owner.
    pub tenant: String,
    /// Name, unique within the tenant.
    pub name: String,
    /// The filter, as its JSON text.
    pub filter: String,
    /// What it is for.
    pub description: Option<String>,
    /// The actor who saved it first.
    pub created_by: String,
    /// When it was saved first, microseconds since the epoch.
    pub created_us: i64,
    /// When it last changed.
    pub updated_us: i64,
}

/// What [`FilterStore::create`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Stored.
    Stored(SavedFilter),
    /// The tenant already has a filter of that name; nothing changed.
    Exists,
    /// The tenant holds the most filters allowed; nothing changed.
    Full,
}

/// Where saved filters live (SQLite for one node, PostgreSQL for a cluster). Every method
/// takes owned arguments and returns a `'static` future.
pub trait FilterStore: Send + Sync + 'static {
    /// Stores a new filter unless its name is taken or the tenant already holds `max`.
    fn create(&self, f: SavedFilter, max: usize) -> BoxFuture<'static, Result<Created, LogError>>;

    /// One filter of a tenant.
    fn get(
        &self,
        tenant: String,
        name: String,
    ) -> BoxFuture<'static, Result<Option<SavedFilter>, LogError>>;

    /// A tenant's filters, by name.
    fn list(&self, tenant: String) -> BoxFuture<'static, Result<Vec<SavedFilter>, LogError>>;

    /// Replaces a filter's definition and description; `None` if absent. The name, the
    /// creator and the creation time stay.
    fn update(
        &self,
        tenant: String,
        name: String,
        filter: String,
        description: Option<String>,
        updated_us: i64,
    ) -> BoxFuture<'static, Result<Option<SavedFilter>, LogError>>;

    /// Deletes a filter; false if absent.
    fn delete(&self, tenant: String, name: String) -> BoxFuture<'static, Result<bool, LogError>>;
}

/// The `saved_filters` table.
pub struct SavedFilters;

impl SideTables for SavedFilters {
    const SCHEMA: &'static str = FILTERS_SCHEMA;
}

/// Saved filters in a SQLite file: opened with [`SideStore::open`], or
/// [`SideStore::with_log`] in a hub.
pub type SqliteFilters = SideStore<SavedFilters>;

impl FilterStore for SqliteFilters {
    fn create(&self, f: SavedFilter, max: usize) -> BoxFuture<'static, Result<Created, LogError>> {
        self.side.write(move |tx| {
            // One write transaction (IMMEDIATE on a connection of its own): the count and
            // the insert see the same table, even with another process writing to the file.
            let exists: Option<i64> = tx
                .query_row(
                    "SELECT 1 FROM saved_filters WHERE tenant = ?1 AND name = ?2",
                    [&f.tenant, &f.name],
                    |r| r.get(0),
                )
                .optional()?;
            if exists.is_some() {
                return Ok(Created::Exists);
            }
            let n: i64 = tx.query_row(
                "SELECT COUNT(*) FROM saved_filters WHERE tenant = ?1",
                [&f.tenant],
                |r| r.get(0),
            )?;
            if usize::try_from(n).unwrap_or(usize::MAX) >= max {
                return Ok(Created::Full);
            }
            tx.execute(
                &format!(
                    "INSERT INTO saved_filters ({FILTER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
                ),
                params![
                    f.tenant,
                    f.name,
                    f.filter,
                    f.description,
                    f.created_by,
                    f.created_us,
                    f.updated_us
                ],
            )?;
            Ok(Created::Stored(f))
        })
    }

    fn get(
        &self,
        tenant: String,
        name: String,
    ) -> BoxFuture<'static, Result<Option<SavedFilter>, LogError>> {
        self.side.read(move |c| {
            c.query_row(
                &format!(
                    "SELECT {FILTER_COLUMNS} FROM saved_filters WHERE tenant = ?1 AND name = ?2"
                ),
                [&tenant, &name],
                |r| rows::saved_filter(r),
            )
            .optional()
        })
    }

    fn list(&self, tenant: String) -> BoxFuture<'static, Result<Vec<SavedFilter>, LogError>> {
        self.side.read(move |c| {
            let mut stmt = c.prepare(&format!(
                "SELECT {FILTER_COLUMNS} FROM saved_filters WHERE tenant = ?1 ORDER BY name"
            ))?;
            let rows = stmt.query_map([&tenant], |r| rows::saved_filter(r))?;
            rows.collect()
        })
    }

    fn update(
        &self,
        tenant: String,
        name: String,
        filter: String,
        description: Option<String>,
        updated_us: i64,
    ) -> BoxFuture<'static, Result<Option<SavedFilter>, LogError>> {
        self.side.write(move |c| {
            c.query_row(
                &format!(
                    "UPDATE saved_filters SET filter = ?3, description = ?4, updated_us = ?5
                     WHERE tenant = ?1 AND name = ?2 RETURNING {FILTER_COLUMNS}"
                ),
                params![tenant, name, filter, description, updated_us],
                |r| rows::saved_filter(r),
            )
            .optional()
        })
    }

    fn delete(&self, tenant: String, name: String) -> BoxFuture<'static, Result<bool, LogError>> {
        self.side.write(move |c| {
            let n = c.execute(
                "DELETE FROM saved_filters WHERE tenant = ?1 AND name = ?2",
                [&tenant, &name],
            )?;
            Ok(n > 0)
        })
    }
}

//! Entities in the SQLite log's database: the tables, what a mutation loads and writes inside
//! the writer's transaction, and the reads.

use crier_core::entity::{
    EntityKey, EntityRow, LinkKey, LinkQuery, LinkRow, Loaded, Mutation, Write,
};
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};

use crate::rows::{self, LINK_COLUMNS};

/// Entity rows and links ([`rows::entity_ddl`]). Created with the log: the entity rows and
/// their events share one database, so one transaction holds both.
pub(super) fn entity_schema() -> String {
    rows::entity_ddl("entities", "links", "INTEGER", " STRICT, WITHOUT ROWID", "")
}

fn bad_json(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::ToSqlConversionFailure(Box::new(e))
}

/// The row of one entity, tombstones included.
pub(super) fn entity_row(
    conn: &Connection,
    tenant: &str,
    key: &EntityKey,
) -> rusqlite::Result<Option<EntityRow>> {
    conn.prepare_cached(
        "SELECT version, value, created_us, updated_us FROM entities
         WHERE tenant = ?1 AND kind = ?2 AND id = ?3",
    )?
    .query_row(params![tenant, key.kind, key.id], |r| {
        rows::entity(r, key.clone(), 0)
    })
    .optional()
}

fn live(conn: &Connection, tenant: &str, key: &EntityKey) -> rusqlite::Result<bool> {
    Ok(entity_row(conn, tenant, key)?.is_some_and(|r| r.live()))
}

fn link_row(conn: &Connection, tenant: &str, key: &LinkKey) -> rusqlite::Result<Option<LinkRow>> {
    conn.prepare_cached(&format!(
        "SELECT {LINK_COLUMNS} FROM links WHERE tenant = ?1 AND type = ?2 AND source_kind = ?3
         AND source_id = ?4 AND target_kind = ?5 AND target_id = ?6"
    ))?
    .query_row(params_from_iter(rows::link_key(tenant, key)), |r| {
        rows::link(r)
    })
    .optional()
}

/// Loads, in the writer's transaction, what `m` needs to be planned.
pub(super) fn load(conn: &Connection, tenant: &str, m: &Mutation) -> rusqlite::Result<Loaded> {
    let mut l = Loaded::default();
    match m {
        Mutation::Put { key, .. } | Mutation::Patch { key, .. } => {
            l.entity = entity_row(conn, tenant, key)?;
        }
        Mutation::Delete { key, .. } => {
            l.entity = entity_row(conn, tenant, key)?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {LINK_COLUMNS} FROM links WHERE tenant = ?1 AND source_kind = ?2 AND source_id = ?3
                 UNION
                 SELECT {LINK_COLUMNS} FROM links WHERE tenant = ?1 AND target_kind = ?2 AND target_id = ?3
                 ORDER BY 1, 2, 3, 4, 5"
            ))?;
            l.links = stmt
                .query_map(params![tenant, key.kind, key.id], |r| rows::link(r))?
                .collect::<rusqlite::Result<_>>()?;
        }
        Mutation::Link { key, .. } => {
            l.source_exists = live(conn, tenant, &key.source)?;
            l.target_exists = live(conn, tenant, &key.target)?;
            l.link = link_row(conn, tenant, key)?;
        }
        Mutation::Unlink { key } => {
            l.link = link_row(conn, tenant, key)?;
        }
    }
    Ok(l)
}

/// Applies a plan's row writes in the writer's transaction.
pub(super) fn apply(conn: &Connection, tenant: &str, writes: &[Write]) -> rusqlite::Result<()> {
    for w in writes {
        match w {
            Write::Entity(row) => {
                let value = rows::value_text(row).map_err(bad_json)?;
                conn.prepare_cached(
                    "INSERT INTO entities (tenant, kind, id, version, value, created_us, updated_us)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                     ON CONFLICT (tenant, kind, id) DO UPDATE SET version = excluded.version,
                       value = excluded.value, created_us = excluded.created_us,
                       updated_us = excluded.updated_us",
                )?
                .execute(params![
                    tenant,
                    row.key.kind,
                    row.key.id,
                    row.version,
                    value,
                    row.created_us,
                    row.updated_us
                ])?;
            }
            Write::InsertLink(link) => {
                let metadata = serde_json::to_string(&link.metadata).map_err(bad_json)?;
                conn.prepare_cached(
                    "INSERT INTO links (tenant, type, source_kind, source_id, target_kind, target_id, metadata, created_us)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?
                .execute(params![
                    tenant,
                    link.key.kind,
                    link.key.source.kind,
                    link.key.source.id,
                    link.key.target.kind,
                    link.key.target.id,
                    metadata,
                    link.created_us
                ])?;
            }
            Write::DeleteLink(key) => {
                conn.prepare_cached(
                    "DELETE FROM links WHERE tenant = ?1 AND type = ?2 AND source_kind = ?3
                     AND source_id = ?4 AND target_kind = ?5 AND target_id = ?6",
                )?
                .execute(params_from_iter(rows::link_key(tenant, key)))?;
            }
        }
    }
    Ok(())
}

/// Live entities of a kind by id.
pub(super) fn list(
    conn: &Connection,
    tenant: &str,
    kind: &str,
    after: Option<&str>,
    limit: usize,
) -> rusqlite::Result<Vec<EntityRow>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, version, value, created_us, updated_us FROM entities
         WHERE tenant = ?1 AND kind = ?2 AND id > ?3 AND value IS NOT NULL
         ORDER BY id LIMIT ?4",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![tenant, kind, after.unwrap_or(""), limit], |r| {
        let id = r.get(0)?;
        rows::entity(
            r,
            EntityKey {
                kind: kind.to_string(),
                id,
            },
            1,
        )
    })?;
    rows.collect()
}

/// Links matching a query.
pub(super) fn links(
    conn: &Connection,
    tenant: &str,
    q: &LinkQuery,
) -> rusqlite::Result<Vec<LinkRow>> {
    let (ak, ask, asi, atk, ati) = match &q.after {
        Some(a) => (
            Some(a.kind.as_str()),
            Some(a.source.kind.as_str()),
            Some(a.source.id.as_str()),
            Some(a.target.kind.as_str()),
            Some(a.target.id.as_str()),
        ),
        None => (None, None, None, None, None),
    };
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {LINK_COLUMNS} FROM links
         WHERE tenant = ?1
           AND (?2 IS NULL OR type = ?2)
           AND (?3 IS NULL OR (source_kind = ?3 AND source_id = ?4))
           AND (?5 IS NULL OR (target_kind = ?5 AND target_id = ?6))
           AND (?7 IS NULL OR (type, source_kind, source_id, target_kind, target_id) > (?7, ?8, ?9, ?10, ?11))
         ORDER BY type, source_kind, source_id, target_kind, target_id LIMIT ?12"
    ))?;
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(
        params![
            tenant,
            q.kind,
            q.source.as_ref().map(|s| &s.kind),
            q.source.as_ref().map(|s| &s.id),
            q.target.as_ref().map(|s| &s.kind),
            q.target.as_ref().map(|s| &s.id),
            ak,
            ask,
            asi,
            atk,
            ati,
            limit
        ],
        |r| rows::link(r),
    )?;
    rows.collect()
}

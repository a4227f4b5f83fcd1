//! Entities in the PostgreSQL log's schema: the tables, what a mutation loads and writes
//! inside the log's group transaction (which holds the head row lock, so every writer of the
//! log is serialised and the loaded state cannot change under the mutation), and the reads.

use crier_core::entity::{
    EntityKey, EntityRow, LinkKey, LinkQuery, LinkRow, Loaded, Mutation, Write,
};
use crier_core::LogError;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

use crate::rows::{self, LINK_COLUMNS};

fn backend(e: impl std::error::Error + Send + Sync + 'static) -> LogError {
    LogError::backend(e)
}

/// Qualified table names.
#[derive(Clone)]
pub(crate) struct EntityNames {
    pub(crate) entities: String,
    pub(crate) links: String,
}

/// The tables ([`rows::entity_ddl`]).
pub(crate) fn migrations(n: &EntityNames) -> String {
    rows::entity_ddl(&n.entities, &n.links, "BIGINT", "", "crier_")
}

/// `values` as statement parameters.
fn params<'a>(values: &'a [&'a str; 6]) -> [&'a (dyn ToSql + Sync); 6] {
    values.each_ref().map(|v| v as &(dyn ToSql + Sync))
}

/// The entity tables, read and written through `c` (a connection or the group's
/// transaction).
pub(crate) struct Entities<'a, C> {
    c: &'a C,
    n: &'a EntityNames,
}

impl<'a, C: GenericClient + Sync> Entities<'a, C> {
    /// The tables named `n`, through `c`.
    pub(crate) fn new(c: &'a C, n: &'a EntityNames) -> Self {
        Entities { c, n }
    }

    /// The row of one entity, tombstones included.
    pub(crate) async fn entity_row(
        &self,
        tenant: &str,
        key: &EntityKey,
    ) -> Result<Option<EntityRow>, LogError> {
        let row = self
            .c
            .query_opt(
                &format!(
                    "SELECT version, value, created_us, updated_us FROM {}
                     WHERE tenant = $1 AND kind = $2 AND id = $3",
                    self.n.entities
                ),
                &[&tenant, &key.kind, &key.id],
            )
            .await
            .map_err(backend)?;
        row.map(|r| rows::entity(&r, key.clone(), 0)).transpose()
    }

    async fn live(&self, tenant: &str, key: &EntityKey) -> Result<bool, LogError> {
        Ok(self
            .entity_row(tenant, key)
            .await?
            .is_some_and(|r| r.live()))
    }

    async fn link_row(&self, tenant: &str, key: &LinkKey) -> Result<Option<LinkRow>, LogError> {
        let row = self.c
            .query_opt(
                &format!(
                    "SELECT {LINK_COLUMNS} FROM {} WHERE tenant = $1 AND type = $2 AND source_kind = $3
                     AND source_id = $4 AND target_kind = $5 AND target_id = $6",
                    self.n.links
                ),
                &params(&rows::link_key(tenant, key)),
            )
            .await
            .map_err(backend)?;
        row.as_ref().map(rows::link).transpose()
    }

    /// Loads what `m` needs to be planned.
    pub(crate) async fn load(&self, tenant: &str, m: &Mutation) -> Result<Loaded, LogError> {
        let mut l = Loaded::default();
        match m {
            Mutation::Put { key, .. } | Mutation::Patch { key, .. } => {
                l.entity = self.entity_row(tenant, key).await?;
            }
            Mutation::Delete { key, .. } => {
                l.entity = self.entity_row(tenant, key).await?;
                let rows = self.c
                    .query(
                        &format!(
                            "SELECT {LINK_COLUMNS} FROM {l} WHERE tenant = $1
                               AND ((source_kind = $2 AND source_id = $3) OR (target_kind = $2 AND target_id = $3))
                             ORDER BY type COLLATE \"C\", source_kind COLLATE \"C\", source_id COLLATE \"C\",
                                      target_kind COLLATE \"C\", target_id COLLATE \"C\"",
                            l = self.n.links
                        ),
                        &[&tenant, &key.kind, &key.id],
                    )
                    .await
                    .map_err(backend)?;
                l.links = rows.iter().map(rows::link).collect::<Result<_, _>>()?;
            }
            Mutation::Link { key, .. } => {
                l.source_exists = self.live(tenant, &key.source).await?;
                l.target_exists = self.live(tenant, &key.target).await?;
                l.link = self.link_row(tenant, key).await?;
            }
            Mutation::Unlink { key } => {
                l.link = self.link_row(tenant, key).await?;
            }
        }
        Ok(l)
    }

    /// Applies a plan's row writes.
    pub(crate) async fn apply(&self, tenant: &str, writes: &[Write]) -> Result<(), LogError> {
        for w in writes {
            match w {
                Write::Entity(row) => {
                    let value = rows::value_text(row).map_err(backend)?;
                    self.c.execute(
                        &format!(
                            "INSERT INTO {} (tenant, kind, id, version, value, created_us, updated_us)
                             VALUES ($1, $2, $3, $4, $5, $6, $7)
                             ON CONFLICT (tenant, kind, id) DO UPDATE SET version = EXCLUDED.version,
                               value = EXCLUDED.value, created_us = EXCLUDED.created_us,
                               updated_us = EXCLUDED.updated_us",
                            self.n.entities
                        ),
                        &[
                            &tenant,
                            &row.key.kind,
                            &row.key.id,
                            &row.version,
                            &value,
                            &row.created_us,
                            &row.updated_us,
                        ],
                    )
                    .await
                    .map_err(backend)?;
                }
                Write::InsertLink(link) => {
                    let metadata = serde_json::to_string(&link.metadata).map_err(backend)?;
                    self.c.execute(
                        &format!(
                            "INSERT INTO {} (tenant, type, source_kind, source_id, target_kind, target_id, metadata, created_us)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                            self.n.links
                        ),
                        &[
                            &tenant,
                            &link.key.kind,
                            &link.key.source.kind,
                            &link.key.source.id,
                            &link.key.target.kind,
                            &link.key.target.id,
                            &metadata,
                            &link.created_us,
                        ],
                    )
                    .await
                    .map_err(backend)?;
                }
                Write::DeleteLink(key) => {
                    self.c
                        .execute(
                            &format!(
                            "DELETE FROM {} WHERE tenant = $1 AND type = $2 AND source_kind = $3
                             AND source_id = $4 AND target_kind = $5 AND target_id = $6",
                            self.n.links
                        ),
                            &params(&rows::link_key(tenant, key)),
                        )
                        .await
                        .map_err(backend)?;
                }
            }
        }
        Ok(())
    }

    /// Live entities of a kind by id (byte order, as in SQLite).
    pub(crate) async fn list(
        &self,
        tenant: &str,
        kind: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EntityRow>, LogError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = self
            .c
            .query(
                &format!(
                    "SELECT id, version, value, created_us, updated_us FROM {}
                     WHERE tenant = $1 AND kind = $2 AND id COLLATE \"C\" > $3 AND value IS NOT NULL
                     ORDER BY id COLLATE \"C\" LIMIT $4",
                    self.n.entities
                ),
                &[&tenant, &kind, &after.unwrap_or(""), &limit],
            )
            .await
            .map_err(backend)?;
        rows.iter()
            .map(|r| {
                let id = r.try_get(0).map_err(backend)?;
                rows::entity(
                    r,
                    EntityKey {
                        kind: kind.to_string(),
                        id,
                    },
                    1,
                )
            })
            .collect()
    }

    /// Links matching a query, in (type, source, target) byte order.
    pub(crate) async fn links(
        &self,
        tenant: &str,
        q: &LinkQuery,
    ) -> Result<Vec<LinkRow>, LogError> {
        let after = q.after.as_ref();
        let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
        let rows = self.c
            .query(
                &format!(
                    "SELECT {LINK_COLUMNS} FROM {} WHERE tenant = $1
                       AND ($2::TEXT IS NULL OR type = $2)
                       AND ($3::TEXT IS NULL OR (source_kind = $3 AND source_id = $4))
                       AND ($5::TEXT IS NULL OR (target_kind = $5 AND target_id = $6))
                       AND ($7::TEXT IS NULL OR
                            (type COLLATE \"C\", source_kind COLLATE \"C\", source_id COLLATE \"C\",
                             target_kind COLLATE \"C\", target_id COLLATE \"C\") > ($7, $8, $9, $10, $11))
                     ORDER BY type COLLATE \"C\", source_kind COLLATE \"C\", source_id COLLATE \"C\",
                              target_kind COLLATE \"C\", target_id COLLATE \"C\"
                     LIMIT $12",
                    self.n.links
                ),
                &[
                    &tenant,
                    &q.kind,
                    &q.source.as_ref().map(|s| s.kind.as_str()),
                    &q.source.as_ref().map(|s| s.id.as_str()),
                    &q.target.as_ref().map(|s| s.kind.as_str()),
                    &q.target.as_ref().map(|s| s.id.as_str()),
                    &after.map(|a| a.kind.as_str()),
                    &after.map(|a| a.source.kind.as_str()),
                    &after.map(|a| a.source.id.as_str()),
                    &after.map(|a| a.target.kind.as_str()),
                    &after.map(|a| a.target.id.as_str()),
                    &limit,
                ],
            )
            .await
            .map_err(backend)?;
        rows.iter().map(rows::link).collect()
    }
}

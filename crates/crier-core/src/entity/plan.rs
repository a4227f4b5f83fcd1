//! The rules of entities as one pure function: [`plan`] turns a mutation and the state a
//! store loaded into row writes and the events that describe them.

use serde_json::{json, Map, Value};

use super::model::{
    EntityKey, EntityRow, LinkRow, Loaded, Mutation, Outcome, Plan, Precondition, Write, SOURCE,
};
use super::patch::{changed_fields, merge_patch};
use crate::event::{EventInput, NewEvent, PublishContext};
use crate::validate::{ErrorKind, ValidationError};

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

/// A plan of one row write and the one event that reports it.
fn single(write: Write, ev: NewEvent, outcome: Outcome) -> Plan {
    Plan {
        writes: vec![write],
        events: vec![ev],
        outcome,
    }
}

/// The event (`kind`) that reports a change to link `row`, about the link's source.
fn link_event(
    ctx: &PublishContext<'_>,
    kind: &str,
    row: &LinkRow,
) -> Result<NewEvent, ValidationError> {
    event(ctx, kind.into(), row.key.source.path(), row.event_data())
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
            let ev = link_event(ctx, "link.created", &row)?;
            Ok(single(
                Write::InsertLink(row.clone()),
                ev,
                Outcome::Linked { row, created: true },
            ))
        }
        Mutation::Unlink { key } => {
            let Some(existing) = l.link else {
                return Err(refused(
                    ErrorKind::NotFound,
                    "not_found",
                    format!("no link {}", key.cursor()),
                ));
            };
            let ev = link_event(ctx, "link.deleted", &existing)?;
            Ok(single(
                Write::DeleteLink(key.clone()),
                ev,
                Outcome::Unlinked(key),
            ))
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
            Ok(single(
                Write::Entity(row.clone()),
                ev,
                Outcome::Entity {
                    row,
                    created: false,
                },
            ))
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
            Ok(single(
                Write::Entity(row.clone()),
                ev,
                Outcome::Entity { row, created: true },
            ))
        }
    }
}

//! Entity changes and entity visibility, for every transport: the REST paths
//! (`/v1/entities`, `/v1/links`) and GraphQL's mutations apply a change through [`mutate`],
//! so both check the same role and rate, count the same metrics and commit through the same
//! store call; both ask [`may_read_kind`] before showing a value.

use crier_core::entity::{Applied, EntityError, Mutation};
use crier_core::{Principal, Role};

use super::Error;
use crate::auth::check_role;
use crate::state::AppState;

/// Applies a mutation for `principal`: role and rate checks, then the store, which commits
/// the change with its events.
pub async fn mutate(
    state: &AppState,
    principal: &Principal,
    m: Mutation,
) -> Result<Applied, Error> {
    check_role(principal, Role::Publisher)?;
    state.check_rate(&principal.tenant, 1)?;
    let max = state.settings.limits.max_event_bytes;
    match state.entities.mutate(m, principal.clone(), max).await {
        Ok(applied) => {
            metrics::counter!("crier_entity_changes_total").increment(1);
            metrics::counter!("crier_events_published_total").increment(applied.seqs.len() as u64);
            Ok(applied)
        }
        Err(EntityError::Refused(e)) => {
            if e.kind == crier_core::ErrorKind::TooLarge {
                metrics::counter!("crier_limit_hits_total", "limit" => "max_event_bytes")
                    .increment(1);
            }
            Err(e.into())
        }
        Err(EntityError::Log(e)) => Err(e.into()),
    }
}

/// Whether the credential may read what entities of `kind` are (its `subscribe` patterns
/// must admit their events).
pub fn may_read_kind(p: &Principal, kind: &str) -> bool {
    // An entity's value is what its `created` and `updated` events carry: reading it
    // takes the right to read both (§12.5), not merely its `deleted` events.
    p.subscribe.as_ref().is_none_or(|pats| {
        ["created", "updated"]
            .iter()
            .all(|op| pats.iter().any(|pat| pat.matches(&format!("{kind}.{op}"))))
    })
}

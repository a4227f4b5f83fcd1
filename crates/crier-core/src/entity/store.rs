//! The entity store contract every log backend with entities implements.

use super::model::{Applied, EntityError, EntityKey, EntityRow, LinkKey, LinkRow, Mutation};
use crate::log::{BoxFuture, LogError};

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

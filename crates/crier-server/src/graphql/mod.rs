//! GraphQL (§11): `POST /graphql` for queries and mutations, `GET /graphql` upgraded to a
//! WebSocket speaking `graphql-transport-ws` for the `events` subscription.
//!
//! Nothing here has rules of its own: mutations go through [`crate::service::entities::mutate`] and
//! [`crate::service::publish::prepare`] like the REST paths, reads through the same stores, and the
//! subscription is a hub cursor like an SSE stream (history after `after`, then live, in seq
//! order; a reset arrives as an error with `extensions.code = "reset"` and the stream goes
//! on). Queries are bounded in depth and complexity; a list field costs its `limit` times its
//! selection, so aliases cannot multiply a request past the limit, and every field that loads
//! events draws on the request's [`ResponseBudget`] (§12.3).

pub mod strict;
pub mod ws;

use std::sync::Arc;

use async_graphql::{
    Context, Error as GqlError, ErrorExtensions, InputObject, InputValueError, InputValueResult,
    Json, Object, Scalar, ScalarType, Schema, SimpleObject, Subscription, Value as GqlValue,
};
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use crier_core::entity::{EntityKey, LinkKey, Mutation, Outcome, Precondition};
use crier_core::{Committed, CursorItem, Filter, Principal, ReadQuery, Role, Scope, Start};
use futures_util::Stream;
use serde_json::{Map, Value};

use crate::auth::{narrow, require, Auth};
use crate::budget::ResponseBudget;
use crate::error::ApiError;
use crate::service::history::MAX_PAGE;
use crate::service::publish::{admit, append, prepare};
use crate::state::AppState;

/// Deepest selection a query may have.
pub const MAX_DEPTH: usize = 12;
/// Largest complexity a query may have: each field selected counts 1, and a list field
/// counts its `limit` times its selection. One full page of events with every field (about
/// 14,000) fits; twenty aliased pages do not.
pub const MAX_COMPLEXITY: usize = 20_000;

/// The complexity of a list field of at most `limit` items (default 100).
fn list_cost(limit: Option<i32>, child: usize) -> usize {
    let items = usize::try_from(limit.unwrap_or(100).clamp(1, MAX_PAGE as i32)).unwrap_or(1);
    items.saturating_mul(child).saturating_add(1)
}

/// The schema type.
pub type CrierSchema = Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// Builds the schema. Each request carries the hub's state and the caller's principal as
/// request data, so the schema holds no state of its own.
pub fn schema() -> CrierSchema {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(32)
        .extension(crate::graphql::ws::Guard)
        .finish()
}

/// The schema in SDL (`crier graphql-schema`).
pub fn sdl() -> String {
    schema().sdl()
}

/// GraphQL's face of a refusal: the message, with the code and the status the REST path
/// would answer as extensions.
fn gql(e: impl Into<ApiError>) -> GqlError {
    let e: ApiError = e.into();
    let (code, status) = (e.code, e.status.as_u16());
    GqlError::new(e.message).extend_with(|_, ext| {
        ext.set("code", code);
        ext.set("status", status);
    })
}

fn bad(code: &'static str, msg: impl Into<String>) -> GqlError {
    gql(ApiError::bad(code, msg))
}

/// The request's budget (every request gets one; see [`crate::graphql::ws::Guard`]).
fn budget(ctx: &Context<'_>, state: &AppState) -> Arc<ResponseBudget> {
    ctx.data_opt::<Arc<ResponseBudget>>()
        .cloned()
        .unwrap_or_else(|| ResponseBudget::new(state.settings.limits.max_response_bytes))
}

fn ctx_parts<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<(&'a AppState, &'a Principal)> {
    Ok((ctx.data::<AppState>()?, ctx.data::<Principal>()?))
}

/// A log position, serialised as a JSON number (u64).
pub struct Seq(pub u64);

#[Scalar(name = "Seq")]
impl ScalarType for Seq {
    fn parse(value: GqlValue) -> InputValueResult<Self> {
        match &value {
            GqlValue::Number(n) => n
                .as_u64()
                .map(Seq)
                .ok_or_else(|| InputValueError::custom("a Seq is a non-negative integer")),
            GqlValue::String(s) => s
                .parse::<u64>()
                .map(Seq)
                .map_err(|_| InputValueError::custom("a Seq is a non-negative integer")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> GqlValue {
        GqlValue::Number(self.0.into())
    }
}

/// Which events: every key given must match (globs with `*`; severity is a minimum).
#[derive(InputObject, Default)]
pub struct EventFilter {
    #[graphql(name = "type")]
    kind: Option<Vec<String>>,
    category: Option<Vec<String>>,
    source: Option<Vec<String>>,
    subject: Option<Vec<String>>,
    severity: Option<String>,
    tags: Option<Vec<String>>,
}

impl EventFilter {
    fn to_filter(&self, p: &Principal) -> async_graphql::Result<Filter> {
        let mut m = Map::new();
        let lists = [
            ("type", &self.kind),
            ("category", &self.category),
            ("source", &self.source),
            ("subject", &self.subject),
            ("tags", &self.tags),
        ];
        for (k, v) in lists {
            if let Some(v) = v {
                m.insert(k.into(), Value::from(v.clone()));
            }
        }
        if let Some(s) = &self.severity {
            m.insert("severity".into(), Value::from(s.clone()));
        }
        let f = Filter::from_json(&Value::Object(m)).map_err(gql)?;
        Ok(narrow(p, f))
    }
}

/// An event: the same fields as everywhere.
#[derive(SimpleObject)]
pub struct Event {
    seq: Seq,
    id: String,
    time: String,
    tenant: String,
    #[graphql(name = "type")]
    kind: String,
    source: String,
    category: Option<String>,
    severity: String,
    subject: Option<String>,
    actor: String,
    tags: Vec<String>,
    data: Option<Json<Value>>,
    metadata: Option<Json<Value>>,
    /// True only in the answer to `publish` with an `id` that exists: then `seq` is the
    /// stored event's and the rest is what was sent, without `data` and `metadata`.
    duplicate: bool,
}

impl From<&Committed> for Event {
    fn from(e: &Committed) -> Event {
        let v = e.to_value();
        let text = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        let json = |k: &str| match &v[k] {
            Value::Null => None,
            other => Some(Json(other.clone())),
        };
        Event {
            seq: Seq(e.seq),
            id: e.id.clone(),
            time: text("time"),
            tenant: e.tenant.clone(),
            kind: e.kind.clone(),
            source: e.source.clone(),
            category: e.category.clone(),
            severity: e.severity.as_str().to_string(),
            subject: e.subject.clone(),
            actor: text("actor"),
            tags: e.tags.clone(),
            data: json("data"),
            metadata: json("metadata"),
            duplicate: false,
        }
    }
}

/// An entity: its current version and value.
#[derive(SimpleObject)]
pub struct Entity {
    kind: String,
    id: String,
    version: i64,
    value: Json<Value>,
    created_at: String,
    updated_at: String,
}

impl From<&crier_core::entity::EntityRow> for Entity {
    fn from(r: &crier_core::entity::EntityRow) -> Entity {
        let j = r.to_json();
        Entity {
            kind: r.key.kind.clone(),
            id: r.key.id.clone(),
            version: r.version,
            value: Json(j["value"].clone()),
            created_at: j["created_at"].as_str().unwrap_or_default().to_string(),
            updated_at: j["updated_at"].as_str().unwrap_or_default().to_string(),
        }
    }
}

impl Entity {
    /// The answer of a write: the value only when the writer may read the kind (§12.5);
    /// otherwise JSON `null`, since the field is required.
    fn written(r: &crier_core::entity::EntityRow, readable: bool) -> Entity {
        let mut e = Entity::from(r);
        if !readable {
            e.value = Json(Value::Null);
        }
        e
    }
}

/// Whether the caller may read the values of entities of `kind`.
fn readable_kind(ctx: &Context<'_>, kind: &str) -> async_graphql::Result<bool> {
    let (_, p) = ctx_parts(ctx)?;
    Ok(crate::service::entities::may_read_kind(p, kind))
}

/// A typed link from one entity to another (`kind/id`).
#[derive(SimpleObject)]
pub struct Link {
    #[graphql(name = "type")]
    kind: String,
    source: String,
    target: String,
    metadata: Option<Json<Value>>,
}

fn limit_of(limit: Option<i32>, max: u64) -> async_graphql::Result<usize> {
    let l = i64::from(limit.unwrap_or(100));
    if l < 1 || l as u64 > max {
        return Err(bad(
            "invalid_query",
            format!("`limit` must be between 1 and {max}"),
        ));
    }
    Ok(l as usize)
}

fn object(field: &str, v: Json<Value>) -> async_graphql::Result<Map<String, Value>> {
    match v.0 {
        Value::Object(m) => Ok(m),
        _ => Err(bad(
            "invalid_entity",
            format!("`{field}` must be a JSON object"),
        )),
    }
}

fn cond(if_match: Option<i64>) -> Precondition {
    if_match.map_or(Precondition::None, Precondition::Version)
}

fn link_key(kind: &str, source: &str, target: &str) -> async_graphql::Result<LinkKey> {
    let s = EntityKey::parse("source", source).map_err(gql)?;
    let t = EntityKey::parse("target", target).map_err(gql)?;
    LinkKey::new(kind, s, t).map_err(gql)
}

/// Queries.
pub struct QueryRoot;

#[Object(name = "Query")]
impl QueryRoot {
    /// One entity, or null.
    async fn entity(
        &self,
        ctx: &Context<'_>,
        kind: String,
        id: String,
    ) -> async_graphql::Result<Option<Entity>> {
        let (state, p) = ctx_parts(ctx)?;
        let key = EntityKey::new(&kind, &id).map_err(gql)?;
        if !crate::service::entities::may_read_kind(p, &kind) {
            return Ok(None);
        }
        let row = state.entities.entity(&p.tenant, &key).await.map_err(gql)?;
        Ok(row.as_ref().map(Entity::from))
    }

    /// Entities of a kind by id, after `after`.
    #[graphql(complexity = "list_cost(limit, child_complexity)")]
    async fn entities(
        &self,
        ctx: &Context<'_>,
        kind: String,
        after: Option<String>,
        limit: Option<i32>,
    ) -> async_graphql::Result<Vec<Entity>> {
        let (state, p) = ctx_parts(ctx)?;
        crier_core::entity::check_kind("kind", &kind).map_err(gql)?;
        let limit = limit_of(limit, crier_core::entity::MAX_LIST as u64)?;
        if !crate::service::entities::may_read_kind(p, &kind) {
            return Ok(vec![]);
        }
        let rows = state
            .entities
            .entities(&p.tenant, &kind, after.as_deref(), limit)
            .await
            .map_err(gql)?;
        let bytes = rows.iter().map(|r| r.to_json().to_string().len()).sum();
        budget(ctx, state).charge(bytes).await.map_err(gql)?;
        Ok(rows.iter().map(Entity::from).collect())
    }

    /// History: events matching `filter` after `after`, oldest first.
    #[graphql(complexity = "list_cost(limit, child_complexity)")]
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilter>,
        after: Option<Seq>,
        limit: Option<i32>,
    ) -> async_graphql::Result<Vec<Event>> {
        let (state, p) = ctx_parts(ctx)?;
        let filter = filter.unwrap_or_default().to_filter(p)?;
        crate::reader_limits::check_filter(&state.settings.limits, &filter).map_err(gql)?;
        let limit = limit_of(limit, MAX_PAGE)?;
        let query = ReadQuery::after(
            Scope::Tenant(p.tenant.clone()),
            Arc::new(filter),
            after.map_or(0, |s| s.0),
            limit,
        );
        let events = budget(ctx, state)
            .read(
                state.log.as_ref(),
                query,
                state.settings.limits.max_event_bytes,
            )
            .await
            .map_err(gql)?;
        Ok(events.iter().map(|e| Event::from(e.as_ref())).collect())
    }
}

/// Mutations: the same rules and events as the REST paths.
pub struct MutationRoot;

async fn run(ctx: &Context<'_>, m: Mutation) -> async_graphql::Result<Outcome> {
    let (state, p) = ctx_parts(ctx)?;
    let applied = crate::service::entities::mutate(state, p, m)
        .await
        .map_err(gql)?;
    Ok(applied.outcome)
}

/// What `putEntity` and `patchEntity` share: the key `(kind, id)` and its precondition, the
/// JSON object argument `(name, value)`, applied as the mutation `make` builds.
async fn write_entity(
    ctx: &Context<'_>,
    (kind, id, cond): (&str, &str, Precondition),
    (field, v): (&str, Json<Value>),
    make: fn(EntityKey, Map<String, Value>, Precondition) -> Mutation,
) -> async_graphql::Result<Entity> {
    let key = EntityKey::new(kind, id).map_err(gql)?;
    let readable = readable_kind(ctx, &key.kind)?;
    let object = object(field, v)?;
    match run(ctx, make(key, object, cond)).await? {
        Outcome::Entity { row, .. } => Ok(Entity::written(&row, readable)),
        _ => Err(bad("internal", "unexpected outcome")),
    }
}

#[Object(name = "Mutation")]
impl MutationRoot {
    /// Creates or replaces an entity.
    async fn put_entity(
        &self,
        ctx: &Context<'_>,
        kind: String,
        id: String,
        value: Json<Value>,
        if_match: Option<i64>,
    ) -> async_graphql::Result<Entity> {
        let entity = (kind.as_str(), id.as_str(), cond(if_match));
        write_entity(ctx, entity, ("value", value), |key, value, cond| {
            Mutation::Put { key, value, cond }
        })
        .await
    }

    /// Applies a JSON Merge Patch to an entity.
    async fn patch_entity(
        &self,
        ctx: &Context<'_>,
        kind: String,
        id: String,
        patch: Json<Value>,
        if_match: Option<i64>,
    ) -> async_graphql::Result<Entity> {
        let entity = (kind.as_str(), id.as_str(), cond(if_match));
        write_entity(ctx, entity, ("patch", patch), |key, patch, cond| {
            Mutation::Patch { key, patch, cond }
        })
        .await
    }

    /// Deletes an entity and its links.
    async fn delete_entity(
        &self,
        ctx: &Context<'_>,
        kind: String,
        id: String,
        if_match: Option<i64>,
    ) -> async_graphql::Result<bool> {
        let key = EntityKey::new(&kind, &id).map_err(gql)?;
        run(
            ctx,
            Mutation::Delete {
                key,
                cond: cond(if_match),
            },
        )
        .await?;
        Ok(true)
    }

    /// Links two existing entities (`source` and `target` as `kind/id`).
    async fn link(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type")] kind: String,
        source: String,
        target: String,
        metadata: Option<Json<Value>>,
    ) -> async_graphql::Result<Link> {
        let key = link_key(&kind, &source, &target)?;
        let metadata = metadata.map_or(Value::Object(Map::new()), |j| j.0);
        match run(ctx, Mutation::Link { key, metadata }).await? {
            Outcome::Linked { row, .. } => Ok(Link {
                kind: row.key.kind.clone(),
                source: row.key.source.path(),
                target: row.key.target.path(),
                metadata: Some(Json(row.metadata)),
            }),
            _ => Err(bad("internal", "unexpected outcome")),
        }
    }

    /// Removes a link.
    async fn unlink(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type")] kind: String,
        source: String,
        target: String,
    ) -> async_graphql::Result<bool> {
        let key = link_key(&kind, &source, &target)?;
        run(ctx, Mutation::Unlink { key }).await?;
        Ok(true)
    }

    /// Publishes one event; answers it as stored. For an `id` that exists (§12.5) the answer
    /// is the stored `seq` with `duplicate: true` and the fields the caller sent, without
    /// `data` or `metadata`: never the stored event's content.
    async fn publish(&self, ctx: &Context<'_>, event: Json<Value>) -> async_graphql::Result<Event> {
        let (state, p) = ctx_parts(ctx)?;
        require(p, Role::Publisher).map_err(gql)?;
        let batch = prepare(state, p, vec![event.0], false).map_err(gql)?;
        let sent = batch
            .first()
            .cloned()
            .ok_or_else(|| bad("internal", "the batch is empty"))?;
        admit(state, &p.tenant, 1).map_err(gql)?;
        let results = append(state, batch).await.map_err(gql)?;
        let r = results
            .first()
            .ok_or_else(|| bad("internal", "the log answered nothing"))?;
        if r.duplicate {
            let seq = r.seq;
            let json = crier_core::Committed::encode(seq, &sent.tail);
            let ev = crier_core::Committed::from_new(sent, seq, json.into());
            let mut answer = Event::from(ev.as_ref());
            answer.data = None;
            answer.metadata = None;
            answer.duplicate = true;
            return Ok(answer);
        }
        let ev = state
            .log
            .get(&sent.tenant, &r.id)
            .await
            .map_err(gql)?
            .ok_or_else(|| gql(ApiError::not_found("the event was pruned at once")))?;
        Ok(Event::from(ev.as_ref()))
    }
}

/// Subscriptions.
pub struct SubscriptionRoot;

/// A subscription's cursor. Its credential is watched by the socket it runs on, which
/// closes (ending every subscription) when the credential ends.
struct EventStream {
    cursor: crier_core::Cursor,
    /// The hub's shutdown through a token of the stream's own, one wait for its life.
    shutdown: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    sent_total: metrics::Counter,
    done: bool,
    /// The subscription's reader in the connection registry (none over POST).
    reader: Option<crate::monitor::ReaderSlot>,
    /// The subscription's place on its WebSocket (none over POST).
    _slot: Option<crate::reader_limits::SlotGuard>,
}

#[Subscription(name = "Subscription")]
impl SubscriptionRoot {
    /// Events matching `filter`: those after `after` from the log first (when given), then
    /// live, in seq order, each once.
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilter>,
        after: Option<Seq>,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<Event>>> {
        let (state, p) = ctx_parts(ctx)?;
        let filter = filter.unwrap_or_default().to_filter(p)?;
        crate::reader_limits::check_filter(&state.settings.limits, &filter).map_err(gql)?;
        let slot = ctx
            .data_opt::<Arc<crate::reader_limits::SubscriptionSlots>>()
            .map(|s| s.acquire(state.settings.limits.max_subscriptions_per_connection))
            .transpose()
            .map_err(gql)?;
        let filter = Arc::new(filter);
        let start = after.map_or(Start::Live, |s| Start::After(s.0));
        let queue = state.settings.limits.queue_per_connection;
        let (cursor, _) = state
            .hub
            .open(
                Scope::Tenant(p.tenant.clone()),
                filter.clone(),
                start,
                queue,
            )
            .await
            .map_err(gql)?;
        let reader = ctx
            .data_opt::<Arc<crate::state::ConnGuard>>()
            .map(|g| g.info().reader(None, &filter, cursor.position()));
        let sub = EventStream {
            cursor,
            shutdown: Box::pin(state.shutdown.child_token().cancelled_owned()),
            sent_total: metrics::counter!("crier_stream_events_sent_total", "transport" => "graphql"),
            done: false,
            reader,
            _slot: slot,
        };
        Ok(futures_util::stream::unfold(sub, next_item))
    }
}

async fn next_item(mut s: EventStream) -> Option<(async_graphql::Result<Event>, EventStream)> {
    if s.done {
        return None;
    }
    if let Some(r) = &s.reader {
        // Waiting on a live cursor with nothing buffered: caught up (lag 0).
        r.waiting(s.cursor.is_live());
    }
    tokio::select! {
        biased;
        () = s.shutdown.as_mut() => None,
        item = s.cursor.next() => {
            if let (Some(r), Ok(i)) = (&s.reader, &item) {
                r.sent(i);
            }
            match item {
                Ok(CursorItem::Event(e)) => {
                    s.sent_total.increment(1);
                    Some((Ok(Event::from(e.as_ref())), s))
                }
                Ok(CursorItem::Reset(r)) => {
                    let j = r.to_json();
                    let err = GqlError::new(format!("the stream was reset: {j}")).extend_with(|_, ext| {
                        ext.set("code", "reset");
                        if let Value::Object(m) = &j {
                            for (k, v) in m {
                                if let Ok(v) = GqlValue::from_json(v.clone()) {
                                    ext.set(k.as_str(), v);
                                }
                            }
                        }
                    });
                    Some((Err(err), s))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "GraphQL subscription ended: the log could not be read");
                    s.done = true;
                    Some((Err(gql(e)), s))
                }
            }
        }
    }
}

/// `POST /graphql`: one request or a batch, JSON, within `max_body_bytes`.
pub async fn http(
    State(state): State<AppState>,
    Auth(principal): Auth,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    let mime = crate::transport::essence(ct);
    if mime != "application/json" && mime != "application/graphql-response+json" {
        return Err(ApiError::new(
            axum::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("send GraphQL requests as application/json, not {mime:?}"),
        ));
    }
    let max = state.settings.limits.max_body_bytes;
    let bytes: Bytes = axum::body::to_bytes(body, max).await.map_err(|_| {
        ApiError::too_large(
            "body_too_large",
            format!("the request body is larger than {max} bytes (limits.max_body_bytes)"),
        )
    })?;
    let batch: async_graphql::BatchRequest =
        crier_core::strict_json::parse(&bytes).map_err(|e| {
            ApiError::bad(
                "invalid_json",
                format!("not a GraphQL request (`{{\"query\": ...}}`): {e}"),
            )
        })?;
    let n = match &batch {
        async_graphql::BatchRequest::Single(_) => 1,
        async_graphql::BatchRequest::Batch(v) => v.len(),
    };
    let queries: Vec<&str> = match &batch {
        async_graphql::BatchRequest::Single(r) => vec![r.query.as_str()],
        async_graphql::BatchRequest::Batch(v) => v.iter().map(|r| r.query.as_str()).collect(),
    };
    if let Some(f) = queries
        .iter()
        .find_map(|q| crate::graphql::strict::repeated_field(q))
    {
        return Err(ApiError::bad(
            "invalid_json",
            format!("an input object in the document repeats the field `{f}`"),
        ));
    }
    let most = state.settings.limits.graphql_max_batch;
    if n > most {
        metrics::counter!("crier_limit_hits_total", "limit" => "graphql_max_batch").increment(1);
        return Err(ApiError::too_large(
            "batch_too_large",
            format!("{n} operations in one request; at most {most} are allowed (limits.graphql_max_batch)"),
        ));
    }
    // One budget for the whole batch: its operations load `max_response_bytes` together.
    let budget = ResponseBudget::new(state.settings.limits.max_response_bytes);
    let schema = state.graphql.clone();
    let res = schema
        .execute_batch(batch.data(principal).data(state.clone()).data(budget))
        .await;
    metrics::counter!("crier_graphql_requests_total").increment(1);
    Ok(axum::Json(res).into_response())
}

pub use crate::graphql::ws::websocket;

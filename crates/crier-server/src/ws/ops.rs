//! The `/v1/ws` ops (§5), one method each on the connection: `auth`, `subscribe`,
//! `unsubscribe`, `publish`, `history`, `replay` and `replay_stop`. Each gets its op's typed
//! fields ([`super::protocol`]), calls the services, and answers with a frame or an
//! [`OpError`]; the long-running work (a subscription's cursor, a replay, the publish queue)
//! goes to the connection's tasks ([`super::tasks`]).

use std::sync::Arc;

use axum::extract::ws::Message;
use crier_core::{ReadQuery, Role};
use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::connection::{Conn, LiveSub};
use super::protocol::{self, reply, text, OpError};
use super::tasks::{publish_loop, replay_loop, sub_stream, Out};
use super::PUBLISH_QUEUE;
use crate::auth::{narrow, require};
use crate::error::ApiError;
use crate::service::history::{self, json_array, MAX_PAGE};
use crate::service::replays::{ReplaySpec, Speed};
use crate::transport::start_position;

/// The value of an op's required field `name`.
fn required<T>(v: Option<T>, name: &str) -> Result<T, OpError> {
    v.ok_or_else(|| OpError::invalid(format!("`{name}` is required")))
}

impl Conn {
    pub(super) async fn auth(
        &mut self,
        m: protocol::Auth,
        r: Option<&Value>,
    ) -> Result<Option<Message>, OpError> {
        let settings = &self.state.settings.auth;
        if !settings.enabled {
            return Err(OpError(
                "auth_not_configured",
                "this hub runs without authentication; there is nothing to refresh".into(),
            ));
        }
        let token = m
            .token
            .ok_or_else(|| OpError::invalid("`token` is required"))?;
        let p = settings
            .authenticate(self.state.keys.as_ref(), &token)
            .await?;
        if p.tenant != self.principal.tenant {
            return Err(OpError(
                "tenant_mismatch",
                "a refreshed credential must belong to the connection's tenant".into(),
            ));
        }
        // The connection's subscriptions and replays were narrowed by the credential's
        // `subscribe` patterns when they began (§12.5): a refresh may not narrow further,
        // or they would go on delivering what the new credential may not read.
        if p.subscribe.is_some() && p.subscribe != self.principal.subscribe {
            return Err(OpError(
                "forbidden",
                "a refreshed credential with `subscribe` patterns must carry the connection's own patterns; reconnect with it instead".into(),
            ));
        }
        let exp = p.expires_at;
        self.info.set_actor(&p.subject);
        self.principal = p;
        let fields = Map::from_iter([("exp".into(), exp.map_or(Value::Null, Value::from))]);
        Ok(Some(reply("authed", r, fields)))
    }

    pub(super) async fn replay(
        &mut self,
        m: protocol::Replay,
        r: Option<&Value>,
    ) -> Result<Option<Message>, OpError> {
        let spec = ReplaySpec {
            filter: crate::service::filters::from_json(
                &self.state,
                &self.principal.tenant,
                m.filter.as_ref(),
            )
            .await?,
            since: m.since,
            until: m.until,
            speed: Speed::parse(m.speed.as_ref())?,
        };
        let replay = self
            .state
            .replays
            .create(&self.state, &self.principal, spec)
            .await?;
        replay.mark_streamed();
        let started = Map::from_iter([
            ("replay".into(), replay.id.clone().into()),
            ("total".into(), replay.total.into()),
        ]);
        let _ = self
            .out
            .send(reply("replay_started", r, started).into())
            .await;
        let task = tokio::spawn(replay_loop(
            self.state.clone(),
            replay.clone(),
            self.out.clone(),
        ));
        self.replays.retain(|_, (_, t)| !t.is_finished());
        self.replays.insert(replay.id.clone(), (replay, task));
        Ok(None)
    }

    pub(super) async fn replay_stop(
        &mut self,
        m: protocol::ReplayStop,
        r: Option<&Value>,
    ) -> Result<Option<Message>, OpError> {
        let id = required(m.replay, "replay")?;
        let id = id.as_str();
        if let Some((replay, task)) = self.replays.remove(id) {
            // The replay's task answers with its final status once it has stopped.
            replay.stop();
            let _ = task.await;
            return Ok(None);
        }
        let replay = self.state.replays.get(&self.principal.tenant, id)?;
        replay.stop();
        let Value::Object(mut status) = replay.status_for(&self.principal) else {
            return Ok(None);
        };
        let id = status.remove("id").unwrap_or(Value::Null);
        status.insert("replay".into(), id);
        Ok(Some(reply("replay_status", r, status)))
    }

    pub(super) async fn subscribe(
        &mut self,
        m: protocol::Subscribe,
        r: Option<&Value>,
    ) -> Result<Option<Message>, OpError> {
        let id = required(m.id, "id")?;
        let id = id.as_str();
        if id.is_empty() || id.len() > 128 || id.chars().any(char::is_control) {
            return Err(OpError(
                "invalid_message",
                "`id` has 1 to 128 characters and no control characters".into(),
            ));
        }
        if self.subs.contains_key(id) {
            return Err(OpError(
                "duplicate_subscription",
                format!("a subscription {id:?} already exists on this connection"),
            ));
        }
        let max = self.state.settings.limits.max_subscriptions_per_connection;
        if self.subs.len() >= max {
            metrics::counter!("crier_limit_hits_total", "limit" => "max_subscriptions_per_connection").increment(1);
            return Err(OpError(
                "too_many_subscriptions",
                format!("a connection holds at most {max} subscriptions (limits.max_subscriptions_per_connection)"),
            ));
        }
        let (scope, filter) = crate::service::filters::from_op(
            &self.state,
            &self.principal,
            m.tenant.as_deref(),
            m.filter.as_ref(),
        )
        .await?;
        crate::reader_limits::check_filter(&self.state.settings.limits, &filter)?;
        let start = start_position(None, m.after, m.last)?;
        let queue = self.state.settings.limits.queue_per_connection;
        // `head` is the one the cursor opened at: a live subscription sends every matching
        // event above it, so a client that saw nothing yet can resume after it without a gap
        // (the hub's head read afterwards could already be past events this cursor sends).
        let filter = Arc::new(narrow(&self.principal, filter));
        let (cursor, head) = self
            .state
            .hub
            .open(scope, filter.clone(), start, queue)
            .await
            .map_err(ApiError::from)?;
        let reader = self.info.reader(Some(id), &filter, cursor.position());
        // `subscribed` goes through the outbound queue before the subscription, so it
        // precedes the subscription's first event.
        let subscribed = reply(
            "subscribed",
            r,
            Map::from_iter([("id".into(), id.into()), ("head".into(), head.into())]),
        );
        let (stream, stop) = sub_stream(id, cursor, reader);
        let _ = self.out.send(subscribed.into()).await;
        let _ = self.out.send(Out::Subscribe(stream)).await;
        self.subs.insert(id.to_string(), LiveSub { stop });
        Ok(None)
    }

    pub(super) async fn unsubscribe(
        &mut self,
        m: protocol::Unsubscribe,
        r: Option<&Value>,
    ) -> Result<Option<Message>, OpError> {
        let id = required(m.id, "id")?;
        let id = id.as_str();
        let sub = self.subs.remove(id).ok_or_else(|| {
            OpError(
                "unknown_subscription",
                format!("no subscription {id:?} on this connection"),
            )
        })?;
        // Stopped before `unsubscribed` is queued: no event of it follows the answer.
        sub.stop();
        Ok(Some(reply(
            "unsubscribed",
            r,
            Map::from_iter([("id".into(), id.into())]),
        )))
    }

    pub(super) async fn publish(
        &mut self,
        m: protocol::Publish,
        r: Option<Value>,
    ) -> Result<Option<Message>, OpError> {
        require(&self.principal, Role::Publisher)?;
        let event = required(m.event, "event")?;
        // Sent to the connection's publish task: committed in the order sent, answered once durable.
        let (tx, _) = self.publisher.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel(PUBLISH_QUEUE);
            (
                tx,
                tokio::spawn(publish_loop(self.state.clone(), rx, self.out.clone())),
            )
        });
        let _ = tx.send(Box::new((r, event, self.principal.clone()))).await;
        Ok(None)
    }

    pub(super) async fn history(
        &mut self,
        m: protocol::History,
        r: Option<&Value>,
    ) -> Result<Option<Message>, OpError> {
        let (scope, filter) = crate::service::filters::from_op(
            &self.state,
            &self.principal,
            m.tenant.as_deref(),
            m.filter.as_ref(),
        )
        .await?;
        crate::reader_limits::check_filter(&self.state.settings.limits, &filter)?;
        let limit = m.limit.unwrap_or(100);
        if limit == 0 || limit > MAX_PAGE {
            return Err(OpError(
                "invalid_message",
                format!("`limit` must be between 1 and {MAX_PAGE}"),
            ));
        }
        let now = crier_core::event::now_us();
        let time = |key: &str, v: Option<&str>| -> Result<Option<i64>, OpError> {
            v.map(|s| {
                crier_core::event::parse_time_or_ago_us(s, now).ok_or_else(|| {
                    OpError(
                        "invalid_message",
                        format!(
                            "`{key}` must be an RFC 3339 time or a duration before now \
                                 like 15m"
                        ),
                    )
                })
            })
            .transpose()
        };
        let mut query = ReadQuery::after(
            scope,
            Arc::new(narrow(&self.principal, filter)),
            m.after.unwrap_or(0),
            limit as usize,
        );
        query.since_us = time("since", m.since.as_deref())?;
        query.until_us = time("until", m.until.as_deref())?;
        let (events, next) = history::read(&self.state, query).await?;
        let mut s = String::from("{\"op\":\"history\",");
        if let Some(r) = r {
            s.push_str("\"ref\":");
            s.push_str(&r.to_string());
            s.push(',');
        }
        s.push_str("\"events\":");
        s.push_str(&String::from_utf8_lossy(&json_array(&events)));
        s.push_str(",\"next_after\":");
        s.push_str(&next.map_or("null".to_string(), |n| n.to_string()));
        s.push('}');
        Ok(Some(text(s)))
    }
}

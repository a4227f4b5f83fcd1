//! What a Pusher client asks over its socket (subscribe, unsubscribe, client events, pings),
//! and how Pusher-triggered events enter the log.

use std::sync::Arc;

use crier_core::{Principal, PublishContext, Role};
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::{Conn, Joined, CLIENT_EVENTS_PER_S};
use crate::error::ApiError;
use crate::pusher::apps::App;
use crate::pusher::protocol::{self, Data, Kind, Trigger};
use crate::pusher::Sub;
use crate::state::AppState;

/// Members of one presence channel (Pusher's limit).
const MAX_MEMBERS: usize = 100;
/// Largest presence `user_info`, in bytes (Pusher's limit).
const MAX_USER_INFO: usize = 1024;

impl Conn {
    /// Answers one client frame; `None` when the answer goes through the queue (or there is none).
    pub(super) async fn handle(&mut self, raw: &str) -> Option<String> {
        let mut m = match crier_core::strict_json::from_str(raw) {
            Ok(Value::Object(m)) => m,
            Ok(_) => {
                return Some(protocol::error_frame(
                    None,
                    "a message is a JSON object with an \"event\"",
                ))
            }
            Err(e) => {
                return Some(protocol::error_frame(
                    None,
                    &format!("a message is a JSON object with an \"event\": {e}"),
                ))
            }
        };
        let Some(Value::String(event)) = m.remove("event") else {
            return Some(protocol::error_frame(
                None,
                "a message needs an \"event\" string",
            ));
        };
        let data = m.remove("data").unwrap_or(Value::Null);
        match event.as_str() {
            "pusher:ping" => Some(json!({"event": "pusher:pong", "data": "{}"}).to_string()),
            "pusher:pong" => None,
            "pusher:subscribe" => self.subscribe(object(data)).await,
            "pusher:unsubscribe" => {
                let data = object(data);
                if let Some(ch) = data.get("channel").and_then(Value::as_str) {
                    if self.channels.remove(ch).is_some() {
                        self.leave(ch);
                    }
                }
                None
            }
            e if e.starts_with("client-") => {
                let channel = m.get("channel").and_then(Value::as_str).unwrap_or("");
                self.client_event(&event, channel.to_string(), data).await
            }
            other => Some(protocol::error_frame(
                None,
                &format!("unsupported event {other:?}"),
            )),
        }
    }

    async fn subscribe(&mut self, data: Map<String, Value>) -> Option<String> {
        let Some(channel) = data.get("channel").and_then(Value::as_str) else {
            return Some(protocol::error_frame(
                None,
                "pusher:subscribe needs data.channel",
            ));
        };
        let channel = channel.to_string();
        if !protocol::valid_channel(&channel) {
            return Some(protocol::subscription_error(
                &channel,
                "InvalidChannel",
                "Invalid channel name: 1 to 164 characters of a-z A-Z 0-9 - _ = @ , . ;",
                400,
            ));
        }
        if self.channels.contains_key(&channel) {
            // Subscribing again changes nothing; the client already had its answer.
            return None;
        }
        let max = self.state.settings.limits.max_subscriptions_per_connection;
        if self.channels.len() >= max {
            metrics::counter!("crier_limit_hits_total", "limit" => "max_subscriptions_per_connection").increment(1);
            return Some(protocol::subscription_error(
                &channel,
                "LimitReached",
                &format!("a connection holds at most {max} channels (limits.max_subscriptions_per_connection)"),
                400,
            ));
        }
        let kind = Kind::of(&channel);
        let auth = data.get("auth").and_then(Value::as_str).unwrap_or("");
        let channel_data = data.get("channel_data").and_then(Value::as_str);
        let mut member = None;
        match kind {
            Kind::Public => {}
            Kind::Private | Kind::Presence => {
                let signed = if kind == Kind::Presence {
                    channel_data
                } else {
                    None
                };
                if kind == Kind::Presence && channel_data.is_none() {
                    return Some(protocol::subscription_error(
                        &channel,
                        "AuthError",
                        "a presence subscription needs channel_data",
                        401,
                    ));
                }
                if !protocol::verify_channel_auth(
                    &self.app,
                    &self.socket_id,
                    &channel,
                    signed,
                    auth,
                ) {
                    return Some(protocol::subscription_error(
                        &channel,
                        "AuthError",
                        &format!(
                            "Invalid signature: expected HMAC SHA256 hex digest of {}:{}{}, signed with the app's secret, after the key and a colon",
                            self.socket_id,
                            channel,
                            if kind == Kind::Presence { ":<channel_data>" } else { "" }
                        ),
                        401,
                    ));
                }
                if kind == Kind::Presence {
                    match presence_member(channel_data.unwrap_or("")) {
                        Ok(m) => member = Some(m),
                        Err(msg) => {
                            return Some(protocol::subscription_error(
                                &channel,
                                "InvalidChannelData",
                                &msg,
                                400,
                            ))
                        }
                    }
                }
            }
        }
        let user_id: Option<Arc<str>> = member.as_ref().map(|(u, _)| Arc::from(u.as_str()));
        if kind == Kind::Presence {
            let info = self.state.pusher.info(&self.app.tenant, &channel);
            let known = user_id.as_deref().is_some_and(|u| {
                self.state
                    .pusher
                    .users(&self.app.tenant, &channel)
                    .iter()
                    .any(|x| x == u)
            });
            if info.user_count >= MAX_MEMBERS && !known {
                return Some(protocol::subscription_error(
                    &channel,
                    "LimitReached",
                    &format!("a presence channel holds at most {MAX_MEMBERS} members"),
                    400,
                ));
            }
        }
        let sub = Sub {
            socket_id: self.socket_id.clone(),
            tx: self.tx.clone(),
            evict: self.evict.clone(),
            user_id: user_id.clone(),
        };
        let (occupied, new_user) = self.state.pusher.join(
            &self.app.id,
            &self.app.tenant,
            &channel,
            sub,
            member.map(|(_, info)| info),
        );
        let hooks = &self.state.pusher.hooks;
        if occupied {
            let e = json!({"name": "channel_occupied", "channel": &channel});
            hooks.send(&self.state, &self.app, e);
        }
        if let (true, Some(u)) = (new_user, &user_id) {
            let e = json!({"name": "member_added", "channel": &channel, "user_id": &**u});
            hooks.send(&self.state, &self.app, e);
        }
        self.info.joined(&channel, user_id.as_deref());
        self.channels.insert(channel, Joined { kind, user_id });
        None
    }

    pub(super) fn leave(&self, channel: &str) {
        self.info.left(channel);
        let (vacated, removed) =
            self.state
                .pusher
                .leave(&self.app.tenant, channel, &self.socket_id);
        let hooks = &self.state.pusher.hooks;
        if let Some(u) = removed {
            let e = json!({"name": "member_removed", "channel": channel, "user_id": &*u});
            hooks.send(&self.state, &self.app, e);
        }
        if vacated {
            let e = json!({"name": "channel_vacated", "channel": channel});
            hooks.send(&self.state, &self.app, e);
        }
    }

    async fn client_event(&mut self, event: &str, channel: String, data: Value) -> Option<String> {
        let Some(joined) = self.channels.get(&channel) else {
            return Some(protocol::error_frame(
                None,
                &format!("Client event rejected: not subscribed to channel {channel:?}"),
            ));
        };
        if joined.kind == Kind::Public {
            return Some(protocol::error_frame(
                None,
                "Client event rejected: only supported on private and presence channels",
            ));
        }
        if !self.app.client_events {
            return Some(protocol::error_frame(
                None,
                "Client event rejected: client events are not enabled for this app (client_events)",
            ));
        }
        if !protocol::valid_event(event) {
            return Some(protocol::error_frame(
                None,
                "Client event rejected: event names have 1 to 200 characters",
            ));
        }
        let now = Instant::now();
        let elapsed_ms =
            u64::try_from(now.duration_since(self.bucket.1).as_millis()).unwrap_or(u64::MAX);
        let refill = elapsed_ms.saturating_mul(u64::from(CLIENT_EVENTS_PER_S)) / 1000;
        if refill > 0 {
            let tokens = u64::from(self.bucket.0).saturating_add(refill);
            self.bucket = (tokens.min(u64::from(CLIENT_EVENTS_PER_S)) as u32, now);
        }
        if self.bucket.0 == 0 {
            metrics::counter!("crier_limit_hits_total", "limit" => "pusher_client_events")
                .increment(1);
            return Some(protocol::error_frame(
                Some(4301),
                &format!("Client event rejected due to rate limit: at most {CLIENT_EVENTS_PER_S} per second"),
            ));
        }
        self.bucket.0 -= 1;
        let data = match data {
            Value::String(s) => Data::Text(s),
            v => Data::Json(v),
        };
        if data.len() > self.app.max_data_bytes {
            return Some(protocol::error_frame(
                None,
                &format!(
                    "Client event rejected: data is {} bytes; the limit is {} bytes",
                    data.len(),
                    self.app.max_data_bytes
                ),
            ));
        }
        let user_id = joined.user_id.clone();
        let actor = match &user_id {
            Some(u) => format!("pusher:{u}"),
            None => format!("pusher:{}", self.socket_id),
        };
        let t = Trigger {
            channel: &channel,
            name: event,
            data: &data,
            exclude: Some(&self.socket_id),
            user_id: user_id.as_deref(),
        };
        match publish(&self.state, &self.app, actor, vec![protocol::to_input(&t)]).await {
            Ok(()) => {
                let mut e = json!({
                    "name": "client_event",
                    "channel": &channel,
                    "event": event,
                    "data": match &data { Data::Text(s) => s.clone(), Data::Json(v) => v.to_string() },
                    "socket_id": &*self.socket_id,
                });
                if let Some(u) = &user_id {
                    e["user_id"] = Value::from(&**u);
                }
                self.state.pusher.hooks.send(&self.state, &self.app, e);
                None
            }
            Err(e) => Some(protocol::error_frame(
                None,
                &format!("Client event rejected: {}", e.message),
            )),
        }
    }
}

/// `data` of a client frame as an object (pusher-js sends objects; some clients send a JSON
/// string).
fn object(data: Value) -> Map<String, Value> {
    match data {
        Value::Object(m) => m,
        Value::String(s) => match crier_core::strict_json::from_str(&s) {
            Ok(Value::Object(m)) => m,
            _ => Map::new(),
        },
        _ => Map::new(),
    }
}

/// The `(user_id, user_info)` of a presence subscription's `channel_data`.
fn presence_member(channel_data: &str) -> Result<(String, Value), String> {
    let mut m = match crier_core::strict_json::from_str(channel_data) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err("channel_data must be a JSON object with a user_id".into()),
        Err(e) => return Err(format!("channel_data is not valid JSON: {e}")),
    };
    let user_id = match m.remove("user_id") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => s,
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(
                "channel_data.user_id must be a string of 1 to 128 characters or a number".into(),
            )
        }
    };
    let info = m.remove("user_info").unwrap_or(Value::Null);
    if info.to_string().len() > MAX_USER_INFO {
        return Err(format!(
            "channel_data.user_info is larger than {MAX_USER_INFO} bytes"
        ));
    }
    Ok((user_id, info))
}

/// Appends Pusher-triggered events to the app's tenant log, as `actor`, with the tenant's
/// publish rate. The source `pusher` is the hub's own, so no credential's patterns apply.
pub async fn publish(
    state: &AppState,
    app: &App,
    actor: String,
    inputs: Vec<crier_core::EventInput>,
) -> Result<(), ApiError> {
    let principal = Principal {
        tenant: app.tenant.clone(),
        role: Role::Publisher,
        subject: actor,
        subscribe: None,
        publish: None,
        expires_at: None,
        key_hash: None,
    };
    state.check_rate(&app.tenant, inputs.len())?;
    let ctx = PublishContext {
        principal: &principal,
        max_event_bytes: state.settings.limits.max_event_bytes,
        now_us: crier_core::event::now_us(),
    };
    let batch = inputs
        .into_iter()
        .map(|i| i.validate(&ctx).map_err(ApiError::from))
        .collect::<Result<Vec<_>, _>>()?;
    metrics::counter!("crier_publish_requests_total", "transport" => "pusher").increment(1);
    crate::service::publish::append(state, batch).await?;
    Ok(())
}

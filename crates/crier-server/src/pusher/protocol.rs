//! The Pusher wire format: name rules, signatures as the SDKs make them, frames, and the
//! mapping between a Pusher event and a crier event of the log (§13).
//!
//! Kept free of I/O so the rules that clients and SDKs depend on byte for byte are in one
//! place and tested directly.

use crier_core::{Committed, EventInput};
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::Sha256;

use super::apps::App;

/// The event `source` of everything triggered through Pusher.
pub const SOURCE: &str = "pusher";
/// The `type` of events whose Pusher name does not fit crier's type rule.
pub const FALLBACK_TYPE: &str = "pusher.event";
/// Longest channel name.
pub const MAX_CHANNEL: usize = 164;
/// Longest event name.
pub const MAX_EVENT: usize = 200;

/// Whether `name` is a valid channel name: `[-a-zA-Z0-9_=@,.;]`, 1 to 164 characters.
pub fn valid_channel(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CHANNEL
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=@,.;".contains(&b))
}

/// Whether `name` is a valid event name: 1 to 200 characters.
pub fn valid_event(name: &str) -> bool {
    !name.is_empty() && name.chars().count() <= MAX_EVENT
}

/// The kind of a channel, from its prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No authorization.
    Public,
    /// `private-` and `private-encrypted-` (the hub never sees plaintext).
    Private,
    /// `presence-`.
    Presence,
}

impl Kind {
    /// The kind of `channel`.
    pub fn of(channel: &str) -> Kind {
        if channel.starts_with("presence-") {
            Kind::Presence
        } else if channel.starts_with("private-") {
            Kind::Private
        } else {
            Kind::Public
        }
    }
}

fn mac(secret: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length; this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"))
}

/// Lower-case hex HMAC-SHA256 of `msg` under `secret`: Pusher's signature everywhere.
pub fn sign(secret: &str, msg: &[u8]) -> String {
    let mut m = mac(secret);
    m.update(msg);
    hex(&m.finalize().into_bytes())
}

/// What a Pusher HTTP API request signs: `METHOD\npath\nk=v&...`, over the query's pairs
/// (keys as given, `auth_signature` already left out) in sorted order.
pub fn string_to_sign(method: &str, path: &str, pairs: &mut [(&str, &str)]) -> String {
    pairs.sort_unstable();
    let query = pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    format!("{method}\n{path}\n{query}")
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let digit = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.as_bytes()
        .chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

/// Checks a hex signature of `msg` in constant time.
pub fn verify(secret: &str, msg: &[u8], signature_hex: &str) -> bool {
    let Some(sig) = unhex(signature_hex) else {
        return false;
    };
    let mut m = mac(secret);
    m.update(msg);
    m.verify_slice(&sig).is_ok()
}

/// Checks a subscription's `auth` (`key:signature`) as `authorizeChannel` signs it:
/// `socket_id:channel` or, for presence, `socket_id:channel:channel_data`.
pub fn verify_channel_auth(
    app: &App,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    let Some((key, sig)) = auth.split_once(':') else {
        return false;
    };
    if key != app.key {
        return false;
    }
    let msg = match channel_data {
        Some(d) => format!("{socket_id}:{channel}:{d}"),
        None => format!("{socket_id}:{channel}"),
    };
    verify(&app.secret, msg.as_bytes(), sig)
}

/// A frame naming an event on a channel, with `data` already encoded as JSON.
pub fn channel_frame(event: &str, channel: &str, data_json: &str, user_id: Option<&str>) -> String {
    let mut s = String::with_capacity(data_json.len() + channel.len() + event.len() + 48);
    s.push_str("{\"event\":");
    s.push_str(&Value::from(event).to_string());
    s.push_str(",\"channel\":");
    s.push_str(&Value::from(channel).to_string());
    s.push_str(",\"data\":");
    s.push_str(data_json);
    if let Some(u) = user_id {
        s.push_str(",\"user_id\":");
        s.push_str(&Value::from(u).to_string());
    }
    s.push('}');
    s
}

/// `pusher:error` with a code (`None` for errors that do not close the connection).
pub fn error_frame(code: Option<u16>, message: &str) -> String {
    json!({"event": "pusher:error", "data": {"code": code, "message": message}}).to_string()
}

/// `pusher:subscription_error` naming the channel, so pusher-js and Echo error handlers fire.
pub fn subscription_error(channel: &str, kind: &str, error: &str, status: u16) -> String {
    json!({
        "event": "pusher:subscription_error",
        "channel": channel,
        "data": {"type": kind, "error": error, "status": status},
    })
    .to_string()
}

/// How a triggered event's `data` arrived.
#[derive(Debug, Clone)]
pub enum Data {
    /// A string: the HTTP API's `data`, or a client event whose data is a string. Subscribers
    /// get exactly this string.
    Text(String),
    /// A client event whose data is a JSON object, array, number, … : forwarded as that value.
    Json(Value),
}

impl Data {
    /// Bytes counted against the app's data limit.
    pub fn len(&self) -> usize {
        match self {
            Data::Text(s) => s.len(),
            Data::Json(v) => v.to_string().len(),
        }
    }

    /// Whether it is empty (never for a JSON value).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The string a Pusher subscriber gets for a stored `data` when no exact copy was kept: a
/// string as itself, anything else as its compact JSON.
fn derived_text(data: &Value) -> String {
    match data {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What is needed to write one Pusher-triggered event to the log.
pub struct Trigger<'a> {
    /// The channel (becomes the subject).
    pub channel: &'a str,
    /// The Pusher event name.
    pub name: &'a str,
    /// The data.
    pub data: &'a Data,
    /// A socket that must not receive it (the sender of a client event, or `socket_id`).
    pub exclude: Option<&'a str>,
    /// The presence user of a client event.
    pub user_id: Option<&'a str>,
}

/// The crier event of a Pusher trigger (§13): subject = channel, source `pusher`, type = the
/// name when it fits crier's type rule and is not one of the hub's own `crier.*` types
/// (§12.11; else `pusher.event` with `metadata.pusher_event`),
/// data parsed as JSON when it is JSON. Metadata keeps what Pusher subscribers need on every
/// node: the excluded socket, the presence user, and the exact data string when the parsed
/// form would not give it back byte for byte.
pub fn to_input(t: &Trigger<'_>) -> EventInput {
    let mut meta = Map::new();
    let kind = if crier_core::event::check_type("type", t.name).is_ok()
        && !crate::service::publish::reserved_type(t.name)
    {
        t.name.to_string()
    } else {
        meta.insert("pusher_event".into(), t.name.into());
        FALLBACK_TYPE.to_string()
    };
    let data = match t.data {
        Data::Text(s) => {
            let parsed =
                serde_json::from_str::<Value>(s).unwrap_or_else(|_| Value::from(s.as_str()));
            if derived_text(&parsed) != *s {
                meta.insert("pusher_data".into(), s.as_str().into());
            }
            parsed
        }
        Data::Json(v) => {
            meta.insert("pusher_data_json".into(), true.into());
            v.clone()
        }
    };
    if let Some(s) = t.exclude {
        meta.insert("pusher_socket_id".into(), s.into());
    }
    if let Some(u) = t.user_id {
        meta.insert("pusher_user_id".into(), u.into());
    }
    EventInput {
        kind: Some(kind),
        source: Some(SOURCE.into()),
        subject: Some(t.channel.to_string()),
        data: Some(data),
        metadata: Some(Value::Object(meta)),
        ..EventInput::default()
    }
}

/// How a committed event reaches Pusher subscribers of its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    /// The frame, ready to send.
    pub frame: String,
    /// The socket it must skip.
    pub exclude: Option<String>,
}

/// The Pusher frame of a committed event whose subject is `channel`: for events triggered
/// through Pusher the name and data string exactly as triggered; for native events the type
/// (or `metadata.pusher_event`) and the event's `data` as a JSON string.
pub fn outgoing(ev: &Committed, channel: &str) -> Option<Outgoing> {
    let v: Value = serde_json::from_slice(&ev.json).ok()?;
    let empty = Map::new();
    let meta = v
        .get("metadata")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let meta_str = |k: &str| meta.get(k).and_then(Value::as_str);
    let name = match (ev.kind.as_str(), meta_str("pusher_event")) {
        (FALLBACK_TYPE, Some(n)) => n,
        (k, _) => k,
    };
    let data = v.get("data").unwrap_or(&Value::Null);
    let pusher = ev.source == SOURCE;
    let data_json = if pusher && meta.get("pusher_data_json") == Some(&Value::Bool(true)) {
        data.to_string()
    } else if pusher {
        let text = match meta_str("pusher_data") {
            Some(s) => s.to_string(),
            None => derived_text(data),
        };
        Value::from(text).to_string()
    } else {
        Value::from(data.to_string()).to_string()
    };
    let user = if pusher {
        meta_str("pusher_user_id")
    } else {
        None
    };
    Some(Outgoing {
        frame: channel_frame(name, channel, &data_json, user),
        exclude: if pusher {
            meta_str("pusher_socket_id").map(String::from)
        } else {
            None
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crier_core::{Principal, PublishContext};
    use std::sync::Arc;

    fn commit(input: EventInput) -> Arc<Committed> {
        let p = Principal::anonymous_admin();
        let ctx = PublishContext {
            principal: &p,
            max_event_bytes: 1 << 20,
            now_us: 1_700_000_000_000_000,
        };
        let ev = input.validate(&ctx).unwrap();
        let json = Committed::encode(7, &ev.tail);
        Committed::from_new(ev, 7, json.into())
    }

    fn roundtrip(name: &str, data: Data) -> (Value, Outgoing) {
        let t = Trigger {
            channel: "orders",
            name,
            data: &data,
            exclude: Some("1.2"),
            user_id: None,
        };
        let ev = commit(to_input(&t));
        (ev.to_value(), outgoing(&ev, "orders").unwrap())
    }

    fn frame_data(o: &Outgoing) -> Value {
        serde_json::from_str::<Value>(&o.frame).unwrap()["data"].clone()
    }

    #[test]
    fn data_strings_come_back_byte_for_byte() {
        for s in [
            r#"{"b": 1, "a": [1.50, "x"]}"#,
            r#"{"a":1}"#,
            r#""quoted""#,
            "plain text",
            "",
            "12",
            "1e3",
            "null",
            " {\"a\":1} ",
        ] {
            let (stored, out) = roundtrip("my-event", Data::Text(s.into()));
            assert_eq!(frame_data(&out), Value::from(s), "{s:?}");
            assert_eq!(out.exclude.as_deref(), Some("1.2"));
            assert_eq!(stored["source"], "pusher");
            assert_eq!(stored["subject"], "orders");
        }
        let (stored, _) = roundtrip("my-event", Data::Text(r#"{"a":1}"#.into()));
        assert_eq!(
            stored["data"],
            json!({"a": 1}),
            "JSON data is stored parsed"
        );
        assert!(
            stored["metadata"].get("pusher_data").is_none(),
            "no copy when exact"
        );
        let (stored, _) = roundtrip("my-event", Data::Text("plain".into()));
        assert_eq!(stored["data"], "plain");
    }

    #[test]
    fn names_outside_the_type_rule_keep_their_pusher_name() {
        let (stored, out) = roundtrip(r"App\Events\OrderShipped", Data::Text("{}".into()));
        assert_eq!(stored["type"], FALLBACK_TYPE);
        assert_eq!(
            stored["metadata"]["pusher_event"],
            r"App\Events\OrderShipped"
        );
        let f: Value = serde_json::from_str(&out.frame).unwrap();
        assert_eq!(f["event"], r"App\Events\OrderShipped");
        let (stored, _) = roundtrip("order.shipped", Data::Text("{}".into()));
        assert_eq!(stored["type"], "order.shipped");
        // The hub's own types are never stored from a trigger (§12.11); Pusher subscribers
        // still see the name they were sent.
        let (stored, out) = roundtrip("crier.reset", Data::Text("{}".into()));
        assert_eq!(stored["type"], FALLBACK_TYPE);
        let f: Value = serde_json::from_str(&out.frame).unwrap();
        assert_eq!(f["event"], "crier.reset");
    }

    #[test]
    fn client_event_objects_are_forwarded_as_objects() {
        let (_, out) = roundtrip("client-typing", Data::Json(json!({"z": 1, "a": true})));
        assert_eq!(frame_data(&out), json!({"z": 1, "a": true}));
    }

    #[test]
    fn native_events_carry_their_data_as_a_json_string() {
        let ev = commit(EventInput {
            kind: Some("order.paid".into()),
            subject: Some("orders".into()),
            data: Some(json!({"total": 5})),
            ..EventInput::default()
        });
        let out = outgoing(&ev, "orders").unwrap();
        let f: Value = serde_json::from_str(&out.frame).unwrap();
        assert_eq!(f["event"], "order.paid");
        assert_eq!(f["channel"], "orders");
        assert_eq!(f["data"], r#"{"total":5}"#);
        assert_eq!(out.exclude, None);
    }

    #[test]
    fn channel_and_event_names() {
        assert!(valid_channel("private-a_b=c@d,e.f;g-1"));
        assert!(!valid_channel(""));
        assert!(!valid_channel("a b"));
        assert!(!valid_channel("a/b"));
        assert!(!valid_channel(&"x".repeat(165)));
        assert!(valid_channel(&"x".repeat(164)));
        assert!(valid_event(&"é".repeat(200)));
        assert!(!valid_event(&"e".repeat(201)));
        assert!(!valid_event(""));
    }

    #[test]
    fn channel_signatures_match_the_sdks() {
        let app = App {
            id: "1".into(),
            key: "key1".into(),
            secret: "7ad3773142a6692b25b8".into(),
            tenant: "default".into(),
            client_events: true,
            activity_timeout: 120,
            webhooks: vec![],
            max_data_bytes: 10240,
        };
        // Pusher's documented example of a private channel authorization.
        let auth = "key1:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
        assert!(verify_channel_auth(
            &app,
            "1234.1234",
            "private-foobar",
            None,
            auth
        ));
        assert!(!verify_channel_auth(
            &app,
            "1234.1235",
            "private-foobar",
            None,
            auth
        ));
        assert!(!verify_channel_auth(
            &app,
            "1234.1234",
            "private-foobar",
            None,
            "other:00"
        ));
        assert!(!verify_channel_auth(
            &app,
            "1234.1234",
            "private-foobar",
            None,
            "key1:zz"
        ));
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let sig = sign(
            &app.secret,
            format!("1234.1234:presence-foobar:{data}").as_bytes(),
        );
        let auth = format!("key1:{sig}");
        assert!(verify_channel_auth(
            &app,
            "1234.1234",
            "presence-foobar",
            Some(data),
            &auth
        ));
        assert!(!verify_channel_auth(
            &app,
            "1234.1234",
            "presence-foobar",
            Some("{}"),
            &auth
        ));
    }
}

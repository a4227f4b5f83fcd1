//! The `/v1/ws` wire protocol (§5): client ops parsed into a typed [`ClientOp`], and the
//! frames the server answers with.
//!
//! A client message is parsed in two steps so that its refusals read as the contract says:
//! first as a JSON object whose `op` is known (its `ref`, any JSON value, is taken aside and
//! echoed in the answer), then its other fields into the op's own struct, which denies
//! unknown fields. serde's messages are translated into the contract's: an unknown field is
//! "unknown field `k` for this op" and wins over a field of the wrong type, which is "`k` must
//! be a string" or "`k` must be a non-negative integer". A typed field given as `null` is
//! absent; a raw JSON field (`filter`, `event`, `speed`) is passed on as given, `null` too,
//! for the rules that read it.

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use crier_core::Principal;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A client message's refusal: code and message, answered with the message's `ref`.
pub(super) struct OpError(pub &'static str, pub String);

impl OpError {
    /// `invalid_message` with `message`.
    pub(super) fn invalid(message: impl Into<String>) -> Self {
        OpError("invalid_message", message.into())
    }
}

impl From<ApiError> for OpError {
    fn from(e: ApiError) -> Self {
        OpError(e.code, e.message)
    }
}

impl From<crate::service::Error> for OpError {
    fn from(e: crate::service::Error) -> Self {
        let (code, message) = e.into_parts();
        OpError(code, message)
    }
}

/// A raw JSON field: present (even as `null`) or absent, as the rules that read it expect.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// `subscribe`: a live (or resumed) reader on this connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Subscribe {
    pub id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub filter: Option<Value>,
    pub after: Option<u64>,
    pub last: Option<u64>,
    pub tenant: Option<String>,
}

/// `unsubscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Unsubscribe {
    pub id: Option<String>,
}

/// `publish`: one event.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Publish {
    #[serde(default, deserialize_with = "present")]
    pub event: Option<Value>,
}

/// `history`: one page of the log.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct History {
    #[serde(default, deserialize_with = "present")]
    pub filter: Option<Value>,
    pub after: Option<u64>,
    pub limit: Option<u64>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub tenant: Option<String>,
}

/// `auth`: a fresh credential for the connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Auth {
    pub token: Option<String>,
}

/// `replay`: a paced replay streamed on this connection.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Replay {
    #[serde(default, deserialize_with = "present")]
    pub filter: Option<Value>,
    pub since: Option<String>,
    pub until: Option<String>,
    #[serde(default, deserialize_with = "present")]
    pub speed: Option<Value>,
}

/// `replay_stop`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplayStop {
    pub replay: Option<String>,
}

/// `ping`: no fields.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Ping {}

/// A client op, typed.
#[derive(Debug)]
pub(super) enum ClientOp {
    Subscribe(Subscribe),
    Unsubscribe(Unsubscribe),
    Publish(Publish),
    History(History),
    Ping(Ping),
    Auth(Auth),
    Replay(Replay),
    ReplayStop(ReplayStop),
}

/// A parsed client message: its `ref` (echoed in answers) and its op.
pub(super) struct Request {
    pub r: Option<Value>,
    pub op: ClientOp,
}

/// Parses one text frame. A refusal comes with the `ref` to answer with, when the message
/// got far enough to have one.
pub(super) fn parse(text: &str) -> Result<Request, (Option<Value>, OpError)> {
    let v: Value = crier_core::strict_json::from_str(text)
        .map_err(|e| (None, OpError::invalid(format!("not valid JSON: {e}"))))?;
    let Value::Object(mut m) = v else {
        return Err((
            None,
            OpError::invalid("a message is a JSON object with an `op`"),
        ));
    };
    let r = m.remove("ref");
    let op = match m.remove("op") {
        Some(Value::String(op)) => op,
        _ => String::new(),
    };
    let parsed = match op.as_str() {
        "subscribe" => fields(m).map(ClientOp::Subscribe),
        "unsubscribe" => fields(m).map(ClientOp::Unsubscribe),
        "publish" => fields(m).map(ClientOp::Publish),
        "history" => fields(m).map(ClientOp::History),
        "ping" => fields(m).map(ClientOp::Ping),
        "auth" => fields(m).map(ClientOp::Auth),
        "replay" => fields(m).map(ClientOp::Replay),
        "replay_stop" => fields(m).map(ClientOp::ReplayStop),
        "" => Err(OpError::invalid("a message needs an `op`")),
        other => Err(OpError("unknown_op", format!("unknown op {other:?}"))),
    };
    match parsed {
        Ok(op) => Ok(Request { r, op }),
        Err(e) => Err((r, e)),
    }
}

/// What went wrong with one field.
enum FieldError {
    /// A field the op does not have.
    Unknown(String),
    /// A field of the wrong type; `integer` when it holds a count or a seq.
    Type { key: String, integer: bool },
}

impl FieldError {
    fn of(e: serde_path_to_error::Error<serde_json::Error>) -> FieldError {
        let text = e.inner().to_string();
        if let Some(rest) = text.strip_prefix("unknown field `") {
            // serde names the field between backticks, then what it expected.
            let end = rest
                .rfind("`, expected ")
                .or_else(|| rest.rfind("`, there are no fields"))
                .unwrap_or(rest.len());
            return FieldError::Unknown(rest[..end].to_string());
        }
        let key = match e.path().iter().next_back() {
            Some(serde_path_to_error::Segment::Map { key }) => key.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        FieldError::Type {
            key,
            integer: text.contains("expected u64"),
        }
    }
}

/// Reads an op's fields into its struct. An unknown field is reported before a field of the
/// wrong type: a badly typed field is set aside and the rest read again, until the fields
/// parse or an unknown one turns up.
fn fields<T: serde::de::DeserializeOwned>(mut m: Map<String, Value>) -> Result<T, OpError> {
    let mut type_error: Option<String> = None;
    loop {
        let err = match serde_path_to_error::deserialize(Value::Object(m.clone())) {
            Ok(t) => return type_error.map_or(Ok(t), |e| Err(OpError::invalid(e))),
            Err(e) => FieldError::of(e),
        };
        match err {
            FieldError::Unknown(k) => {
                return Err(OpError::invalid(format!("unknown field `{k}` for this op")))
            }
            FieldError::Type { key, integer } => {
                let message = type_error.get_or_insert_with(|| {
                    if integer {
                        format!("`{key}` must be a non-negative integer")
                    } else {
                        format!("`{key}` must be a string")
                    }
                });
                if m.remove(&key).is_none() {
                    // Not a field of the message: reading again would learn nothing new.
                    return Err(OpError::invalid(message.clone()));
                }
            }
        }
    }
}

/// A publish op waiting for its turn: `ref`, the event, the credential at the time.
pub(super) type PublishReq = (Option<Value>, Value, Principal);

/// An `error` op answering the message with `ref` `r`.
pub(super) fn error_frame(r: Option<&Value>, code: &str, message: &str) -> Message {
    let mut m = Map::new();
    m.insert("op".into(), "error".into());
    if let Some(r) = r {
        m.insert("ref".into(), r.clone());
    }
    m.insert("code".into(), code.into());
    m.insert("message".into(), message.into());
    text(Value::Object(m).to_string())
}

/// A close frame.
pub(super) fn close_frame(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// A text frame.
pub(super) fn text(s: String) -> Message {
    Message::Text(Utf8Bytes::from(s))
}

/// The answer `op` to the message with `ref` `r`, with `fields`.
pub(super) fn reply(op: &str, r: Option<&Value>, mut fields: Map<String, Value>) -> Message {
    fields.insert("op".into(), op.into());
    if let Some(r) = r {
        fields.insert("ref".into(), r.clone());
    }
    text(Value::Object(fields).to_string())
}

#[cfg(test)]
mod tests {
    use super::{parse, ClientOp, OpError};

    fn refusal(text: &str) -> (Option<serde_json::Value>, &'static str, String) {
        match parse(text) {
            Ok(_) => panic!("{text} was accepted"),
            Err((r, OpError(code, message))) => (r, code, message),
        }
    }

    #[test]
    fn messages_read_as_the_contract_says() {
        let (r, code, m) = refusal("[1]");
        assert_eq!((r, code), (None, "invalid_message"));
        assert_eq!(m, "a message is a JSON object with an `op`");
        let (r, code, m) = refusal(r#"{"ref": 7}"#);
        assert_eq!((r, code), (Some(7.into()), "invalid_message"));
        assert_eq!(m, "a message needs an `op`");
        let (_, code, m) = refusal(r#"{"op": "dance"}"#);
        assert_eq!((code, m.as_str()), ("unknown_op", "unknown op \"dance\""));
        let (_, _, m) = refusal(r#"{"op": "ping", "x": 1}"#);
        assert_eq!(m, "unknown field `x` for this op");
        let (_, _, m) = refusal(r#"{"op": "subscribe", "id": 5}"#);
        assert_eq!(m, "`id` must be a string");
        let (_, _, m) = refusal(r#"{"op": "subscribe", "id": "a", "after": -1}"#);
        assert_eq!(m, "`after` must be a non-negative integer");
        // An unknown field wins over a mistyped one, wherever it is.
        let (_, _, m) = refusal(r#"{"op": "subscribe", "after": "x", "zzz": 1}"#);
        assert_eq!(m, "unknown field `zzz` for this op");
        let (_, _, m) = refusal(r#"{"op": "history", "a`b": 1}"#);
        assert_eq!(m, "unknown field `a`b` for this op");
    }

    #[test]
    fn null_is_absent_for_typed_fields_and_kept_for_raw_ones() {
        let Ok(req) = parse(r#"{"op": "publish", "ref": "r", "event": null}"#) else {
            panic!("publish refused");
        };
        assert_eq!(req.r, Some("r".into()));
        assert!(matches!(req.op, ClientOp::Publish(p) if p.event == Some(serde_json::Value::Null)));
        let Ok(req) = parse(r#"{"op": "subscribe", "id": "s", "after": null, "tenant": null}"#)
        else {
            panic!("subscribe refused");
        };
        assert!(
            matches!(req.op, ClientOp::Subscribe(s) if s.after.is_none() && s.filter.is_none())
        );
    }
}

//! Structured-mode CloudEvents 1.0 mapped onto crier's event (§3).
//!
//! `id`, `source`, `type`, `subject`, `time` and `data` map to the fields of the same name;
//! the extensions `severity` and `category` to theirs, `tags` (comma-separated) to `tags`;
//! every other extension attribute goes into `metadata`.
//!
//! As the CloudEvents 1.0 specification requires (§12.11): `id`, `source`, `type` and
//! `specversion` (`1.0`) must be present (else `invalid_event`, as for any event missing a
//! required field), and `data` and `data_base64` exclude each other; `data_base64` must be
//! base64 (RFC 4648) and is kept as that text in `data` (else `invalid_cloudevent`).

use serde_json::{Map, Value};

use crate::event::EventInput;
use crate::validate::ValidationError;

/// Converts one structured CloudEvent into an [`EventInput`].
pub fn to_input(v: Value) -> Result<EventInput, ValidationError> {
    let Value::Object(obj) = v else {
        return Err(ValidationError::bad(
            "invalid_cloudevent",
            "a CloudEvent is a JSON object",
        ));
    };
    let mut input = EventInput::default();
    let mut metadata = Map::new();
    let string = |k: &str, v: Value| -> Result<String, ValidationError> {
        match v {
            Value::String(s) => Ok(s),
            _ => Err(ValidationError::bad(
                "invalid_event",
                format!("CloudEvent attribute `{k}` must be a string"),
            )),
        }
    };
    let mut specversion = None;
    let mut base64 = None;
    for (k, v) in obj {
        match k.as_str() {
            "specversion" => specversion = Some(string(&k, v)?),
            "id" => input.id = Some(string(&k, v)?),
            "source" => input.source = Some(string(&k, v)?),
            "type" => input.kind = Some(string(&k, v)?),
            "subject" => input.subject = Some(string(&k, v)?),
            "time" => input.time = Some(string(&k, v)?),
            "data" => input.data = Some(v),
            "data_base64" => base64 = Some(string(&k, v)?),
            "datacontenttype" | "dataschema" => {
                metadata.insert(k, v);
            }
            "severity" => input.severity = Some(string(&k, v)?),
            "category" => input.category = Some(string(&k, v)?),
            "tags" => {
                let s = string(&k, v)?;
                input.tags = Some(
                    s.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(String::from)
                        .collect(),
                );
            }
            _ => {
                metadata.insert(k, v);
            }
        }
    }
    let bad = |m: String| ValidationError::bad("invalid_event", m);
    match specversion.as_deref() {
        Some("1.0") => {}
        Some(other) => {
            return Err(bad(format!(
                "CloudEvents specversion {other:?} is not supported; use \"1.0\""
            )))
        }
        None => return Err(bad("a CloudEvent needs `specversion` (\"1.0\")".into())),
    }
    for (name, present) in [
        ("id", input.id.is_some()),
        ("source", input.source.is_some()),
        ("type", input.kind.is_some()),
    ] {
        if !present {
            return Err(bad(format!(
                "a CloudEvent needs `{name}` (CloudEvents 1.0 required attribute)"
            )));
        }
    }
    let bad = |m: String| ValidationError::bad("invalid_cloudevent", m);
    if let Some(b) = base64 {
        if input.data.is_some() {
            return Err(bad(
                "a CloudEvent carries `data` or `data_base64`, never both".into(),
            ));
        }
        if !is_base64(&b) {
            return Err(bad("`data_base64` is not base64 (RFC 4648)".into()));
        }
        input.data = Some(Value::String(b));
    }
    input.metadata = Some(Value::Object(metadata));
    Ok(input)
}

/// Whether `s` is base64 of the standard alphabet, padding optional but only at the end.
fn is_base64(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    let pad = s.len() - body.len();
    pad <= 2
        && (pad == 0 || s.len().is_multiple_of(4))
        && body.len() % 4 != 1
        && body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_attributes() {
        let i = to_input(serde_json::json!({
            "specversion": "1.0", "id": "x", "source": "svc", "type": "a.b",
            "severity": "error", "tags": "a, b", "traceparent": "00-1", "data": {"k": 1}
        }))
        .unwrap();
        assert_eq!(i.kind.as_deref(), Some("a.b"));
        assert_eq!(i.severity.as_deref(), Some("error"));
        assert_eq!(i.tags, Some(vec!["a".to_string(), "b".to_string()]));
        assert_eq!(i.metadata.unwrap()["traceparent"], "00-1");
        assert!(to_input(serde_json::json!({"type": "a"})).is_err());
        let base = serde_json::json!({"specversion": "1.0", "id": "x", "source": "s", "type": "a"});
        let with = |k: &str, v: Value| {
            let mut o = base.clone();
            o[k] = v;
            to_input(o)
        };
        assert!(with("data_base64", "aGk=".into()).is_ok());
        assert!(with("data_base64", "aGk".into()).is_ok());
        assert!(with("data_base64", "a*k=".into()).is_err());
        assert!(with("data_base64", "a".into()).is_err());
        assert!(with("data_base64", "a=bc".into()).is_err());
        let mut both = base.clone();
        both["data"] = 1.into();
        both["data_base64"] = "aGk=".into();
        assert_eq!(to_input(both).unwrap_err().code, "invalid_cloudevent");
        for k in ["id", "source", "type", "specversion"] {
            let mut o = base.clone();
            o.as_object_mut().unwrap().remove(k);
            assert_eq!(to_input(o).unwrap_err().code, "invalid_event", "{k}");
        }
    }
}

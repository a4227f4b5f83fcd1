//! Structured-mode CloudEvents 1.0 mapped onto crier's event (§3).
//!
//! `id`, `source`, `type`, `subject`, `time` and `data` map to the fields of the same name;
//! the extensions `severity` and `category` to theirs, `tags` (comma-separated) to `tags`;
//! every other extension attribute goes into `metadata`.

use serde_json::{Map, Value};

use crate::event::EventInput;
use crate::validate::ValidationError;

/// Converts one structured CloudEvent into an [`EventInput`].
pub fn to_input(v: Value) -> Result<EventInput, ValidationError> {
    let Value::Object(obj) = v else {
        return Err(ValidationError::bad(
            "invalid_event",
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
    for (k, v) in obj {
        match k.as_str() {
            "specversion" => specversion = Some(string(&k, v)?),
            "id" => input.id = Some(string(&k, v)?),
            "source" => input.source = Some(string(&k, v)?),
            "type" => input.kind = Some(string(&k, v)?),
            "subject" => input.subject = Some(string(&k, v)?),
            "time" => input.time = Some(string(&k, v)?),
            "data" => input.data = Some(v),
            "data_base64" => input.data = Some(v),
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
    match specversion.as_deref() {
        Some("1.0") => {}
        Some(other) => {
            return Err(ValidationError::bad(
                "invalid_event",
                format!("CloudEvents specversion {other:?} is not supported; use \"1.0\""),
            ))
        }
        None => {
            return Err(ValidationError::bad(
                "invalid_event",
                "a CloudEvent needs `specversion` (\"1.0\")",
            ))
        }
    }
    input.metadata = Some(Value::Object(metadata));
    Ok(input)
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
    }
}

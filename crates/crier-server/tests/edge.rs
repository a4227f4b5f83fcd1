//! The HTTP edge over a real socket: JSON errors for unknown paths, wrong methods and
//! rejected paths; CORS for `allowed_origins` (§12.7); the OpenAPI document checked by a real
//! validator (`openapi-spec-validator`, which `.ci/run` installs; the check skips with a
//! notice when it is absent, except under `CI=true`).

use crier_testkit::checks::{get_status, raw};
use crier_testkit::Hub;
use serde_json::Value;

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let msg = body["error"]["message"].as_str().unwrap_or("");
    assert!(!msg.is_empty(), "a message a person can read: {body}");
}

/// Sends `req`: its status, headers and body, which must be JSON unless it is empty.
async fn send(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let (status, headers, text) = raw(req).await;
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let body = if text.is_empty() {
        Value::Null
    } else {
        assert!(ct.starts_with("application/json"), "{status} {ct}: {text}");
        serde_json::from_str(&text).expect("JSON body")
    };
    (status, headers, body)
}

/// A CORS preflight for `POST /v1/events` from `origin`.
fn preflight(hub: &Hub, origin: &str) -> reqwest::RequestBuilder {
    hub.http
        .request(reqwest::Method::OPTIONS, hub.url("/v1/events"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
}

#[tokio::test]
async fn every_error_is_json() {
    let hub = Hub::start().await;

    let (s, _, b) = send(hub.http.get(hub.url("/v1/nothing-here"))).await;
    assert_error(s, &b, 404, "not_found");

    // A wrong method: 405, JSON, and the Allow header still names the right ones.
    let (s, h, b) = send(hub.http.delete(hub.url("/v1/events"))).await;
    assert_error(s, &b, 405, "method_not_allowed");
    let allow = h["allow"].to_str().expect("allow");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    assert!(b["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("DELETE"));
    let (s, _, b) = send(hub.http.put(hub.url("/healthz"))).await;
    assert_error(s, &b, 405, "method_not_allowed");

    // A path the router cannot decode (invalid UTF-8) is rejected by axum itself.
    let (s, _, b) = send(hub.http.get(hub.url("/v1/events/%FF%FE"))).await;
    assert_error(s, &b, 400, "bad_request");

    // A plain GET on the WebSocket endpoint is refused with a JSON error too.
    let (s, _, b) = send(hub.http.get(hub.url("/v1/ws"))).await;
    assert!(s >= 400, "{s}");
    assert!(b["error"]["code"].is_string(), "{b}");

    // Without allowed_origins there is no CORS: OPTIONS is just a wrong method.
    let (s, h, b) = send(preflight(&hub, "https://app.example")).await;
    assert_error(s, &b, 405, "method_not_allowed");
    assert!(h.get("access-control-allow-origin").is_none());

    // Successful answers are untouched.
    let (s, _, b) = send(hub.http.get(hub.url("/healthz"))).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("ok")));
    hub.stop().await;
}

#[tokio::test]
async fn cors_for_allowed_origins() {
    let hub = Hub::start_with(|s| s.allowed_origins = vec!["https://app.example".into()]).await;

    let (s, h, b) = send(preflight(&hub, "https://app.example").header(
        "access-control-request-headers",
        "authorization, content-type, last-event-id, if-match",
    ))
    .await;
    assert_eq!(s, 204, "{b}");
    assert_eq!(b, Value::Null, "a preflight answer has no body");
    assert_eq!(h["access-control-allow-origin"], "https://app.example");
    let methods = h["access-control-allow-methods"]
        .to_str()
        .expect("methods")
        .to_ascii_uppercase();
    for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
        assert!(methods.contains(m), "{methods}");
    }
    let allowed = h["access-control-allow-headers"]
        .to_str()
        .expect("headers")
        .to_ascii_lowercase();
    for name in ["authorization", "content-type", "last-event-id", "if-match"] {
        assert!(allowed.contains(name), "{allowed}");
    }
    let max_age: u64 = h["access-control-max-age"]
        .to_str()
        .expect("max-age")
        .parse()
        .expect("seconds");
    assert!(max_age > 0);

    // A preflight from an origin outside the list is refused, with a reason.
    let (s, h, b) = send(preflight(&hub, "https://evil.example")).await;
    assert_error(s, &b, 403, "origin_not_allowed");
    assert!(h.get("access-control-allow-origin").is_none());

    // Answers (successes and errors) carry the origin and the exposed headers.
    let res = hub
        .http
        .post(hub.url("/v1/events"))
        .header("origin", "https://app.example")
        .header("content-type", "application/json")
        .body(r#"{"type":"cors.checked"}"#)
        .send()
        .await
        .expect("publish");
    assert_eq!(res.status().as_u16(), 201);
    assert_eq!(
        res.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let exposed = res.headers()["access-control-expose-headers"]
        .to_str()
        .expect("expose")
        .to_ascii_lowercase();
    for name in ["etag", "crier-seq", "retry-after"] {
        assert!(exposed.contains(name), "{exposed}");
    }
    let (s, h, b) = send(
        hub.http
            .get(hub.url("/v1/nothing"))
            .header("origin", "https://app.example"),
    )
    .await;
    assert_error(s, &b, 404, "not_found");
    assert_eq!(h["access-control-allow-origin"], "https://app.example");

    // Another origin gets no CORS grant on an answer.
    let res = hub
        .http
        .get(hub.url("/healthz"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .expect("get");
    assert!(res.headers().get("access-control-allow-origin").is_none());
    hub.stop().await;
}

/// The validator: `OPENAPI_SPEC_VALIDATOR` names it, else `openapi-spec-validator` on `PATH`.
fn validator() -> Option<std::path::PathBuf> {
    if let Ok(p) = std::env::var("OPENAPI_SPEC_VALIDATOR") {
        let p = std::path::PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("openapi-spec-validator"))
        .find(|p| p.is_file())
}

#[tokio::test]
async fn openapi_is_valid_and_versioned() {
    let hub = Hub::start().await;
    let res = get_status(&hub, "/openapi.json", "", 200).await;
    let text = res.text().await.expect("body");
    let doc: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    hub.stop().await;

    let Some(bin) = validator() else {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("openapi-spec-validator is not installed and CI=true");
        }
        eprintln!("NOTICE: openapi-spec-validator is not installed; skipping the validation");
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, &text).expect("write");
    let out = std::process::Command::new(&bin)
        .arg(&file)
        .output()
        .expect("run the validator");
    assert!(
        out.status.success(),
        "the served document is not valid OpenAPI:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // The validator really rejects a broken document (the check can fail).
    let mut broken = doc.clone();
    broken["paths"]["/v1/events"]["post"]["requestBody"]["content"]["application/x-ndjson"]
        ["description"] = Value::String("not allowed here".into());
    std::fs::write(&file, broken.to_string()).expect("write");
    let out = std::process::Command::new(&bin)
        .arg(&file)
        .output()
        .expect("run the validator");
    assert!(
        !out.status.success(),
        "the validator accepted a broken document"
    );
}

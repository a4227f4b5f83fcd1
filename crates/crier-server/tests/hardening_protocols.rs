//! §12.11 over real sockets: reserved names, duplicated JSON keys, CloudEvents' required
//! attributes and JWT `crit` headers, on every transport that takes them.

#[allow(dead_code)]
mod harden;

use base64::Engine;
use crier_testkit::checks::get_status;
use crier_testkit::Hub;
use futures_util::SinkExt;
use harden::{call, gql_recv, gql_subscribe, gql_ws, hub_with, post_json, token, ws, ws_refused};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_tungstenite::tungstenite::Message;

fn code(v: &Value) -> Option<&str> {
    v["error"]["code"].as_str()
}

async fn send(hub: &Hub, method: &str, path: &str, ct: &str, body: &str) -> (u16, Value) {
    let admin = token("root", "admin", None);
    let (s, v, _) = call(hub, method, path, &admin, Some((ct, body.to_string()))).await;
    (s, v)
}

fn gql_code(v: &Value) -> Option<&str> {
    v["errors"][0]["extensions"]["code"].as_str()
}

#[tokio::test]
async fn reserved_names_are_refused_on_every_transport() {
    let hub = hub_with(|_| {}).await;
    let cases = [
        ("application/json", r#"{"type":"crier.reset"}"#),
        ("application/json", r#"{"type":"Crier.Reset"}"#),
        (
            "application/json",
            r#"{"type":"site.created","source":"entities"}"#,
        ),
        (
            "application/json",
            r#"[{"type":"ok"},{"type":"crier.replay_done"}]"#,
        ),
        (
            "application/x-ndjson",
            "{\"type\":\"ok\"}\n{\"type\":\"crier.reset\"}\n",
        ),
        (
            "application/cloudevents+json",
            r#"{"specversion":"1.0","id":"1","source":"s","type":"crier.reset"}"#,
        ),
        (
            "application/cloudevents-batch+json",
            r#"[{"specversion":"1.0","id":"2","source":"entities","type":"a.b"}]"#,
        ),
    ];
    for (ct, body) in cases {
        let (s, v) = send(&hub, "POST", "/v1/events", ct, body).await;
        assert_eq!((s, code(&v)), (400, Some("reserved")), "{ct} {body}: {v}");
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(
            msg.contains("reserved"),
            "the message names the rule: {msg}"
        );
    }
    let admin = token("root", "admin", None);
    let mut w = ws(&hub, &admin).await;
    let reset = json!({"op": "publish", "ref": "r", "event": {"type": "crier.reset"}});
    ws_refused(&mut w, reset, "reserved").await;
    let q = json!({"query": "mutation { publish(event: {type: \"x\", source: \"entities\"}) { seq } }"});
    let (_, v, _) = post_json(&hub, "/graphql", &admin, q).await;
    assert_eq!(gql_code(&v), Some("reserved"), "{v}");
    // Entity kinds whose events would be the hub's own.
    for kind in ["link", "crier"] {
        let (s, v) = send(
            &hub,
            "PUT",
            &format!("/v1/entities/{kind}/a"),
            "application/json",
            "{}",
        )
        .await;
        assert_eq!((s, code(&v)), (400, Some("reserved")), "{kind}: {v}");
        let q = json!({"query": format!("mutation {{ putEntity(kind: \"{kind}\", id: \"a\", value: {{}}) {{ version }} }}")});
        let (_, v, _) = post_json(&hub, "/graphql", &admin, q).await;
        assert_eq!(gql_code(&v), Some("reserved"), "{kind}: {v}");
    }
    // Nothing of it was stored; ordinary names still work.
    let (_, v, _) = call(&hub, "GET", "/v1/events", &admin, None).await;
    assert_eq!(v["events"], json!([]), "{v}");
    let (s, v) = send(
        &hub,
        "POST",
        "/v1/events",
        "application/json",
        r#"{"type":"crierx.y","source":"entities2"}"#,
    )
    .await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn duplicated_keys_are_refused_in_every_body_and_frame() {
    let hub = hub_with(|_| {}).await;
    let dup_event = r#"{"type":"a","type":"b"}"#;
    let deep = r#"{"type":"a","data":{"x":[{"k":1,"k":2}]}}"#;
    let cases: Vec<(&str, &str, &str, String)> = vec![
        ("POST", "/v1/events", "application/json", dup_event.into()),
        ("POST", "/v1/events", "application/json", deep.into()),
        ("POST", "/v1/events", "application/json", format!("[{{\"type\":\"ok\"}},{deep}]")),
        ("POST", "/v1/events", "application/x-ndjson", format!("{{\"type\":\"ok\"}}\n{deep}\n")),
        (
            "POST",
            "/v1/events",
            "application/cloudevents+json",
            r#"{"specversion":"1.0","id":"1","id":"2","source":"s","type":"a"}"#.into(),
        ),
        (
            "POST",
            "/v1/events",
            "application/cloudevents-batch+json",
            r#"[{"specversion":"1.0","id":"1","source":"s","type":"a","data":{"q":1,"q":1}}]"#.into(),
        ),
        ("PUT", "/v1/entities/site/a", "application/json", r#"{"n":1,"n":2}"#.into()),
        ("PATCH", "/v1/entities/site/a", "application/merge-patch+json", r#"{"n":{"m":1,"m":null}}"#.into()),
        (
            "POST",
            "/v1/subscriptions",
            "application/json",
            r#"{"webhook":{"url":"http://127.0.0.1:9/x","url":"http://127.0.0.1:9/y"},"paused":true}"#.into(),
        ),
        ("POST", "/v1/replays", "application/json", r#"{"since":"1h","since":"2h"}"#.into()),
    ];
    for (method, path, ct, body) in &cases {
        let (s, v) = send(&hub, method, path, ct, body).await;
        assert_eq!(
            (s, code(&v)),
            (400, Some("invalid_json")),
            "{method} {path} {body}: {v}"
        );
    }
    let admin = token("root", "admin", None);
    // GraphQL over HTTP: the request body and the variables inside it.
    for body in [
        r#"{"query":"{ events { seq } }","query":"mutation { deleteEntity(kind: \"site\", id: \"a\") }"}"#,
        r#"{"query":"mutation($e: JSON!) { publish(event: $e) { seq } }","variables":{"e":{"type":"a","type":"b"}}}"#,
    ] {
        let (s, v, _) = call(
            &hub,
            "POST",
            "/graphql",
            &admin,
            Some(("application/json", body.into())),
        )
        .await;
        assert_eq!(s, 400, "{body}: {v}");
    }
    // A GraphQL input object literal that repeats a field.
    let q = json!({"query": "mutation { publish(event: {type: \"a\", type: \"b\"}) { seq } }"});
    let (s, v, _) = post_json(&hub, "/graphql", &admin, q).await;
    assert_eq!((s, code(&v)), (400, Some("invalid_json")), "{v}");
    // /v1/ws frames.
    let mut w = ws(&hub, &admin).await;
    w.send_text(r#"{"op":"publish","ref":"r","event":{"type":"a","type":"crier.x"}}"#)
        .await;
    let m = w.recv().await;
    assert_eq!(m["op"], "error", "{m}");
    w.send_text(r#"{"op":"subscribe","op":"publish","id":"s","filter":{}}"#)
        .await;
    assert_eq!(w.recv().await["op"], "error");
    // GraphQL WebSocket messages: closed as invalid (4400).
    let mut g = gql_ws(&hub, &admin).await;
    assert_eq!(gql_recv(&mut g).await["type"], "connection_ack");
    g.send(Message::text(
        r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { events { seq } }","query":"{ events { seq } }"}}"#,
    ))
    .await
    .expect("send");
    let closed = gql_recv(&mut g).await;
    assert_eq!(closed["closed"], 4400, "{closed}");
    // Nothing was stored by any of it.
    let (_, v, _) = call(&hub, "GET", "/v1/events", &admin, None).await;
    assert_eq!(v["events"], json!([]), "{v}");
}

#[tokio::test]
async fn cloudevents_follow_the_specification() {
    let hub = hub_with(|_| {}).await;
    let base = json!({"specversion": "1.0", "id": "c1", "source": "svc", "type": "a.b"});
    let with = |k: &str, v: Value| {
        let mut o = base.clone();
        o[k] = v;
        o
    };
    let without = |k: &str| {
        let mut o = base.clone();
        o.as_object_mut().expect("object").remove(k);
        o
    };
    let mut both = with("data", json!({"x": 1}));
    both["data_base64"] = json!("aGk=");
    let bad = vec![
        (both, "invalid_cloudevent"),
        (
            with("data_base64", json!("not base64!")),
            "invalid_cloudevent",
        ),
        (with("data_base64", json!("a")), "invalid_cloudevent"),
        (with("data_base64", json!(12)), "invalid_event"),
        (with("specversion", json!("0.3")), "invalid_event"),
        (without("id"), "invalid_event"),
        (without("source"), "invalid_event"),
        (without("type"), "invalid_event"),
        (without("specversion"), "invalid_event"),
    ];
    for (ce, want) in bad {
        for (ct, body) in [
            ("application/cloudevents+json", ce.to_string()),
            (
                "application/cloudevents-batch+json",
                json!([ce]).to_string(),
            ),
        ] {
            let (s, v) = send(&hub, "POST", "/v1/events", ct, &body).await;
            assert_eq!((s, code(&v)), (400, Some(want)), "{ct} {body}: {v}");
            let msg = v["error"]["message"].as_str().unwrap_or("");
            assert!(
                msg.contains("CloudEvent") || msg.contains("data_base64"),
                "{msg}"
            );
        }
    }
    let (s, v) = send(
        &hub,
        "POST",
        "/v1/events",
        "application/cloudevents+json",
        &with("data_base64", json!("aGVsbG8=")).to_string(),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let admin = token("root", "admin", None);
    let (_, v, _) = call(&hub, "GET", "/v1/events/c1", &admin, None).await;
    assert_eq!(v["data"], "aGVsbG8=", "{v}");
}

fn raw_jwt(header: &Value, claims: &Value) -> String {
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let signing = format!("{}.{}", b64(&header.to_string()), b64(&claims.to_string()));
    raw_signed(&signing)
}

fn raw_signed(signing: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(harden::SECRET.as_bytes()).expect("key");
    mac.update(signing.as_bytes());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing}.{sig}")
}

#[tokio::test]
async fn a_jwt_with_crit_is_refused() {
    let hub = hub_with(|_| {}).await;
    let claims = json!({"sub": "s", "tenant": "acme", "role": "admin", "exp": crier_testkit::auth::now() + 600});
    let plain = raw_jwt(&json!({"alg": "HS256", "typ": "JWT"}), &claims);
    assert_eq!(
        call(&hub, "GET", "/v1/events", &plain, None).await.0,
        200,
        "the hand-made token is good"
    );
    for header in [
        json!({"alg": "HS256", "typ": "JWT", "crit": ["exp"]}),
        json!({"alg": "HS256", "crit": ["b64"], "b64": false}),
        json!({"alg": "HS256", "crit": []}),
    ] {
        let t = raw_jwt(&header, &claims);
        let (s, v, _) = call(&hub, "GET", "/v1/events", &t, None).await;
        assert_eq!((s, code(&v)), (401, Some("unauthorized")), "{header}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("crit"),
            "{v}"
        );
        // The same on a WebSocket upgrade and in a GraphQL connection_init.
        get_status(&hub, &format!("/v1/ws?token={t}"), "", 401).await;
        let mut g = gql_ws(&hub, &t).await;
        let m = gql_recv(&mut g).await;
        assert_ne!(m["type"], "connection_ack", "{m}");
    }
    // A header that repeats `alg`.
    let b64 = |v: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v);
    let signing = format!(
        "{}.{}",
        b64(r#"{"alg":"HS256","alg":"HS256","typ":"JWT"}"#),
        b64(&claims.to_string())
    );
    let (s, _, _) = call(&hub, "GET", "/v1/events", &raw_signed(&signing), None).await;
    assert_eq!(s, 401);
}

#[tokio::test]
async fn graphql_documents_repeat_no_input_field() {
    let hub = hub_with(|_| {}).await;
    let admin = token("root", "admin", None);
    let q =
        json!({"query": "mutation { publish(event: {type: \"a\", data: {k: 1, k: 2}}) { seq } }"});
    let (s, v, _) = post_json(&hub, "/graphql", &admin, q).await;
    assert_eq!((s, code(&v)), (400, Some("invalid_json")), "{v}");
    let sub = "subscription { events(filter: {type: [\"a\"], type: [\"b\"]}) { seq } }";
    let mut g = gql_subscribe(&hub, &admin, sub).await;
    assert_eq!(gql_recv(&mut g).await["closed"], 4400);
}

//! Saved named filters (`/v1/filters`) over real sockets and a real SQLite file: the CRUD
//! contract and its errors, roles and tenants, and `filter=NAME` on SSE, history, the
//! WebSocket and replays.

use crier_testkit::services::{drop_schema, pg_reachable, pg_url};
use crier_testkit::{ev, Hub};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-of-at-least-32-characters!!";

async fn call(
    hub: &Hub,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = hub
        .http
        .request(method.parse().expect("method"), hub.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

fn token(sub: &str, tenant: &str, role: &str, subscribe: Option<&[&str]>) -> String {
    crier_testkit::auth::token(SECRET, sub, tenant, role, subscribe)
}

async fn auth_hub() -> Hub {
    Hub::start_with(|s| crier_testkit::auth::with_hs256(s, SECRET)).await
}

#[tokio::test]
async fn crud_answers_the_contract_and_refuses_bad_input_clearly() {
    let hub = Hub::start_with(|s| {
        s.limits.max_filters_per_tenant = 3;
        s.limits.max_filter_patterns = 4;
    })
    .await;
    let (s, v) = call(
        &hub,
        "POST",
        "/v1/filters",
        None,
        Some(json!({"name": "prod-errors", "filter": {"severity": "error", "tags": ["prod"]}, "description": "Errors in production"})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["name"], "prod-errors");
    assert_eq!(v["filter"], json!({"severity": "error", "tags": ["prod"]}));
    assert_eq!(v["description"], "Errors in production");
    assert_eq!(v["created_by"], "anonymous");
    assert!(
        v["created_at"].is_string() && v["updated_at"].is_string(),
        "{v}"
    );

    let (s, v) = call(
        &hub,
        "POST",
        "/v1/filters",
        None,
        Some(json!({"name": "prod-errors", "filter": {}})),
    )
    .await;
    assert_eq!((s, code(&v)), (409, "filter_exists"), "{v}");
    let (_, v) = hub.get("/v1/filters/prod-errors").await;
    assert_eq!(
        v["filter"]["severity"], "error",
        "a refused duplicate changed nothing"
    );

    for bad in ["Prod", "", "-x", "has space", "a/b", &"x".repeat(65), "ünï"] {
        let (s, v) = call(
            &hub,
            "POST",
            "/v1/filters",
            None,
            Some(json!({"name": bad})),
        )
        .await;
        assert_eq!((s, code(&v)), (400, "invalid_filter_name"), "{bad:?}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("lowercase"),
            "{v}"
        );
    }
    let (s, v) = hub.get("/v1/filters/Bad%20Name").await;
    assert_eq!((s, code(&v)), (400, "invalid_filter_name"), "{v}");

    for (filter, want) in [
        (json!({"typo": ["a"]}), "invalid_filter"),
        (json!({"severity": "loud"}), "invalid_filter"),
        (json!({"type": [""]}), "invalid_filter"),
        (json!("prod-errors"), "invalid_filter"),
        (
            json!({"type": ["a", "b", "c"], "tags": ["x", "y"]}),
            "filter_too_large",
        ),
    ] {
        let (s, v) = call(
            &hub,
            "POST",
            "/v1/filters",
            None,
            Some(json!({"name": "bad", "filter": filter})),
        )
        .await;
        assert_eq!((s, code(&v)), (400, want), "{filter}: {v}");
    }
    let (s, v) = call(
        &hub,
        "POST",
        "/v1/filters",
        None,
        Some(json!({"name": "x", "colour": "red"})),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "invalid_json"), "{v}");
    let res = hub
        .http
        .post(hub.url("/v1/filters"))
        .header("content-type", "text/plain")
        .body(r#"{"name":"x"}"#)
        .send()
        .await
        .expect("post");
    assert_eq!(res.status().as_u16(), 415);
    let v: Value = res.json().await.expect("json error");
    assert_eq!(code(&v), "unsupported_media_type");

    // The per-tenant cap.
    for name in ["deploys", "audit"] {
        let (s, v) = call(
            &hub,
            "POST",
            "/v1/filters",
            None,
            Some(json!({"name": name, "filter": {"type": ["deploy.*"]}})),
        )
        .await;
        assert_eq!(s, 201, "{v}");
    }
    let (s, v) = call(
        &hub,
        "POST",
        "/v1/filters",
        None,
        Some(json!({"name": "fourth"})),
    )
    .await;
    assert_eq!((s, code(&v)), (409, "too_many_filters"), "{v}");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap_or("")
        .contains("limits.max_filters_per_tenant"));

    let (s, v) = hub.get("/v1/filters").await;
    assert_eq!(s, 200);
    let names: Vec<&str> = v["filters"]
        .as_array()
        .expect("filters")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert_eq!(names, ["audit", "deploys", "prod-errors"], "listed by name");

    // PUT replaces the definition and the description, keeps the creator.
    let (s, v) = call(
        &hub,
        "PUT",
        "/v1/filters/deploys",
        None,
        Some(json!({"filter": {"type": ["deploy.failed"]}})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["filter"], json!({"type": ["deploy.failed"]}));
    assert_eq!(v["description"], Value::Null);
    assert_eq!(v["created_by"], "anonymous");
    let (s, v) = call(
        &hub,
        "PUT",
        "/v1/filters/deploys",
        None,
        Some(json!({"name": "other", "filter": {}})),
    )
    .await;
    assert_eq!(
        (s, code(&v)),
        (400, "invalid_filter"),
        "renaming is refused: {v}"
    );
    let (s, v) = call(
        &hub,
        "PUT",
        "/v1/filters/deploys",
        None,
        Some(json!({"filter": {"severity": "nope"}})),
    )
    .await;
    assert_eq!((s, code(&v)), (400, "invalid_filter"), "{v}");
    let (_, v) = hub.get("/v1/filters/deploys").await;
    assert_eq!(
        v["filter"],
        json!({"type": ["deploy.failed"]}),
        "a refused PUT changed nothing"
    );
    let (s, v) = call(
        &hub,
        "PUT",
        "/v1/filters/missing",
        None,
        Some(json!({"filter": {}})),
    )
    .await;
    assert_eq!((s, code(&v)), (404, "unknown_filter"), "{v}");

    let (s, _) = call(&hub, "DELETE", "/v1/filters/deploys", None, None).await;
    assert_eq!(s, 204);
    let (s, v) = call(&hub, "DELETE", "/v1/filters/deploys", None, None).await;
    assert_eq!((s, code(&v)), (404, "unknown_filter"), "{v}");
    let (s, v) = hub.get("/v1/filters/deploys").await;
    assert_eq!((s, code(&v)), (404, "unknown_filter"), "{v}");
    let (s, _) = call(
        &hub,
        "POST",
        "/v1/filters",
        None,
        Some(json!({"name": "fourth"})),
    )
    .await;
    assert_eq!(s, 201, "a deletion frees a place under the cap");

    // Saved filters are stored with the log: they survive a restart.
    let (dir, tmp) = hub.stop().await;
    let hub = Hub::start_in(dir, |_| {}).await;
    let (s, v) = hub.get("/v1/filters/prod-errors").await;
    assert_eq!(
        (s, v["description"].as_str()),
        (200, Some("Errors in production")),
        "{v}"
    );
    hub.stop().await;
    drop(tmp);
}

#[tokio::test]
async fn roles_and_tenants() {
    let hub = auth_hub().await;
    let alice = token("alice", "acme", "subscriber", None);
    let bob = token("bob", "acme", "subscriber", None);
    let pub_ = token("pia", "acme", "publisher", None);
    let other = token("olga", "globex", "admin", None);

    let (s, v) = call(
        &hub,
        "POST",
        "/v1/filters",
        Some(&alice),
        Some(json!({"name": "mine", "filter": {"type": ["site.*"]}})),
    )
    .await;
    assert_eq!(s, 201, "a subscriber may save a filter: {v}");
    assert_eq!(v["created_by"], "alice");
    let (s, _) = call(
        &hub,
        "POST",
        "/v1/filters",
        None,
        Some(json!({"name": "anon"})),
    )
    .await;
    assert_eq!(s, 401, "no credential, no filters");

    // Another tenant sees nothing of it, whatever its role.
    let (s, v) = call(&hub, "GET", "/v1/filters/mine", Some(&other), None).await;
    assert_eq!((s, code(&v)), (404, "unknown_filter"), "{v}");
    let (_, v) = call(&hub, "GET", "/v1/filters", Some(&other), None).await;
    assert_eq!(v["filters"], json!([]));
    let (s, _) = call(&hub, "DELETE", "/v1/filters/mine", Some(&other), None).await;
    assert_eq!(s, 404);
    let (s, v) = call(&hub, "GET", "/v1/stream?filter=mine", Some(&other), None).await;
    assert_eq!((s, code(&v)), (404, "unknown_filter"), "{v}");
    // The same name in another tenant is another filter.
    let (s, _) = call(
        &hub,
        "POST",
        "/v1/filters",
        Some(&other),
        Some(json!({"name": "mine"})),
    )
    .await;
    assert_eq!(s, 201);

    // Every role of the tenant reads it; only its creator, a publisher or an admin changes it.
    let (s, v) = call(&hub, "GET", "/v1/filters/mine", Some(&bob), None).await;
    assert_eq!((s, v["filter"]["type"][0].as_str()), (200, Some("site.*")));
    let (s, v) = call(
        &hub,
        "PUT",
        "/v1/filters/mine",
        Some(&bob),
        Some(json!({"filter": {}})),
    )
    .await;
    assert_eq!((s, code(&v)), (403, "forbidden"), "{v}");
    let (s, _) = call(&hub, "DELETE", "/v1/filters/mine", Some(&bob), None).await;
    assert_eq!(s, 403);
    let (s, _) = call(
        &hub,
        "PUT",
        "/v1/filters/mine",
        Some(&alice),
        Some(json!({"filter": {"type": ["*"]}})),
    )
    .await;
    assert_eq!(s, 200, "its creator may change it");
    let (s, _) = call(&hub, "DELETE", "/v1/filters/mine", Some(&pub_), None).await;
    assert_eq!(s, 204, "a publisher may delete it");
    hub.stop().await;
}

#[tokio::test]
async fn a_narrowed_credential_still_receives_only_what_it_may() {
    let hub = auth_hub().await;
    let admin = token("root", "acme", "admin", None);
    let narrow = token("nora", "acme", "subscriber", Some(&["site.*"]));
    let (s, _) = call(
        &hub,
        "POST",
        "/v1/filters",
        Some(&narrow),
        Some(json!({"name": "all", "filter": {"type": ["*"]}})),
    )
    .await;
    assert_eq!(s, 201);
    let res = hub
        .http
        .get(hub.url("/v1/stream?filter=all&after=0"))
        .bearer_auth(&narrow)
        .send()
        .await
        .expect("stream");
    assert_eq!(res.status().as_u16(), 200);
    let mut sse = crier_testkit::Sse::from_response(res);
    let (s, v) = call(
        &hub,
        "POST",
        "/v1/events",
        Some(&admin),
        Some(json!([
            ev("user.created"),
            ev("site.created"),
            ev("billing.paid"),
            ev("site.deleted")
        ])),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let first = sse.next().await.expect("event");
    let second = sse.next().await.expect("event");
    assert_eq!(
        [first.event.as_str(), second.event.as_str()],
        ["site.created", "site.deleted"],
        "the saved filter is narrowed by the reader's own credential"
    );
    let (_, v) = call(&hub, "GET", "/v1/events?filter=all", Some(&narrow), None).await;
    let types: Vec<&str> = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(types, ["site.created", "site.deleted"]);
    hub.stop().await;
}

#[tokio::test]
async fn streams_history_websocket_and_replays_take_a_saved_filter_by_name() {
    let hub = Hub::start().await;
    let (s, _) = call(
        &hub,
        "POST",
        "/v1/filters",
        None,
        Some(json!({"name": "errors", "filter": {"severity": "error"}})),
    )
    .await;
    assert_eq!(s, 201);
    let err = |kind: &str| json!({"type": kind, "severity": "error"});
    let seqs = hub
        .publish(json!([ev("a.ok"), err("a.bad"), ev("b.ok"), err("b.bad")]))
        .await;

    // SSE.
    let mut sse = hub.sse("filter=errors&after=0", None).await;
    assert_eq!(sse.seqs(2).await, [seqs[1], seqs[3]]);
    // History.
    assert_eq!(hub.history_seqs("filter=errors").await, [seqs[1], seqs[3]]);
    // Unknown names and mixing with explicit parameters are clear errors.
    for path in ["/v1/stream?filter=nope", "/v1/events?filter=nope"] {
        let (s, v) = hub.get(path).await;
        assert_eq!((s, code(&v)), (404, "unknown_filter"), "{path}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap_or("")
                .contains("\"nope\""),
            "{v}"
        );
    }
    for path in [
        "/v1/stream?filter=errors&type=a.*",
        "/v1/events?severity=info&filter=errors",
    ] {
        let (s, v) = hub.get(path).await;
        assert_eq!((s, code(&v)), (400, "conflicting_filter"), "{path}: {v}");
    }
    let (s, v) = hub.get("/v1/stream?filter=Not%20A%20Name").await;
    assert_eq!((s, code(&v)), (400, "invalid_filter_name"), "{v}");

    // WebSocket: subscribe, history, and errors that leave the connection open.
    let mut ws = hub.ws().await;
    ws.subscribe("s1", json!("errors"), Some(0)).await;
    assert_eq!(ws.seqs("s1", 2).await, [seqs[1], seqs[3]]);
    ws.send(json!({"op": "subscribe", "id": "s2", "ref": "r1", "filter": "nope"}))
        .await;
    let m = ws.recv().await;
    assert_eq!(
        (m["op"].as_str(), m["code"].as_str(), m["ref"].as_str()),
        (Some("error"), Some("unknown_filter"), Some("r1")),
        "{m}"
    );
    ws.send(json!({"op": "history", "ref": "h", "filter": "errors", "after": 0}))
        .await;
    let m = ws.recv().await;
    let got: Vec<u64> = m["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(got, [seqs[1], seqs[3]], "{m}");
    ws.send(json!({"op": "ping", "ref": "p"})).await;
    assert_eq!(ws.recv().await["op"], "pong", "the connection stays usable");

    // Replays.
    let (s, v) = call(
        &hub,
        "POST",
        "/v1/replays",
        None,
        Some(json!({"filter": "errors", "since": "1h", "speed": "max"})),
    )
    .await;
    assert_eq!((s, v["total"].as_u64()), (201, Some(2)), "{v}");
    let (s, v) = call(
        &hub,
        "POST",
        "/v1/replays",
        None,
        Some(json!({"filter": "nope", "since": "1h"})),
    )
    .await;
    assert_eq!((s, code(&v)), (404, "unknown_filter"), "{v}");

    // The name is resolved when a reader opens: changing the saved filter later does not
    // change streams already open, and new streams get the new definition.
    let (s, _) = call(
        &hub,
        "PUT",
        "/v1/filters/errors",
        None,
        Some(json!({"filter": {"type": ["c.*"]}})),
    )
    .await;
    assert_eq!(s, 200);
    let mut fresh = hub.sse("filter=errors", None).await;
    let later = hub.publish(json!([ev("c.ok"), err("d.bad")])).await;
    assert_eq!(
        sse.seqs(1).await,
        [later[1]],
        "the open stream keeps its definition"
    );
    assert_eq!(ws.seqs("s1", 1).await, [later[1]]);
    assert_eq!(
        fresh.seqs(1).await,
        [later[0]],
        "a new stream resolves the new one"
    );
    hub.stop().await;
}

/// Two hub nodes on one PostgreSQL schema: a filter saved through one is listed, used and
/// capped through the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_a_filter_saved_on_one_node_works_on_another() {
    use crier_server::config::StoreKind;
    if !pg_reachable("the PostgreSQL saved-filter test").await {
        return;
    }
    let schema = format!("crier_filters_{}", std::process::id());
    drop_schema(&schema).await;
    let node = |id: &'static str| {
        let schema = schema.clone();
        Hub::start_with(move |s| {
            s.store = StoreKind::Postgres(pg_url());
            s.store_schema = schema;
            s.node_id = id.into();
            s.limits.max_filters_per_tenant = 2;
        })
    };
    let a = node("a").await;
    let b = node("b").await;
    let (s, v) = call(
        &a,
        "POST",
        "/v1/filters",
        None,
        Some(json!({"name": "errors", "filter": {"severity": "error"}})),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = b.get("/v1/filters/errors").await;
    assert_eq!(
        (s, v["filter"]["severity"].as_str()),
        (200, Some("error")),
        "{v}"
    );
    let (s, v) = call(
        &b,
        "POST",
        "/v1/filters",
        None,
        Some(json!({"name": "errors"})),
    )
    .await;
    assert_eq!((s, code(&v)), (409, "filter_exists"), "{v}");
    let (s, _) = call(
        &b,
        "POST",
        "/v1/filters",
        None,
        Some(json!({"name": "second"})),
    )
    .await;
    assert_eq!(s, 201);
    let (s, v) = call(
        &a,
        "POST",
        "/v1/filters",
        None,
        Some(json!({"name": "third"})),
    )
    .await;
    assert_eq!(
        (s, code(&v)),
        (409, "too_many_filters"),
        "the cap counts both nodes' filters: {v}"
    );
    let seqs = a
        .publish(json!([ev("x.ok"), {"type": "x.bad", "severity": "error"}]))
        .await;
    let (s, v) = b.get("/v1/events?filter=errors").await;
    assert_eq!(s, 200, "{v}");
    let got: Vec<u64> = v["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(got, [seqs[1]]);
    let (s, _) = call(&b, "DELETE", "/v1/filters/errors", None, None).await;
    assert_eq!(s, 204);
    let (s, v) = a.get("/v1/stream?filter=errors").await;
    assert_eq!((s, code(&v)), (404, "unknown_filter"), "{v}");
    a.stop().await;
    b.stop().await;
    drop_schema(&schema).await;
}

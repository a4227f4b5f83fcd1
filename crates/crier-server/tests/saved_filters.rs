//! Saved named filters (`/v1/filters`) over real sockets and a real SQLite file: the CRUD
//! contract and its errors, roles and tenants, and `filter=NAME` on SSE, history, the
//! WebSocket and replays.

use crier_testkit::checks::{error_code as code, error_message, numbers, pg_schema, stream, texts};
use crier_testkit::http::{check, send, Answer};
use crier_testkit::services::{drop_schema, pg_url};
use crier_testkit::{ev, Hub};
use serde_json::{json, Value};

const SECRET: &str = "test-secret-of-at-least-32-characters!!";
const F: &str = "/v1/filters";

/// POSTs `body` to `/v1/filters` with `credential` ("" for none).
async fn save(hub: &Hub, credential: &str, body: Value) -> Answer {
    send(hub, "POST", F, "", Some(&body.to_string()), credential).await
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
    let prod = r#"{"name": "prod-errors", "filter": {"severity": "error", "tags": ["prod"]}, "description": "Errors in production"}"#;
    #[rustfmt::skip]
    let a = check(&hub, &[
        ("POST", F, "", Some(prod), "", 201, ""),
        ("POST", F, "", Some(r#"{"name": "prod-errors", "filter": {}}"#), "", 409, "filter_exists"),
        ("GET", "/v1/filters/prod-errors", "", None, "", 200, ""),
    ]).await;
    let v = &a[0].body;
    assert_eq!(v["name"], "prod-errors");
    assert_eq!(v["filter"], json!({"severity": "error", "tags": ["prod"]}));
    assert_eq!(v["description"], "Errors in production");
    assert_eq!(v["created_by"], "anonymous");
    assert!(
        v["created_at"].is_string() && v["updated_at"].is_string(),
        "{v}"
    );
    assert_eq!(
        a[2].body["filter"]["severity"], "error",
        "a refused duplicate changed nothing"
    );

    for bad in ["Prod", "", "-x", "has space", "a/b", &"x".repeat(65), "ünï"] {
        let a = save(&hub, "", json!({"name": bad})).await;
        let v = &a.body;
        assert_eq!(
            (a.status, code(v)),
            (400, "invalid_filter_name"),
            "{bad:?}: {v}"
        );
        assert!(error_message(v).contains("lowercase"), "{v}");
    }

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
        let a = save(&hub, "", json!({"name": "bad", "filter": filter})).await;
        assert_eq!((a.status, a.code()), (400, want), "{filter}: {}", a.body);
    }
    // Then the per-tenant cap, the listing, PUT (which replaces the definition and the
    // description and keeps the creator) and DELETE.
    let deploys = r#"{"name": "deploys", "filter": {"type": ["deploy.*"]}}"#;
    let audit = r#"{"name": "audit", "filter": {"type": ["deploy.*"]}}"#;
    let d = "/v1/filters/deploys";
    #[rustfmt::skip]
    let a = check(&hub, &[
        ("GET", "/v1/filters/Bad%20Name", "", None, "", 400, "invalid_filter_name"),
        ("POST", F, "", Some(r#"{"name": "x", "colour": "red"}"#), "", 400, "invalid_json"),
        ("POST", F, "content-type: text/plain", Some(r#"{"name":"x"}"#), "", 415, "unsupported_media_type"),
        ("POST", F, "", Some(deploys), "", 201, ""),
        ("POST", F, "", Some(audit), "", 201, ""),
        ("POST", F, "", Some(r#"{"name": "fourth"}"#), "", 409, "too_many_filters"),
        ("GET", F, "", None, "", 200, ""),
        ("PUT", d, "", Some(r#"{"filter": {"type": ["deploy.failed"]}}"#), "", 200, ""),
        // Renaming is refused.
        ("PUT", d, "", Some(r#"{"name": "other", "filter": {}}"#), "", 400, "invalid_filter"),
        ("PUT", d, "", Some(r#"{"filter": {"severity": "nope"}}"#), "", 400, "invalid_filter"),
        ("GET", d, "", None, "", 200, ""),
        ("PUT", "/v1/filters/missing", "", Some(r#"{"filter": {}}"#), "", 404, "unknown_filter"),
        ("DELETE", d, "", None, "", 204, ""),
        ("DELETE", d, "", None, "", 404, "unknown_filter"),
        ("GET", d, "", None, "", 404, "unknown_filter"),
        // A deletion frees a place under the cap.
        ("POST", F, "", Some(r#"{"name": "fourth"}"#), "", 201, ""),
    ]).await;
    assert!(error_message(&a[5].body).contains("limits.max_filters_per_tenant"));
    let names = texts(&a[6].body, "filters", "name");
    assert_eq!(names, ["audit", "deploys", "prod-errors"], "listed by name");
    let v = &a[7].body;
    assert_eq!(v["filter"], json!({"type": ["deploy.failed"]}));
    assert_eq!(v["description"], Value::Null);
    assert_eq!(v["created_by"], "anonymous");
    assert_eq!(
        a[10].body["filter"],
        json!({"type": ["deploy.failed"]}),
        "a refused PUT changed nothing"
    );

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
    let mine = "/v1/filters/mine";
    #[rustfmt::skip]
    let a = check(&hub, &[
        // A subscriber may save a filter; no credential, no filters.
        ("POST", F, "", Some(r#"{"name": "mine", "filter": {"type": ["site.*"]}}"#), &alice, 201, ""),
        ("POST", F, "", Some(r#"{"name": "anon"}"#), "", 401, ""),
        // Another tenant sees nothing of it, whatever its role.
        ("GET", mine, "", None, &other, 404, "unknown_filter"),
        ("GET", F, "", None, &other, 200, ""),
        ("DELETE", mine, "", None, &other, 404, ""),
        ("GET", "/v1/stream?filter=mine", "", None, &other, 404, "unknown_filter"),
        // The same name in another tenant is another filter.
        ("POST", F, "", Some(r#"{"name": "mine"}"#), &other, 201, ""),
        // Every role of the tenant reads it; only its creator, a publisher or an admin
        // changes it.
        ("GET", mine, "", None, &bob, 200, ""),
        ("PUT", mine, "", Some(r#"{"filter": {}}"#), &bob, 403, "forbidden"),
        ("DELETE", mine, "", None, &bob, 403, ""),
        ("PUT", mine, "", Some(r#"{"filter": {"type": ["*"]}}"#), &alice, 200, ""),
        ("DELETE", mine, "", None, &pub_, 204, ""),
    ]).await;
    assert_eq!(a[0].body["created_by"], "alice");
    assert_eq!(a[3].body["filters"], json!([]));
    assert_eq!(a[7].body["filter"]["type"][0].as_str(), Some("site.*"));
    hub.stop().await;
}

#[tokio::test]
async fn a_narrowed_credential_still_receives_only_what_it_may() {
    let hub = auth_hub().await;
    let admin = token("root", "acme", "admin", None);
    let narrow = token("nora", "acme", "subscriber", Some(&["site.*"]));
    let all = json!({"name": "all", "filter": {"type": ["*"]}});
    assert_eq!(save(&hub, &narrow, all).await.status, 201);
    let mut sse = stream(&hub, "/v1/stream?filter=all&after=0", &narrow).await;
    let batch = json!([
        ev("user.created"),
        ev("site.created"),
        ev("billing.paid"),
        ev("site.deleted")
    ])
    .to_string();
    check(
        &hub,
        &[("POST", "/v1/events", "", Some(&batch), &admin, 201, "")],
    )
    .await;
    let first = sse.next().await.expect("event");
    let second = sse.next().await.expect("event");
    assert_eq!(
        [first.event.as_str(), second.event.as_str()],
        ["site.created", "site.deleted"],
        "the saved filter is narrowed by the reader's own credential"
    );
    let a = send(&hub, "GET", "/v1/events?filter=all", "", None, &narrow).await;
    assert_eq!(
        texts(&a.body, "events", "type"),
        ["site.created", "site.deleted"]
    );
    hub.stop().await;
}

#[tokio::test]
async fn streams_history_websocket_and_replays_take_a_saved_filter_by_name() {
    let hub = Hub::start().await;
    let errors = json!({"name": "errors", "filter": {"severity": "error"}});
    assert_eq!(save(&hub, "", errors).await.status, 201);
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
        assert!(error_message(&v).contains("\"nope\""), "{v}");
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
    assert_eq!(numbers(&m, "events", "seq"), [seqs[1], seqs[3]], "{m}");
    ws.send(json!({"op": "ping", "ref": "p"})).await;
    assert_eq!(ws.recv().await["op"], "pong", "the connection stays usable");

    // Replays; then the name is resolved when a reader opens: changing the saved filter
    // later does not change streams already open, and new streams get the new definition.
    let r = "/v1/replays";
    #[rustfmt::skip]
    let a = check(&hub, &[
        ("POST", r, "", Some(r#"{"filter": "errors", "since": "1h", "speed": "max"}"#), "", 201, ""),
        ("POST", r, "", Some(r#"{"filter": "nope", "since": "1h"}"#), "", 404, "unknown_filter"),
        ("PUT", "/v1/filters/errors", "", Some(r#"{"filter": {"type": ["c.*"]}}"#), "", 200, ""),
    ]).await;
    assert_eq!(a[0].body["total"].as_u64(), Some(2), "{}", a[0].body);
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
    let Some(schema) = pg_schema("the PostgreSQL saved-filter test", "crier_filters").await else {
        return;
    };
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
    let errors = r#"{"name": "errors", "filter": {"severity": "error"}}"#;
    check(&a, &[("POST", F, "", Some(errors), "", 201, "")]).await;
    let (s, v) = b.get("/v1/filters/errors").await;
    assert_eq!(
        (s, v["filter"]["severity"].as_str()),
        (200, Some("error")),
        "{v}"
    );
    #[rustfmt::skip]
    check(&b, &[
        ("POST", F, "", Some(r#"{"name": "errors"}"#), "", 409, "filter_exists"),
        ("POST", F, "", Some(r#"{"name": "second"}"#), "", 201, ""),
    ]).await;
    // The cap counts both nodes' filters.
    #[rustfmt::skip]
    check(&a, &[("POST", F, "", Some(r#"{"name": "third"}"#), "", 409, "too_many_filters")]).await;
    let seqs = a
        .publish(json!([ev("x.ok"), {"type": "x.bad", "severity": "error"}]))
        .await;
    let (s, v) = b.get("/v1/events?filter=errors").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(numbers(&v, "events", "seq"), [seqs[1]]);
    check(
        &b,
        &[("DELETE", "/v1/filters/errors", "", None, "", 204, "")],
    )
    .await;
    let (s, v) = a.get("/v1/stream?filter=errors").await;
    assert_eq!((s, code(&v)), (404, "unknown_filter"), "{v}");
    a.stop().await;
    b.stop().await;
    drop_schema(&schema).await;
}

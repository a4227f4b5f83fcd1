//! GraphQL over real sockets: mutations emit exactly the events the REST paths emit, queries
//! read the same stores, errors carry the REST codes, limits hold, and the
//! `graphql-transport-ws` subscription delivers in seq order and resumes with `after`.

use std::time::Duration;

use crier_testkit::checks::expect;
use crier_testkit::http::check;
use crier_testkit::{Hub, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "graphql-secret-of-at-least-32-chars!!";

fn token(tenant: &str, role: &str) -> String {
    crier_testkit::auth::token(SECRET, &format!("{role}@{tenant}"), tenant, role, None)
}

async fn start() -> Hub {
    Hub::start_with(|s| {
        crier_testkit::auth::with_hs256(s, SECRET);
    })
    .await
}

async fn gql(hub: &Hub, tok: &str, query: &str, variables: Value) -> Value {
    let body = json!({"query": query, "variables": variables});
    expect(hub, "POST", "/graphql", tok, Some(&body), 200, "").await
}

/// A GraphQL request without variables, as [`gql`] sends it.
async fn ask(hub: &Hub, tok: &str, query: &str) -> Value {
    gql(hub, tok, query, json!({})).await
}

fn err_code(v: &Value) -> &str {
    v["errors"][0]["extensions"]["code"].as_str().unwrap_or("")
}

/// A tenant's events without the fields that differ between two equal histories.
async fn shape(hub: &Hub, tenant: &str) -> Vec<Value> {
    let v: Value = hub
        .json("/v1/events?limit=1000", &token(tenant, "subscriber"))
        .await;
    v["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let mut e = e.clone();
            for k in ["seq", "id", "time", "tenant", "actor"] {
                e.as_object_mut().expect("object").remove(k);
            }
            e
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutations_emit_the_same_events_as_rest() {
    let hub = start().await;
    // Tenant "rest" through REST...
    let r = token("rest", "publisher");
    let nyc = "/v1/entities/site/nyc";
    let owns = "/v1/links/owns/group/ops/site/nyc";
    #[rustfmt::skip]
    check(&hub, &[
        ("PUT", nyc, "", Some(r#"{"name": "NYC", "floors": 3}"#), &r, 201, ""),
        ("PATCH", nyc, "", Some(r#"{"floors": null}"#), &r, 200, ""),
        ("PUT", nyc, "", Some(r#"{"name": "NYC"}"#), &r, 200, ""),
        ("PUT", "/v1/entities/group/ops", "", Some("{}"), &r, 201, ""),
        ("PUT", "/v1/links/in/site/nyc/group/ops", "", Some(r#"{"w": 1}"#), &r, 201, ""),
        ("PUT", owns, "", None, &r, 201, ""),
        ("DELETE", owns, "", None, &r, 200, ""),
        ("DELETE", nyc, "", None, &r, 200, ""),
    ]).await;
    // ...and tenant "gql" through GraphQL, the same steps.
    let g = token("gql", "publisher");
    let steps = [
        (
            r#"mutation { putEntity(kind: "site", id: "nyc", value: {name: "NYC", floors: 3}) { version createdAt } }"#,
            json!({}),
        ),
        (
            r#"mutation($p: JSON!) { patchEntity(kind: "site", id: "nyc", patch: $p, ifMatch: 1) { version value } }"#,
            json!({"p": {"floors": null}}),
        ),
        (
            r#"mutation { putEntity(kind: "site", id: "nyc", value: {name: "NYC"}) { version } }"#,
            json!({}),
        ),
        (
            r#"mutation { putEntity(kind: "group", id: "ops", value: {}) { version } }"#,
            json!({}),
        ),
        (
            r#"mutation { link(type: "in", source: "site/nyc", target: "group/ops", metadata: {w: 1}) { type source target metadata } }"#,
            json!({}),
        ),
        (
            r#"mutation { link(type: "owns", source: "group/ops", target: "site/nyc") { type } }"#,
            json!({}),
        ),
        (
            r#"mutation { unlink(type: "owns", source: "group/ops", target: "site/nyc") }"#,
            json!({}),
        ),
        (
            r#"mutation { deleteEntity(kind: "site", id: "nyc") }"#,
            json!({}),
        ),
    ];
    for (i, (q, vars)) in steps.iter().enumerate() {
        let v = gql(&hub, &g, q, vars.clone()).await;
        assert!(v["errors"].is_null(), "step {i}: {v}");
        if i == 1 {
            assert_eq!(
                v["data"]["patchEntity"],
                json!({"version": 2, "value": {"name": "NYC"}})
            );
        }
        if i == 2 {
            assert_eq!(
                v["data"]["putEntity"]["version"], 2,
                "no change, same version"
            );
        }
        if i == 4 {
            assert_eq!(
                v["data"]["link"],
                json!({"type": "in", "source": "site/nyc", "target": "group/ops", "metadata": {"w": 1}})
            );
        }
    }
    let a = shape(&hub, "rest").await;
    let b = shape(&hub, "gql").await;
    assert_eq!(a.len(), 8, "{a:#?}");
    assert_eq!(a, b, "GraphQL and REST emit the same events");

    // Queries read the same stores.
    let v = ask(&hub, &g, r#"{ entity(kind: "group", id: "ops") { kind id version value } missing: entity(kind: "site", id: "nyc") { id } entities(kind: "group") { id } }"#).await;
    assert_eq!(
        v["data"]["entity"],
        json!({"kind": "group", "id": "ops", "version": 1, "value": {}})
    );
    assert_eq!(v["data"]["missing"], Value::Null);
    assert_eq!(v["data"]["entities"], json!([{"id": "ops"}]));
    let first = ask(&hub, &g, "{ events(limit: 1) { seq } }").await["data"]["events"][0]["seq"]
        .as_u64()
        .expect("first seq");
    let v = gql(&hub, &g, r#"query($f: EventFilter, $a: Seq) { events(filter: $f, after: $a, limit: 3) { seq type subject data } }"#, json!({"f": {"type": ["site.*", "link.*"]}, "a": first})).await;
    let evs = v["data"]["events"].as_array().expect("events");
    assert_eq!(evs.len(), 3, "{v}");
    assert!(
        evs.iter().all(|e| e["seq"].as_u64() > Some(first)),
        "after is exclusive: {v}"
    );
    assert_eq!(evs[0]["type"], "site.updated");
    let ops = r#"{ entity(kind: "group", id: "ops") { id } }"#;
    let v = ask(&hub, &token("rest", "subscriber"), ops).await;
    assert_eq!(v["data"]["entity"]["id"], "ops");

    // Another tenant's entity does not exist here; publish works and answers the event.
    let v = ask(&hub, &token("other", "admin"), ops).await;
    assert_eq!(v["data"]["entity"], Value::Null);
    let v = ask(&hub, &g, r#"mutation { publish(event: {type: "monitor.failed", severity: "error", tags: ["nyc"], data: {n: 1}}) { seq type severity tags data actor tenant source } }"#).await;
    assert_eq!(v["data"]["publish"]["type"], "monitor.failed");
    assert_eq!(v["data"]["publish"]["actor"], "publisher@gql");
    assert_eq!(v["data"]["publish"]["tenant"], "gql");
    assert_eq!(v["data"]["publish"]["source"], "api");
    assert!(v["data"]["publish"]["seq"].as_u64().is_some());
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_carry_codes_and_limits_hold() {
    let hub = start().await;
    let w = token("acme", "publisher");
    let s = token("acme", "subscriber");
    let v = ask(
        &hub,
        &w,
        r#"mutation { putEntity(kind: "site", id: "a", value: {}) { version } }"#,
    )
    .await;
    assert_eq!(v["data"]["putEntity"]["version"], 1);
    for (tok, q, code) in [
        (
            &w,
            r#"mutation { putEntity(kind: "site", id: "a", value: {x: 1}, ifMatch: 5) { version } }"#,
            "precondition_failed",
        ),
        (
            &w,
            r#"mutation { patchEntity(kind: "site", id: "zz", patch: {}) { version } }"#,
            "not_found",
        ),
        (
            &w,
            r#"mutation { putEntity(kind: "si.te", id: "a", value: {}) { version } }"#,
            "invalid_entity",
        ),
        (
            &w,
            r#"mutation { putEntity(kind: "site", id: "a", value: [1]) { version } }"#,
            "invalid_entity",
        ),
        (
            &w,
            r#"mutation { link(type: "x", source: "site/a", target: "site/none") { type } }"#,
            "not_found",
        ),
        (
            &w,
            r#"mutation { link(type: "x", source: "site", target: "site/a") { type } }"#,
            "invalid_entity",
        ),
        (
            &s,
            r#"mutation { putEntity(kind: "site", id: "b", value: {}) { version } }"#,
            "forbidden",
        ),
        (
            &s,
            r#"mutation { publish(event: {type: "x"}) { seq } }"#,
            "forbidden",
        ),
        (
            &w,
            r#"mutation { publish(event: {type: "bad type!"}) { seq } }"#,
            "invalid_event",
        ),
        (
            &w,
            r#"{ events(filter: {severity: "loud"}) { seq } }"#,
            "invalid_filter",
        ),
        (&w, r#"{ events(limit: 5000) { seq } }"#, "invalid_query"),
    ] {
        let v = ask(&hub, tok, q).await;
        assert_eq!(err_code(&v), code, "{q}: {v}");
    }
    // A query nested deeper than the limit is refused before it runs.
    let deep = format!("{{ __schema {{ types {{ {} name {} }} }} }}", "fields { type { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType { ofType {", "} } } } } } } } } } }");
    let v = ask(&hub, &w, &deep).await;
    let msg = v["errors"][0]["message"].as_str().unwrap_or("");
    assert!(msg.contains("too deep"), "{v}");
    // Many aliased lists exceed the complexity limit: a list costs its `limit` times its
    // selection.
    let wide: String = (0..40)
        .map(|i| format!("a{i}: entities(kind: \"site\", limit: 1000) {{ id }} "))
        .collect();
    let v = ask(&hub, &w, &format!("{{ {wide} }}")).await;
    let msg = v["errors"][0]["message"].as_str().unwrap_or("");
    assert!(msg.to_lowercase().contains("complex"), "{v}");
    // Standard introspection works (tools rely on it).
    let v = ask(
        &hub,
        &w,
        "{ __schema { queryType { name } subscriptionType { name } } }",
    )
    .await;
    assert_eq!(
        v["data"]["__schema"]["subscriptionType"]["name"],
        "Subscription"
    );
    // Transport errors are the REST ones.
    let q = json!({"query": "{ entities(kind: \"x\") { id } }"}).to_string();
    let g = "/graphql";
    #[rustfmt::skip]
    check(&hub, &[
        ("POST", g, "", Some(&q), "", 401, ""),
        ("POST", g, "content-type: text/plain", Some("{}"), &w, 415, ""),
        ("POST", g, "content-type: application/json", Some("{nope"), &w, 400, ""),
        ("GET", g, "", None, &w, 400, ""),
    ]).await;
    hub.stop().await;
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn gql_ws(hub: &Hub, init: Value) -> Socket {
    crier_testkit::graphql::open_with(hub, init).await
}

async fn recv(ws: &mut Socket) -> Option<Value> {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")?;
        match m.ok()? {
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "ping" {
                    ws.send(Message::text(r#"{"type":"pong"}"#)).await.ok()?;
                    continue;
                }
                return Some(v);
            }
            Message::Close(f) => {
                return Some(json!({
                    "closed": f.as_ref().map(|f| u16::from(f.code)),
                    "reason": f.map(|f| f.reason.to_string()),
                }))
            }
            _ => continue,
        }
    }
}

async fn subscribe(ws: &mut Socket, id: &str, after: Option<u64>) {
    let q = "subscription($after: Seq) { events(filter: {type: [\"site.*\"]}, after: $after) { seq type subject data } }";
    ws.send(Message::text(json!({"id": id, "type": "subscribe", "payload": {"query": q, "variables": {"after": after}}}).to_string()))
        .await
        .expect("subscribe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_delivers_in_order_and_resumes() {
    let hub = start().await;
    let w = token("acme", "publisher");
    // A bad token is refused at connection_init with a reason, a missing one too.
    let mut ws = gql_ws(&hub, json!({"token": "nope"})).await;
    let closed = recv(&mut ws).await.expect("close");
    assert_eq!(closed["closed"], 1002, "{closed}");
    assert!(
        closed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("token")),
        "{closed}"
    );
    let mut ws = gql_ws(&hub, json!({})).await;
    let closed = recv(&mut ws).await.expect("close");
    assert!(
        closed["reason"]
            .as_str()
            .is_some_and(|r| r.contains("credential is required")),
        "{closed}"
    );

    let mut ws = gql_ws(&hub, json!({"token": token("acme", "subscriber")})).await;
    assert_eq!(recv(&mut ws).await.expect("ack")["type"], "connection_ack");
    subscribe(&mut ws, "s1", None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seqs = Vec::new();
    for i in 0..20 {
        let q = format!(
            r#"mutation {{ putEntity(kind: "site", id: "s{}", value: {{n: {i}}}) {{ version }} }}"#,
            i % 4
        );
        let v = ask(&hub, &w, &q).await;
        assert!(v["errors"].is_null(), "{v}");
        // Noise another filter and another tenant must not see.
        ask(
            &hub,
            &w,
            r#"mutation { putEntity(kind: "user", id: "u", value: {x: 1}) { version } }"#,
        )
        .await;
        ask(
            &hub,
            &token("beta", "publisher"),
            r#"mutation { putEntity(kind: "site", id: "b", value: {}) { version } }"#,
        )
        .await;
    }
    for _ in 0..20 {
        let v = recv(&mut ws).await.expect("next");
        assert_eq!(v["type"], "next", "{v}");
        assert_eq!(v["id"], "s1");
        let e = &v["payload"]["data"]["events"];
        assert!(
            e["type"].as_str().is_some_and(|t| t.starts_with("site.")),
            "{v}"
        );
        assert_ne!(e["subject"], "site/b", "another tenant's event leaked");
        seqs.push(e["seq"].as_u64().expect("seq"));
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in seq order: {seqs:?}"
    );
    // Resume: a new socket subscribing after the 10th seq gets exactly the last 10, then live.
    drop(ws);
    let mut ws = gql_ws(&hub, json!({"token": token("acme", "subscriber")})).await;
    assert_eq!(recv(&mut ws).await.expect("ack")["type"], "connection_ack");
    subscribe(&mut ws, "again", Some(seqs[9])).await;
    let mut resumed = Vec::new();
    for _ in 0..10 {
        let v = recv(&mut ws).await.expect("next");
        resumed.push(v["payload"]["data"]["events"]["seq"].as_u64().expect("seq"));
    }
    assert_eq!(resumed, seqs[10..]);
    let v = ask(
        &hub,
        &w,
        r#"mutation { deleteEntity(kind: "site", id: "s0") }"#,
    )
    .await;
    assert_eq!(v["data"]["deleteEntity"], true);
    let v = recv(&mut ws).await.expect("live");
    assert_eq!(v["payload"]["data"]["events"]["type"], "site.deleted");
    assert!(v["payload"]["data"]["events"]["seq"].as_u64() > seqs.last().copied());
    // complete stops the subscription.
    ws.send(Message::text(r#"{"id":"again","type":"complete"}"#))
        .await
        .expect("complete");
    hub.stop().await;
}

//! §12.5 over real sockets: a credential's `subscribe` patterns bound every path it reads,
//! including webhook subscriptions it makes or changes, duplicate publishes, replays made by
//! someone else and stats.

#[allow(dead_code)]
mod harden;

use std::time::Duration;

use crier_testkit::checks::stream;
use crier_testkit::Hub;
use harden::{
    call, gql_recv, gql_subscribe, hub_with, json_call, post_json, token, ws, ws_refused, Receiver,
};
use serde_json::{json, Value};

const NARROW: &[&str] = &["public.*"];

fn no_secret(what: &str, text: &str) {
    assert!(
        !text.contains("secret.") && !text.contains("hunter2"),
        "{what} leaked a secret event: {text}"
    );
}

/// Creates a subscription of `body` with `tok`: the status and the answer.
async fn subscribe(hub: &Hub, tok: &str, body: Value) -> (u16, Value) {
    let (s, v, _) = post_json(hub, "/v1/subscriptions", tok, body).await;
    (s, v)
}

async fn publish_as_admin(hub: &Hub, events: Value) {
    let admin = token("root", "admin", None);
    let (s, v, _) = post_json(hub, "/v1/events", &admin, events).await;
    assert_eq!(s, 201, "{v}");
}

#[tokio::test]
async fn webhook_subscriptions_keep_the_narrowing_of_whoever_made_or_changed_them() {
    let rx = Receiver::start().await;
    let hub = hub_with(|s| s.webhooks.allow_private = true).await;
    let narrow = token("n", "publisher", Some(NARROW));
    let wide = token("w", "publisher", None);
    // Made by the narrowed credential with an empty filter: narrowed when stored.
    let (s, mine) = subscribe(&hub, &narrow, json!({"webhook": {"url": rx.url("mine")}})).await;
    assert_eq!(s, 201, "{mine}");
    assert_eq!(mine["narrowed_to"], json!(["public.*"]), "{mine}");
    assert_eq!(mine["filter"], json!({}), "{mine}");
    // A filter wholly outside the credential's patterns: 403.
    let (s, v) = subscribe(
        &hub,
        &narrow,
        json!({"filter": {"type": ["secret.*"]}, "webhook": {"url": rx.url("x")}}),
    )
    .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (403, Some("forbidden")),
        "{v}"
    );
    // Made wide, then pointed elsewhere by the narrowed credential: narrowed by the change.
    let (s, theirs) = subscribe(&hub, &wide, json!({"webhook": {"url": rx.url("wide")}})).await;
    assert_eq!(s, 201, "{theirs}");
    assert_eq!(theirs["narrowed_to"], Value::Null);
    let id = theirs["id"].as_str().expect("id");
    let (s, moved, _) = call(
        &hub,
        "PATCH",
        &format!("/v1/subscriptions/{id}"),
        &narrow,
        Some((
            "application/json",
            json!({"webhook": {"url": rx.url("moved")}}).to_string(),
        )),
    )
    .await;
    assert_eq!(s, 200, "{moved}");
    assert_eq!(moved["narrowed_to"], json!(["public.*"]), "{moved}");
    publish_as_admin(
        &hub,
        json!([
            {"type": "secret.created", "data": {"pw": "hunter2"}},
            {"type": "public.one"},
            {"type": "secret.updated", "data": {"pw": "hunter2"}},
            {"type": "public.two"}
        ]),
    )
    .await;
    for path in ["mine", "moved"] {
        let got = rx.wait_for(path, "public.two").await;
        assert_eq!(got.len(), 2, "/{path}: {got:?}");
        no_secret(path, &got.join("\n"));
    }
    // Deliveries name events: a narrowed credential lists them only for a subscription
    // that reads nothing beyond its patterns.
    let (s, other) = subscribe(
        &hub,
        &wide,
        json!({"webhook": {"url": rx.url("other")}, "paused": true}),
    )
    .await;
    assert_eq!(s, 201, "{other}");
    let other_id = other["id"].as_str().expect("id");
    let path = format!("/v1/subscriptions/{other_id}/deliveries");
    assert_eq!(call(&hub, "GET", &path, &narrow, None).await.0, 403);
    assert_eq!(call(&hub, "GET", &path, &wide, None).await.0, 200);
    let mine_id = mine["id"].as_str().expect("id");
    let path = format!("/v1/subscriptions/{mine_id}/deliveries");
    let (s, v, text) = call(&hub, "GET", &path, &narrow, None).await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["deliveries"].as_array().is_some_and(|d| d.len() <= 2),
        "{v}"
    );
    no_secret("deliveries", &text);
    // Durable: the narrowing is read back after a restart.
    let (dir, tmp) = hub.stop().await;
    let hub = Hub::start_in(dir, |s| {
        harden::with_auth(s);
        s.webhooks.allow_private = true;
    })
    .await;
    publish_as_admin(
        &hub,
        json!([{"type": "secret.deleted", "data": {"pw": "hunter2"}}, {"type": "public.three"}]),
    )
    .await;
    for path in ["mine", "moved"] {
        let got = rx.wait_for(path, "public.three").await;
        no_secret(path, &got.join("\n"));
    }
    hub.stop().await;
    drop(tmp);
}

#[tokio::test]
async fn a_duplicate_publish_never_answers_the_stored_event() {
    let hub = hub_with(|_| {}).await;
    publish_as_admin(
        &hub,
        json!({"id": "dup-1", "type": "secret.key", "data": {"pw": "hunter2"}}),
    )
    .await;
    let narrow = token("n", "publisher", Some(NARROW));
    let expected = json!({"id": "dup-1", "seq": 1, "duplicate": true});
    // HTTP: JSON, NDJSON and CloudEvents bodies.
    for (ct, body) in [
        (
            "application/json",
            json!({"id": "dup-1", "type": "public.x"}).to_string(),
        ),
        (
            "application/x-ndjson",
            json!({"id": "dup-1", "type": "public.x"}).to_string(),
        ),
        (
            "application/cloudevents+json",
            json!({"specversion": "1.0", "id": "dup-1", "source": "s", "type": "public.x"})
                .to_string(),
        ),
    ] {
        let (s, v, text) = call(&hub, "POST", "/v1/events", &narrow, Some((ct, body))).await;
        assert_eq!(s, 201, "{ct}: {v}");
        assert_eq!(v["events"][0], expected, "{ct}");
        no_secret(ct, &text);
    }
    // WebSocket.
    let mut w = ws(&hub, &narrow).await;
    w.send(json!({"op": "publish", "ref": "p", "event": {"id": "dup-1", "type": "public.x"}}))
        .await;
    let m = w.recv().await;
    assert_eq!(
        (&m["op"], &m["duplicate"], &m["seq"]),
        (&json!("published"), &json!(true), &json!(1)),
        "{m}"
    );
    no_secret("ws publish", &m.to_string());
    // GraphQL: the stored seq with `duplicate: true`, and nothing of the stored event.
    let q = json!({
        "query": "mutation($e: JSON!) { publish(event: $e) { seq id type source data metadata duplicate } }",
        "variables": {"e": {"id": "dup-1", "type": "public.x"}}
    });
    let (s, v, text) = post_json(&hub, "/graphql", &narrow, q).await;
    assert_eq!(s, 200, "{v}");
    let p = &v["data"]["publish"];
    assert_eq!(
        (&p["seq"], &p["id"], &p["duplicate"], &p["data"]),
        (&json!(1), &json!("dup-1"), &json!(true), &Value::Null),
        "{v}"
    );
    assert_eq!(
        p["type"], "public.x",
        "what was sent, not what is stored: {v}"
    );
    no_secret("graphql publish", &text);
    // A fresh publish over GraphQL still answers the stored event.
    let q = json!({
        "query": "mutation { publish(event: {type: \"public.fresh\", data: {a: 1}}) { seq type data duplicate } }"
    });
    let (_, v, _) = post_json(&hub, "/graphql", &narrow, q).await;
    assert_eq!(v["data"]["publish"]["duplicate"], false, "{v}");
    assert_eq!(v["data"]["publish"]["data"], json!({"a": 1}), "{v}");
}

/// Reads a replay stream to its end: the events' types, the raw text and the final status.
async fn replay_stream(hub: &Hub, id: &str, token: &str) -> (Vec<String>, String, Value) {
    let mut sse = stream(hub, &format!("/v1/replays/{id}/stream"), token).await;
    let mut types = Vec::new();
    let mut text = String::new();
    let mut done = Value::Null;
    while let Some(m) = sse.next().await {
        text.push_str(&m.data);
        if m.event == "crier.replay_done" {
            done = m.json();
            break;
        }
        types.push(m.json()["type"].as_str().expect("type").to_string());
    }
    (types, text, done)
}

#[tokio::test]
async fn a_replay_made_by_another_streams_only_what_the_reader_may_read() {
    let hub = hub_with(|_| {}).await;
    publish_as_admin(
        &hub,
        json!([
            {"type": "secret.a", "data": {"pw": "hunter2"}},
            {"type": "public.b"},
            {"type": "secret.c", "data": {"pw": "hunter2"}}
        ]),
    )
    .await;
    let wide = token("w", "subscriber", None);
    let narrow = token("n", "subscriber", Some(NARROW));
    let body = json!({"since": "1h", "speed": "max"});
    let (s, r, _) = post_json(&hub, "/v1/replays", &wide, body.clone()).await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(r["total"], 3, "the creator counts what it reads: {r}");
    let id = r["id"].as_str().expect("id").to_string();
    let (types, text, done) = replay_stream(&hub, &id, &narrow).await;
    assert_eq!(types, vec!["public.b"]);
    no_secret("replay stream", &text);
    // Its counts are its own, not the creator's: nothing tells it two more events exist.
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(
        (&done["sent"], &done["total"]),
        (&json!(1), &json!(1)),
        "{done}"
    );
    // Nor do the status, the list or a stop, read with the narrower credential.
    let (s, v, _) = call(&hub, "GET", &format!("/v1/replays/{id}"), &narrow, None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (&v["sent"], &v["total"]),
        (&Value::Null, &Value::Null),
        "{v}"
    );
    let (_, v, _) = call(&hub, "GET", "/v1/replays", &narrow, None).await;
    let entry = v["replays"]
        .as_array()
        .and_then(|a| a.iter().find(|e| e["id"] == id.as_str()))
        .unwrap_or_else(|| panic!("listed: {v}"));
    assert_eq!(
        (&entry["sent"], &entry["total"]),
        (&Value::Null, &Value::Null),
        "{v}"
    );
    let (_, v, _) = call(
        &hub,
        "POST",
        &format!("/v1/replays/{id}/stop"),
        &narrow,
        None,
    )
    .await;
    assert_eq!(
        (&v["sent"], &v["total"]),
        (&Value::Null, &Value::Null),
        "{v}"
    );
    // The creator sees its counts.
    let (_, v, _) = call(&hub, "GET", &format!("/v1/replays/{id}"), &wide, None).await;
    assert_eq!(v["total"], 3, "{v}");
    // The creator, streaming its own, still gets everything.
    let (_, r, _) = post_json(&hub, "/v1/replays", &wide, body).await;
    let (types, _, done) = replay_stream(&hub, r["id"].as_str().expect("id"), &wide).await;
    assert_eq!(types, vec!["secret.a", "public.b", "secret.c"]);
    assert_eq!(
        (&done["sent"], &done["total"]),
        (&json!(3), &json!(3)),
        "{done}"
    );
}

#[tokio::test]
async fn stats_are_forbidden_to_a_narrowed_credential_that_is_not_admin() {
    let hub = hub_with(|_| {}).await;
    publish_as_admin(&hub, json!([{"type": "secret.a"}, {"type": "public.b"}])).await;
    for role in ["subscriber", "publisher"] {
        let (s, v, text) = call(
            &hub,
            "GET",
            "/v1/stats",
            &token("n", role, Some(NARROW)),
            None,
        )
        .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (403, Some("forbidden")),
            "{role}: {v}"
        );
        no_secret("stats", &text);
    }
    let (s, v, _) = call(
        &hub,
        "GET",
        "/v1/stats",
        &token("w", "subscriber", None),
        None,
    )
    .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["events"]["total"], 2, "{v}");
    let (s, _, _) = call(
        &hub,
        "GET",
        "/v1/stats",
        &token("a", "admin", Some(NARROW)),
        None,
    )
    .await;
    assert_eq!(s, 200, "an admin reads stats of every tenant (§6)");
}

#[tokio::test]
async fn every_other_read_path_holds_the_narrowing() {
    let hub = hub_with(|_| {}).await;
    publish_as_admin(
        &hub,
        json!([
            {"id": "s1", "type": "secret.a", "data": {"pw": "hunter2"}},
            {"id": "p1", "type": "public.b"}
        ]),
    )
    .await;
    let narrow = token("n", "subscriber", Some(NARROW));
    // History and single events.
    let (_, v, text) = call(&hub, "GET", "/v1/events?after=0", &narrow, None).await;
    assert_eq!(v["events"].as_array().map(Vec::len), Some(1), "{v}");
    no_secret("history", &text);
    let (_, _, text) = call(&hub, "GET", "/v1/events?order=desc", &narrow, None).await;
    no_secret("history desc", &text);
    assert_eq!(
        call(&hub, "GET", "/v1/events/s1", &narrow, None).await.0,
        404
    );
    assert_eq!(
        call(&hub, "GET", "/v1/events/p1", &narrow, None).await.0,
        200
    );
    // SSE from the start.
    let mut sse = stream(&hub, "/v1/stream?after=0", &narrow).await;
    assert_eq!(sse.seqs(1).await, vec![2]);
    // WebSocket subscription and history op.
    let mut w = ws(&hub, &narrow).await;
    w.subscribe("all", json!({}), Some(0)).await;
    assert_eq!(w.seqs("all", 1).await, vec![2]);
    // GraphQL query and subscription.
    let q = json!({"query": "{ events(after: 0) { seq type data } }"});
    let (_, v, text) = post_json(&hub, "/graphql", &narrow, q).await;
    assert_eq!(v["data"]["events"].as_array().map(Vec::len), Some(1), "{v}");
    no_secret("graphql events", &text);
    let sub = "subscription { events(after: 0) { seq type } }";
    let mut g = gql_subscribe(&hub, &narrow, sub).await;
    let first = gql_recv(&mut g).await;
    assert_eq!(
        first["payload"]["data"]["events"]["type"], "public.b",
        "{first}"
    );
    // Live: a new secret event never arrives, the next public one does.
    publish_as_admin(
        &hub,
        json!([{"type": "secret.live"}, {"type": "public.live"}]),
    )
    .await;
    let next = gql_recv(&mut g).await;
    assert_eq!(
        next["payload"]["data"]["events"]["type"], "public.live",
        "{next}"
    );
    assert_eq!(w.seqs("all", 1).await, vec![4]);
    assert_eq!(sse.seqs(1).await, vec![4]);
    // Entities: a value is read only with the right to read its created and updated events.
    let admin = token("root", "admin", None);
    let secret = json!({"pw": "hunter2"});
    let (s, v, _) = json_call(&hub, "PUT", "/v1/entities/vault/v1", &admin, secret).await;
    assert_eq!(s, 201, "{v}");
    for pats in [&["public.*"][..], &["vault.deleted"][..]] {
        let t = token("e", "subscriber", Some(pats));
        assert_eq!(
            call(&hub, "GET", "/v1/entities/vault/v1", &t, None).await.0,
            404,
            "{pats:?}"
        );
        let (_, _, text) = call(&hub, "GET", "/v1/entities/vault", &t, None).await;
        assert!(!text.contains("hunter2"), "{pats:?}: {text}");
    }
    let t = token("e", "subscriber", Some(&["vault.*"]));
    assert_eq!(
        call(&hub, "GET", "/v1/entities/vault/v1", &t, None).await.0,
        200
    );
    // A writer that may not read the kind learns the new version, not the merged value.
    let writer = token("w", "publisher", Some(NARROW));
    let note = json!({"note": "n"});
    let (s, v, text) = json_call(&hub, "PATCH", "/v1/entities/vault/v1", &writer, note).await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(v["version"], 2, "{text}");
    assert!(
        v.get("value").is_none() && !text.contains("hunter2"),
        "{text}"
    );
    let q = json!({"query": "mutation { patchEntity(kind: \"vault\", id: \"v1\", patch: {note: \"m\"}) { version value } }"});
    let (_, v, text) = post_json(&hub, "/graphql", &writer, q).await;
    assert_eq!(v["data"]["patchEntity"]["version"], 3, "{text}");
    assert_eq!(v["data"]["patchEntity"]["value"], Value::Null, "{text}");
    assert!(!text.contains("hunter2"), "{text}");
    // One who may read it gets the value with its answer, as before.
    let (s, v, text) = call(
        &hub,
        "PATCH",
        "/v1/entities/vault/v1",
        &admin,
        Some(("application/json", json!({"note": "o"}).to_string())),
    )
    .await;
    assert_eq!(s, 200, "{text}");
    assert_eq!(v["value"]["pw"], "hunter2", "{text}");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

#[tokio::test]
async fn a_websocket_refresh_cannot_narrow_what_its_subscriptions_read() {
    let hub = hub_with(|_| {}).await;
    let wide = token("w", "subscriber", None);
    let mut w = ws(&hub, &wide).await;
    w.subscribe("all", json!({}), None).await;
    // The same patterns (none) and a refresh without patterns are fine.
    w.send(json!({"op": "auth", "ref": "a", "token": token("w", "subscriber", None)}))
        .await;
    assert_eq!(w.recv().await["op"], "authed");
    let narrowing = token("n", "subscriber", Some(NARROW));
    let auth = json!({"op": "auth", "ref": "b", "token": narrowing});
    ws_refused(&mut w, auth, "forbidden").await;
    // A connection opened narrowed may refresh with the same patterns.
    let narrow = token("n", "subscriber", Some(NARROW));
    let mut n = ws(&hub, &narrow).await;
    n.send(json!({"op": "auth", "ref": "c", "token": token("n2", "subscriber", Some(NARROW))}))
        .await;
    assert_eq!(n.recv().await["op"], "authed");
}

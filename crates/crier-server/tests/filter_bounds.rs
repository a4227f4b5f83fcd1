//! The §12.2 filter bounds on every path that takes a client's filter, over real sockets:
//! SSE streams, history reads (HTTP, the WebSocket `history` op, the GraphQL `events`
//! query), WebSocket and GraphQL subscriptions, replays and webhook subscriptions. Each
//! refusal has the transport's error shape, names the limit, is counted, and leaves what the
//! connection already holds alone; a filter within the bounds still reads history on each
//! transport.

use crier_testkit::checks::metrics;
use crier_testkit::http::{check, send};
use crier_testkit::{ev, graphql, Hub};
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// Five patterns and tags, all keys together: one past the limit the hub is started with.
fn too_many() -> Value {
    json!({"type": ["a.*", "b.*", "c.*"], "tags": ["x", "y"]})
}

/// Two patterns, but longer than the hub's `max_filter_bytes` as JSON.
fn too_long() -> Value {
    json!({"type": ["x".repeat(150), "y".repeat(150)]})
}

/// `crier_limit_hits_total` for `limit`, 0 before the first hit.
async fn hits(hub: &Hub, limit: &str) -> f64 {
    let label = format!("limit=\"{limit}\"");
    metrics(hub, "")
        .await
        .lines()
        .filter(|l| l.starts_with("crier_limit_hits_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn hub() -> Hub {
    Hub::start_with(|s| {
        s.limits.max_filter_patterns = 4;
        s.limits.max_filter_bytes = 200;
    })
    .await
}

#[tokio::test]
async fn http_paths_refuse_a_filter_beyond_the_bounds() {
    let hub = hub().await;
    hub.publish(json!([ev("a.one"), ev("b.two")])).await;
    let (patterns0, bytes0) = (
        hits(&hub, "max_filter_patterns").await,
        hits(&hub, "max_filter_bytes").await,
    );
    let long = format!("{},{}", "x".repeat(150), "y".repeat(150));
    let stream_many = "/v1/stream?type=a.*,b.*,c.*&tag=x,y";
    let history_many = "/v1/events?type=a.*,b.*,c.*&tag=x,y";
    let history_long = format!("/v1/events?type={long}");
    let replay = json!({"filter": too_many(), "since": "2020-01-01T00:00:00Z",
                        "until": "2100-01-01T00:00:00Z", "speed": "max"})
    .to_string();
    let webhook = json!({"name": "big", "filter": too_long(),
                         "webhook": {"url": "http://127.0.0.1:9/hook"}})
    .to_string();
    #[rustfmt::skip]
    let refused = check(&hub, &[
        ("GET", stream_many, "", None, "", 400, "filter_too_large"),
        ("GET", history_many, "", None, "", 400, "filter_too_large"),
        ("GET", &history_long, "", None, "", 400, "filter_too_large"),
        ("POST", "/v1/replays", "", Some(&replay), "", 400, "filter_too_large"),
        ("POST", "/v1/subscriptions", "", Some(&webhook), "", 400, "filter_too_large"),
    ]).await;
    for (a, limit) in refused.iter().zip([
        "max_filter_patterns",
        "max_filter_patterns",
        "max_filter_bytes",
        "max_filter_patterns",
        "max_filter_bytes",
    ]) {
        let message = a.body["error"]["message"].as_str().unwrap_or("");
        assert!(message.contains(limit), "names {limit}: {}", a.body);
    }
    assert!(hits(&hub, "max_filter_patterns").await >= patterns0 + 3.0);
    assert!(hits(&hub, "max_filter_bytes").await >= bytes0 + 2.0);

    // Within the bounds (four patterns and tags), history still answers.
    let a = send(
        &hub,
        "GET",
        "/v1/events?type=a.*,b.*,c.*&tag=x",
        "",
        None,
        "",
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = send(&hub, "GET", "/v1/events?type=a.*,b.*", "", None, "").await;
    let seqs: Vec<&Value> = a.body["events"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| &e["seq"])
        .collect();
    assert_eq!(seqs, [&json!(1), &json!(2)], "{}", a.body);
}

#[tokio::test]
async fn websocket_ops_answer_an_error_and_keep_the_connection() {
    let hub = hub().await;
    let mut ws = hub.ws().await;
    ws.subscribe("held", json!({"type": ["kept.*"]}), None)
        .await;
    let ops = [
        json!({"op": "subscribe", "ref": 1, "id": "s", "filter": too_many()}),
        json!({"op": "subscribe", "ref": 2, "id": "s", "filter": too_long()}),
        json!({"op": "history", "ref": 3, "filter": too_many(), "after": 0}),
        json!({"op": "history", "ref": 4, "filter": too_long(), "after": 0}),
        json!({"op": "replay", "ref": 5, "filter": too_many(), "since": "2020-01-01T00:00:00Z",
               "until": "2100-01-01T00:00:00Z", "speed": 4}),
    ];
    for op in ops {
        ws.send(op.clone()).await;
        let e = ws.recv().await;
        assert_eq!(
            (&e["op"], &e["code"], &e["ref"]),
            (&json!("error"), &json!("filter_too_large"), &op["ref"]),
            "{op}: {e}"
        );
    }
    // The subscription held before the refusals still delivers, and history within the
    // bounds still answers on the same connection.
    hub.publish(json!([ev("kept.one")])).await;
    assert_eq!(ws.seqs("held", 1).await, vec![1]);
    ws.send(json!({"op": "history", "ref": 6, "filter": {"type": ["kept.*"]}, "after": 0}))
        .await;
    let h = ws.recv().await;
    assert_eq!(
        (&h["op"], &h["events"][0]["seq"]),
        (&json!("history"), &json!(1)),
        "{h}"
    );
}

#[tokio::test]
async fn graphql_answers_a_graphql_error_with_the_code() {
    let hub = hub().await;
    hub.publish(json!([ev("g.one")])).await;
    let query =
        |filter: &str| json!({"query": format!("{{ events(filter: {filter}) {{ seq }} }}")});
    let many = r#"{type: ["a.*", "b.*", "c.*"], tags: ["x", "y"]}"#;
    let a = send(
        &hub,
        "POST",
        "/graphql",
        "",
        Some(&query(many).to_string()),
        "",
    )
    .await;
    assert_eq!(
        a.body["errors"][0]["extensions"]["code"], "filter_too_large",
        "{}",
        a.body
    );
    let a = send(
        &hub,
        "POST",
        "/graphql",
        "",
        Some(&query(r#"{type: ["g.*"]}"#).to_string()),
        "",
    )
    .await;
    assert_eq!(a.body["data"]["events"][0]["seq"], 1, "{}", a.body);

    let mut ws = graphql::open_with(&hub, json!({})).await;
    assert_eq!(graphql::recv(&mut ws).await["type"], "connection_ack");
    let subscribe = |id: &str, filter: &str| {
        Message::text(
            json!({"id": id, "type": "subscribe",
                   "payload": {"query": format!("subscription {{ events(filter: {filter}) {{ seq }} }}")}})
            .to_string(),
        )
    };
    // From seq 0, so that it delivers the live event whenever the hub registers it.
    ws.send(subscribe("held", r#"{type: ["live.*"]}, after: 0"#))
        .await
        .expect("send");
    ws.send(subscribe("big", many)).await.expect("send");
    let e = graphql::recv(&mut ws).await;
    assert_eq!(e["id"], "big", "{e}");
    assert_eq!(
        e["payload"]["errors"][0]["extensions"]["code"], "filter_too_large",
        "{e}"
    );
    hub.publish(json!([ev("live.one")])).await;
    let mut m = graphql::recv(&mut ws).await;
    while m["id"] == "big" {
        assert_eq!(m["type"], "complete", "{m}");
        m = graphql::recv(&mut ws).await;
    }
    assert_eq!(
        (&m["id"], &m["payload"]["data"]["events"]["seq"]),
        (&json!("held"), &json!(2)),
        "{m}"
    );
}

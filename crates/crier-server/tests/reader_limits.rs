//! The §12.2 bounds on readers over real sockets: a filter beyond `max_filter_patterns` or
//! `max_filter_bytes` is refused on every path that opens a reader (SSE, WebSocket, GraphQL
//! subscriptions, replays, webhook subscriptions) with `filter_too_large`, counted, without
//! disturbing what the connection already holds; and the GraphQL WebSocket holds at most
//! `max_subscriptions_per_connection` subscriptions.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use common::{ev, Hub, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn gql_ws(hub: &Hub) -> Socket {
    let mut req = format!("ws://{}/graphql", hub.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    ws.send(Message::text(
        json!({"type": "connection_init", "payload": {}}).to_string(),
    ))
    .await
    .expect("init");
    assert_eq!(gql_recv(&mut ws).await["type"], "connection_ack");
    ws
}

async fn gql_recv(ws: &mut Socket) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).expect("json");
            // A refused subscription is a `next` with errors, then its `complete`.
            if v["type"] == "complete" {
                continue;
            }
            if v["type"] == "ping" {
                ws.send(Message::text(r#"{"type":"pong"}"#))
                    .await
                    .expect("pong");
                continue;
            }
            return v;
        }
    }
}

async fn gql_subscribe(ws: &mut Socket, id: &str, types: &[String]) {
    let q = "subscription($t: [String!]) { events(filter: {type: $t}) { seq type } }";
    ws.send(Message::text(
        json!({"id": id, "type": "subscribe", "payload": {"query": q, "variables": {"t": types}}})
            .to_string(),
    ))
    .await
    .expect("subscribe");
}

fn pats(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("lim.p{i}")).collect()
}

async fn limit_hits(hub: &Hub, limit: &str) -> u64 {
    let text = hub
        .http
        .get(hub.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let key = format!("crier_limit_hits_total{{limit=\"{limit}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(key.as_str()))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filters_beyond_the_limits_are_refused_on_every_reader_path() {
    let hub = Hub::start_with(|s| {
        s.limits.max_filter_patterns = 3;
        s.limits.max_filter_bytes = 120;
    })
    .await;
    let too_many = pats(4);
    // Two patterns, but more than 120 bytes as JSON.
    let too_long = vec![
        format!("lim.{}", "x".repeat(60)),
        format!("lim.{}", "y".repeat(60)),
    ];
    let hits_before = limit_hits(&hub, "max_filter_patterns").await;
    let bytes_before = limit_hits(&hub, "max_filter_bytes").await;

    // SSE.
    let (status, v) = hub
        .get(&format!("/v1/stream?type={}", too_many.join(",")))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("filter_too_large")),
        "{v}"
    );
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("max_filter_patterns")));
    let (status, v) = hub
        .get(&format!("/v1/stream?type={}", too_long.join(",")))
        .await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("filter_too_large")),
        "{v}"
    );
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("max_filter_bytes")));
    // Tags count with the patterns.
    let (status, v) = hub.get("/v1/stream?type=lim.a,lim.b&tag=x,y").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("filter_too_large")),
        "{v}"
    );

    // WebSocket: the refusal is an error op; the subscription already there keeps working.
    let mut ws = hub.ws().await;
    ws.subscribe("ok", json!({"type": ["lim.*"]}), None).await;
    for (r, types) in [("r1", &too_many), ("r2", &too_long)] {
        ws.send(json!({"op": "subscribe", "ref": r, "id": "big", "filter": {"type": types}}))
            .await;
        let e = ws.recv().await;
        assert_eq!(e["op"], "error", "{e}");
        assert_eq!(e["code"], "filter_too_large", "{e}");
        assert_eq!(e["ref"], r, "{e}");
    }
    let seq = hub.publish(json!([ev("lim.after")])).await[0];
    let got = ws.recv().await;
    assert_eq!(
        (got["op"].as_str(), got["sub"].as_str()),
        (Some("event"), Some("ok")),
        "{got}"
    );
    assert_eq!(got["event"]["seq"], seq);

    // Replays, over HTTP and over the WebSocket.
    let res = hub
        .http
        .post(hub.url("/v1/replays"))
        .json(&json!({"filter": {"type": too_many}, "since": "2020-01-01T00:00:00Z"}))
        .send()
        .await
        .expect("replay");
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.expect("json")["error"]["code"],
        "filter_too_large"
    );
    ws.send(json!({"op": "replay", "ref": "r3", "filter": {"type": too_many}, "since": "2020-01-01T00:00:00Z"}))
        .await;
    let e = ws.recv().await;
    assert_eq!(
        (e["op"].as_str(), e["code"].as_str()),
        (Some("error"), Some("filter_too_large")),
        "{e}"
    );

    // Webhook subscriptions.
    let res = hub
        .http
        .post(hub.url("/v1/subscriptions"))
        .json(&json!({"name": "big", "filter": {"type": too_many}, "webhook": {"url": "http://127.0.0.1:9/hook"}}))
        .send()
        .await
        .expect("subscription");
    assert_eq!(res.status(), 400);
    assert_eq!(
        res.json::<Value>().await.expect("json")["error"]["code"],
        "filter_too_large"
    );

    // GraphQL subscriptions: an error with that code; the socket's other subscription lives.
    let mut g = gql_ws(&hub).await;
    gql_subscribe(&mut g, "fine", &["lim.*".to_string()]).await;
    gql_subscribe(&mut g, "big", &too_many).await;
    let e = gql_recv(&mut g).await;
    assert_eq!(e["id"], "big", "{e}");
    assert_eq!(
        e["payload"]["errors"][0]["extensions"]["code"], "filter_too_large",
        "{e}"
    );
    let seq = hub.publish(json!([ev("lim.gql")])).await[0];
    let n = gql_recv(&mut g).await;
    assert_eq!(
        (n["type"].as_str(), n["id"].as_str()),
        (Some("next"), Some("fine")),
        "{n}"
    );
    assert_eq!(n["payload"]["data"]["events"]["seq"], seq);

    assert!(limit_hits(&hub, "max_filter_patterns").await >= hits_before + 6);
    assert!(limit_hits(&hub, "max_filter_bytes").await > bytes_before);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graphql_websocket_holds_at_most_max_subscriptions() {
    let hub = Hub::start_with(|s| s.limits.max_subscriptions_per_connection = 2).await;
    let mut g = gql_ws(&hub).await;
    let t = ["cap.*".to_string()];
    gql_subscribe(&mut g, "a", &t).await;
    gql_subscribe(&mut g, "b", &t).await;
    gql_subscribe(&mut g, "c", &t).await;
    let e = gql_recv(&mut g).await;
    assert_eq!(e["id"], "c", "{e}");
    assert_eq!(
        e["payload"]["errors"][0]["extensions"]["code"], "too_many_subscriptions",
        "{e}"
    );
    // Completing one frees its place.
    g.send(Message::text(r#"{"id":"a","type":"complete"}"#))
        .await
        .expect("complete");
    // The place is given back when the subscription's stream is dropped, just after
    // `complete`; try until it is.
    let mut tries = 0;
    loop {
        gql_subscribe(&mut g, "d", &t).await;
        let seq = hub.publish(json!([ev("cap.one")])).await[0];
        let (mut got_b, mut got_d, mut refused) = (false, false, false);
        while !(got_b && (got_d || refused)) {
            let m = gql_recv(&mut g).await;
            let errors = &m["payload"]["errors"];
            match m["id"].as_str() {
                Some("d") if errors.is_array() => {
                    assert_eq!(
                        errors[0]["extensions"]["code"], "too_many_subscriptions",
                        "{m}"
                    );
                    refused = true;
                }
                Some("d") => {
                    assert_eq!(m["payload"]["data"]["events"]["seq"], seq, "{m}");
                    got_d = true;
                }
                Some("b") => {
                    assert_eq!(m["payload"]["data"]["events"]["seq"], seq, "{m}");
                    got_b = true;
                }
                _ => panic!("unexpected {m}"),
            }
        }
        if got_d {
            break;
        }
        tries += 1;
        assert!(
            tries < 50,
            "the completed subscription's place was never given back"
        );
    }
    hub.stop().await;
}

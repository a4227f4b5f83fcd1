//! §12.1 over real sockets: every open connection (SSE, `/v1/ws`, the GraphQL WebSocket, a
//! replay stream) ends when its credential ends — at the JWT's `exp`, or within a heartbeat
//! of an API key's revocation — whether events are flowing or not, and no operation is served
//! on a socket after its credential ended.

use std::time::{Duration, Instant};

use crier_testkit::auth::now;
use crier_testkit::checks::{answered, get_status, replay, request};
use crier_testkit::Hub;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "open-credentials-secret-of-32-chars!!";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn jwt(role: &str, ttl_s: u64) -> String {
    let c = json!({"sub": format!("{role}-user"), "tenant": "acme", "role": role, "exp": now() + ttl_s});
    crier_testkit::auth::hs256(SECRET, &c)
}

async fn hub(heartbeat: Duration) -> Hub {
    Hub::start_with(|s| {
        crier_testkit::auth::with_hs256(s, SECRET);
        s.heartbeat = heartbeat;
    })
    .await
}

/// An API key of tenant `acme` with `role`, stored in `hub`'s database: a call that revokes
/// it, and its secret.
fn api_key(hub: &Hub, role: crier_core::Role, name: &str) -> (impl FnOnce(), String) {
    let keys = crier_store::SqliteKeys::open(&hub.dir.join("crier.db")).expect("keys");
    let (key, secret) = keys.create("acme", role, name).expect("key");
    let revoke = move || {
        keys.revoke(&key.id).expect("revoke");
    };
    (revoke, secret)
}

/// Publishes a `live.tick` every 50 ms until dropped, so streams always have events to send.
struct Ticker(tokio::task::JoinHandle<()>);

impl Drop for Ticker {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn ticker(hub: &Hub) -> Ticker {
    let (http, url, tok) = (hub.http.clone(), hub.url("/v1/events"), jwt("admin", 600));
    Ticker(tokio::spawn(async move {
        loop {
            let _ = http
                .post(&url)
                .bearer_auth(&tok)
                .json(&json!({"type": "live.tick"}))
                .send()
                .await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }))
}

/// A replay that paces over 40 s of history, so its stream stays open unless ended.
async fn slow_replay(hub: &Hub, token: &str) -> reqwest::Response {
    let base = now() - 3600;
    let t = |s: u64| {
        time::OffsetDateTime::from_unix_timestamp((base + s) as i64)
            .expect("time")
            .format(&time::format_description::well_known::Rfc3339)
            .expect("format")
    };
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"type": "old.tick", "time": t(i * 10)}))
        .collect();
    let admin = jwt("admin", 600);
    let publish = request(
        hub,
        "POST",
        "/v1/events",
        &admin,
        Some(&Value::from(events)),
    );
    answered(publish, 201).await;
    let spec = json!({"filter": {"type": ["old.*"]}, "since": t(0), "until": t(100), "speed": 1});
    let id = replay(hub, token, &spec).await;
    get_status(hub, &format!("/v1/replays/{id}/stream"), token, 200).await
}

async fn sse(hub: &Hub, token: &str) -> reqwest::Response {
    get_status(hub, "/v1/stream", token, 200).await
}

async fn ws(hub: &Hub, token: &str) -> Socket {
    let mut req = format!("ws://{}/v1/ws", hub.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("ws connect");
    ws.send(Message::text(
        json!({"op": "subscribe", "id": "s", "filter": {}}).to_string(),
    ))
    .await
    .expect("subscribe");
    ws
}

async fn gql_ws(hub: &Hub, token: &str) -> Socket {
    let mut ws = crier_testkit::graphql::open(hub, token).await;
    let ack = next_text(&mut ws).await.expect("ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    let q = "subscription { events { seq type } }";
    ws.send(Message::text(
        json!({"id": "1", "type": "subscribe", "payload": {"query": q}}).to_string(),
    ))
    .await
    .expect("subscribe");
    ws
}

/// The next text frame as JSON, or `None` once the socket closed.
async fn next_text(ws: &mut Socket) -> Option<Value> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return Some(serde_json::from_str(&t).expect("json")),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Reads a socket until it closes; returns the close code and how many text frames came.
async fn close_code(ws: &mut Socket) -> (Option<u16>, usize) {
    let mut texts = 0;
    loop {
        match ws.next().await {
            Some(Ok(Message::Close(f))) => return (f.map(|f| u16::from(f.code)), texts),
            Some(Ok(Message::Text(_))) => texts += 1,
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return (None, texts),
        }
    }
}

/// Reads a response body until it ends; returns how many bytes came.
async fn drain(res: reqwest::Response) -> usize {
    let mut body = res.bytes_stream();
    let mut n = 0;
    while let Some(Ok(chunk)) = body.next().await {
        n += chunk.len();
    }
    n
}

/// Runs the four transports' ends concurrently; each must end within `within`, `/v1/ws`
/// with 4001 and GraphQL with 4403.
async fn all_end(
    within: Duration,
    sse: reqwest::Response,
    replay: reqwest::Response,
    mut ws: Socket,
    mut gql: Socket,
) {
    let started = Instant::now();
    let (s, r, w, g) = tokio::time::timeout(
        within,
        futures_util::future::join4(
            drain(sse),
            drain(replay),
            async { close_code(&mut ws).await },
            async { close_code(&mut gql).await },
        ),
    )
    .await
    .expect("every open connection ended in time");
    assert!(s > 0 && r > 0, "the streams had started");
    assert!(started.elapsed() <= within);
    let ws_code = w.0.expect("a /v1/ws close code");
    let gql_code = g.0.expect("a GraphQL close code");
    assert_eq!(ws_code, 4001);
    assert_eq!(gql_code, 4403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_jwt_ends_every_open_connection_while_events_flow() {
    let hub = hub(Duration::from_secs(30)).await;
    let _flow = ticker(&hub);
    let token = jwt("subscriber", 3);
    let (s, r) = (sse(&hub, &token).await, slow_replay(&hub, &token).await);
    let (w, g) = (ws(&hub, &token).await, gql_ws(&hub, &token).await);
    // The heartbeat (30 s) is far away: only the token's `exp` can end them this soon.
    all_end(Duration::from_secs(8), s, r, w, g).await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_key_ends_every_open_connection_while_events_flow() {
    let hub = hub(Duration::from_millis(500)).await;
    let (revoke, secret) = api_key(&hub, crier_core::Role::Subscriber, "reader");
    let _flow = ticker(&hub);
    let (s, r) = (sse(&hub, &secret).await, slow_replay(&hub, &secret).await);
    let (mut w, mut g) = (ws(&hub, &secret).await, gql_ws(&hub, &secret).await);
    // Events reach every transport first.
    for sock in [&mut w, &mut g] {
        tokio::time::timeout(crier_testkit::WAIT, async {
            while let Some(v) = next_text(sock).await {
                if v["op"] == "event" || v["type"] == "next" {
                    return;
                }
            }
        })
        .await
        .expect("an event before revocation");
    }
    revoke();
    // Events keep flowing every 50 ms; a re-check each 500 ms heartbeat still ends them.
    all_end(Duration::from_secs(3), s, r, w, g).await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_end_at_expiry_too() {
    let hub = hub(Duration::from_secs(30)).await;
    let token = jwt("subscriber", 2);
    let (s, mut w, mut g) = (
        sse(&hub, &token).await,
        ws(&hub, &token).await,
        gql_ws(&hub, &token).await,
    );
    let (n, (wc, _), (gc, _)) = tokio::time::timeout(
        Duration::from_secs(6),
        futures_util::future::join3(drain(s), close_code(&mut w), close_code(&mut g)),
    )
    .await
    .expect("idle connections ended at expiry");
    assert!(n > 0);
    assert_eq!((wc, gc), (Some(4001), Some(4403)));
    hub.stop().await;
}

/// Counts the stored events of a type (admin view).
async fn stored(hub: &Hub, kind: &str) -> usize {
    let v: Value = hub
        .json(
            &format!("/v1/events?type={kind}&limit=1000"),
            &jwt("admin", 600),
        )
        .await;
    v["events"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_served_after_revocation_even_before_the_next_recheck() {
    // A heartbeat of a minute: the periodic re-check cannot be what stops these.
    let hub = hub(Duration::from_secs(60)).await;
    let (revoke, secret) = api_key(&hub, crier_core::Role::Publisher, "writer");
    let mut w = ws(&hub, &secret).await;
    let mut g = gql_ws(&hub, &secret).await;
    // Both sockets work while the key holds.
    w.send(Message::text(
        json!({"op": "publish", "ref": "ok", "event": {"type": "before.ws"}}).to_string(),
    ))
    .await
    .expect("send");
    tokio::time::timeout(crier_testkit::WAIT, async {
        while let Some(v) = next_text(&mut w).await {
            if v["op"] == "published" {
                return;
            }
        }
        panic!("socket closed");
    })
    .await
    .expect("published");
    assert_eq!(stored(&hub, "before.ws").await, 1);

    revoke();
    w.send(Message::text(
        json!({"op": "publish", "ref": "late", "event": {"type": "after.ws"}}).to_string(),
    ))
    .await
    .expect("send");
    let (code, _) = tokio::time::timeout(crier_testkit::WAIT, close_code(&mut w))
        .await
        .expect("closed");
    assert_eq!(code, Some(4001));

    let m = r#"mutation { publish(event: {type: "after.gql"}) { seq } }"#;
    g.send(Message::text(
        json!({"id": "2", "type": "subscribe", "payload": {"query": m}}).to_string(),
    ))
    .await
    .expect("send");
    let mut answers = Vec::new();
    let code = tokio::time::timeout(crier_testkit::WAIT, async {
        loop {
            match g.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(Message::Text(t))) => answers.push(t.to_string()),
                Some(Ok(_)) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("closed");
    assert_eq!(code, Some(4403), "answers before the close: {answers:?}");
    let mutation: Vec<Value> = answers
        .iter()
        .map(|a| serde_json::from_str::<Value>(a).expect("json"))
        .filter(|v| v["id"] == "2")
        .collect();
    assert!(
        mutation.iter().all(|v| v["payload"]["data"].is_null()),
        "the mutation was served: {mutation:?}"
    );
    assert_eq!(
        stored(&hub, "after.ws").await,
        0,
        "a dead key published over /v1/ws"
    );
    assert_eq!(
        stored(&hub, "after.gql").await,
        0,
        "a dead key published over GraphQL"
    );
    hub.stop().await;
}

//! Open streams end with their credential: at its expiry (unless refreshed over the
//! WebSocket) and within a heartbeat of an API key's revocation.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::{close_code, hs, hs_hub, hs_hub_with, req, ws_connect};

#[tokio::test]
async fn expiry_closes_websocket_and_ends_sse_refresh_keeps_it_open() {
    let hub = hs_hub().await;
    let now = crier_testkit::auth::now;
    let short = |tenant: &str| hs(&json!({"sub": "s", "tenant": tenant, "exp": now() + 2}));
    let mut ws = ws_connect(&hub, &short("acme")).await.expect("connect");
    let closed = close_code(&mut ws, Duration::from_secs(6), "closed at expiry").await;
    assert_eq!(closed, 4001);

    let mut kept = ws_connect(&hub, &short("acme")).await.expect("connect");
    kept.send(json!({"op": "auth", "ref": "a1", "token": hs(&json!({"sub": "s", "tenant": "acme", "exp": now() + 600}))})).await;
    let m = kept.recv().await;
    assert_eq!(
        (m["op"].as_str(), m["ref"].as_str()),
        (Some("authed"), Some("a1")),
        "{m}"
    );
    assert!(m["exp"].as_u64().is_some_and(|e| e > now() + 500), "{m}");
    kept.send(json!({"op": "auth", "ref": "a2", "token": hs(&json!({"sub": "s", "tenant": "other", "exp": now() + 600}))})).await;
    assert_eq!(kept.recv().await["code"], "tenant_mismatch");
    kept.send(json!({"op": "auth", "ref": "a3", "token": "garbage"}))
        .await;
    assert_eq!(kept.recv().await["code"], "unauthorized");
    tokio::time::sleep(Duration::from_secs(3)).await;
    kept.send(json!({"op": "ping", "ref": "still"})).await;
    assert_eq!(
        kept.recv().await["op"],
        "pong",
        "the refreshed connection outlived the first token"
    );

    let mut sse = hub
        .http
        .get(hub.url("/v1/stream"))
        .bearer_auth(short("acme"))
        .send()
        .await
        .expect("stream")
        .bytes_stream();
    let ended = tokio::time::timeout(Duration::from_secs(6), async {
        while let Some(chunk) = sse.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the SSE stream ends at the token's expiry");
}

#[tokio::test]
async fn revoked_key_stops_open_streams_within_a_heartbeat() {
    let hub = hs_hub_with(|s| s.heartbeat = Duration::from_millis(500)).await;
    let keys = crier_store::SqliteKeys::open(&hub.dir.join("crier.db")).expect("keys");
    let (key, secret) = keys
        .create("acme", crier_core::Role::Subscriber, "reader")
        .expect("create key");
    let mut ws = ws_connect(&hub, &secret).await.expect("connect");
    let mut sse = hub
        .http
        .get(hub.url("/v1/stream"))
        .bearer_auth(&secret)
        .send()
        .await
        .expect("stream")
        .bytes_stream();
    let r = req(&hub, "GET", "/v1/events", Some(&secret), None).await;
    assert_eq!(r.status, 200);
    keys.revoke(&key.id).expect("revoke");
    let r = req(&hub, "GET", "/v1/events", Some(&secret), None).await;
    assert_eq!(r.status, 401, "revocation is immediate");
    let code = close_code(
        &mut ws,
        Duration::from_secs(3),
        "websocket closed within a heartbeat or two",
    )
    .await;
    assert_eq!(code, 4001);
    tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(_)) = sse.next().await {}
    })
    .await
    .expect("SSE stream ended");
}

//! Limits per tenant: the publish rate and the number of connections, each refused with
//! 429 and recovering by itself, and allowed origins guarding WebSocket upgrades.

use std::time::Duration;

use crier_testkit::checks::wait_until;
use crier_testkit::http::{check, Row};
use crier_testkit::Hub;
use futures_util::SinkExt;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

use crate::{claims, hs, hs_hub_with, req, ws_connect};

#[tokio::test]
async fn publish_rate_limit_and_recovery() {
    let hub = hs_hub_with(|s| s.limits.publish_rate_per_tenant = 5).await;
    let a = hs(&claims("p", "acme", "publisher"));
    let b = hs(&claims("p", "beta", "publisher"));
    let batch = |n: usize| Value::from(vec![json!({"type": "r"}); n]).to_string();
    let (one, five, ten) = (batch(1), batch(5), batch(10));
    let ev = "/v1/events";
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("POST", ev, "", Some(&five), &a, 201, ""),
        ("POST", ev, "", Some(&one), &a, 429, "rate_limited"),
        // Other tenants are not affected.
        ("POST", ev, "", Some(&one), &b, 201, ""),
        // A batch beyond the rate is refused.
        ("POST", ev, "", Some(&ten), &b, 429, ""),
    ];
    let answers = check(&hub, rows).await;
    let retry: u64 = answers[1]
        .header("retry-after")
        .and_then(|r| r.parse().ok())
        .expect("retry-after");
    assert!((1..=2).contains(&retry));
    let mut ws = ws_connect(&hub, &a).await.expect("connect");
    ws.send(json!({"op": "publish", "ref": "w", "event": {"type": "r"}}))
        .await;
    assert_eq!(ws.recv().await["code"], "rate_limited");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = req(
        &hub,
        "POST",
        ev,
        Some(&a),
        Some(json!(vec![json!({"type": "r"}); 3])),
    )
    .await;
    assert_eq!(r.status, 201, "the bucket refills");
    let admin = hs(&claims("root", "acme", "admin"));
    let r = req(&hub, "GET", "/v1/events?tenant=*", Some(&admin), None).await;
    assert_eq!(
        r.body["events"].as_array().map(Vec::len),
        Some(5 + 1 + 3),
        "nothing refused was stored, nothing accepted was lost"
    );
}

#[tokio::test]
async fn connection_limit_per_tenant_and_recovery() {
    let hub = hs_hub_with(|s| s.limits.max_connections_per_tenant = 2).await;
    let a = hs(&claims("s", "acme", "subscriber"));
    let open = |t: String| {
        let hub = &hub;
        async move {
            hub.http
                .get(hub.url("/v1/stream"))
                .bearer_auth(t)
                .send()
                .await
                .expect("stream")
        }
    };
    let first = open(a.clone()).await;
    assert_eq!(first.status(), 200);
    let ws = ws_connect(&hub, &a).await.expect("connect");
    let third = open(a.clone()).await;
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    assert!(matches!(ws_connect(&hub, &a).await, Err(429)));
    assert_eq!(
        open(hs(&claims("s", "beta", "subscriber"))).await.status(),
        200,
        "other tenants are not affected"
    );
    drop(first);
    drop(ws);
    wait_until(
        "slots were not released",
        Duration::from_secs(5),
        || async { open(a.clone()).await.status() == 200 },
    )
    .await;
}

#[tokio::test]
async fn allowed_origins_guard_websocket_upgrades() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let hub = Hub::start_with(|s| s.allowed_origins = vec!["https://app.example".into()]).await;
    let upgrade = |origin: &'static str| {
        let mut req = format!("ws://{}/v1/ws", hub.addr)
            .into_client_request()
            .expect("request");
        req.headers_mut()
            .insert("origin", origin.parse().expect("origin"));
        req
    };
    match tokio_tungstenite::connect_async(upgrade("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 403)
        }
        other => panic!("foreign origin accepted: {:?}", other.map(|_| ())),
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(upgrade("https://app.example"))
        .await
        .expect("allowed origin");
    ws.send(Message::Text(json!({"op": "ping"}).to_string().into()))
        .await
        .expect("send");
}

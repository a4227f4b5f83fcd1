//! Webhooks across `kill -9`: every event is delivered at least once after the restart, in
//! seq order by first delivery, and the subscription's cursor never moves back.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use crier_testkit::embed_checks::paced_webhook_ids;
use rand::Rng;
use serde_json::{json, Value};

use crate::Hub;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_everything_after_kill_9() {
    // A receiver that answers slowly, so deliveries are in flight when the hub dies.
    let (got, hook) = paced_webhook_ids(axum::http::StatusCode::OK, || {
        Duration::from_millis(rand::rng().random_range(1..15))
    })
    .await;

    let tmp = tempfile::tempdir().expect("tempdir");
    let env = [
        ("CRIER_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ("CRIER_WEBHOOKS_BACKOFF", "50ms,100ms,200ms"),
    ];
    let hub = Hub::start(tmp.path(), &env).await;
    let (_, sub) = hub
        .proc
        .post(
            "/v1/subscriptions",
            &json!({"webhook": {"url": hook}, "filter": {"type": ["w.*"]}}),
        )
        .await;
    let sub_id = sub["id"].as_str().expect("id").to_string();
    let ids: Vec<String> = (0..300).map(|i| format!("w{i:03}")).collect();
    for chunk in ids.chunks(50) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|id| json!({"type": "w.x", "id": id}))
            .collect();
        assert_eq!(hub.publish(&Value::from(batch)).await.0, 201);
    }
    // Let some deliveries happen, then kill the hub mid-flight.
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.lock().expect("lock").len() < 40 {
        assert!(Instant::now() < deadline, "deliveries did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before: Value = hub.proc.get(&format!("/v1/subscriptions/{sub_id}")).await;
    let cursor_before = before["cursor"].as_u64().expect("cursor");
    let dir = hub.kill9();
    let hub = Hub::start(&dir, &env).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let received: HashSet<String> = got.lock().expect("lock").iter().cloned().collect();
        if ids.iter().all(|id| received.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every event was delivered after the restart: {} of 300",
            received.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Order per subscription: first deliveries of each id are in seq order.
    let log = got.lock().expect("lock").clone();
    let mut first_seen = Vec::new();
    let mut seen = HashSet::new();
    for id in &log {
        if seen.insert(id.clone()) {
            first_seen.push(id.clone());
        }
    }
    assert_eq!(first_seen, ids, "delivered in order, none skipped");
    let v: Value = hub.proc.get(&format!("/v1/subscriptions/{sub_id}")).await;
    assert!(
        v["cursor"].as_u64().expect("cursor") >= cursor_before,
        "the cursor never moves back"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v: Value = hub.proc.get(&format!("/v1/subscriptions/{sub_id}")).await;
        if v["cursor"] == 300 {
            break;
        }
        assert!(Instant::now() < deadline, "cursor stuck at {}", v["cursor"]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

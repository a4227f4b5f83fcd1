//! §12.6 over real sockets: a replay nobody streams within `replay_idle_timeout` is stopped
//! and frees its slot, a replay whose stream is dropped frees it at once, and
//! `GET /v1/replays` lists the tenant's replays newest first.

use std::time::Duration;

use crier_testkit::checks::{call, replay, stream};
use crier_testkit::{Hub, WAIT};
use serde_json::{json, Value};

async fn create(hub: &Hub) -> (u16, Value) {
    let spec = json!({"since": "2020-01-01T00:00:00Z", "speed": "max"});
    call(hub, "POST", "/v1/replays", "", Some(&spec)).await
}

async fn list(hub: &Hub) -> Vec<Value> {
    let (s, v) = hub.get("/v1/replays").await;
    assert_eq!(s, 200, "{v}");
    v["replays"].as_array().expect("replays").clone()
}

/// A hub whose replays stop after `idle` without a reader, at most `max` per tenant.
async fn slots_hub(idle: Duration, max: usize) -> Hub {
    Hub::start_with(|s| {
        s.limits.replay_idle_timeout = idle;
        s.max_replays_per_tenant = max;
    })
    .await
}

#[tokio::test]
async fn unstreamed_replays_stop_after_the_idle_timeout_and_free_their_slots() {
    let hub = slots_hub(Duration::from_millis(800), 3).await;
    hub.publish(json!([{"type": "a.b"}, {"type": "a.c"}])).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (s, r) = create(&hub).await;
        assert_eq!(s, 201, "{r}");
        ids.push(r["id"].as_str().expect("id").to_string());
        // Distinct creation times, so "newest first" is observable.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (s, r) = create(&hub).await;
    assert_eq!(
        (s, r["error"]["code"].as_str()),
        (429, Some("too_many_replays"))
    );

    // The listing: newest first, with every field.
    let l = list(&hub).await;
    let listed: Vec<&str> = l.iter().map(|r| r["id"].as_str().expect("id")).collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(listed, newest_first);
    for r in &l {
        assert_eq!(r["state"], "running", "{r}");
        assert_eq!(
            (r["sent"].as_u64(), r["total"].as_u64()),
            (Some(0), Some(2))
        );
        assert_eq!(r["speed"], "max");
        assert_eq!(r["actor"], "anonymous", "{r}");
        assert!(
            r["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{r}"
        );
    }

    // Nobody streams them: they stop, and a new replay fits again.
    tokio::time::timeout(WAIT, async {
        while list(&hub).await.iter().any(|r| r["state"] == "running") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("idle replays stopped");
    let (s, r) = create(&hub).await;
    assert_eq!(s, 201, "{r}");
    hub.stop().await;
}

#[tokio::test]
async fn a_dropped_replay_stream_frees_its_slot() {
    let hub = slots_hub(Duration::from_secs(600), 1).await;
    // Events an hour apart: at speed 1 this replay would run for hours.
    hub.publish(json!([
        {"type": "slow.a", "time": "2026-01-01T00:00:00Z"},
        {"type": "slow.b", "time": "2026-01-01T01:00:00Z"}
    ]))
    .await;
    let spec =
        json!({"since": "2025-12-31T00:00:00Z", "until": "2026-01-02T00:00:00Z", "speed": 1});
    let id = replay(&hub, "", &spec).await;
    let mut sse = stream(&hub, &format!("/v1/replays/{id}/stream"), "").await;
    let first = sse.next().await.expect("first event");
    assert_eq!(first.event, "slow.a");
    assert_eq!(create(&hub).await.0, 429, "the one slot is taken");
    drop(sse);
    tokio::time::timeout(WAIT, async {
        loop {
            let (s, _) = create(&hub).await;
            if s == 201 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the slot came back");
    let (_, v) = hub.get(&format!("/v1/replays/{id}")).await;
    assert_eq!(v["state"], "stopped", "{v}");
    hub.stop().await;
}

//! Replays over SSE and WebSocket, and stats (§3, §5).

use std::time::{Duration, Instant};

use crier_testkit::checks::{call, request, retention};
use crier_testkit::{Hub, Sse};
use serde_json::{json, Value};

const BASE: &str = "2026-01-01T00:00:00";

fn at(ms: u64) -> String {
    format!("{BASE}.{:03}Z", ms % 1000).replace("00:00:00.", &format!("00:00:{:02}.", ms / 1000))
}

async fn post(hub: &Hub, path: &str, body: Value) -> (u16, Value) {
    call(hub, "POST", path, "", Some(&body)).await
}

/// Opens the stream of replay `id`, whatever it answers.
async fn open_replay(hub: &Hub, id: &str) -> reqwest::Response {
    let path = format!("/v1/replays/{id}/stream");
    request(hub, "GET", &path, "", None)
        .send()
        .await
        .expect("stream")
}

async fn spaced(hub: &Hub, n: u64, gap_ms: u64) -> Vec<u64> {
    let events: Vec<Value> = (0..n)
        .map(|i| json!({"type": "r.tick", "time": at(i * gap_ms), "data": {"i": i}}))
        .collect();
    let seqs = hub.publish(Value::from(events)).await;
    hub.publish(json!([{"type": "noise", "time": at(50)}]))
        .await;
    seqs
}

#[tokio::test]
async fn replay_at_speed_4_keeps_spacing_seq_and_time() {
    let hub = Hub::start().await;
    let seqs = spaced(&hub, 6, 200).await;
    // The schedule is anchored when the replay's first event is taken, which is after this.
    let before = Instant::now();
    let (s, r) = post(
        &hub,
        "/v1/replays",
        json!({"filter": {"type": ["r.*"]}, "since": at(0), "until": at(5000), "speed": 4}),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    assert_eq!(
        (r["total"].as_u64(), r["state"].as_str()),
        (Some(6), Some("running"))
    );
    let id = r["id"].as_str().unwrap();
    let mut sse = Sse::from_response(open_replay(&hub, id).await);
    let mut arrivals = Vec::new();
    for (i, want) in seqs.iter().enumerate() {
        let m = sse.next().await.unwrap();
        arrivals.push(Instant::now());
        let e = m.json();
        assert_eq!(e["seq"].as_u64(), Some(*want), "original seq");
        assert_eq!(
            e["time"],
            format!("{}000Z", at(i as u64 * 200).trim_end_matches('Z')),
            "original time"
        );
    }
    let done = sse.next().await.unwrap();
    assert_eq!(done.event, "crier.replay_done");
    assert_eq!(done.json()["state"], "done");
    assert_eq!(done.json()["sent"], 6);
    // Event i is 200·i ms after the first: at speed 4 it is sent no sooner than 50·i ms
    // after the anchor, so never sooner than that after `before`, however the machine
    // schedules the reader (a busy reader may take two events in one read: their arrival
    // times tell nothing about the gap between them). At speed 1 the last would come 1 s
    // after the anchor at the earliest.
    for (i, at) in arrivals.iter().enumerate() {
        let since = at.duration_since(before);
        let due = Duration::from_millis(50 * i as u64);
        assert!(
            since >= due,
            "event {i} came {since:?} after the replay was made, before {due:?}"
        );
    }
    let last = arrivals[5].duration_since(before);
    assert!(
        last < Duration::from_millis(1000),
        "the last event came {last:?} after the replay was made: not paced at speed 4"
    );
    let (_, st) = hub.get(&format!("/v1/replays/{id}")).await;
    assert_eq!(
        st,
        json!({"id": id, "state": "done", "sent": 6, "total": 6, "speed": 4})
    );
    let again = open_replay(&hub, id).await;
    assert_eq!(again.status().as_u16(), 409, "one stream per replay");
}

#[tokio::test]
async fn replay_max_stop_and_limits() {
    let hub = Hub::start_with(|s| s.max_replays_per_tenant = 2).await;
    // 2,000 events an hour apart would take days at speed 10; `max` takes the reader's pace.
    let events: Vec<Value> = (0..2000).map(|i| json!({"type": "m", "time": format!("2025-01-{:02}T{:02}:00:00Z", 1 + i / 24 % 28, i % 24)})).collect();
    for chunk in events.chunks(1000) {
        hub.publish(Value::from(chunk.to_vec())).await;
    }
    let (_, r) = post(
        &hub,
        "/v1/replays",
        json!({"since": "2024-01-01T00:00:00Z", "speed": "max"}),
    )
    .await;
    assert_eq!(r["total"], 2000);
    let started = Instant::now();
    let id = r["id"].as_str().unwrap();
    let mut sse = Sse::from_response(open_replay(&hub, id).await);
    let got = sse.seqs(2000).await;
    assert_eq!(got, (1..=2000).collect::<Vec<_>>());
    assert_eq!(sse.next().await.unwrap().event, "crier.replay_done");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "max is not paced: {:?}",
        started.elapsed()
    );

    // Stop: events a second apart at speed 1.
    let hub2 = Hub::start().await;
    spaced(&hub2, 5, 1000).await;
    let (_, r) = post(
        &hub2,
        "/v1/replays",
        json!({"filter": {"type": ["r.tick"]}, "since": at(0)}),
    )
    .await;
    let id = r["id"].as_str().unwrap().to_string();
    let mut sse = Sse::from_response(open_replay(&hub2, &id).await);
    assert_eq!(sse.next().await.unwrap().event, "r.tick");
    let (s, st) = post(&hub2, &format!("/v1/replays/{id}/stop"), json!({})).await;
    assert_eq!((s, st["state"].as_str()), (200, Some("stopped")));
    let done = sse.next().await.unwrap();
    assert_eq!(done.event, "crier.replay_done");
    assert_eq!(
        (done.json()["state"].as_str(), done.json()["sent"].as_u64()),
        (Some("stopped"), Some(1))
    );
    assert!(sse.next_raw().await.is_none(), "the stream ends");

    // Bad input and the per-tenant bound.
    for (body, code) in [
        (json!({"since": at(0), "speed": 11}), "invalid_replay"),
        (json!({"since": at(0), "speed": 0}), "invalid_replay"),
        (json!({"since": at(0), "speed": "fast"}), "invalid_replay"),
        (json!({"speed": 2}), "invalid_replay"),
        (json!({"since": "then"}), "invalid_replay"),
        (json!({"since": at(100), "until": at(0)}), "invalid_replay"),
        (
            json!({"since": at(0), "filter": {"nope": 1}}),
            "invalid_filter",
        ),
        (json!({"since": at(0), "colour": 1}), "invalid_json"),
    ] {
        let (s, v) = post(&hub, "/v1/replays", body.clone()).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {v}"
        );
    }
    assert_eq!(
        post(&hub, "/v1/replays", json!({"since": at(0)})).await.0,
        201
    );
    assert_eq!(
        post(&hub, "/v1/replays", json!({"since": at(0)})).await.0,
        201
    );
    let (s, v) = post(&hub, "/v1/replays", json!({"since": at(0)})).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (429, Some("too_many_replays"))
    );
    assert_eq!(hub.get("/v1/replays/rp_nope").await.0, 404);
}

#[tokio::test]
async fn websocket_replay_ops() {
    let hub = Hub::start().await;
    let seqs = spaced(&hub, 4, 100).await;
    let mut ws = hub.ws().await;
    ws.send(json!({"op": "replay", "ref": "r3", "filter": {"type": ["r.*"]}, "since": at(0), "speed": 10})).await;
    let started = ws.recv().await;
    assert_eq!(
        (
            started["op"].as_str(),
            started["ref"].as_str(),
            started["total"].as_u64()
        ),
        (Some("replay_started"), Some("r3"), Some(4))
    );
    let rp = started["replay"].as_str().unwrap().to_string();
    let mut got = Vec::new();
    let mut statuses = Vec::new();
    loop {
        let m = ws.recv().await;
        match m["op"].as_str() {
            Some("event") => {
                assert_eq!(
                    (m["sub"].as_str(), m["replay"].as_bool()),
                    (Some(rp.as_str()), Some(true))
                );
                got.push(m["event"]["seq"].as_u64().unwrap());
            }
            Some("replay_status") => {
                statuses.push(m.clone());
                if m["state"] == "done" {
                    break;
                }
            }
            _ => panic!("unexpected {m}"),
        }
    }
    assert_eq!(got, seqs);
    let last = statuses.last().unwrap();
    assert_eq!(
        (last["sent"].as_u64(), last["total"].as_u64()),
        (Some(4), Some(4))
    );
    assert!(statuses.len() >= 2, "progress before the end: {statuses:?}");

    let slow = Hub::start().await;
    spaced(&slow, 5, 2000).await;
    let mut ws = slow.ws().await;
    ws.send(json!({"op": "replay", "ref": "x", "since": at(0), "filter": {"type": ["r.tick"]}}))
        .await;
    let rp = ws.recv().await["replay"].as_str().unwrap().to_string();
    assert_eq!(ws.recv().await["op"], "event");
    ws.send(json!({"op": "replay_stop", "replay": rp})).await;
    loop {
        let m = ws.recv().await;
        if m["op"] == "replay_status" && m["state"] != "running" {
            assert_eq!(
                (m["state"].as_str(), m["replay"].as_str()),
                (Some("stopped"), Some(rp.as_str()))
            );
            break;
        }
        assert_ne!(m["op"], "error", "{m}");
    }
    ws.send(json!({"op": "replay", "ref": "y", "since": at(0), "speed": 20}))
        .await;
    assert_eq!(ws.recv().await["code"], "invalid_replay");
}

#[tokio::test]
async fn stats_match_what_was_published() {
    let hub = Hub::start_with(|s| retention(s, 8, Duration::from_secs(3600))).await;
    hub.publish(json!([
        {"type": "site.created", "category": "config", "severity": "info", "source": "dash"},
        {"type": "site.created", "category": "config", "severity": "warning", "source": "dash"},
        {"type": "monitor.failed", "category": "health", "severity": "critical", "source": "probe"},
        {"type": "user.deleted", "severity": "debug"},
        {"type": "site.deleted", "category": "config", "severity": "error", "source": "dash"},
    ]))
    .await;
    let _sse = hub.sse("", None).await;
    let (s, v) = hub.get("/v1/stats").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["head"], 5);
    assert_eq!(v["events"]["total"], 5);
    assert_eq!(v["events"]["last_hour"], 5);
    assert_eq!(
        v["events"]["by_type"],
        json!({"monitor.failed": 1, "site.created": 2, "site.deleted": 1, "user.deleted": 1})
    );
    assert_eq!(
        v["events"]["by_category"],
        json!({"config": 3, "health": 1})
    );
    assert_eq!(
        v["events"]["by_severity"],
        json!({"critical": 1, "debug": 1, "error": 1, "info": 1, "warning": 1})
    );
    assert_eq!(
        v["events"]["by_source"],
        json!({"api": 1, "dash": 3, "probe": 1})
    );
    assert_eq!(v["connections"], json!({"sse": 1, "ws": 0, "pusher": 0}));
    assert_eq!(v["subscriptions"]["active"], 0);
    assert_eq!(
        v["deliveries"],
        json!({"delivered": 0, "failed": 0, "pending": 0, "dead": 0})
    );
    assert!(v["publish_rate_per_s"].as_f64().unwrap() > 0.0);
    let (_, all) = hub.get("/v1/stats?tenant=*").await;
    assert_eq!(all["events"]["total"], 5);
    let (_, other) = hub.get("/v1/stats?tenant=elsewhere").await;
    assert_eq!(other["events"]["total"], 0);
    assert_eq!(hub.get("/v1/stats?type=x").await.0, 400);
}

//! The HTTP API over a real socket: publishing in every format, history, lookups, and every
//! bad input of §1–§3 with its status and message.

use crier_testkit::checks::{metrics, request, status_json};
use crier_testkit::{ev, Hub};
use serde_json::{json, Value};

#[tokio::test]
async fn publish_formats_and_history() {
    let hub = Hub::start().await;
    assert_eq!(hub.publish(json!([ev("a.one")])).await, vec![1]);
    let (s, v) = hub
        .post_raw(
            json!({"type": "a.two", "id": "fixed"}).to_string(),
            "application/json",
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        v,
        json!({"events": [{"id": "fixed", "seq": 2, "duplicate": false}]})
    );
    let (s, v) = hub
        .post_raw(
            "{\"type\":\"n.one\"}\n\n{\"type\":\"n.two\"}\r\n",
            "application/x-ndjson",
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["events"].as_array().map(Vec::len), Some(2));
    let ce = json!({"specversion": "1.0", "id": "ce-1", "source": "billing", "type": "invoice.paid",
                    "subject": "inv/1", "severity": "warning", "category": "money", "tags": "eu,prod",
                    "traceparent": "00-abc", "data": {"total": 3}});
    let (s, v) = hub
        .post_raw(ce.to_string(), "application/cloudevents+json")
        .await;
    assert_eq!(s, 201, "{v}");
    let (s, v) = hub
        .post_raw(
            json!([ce, {"specversion": "1.0", "id": "ce-2", "source": "b", "type": "x"}])
                .to_string(),
            "application/cloudevents-batch+json",
        )
        .await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(
        v["events"][0],
        json!({"id": "ce-1", "seq": 5, "duplicate": true})
    );
    assert_eq!(v["events"][1]["seq"], 6);

    let (s, e) = hub.get("/v1/events/ce-1").await;
    assert_eq!(s, 200);
    assert_eq!(e["type"], "invoice.paid");
    assert_eq!(e["source"], "billing");
    assert_eq!(e["severity"], "warning");
    assert_eq!(e["category"], "money");
    assert_eq!(e["tags"], json!(["eu", "prod"]));
    assert_eq!(e["metadata"]["traceparent"], "00-abc");
    assert_eq!(e["data"]["total"], 3);
    assert_eq!(e["tenant"], "default");
    assert_eq!(e["actor"], "anonymous");
    let (s, _) = hub.get("/v1/events/nope").await;
    assert_eq!(s, 404);

    let (s, v) = hub.get("/v1/events").await;
    assert_eq!(s, 200);
    assert_eq!(v["head"], 6);
    assert_eq!(v["next_after"], Value::Null);
    let seqs: Vec<u64> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5, 6]);
    let (_, v) = hub.get("/v1/events?limit=2&after=1").await;
    assert_eq!(v["next_after"], 3);
    assert_eq!(v["events"].as_array().unwrap().len(), 2);
    let (_, v) = hub.get("/v1/events?order=desc&limit=2").await;
    assert_eq!(v["events"][0]["seq"], 6);
    assert_eq!(v["events"][1]["seq"], 5);
    let (_, v) = hub.get("/v1/events?type=n.*,a.one").await;
    assert_eq!(v["events"].as_array().unwrap().len(), 3);
    let (_, v) = hub.get("/v1/events?severity=warning&tag=prod").await;
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    let (_, v) = hub
        .get("/v1/events?since=2000-01-01T00:00:00Z&until=2100-01-01T00:00:00Z")
        .await;
    assert_eq!(v["events"].as_array().unwrap().len(), 6);
    let (_, v) = hub.get("/v1/events?until=2000-01-01T00:00:00Z").await;
    assert_eq!(v["events"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn idempotent_publish_and_all_or_nothing_batches() {
    let hub = Hub::start().await;
    let (_, v) = hub
        .post_raw(
            json!({"type": "a", "id": "k1"}).to_string(),
            "application/json",
        )
        .await;
    assert_eq!(v["events"][0]["seq"], 1);
    let (s, v) = hub
        .post_raw(
            json!({"type": "a", "id": "k1", "data": "other"}).to_string(),
            "application/json",
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        v["events"][0],
        json!({"id": "k1", "seq": 1, "duplicate": true})
    );

    let (s, v) = hub
        .post_raw(
            json!([ev("ok.one"), ev("ok.two"), {"type": "bad type"}]).to_string(),
            "application/json",
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "invalid_event");
    assert!(
        v["error"]["message"].as_str().unwrap().contains("event 2"),
        "{v}"
    );
    let (s, _) = hub
        .post_raw(
            "{\"type\":\"ok\"}\n{\"type\":\"ok\",\"oops\":1}\n",
            "application/x-ndjson",
        )
        .await;
    assert_eq!(s, 400);
    assert_eq!(
        hub.history_seqs("").await,
        vec![1],
        "a refused batch stores nothing"
    );
    assert_eq!(
        hub.publish(json!([ev("next")])).await,
        vec![2],
        "and consumes no seq"
    );
}

#[tokio::test]
async fn bad_inputs_get_status_and_message() {
    let hub = Hub::start_with(|s| {
        s.limits.max_body_bytes = 4096;
        s.limits.max_event_bytes = 1024;
        s.limits.max_batch = 5;
    })
    .await;
    let big = "x".repeat(2000);
    // Single JSON events refused as `invalid_event`, each for one reason.
    let invalid = [
        ("no type", json!({})),
        ("unknown field", json!({"type": "a", "colour": 1})),
        ("seq given", json!({"type": "a", "seq": 9})),
        ("bad type", json!({"type": "a b"})),
        ("control char in type", json!({"type": "a\u{1}"})),
        ("control char in id", json!({"type": "a", "id": "x\u{7f}"})),
        (
            "control char in source",
            json!({"type": "a", "source": "s\n"}),
        ),
        (
            "control char in subject",
            json!({"type": "a", "subject": "s\u{0}"}),
        ),
        (
            "control char in category",
            json!({"type": "a", "category": "c\t"}),
        ),
        ("bad severity", json!({"type": "a", "severity": "loud"})),
        ("too many tags", json!({"type": "a", "tags": vec!["t"; 33]})),
        ("bad time", json!({"type": "a", "time": "noon"})),
        ("id too long", json!({"type": "a", "id": "i".repeat(129)})),
    ];
    let json = "application/json";
    let mut cases: Vec<(&str, String, &str, u16, &str)> = vec![
        ("not json", "{".into(), json, 400, "invalid_json"),
        ("a string", "\"hi\"".into(), json, 400, "invalid_json"),
        ("empty array", "[]".into(), json, 400, "empty_batch"),
    ];
    cases.extend(invalid.map(|(name, e)| (name, e.to_string(), json, 400, "invalid_event")));
    #[rustfmt::skip]
    cases.extend([
        ("event too large", json!({"type": "a", "data": big}).to_string(), json, 413, "event_too_large"),
        ("batch too large", json!(vec![ev("a"); 6]).to_string(), json, 413, "batch_too_large"),
        ("body too large", "x".repeat(5000), json, 413, "body_too_large"),
        ("media type", "type=a".into(), "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        ("ndjson line", "{\"type\":\"a\"}\nnope\n".into(), "application/x-ndjson", 400, "invalid_json"),
        ("cloudevent without specversion", json!({"type": "a", "id": "1", "source": "s"}).to_string(), "application/cloudevents+json", 400, "invalid_event"),
        ("cloudevent batch not array", json!({"specversion": "1.0", "type": "a"}).to_string(), "application/cloudevents-batch+json", 400, "invalid_json"),
    ]);
    for (name, body, ct, status, code) in cases {
        let (s, v) = hub.post_raw(body, ct).await;
        assert_eq!(s, status, "{name}: {v}");
        assert_eq!(v["error"]["code"], code, "{name}: {v}");
        assert!(
            v["error"]["message"].as_str().is_some_and(|m| m.len() > 10),
            "{name}: a readable message: {v}"
        );
    }
    let gets: Vec<(&str, u16, &str)> = vec![
        ("/v1/events?after=abc", 400, "invalid_query"),
        ("/v1/events?limit=0", 400, "invalid_query"),
        ("/v1/events?limit=1001", 400, "invalid_query"),
        ("/v1/events?order=sideways", 400, "invalid_query"),
        ("/v1/events?since=yesterday", 400, "invalid_query"),
        ("/v1/events?colour=red", 400, "invalid_query"),
        ("/v1/events?severity=loud", 400, "invalid_filter"),
        ("/v1/events?type=", 400, "invalid_filter"),
        ("/v1/events?type=a,,b", 400, "invalid_filter"),
        ("/v1/stream?after=x", 400, "invalid_query"),
        ("/v1/stream?last=-1", 400, "invalid_query"),
        ("/v1/stream?last=100000", 400, "invalid_cursor"),
        ("/v1/stream?severity=meh", 400, "invalid_filter"),
        ("/v1/stream?unknown=1", 400, "invalid_query"),
        ("/v1/ws", 400, "websocket_required"),
        ("/v1/nothing", 404, "not_found"),
    ];
    for (path, status, code) in gets {
        let (s, v) = hub.get(path).await;
        assert_eq!(s, status, "{path}: {v}");
        assert_eq!(v["error"]["code"], code, "{path}: {v}");
    }
    let req = request(&hub, "GET", "/v1/stream", "", None).header("Last-Event-ID", "seven");
    let (s, v) = status_json(req).await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["code"], "invalid_cursor");
    assert_eq!(
        hub.history_seqs("").await,
        Vec::<u64>::new(),
        "nothing refused was stored"
    );
}

#[tokio::test]
async fn operational_endpoints() {
    let hub = Hub::start().await;
    hub.publish(json!([ev("m.one")])).await;
    let (s, v) = hub.get("/healthz").await;
    assert_eq!((s, v["status"].as_str()), (200, Some("ok")));
    let (s, v) = hub.get("/readyz").await;
    assert_eq!((s, v["store"].as_str()), (200, Some("ok")));
    let (s, v) = hub.get("/openapi.json").await;
    assert_eq!(s, 200);
    assert!(v["openapi"].as_str().is_some_and(|x| x.starts_with("3.1")));
    for path in [
        "/v1/events",
        "/v1/events/{id}",
        "/v1/stream",
        "/v1/ws",
        "/v1/subscriptions",
        "/v1/subscriptions/{id}/deliveries",
        "/v1/replays",
        "/v1/replays/{id}/stream",
        "/v1/filters",
        "/v1/filters/{name}",
        "/v1/stats",
        "/v1/entities/{kind}/{id}",
        "/v1/entities/{kind}",
        "/v1/links/{type}/{source_kind}/{source_id}/{target_kind}/{target_id}",
        "/v1/links",
        "/graphql",
        "/metrics",
    ] {
        assert!(
            v["paths"].get(path).is_some(),
            "openapi.json describes {path}"
        );
    }
    let text = metrics(&hub, "").await;
    for name in [
        "crier_events_published_total",
        "crier_log_append_seconds_bucket",
        "crier_log_head",
    ] {
        assert!(text.contains(name), "metrics lack {name}:\n{text}");
    }
}

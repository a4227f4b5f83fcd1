//! Delivery over real SSE and WebSocket connections: filters, resume, resets and the
//! WebSocket ops of §5.

use std::time::Duration;

use crier_testkit::checks::{pruned_to, retention};
use crier_testkit::{ev, Hub};
use serde_json::{json, Value};

/// A mixed set of events; returns them with their seqs.
async fn corpus(hub: &Hub) -> Vec<(u64, Value)> {
    let events = vec![
        json!({"type": "site.created", "category": "config", "source": "dashboard", "subject": "site/1", "severity": "info", "tags": ["nyc", "prod"]}),
        json!({"type": "site.deleted", "category": "config", "source": "api", "subject": "site/2", "severity": "warning", "tags": ["sfo"]}),
        json!({"type": "monitor.failed", "category": "health", "source": "probe/eu", "subject": "monitor/9", "severity": "critical", "tags": ["prod"]}),
        json!({"type": "user.deleted", "source": "api", "severity": "debug"}),
        json!({"type": "policy.toggled", "category": "config", "source": "dashboard", "subject": "policy/3", "severity": "error", "tags": ["nyc"]}),
    ];
    let seqs = hub.publish(Value::from(events.clone())).await;
    seqs.into_iter().zip(events).collect()
}

/// Filter cases: (query string, JSON filter, expected indexes into the corpus).
fn filter_cases() -> Vec<(&'static str, Value, Vec<usize>)> {
    vec![
        ("", json!({}), vec![0, 1, 2, 3, 4]),
        (
            "type=site.created",
            json!({"type": ["site.created"]}),
            vec![0],
        ),
        ("type=site.*", json!({"type": ["site.*"]}), vec![0, 1]),
        ("type=*.deleted", json!({"type": ["*.deleted"]}), vec![1, 3]),
        ("type=s*e.*ed", json!({"type": ["s*e.*ed"]}), vec![0, 1]),
        (
            "type=site.created,monitor.*",
            json!({"type": ["site.created", "monitor.*"]}),
            vec![0, 2],
        ),
        (
            "category=config",
            json!({"category": ["config"]}),
            vec![0, 1, 4],
        ),
        ("category=*", json!({"category": ["*"]}), vec![0, 1, 2, 4]),
        ("source=probe/*", json!({"source": ["probe/*"]}), vec![2]),
        (
            "source=dashboard",
            json!({"source": ["dashboard"]}),
            vec![0, 4],
        ),
        ("subject=site/*", json!({"subject": ["site/*"]}), vec![0, 1]),
        (
            "severity=warning",
            json!({"severity": "warning"}),
            vec![1, 2, 4],
        ),
        (
            "severity=debug",
            json!({"severity": "debug"}),
            vec![0, 1, 2, 3, 4],
        ),
        ("tag=prod", json!({"tags": ["prod"]}), vec![0, 2]),
        (
            "tag=sfo,nyc",
            json!({"tags": ["sfo", "nyc"]}),
            vec![0, 1, 4],
        ),
        (
            "category=config&severity=warning",
            json!({"category": ["config"], "severity": "warning"}),
            vec![1, 4],
        ),
        (
            "type=site.*&tag=nyc&source=dashboard",
            json!({"type": ["site.*"], "tags": ["nyc"], "source": ["dashboard"]}),
            vec![0],
        ),
        ("type=nothing.*", json!({"type": ["nothing.*"]}), vec![]),
    ]
}

#[tokio::test]
async fn every_filter_key_over_history_sse_and_ws() {
    let hub = Hub::start().await;
    let events = corpus(&hub).await;
    for (query, filter, want) in filter_cases() {
        let want: Vec<u64> = want.iter().map(|i| events[*i].0).collect();
        assert_eq!(hub.history_seqs(query).await, want, "history {query}");
        let q = if query.is_empty() {
            "after=0".to_string()
        } else {
            format!("{query}&after=0")
        };
        let mut sse = hub.sse(&q, None).await;
        assert_eq!(sse.seqs(want.len()).await, want, "sse {query}");
        let mut ws = hub.ws().await;
        ws.subscribe("f", filter.clone(), Some(0)).await;
        let got = ws.seqs("f", want.len()).await;
        assert_eq!(got, want, "ws {filter}");
    }
}

#[tokio::test]
async fn live_delivery_sse_and_ws() {
    let hub = Hub::start().await;
    let mut sse = hub.sse("type=live.*", None).await;
    let mut ws = hub.ws().await;
    let sub = ws.subscribe("s1", json!({"type": ["live.*"]}), None).await;
    assert_eq!(sub["head"], 0);
    // The stream's head comment arrives first.
    assert_eq!(sse.head().await, 0);
    let seqs = hub
        .publish(json!([ev("live.a"), ev("other"), ev("live.b")]))
        .await;
    assert_eq!(sse.seqs(2).await, vec![seqs[0], seqs[2]]);
    assert_eq!(ws.seqs("s1", 2).await, vec![seqs[0], seqs[2]]);
    // SSE framing: id is the seq, event the type, data the event JSON.
    hub.publish(json!([{"type": "live.c", "data": {"k": "v"}}]))
        .await;
    let m = sse.next().await.unwrap();
    assert_eq!(m.event, "live.c");
    assert_eq!(m.json()["seq"].as_u64(), m.id);
    assert_eq!(m.json()["data"]["k"], "v");
}

#[tokio::test]
async fn resume_with_last_event_id_after_and_last() {
    let hub = Hub::start().await;
    let first = hub.publish(json!([ev("r.a"), ev("x"), ev("r.b")])).await;
    let mut sse = hub.sse("type=r.*", None).await;
    let live = hub.publish(json!([ev("r.c")])).await;
    assert_eq!(sse.seqs(1).await, live);
    drop(sse);
    // Missed while disconnected.
    let missed = hub.publish(json!([ev("r.d"), ev("x"), ev("r.e")])).await;
    let mut sse = hub.sse("type=r.*&after=0", Some(live[0])).await;
    assert_eq!(
        sse.seqs(2).await,
        vec![missed[0], missed[2]],
        "Last-Event-ID wins over after"
    );
    let more = hub.publish(json!([ev("r.f")])).await;
    assert_eq!(sse.seqs(1).await, more, "then live");
    let mut sse = hub.sse(&format!("type=r.*&after={}", first[0]), None).await;
    assert_eq!(
        sse.seqs(5).await,
        vec![first[2], live[0], missed[0], missed[2], more[0]]
    );
    let mut sse = hub.sse("type=r.*&last=2", None).await;
    assert_eq!(sse.seqs(2).await, vec![missed[2], more[0]]);
    let newer = hub.publish(json!([ev("r.g")])).await;
    assert_eq!(sse.seqs(1).await, newer);

    let mut ws = hub.ws().await;
    ws.subscribe("a", json!({"type": ["r.*"]}), Some(missed[0]))
        .await;
    assert_eq!(ws.seqs("a", 3).await, vec![missed[2], more[0], newer[0]]);
    ws.send(json!({"op": "subscribe", "id": "l", "filter": {"type": ["r.*"]}, "last": 1}))
        .await;
    assert_eq!(ws.recv().await["op"], "subscribed");
    assert_eq!(ws.seqs("l", 1).await, newer);
}

#[tokio::test]
async fn cursor_above_head_resets_and_goes_live() {
    let hub = Hub::start().await;
    hub.publish(json!([ev("a"), ev("b")])).await;
    let mut sse = hub.sse("", Some(99)).await;
    let m = sse.next().await.unwrap();
    assert_eq!(m.event, "crier.reset");
    assert_eq!(m.json(), json!({"reason": "unknown_cursor", "head": 2}));
    let live = hub.publish(json!([ev("c")])).await;
    assert_eq!(sse.seqs(1).await, live);

    let mut ws = hub.ws().await;
    ws.subscribe("s", json!({}), Some(500)).await;
    let m = ws.recv().await;
    assert_eq!(
        m,
        json!({"op": "reset", "sub": "s", "reason": "unknown_cursor", "head": 3})
    );
}

#[tokio::test]
async fn retention_resets_readers_behind_it() {
    let hub = Hub::start_with(|s| retention(s, 5, Duration::from_millis(50))).await;
    let seqs = hub
        .publish(Value::from(
            (0..20).map(|i| ev(&format!("t.{i}"))).collect::<Vec<_>>(),
        ))
        .await;
    assert_eq!(seqs.last(), Some(&20));
    pruned_to(&hub, 5).await;
    assert_eq!(hub.history_seqs("").await, (16..=20).collect::<Vec<_>>());
    let mut sse = hub.sse("after=3", None).await;
    let m = sse.next().await.unwrap();
    assert_eq!(m.event, "crier.reset");
    assert_eq!(m.json(), json!({"reason": "retention", "oldest": 16}));
    assert_eq!(sse.seqs(5).await, (16..=20).collect::<Vec<_>>());
    let mut ws = hub.ws().await;
    ws.subscribe("s", json!({}), Some(0)).await;
    assert_eq!(
        ws.recv().await,
        json!({"op": "reset", "sub": "s", "reason": "retention", "oldest": 16})
    );
    assert_eq!(ws.seqs("s", 5).await, (16..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn websocket_ops_and_errors_keep_the_connection() {
    let hub = Hub::start_with(|s| {
        s.limits.max_subscriptions_per_connection = 2;
        s.limits.max_ws_frame_bytes = 2048;
    })
    .await;
    let mut ws = hub.ws().await;
    ws.send(json!({"op": "ping", "ref": "r4"})).await;
    assert_eq!(ws.recv().await, json!({"op": "pong", "ref": "r4"}));
    ws.send(json!({"op": "publish", "ref": "r1", "event": {"type": "ws.one", "id": "w1"}}))
        .await;
    assert_eq!(
        ws.recv().await,
        json!({"op": "published", "ref": "r1", "id": "w1", "seq": 1, "duplicate": false})
    );
    ws.send(json!({"op": "publish", "ref": "r1b", "event": {"type": "ws.one", "id": "w1"}}))
        .await;
    assert_eq!(ws.recv().await["duplicate"], true);
    ws.send(json!({"op": "history", "ref": "r2", "filter": {}, "after": 0, "limit": 50}))
        .await;
    let h = ws.recv().await;
    assert_eq!(h["op"], "history");
    assert_eq!(h["ref"], "r2");
    assert_eq!(h["events"][0]["id"], "w1");
    assert_eq!(h["next_after"], Value::Null);

    let bad: Vec<(Value, &str)> = vec![
        (json!({"op": "fly", "ref": 1}), "unknown_op"),
        (json!({"ref": 2}), "invalid_message"),
        (json!({"op": "subscribe", "ref": 3}), "invalid_message"),
        (
            json!({"op": "subscribe", "ref": 4, "id": "x", "filter": {"typo": 1}}),
            "invalid_filter",
        ),
        (
            json!({"op": "subscribe", "ref": 5, "id": "x", "filter": {"severity": "loud"}}),
            "invalid_filter",
        ),
        (
            json!({"op": "subscribe", "ref": 6, "id": "x", "after": "ten"}),
            "invalid_message",
        ),
        (
            json!({"op": "subscribe", "ref": 7, "id": "x", "bogus": true}),
            "invalid_message",
        ),
        (
            json!({"op": "unsubscribe", "ref": 8, "id": "never"}),
            "unknown_subscription",
        ),
        (
            json!({"op": "publish", "ref": 9, "event": {"type": "bad type"}}),
            "invalid_event",
        ),
        (json!({"op": "publish", "ref": 10}), "invalid_message"),
        (
            json!({"op": "history", "ref": 11, "limit": 5000}),
            "invalid_message",
        ),
    ];
    for (msg, code) in bad {
        let r = msg["ref"].clone();
        ws.send(msg.clone()).await;
        let e = ws.recv().await;
        assert_eq!(e["op"], "error", "{msg}: {e}");
        assert_eq!(e["code"], code, "{msg}: {e}");
        assert_eq!(e["ref"], r, "{msg}: {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    ws.send_text("not json").await;
    assert_eq!(ws.recv().await["code"], "invalid_message");
    ws.send_text(&format!(
        "{{\"op\":\"ping\",\"pad\":\"{}\"}}",
        "x".repeat(3000)
    ))
    .await;
    assert_eq!(ws.recv().await["code"], "frame_too_large");

    ws.subscribe("a", json!({}), None).await;
    ws.send(json!({"op": "subscribe", "ref": "d", "id": "a"}))
        .await;
    assert_eq!(ws.recv().await["code"], "duplicate_subscription");
    ws.subscribe("b", json!({}), None).await;
    ws.send(json!({"op": "subscribe", "ref": "c", "id": "c"}))
        .await;
    assert_eq!(ws.recv().await["code"], "too_many_subscriptions");
    ws.send(json!({"op": "unsubscribe", "ref": "u", "id": "a"}))
        .await;
    assert_eq!(
        ws.recv().await,
        json!({"op": "unsubscribed", "ref": "u", "id": "a"})
    );

    // Still open and working after every error.
    ws.send(json!({"op": "publish", "ref": "p", "event": {"type": "after.errors"}}))
        .await;
    let mut saw_published = false;
    let mut saw_event = false;
    while !(saw_published && saw_event) {
        let m = ws.recv().await;
        match m["op"].as_str() {
            Some("published") => saw_published = true,
            Some("event") => {
                assert_eq!(m["sub"], "b", "no events after unsubscribe");
                saw_event = true;
            }
            _ => panic!("unexpected {m}"),
        }
    }
}

/// `unsubscribed` is a subscription's last word while its events flow: no event of it
/// follows the answer (another subscription of the socket goes on receiving meanwhile), and
/// a subscription made again under the same id starts afresh.
#[tokio::test]
async fn no_event_follows_unsubscribed_while_events_flow() {
    let hub = Hub::start().await;
    let (http, url) = (hub.http.clone(), hub.url("/v1/events"));
    let flowing = tokio::spawn(async move {
        loop {
            let res = http
                .post(&url)
                .json(&json!([{"type": "flow.tick"}, {"type": "flow.tock"}]))
                .send()
                .await
                .expect("POST /v1/events");
            assert_eq!(res.status().as_u16(), 201);
        }
    });
    let mut ws = hub.ws().await;
    ws.subscribe("c", json!({"type": ["flow.*"]}), None).await;
    for round in 0..20 {
        // `c`'s events go on arriving around the answer; none of `s`'s precede it.
        ws.send(json!({"op": "subscribe", "id": "s", "filter": {"type": ["flow.*"]}}))
            .await;
        loop {
            let m = ws.recv().await;
            if m["op"] == "subscribed" {
                assert_eq!(m["id"], "s");
                break;
            }
            assert_eq!(m["sub"], "c", "before subscribed: {m}");
        }
        // Both subscriptions are delivering.
        let mut seen_s = false;
        while !seen_s {
            let m = ws.recv().await;
            assert_eq!(m["op"], "event", "{m}");
            seen_s = m["sub"] == "s";
        }
        ws.send(json!({"op": "unsubscribe", "ref": round, "id": "s"}))
            .await;
        loop {
            let m = ws.recv().await;
            if m["op"] == "unsubscribed" {
                assert_eq!(m["ref"], round);
                break;
            }
            assert_eq!(m["op"], "event", "{m}");
        }
        // Events still flow to `c`; none of them may be `s`'s.
        let mut after = 0;
        while after < 6 {
            let m = ws.recv().await;
            assert_eq!(m["op"], "event", "{m}");
            assert_eq!(
                m["sub"], "c",
                "round {round}: an event of `s` after unsubscribed: {m}"
            );
            after += 1;
        }
    }
    flowing.abort();
}

/// A live SSE stream notices the hub's shutdown (which it waits on beside its events) and
/// ends, after what it had to send.
#[tokio::test]
async fn a_shutdown_ends_a_live_sse_stream() {
    let hub = Hub::start().await;
    let mut stream = hub.sse("type=x.*", None).await;
    stream.head().await;
    let seqs = hub.publish(json!({"type": "x.one"})).await;
    assert_eq!(stream.seqs(1).await, seqs, "the stream is live");
    hub.shutdown.cancel();
    assert!(
        stream.next().await.is_none(),
        "the stream ended within the wait"
    );
}

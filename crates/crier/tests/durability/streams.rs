//! Streams under SIGTERM and stalled readers: a stopped hub ends its streams cleanly and a
//! reader resumes across the restart with exactly what it missed; readers that stop reading
//! cost bounded memory, fall back to the log and miss nothing.

use std::time::{Duration, Instant};

use crier_testkit::embed_checks::{metrics_text, next_within, seqs};
use crier_testkit::Sse;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::{read_sse, Hub};

/// How long a reader may wait for its next event.
const WITHIN: Duration = Duration::from_secs(20);

/// Publishes one event of each type; returns their seqs.
async fn publish(hub: &Hub, types: &[&str]) -> Vec<u64> {
    let batch: Value = types.iter().map(|t| json!({"type": t})).collect();
    let (_, v) = hub.publish(&batch).await;
    seqs(&v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_cleanly_and_readers_resume_across_restarts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path(), &[]).await;
    let first = publish(&hub, &["keep.a", "drop.a", "keep.b"]).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = tokio::spawn(read_sse(
        hub.url("/v1/stream?type=keep.*&after=0"),
        None,
        usize::MAX,
        tx,
    ));
    let mut seen = vec![
        rx.recv().await.expect("event"),
        rx.recv().await.expect("event"),
    ];
    assert_eq!(seen, vec![first[0], first[2]]);
    let (dir, clean) = hub.sigterm();
    assert!(clean, "the hub exits 0 on SIGTERM");
    tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .expect("the stream ended with the hub")
        .expect("reader");

    let hub = Hub::start(&dir, &[]).await;
    let missed = publish(&hub, &["drop.b", "keep.c", "keep.d", "drop.c"]).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let last = *seen.last().expect("seen");
    let resumed = tokio::spawn(read_sse(
        hub.url("/v1/stream?type=keep.*"),
        Some(last),
        3,
        tx,
    ));
    seen.push(rx.recv().await.expect("missed 1"));
    seen.push(rx.recv().await.expect("missed 2"));
    let live = publish(&hub, &["keep.e"]).await;
    seen.push(rx.recv().await.expect("live"));
    resumed.await.expect("reader");
    assert_eq!(
        seen,
        vec![first[0], first[2], missed[1], missed[2], live[0]],
        "exactly the missed events, in order, then live"
    );
    let stored = hub.history().await;
    assert_eq!(stored.len(), 8);
    let _ = hub.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_cost_bounded_memory_and_miss_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = [
        ("CRIER_LIMITS_QUEUE_PER_CONNECTION", "256"),
        ("CRIER_HEARTBEAT", "60s"),
        ("CRIER_DURABILITY", "commit"),
    ];
    let hub = Hub::start(tmp.path(), &env).await;
    let client = reqwest::Client::new();
    // Slow SSE reader: opens the stream and does not read.
    let slow_sse = client
        .get(hub.url("/v1/stream?after=0"))
        .send()
        .await
        .expect("slow sse");
    // Slow WebSocket reader: subscribes and stops reading.
    let (mut slow_ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/v1/ws", hub.proc.port))
            .await
            .expect("ws");
    use futures_util::SinkExt;
    slow_ws
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"op": "subscribe", "id": "s", "filter": {}, "after": 0})
                .to_string()
                .into(),
        ))
        .await
        .expect("subscribe");
    // A fast reader.
    let total = 20_000usize;
    let (tx, mut fast_rx) = tokio::sync::mpsc::unbounded_channel();
    let fast = tokio::spawn(read_sse(hub.url("/v1/stream?after=0"), None, total, tx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = hub.proc.rss_kib();
    let payload = "x".repeat(2000);
    for chunk in 0..(total / 200) {
        let batch: Value = (0..200)
            .map(|i| json!({"type": "slow.test", "data": {"n": chunk * 200 + i, "pad": payload}}))
            .collect();
        assert_eq!(hub.publish(&batch).await.0, 201);
    }
    let published_at = Instant::now();
    let mut fast_got = Vec::with_capacity(total);
    while fast_got.len() < total {
        let seq = next_within("fast reader keeps pace", WITHIN, fast_rx.recv()).await;
        fast_got.push(seq);
    }
    let fast_lag = published_at.elapsed();
    fast.await.expect("fast");
    assert_eq!(fast_got, (1..=total as u64).collect::<Vec<_>>());
    assert!(
        fast_lag < Duration::from_secs(10),
        "the fast reader was slowed: {fast_lag:?}"
    );
    let rss_after = hub.proc.rss_kib();
    let growth_mib = (rss_after.saturating_sub(rss_before)) as f64 / 1024.0;
    let published_mib = (total * 2100) as f64 / (1024.0 * 1024.0);
    eprintln!("hub RSS grew {growth_mib:.1} MiB while {published_mib:.1} MiB piled up for each of two stalled readers");
    assert!(
        growth_mib < 40.0,
        "slow readers grew the hub by {growth_mib:.1} MiB"
    );
    let metrics = metrics_text(&hub.url("/metrics")).await;
    let fallbacks: f64 = metrics
        .lines()
        .find(|l| l.starts_with("crier_queue_fallbacks_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(fallbacks > 0.0, "the stalled readers fell back to the log");

    // Now the slow readers read: every event, once, in order.
    let mut body = Sse::from_response(slow_sse);
    let mut sse_got = Vec::with_capacity(total);
    while sse_got.len() < total {
        let m = next_within("slow sse reads", WITHIN, body.next_raw()).await;
        if let Some(id) = m.id {
            sse_got.push(id);
        }
    }
    assert_eq!(
        sse_got,
        (1..=total as u64).collect::<Vec<_>>(),
        "the slow SSE reader got every event once, in order"
    );
    let mut ws_got = Vec::with_capacity(total);
    while ws_got.len() < total {
        let msg = next_within("slow ws reads", WITHIN, slow_ws.next())
            .await
            .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["op"] == "event" {
                ws_got.push(v["event"]["seq"].as_u64().expect("seq"));
            }
        }
    }
    assert_eq!(
        ws_got,
        (1..=total as u64).collect::<Vec<_>>(),
        "the slow WebSocket reader got every event once, in order"
    );
}

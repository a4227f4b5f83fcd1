//! The history/live seam under load: while publishers push as fast as the hub takes events,
//! 20 clients (SSE and WebSocket, filtered and not) connect, drop and resume at random. At the
//! end each has exactly the expected seqs: no duplicates, no gaps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crier_testkit::Hub;
use rand::Rng;
use serde_json::{json, Value};

#[derive(Clone, Copy)]
enum Kind {
    Sse,
    Ws,
}

/// Reads from a connection for `budget`, or until `stop_at` seq is reached.
async fn session(
    hub: &Hub,
    kind: Kind,
    filtered: bool,
    after: u64,
    budget: Duration,
    stop_at: Option<u64>,
    got: &mut Vec<u64>,
) {
    let deadline = tokio::time::Instant::now() + budget;
    match kind {
        Kind::Sse => {
            let q = if filtered { "type=even" } else { "" };
            let mut sse = hub.sse(q, Some(after)).await;
            loop {
                let next = tokio::time::timeout_at(deadline, sse.next_raw()).await;
                let Ok(Some(m)) = next else { return };
                assert_ne!(m.event, "crier.reset");
                let seq = m.id.expect("id");
                got.push(seq);
                if stop_at == Some(seq) {
                    return;
                }
            }
        }
        Kind::Ws => {
            let mut ws = hub.ws().await;
            let filter = if filtered {
                json!({"type": ["even"]})
            } else {
                json!({})
            };
            ws.subscribe("s", filter, Some(after)).await;
            loop {
                let next = tokio::time::timeout_at(deadline, ws.recv()).await;
                let Ok(m) = next else { return };
                assert_eq!(m["op"], "event", "{m}");
                let seq = m["event"]["seq"].as_u64().expect("seq");
                got.push(seq);
                if stop_at == Some(seq) {
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_dropping_and_resuming_under_load_miss_nothing() {
    let hub = Arc::new(Hub::start_with(|s| s.limits.queue_per_connection = 64).await);
    let done = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for p in 0..4 {
        let hub = hub.clone();
        let done = done.clone();
        publishers.push(tokio::spawn(async move {
            let mut i = 0u64;
            let until = tokio::time::Instant::now() + Duration::from_secs(3);
            while tokio::time::Instant::now() < until {
                let n = 1 + (i % 50) as usize;
                let batch: Vec<Value> =
                    (0..n).map(|k| json!({"type": if (i + k as u64).is_multiple_of(2) { "even" } else { "odd" }, "data": {"p": p}})).collect();
                hub.publish(Value::from(batch)).await;
                i += 1;
            }
            let _ = done;
        }));
    }
    let mut clients = Vec::new();
    for c in 0..20u32 {
        let hub = hub.clone();
        let done = done.clone();
        clients.push(tokio::spawn(async move {
            let kind = if c.is_multiple_of(2) {
                Kind::Sse
            } else {
                Kind::Ws
            };
            let filtered = c % 4 >= 2;
            let mut got = Vec::new();
            let mut sessions = 0;
            while !done.load(Ordering::Relaxed) {
                let after = got.last().copied().unwrap_or(0);
                let budget = Duration::from_millis(rand::rng().random_range(20..300));
                session(&hub, kind, filtered, after, budget, None, &mut got).await;
                sessions += 1;
                let pause = Duration::from_millis(rand::rng().random_range(0..100));
                tokio::time::sleep(pause).await;
            }
            (c, kind, filtered, got, sessions)
        }));
    }
    for p in publishers {
        p.await.expect("publisher");
    }
    done.store(true, Ordering::Relaxed);
    let all = hub.history_seqs("").await;
    let even = hub.history_seqs("type=even").await;
    assert_eq!(
        all,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "the log is gapless"
    );
    assert!(all.len() > 1000, "load was real: {} events", all.len());
    for c in clients {
        let (c, kind, filtered, mut got, sessions) = c.await.expect("client");
        let want = if filtered { &even } else { &all };
        let last = *want.last().expect("events");
        // Finish: resume once more and read to the end.
        if got.last() != Some(&last) {
            let after = got.last().copied().unwrap_or(0);
            session(
                &hub,
                kind,
                filtered,
                after,
                Duration::from_secs(20),
                Some(last),
                &mut got,
            )
            .await;
        }
        assert!(sessions >= 3, "client {c} resumed only {sessions} times");
        let mut sorted = got.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), got.len(), "client {c}: duplicates");
        assert_eq!(
            &got, want,
            "client {c} (filtered={filtered}) has exactly the expected seqs in order"
        );
    }
}

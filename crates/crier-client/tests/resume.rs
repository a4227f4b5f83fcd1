//! The client against a real hub that restarts: events published while the client is
//! disconnected all arrive, once, in order, over SSE and over WebSocket.

use std::time::Duration;

use crier_client::{Backoff, Item, Options, Start, Subscription, Transport};
use crier_testkit::Hub;
use serde_json::json;

/// A hub over `dir` on `port` (0 for any).
async fn start_hub(dir: &std::path::Path, port: u16) -> (Hub, u16) {
    let hub = Hub::start_on(dir.to_path_buf(), port, |_| {}).await;
    let port = hub.addr.port();
    (hub, port)
}

/// The seqs of the next `n` events (a reset fails the test).
async fn events(sub: &mut Subscription, n: usize) -> Vec<u64> {
    let mut seqs = Vec::new();
    while seqs.len() < n {
        match tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("in time")
            .expect("event")
        {
            Item::Event(e) => seqs.push(e["seq"].as_u64().expect("seq")),
            Item::Reset(r) => panic!("reset {r}"),
        }
    }
    seqs
}

async fn publish(port: u16, n: std::ops::Range<u32>) {
    let batch: Vec<_> = n
        .map(|i| json!({"type": "r.x", "id": format!("e{i}")}))
        .collect();
    let res = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/v1/events"))
        .json(&batch)
        .send()
        .await
        .expect("publish");
    assert_eq!(res.status().as_u16(), 201);
}

async fn resumes_across_a_restart(transport: Transport) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, port) = start_hub(dir.path(), 0).await;
    let mut opts = Options::new(format!("http://127.0.0.1:{port}"));
    opts.transport = transport;
    opts.start = Start::After(0);
    opts.filter = json!({"type": ["r.*"]});
    opts.backoff = Backoff {
        initial: Duration::from_millis(300),
        max: Duration::from_secs(1),
        max_attempts: Some(50),
    };
    let mut sub = Subscription::new(opts);
    publish(port, 0..5).await;
    let mut seqs = events(&mut sub, 5).await;
    hub.stop().await;
    let (hub, _) = start_hub(dir.path(), port).await;
    publish(port, 5..10).await; // while the client is still waiting to reconnect
    seqs.extend(events(&mut sub, 5).await);
    assert_eq!(
        seqs,
        (1..=10).collect::<Vec<u64>>(),
        "every event once, in order, across the restart"
    );
    assert_eq!(sub.last_seq(), Some(10));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_resumes_across_a_restart() {
    resumes_across_a_restart(Transport::Sse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_resumes_across_a_restart() {
    resumes_across_a_restart(Transport::WebSocket).await;
}

#[tokio::test]
async fn a_bad_filter_is_refused_not_retried() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, port) = start_hub(dir.path(), 0).await;
    let mut opts = Options::new(format!("http://127.0.0.1:{port}"));
    opts.filter = json!({"severity": "loud"});
    let mut sub = Subscription::new(opts);
    let r = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("in time");
    assert!(
        matches!(r, Err(crier_client::ClientError::Refused(_))),
        "{r:?}"
    );
    hub.stop().await;
}

/// A live subscription that has received nothing when the hub goes away still gets the
/// events published while it was disconnected (it resumes after the head it opened at).
async fn live_subscription_resumes_from_its_opening_head(transport: Transport) {
    let dir = tempfile::tempdir().expect("tempdir");
    let (hub, port) = start_hub(dir.path(), 0).await;
    publish(port, 0..3).await; // before the subscription: never delivered
    let mut opts = Options::new(format!("http://127.0.0.1:{port}"));
    opts.transport = transport;
    opts.start = Start::Live;
    opts.backoff = Backoff {
        initial: Duration::from_millis(300),
        max: Duration::from_secs(1),
        max_attempts: Some(50),
    };
    let mut sub = Subscription::new(opts);
    // Connect, and let the stream open (nothing arrives: it is live and quiet).
    assert!(
        tokio::time::timeout(Duration::from_millis(500), sub.next())
            .await
            .is_err(),
        "a quiet live stream yields nothing"
    );
    hub.stop().await;
    let (hub, _) = start_hub(dir.path(), port).await;
    publish(port, 3..6).await; // while the client is disconnected
    let seqs = events(&mut sub, 3).await;
    assert_eq!(seqs, [4, 5, 6], "the outage's events, once, in order");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_live_subscription_loses_nothing_in_an_outage() {
    live_subscription_resumes_from_its_opening_head(Transport::Sse).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_live_subscription_loses_nothing_in_an_outage() {
    live_subscription_resumes_from_its_opening_head(Transport::WebSocket).await;
}

/// After the hub answers `unknown_cursor` (the client's cursor is above the head, as after
/// the log was replaced), the resume point moves to the head: later events are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_cursor_reset_moves_the_resume_point() {
    for transport in [Transport::Sse, Transport::WebSocket] {
        let dir = tempfile::tempdir().expect("tempdir");
        let (hub, port) = start_hub(dir.path(), 0).await;
        publish(port, 0..2).await;
        let mut opts = Options::new(format!("http://127.0.0.1:{port}"));
        opts.transport = transport;
        opts.start = Start::After(1000);
        let mut sub = Subscription::new(opts);
        match tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("in time")
            .expect("reset")
        {
            Item::Reset(r) => assert_eq!(r["reason"], "unknown_cursor", "{r}"),
            Item::Event(e) => panic!("event before the reset: {e}"),
        }
        assert_eq!(sub.last_seq(), Some(2));
        publish(port, 2..4).await;
        let mut seqs = Vec::new();
        while seqs.len() < 2 {
            if let Item::Event(e) = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .expect("in time")
                .expect("event")
            {
                seqs.push(e["seq"].as_u64().expect("seq"));
            }
        }
        assert_eq!(seqs, [3, 4]);
        hub.stop().await;
    }
}

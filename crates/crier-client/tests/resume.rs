//! The client against a real hub that restarts: events published while the client is
//! disconnected all arrive, once, in order, over SSE and over WebSocket.

use std::time::Duration;

use crier_client::{Backoff, Item, Options, Start, Subscription, Transport};
use serde_json::json;
use tokio_util::sync::CancellationToken;

async fn start_hub(
    dir: &std::path::Path,
    port: u16,
) -> (CancellationToken, tokio::task::JoinHandle<()>, u16) {
    let mut s = crier_server::Settings::for_data_dir(dir);
    s.durability = crier_store::Durability::Commit;
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let port = listener.local_addr().expect("addr").port();
    let token = CancellationToken::new();
    let t = token.clone();
    let task = tokio::spawn(async move { crier_server::run(s, listener, t).await.expect("hub") });
    (token, task, port)
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
    let (stop, task, port) = start_hub(dir.path(), 0).await;
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
    let mut seqs = Vec::new();
    while seqs.len() < 5 {
        match tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("in time")
            .expect("event")
        {
            Item::Event(e) => seqs.push(e["seq"].as_u64().expect("seq")),
            Item::Reset(r) => panic!("reset {r}"),
        }
    }
    stop.cancel();
    task.await.expect("hub stopped");
    let (stop, task, _) = start_hub(dir.path(), port).await;
    publish(port, 5..10).await; // while the client is still waiting to reconnect
    while seqs.len() < 10 {
        match tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("in time")
            .expect("event")
        {
            Item::Event(e) => seqs.push(e["seq"].as_u64().expect("seq")),
            Item::Reset(r) => panic!("reset {r}"),
        }
    }
    assert_eq!(
        seqs,
        (1..=10).collect::<Vec<u64>>(),
        "every event once, in order, across the restart"
    );
    assert_eq!(sub.last_seq(), Some(10));
    stop.cancel();
    let _ = task.await;
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
    let (stop, task, port) = start_hub(dir.path(), 0).await;
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
    stop.cancel();
    let _ = task.await;
}

//! The catch-up scenario: a reader far behind reads a large log from the start.

use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::{publish_batch, Args, Hub, Row};

pub(crate) async fn catchup(a: &Args) -> anyhow::Result<Vec<Row>> {
    let hub = Hub::start(&a.crier_bin, &[("CRIER_DURABILITY", "commit")]).await?;
    let client = reqwest::Client::new();
    let url = hub.url("/v1/events");
    let batch = Value::from(
        (0..1000)
            .map(|i| json!({"type": "bench.catchup", "data": {"i": i}}))
            .collect::<Vec<_>>(),
    );
    let mut tasks = Vec::new();
    let per_task = a.catchup_events / 1000 / 4;
    for _ in 0..4 {
        let (client, url, batch) = (client.clone(), url.clone(), batch.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_task {
                publish_batch(&client, &url, &batch).await?;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let total = (per_task * 4 * 1000) as u64;
    let mut rows = Vec::new();
    // SSE.
    let started = Instant::now();
    let res = client.get(hub.url("/v1/stream?after=0")).send().await?;
    let mut body = res.bytes_stream();
    let mut n = 0u64;
    let mut bytes = 0usize;
    // Frames start with "id: " after a blank line; keep the tail of each chunk so a marker
    // split across chunks is still counted once.
    let mut tail: Vec<u8> = Vec::new();
    while n < total {
        let chunk = tokio::time::timeout(Duration::from_secs(30), body.next())
            .await?
            .context("stream ended")??;
        bytes += chunk.len();
        tail.extend_from_slice(&chunk);
        n += tail.windows(5).filter(|w| w == b"\nid: ").count() as u64;
        let keep = tail.len().min(4);
        tail.drain(..tail.len() - keep);
    }
    rows.push(catch_up_row("SSE", total, started, |secs| {
        format!("{:.1} s, {} MiB", secs, bytes / (1024 * 1024))
    }));
    // WebSocket.
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/v1/ws", hub.port)).await?;
    let started = Instant::now();
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"op": "subscribe", "id": "s", "filter": {}, "after": 0})
            .to_string()
            .into(),
    ))
    .await?;
    let mut n = 0u64;
    while n < total {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await?
            .context("socket closed")??;
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            if t.starts_with("{\"op\":\"event\"") {
                n += 1;
            }
        }
    }
    rows.push(catch_up_row("WebSocket", total, started, |secs| {
        format!("{secs:.1} s")
    }));
    Ok(rows)
}

/// The row of one `client` ("SSE", "WebSocket") that caught up on `total` events since
/// `started`; `notes` from the seconds it took.
fn catch_up_row(
    client: &str,
    total: u64,
    started: Instant,
    notes: impl FnOnce(f64) -> String,
) -> Row {
    let secs = started.elapsed().as_secs_f64();
    let rate = total as f64 / secs;
    Row {
        scenario: format!("catch-up from the log, one {client} client, {total} events"),
        figure: format!("{rate:.0} events/s"),
        target: "≥ 200,000 events/s".into(),
        met: Some(rate >= 200_000.0),
        notes: notes(secs),
    }
}

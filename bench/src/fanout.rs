//! Fan-out scenarios: thousands of WebSocket or SSE subscribers, each measuring the
//! latency from publish to delivery by the timestamp in the event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

use crate::stats::{now_us, pct_ms};
use crate::{publish_batch, Args, Hub, Row};

/// Finds `"t":<digits>` in a frame.
fn stamp(frame: &str) -> Option<u64> {
    let at = frame.find("\"t\":")? + 4;
    let digits: String = frame[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

pub(crate) struct FanoutStats {
    pub(crate) received: AtomicU64,
}

/// Latency samples of one subscriber (µs), kept outside its task so that aborting the task at
/// the end loses nothing. Uncontended: only its subscriber writes until the end.
pub(crate) type Samples = Arc<Mutex<Vec<u64>>>;

fn record(samples: &Samples, stats: &FanoutStats, ts: u64) {
    if let Ok(mut s) = samples.lock() {
        s.push(now_us().saturating_sub(ts));
    }
    stats.received.fetch_add(1, Ordering::Relaxed);
}

async fn ws_subscriber(
    url: String,
    stats: Arc<FanoutStats>,
    ready: Arc<AtomicU64>,
    samples: Samples,
) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        json!({"op": "subscribe", "id": "s", "filter": {"type": ["bench.*"]}})
            .to_string()
            .into(),
    ))
    .await?;
    while let Some(msg) = ws.next().await {
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg? {
            if let Some(ts) = stamp(&t) {
                record(&samples, &stats, ts);
            } else if t.contains("\"op\":\"subscribed\"") {
                ready.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

pub(crate) async fn sse_subscriber(
    url: String,
    stats: Arc<FanoutStats>,
    ready: Arc<AtomicU64>,
    samples: Samples,
) -> anyhow::Result<()> {
    let res = reqwest::Client::new().get(url).send().await?;
    if !res.status().is_success() {
        bail!("stream answered {}", res.status());
    }
    ready.fetch_add(1, Ordering::Relaxed);
    let mut body = res.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(pos) = buf.find("\n\n") {
            if let Some(ts) = stamp(&buf[..pos]) {
                record(&samples, &stats, ts);
            }
            buf.drain(..pos + 2);
        }
    }
    Ok(())
}

pub(crate) async fn fanout(a: &Args, ws: bool, subscribers: usize) -> anyhow::Result<Row> {
    let hub = Hub::start(&a.crier_bin, &[("CRIER_DURABILITY", "fsync")]).await?;
    let stats = Arc::new(FanoutStats {
        received: AtomicU64::new(0),
    });
    let ready = Arc::new(AtomicU64::new(0));
    let mut subs = Vec::new();
    let mut all_samples = Vec::new();
    for _ in 0..subscribers {
        let (stats, ready) = (stats.clone(), ready.clone());
        let samples: Samples = Arc::default();
        all_samples.push(samples.clone());
        let task = if ws {
            tokio::spawn(ws_subscriber(
                format!("ws://127.0.0.1:{}/v1/ws", hub.port),
                stats,
                ready,
                samples,
            ))
        } else {
            tokio::spawn(sse_subscriber(
                hub.url("/v1/stream?type=bench.*"),
                stats,
                ready,
                samples,
            ))
        };
        subs.push(task);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while (ready.load(Ordering::Relaxed) as usize) < subscribers {
        if Instant::now() > deadline {
            bail!(
                "only {} of {subscribers} subscribers connected",
                ready.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss = hub.rss_kib()?;
    // Publish at a steady rate in batches every 20 ms.
    let client = reqwest::Client::new();
    let url = hub.url("/v1/events");
    let per_tick = (a.fanout_rate as f64 / 50.0).ceil() as usize;
    let mut published = 0u64;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    while started.elapsed() < Duration::from_secs(a.duration) {
        tick.tick().await;
        let t = now_us();
        let batch = Value::from(
            (0..per_tick)
                .map(|i| json!({"type": "bench.fan", "data": {"t": t, "i": i}}))
                .collect::<Vec<_>>(),
        );
        publish_batch(&client, &url, &batch).await?;
        published += per_tick as u64;
    }
    let publish_secs = started.elapsed().as_secs_f64();
    let expected = published * subscribers as u64;
    let drain_deadline = Instant::now() + Duration::from_secs(30);
    while stats.received.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total_secs = started.elapsed().as_secs_f64();
    for s in &subs {
        s.abort();
    }
    for s in subs {
        let _ = s.await;
    }
    let received = stats.received.load(Ordering::Relaxed);
    let mut lat = Vec::with_capacity(received as usize);
    for s in &all_samples {
        lat.extend(
            s.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .iter()
                .copied(),
        );
    }
    lat.sort_unstable();
    let p50 = pct_ms(&lat, 0.5);
    let p99 = pct_ms(&lat, 0.99);
    let rate = received as f64 / total_secs.max(publish_secs);
    let transport = if ws { "WebSocket" } else { "SSE" };
    Ok(Row {
        scenario: format!("fan-out, {subscribers} {transport} subscribers, {} events/s", a.fanout_rate),
        figure: format!("{rate:.0} deliveries/s, p50 {p50:.1} ms, p99 {p99:.1} ms"),
        target: if subscribers >= 5000 { "≥ 200,000 deliveries/s, p99 < 100 ms".into() } else { "-".into() },
        met: (subscribers >= 5000).then_some(rate >= 200_000.0 && p99 < 100.0),
        notes: format!(
            "published {:.0} events/s; {received} of {expected} deliveries ({}); hub RSS {} MiB with subscribers connected",
            published as f64 / publish_secs,
            if received == expected { "all" } else { "INCOMPLETE" },
            rss / 1024
        ),
    })
}

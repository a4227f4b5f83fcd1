//! Publish scenarios: durable batched and single-event publishes, and entity writes, each
//! from several clients for a fixed time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{json, Value};

use crate::stats::pct_ms;
use crate::{Args, Hub, Row};

pub(crate) async fn publish_batch(
    client: &reqwest::Client,
    url: &str,
    batch: &Value,
) -> anyhow::Result<()> {
    let res = client.post(url).json(batch).send().await?;
    if res.status().as_u16() != 201 {
        bail!(
            "publish answered {}: {}",
            res.status(),
            res.text().await.unwrap_or_default()
        );
    }
    Ok(())
}

pub(crate) async fn publish_batched(a: &Args) -> anyhow::Result<Row> {
    publish_batched_on(
        a,
        &[],
        "durable publish, batched (4 clients × 500/request, fsync)",
        50_000.0,
    )
    .await
}

pub(crate) async fn publish_batched_on(
    a: &Args,
    env: &[(&str, &str)],
    label: &str,
    target: f64,
) -> anyhow::Result<Row> {
    let hub = Hub::start(&a.crier_bin, env).await?;
    let url = hub.url("/v1/events");
    let count = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(a.duration);
    let mut tasks = Vec::new();
    for p in 0..4 {
        let (url, count) = (url.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let batch = Value::from(
                (0..500)
                    .map(|i| json!({"type": "bench.tick", "data": {"p": p, "i": i}}))
                    .collect::<Vec<_>>(),
            );
            while Instant::now() < until {
                publish_batch(&client, &url, &batch).await?;
                count.fetch_add(500, Ordering::Relaxed);
            }
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await??;
    }
    let rate = count.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    Ok(Row {
        scenario: label.into(),
        figure: format!("{rate:.0} events/s"),
        target: format!("≥ {target:.0} events/s"),
        met: Some(rate >= target),
        notes: format!(
            "{} events in {:.1} s",
            count.load(Ordering::Relaxed),
            started.elapsed().as_secs_f64()
        ),
    })
}

pub(crate) async fn publish_single(a: &Args) -> anyhow::Result<Row> {
    single_requests(
        a,
        &[],
        "durable publish, single-event requests (64 keep-alive clients, fsync)",
        10_000.0,
        Single::Publish,
    )
    .await
}

/// Entity changes: each request replaces one of 64 entities with a new value, so each is a
/// row write plus its `{kind}.updated` event in one commit (compare with publish-single).
pub(crate) async fn entity_put(a: &Args) -> anyhow::Result<Row> {
    single_requests(
        a,
        &[],
        "entity changes, PUT /v1/entities (64 keep-alive clients, fsync)",
        0.0,
        Single::EntityPut,
    )
    .await
}

/// What each request of [`single_requests`] does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Single {
    /// `POST /v1/events` with one event.
    Publish,
    /// `PUT /v1/entities/device/d{client}` with a new value.
    EntityPut,
}

/// 64 keep-alive clients sending one request after another for `a.duration` seconds:
/// requests/s against `target` (0: no target) and latency.
pub(crate) async fn single_requests(
    a: &Args,
    env: &[(&str, &str)],
    label: &str,
    target: f64,
    single: Single,
) -> anyhow::Result<Row> {
    let entities = single == Single::EntityPut;
    let hub = Hub::start(&a.crier_bin, env).await?;
    let url = hub.url(if entities {
        "/v1/entities/device"
    } else {
        "/v1/events"
    });
    let until = Instant::now() + Duration::from_secs(a.duration);
    let started = Instant::now();
    let lat = timed_requests(64, until, move |client, c, i| {
        let url = url.clone();
        async move {
            if entities {
                let res = client
                    .put(format!("{url}/d{c}"))
                    .json(&json!({"c": c, "i": i}))
                    .send()
                    .await?;
                if !res.status().is_success() {
                    bail!("PUT answered {}", res.status());
                }
                Ok(())
            } else {
                let event = json!({"type": "bench.single", "data": {"c": c, "i": i}});
                publish_batch(&client, &url, &event).await
            }
        }
    })
    .await?;
    let rate = lat.len() as f64 / started.elapsed().as_secs_f64();
    Ok(Row {
        scenario: label.into(),
        figure: format!("{rate:.0} requests/s"),
        target: if target > 0.0 {
            format!("≥ {target:.0}/s")
        } else {
            "-".into()
        },
        met: (target > 0.0).then_some(rate >= target),
        notes: format!(
            "latency p50 {:.2} ms, p99 {:.2} ms",
            pct_ms(&lat, 0.5),
            pct_ms(&lat, 0.99)
        ),
    })
}

/// `clients` keep-alive clients, numbered from 0, each sending `request(client, c, i)` for
/// i = 0, 1, … until `until`: the latency of every request in µs, sorted.
pub(crate) async fn timed_requests<F, Fut>(
    clients: u64,
    until: Instant,
    request: F,
) -> anyhow::Result<Vec<u64>>
where
    F: Fn(reqwest::Client, u64, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let mut tasks = Vec::new();
    for c in 0..clients {
        let request = request.clone();
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < until {
                let t0 = Instant::now();
                request(client.clone(), c, i).await?;
                lat.push(t0.elapsed().as_micros() as u64);
                i += 1;
            }
            anyhow::Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    all.sort_unstable();
    Ok(all)
}

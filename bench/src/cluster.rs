//! Cluster scenarios: publishing to a PostgreSQL log, and delivery from one node to another
//! over NATS or Redis.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::fanout::{sse_subscriber, FanoutStats, Samples};
use crate::publish::{publish_batched_on, single_requests, Single};
use crate::stats::{now_us, pct_ms};
use crate::{publish_batch, Args, Hub, Row};

fn fresh_schema(tag: &str) -> String {
    format!(
        "crier_bench_{tag}_{}_{}",
        std::process::id(),
        now_us() % 1_000_000
    )
}

/// Drops a bench schema with `psql` when it is installed (best effort; the names are unique).
fn drop_schema(a: &Args, schema: &str) {
    let _ = Command::new("psql")
        .args([
            a.postgres.as_str(),
            "-q",
            "-c",
            &format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub(crate) async fn pg_publish(a: &Args) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for batched in [true, false] {
        let schema = fresh_schema("pub");
        let env = [
            ("CRIER_STORE", a.postgres.as_str()),
            ("CRIER_STORE_SCHEMA", schema.as_str()),
        ];
        let row = if batched {
            publish_batched_on(
                a,
                &env,
                "durable publish to PostgreSQL, batched (4 clients × 500/request)",
                20_000.0,
            )
            .await
        } else {
            single_requests(
                a,
                &env,
                "durable publish to PostgreSQL, single-event requests (64 clients)",
                0.0,
                Single::Publish,
            )
            .await
        };
        drop_schema(a, &schema);
        rows.push(row?);
    }
    Ok(rows)
}

/// Two nodes over PostgreSQL and `broker`: publishes at 1,000 events/s on node A, one SSE
/// subscriber on node B measures publish→receive latency.
pub(crate) async fn cross_node(a: &Args, broker: &str, name: &str) -> anyhow::Result<Row> {
    let schema = fresh_schema("x");
    let env = [
        ("CRIER_STORE", a.postgres.as_str()),
        ("CRIER_STORE_SCHEMA", schema.as_str()),
        ("CRIER_BROKER", broker),
    ];
    let node_a = Hub::start(&a.crier_bin, &env).await?;
    let node_b = Hub::start(&a.crier_bin, &env).await?;
    let stats = Arc::new(FanoutStats {
        received: AtomicU64::new(0),
    });
    let ready = Arc::new(AtomicU64::new(0));
    let samples: Samples = Arc::default();
    let sub = tokio::spawn(sse_subscriber(
        node_b.url("/v1/stream?type=bench.*"),
        stats.clone(),
        ready.clone(),
        samples.clone(),
    ));
    while ready.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let client = reqwest::Client::new();
    let url = node_a.url("/v1/events");
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut published = 0u64;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(a.duration) {
        tick.tick().await;
        let t = now_us();
        let batch = Value::from(
            (0..10)
                .map(|i| json!({"type": "bench.x", "data": {"t": t, "i": i}}))
                .collect::<Vec<_>>(),
        );
        publish_batch(&client, &url, &batch).await?;
        published += 10;
    }
    let rate = published as f64 / started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(10);
    while stats.received.load(Ordering::Relaxed) < published && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sub.abort();
    let mut lat = samples
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .clone();
    lat.sort_unstable();
    let (p50, p99) = (pct_ms(&lat, 0.5), pct_ms(&lat, 0.99));
    drop(node_a);
    drop(node_b);
    drop_schema(a, &schema);
    Ok(Row {
        scenario: format!(
            "cross-node publish→deliver over {name} (PostgreSQL log, 1,000 events/s)"
        ),
        figure: format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
        target: "p99 < 20 ms".into(),
        met: Some(p99 < 20.0),
        notes: format!(
            "published {rate:.0} events/s; {} of {published} delivered on the other node",
            stats.received.load(Ordering::Relaxed)
        ),
    })
}

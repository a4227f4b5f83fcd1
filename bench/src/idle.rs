//! The idle-connections scenario: the hub's resident memory with many open, quiet SSE and
//! WebSocket connections.

use std::time::Duration;

use anyhow::bail;

use crate::{Args, Hub, Row};

pub(crate) async fn idle_rss(a: &Args) -> anyhow::Result<Row> {
    let hub = Hub::start(&a.crier_bin, &[("CRIER_HEARTBEAT", "60s")]).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = hub.rss_kib()?;
    let mut held = Vec::new();
    let half = ((a.idle as f64) * a.idle_sse_share.clamp(0.0, 1.0)).round() as usize;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    for i in 0..a.idle {
        if i < half {
            let res = client.get(hub.url("/v1/stream")).send().await?;
            if !res.status().is_success() {
                bail!("stream {i} answered {}", res.status());
            }
            held.push(Box::new(res) as Box<dyn std::any::Any + Send>);
        } else {
            let (ws, _) =
                tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/v1/ws", hub.port))
                    .await?;
            held.push(Box::new(ws) as Box<dyn std::any::Any + Send>);
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = hub.rss_kib()?;
    let per = (after.saturating_sub(before)) as f64 / a.idle as f64;
    drop(held);
    Ok(Row {
        scenario: format!(
            "idle connections ({half} SSE + {} WebSocket)",
            a.idle - half
        ),
        figure: format!("{per:.1} KiB per connection"),
        target: "≤ 10 KiB".into(),
        met: Some(per <= 10.0),
        notes: format!("hub RSS {} MiB → {} MiB", before / 1024, after / 1024),
    })
}

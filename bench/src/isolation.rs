//! The two isolation scenarios of §12.2: one tenant's heavy filters must not slow another
//! tenant's publishes (`tenant-isolation`), and readers that never read must each cost the
//! hub at most `reader_buffer_bytes` plus a small constant (`stuck-readers`).

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::publish::timed_requests;
use crate::stats::pct_ms;
use crate::{publish_batch, Args, Hub, Row};

const SECRET: &str = "crier-bench-isolation-secret-0123456789";

/// A JWT minted by the hub binary itself (`crier token`).
fn token(a: &Args, tenant: &str) -> anyhow::Result<String> {
    let out = Command::new(&a.crier_bin)
        .args([
            "token", "--sub", "bench", "--tenant", tenant, "--role", "admin",
        ])
        .env("CRIER_AUTH_JWT_SECRET", SECRET)
        .output()
        .context("running crier token")?;
    if !out.status.success() {
        bail!(
            "crier token failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_string())
}

/// p50 of tenant A's single-event publishes (16 keep-alive clients) for `secs`.
async fn single_p50(url: &str, token: &str, secs: u64) -> anyhow::Result<(f64, usize)> {
    let until = Instant::now() + Duration::from_secs(secs);
    let (url, token) = (url.to_string(), token.to_string());
    let all = timed_requests(16, until, move |client, c, i| {
        let (url, token) = (url.clone(), token.clone());
        async move {
            let res = client
                .post(&url)
                .bearer_auth(&token)
                .json(&json!({"type": "a.single", "data": {"c": c, "i": i}}))
                .send()
                .await?;
            if res.status().as_u16() != 201 {
                bail!("tenant A's publish answered {}", res.status());
            }
            Ok(())
        }
    })
    .await?;
    Ok((pct_ms(&all, 0.5), all.len()))
}

/// Tenant B: 20 WebSockets, each with 64 subscriptions of 64 near-miss glob patterns (the
/// most the default limits allow), while B publishes batches that every one of those
/// patterns must be tested against. Tenant A's single-publish p50 is measured before and
/// during.
pub async fn tenant_isolation(a: &Args) -> anyhow::Result<Row> {
    let hub = Hub::start(&a.crier_bin, &[("CRIER_AUTH_JWT_SECRET", SECRET)]).await?;
    let (ta, tb) = (token(a, "a")?, token(a, "b")?);
    let url = hub.url("/v1/events");
    let secs = (a.duration / 2).max(3);
    let (before, n_before) = single_p50(&url, &ta, secs).await?;

    let mut sockets = Vec::new();
    for c in 0..20 {
        let mut req = format!("ws://127.0.0.1:{}/v1/ws", hub.port).into_client_request()?;
        req.headers_mut()
            .insert("authorization", format!("Bearer {tb}").parse()?);
        let (mut ws, _) = tokio_tungstenite::connect_async(req).await?;
        for s in 0..64 {
            let patterns: Vec<String> = (0..64).map(|p| format!("*b.{c}*{s}*x{p}*y")).collect();
            let frame =
                json!({"op": "subscribe", "id": format!("s{s}"), "filter": {"type": patterns}});
            ws.send(Message::Text(frame.to_string().into())).await?;
        }
        let mut subscribed = 0;
        while subscribed < 64 {
            let msg = ws.next().await.context("tenant B's socket closed")??;
            if let Message::Text(t) = msg {
                let v: Value = serde_json::from_str(&t)?;
                match v["op"].as_str() {
                    Some("subscribed") => subscribed += 1,
                    Some("error") => bail!("tenant B's subscribe was refused: {t}"),
                    _ => {}
                }
            }
        }
        sockets.push(ws);
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let b_published = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let b = {
        let (url, tb, stop, n) = (url.clone(), tb.clone(), stop.clone(), b_published.clone());
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let batch = Value::from(
                (0..50)
                    .map(|i| json!({"type": format!("b.{i}.near.x{i}"), "data": {"i": i}}))
                    .collect::<Vec<_>>(),
            );
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let res = client
                    .post(&url)
                    .bearer_auth(&tb)
                    .json(&batch)
                    .send()
                    .await?;
                if res.status().as_u16() != 201 {
                    bail!("tenant B's publish answered {}", res.status());
                }
                n.fetch_add(50, std::sync::atomic::Ordering::Relaxed);
            }
            anyhow::Ok(())
        })
    };
    let (during, n_during) = single_p50(&url, &ta, secs).await?;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    b.await??;
    drop(sockets);
    let bound = before * 2.0 + 10.0;
    Ok(Row {
        scenario: "tenant isolation: tenant A's single publishes while tenant B holds 20 sockets × 64 subscriptions × 64 glob patterns and publishes".into(),
        figure: format!("p50 {before:.2} ms → {during:.2} ms"),
        target: "≤ 2× + 10 ms".into(),
        met: Some(during <= bound),
        notes: format!(
            "{n_before} / {n_during} publishes of A (16 clients, {secs} s each); B published {} events meanwhile",
            b_published.load(std::sync::atomic::Ordering::Relaxed)
        ),
    })
}

/// A reader of everything from `after=0`: an SSE stream or a `/v1/ws` subscription.
#[derive(Clone, Copy, PartialEq)]
pub enum Reader {
    Sse,
    Ws,
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A reader's socket: read to the end by `drain`, or held and never read.
enum Open {
    Sse(tokio::net::TcpStream),
    Ws(Box<WsStream>),
}

impl Open {
    async fn drain(self) {
        match self {
            Open::Sse(mut s) => {
                let mut buf = vec![0u8; 64 * 1024];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            }
            Open::Ws(mut ws) => while let Some(Ok(_)) = ws.next().await {},
        }
    }
}

/// Opens a reader of everything from `after=0`: the SSE response head is read, or the
/// WebSocket subscription sent; then nothing more unless drained.
async fn open_reader(port: u16, kind: Reader) -> anyhow::Result<Open> {
    if kind == Reader::Ws {
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/v1/ws")).await?;
        let sub = json!({"op": "subscribe", "id": "all", "after": 0, "filter": {}});
        ws.send(Message::text(sub.to_string())).await?;
        return Ok(Open::Ws(Box::new(ws)));
    }
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(
        b"GET /v1/stream?after=0 HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
    )
    .await?;
    let mut head = vec![0u8; 256];
    let n = s.read(&mut head).await?;
    if !head[..n].starts_with(b"HTTP/1.1 200") {
        bail!(
            "the stream was refused: {}",
            String::from_utf8_lossy(&head[..n])
        );
    }
    Ok(Open::Sse(s))
}

/// Publishes batches of ten `pad`-sized events every 50 ms until `until`; returns how many
/// and the highest RSS seen.
async fn publish_until(
    hub: &Hub,
    client: &reqwest::Client,
    batch: &Value,
    until: Instant,
) -> anyhow::Result<(usize, u64)> {
    let url = hub.url("/v1/events");
    let (mut published, mut peak) = (0, hub.rss_kib()?);
    while Instant::now() < until {
        publish_batch(client, &url, batch).await?;
        published += 10;
        peak = peak.max(hub.rss_kib()?);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((published, peak.max(hub.rss_kib()?)))
}

/// 20 readers from `after=0` (SSE streams or WebSocket subscriptions) that never read, over
/// 60 KB events: the hub's RSS may grow by at most `reader_buffer_bytes` (1 MiB by default)
/// plus a small constant per reader.
///
/// What the hub takes for the same work without stuck readers is not theirs: its SQLite
/// page caches and read connections, the allocator's arenas of the threads that read the
/// log, the buffers of the publishes. So the run first does it all once with 20 readers that
/// do read (they catch up and follow while the same batches are published, then leave), and
/// measures the stuck readers from there.
pub async fn stuck_readers(a: &Args, kind: Reader) -> anyhow::Result<Row> {
    let hub = Hub::start(&a.crier_bin, &[]).await?;
    let client = reqwest::Client::new();
    let pad = "x".repeat(60_000);
    let batch = Value::from(
        (0..10)
            .map(|i| json!({"type": "big.event", "data": {"i": i, "pad": pad}}))
            .collect::<Vec<_>>(),
    );
    // 600 events of 60 KB (36 MB) in the log before the readers come.
    let url = hub.url("/v1/events");
    for _ in 0..60 {
        publish_batch(&client, &url, &batch).await?;
    }
    let secs = Duration::from_secs(a.duration.max(5));

    // The same work with readers that read.
    let mut warm = Vec::new();
    for _ in 0..20 {
        warm.push(tokio::spawn(open_reader(hub.port, kind).await?.drain()));
    }
    let (warm_published, _) = publish_until(&hub, &client, &batch, Instant::now() + secs).await?;
    for w in &warm {
        w.abort();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = hub.rss_kib()?;

    let mut readers = Vec::new();
    for _ in 0..20 {
        readers.push(open_reader(hub.port, kind).await?);
    }
    // More events while they are stuck: the live path as well as catch-up.
    let (published, peak) = publish_until(&hub, &client, &batch, Instant::now() + secs).await?;
    drop(readers);
    let per = (peak.saturating_sub(before)) as f64 / 20.0;
    let bound_kib = 1024.0 + 256.0;
    let readers = match kind {
        Reader::Sse => "SSE streams",
        Reader::Ws => "WebSocket subscriptions",
    };
    Ok(Row {
        scenario: format!("stuck readers: 20 {readers} from after=0 that never read, 60 KB events"),
        figure: format!("{per:.0} KiB per reader (peak RSS {peak} KiB, before {before} KiB)"),
        target: "≤ reader_buffer_bytes (1 MiB) + 256 KiB".into(),
        met: Some(per <= bound_kib),
        notes: format!(
            "{} events of 60 KB: 600 before, {warm_published} with 20 readers that read (the baseline), {published} with the stuck ones",
            600 + warm_published + published
        ),
    })
}

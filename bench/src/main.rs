//! crier-bench: starts the real hub binary and measures it from a second process on the same
//! machine (so the load tool shares the cores). Each scenario runs against a fresh data
//! directory and a fresh hub. Results go to stdout and, with `--out`, are appended to a
//! Markdown file with the date, the machine and the command line.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

mod isolation;

#[derive(Parser, Clone)]
#[command(about = "Measures a crier hub: publish, fan-out, idle connections, catch-up")]
struct Args {
    /// The hub binary.
    #[arg(long, default_value = "target/release/crier")]
    crier_bin: PathBuf,
    /// Scenarios to run (comma-separated): publish-batched, publish-single, fanout-ws,
    /// fanout-sse, idle-rss, catchup, pg-publish, cross-node-nats, cross-node-redis,
    /// tenant-isolation, stuck-readers.
    #[arg(
        long,
        default_value = "publish-batched,publish-single,entity-put,fanout-ws,fanout-sse,idle-rss,catchup,pg-publish,cross-node-nats,cross-node-redis,tenant-isolation,stuck-readers"
    )]
    scenario: String,
    /// Seconds each timed scenario runs.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Subscriber counts for the fan-out scenarios.
    #[arg(long, default_value = "1000,5000")]
    subscribers: String,
    /// Events per second published during fan-out.
    #[arg(long, default_value_t = 50)]
    fanout_rate: u64,
    /// Idle connections for idle-rss.
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Share of SSE among the idle connections, 0.0 to 1.0 (the rest are WebSockets).
    #[arg(long, default_value_t = 0.5)]
    idle_sse_share: f64,
    /// Events stored before the catch-up read.
    #[arg(long, default_value_t = 1_000_000)]
    catchup_events: usize,
    /// PostgreSQL for the cluster scenarios.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres: String,
    /// NATS for the cross-node scenario.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    /// Redis for the cross-node scenario.
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    redis: String,
    /// Append results to this Markdown file.
    #[arg(long)]
    out: Option<PathBuf>,
}

struct Hub {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Hub {
    async fn start(bin: &PathBuf, env: &[(&str, &str)]) -> anyhow::Result<Hub> {
        let dir = tempfile::tempdir()?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut cmd = Command::new(bin);
        cmd.args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUST_LOG", "warn")
        .env("CRIER_LIMITS_MAX_CONNECTIONS_PER_TENANT", "1000000")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let mut hub = Hub {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = hub.child.try_wait()? {
                bail!("the hub exited at start: {status}");
            }
            if let Ok(r) = reqwest::get(hub.url("/healthz")).await {
                if r.status().is_success() {
                    return Ok(hub);
                }
            }
            if Instant::now() > deadline {
                bail!("the hub did not answer /healthz");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .context("no VmRSS")
    }
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// One result line.
struct Row {
    scenario: String,
    figure: String,
    target: String,
    met: Option<bool>,
    notes: String,
}

async fn publish_batch(client: &reqwest::Client, url: &str, batch: &Value) -> anyhow::Result<()> {
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

async fn publish_batched(a: &Args) -> anyhow::Result<Row> {
    publish_batched_on(
        a,
        &[],
        "durable publish, batched (4 clients × 500/request, fsync)",
        50_000.0,
    )
    .await
}

async fn publish_batched_on(
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

async fn publish_single(a: &Args) -> anyhow::Result<Row> {
    publish_single_on(
        a,
        &[],
        "durable publish, single-event requests (64 keep-alive clients, fsync)",
        10_000.0,
    )
    .await
}

/// Entity changes: each request replaces one of 64 entities with a new value, so each is a
/// row write plus its `{kind}.updated` event in one commit (compare with publish-single).
async fn entity_put(a: &Args) -> anyhow::Result<Row> {
    single_requests(
        a,
        &[],
        "entity changes, PUT /v1/entities (64 keep-alive clients, fsync)",
        0.0,
        true,
    )
    .await
}

async fn publish_single_on(
    a: &Args,
    env: &[(&str, &str)],
    label: &str,
    target: f64,
) -> anyhow::Result<Row> {
    single_requests(a, env, label, target, false).await
}

async fn single_requests(
    a: &Args,
    env: &[(&str, &str)],
    label: &str,
    target: f64,
    entities: bool,
) -> anyhow::Result<Row> {
    let hub = Hub::start(&a.crier_bin, env).await?;
    let url = hub.url(if entities {
        "/v1/entities/device"
    } else {
        "/v1/events"
    });
    let until = Instant::now() + Duration::from_secs(a.duration);
    let lat: Arc<Mutex<Vec<u64>>> = Arc::default();
    let mut tasks = Vec::new();
    for c in 0..64 {
        let (url, lat) = (url.clone(), lat.clone());
        tasks.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut mine = Vec::new();
            let mut i = 0u64;
            while Instant::now() < until {
                let t0 = Instant::now();
                if entities {
                    let res = client
                        .put(format!("{url}/d{c}"))
                        .json(&json!({"c": c, "i": i}))
                        .send()
                        .await?;
                    if !res.status().is_success() {
                        bail!("PUT answered {}", res.status());
                    }
                } else {
                    publish_batch(
                        &client,
                        &url,
                        &json!({"type": "bench.single", "data": {"c": c, "i": i}}),
                    )
                    .await?;
                }
                mine.push(t0.elapsed().as_micros() as u64);
                i += 1;
            }
            lat.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .extend(mine);
            anyhow::Ok(())
        }));
    }
    let started = Instant::now();
    for t in tasks {
        t.await??;
    }
    let mut lat = lat.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    lat.sort_unstable();
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
            percentile(&lat, 0.5) as f64 / 1000.0,
            percentile(&lat, 0.99) as f64 / 1000.0
        ),
    })
}

/// Finds `"t":<digits>` in a frame.
fn stamp(frame: &str) -> Option<u64> {
    let at = frame.find("\"t\":")? + 4;
    let digits: String = frame[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    digits.parse().ok()
}

struct FanoutStats {
    received: AtomicU64,
}

/// Latency samples of one subscriber (µs), kept outside its task so that aborting the task at
/// the end loses nothing. Uncontended: only its subscriber writes until the end.
type Samples = Arc<Mutex<Vec<u64>>>;

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

async fn sse_subscriber(
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

async fn fanout(a: &Args, ws: bool, subscribers: usize) -> anyhow::Result<Row> {
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
    let p50 = percentile(&lat, 0.5) as f64 / 1000.0;
    let p99 = percentile(&lat, 0.99) as f64 / 1000.0;
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

async fn idle_rss(a: &Args) -> anyhow::Result<Row> {
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
        target: "≤ 16 KiB".into(),
        met: Some(per <= 16.0),
        notes: format!("hub RSS {} MiB → {} MiB", before / 1024, after / 1024),
    })
}

async fn catchup(a: &Args) -> anyhow::Result<Vec<Row>> {
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
    let secs = started.elapsed().as_secs_f64();
    let rate = total as f64 / secs;
    rows.push(Row {
        scenario: format!("catch-up from the log, one SSE client, {total} events"),
        figure: format!("{rate:.0} events/s"),
        target: "≥ 200,000 events/s".into(),
        met: Some(rate >= 200_000.0),
        notes: format!("{:.1} s, {} MiB", secs, bytes / (1024 * 1024)),
    });
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
    let secs = started.elapsed().as_secs_f64();
    let rate = total as f64 / secs;
    rows.push(Row {
        scenario: format!("catch-up from the log, one WebSocket client, {total} events"),
        figure: format!("{rate:.0} events/s"),
        target: "≥ 200,000 events/s".into(),
        met: Some(rate >= 200_000.0),
        notes: format!("{secs:.1} s"),
    });
    Ok(rows)
}

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

async fn pg_publish(a: &Args) -> anyhow::Result<Vec<Row>> {
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
            publish_single_on(
                a,
                &env,
                "durable publish to PostgreSQL, single-event requests (64 clients)",
                0.0,
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
async fn cross_node(a: &Args, broker: &str, name: &str) -> anyhow::Result<Row> {
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
    let (p50, p99) = (
        percentile(&lat, 0.5) as f64 / 1000.0,
        percentile(&lat, 0.99) as f64 / 1000.0,
    );
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

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|k| format!("{:.0} GiB", k as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cores} cores ({cpu}), {mem} RAM; the load tool runs on the same cores as the hub")
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut rows = Vec::new();
        for s in a.scenario.split(',').map(str::trim) {
            eprintln!("== {s}");
            let result = match s {
                "publish-batched" => publish_batched(&a).await.map(|r| vec![r]),
                "publish-single" => publish_single(&a).await.map(|r| vec![r]),
                "entity-put" => entity_put(&a).await.map(|r| vec![r]),
                "fanout-ws" | "fanout-sse" => {
                    let mut out = Vec::new();
                    for n in a.subscribers.split(',').filter_map(|n| n.trim().parse::<usize>().ok()) {
                        out.push(fanout(&a, s == "fanout-ws", n).await?);
                    }
                    Ok(out)
                }
                "idle-rss" => idle_rss(&a).await.map(|r| vec![r]),
                "tenant-isolation" => isolation::tenant_isolation(&a).await.map(|r| vec![r]),
                "stuck-readers" => isolation::stuck_readers(&a).await.map(|r| vec![r]),
                "catchup" => catchup(&a).await,
                "pg-publish" => pg_publish(&a).await,
                "cross-node-nats" => cross_node(&a, &a.nats, "NATS").await.map(|r| vec![r]),
                "cross-node-redis" => cross_node(&a, &a.redis, "Redis").await.map(|r| vec![r]),
                other => bail!("unknown scenario {other:?}"),
            };
            match result {
                Ok(r) => {
                    for row in &r {
                        eprintln!("   {}: {} ({})", row.scenario, row.figure, row.notes);
                    }
                    rows.extend(r);
                }
                Err(e) => {
                    eprintln!("   failed: {e:#}");
                    rows.push(Row { scenario: s.into(), figure: "failed".into(), target: "-".into(), met: Some(false), notes: format!("{e:#}") });
                }
            }
        }
        let date = time::OffsetDateTime::now_utc();
        let mut md = format!(
            "\n## {:04}-{:02}-{:02} {:02}:{:02} UTC\n\nMachine: {}.\n\nCommand: `{}`\n\n| scenario | measured | target | met | notes |\n|---|---|---|---|---|\n",
            date.year(),
            u8::from(date.month()),
            date.day(),
            date.hour(),
            date.minute(),
            machine(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        for r in &rows {
            let met = match r.met {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            };
            md.push_str(&format!("| {} | {} | {} | {} | {} |\n", r.scenario, r.figure, r.target, met, r.notes));
        }
        print!("{md}");
        if let Some(path) = &a.out {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
            f.write_all(md.as_bytes())?;
        }
        anyhow::Ok(())
    })
}

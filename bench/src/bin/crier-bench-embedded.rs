//! crier-bench-embedded: the figures of §14 in one process. A hub embedded with the `crier`
//! library serves its router on loopback; the same hub is then measured
//!
//! * **in-process vs HTTP publish**: 64 tasks publish single events through `Hub::publish`,
//!   then 64 keep-alive HTTP clients `POST /v1/events` for as long; events/s and latency;
//! * **outbox throughput**: rows inserted into the outbox in transactions of 500 until the
//!   last one is received by an SSE subscriber: rows/s end to end;
//! * **outbox lag**: single-row transactions at a steady rate, each row stamped with its
//!   insert time; an SSE subscriber measures insert → delivery (p50, p99).
//!
//! Results go to stdout as Markdown table rows.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures_util::StreamExt;
use serde_json::{json, Value};

#[path = "../stats.rs"]
mod stats;
use stats::{now_us, pct_ms};

#[derive(Parser)]
#[command(about = "Measures an embedded crier hub: in-process publish and the outbox")]
struct Args {
    /// Seconds each publish variant runs.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Rows of the outbox throughput run.
    #[arg(long, default_value_t = 50_000)]
    outbox_rows: usize,
    /// Rows per second of the outbox lag run (for 10 s).
    #[arg(long, default_value_t = 200)]
    lag_rate: u64,
    /// PostgreSQL for the outbox (empty: skip it).
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/test")]
    postgres: String,
}

/// Runs `tasks` publishers for `secs`; returns events/s and sorted latencies in µs.
async fn publish_load<F, Fut>(tasks: usize, secs: u64, publish: F) -> (f64, Vec<u64>)
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    let started = Instant::now();
    let mut handles = Vec::new();
    for t in 0..tasks {
        let publish = publish.clone();
        handles.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < deadline {
                let s = Instant::now();
                if publish(t as u64 * 1_000_000_000 + i).await.is_ok() {
                    lat.push(s.elapsed().as_micros() as u64);
                }
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for h in handles {
        all.extend(h.await.unwrap_or_default());
    }
    let rate = all.len() as f64 / started.elapsed().as_secs_f64();
    all.sort_unstable();
    (rate, all)
}

async fn publish_compare(hub: &crier::Hub, base: &str, secs: u64) -> anyhow::Result<()> {
    let h = hub.clone();
    let (inproc, lat_in) = publish_load(64, secs, move |i| {
        let h = h.clone();
        async move {
            h.publish(
                "bench",
                crier::NewEvent::new("bench.inproc").data(json!({"i": i})),
            )
            .await?;
            Ok(())
        }
    })
    .await;
    let client = reqwest::Client::new();
    let url = format!("{base}/v1/events");
    let (http, lat_http) = publish_load(64, secs, move |i| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let res = client
                .post(&url)
                .json(&json!({"type": "bench.http", "tenant": "bench", "data": {"i": i}}))
                .send()
                .await?;
            anyhow::ensure!(res.status() == 201, "status {}", res.status());
            Ok(())
        }
    })
    .await;
    println!(
        "| single-event publish, in-process `Hub::publish` (64 tasks, fsync) | {inproc:.0} events/s | p50 {:.2} ms, p99 {:.2} ms |",
        pct_ms(&lat_in, 0.5),
        pct_ms(&lat_in, 0.99)
    );
    println!(
        "| single-event publish, HTTP `POST /v1/events` to the same hub (64 clients, fsync) | {http:.0} events/s | p50 {:.2} ms, p99 {:.2} ms |",
        pct_ms(&lat_http, 0.5),
        pct_ms(&lat_http, 0.99)
    );
    println!(
        "| in-process / HTTP, same run | {:.2}× throughput | p50 latency {:.2}× |",
        inproc / http.max(1.0),
        pct_ms(&lat_in, 0.5) / pct_ms(&lat_http, 0.5).max(0.001)
    );
    Ok(())
}

/// Reads SSE `data:` lines of `bench.outbox` events, handing each event to `f` until it
/// answers false.
async fn sse_until(base: &str, mut f: impl FnMut(&Value) -> bool) -> anyhow::Result<()> {
    let res = reqwest::get(format!("{base}/v1/stream?type=bench.outbox")).await?;
    let mut body = res.bytes_stream();
    let mut buf = String::new();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find('\n') {
            let line: String = buf.drain(..=end).collect();
            if let Some(data) = line.trim_end().strip_prefix("data: ") {
                let v: Value = serde_json::from_str(data)?;
                if !f(&v) {
                    return Ok(());
                }
            }
        }
    }
    anyhow::bail!("the stream ended")
}

async fn outbox(base: &str, pg: &str, table: &str, rows: usize, rate: u64) -> anyhow::Result<()> {
    let (db, conn) = tokio_postgres::connect(pg, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let db = Arc::new(db);
    // Throughput: everything inserted as fast as PostgreSQL takes it, timed to the last delivery.
    let base2 = base.to_string();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        sse_until(&base2, |_| {
            n += 1;
            n < rows
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    for b in (0..rows).step_by(500) {
        let upto = (b + 500).min(rows) as i32;
        db.execute(
            &format!("INSERT INTO {table} (event) SELECT jsonb_build_object('type', 'bench.outbox', 'data', i) FROM generate_series($1::int, $2::int - 1) i"),
            &[&(b as i32), &upto],
        )
        .await?;
    }
    reader.await??;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "| outbox throughput, {rows} rows in transactions of 500 → SSE subscriber | {:.0} rows/s | {secs:.1} s end to end |",
        rows as f64 / secs
    );
    // Lag: one row per transaction at a steady rate, stamped with its insert time.
    let total = rate * 10;
    let base2 = base.to_string();
    let reader = tokio::spawn(async move {
        let mut lags = Vec::new();
        sse_until(&base2, |v| {
            if let Some(sent) = v["data"].as_i64() {
                lags.push((now_us() as i64 - sent).max(0) as u64);
            }
            (lags.len() as u64) < total
        })
        .await
        .map(|()| lags)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    for _ in 0..total {
        tick.tick().await;
        db.execute(
            &format!("INSERT INTO {table} (event) VALUES (jsonb_build_object('type', 'bench.outbox', 'data', $1::bigint))"),
            &[&(now_us() as i64)],
        )
        .await?;
    }
    let mut lags = reader.await??;
    lags.sort_unstable();
    println!(
        "| outbox lag, commit → SSE delivery ({rate} single-row transactions/s) | p50 {:.1} ms, p99 {:.1} ms | {} rows |",
        pct_ms(&lags, 0.5),
        pct_ms(&lags, 0.99),
        lags.len()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let dir = tempfile::tempdir()?;
    let table = format!("bench_outbox_{}", std::process::id());
    let mut toml = format!("data_dir = {:?}\n", dir.path().display().to_string());
    if !a.postgres.is_empty() {
        let (db, conn) = tokio_postgres::connect(&a.postgres, tokio_postgres::NoTls)
            .await
            .context("connect to PostgreSQL (or pass --postgres '')")?;
        tokio::spawn(conn);
        db.batch_execute(&crier_server::outbox::init_sql(&table))
            .await?;
        toml.push_str(&format!(
            "[outbox]\nurl = {:?}\ntable = {table:?}\n",
            a.postgres
        ));
    }
    let hub = crier::Hub::open(crier::HubConfig::from_toml(&toml)?).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let router: crier::axum::Router = hub.router();
    let server = tokio::spawn(async move { crier::axum::serve(listener, router).await });
    println!("| scenario | measured | notes |\n|---|---|---|");
    publish_compare(&hub, &base, a.duration).await?;
    if !a.postgres.is_empty() {
        outbox(&base, &a.postgres, &table, a.outbox_rows, a.lag_rate).await?;
        let (db, conn) = tokio_postgres::connect(&a.postgres, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        db.batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_rejected; DROP FUNCTION IF EXISTS {table}_notify()"
        ))
        .await?;
    }
    hub.close().await?;
    server.abort();
    Ok(())
}

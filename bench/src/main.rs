//! crier-bench: starts the real hub binary and measures it from a second process on the same
//! machine (so the load tool shares the cores). Each scenario runs against a fresh data
//! directory and a fresh hub. Results go to stdout and, with `--out`, are appended to a
//! Markdown file with the date, the machine and the command line.

use std::path::PathBuf;

use anyhow::bail;
use clap::Parser;

mod catchup;
mod cluster;
mod fanout;
mod hub;
mod idle;
mod isolation;
mod publish;
mod stats;

use catchup::catchup;
use cluster::{cross_node, pg_publish};
use fanout::fanout;
use hub::Hub;
use idle::idle_rss;
use publish::{entity_put, publish_batch, publish_batched, publish_single};

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

/// One result line.
struct Row {
    scenario: String,
    figure: String,
    target: String,
    met: Option<bool>,
    notes: String,
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
                "stuck-readers" => {
                    let mut rows = Vec::new();
                    for kind in [isolation::Reader::Sse, isolation::Reader::Ws] {
                        rows.push(isolation::stuck_readers(&a, kind).await?);
                    }
                    Ok(rows)
                }
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

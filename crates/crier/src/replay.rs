//! `crier replay`: replays history to the terminal at 1x–10x or `max`.

use std::io::IsTerminal;

use anyhow::{bail, Context};
use clap::Args;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::sse_client::SseParser;
use crate::tail::print_event;
use crate::ClientArgs;

#[derive(Args)]
pub struct ReplayArgs {
    /// Start of the range (RFC 3339).
    #[arg(long)]
    since: String,
    /// End of the range (RFC 3339; default now).
    #[arg(long)]
    until: Option<String>,
    /// 1 to 10, or `max`.
    #[arg(long, default_value = "1")]
    speed: String,
    /// Type patterns.
    #[arg(long = "type")]
    types: Vec<String>,
    /// Category patterns.
    #[arg(long)]
    category: Vec<String>,
    /// Source patterns.
    #[arg(long)]
    source: Vec<String>,
    /// Subject patterns.
    #[arg(long)]
    subject: Vec<String>,
    /// Minimum severity.
    #[arg(long)]
    severity: Option<String>,
    /// Tags (any of).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Print each event as one line of JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn split(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

pub async fn run(a: ReplayArgs) -> anyhow::Result<()> {
    let mut filter = serde_json::Map::new();
    for (k, v) in [
        ("type", &a.types),
        ("category", &a.category),
        ("source", &a.source),
        ("subject", &a.subject),
        ("tags", &a.tags),
    ] {
        if !v.is_empty() {
            filter.insert(k.into(), json!(split(v)));
        }
    }
    if let Some(s) = &a.severity {
        filter.insert("severity".into(), s.clone().into());
    }
    let speed: Value = if a.speed == "max" {
        "max".into()
    } else {
        a.speed
            .parse::<f64>()
            .map(Value::from)
            .with_context(|| format!("--speed {:?} is not 1 to 10 or max", a.speed))?
    };
    let body = json!({"filter": filter, "since": a.since, "until": a.until, "speed": speed});
    let client = reqwest::Client::new();
    let res = a
        .client
        .auth(
            client
                .post(format!("{}/v1/replays", a.client.base()))
                .json(&body),
        )
        .send()
        .await
        .with_context(|| format!("cannot reach the hub at {}", a.client.url))?;
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!(
            "the hub answered {status}: {}",
            v["error"]["message"].as_str().unwrap_or("no message")
        );
    }
    let id = v["id"]
        .as_str()
        .context("the hub answered without a replay id")?;
    eprintln!("replaying {} events ({id})", v["total"]);
    let res = a
        .client
        .auth(client.get(format!("{}/v1/replays/{id}/stream", a.client.base())))
        .send()
        .await?;
    if !res.status().is_success() {
        bail!("the hub refused the replay stream: {}", res.status());
    }
    let tty = std::io::stdout().is_terminal();
    let mut parser = SseParser::default();
    let mut body = res.bytes_stream();
    while let Some(chunk) = body.next().await {
        for m in parser.feed(&chunk.context("the replay stream broke off")?) {
            if m.event == "crier.replay_done" {
                eprintln!("replay finished: {}", m.data);
                return Ok(());
            }
            print_event(&m.data, a.json, tty);
        }
    }
    bail!("the replay stream ended before it was done")
}

//! `crier replay`: replays history to the terminal at 1x–10x or `max`.

use anyhow::{bail, Context};
use clap::Args;
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::tail::{print_event, FilterArgs};
use crate::ClientArgs;
use crier_client::sse::SseParser;

#[derive(Args)]
pub struct ReplayArgs {
    /// Start of the range: RFC 3339, or a duration before now (15m, 2h, 7d).
    #[arg(long)]
    since: String,
    /// End of the range: RFC 3339 or a duration before now (default now).
    #[arg(long)]
    until: Option<String>,
    /// 1 to 10, or `max`.
    #[arg(long, default_value = "1")]
    speed: String,
    #[command(flatten)]
    filter: FilterArgs,
    /// Print each event as one line of JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn run(a: ReplayArgs) -> anyhow::Result<()> {
    let filter = a.filter.json();
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
        bail!("the hub answered {status}: {}", crate::hub_message(&v));
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
    let status = res.status();
    if !status.is_success() {
        let v: Value = res.json().await.unwrap_or(Value::Null);
        bail!(
            "the hub refused the replay stream ({status}): {}",
            crate::hub_message(&v)
        );
    }
    let tty = crate::colour(&std::io::stdout());
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

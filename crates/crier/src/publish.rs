//! `crier publish`: one event from flags, or NDJSON from standard input in batches.

use std::io::BufRead;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{json, Value};

use crate::ClientArgs;

#[derive(Args)]
pub struct PublishArgs {
    /// The event type, or `-` to read NDJSON events from standard input.
    #[arg(value_name = "TYPE")]
    kind: String,
    /// `data` as JSON.
    #[arg(long)]
    data: Option<String>,
    /// `subject`.
    #[arg(long)]
    subject: Option<String>,
    /// `severity`: debug, info, warning, error, critical.
    #[arg(long)]
    severity: Option<String>,
    /// `category`.
    #[arg(long)]
    category: Option<String>,
    /// `source`.
    #[arg(long)]
    source: Option<String>,
    /// `id` (idempotency key).
    #[arg(long)]
    id: Option<String>,
    /// A tag; repeat for more.
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Events per request when reading standard input.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    #[command(flatten)]
    client: ClientArgs,
}

async fn post(
    client: &reqwest::Client,
    args: &ClientArgs,
    body: Vec<u8>,
    ndjson: bool,
) -> anyhow::Result<Value> {
    let ct = if ndjson {
        "application/x-ndjson"
    } else {
        "application/json"
    };
    let req = client
        .post(format!("{}/v1/events", args.base()))
        .header(reqwest::header::CONTENT_TYPE, ct)
        .body(body);
    let res = args
        .auth(req)
        .send()
        .await
        .with_context(|| format!("cannot reach the hub at {}", args.url))?;
    let status = res.status();
    let text = res.text().await.context("reading the hub's answer")?;
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    if !status.is_success() {
        let msg = v["error"]["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| v.to_string());
        bail!("the hub answered {status}: {msg}");
    }
    Ok(v)
}

pub async fn run(a: PublishArgs) -> anyhow::Result<()> {
    if a.batch == 0 {
        bail!("--batch must be at least 1");
    }
    let client = reqwest::Client::new();
    if a.kind != "-" {
        let mut ev = json!({"type": a.kind});
        if let Some(d) = &a.data {
            ev["data"] = serde_json::from_str(d).context("--data is not valid JSON")?;
        }
        for (k, v) in [
            ("subject", &a.subject),
            ("severity", &a.severity),
            ("category", &a.category),
            ("source", &a.source),
            ("id", &a.id),
        ] {
            if let Some(v) = v {
                ev[k] = Value::String(v.clone());
            }
        }
        if !a.tags.is_empty() {
            ev["tags"] = json!(a.tags);
        }
        let v = post(&client, &a.client, serde_json::to_vec(&ev)?, false).await?;
        let r = &v["events"][0];
        let dup = if r["duplicate"].as_bool() == Some(true) {
            " (duplicate)"
        } else {
            ""
        };
        println!(
            "published {} seq {}{dup}",
            r["id"].as_str().unwrap_or("?"),
            r["seq"]
        );
        return Ok(());
    }
    let bar = ProgressBar::new_spinner();
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos} events published ({per_sec}) {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut total = 0u64;
    let mut line_no = 0u64;
    loop {
        let mut body = Vec::new();
        let mut n = 0;
        let first_line = line_no + 1;
        while n < a.batch {
            let Some(line) = lines.next() else { break };
            let line = line.context("reading standard input")?;
            line_no += 1;
            if line.trim().is_empty() {
                continue;
            }
            body.extend_from_slice(line.as_bytes());
            body.push(b'\n');
            n += 1;
        }
        if n == 0 {
            break;
        }
        post(&client, &a.client, body, true)
            .await
            .with_context(|| {
                format!(
                    "batch of lines {first_line}-{line_no} was refused; nothing of it was stored"
                )
            })?;
        total += n as u64;
        bar.set_position(total);
    }
    bar.finish_with_message("done");
    eprintln!("published {total} events");
    Ok(())
}

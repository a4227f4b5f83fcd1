//! `crier tail`: follows `GET /v1/stream`, prints events coloured by severity, and resumes
//! from the last seen seq after any disconnect (exponential backoff, 1 s to 30 s).

use std::io::{IsTerminal, Write};
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use futures_util::StreamExt;
use serde_json::Value;

use crate::sse_client::SseParser;
use crate::ClientArgs;

/// The filter flags shared by `tail` and `replay` (§2).
#[derive(Args, Clone)]
pub struct FilterArgs {
    /// Type patterns (comma-separated or repeated).
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
}

fn split(v: &[String]) -> Vec<String> {
    v.iter()
        .flat_map(|s| s.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect()
}

impl FilterArgs {
    /// As query parameters of `/v1/stream`.
    pub fn query(&self) -> Vec<(&'static str, String)> {
        let mut q = Vec::new();
        for (k, v) in self.lists() {
            if !v.is_empty() {
                q.push((if k == "tags" { "tag" } else { k }, split(v).join(",")));
            }
        }
        if let Some(s) = &self.severity {
            q.push(("severity", s.clone()));
        }
        q
    }

    /// As the JSON filter of replays and subscriptions.
    pub fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in self.lists() {
            if !v.is_empty() {
                m.insert(k.into(), serde_json::json!(split(v)));
            }
        }
        if let Some(s) = &self.severity {
            m.insert("severity".into(), s.clone().into());
        }
        serde_json::Value::Object(m)
    }

    fn lists(&self) -> [(&'static str, &Vec<String>); 5] {
        [
            ("type", &self.types),
            ("category", &self.category),
            ("source", &self.source),
            ("subject", &self.subject),
            ("tags", &self.tags),
        ]
    }
}

#[derive(Args)]
pub struct TailArgs {
    #[command(flatten)]
    filter: FilterArgs,
    /// Start after this seq.
    #[arg(long)]
    after: Option<u64>,
    /// Start with the last N matching events.
    #[arg(long)]
    last: Option<u64>,
    /// Print each event as one line of JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn colour(sev: &str) -> &'static str {
    match sev {
        "debug" => "\x1b[2m",
        "warning" => "\x1b[33m",
        "error" => "\x1b[31m",
        "critical" => "\x1b[1;97;41m",
        _ => "\x1b[36m",
    }
}

pub fn print_event(data: &str, json: bool, tty: bool) {
    let mut out = std::io::stdout().lock();
    if json {
        let _ = writeln!(out, "{data}");
        return;
    }
    let v: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let sev = v["severity"].as_str().unwrap_or("info");
    let (c, r) = if tty {
        (colour(sev), "\x1b[0m")
    } else {
        ("", "")
    };
    let subject = v["subject"]
        .as_str()
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{:>8} {} {c}{:<8}{r} {}{} {}",
        v["seq"],
        v["time"].as_str().unwrap_or(""),
        sev,
        v["type"].as_str().unwrap_or(""),
        subject,
        v["data"]
    );
}

pub async fn run(a: TailArgs) -> anyhow::Result<()> {
    let params = a.filter.query();
    let tty = std::io::stdout().is_terminal();
    let client = reqwest::Client::new();
    let mut last_seq = a.after;
    let mut first = true;
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut q = params.clone();
        if first {
            if let (None, Some(n)) = (last_seq, a.last) {
                q.push(("last", n.to_string()));
            }
        }
        let mut req = client
            .get(format!("{}/v1/stream", a.client.base()))
            .query(&q);
        if let Some(s) = last_seq {
            req = req.header("Last-Event-ID", s.to_string());
        }
        match a.client.auth(req).send().await {
            Ok(res) if res.status().is_success() => {
                first = false;
                backoff = Duration::from_secs(1);
                let mut parser = SseParser::default();
                let mut body = res.bytes_stream();
                while let Some(chunk) = body.next().await {
                    let Ok(chunk) = chunk else { break };
                    for m in parser.feed(&chunk) {
                        if m.event == "crier.reset" {
                            eprintln!("crier: stream reset: {}", m.data);
                            continue;
                        }
                        if let Some(seq) = m.id.as_deref().and_then(|s| s.parse().ok()) {
                            last_seq = Some(seq);
                        }
                        print_event(&m.data, a.json, tty);
                    }
                }
                eprintln!("crier: stream ended; reconnecting");
            }
            Ok(res) if res.status().is_client_error() => {
                let status = res.status();
                let text = res.text().await.unwrap_or_default();
                bail!("the hub refused the stream ({status}): {text}");
            }
            Ok(res) => eprintln!(
                "crier: the hub answered {}; retrying in {backoff:?}",
                res.status()
            ),
            Err(e) => eprintln!(
                "crier: cannot reach {}: {e}; retrying in {backoff:?}",
                a.client.url
            ),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

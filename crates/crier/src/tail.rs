//! `crier tail`: follows `GET /v1/stream` through `crier-client`, which reconnects with
//! backoff and jitter (1 s to 30 s) and resumes after the last seq it handed out, saying so
//! on standard error; events are printed coloured by severity on a terminal (never with
//! `NO_COLOR` set).

use std::io::Write;

use anyhow::bail;
use clap::Args;
use serde_json::Value;

use crate::ClientArgs;
use crier_client::{Item, Options, Start, Status, Subscription};

/// The filter flags shared by `tail`, `replay` and `filters save` (§2).
#[derive(Args, Clone)]
pub struct FilterArgs {
    /// A saved filter of the tenant, by name (`crier filters list`); instead of the flags
    /// below.
    #[arg(long = "filter", value_name = "NAME", conflicts_with_all = ["types", "category", "source", "subject", "severity", "tags"])]
    pub(crate) saved: Option<String>,
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
    /// As the JSON filter of streams and replays: the object of the flags, or the name of a
    /// saved filter as a string.
    pub fn json(&self) -> serde_json::Value {
        if let Some(name) = &self.saved {
            return name.clone().into();
        }
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

/// What `tail` says on standard error while the hub is away and when it is back.
fn say_status(s: &Status) {
    match s {
        Status::Reconnecting {
            error,
            attempt,
            wait,
        } => eprintln!(
            "crier: {error}; reconnecting in {:.1}s (attempt {attempt})",
            wait.as_secs_f64()
        ),
        Status::Resumed { after: Some(seq) } => {
            eprintln!("crier: reconnected; resuming after seq {seq}")
        }
        Status::Resumed { after: None } => eprintln!("crier: reconnected"),
        _ => {}
    }
}

pub async fn run(a: TailArgs) -> anyhow::Result<()> {
    let tty = crate::colour(&std::io::stdout());
    let mut opts = Options::new(a.client.base());
    opts.filter = a.filter.json();
    opts.start = match (a.after, a.last) {
        (Some(s), _) => Start::After(s),
        (None, Some(n)) => Start::Last(n),
        (None, None) => Start::Live,
    };
    if let Some(t) = a.client.token.clone() {
        opts.token = Some(std::sync::Arc::new(move || Some(t.clone())));
    }
    // The client reconnects with backoff and resumes after the last seq by itself.
    let mut sub = Subscription::new(opts).on_status(std::sync::Arc::new(say_status));
    loop {
        match sub.next().await {
            Ok(Item::Event(e)) => print_event(&e.to_string(), a.json, tty),
            Ok(Item::Reset(r)) => eprintln!("crier: stream reset: {r}"),
            Err(e) => bail!("{e}"),
        }
    }
}

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

/// The hub refused a request; `message` is its own words.
#[derive(Debug)]
struct Refused {
    status: reqwest::StatusCode,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the hub answered {}: {}", self.status, self.message)
    }
}

impl std::error::Error for Refused {}

/// Maps the position the hub names in a refused batch ("line N" of the body, 1-based, or
/// "event N" of the batch, 0-based) to the line of standard input it came from, so both
/// kinds of refusal number the same input the same way.
fn input_line<'a>(message: &'a str, lines: &[u64]) -> Option<(u64, &'a str)> {
    let (place, rest) = message.split_once(": ")?;
    let (kind, n) = place.split_once(' ')?;
    let n: usize = n.parse().ok()?;
    let index = match kind {
        "line" => n.checked_sub(1)?,
        "event" => n,
        _ => return None,
    };
    Some((*lines.get(index)?, rest))
}

/// A rate as a whole number with thousands separators: `105,388/s`.
fn rate(per_sec: f64) -> String {
    let digits = format!("{:.0}", per_sec.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out}/s")
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
        let message = crate::hub_message(&v);
        return Err(Refused { status, message }.into());
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
        ProgressStyle::with_template("{spinner} {human_pos} events published ({rate}) {msg}")
            .map(|s| {
                s.with_key(
                    "rate",
                    |st: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = w.write_str(&rate(st.per_sec()));
                    },
                )
            })
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    let started = std::time::Instant::now();
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let mut total = 0u64;
    let mut line_no = 0u64;
    loop {
        let mut body = Vec::new();
        let mut n = 0;
        // The input line of each event in this batch (blank lines are skipped).
        let mut lines_of_batch = Vec::with_capacity(a.batch.min(4096));
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
            lines_of_batch.push(line_no);
            n += 1;
        }
        if n == 0 {
            break;
        }
        if let Err(e) = post(&client, &a.client, body, true).await {
            let stored = format!("nothing of lines {first_line}-{line_no} was stored");
            if let Some(r) = e.downcast_ref::<Refused>() {
                if let Some((line, why)) = input_line(&r.message, &lines_of_batch) {
                    bar.abandon();
                    bail!(
                        "line {line}: {why} (the hub answered {}; {stored})",
                        r.status
                    );
                }
            }
            bar.abandon();
            return Err(e.context(format!("the batch was refused; {stored}")));
        }
        total += n as u64;
        bar.set_position(total);
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    let per_sec = if secs > 0.0 { total as f64 / secs } else { 0.0 };
    eprintln!("published {total} events in {secs:.1}s ({})", rate(per_sec));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_whole_and_grouped() {
        assert_eq!(rate(105_387.839_1), "105,388/s");
        assert_eq!(rate(999.4), "999/s");
        assert_eq!(rate(1_000.0), "1,000/s");
        assert_eq!(rate(0.0), "0/s");
        assert_eq!(rate(1_234_567.0), "1,234,567/s");
    }

    #[test]
    fn both_refusal_forms_name_the_input_line() {
        // Events of the batch came from input lines 3, 4 and 7 (blank lines between).
        let lines = [3, 4, 7];
        assert_eq!(
            input_line("line 2: not valid JSON: x", &lines),
            Some((4, "not valid JSON: x"))
        );
        assert_eq!(
            input_line("event 1: `type` is required", &lines),
            Some((4, "`type` is required"))
        );
        assert_eq!(input_line("event 2: bad", &lines), Some((7, "bad")));
        assert_eq!(input_line("event 3: bad", &lines), None);
        assert_eq!(input_line("line 0: bad", &lines), None);
        assert_eq!(input_line("rate limited: slow down", &lines), None);
    }
}

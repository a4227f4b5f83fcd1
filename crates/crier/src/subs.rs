//! `crier subs`: list, create and delete durable subscriptions, and show their deliveries.

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::{table, ClientArgs};

#[derive(Subcommand)]
pub enum SubsCmd {
    /// List subscriptions.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Create a webhook subscription; prints it with its secret (shown once).
    Create {
        /// Webhook URL.
        #[arg(long)]
        webhook: String,
        /// Name.
        #[arg(long, default_value = "")]
        name: String,
        /// Filter as JSON, e.g. '{"type":["site.*"]}'.
        #[arg(long)]
        filter: Option<String>,
        /// Start after this seq (default: from now).
        #[arg(long)]
        after: Option<u64>,
        /// `whsec_…` secret (default: generated).
        #[arg(long)]
        secret: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a subscription.
    Delete {
        /// Subscription id.
        id: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show a subscription's deliveries, newest first.
    Deliveries {
        /// Subscription id.
        id: String,
        /// Only this status: pending, delivered, failed, dead.
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
}

async fn call(
    c: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let client = reqwest::Client::new();
    let mut req = c.auth(client.request(method, format!("{}{path}", c.base())));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("cannot reach the hub at {}", c.url))?;
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        bail!("the hub answered {status}: {}", crate::hub_message(&v));
    }
    Ok(v)
}

pub async fn run(cmd: SubsCmd) -> anyhow::Result<()> {
    match cmd {
        SubsCmd::List { client } => {
            let v = call(&client, reqwest::Method::GET, "/v1/subscriptions", None).await?;
            table::print_json(
                &["ID", "STATUS", "CURSOR", "NAME", "URL"],
                &[2],
                &v["subscriptions"],
                &["/id", "/status", "/cursor", "/name", "/webhook/url"],
            );
        }
        SubsCmd::Create {
            webhook,
            name,
            filter,
            after,
            secret,
            client,
        } => {
            let filter: Value = match filter {
                Some(f) => serde_json::from_str(&f).context("--filter is not valid JSON")?,
                None => json!({}),
            };
            let mut body = json!({"name": name, "filter": filter, "webhook": {"url": webhook}});
            if let Some(s) = secret {
                body["webhook"]["secret"] = s.into();
            }
            if let Some(a) = after {
                body["after"] = a.into();
            }
            let v = call(
                &client,
                reqwest::Method::POST,
                "/v1/subscriptions",
                Some(body),
            )
            .await?;
            println!("{}", serde_json::to_string_pretty(&v)?);
            eprintln!("keep webhook.secret now: it is not shown again");
        }
        SubsCmd::Delete { id, client } => {
            let c = reqwest::Client::new();
            let res = client
                .auth(c.delete(format!("{}/v1/subscriptions/{id}", client.base())))
                .send()
                .await?;
            let status = res.status();
            if !status.is_success() {
                let v: Value = res.json().await.unwrap_or(Value::Null);
                bail!("the hub answered {status}: {}", crate::hub_message(&v));
            }
            eprintln!("deleted {id}");
        }
        SubsCmd::Deliveries { id, status, client } => {
            let q = status.map(|s| format!("?status={s}")).unwrap_or_default();
            let v = call(
                &client,
                reqwest::Method::GET,
                &format!("/v1/subscriptions/{id}/deliveries{q}"),
                None,
            )
            .await?;
            table::print_json(
                &["SEQ", "STATUS", "ATTEMPTS", "CODE", "NEXT ATTEMPT", "ERROR"],
                &[0, 2, 3],
                &v["deliveries"],
                &[
                    "/seq",
                    "/status",
                    "/attempts",
                    "/last_status_code",
                    "/next_attempt_at",
                    "/last_error",
                ],
            );
        }
    }
    Ok(())
}

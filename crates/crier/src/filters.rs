//! `crier filters`: list, show, save and delete the tenant's saved named filters
//! (`/v1/filters`), which `crier tail --filter NAME`, `crier replay --filter NAME` and the
//! dashboard use.

use anyhow::{bail, Context};
use clap::Subcommand;
use serde_json::{json, Value};

use crate::tail::FilterArgs;
use crate::{table, ClientArgs};

#[derive(Subcommand)]
pub enum FiltersCmd {
    /// List the tenant's saved filters.
    List {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Print one saved filter as JSON.
    Show {
        /// Its name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Save the filter given by the flags under a name.
    Save {
        /// A short name: lowercase letters, digits, `.`, `_`, `-` (like `prod-errors`).
        name: String,
        #[command(flatten)]
        filter: FilterArgs,
        /// What the filter is for.
        #[arg(long)]
        description: Option<String>,
        /// Replace a saved filter of that name instead of refusing.
        #[arg(long)]
        replace: bool,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Delete a saved filter.
    Delete {
        /// Its name.
        name: String,
        #[command(flatten)]
        client: ClientArgs,
    },
}

/// Sends a request; answers the status and body (JSON, or `null`).
async fn send(
    c: &ClientArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let client = reqwest::Client::new();
    let mut req = c.auth(client.request(method, format!("{}{path}", c.base())));
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("cannot reach the hub at {}", c.url))?;
    let status = res.status();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

fn refused(status: reqwest::StatusCode, v: &Value) -> anyhow::Error {
    anyhow::anyhow!("the hub answered {status}: {}", crate::hub_message(v))
}

/// A name as one path segment (names are slugs; anything else is refused by the hub, and
/// must not change the path on the way there).
fn segment(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

pub async fn run(cmd: FiltersCmd) -> anyhow::Result<()> {
    match cmd {
        FiltersCmd::List { client } => {
            let (status, v) = send(&client, reqwest::Method::GET, "/v1/filters", None).await?;
            if !status.is_success() {
                return Err(refused(status, &v));
            }
            let mut t = table::new(&["NAME", "FILTER", "DESCRIPTION", "CREATED BY"], &[]);
            for f in v["filters"].as_array().into_iter().flatten() {
                t.add_row(vec![
                    table::cell(&f["name"]),
                    f["filter"].to_string(),
                    table::cell(&f["description"]),
                    table::cell(&f["created_by"]),
                ]);
            }
            table::print(&t);
        }
        FiltersCmd::Show { name, client } => {
            let path = format!("/v1/filters/{}", segment(&name));
            let (status, v) = send(&client, reqwest::Method::GET, &path, None).await?;
            if !status.is_success() {
                return Err(refused(status, &v));
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        FiltersCmd::Save {
            name,
            filter,
            description,
            replace,
            client,
        } => {
            if filter.saved.is_some() {
                bail!(
                    "`filters save` takes the filter flags (--type, --severity, …), not --filter"
                );
            }
            let body = json!({"name": name, "filter": filter.json(), "description": description});
            let (status, v) =
                send(&client, reqwest::Method::POST, "/v1/filters", Some(&body)).await?;
            let (status, v) = if status == reqwest::StatusCode::CONFLICT
                && replace
                && v["error"]["code"] == "filter_exists"
            {
                let path = format!("/v1/filters/{}", segment(&name));
                send(&client, reqwest::Method::PUT, &path, Some(&body)).await?
            } else {
                (status, v)
            };
            if !status.is_success() {
                return Err(refused(status, &v));
            }
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        FiltersCmd::Delete { name, client } => {
            let path = format!("/v1/filters/{}", segment(&name));
            let (status, v) = send(&client, reqwest::Method::DELETE, &path, None).await?;
            if !status.is_success() {
                return Err(refused(status, &v));
            }
            eprintln!("deleted {name}");
        }
    }
    Ok(())
}

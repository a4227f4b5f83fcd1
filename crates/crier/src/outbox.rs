//! `crier outbox init`: creates the transactional outbox's table and trigger (§14.2) in the
//! application's database, or prints the SQL for the application's own migrations.

use std::path::PathBuf;

use clap::Args;
use crier_server::Config;

/// `crier outbox init [--print]`.
#[derive(Args)]
pub struct InitArgs {
    /// TOML configuration file (its `[outbox]` section).
    #[arg(long)]
    config: Option<PathBuf>,
    /// The application's database (overrides `outbox.url`).
    #[arg(long)]
    url: Option<String>,
    /// The outbox table (overrides `outbox.table`).
    #[arg(long)]
    table: Option<String>,
    /// Print the SQL instead of running it.
    #[arg(long)]
    print: bool,
}

/// The outbox commands.
#[derive(clap::Subcommand)]
pub enum OutboxCmd {
    /// Create the outbox table, the table of rejected rows and the notify trigger.
    Init(InitArgs),
}

pub async fn run(cmd: OutboxCmd) -> anyhow::Result<()> {
    let OutboxCmd::Init(a) = cmd;
    let mut flags = Vec::new();
    if let Some(u) = &a.url {
        flags.push(("outbox.url", u.clone()));
    }
    if let Some(t) = &a.table {
        flags.push(("outbox.table", t.clone()));
    }
    let mut config = Config::load(a.config.as_deref(), |k| std::env::var(k).ok(), &flags)?;
    if a.print && config.outbox.url.is_empty() {
        // Printing needs no database: validate the table name against a placeholder URL.
        config.outbox.url = "postgres://localhost/placeholder".into();
    }
    let settings = config.validate()?;
    let Some(outbox) = settings.outbox else {
        anyhow::bail!("no outbox is configured: set outbox.url (or pass --url postgres://...)");
    };
    let sql = crier_server::outbox::init_sql(&outbox.table);
    if a.print {
        print!("{sql}");
        return Ok(());
    }
    create(&outbox.url, &sql).await?;
    eprintln!(
        "created the outbox table {t}, {t}_rejected and the trigger {t}_notify",
        t = outbox.table
    );
    Ok(())
}

#[cfg(feature = "postgres")]
async fn create(url: &str, sql: &str) -> anyhow::Result<()> {
    use anyhow::Context;
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .context("cannot connect to the outbox database")?;
    let conn = tokio::spawn(conn);
    let result = client.batch_execute(sql).await;
    drop(client);
    let _ = conn.await;
    result.context("cannot create the outbox")?;
    Ok(())
}

#[cfg(not(feature = "postgres"))]
async fn create(_url: &str, _sql: &str) -> anyhow::Result<()> {
    anyhow::bail!("this build of crier has no postgres support (the `postgres` feature is off)")
}

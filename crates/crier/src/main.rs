//! `crier`: the hub and its command-line clients (§10).
//!
//! `serve` runs the hub; `publish` and `tail` talk to a running hub over HTTP. Everything of
//! substance lives in the library crates; this binary parses flags, loads configuration and
//! reports errors.

mod admin;
mod filters;
mod outbox;
mod publish;
mod replay;
mod subs;
mod table;
mod tail;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use crier_server::Config;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "crier", version, about = "A real-time event broadcasting hub")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the hub.
    Serve(ServeArgs),
    /// Publish one event, or NDJSON from standard input with `-`.
    Publish(publish::PublishArgs),
    /// Follow the event stream in the terminal, resuming after disconnects.
    Tail(tail::TailArgs),
    /// Replay history to the terminal.
    Replay(replay::ReplayArgs),
    /// Manage durable webhook subscriptions.
    #[command(subcommand)]
    Subs(subs::SubsCmd),
    /// Manage the tenant's saved named filters (`tail --filter NAME`).
    #[command(subcommand)]
    Filters(filters::FiltersCmd),
    /// Mint a JWT with the configured HS256 secret (development and tests).
    Token(admin::TokenArgs),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(admin::KeysCmd),
    /// Print the GraphQL schema (SDL).
    GraphqlSchema,
    /// Check a configuration, or print every key with its default.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Set up the transactional outbox in an application's database.
    #[command(subcommand)]
    Outbox(outbox::OutboxCmd),
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Load and validate the configuration (file, then `CRIER_*` variables) as `serve` would.
    Check {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<std::path::PathBuf>,
    },
    /// Print every key with its default and a comment, as TOML `serve --config` accepts.
    Defaults,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
    /// Listen address (default 127.0.0.1:7400).
    #[arg(long)]
    listen: Option<String>,
    /// Data directory for the embedded log (default ./crier-data).
    #[arg(long)]
    data_dir: Option<String>,
    /// `sqlite` (default) or `postgres://user@host:5432/db` (a log several nodes share).
    #[arg(long)]
    store: Option<String>,
    /// `local` (default), `nats://host:4222` or `redis://host:6379`.
    #[arg(long)]
    broker: Option<String>,
}

/// Where client commands find the hub.
#[derive(Args, Clone)]
pub struct ClientArgs {
    /// The hub's base URL.
    #[arg(long, env = "CRIER_URL", default_value = "http://127.0.0.1:7400")]
    pub url: String,
    /// Bearer token (JWT or API key).
    #[arg(long, env = "CRIER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl ClientArgs {
    /// Adds the credential to a request.
    pub fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// `url` without a trailing slash.
    pub fn base(&self) -> &str {
        self.url.trim_end_matches('/')
    }
}

/// The hub's own words from an error answer (`{"error": {"message": ...}}`).
pub fn hub_message(v: &serde_json::Value) -> String {
    match (v["error"]["message"].as_str(), v.as_str()) {
        (Some(m), _) => m.to_string(),
        (None, Some(text)) if !text.trim().is_empty() => text.trim().to_string(),
        _ => "no message".to_string(),
    }
}

/// Whether to colour output on `stream`: only on a terminal, and never when `NO_COLOR` is
/// set to anything non-empty (<https://no-color.org>).
pub fn colour(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour(&std::io::stderr()))
        // A closed log pipe must not take the hub down: reporting the failed write would
        // print to that same closed stderr and panic.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut flags = Vec::new();
    for (key, v) in [
        ("listen", args.listen),
        ("data_dir", args.data_dir),
        ("store", args.store),
        ("broker", args.broker),
    ] {
        if let Some(v) = v {
            flags.push((key, v));
        }
    }
    let config = Config::load(args.config.as_deref(), |k| std::env::var(k).ok(), &flags)?;
    let settings = config.validate().map_err(|e| config.locate(e))?;
    init_tracing(settings.log_json);
    for warning in Config::unknown_env(env_names()) {
        tracing::warn!("{warning}");
    }
    if !settings.auth.enabled {
        tracing::warn!(
            listen = %settings.listen,
            "no authentication is configured: every request is admin of tenant `default` (allowed on loopback only)"
        );
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutting down: ending streams, then flushing the log");
        token.cancel();
    });
    crier_server::run(settings, listener, shutdown).await?;
    Ok(())
}

/// The names of the process's environment variables (values are never looked at here).
fn env_names() -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .collect()
}

/// `crier config check` and `crier config defaults`.
fn config_cmd(cmd: ConfigCmd) -> anyhow::Result<()> {
    match cmd {
        ConfigCmd::Defaults => print!("{}", crier_server::config::doc::defaults_toml()),
        ConfigCmd::Check { config: file } => {
            for warning in Config::unknown_env(env_names()) {
                eprintln!("crier: warning: {warning}");
            }
            let config = Config::load(file.as_deref(), |k| std::env::var(k).ok(), &[])?;
            let settings = config.validate().map_err(|e| config.locate(e))?;
            let from = file
                .map(|f| f.display().to_string())
                .unwrap_or_else(|| "defaults and environment".into());
            println!(
                "configuration is valid ({from}); listen {}",
                settings.listen
            );
        }
    }
    Ok(())
}

/// An error and its causes, each said once: a cause whose text its parent already
/// includes is not repeated.
fn report(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("crier: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Serve(a) => serve(a).await,
            Cmd::Publish(a) => publish::run(a).await,
            Cmd::Tail(a) => tail::run(a).await,
            Cmd::Replay(a) => replay::run(a).await,
            Cmd::Subs(c) => subs::run(c).await,
            Cmd::Filters(c) => filters::run(c).await,
            Cmd::Token(a) => admin::token(a),
            Cmd::Keys(c) => admin::keys(c).await,
            Cmd::Config(c) => config_cmd(c),
            Cmd::Outbox(c) => outbox::run(c).await,
            Cmd::GraphqlSchema => {
                print!("{}", crier_server::graphql::sdl());
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crier: {}", report(&e));
            ExitCode::from(2)
        }
    }
}

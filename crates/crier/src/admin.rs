//! `crier token` (mint a development JWT with the configured HS256 secret) and
//! `crier keys create|list|revoke` (API keys in the store under `data_dir`).

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use crier_core::Role;
use crier_server::Config;
use crier_store::SqliteKeys;
use serde::Serialize;

/// Where the configuration comes from (file, then `CRIER_*` environment).
#[derive(Args)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Data directory (overrides the configuration).
    #[arg(long)]
    data_dir: Option<String>,
}

impl ConfigArgs {
    fn load(&self) -> anyhow::Result<Config> {
        let mut flags = Vec::new();
        if let Some(d) = &self.data_dir {
            flags.push(("data_dir", d.clone()));
        }
        Ok(Config::load(
            self.config.as_deref(),
            |k| std::env::var(k).ok(),
            &flags,
        )?)
    }
}

fn role(s: &str) -> anyhow::Result<Role> {
    Role::parse(s)
        .with_context(|| format!("unknown role {s:?}; use subscriber, publisher or admin"))
}

#[derive(Args)]
pub struct TokenArgs {
    /// `sub` claim (becomes the actor of what the token publishes).
    #[arg(long)]
    sub: String,
    /// `tenant` claim.
    #[arg(long, default_value = "default")]
    tenant: String,
    /// `role` claim: subscriber, publisher or admin.
    #[arg(long, default_value = "subscriber")]
    role: String,
    /// Lifetime, e.g. 15m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Type pattern the token may read (repeat; default: all).
    #[arg(long)]
    subscribe: Vec<String>,
    /// Type pattern the token may publish (repeat; default: all).
    #[arg(long)]
    publish: Vec<String>,
    #[command(flatten)]
    cfg: ConfigArgs,
}

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    tenant: &'a str,
    role: &'a str,
    iat: u64,
    exp: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    subscribe: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    publish: Option<&'a [String]>,
}

pub fn token(a: TokenArgs) -> anyhow::Result<()> {
    let config = a.cfg.load()?;
    let secret = config.auth.jwt_secret;
    if secret.is_empty() {
        bail!("auth.jwt_secret is not configured (set it in the config file or CRIER_AUTH_JWT_SECRET)");
    }
    let role = role(&a.role)?;
    crier_core::event::check_tenant(&a.tenant).map_err(|e| anyhow::anyhow!(e.message))?;
    let ttl = humantime::parse_duration(&a.ttl)
        .with_context(|| format!("--ttl {:?} is not a duration like 1h", a.ttl))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let claims = Claims {
        sub: &a.sub,
        tenant: &a.tenant,
        role: role.as_str(),
        iat: now,
        exp: now + ttl.as_secs(),
        subscribe: (!a.subscribe.is_empty()).then_some(a.subscribe.as_slice()),
        publish: (!a.publish.is_empty()).then_some(a.publish.as_slice()),
    };
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?;
    println!("{token}");
    Ok(())
}

#[derive(Subcommand)]
pub enum KeysCmd {
    /// Create a key; its secret is printed once and never stored.
    Create {
        /// Tenant of the key.
        #[arg(long)]
        tenant: String,
        /// subscriber, publisher or admin.
        #[arg(long)]
        role: String,
        /// Name (becomes the actor of what the key publishes).
        #[arg(long)]
        name: String,
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// List keys (never their secrets).
    List {
        #[command(flatten)]
        cfg: ConfigArgs,
    },
    /// Revoke a key by id; it stops working at once.
    Revoke {
        /// The key's id (`key_…`).
        id: String,
        #[command(flatten)]
        cfg: ConfigArgs,
    },
}

/// The key store of the configured hub: the SQLite file under `data_dir`, or the shared
/// PostgreSQL schema of a cluster.
enum Keys {
    Sqlite(SqliteKeys),
    #[cfg(feature = "postgres")]
    Postgres(crier_store::PgKeys),
}

impl Keys {
    async fn create(
        &self,
        tenant: &str,
        role: Role,
        name: &str,
    ) -> anyhow::Result<(crier_core::keys::ApiKey, String)> {
        Ok(match self {
            Keys::Sqlite(k) => k.create(tenant, role, name)?,
            #[cfg(feature = "postgres")]
            Keys::Postgres(k) => k.create(tenant, role, name).await?,
        })
    }

    async fn list(&self) -> anyhow::Result<Vec<crier_core::keys::ApiKey>> {
        Ok(match self {
            Keys::Sqlite(k) => k.list()?,
            #[cfg(feature = "postgres")]
            Keys::Postgres(k) => k.list().await?,
        })
    }

    async fn revoke(&self, id: &str) -> anyhow::Result<bool> {
        Ok(match self {
            Keys::Sqlite(k) => k.revoke(id)?,
            #[cfg(feature = "postgres")]
            Keys::Postgres(k) => k.revoke(id).await?,
        })
    }
}

/// Opens the key store. Only `keys create` (`create` true) may create the data directory
/// and database, so that keys can be made before the hub first starts; reading and revoking
/// need an existing store and never leave a stray directory behind.
async fn open_keys(cfg: &ConfigArgs, create: bool) -> anyhow::Result<Keys> {
    let config = cfg.load()?;
    if config.store.starts_with("postgres://") || config.store.starts_with("postgresql://") {
        #[cfg(feature = "postgres")]
        return Ok(Keys::Postgres(
            crier_store::PgKeys::open(&config.store, Some(&config.store_schema)).await?,
        ));
        #[cfg(not(feature = "postgres"))]
        anyhow::bail!(
            "this build of crier has no postgres support (the `postgres` feature is off)"
        );
    }
    let db = config.data_dir.join("crier.db");
    if create {
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create {}", config.data_dir.display()))?;
    } else if !db.is_file() {
        bail!(
            "no hub data at {} (give the hub's --data-dir or --config)",
            db.display()
        );
    }
    Ok(Keys::Sqlite(SqliteKeys::open(&db)?))
}

fn time(us: i64) -> String {
    crier_core::event::time_from_us(us)
        .map(crier_core::event::format_time)
        .unwrap_or_default()
}

pub async fn keys(cmd: KeysCmd) -> anyhow::Result<()> {
    match cmd {
        KeysCmd::Create {
            tenant,
            role: r,
            name,
            cfg,
        } => {
            let r = role(&r)?;
            crier_core::event::check_tenant(&tenant).map_err(|e| anyhow::anyhow!(e.message))?;
            if name.trim().is_empty() || name.chars().any(char::is_control) {
                bail!("--name must be non-empty text");
            }
            let (key, secret) = open_keys(&cfg, true)
                .await?
                .create(&tenant, r, &name)
                .await?;
            eprintln!(
                "created {} ({} of tenant {}); the secret is shown only now:",
                key.id,
                r.as_str(),
                key.tenant
            );
            println!("{secret}");
        }
        KeysCmd::List { cfg } => {
            let keys = open_keys(&cfg, false).await?.list().await?;
            let mut t =
                crate::table::new(&["ID", "TENANT", "ROLE", "CREATED", "REVOKED", "NAME"], &[]);
            for k in keys {
                t.add_row(vec![
                    k.id,
                    k.tenant,
                    k.role.as_str().to_string(),
                    time(k.created_us),
                    k.revoked_us.map(time).unwrap_or_else(|| "-".into()),
                    k.name,
                ]);
            }
            crate::table::print(&t);
        }
        KeysCmd::Revoke { id, cfg } => {
            if !open_keys(&cfg, false).await?.revoke(&id).await? {
                bail!("no key with id {id:?}");
            }
            eprintln!("revoked {id}");
        }
    }
    Ok(())
}

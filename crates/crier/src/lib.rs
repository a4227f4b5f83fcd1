//! crier as a library (§14.1): embed the hub in a Rust application, publish from its own
//! code paths, subscribe in-process, and mount the whole HTTP API (dashboard included) in
//! the application's router.
//!
//! It exists so that an application can broadcast from inside its own mutations without a
//! second process or a network hop, and without giving up anything `crier serve` offers:
//! in-process publishes take the same validation, limits, log, metrics and fan-out as
//! `POST /v1/events`, and reach SSE, WebSocket and webhook subscribers alike.
//!
//! ```
//! use futures_util::StreamExt;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "multi_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let data_dir = dir.path().display().to_string();
//! // Everything a crier.toml may hold (§10), given as text.
//! let config = crier::HubConfig::from_toml(&format!("data_dir = {data_dir:?}"))?;
//! let hub = crier::Hub::open(config).await?;
//!
//! // Publish: the ack carries the event's id, its seq, and whether the id was known.
//! let ack = hub
//!     .publish("acme", crier::NewEvent::new("site.created").subject("site/1").data(json!({"n": 1})))
//!     .await?;
//! assert!(ack.seq >= 1 && !ack.duplicate);
//!
//! // Subscribe: history after a seq, then live, as a `Stream` of events.
//! let filter = crier::Filter::parse_query("type=site.*")?;
//! let mut events = hub.subscribe("acme", filter, crier::Start::After(0))?;
//! let event = events.next().await.expect("the event just published");
//! assert_eq!((event.seq, event.r#type.as_str()), (ack.seq, "site.created"));
//! assert_eq!(event.data, json!({"n": 1}));
//! assert_eq!(events.resets(), 0);
//!
//! // Mount the HTTP API, SSE, WebSocket, GraphQL and the dashboard under any prefix.
//! let app: crier::axum::Router = crier::axum::Router::new().nest("/events", hub.router());
//! # drop(app);
//!
//! // Stop: subscriptions end, background work stops, the log is flushed
//! // (`hub.close().await?` answers whether that went cleanly).
//! hub.shutdown().await;
//! assert!(events.next().await.is_none());
//! # Ok(())
//! # }
//! ```
//!
//! Backends are cargo features: `postgres` (a log shared by a cluster, and the transactional
//! outbox of §14.2), `nats` and `redis` (brokers between cluster nodes). All three are on by
//! default; `default-features = false` builds the embedded SQLite hub alone.
#![deny(missing_docs)]

mod embed;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crier_core::{Principal, Role};
use crier_server::AppState;

pub use axum;
pub use crier_core::Start;
pub use embed::error::Error;
pub use embed::event::{Ack, Event, NewEvent};
pub use embed::subscription::Subscription;

/// The hub's configuration: every key of `crier.toml` (§10), defaults included.
///
/// ```
/// let config = crier::HubConfig::from_toml(r#"
///     data_dir = "./events"
///     durability = "commit"
///     [limits]
///     max_batch = 100
/// "#)?
/// .set("retention.max_events", "1000000")?;
/// assert_eq!(config.config().limits.max_batch, 100);
///
/// let bad = crier::HubConfig::from_toml("[limits]\nmax_batchh = 1").unwrap_err();
/// assert!(bad.message.contains("max_batchh"));
/// # Ok::<(), crier::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct HubConfig {
    config: crier_server::Config,
}

impl HubConfig {
    /// Parses the text of a configuration file over the defaults.
    pub fn from_toml(text: &str) -> Result<HubConfig, Error> {
        Ok(HubConfig {
            config: crier_server::Config::from_toml(text)?,
        })
    }

    /// Loads like `crier serve --config`: the file (if any) over the defaults, then the
    /// `CRIER_*` environment variables over it.
    pub fn load(file: Option<&Path>) -> Result<HubConfig, Error> {
        Ok(HubConfig {
            config: crier_server::Config::load(file, |k| std::env::var(k).ok(), &[])?,
        })
    }

    /// Sets one key by its dotted name, as text (`"limits.max_batch"`, `"500"`), the way a
    /// command-line flag or environment variable would.
    pub fn set(self, key: &str, value: &str) -> Result<HubConfig, Error> {
        let mut doc = toml::Value::try_from(&self.config)
            .map_err(|e| Error::new(400, "invalid_config", e.to_string()))?;
        let default = toml::Value::try_from(crier_server::Config::default())
            .map_err(|e| Error::new(400, "invalid_config", e.to_string()))?;
        let mut slot_default = &default;
        for part in key.split('.') {
            slot_default = slot_default.get(part).ok_or_else(|| {
                Error::new(
                    400,
                    "invalid_config",
                    format!("configuration key `{key}`: unknown key"),
                )
            })?;
        }
        let value = crier_server::config::load::parse_as(key, value, slot_default)?;
        let mut slot = &mut doc;
        for part in key.split('.') {
            slot = slot
                .get_mut(part)
                .ok_or_else(|| Error::new(400, "invalid_config", format!("no key `{key}`")))?;
        }
        *slot = value;
        let text =
            toml::to_string(&doc).map_err(|e| Error::new(400, "invalid_config", e.to_string()))?;
        HubConfig::from_toml(&text)
    }

    /// The configuration as `crier serve` reads it.
    pub fn config(&self) -> &crier_server::Config {
        &self.config
    }

    /// The configuration, to change in place.
    pub fn config_mut(&mut self) -> &mut crier_server::Config {
        &mut self.config
    }
}

/// An embedded hub. Cheap to clone; every clone is the same hub.
#[derive(Clone)]
pub struct Hub {
    state: AppState,
    closed: Arc<AtomicBool>,
}

impl Hub {
    /// Opens the log and starts the hub's background work (webhooks, retention, cluster
    /// follower, outbox), as `crier serve` does before it listens.
    pub async fn open(config: HubConfig) -> Result<Hub, Error> {
        let settings = config.config.validate()?;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let state = crier_server::start(settings, shutdown).await?;
        Ok(Hub {
            state,
            closed: Arc::default(),
        })
    }

    /// Publishes one event to `tenant`. Answers once the event is durable.
    ///
    /// Refusals are the HTTP API's: an invalid event (`invalid_event`, 400), a too large one
    /// (`event_too_large`, 413), the tenant's publish rate (`rate_limited`, 429).
    pub async fn publish(&self, tenant: &str, event: NewEvent) -> Result<Ack, Error> {
        self.publish_batch(tenant, vec![event])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Error::new(500, "internal", "the log answered no event"))
    }

    /// Publishes a batch, all or nothing, in order. Answers once the events are durable.
    pub async fn publish_batch(
        &self,
        tenant: &str,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Ack>, Error> {
        crier_core::event::check_tenant(tenant)
            .map_err(|e| Error::from(crier_server::ApiError::from(e)))?;
        if self.state.shutdown.is_cancelled() {
            return Err(Error::new(503, "shutting_down", "the hub is shutting down"));
        }
        // The application itself publishes: it may name any actor, within its tenant.
        let principal = Principal {
            tenant: tenant.to_string(),
            role: Role::Admin,
            subject: "embedded".to_string(),
            subscribe: None,
            publish: None,
            expires_at: None,
            key_hash: None,
        };
        let items = events.into_iter().map(NewEvent::into_value).collect();
        let batch = crier_server::service::publish::prepare(&self.state, &principal, items, false)?;
        if let Some(other) = batch.iter().find(|e| e.tenant != tenant) {
            return Err(Error::new(
                403,
                "forbidden",
                format!(
                    "an event names tenant {:?}; publish it to that tenant",
                    other.tenant
                ),
            ));
        }
        crier_server::service::publish::admit(&self.state, tenant, batch.len())?;
        let results = crier_server::service::publish::append(&self.state, batch).await?;
        metrics::counter!("crier_publish_requests_total", "transport" => "embedded").increment(1);
        Ok(results
            .into_iter()
            .map(|r| Ack {
                id: r.id,
                seq: r.seq,
                duplicate: r.duplicate,
            })
            .collect())
    }

    /// Subscribes to `tenant`'s events matching `filter`, from `start`, then live.
    pub fn subscribe(
        &self,
        tenant: &str,
        filter: Filter,
        start: Start,
    ) -> Result<Subscription, Error> {
        crier_core::event::check_tenant(tenant)
            .map_err(|e| Error::from(crier_server::ApiError::from(e)))?;
        Ok(Subscription::open(
            self.state.clone(),
            tenant.to_string(),
            filter.0,
            start,
        ))
    }

    /// The log's head: the seq of the last committed event.
    pub fn head(&self) -> u64 {
        self.state.log.head()
    }

    /// Everything `crier serve` serves (§3–§11 and the dashboard), to nest under a prefix or
    /// merge at the root of the application's router.
    pub fn router<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        crier_server::app_for(self.state.clone())
    }

    /// Stops the hub: streams and subscriptions end, background work stops, and the log is
    /// flushed and closed. Later calls do nothing. A failure to flush is logged; use
    /// [`Hub::close`] to receive it instead.
    pub async fn shutdown(&self) {
        if let Err(e) = self.close().await {
            tracing::error!(error = %e.message, "closing the embedded hub failed");
        }
    }

    /// [`Hub::shutdown`], answering whether the log was flushed and closed cleanly. Later
    /// calls (of either) do nothing and answer `Ok`.
    pub async fn close(&self) -> Result<(), Error> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.state.shutdown.cancel();
        crier_server::close(&self.state).await?;
        Ok(())
    }
}

/// A filter (§2): which events a subscription receives.
///
/// ```
/// let f = crier::Filter::parse_query("type=site.*,user.created&severity=warning&tag=web")?;
/// assert!(crier::Filter::parse_query("colour=blue").is_err());
/// let everything = crier::Filter::default();
/// # let _ = (f, everything);
/// # Ok::<(), crier::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter(crier_core::Filter);

impl Filter {
    /// Parses the query-string form used by `GET /v1/stream` (`type=a.*&subject=site/1`).
    pub fn parse_query(query: &str) -> Result<Filter, Error> {
        let q = crier_server::query::Query::parse(Some(query.trim_start_matches('?')), &[])?;
        Ok(Filter(q.filter()?))
    }

    /// Parses the JSON form used by WebSocket subscriptions and webhooks
    /// (`{"type": ["site.*"]}`).
    pub fn from_json(value: &serde_json::Value) -> Result<Filter, Error> {
        crier_core::Filter::from_json(value)
            .map(Filter)
            .map_err(|e| Error::from(crier_server::ApiError::from(e)))
    }
}

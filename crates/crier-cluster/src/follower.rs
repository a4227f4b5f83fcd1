//! The [`Follower`]: keeps one node's hub in step with a log that other nodes append to.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crier_core::log::CommitSink;
use crier_core::{Committed, EventLog, Filter, Hub, ReadQuery, Scope};
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::broker::{Announcement, Announcements, Broker};

/// Events read from the log per round while catching up.
const PAGE: usize = 1000;

/// Timing of a follower.
#[derive(Debug, Clone)]
pub struct FollowerConfig {
    /// This node's name in announcements.
    pub node_id: String,
    /// Log polling interval while the broker is healthy (a safety net).
    pub poll: Duration,
    /// Log polling interval while the broker is down.
    pub degraded_poll: Duration,
}

impl Default for FollowerConfig {
    fn default() -> Self {
        FollowerConfig {
            node_id: "node".into(),
            poll: Duration::from_secs(1),
            degraded_poll: Duration::from_millis(100),
        }
    }
}

/// A running follower. Dropping it does not stop it; cancel its token.
pub struct Follower {
    local: watch::Sender<u64>,
    broker_up: Arc<AtomicBool>,
}

impl Follower {
    /// Starts following: announcements from `broker` and this node's own commits (through
    /// [`Follower::commit_sink`]) move `hub` forward by reading `log`.
    pub fn spawn(
        config: FollowerConfig,
        hub: Hub,
        log: Arc<dyn EventLog>,
        broker: Arc<dyn Broker>,
        cancel: CancellationToken,
    ) -> Follower {
        let (local, local_rx) = watch::channel(0u64);
        let broker_up = Arc::new(AtomicBool::new(false));
        tokio::spawn(run(
            config,
            hub,
            log,
            broker,
            local_rx,
            broker_up.clone(),
            cancel,
        ));
        Follower { local, broker_up }
    }

    /// The sink to install in this node's log: it only records the new head (never blocks
    /// the writer); the follower announces it and delivers from the log in order.
    pub fn commit_sink(&self) -> CommitSink {
        let tx = self.local.clone();
        Arc::new(move |events: &[Arc<Committed>]| {
            if let Some(last) = events.last() {
                tx.send_modify(|h| *h = (*h).max(last.seq));
            }
        })
    }

    /// Whether the broker subscription is up.
    pub fn broker_up(&self) -> bool {
        self.broker_up.load(Ordering::Relaxed)
    }
}

/// Reads the log after the hub's head and publishes it, until nothing more is there.
async fn catch_up(hub: &Hub, log: &Arc<dyn EventLog>) -> Result<u64, crier_core::LogError> {
    let all = Arc::new(Filter::default());
    let mut n = 0;
    loop {
        let head = hub.head();
        let page = log
            .read(ReadQuery::after(Scope::All, all.clone(), head, PAGE))
            .await?;
        if page.events.is_empty() {
            return Ok(n);
        }
        n += page.events.len() as u64;
        hub.publish(&page.events);
        metrics::counter!("crier_cluster_ingested_total").increment(page.events.len() as u64);
        if page.events.len() < PAGE {
            return Ok(n);
        }
    }
}

async fn run(
    config: FollowerConfig,
    hub: Hub,
    log: Arc<dyn EventLog>,
    broker: Arc<dyn Broker>,
    mut local: watch::Receiver<u64>,
    broker_up: Arc<AtomicBool>,
    cancel: CancellationToken,
) {
    let mut stream: Option<Announcements> = None;
    let mut retry_at = tokio::time::Instant::now();
    let mut backoff = Duration::from_millis(100);
    let mut tick = tokio::time::interval(config.degraded_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_poll = tokio::time::Instant::now();
    loop {
        if stream.is_none() && tokio::time::Instant::now() >= retry_at {
            match broker.subscribe().await {
                Ok(s) => {
                    stream = Some(s);
                    backoff = Duration::from_millis(100);
                    broker_up.store(true, Ordering::Relaxed);
                    metrics::gauge!("crier_broker_up").set(1.0);
                    tracing::info!(broker = broker.name(), "subscribed to head announcements");
                }
                Err(e) => {
                    tracing::warn!(broker = broker.name(), error = %e, "broker unavailable; polling the log");
                    retry_at = tokio::time::Instant::now() + backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        let mut announce = None;
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = local.changed() => {
                if changed.is_err() {
                    return;
                }
                announce = Some(*local.borrow_and_update());
            }
            a = async {
                match stream.as_mut() {
                    Some(s) => s.next().await,
                    None => std::future::pending().await,
                }
            } => {
                match a {
                    Some(Announcement { head, .. }) if head > hub.head() => {}
                    Some(_) => continue,
                    None => {
                        tracing::warn!(broker = broker.name(), "broker connection lost; polling the log");
                        stream = None;
                        broker_up.store(false, Ordering::Relaxed);
                        metrics::gauge!("crier_broker_up").set(0.0);
                        retry_at = tokio::time::Instant::now() + backoff;
                    }
                }
            }
            _ = tick.tick() => {
                let healthy = stream.is_some() && broker.connected();
                broker_up.store(healthy, Ordering::Relaxed);
                metrics::gauge!("crier_broker_up").set(if healthy { 1.0 } else { 0.0 });
                let every = if healthy { config.poll } else { config.degraded_poll };
                if last_poll.elapsed() < every {
                    continue;
                }
                last_poll = tokio::time::Instant::now();
            }
        }
        if let Some(head) = announce {
            let a = Announcement {
                node: config.node_id.clone(),
                head,
            };
            if let Err(e) = broker.announce(a).await {
                tracing::debug!(error = %e, "announcement not sent; other nodes will poll");
            }
        }
        if let Err(e) = catch_up(&hub, &log).await {
            tracing::warn!(error = %e, "reading the log failed; retrying on the next signal");
        }
    }
}

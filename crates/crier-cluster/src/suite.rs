//! The fan-out suite every broker runs: two nodes over one log, subscribers on the node that
//! did not write. Checks delivery through the broker (polling set too slow to help), repair
//! of lost announcements, and delivery through a broker outage.
//!
//! Failures panic with a message naming the broken property, as tests do.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crier_core::log::BoxFuture;
use crier_core::{
    CursorItem, EventInput, EventLog, Filter, Hub, Principal, PublishContext, Scope, Start,
};
use tokio_util::sync::CancellationToken;

use crate::broker::{Announcement, Announcements, Broker, BrokerError};
use crate::follower::{Follower, FollowerConfig};

fn events(from: usize, n: usize) -> Vec<crier_core::NewEvent> {
    let p = Principal::anonymous_admin();
    let ctx = PublishContext {
        principal: &p,
        max_event_bytes: 65536,
        now_us: crier_core::event::now_us(),
    };
    (from..from + n)
        .map(|i| {
            EventInput {
                id: Some(format!("e{i}")),
                kind: Some("fan.out".into()),
                ..EventInput::default()
            }
            .validate(&ctx)
            .expect("valid")
        })
        .collect()
}

/// Two nodes over `log`: A writes (its follower gets the commit sink), B only listens.
struct Nodes {
    hub_b: Hub,
    a: Follower,
    b: Follower,
    cancel: CancellationToken,
}

fn nodes(
    log: Arc<dyn EventLog>,
    broker_a: Arc<dyn Broker>,
    broker_b: Arc<dyn Broker>,
    poll: Duration,
) -> Nodes {
    let cancel = CancellationToken::new();
    let hub_a = Hub::new(log.clone());
    let hub_b = Hub::new(log.clone());
    let cfg = |id: &str| FollowerConfig {
        node_id: id.into(),
        poll,
        degraded_poll: Duration::from_millis(100),
    };
    let a = Follower::spawn(cfg("a"), hub_a, log.clone(), broker_a, cancel.clone());
    let b = Follower::spawn(
        cfg("b"),
        hub_b.clone(),
        log.clone(),
        broker_b,
        cancel.clone(),
    );
    log.set_commit_sink(a.commit_sink());
    Nodes {
        hub_b,
        a,
        b,
        cancel,
    }
}

/// Waits, checking every `every_ms` milliseconds, until `done` holds; fails with `what`
/// after `secs` seconds.
async fn wait_until(secs: u64, every_ms: u64, what: &str, done: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(every_ms)).await;
    }
}

/// Appends ten events for each `k` of `ks` (seqs from `k * 10`), pausing `pause_ms`
/// milliseconds after each batch when it is not zero; a failed append fails with `what`.
async fn append_tens(log: &Arc<dyn EventLog>, ks: Range<usize>, pause_ms: u64, what: &str) {
    for k in ks {
        log.append(events(k * 10, 10)).await.expect(what);
        if pause_ms > 0 {
            tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        }
    }
}

async fn wait_up(f: &Follower) {
    let what = "the follower never subscribed to the broker";
    wait_until(10, 10, what, || f.broker_up()).await;
}

/// A task that expects `hub` to deliver the `n` events after `from` within `within`.
fn spawn_reader(hub: &Hub, from: u64, n: u64, within: Duration) -> tokio::task::JoinHandle<()> {
    let hub = hub.clone();
    tokio::spawn(async move { expect_seqs(&hub, from, n, within).await })
}

async fn expect_seqs(hub: &Hub, from: u64, n: u64, within: Duration) {
    let (mut cursor, _) = hub
        .open(
            Scope::All,
            Arc::new(Filter::default()),
            Start::After(from),
            1024,
        )
        .await
        .expect("cursor");
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while (got.len() as u64) < n {
        match tokio::time::timeout_at(deadline, cursor.next()).await {
            Ok(Ok(CursorItem::Event(e))) => got.push(e.seq),
            Ok(Ok(CursorItem::Reset(r))) => panic!("unexpected reset {r:?}"),
            Ok(Err(e)) => panic!("log error {e}"),
            Err(_) => panic!(
                "only {} of {n} events reached the other node in {within:?}",
                got.len()
            ),
        }
    }
    assert_eq!(
        got,
        (from + 1..=from + n).collect::<Vec<_>>(),
        "the other node delivers every event once, in order"
    );
}

/// Runs the suite. `fresh_log` makes a new, empty log; `broker` connects a broker (called
/// once per node); `outage` makes the broker unreachable (`true`) or reachable again.
pub async fn run(
    fresh_log: impl Fn() -> BoxFuture<'static, Arc<dyn EventLog>>,
    broker: impl Fn() -> BoxFuture<'static, Arc<dyn Broker>>,
    outage: impl Fn(bool) -> BoxFuture<'static, ()>,
) {
    // A fresh log and two nodes on working brokers, polling the log once a minute.
    let (fresh_log, broker) = (&fresh_log, &broker);
    let cluster = move || async move {
        let log = fresh_log().await;
        let n = nodes(
            log.clone(),
            broker().await,
            broker().await,
            Duration::from_secs(60),
        );
        (log, n)
    };

    // 1. Live delivery through the broker: polling is set to a minute, so only the broker
    //    can bring the events to B in time.
    let (log, n) = cluster().await;
    wait_up(&n.a).await;
    wait_up(&n.b).await;
    let reader = spawn_reader(&n.hub_b, 0, 300, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(50)).await;
    append_tens(&log, 0..30, 0, "append").await;
    reader.await.expect("reader");
    n.cancel.cancel();

    // 2. Lost announcements: B's broker drops every one but the last; B still delivers
    //    everything, in order, by reading the gap from the log.
    let log = fresh_log().await;
    let lossy: Arc<dyn Broker> = Arc::new(Lossy {
        inner: broker().await,
        deliver_only: 200,
    });
    let n = nodes(log.clone(), broker().await, lossy, Duration::from_secs(60));
    wait_up(&n.a).await;
    wait_up(&n.b).await;
    let reader = spawn_reader(&n.hub_b, 0, 200, Duration::from_secs(10));
    append_tens(&log, 0..20, 2, "append").await;
    reader.await.expect("reader");
    n.cancel.cancel();

    // 3. Broker outage: B keeps delivering by polling; when the broker returns it goes live
    //    again.
    let (log, n) = cluster().await;
    wait_up(&n.b).await;
    outage(true).await;
    let what = "the follower did not notice the outage";
    wait_until(10, 20, what, || !n.b.broker_up()).await;
    let reader = spawn_reader(&n.hub_b, 0, 100, Duration::from_secs(15));
    append_tens(&log, 0..10, 20, "append during the outage").await;
    reader.await.expect("delivery through the outage");
    outage(false).await;
    let what = "the followers did not resubscribe after the outage";
    wait_until(20, 50, what, || n.a.broker_up() && n.b.broker_up()).await;
    let reader = spawn_reader(&n.hub_b, 100, 50, Duration::from_secs(10));
    append_tens(&log, 10..15, 0, "append after the outage").await;
    reader.await.expect("delivery after the outage");
    n.cancel.cancel();
}

/// Drops every announcement except the one for head `deliver_only`.
struct Lossy {
    inner: Arc<dyn Broker>,
    deliver_only: u64,
}

impl Broker for Lossy {
    fn name(&self) -> &'static str {
        "lossy"
    }

    fn announce(&self, a: Announcement) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.inner.announce(a)
    }

    fn connected(&self) -> bool {
        self.inner.connected()
    }

    fn subscribe(&self) -> BoxFuture<'_, Result<Announcements, BrokerError>> {
        let only = self.deliver_only;
        Box::pin(async move {
            let s = self.inner.subscribe().await?;
            let s = futures_util::StreamExt::filter(s, move |a| std::future::ready(a.head == only));
            Ok(Box::pin(s) as Announcements)
        })
    }
}

/// A broker wrapper that can be switched off, for the in-process outage test.
pub struct Switchable {
    inner: Arc<dyn Broker>,
    down: Arc<AtomicBool>,
    epoch: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Switchable {
    /// Wraps `inner`; `down` switches it off (streams end, announcements fail).
    pub fn new(
        inner: Arc<dyn Broker>,
        down: Arc<AtomicBool>,
        epoch: Arc<tokio::sync::watch::Sender<u64>>,
    ) -> Switchable {
        Switchable { inner, down, epoch }
    }
}

impl Broker for Switchable {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn connected(&self) -> bool {
        !self.down.load(Ordering::Relaxed) && self.inner.connected()
    }

    fn announce(&self, a: Announcement) -> BoxFuture<'_, Result<(), BrokerError>> {
        if self.down.load(Ordering::Relaxed) {
            return Box::pin(async { Err(BrokerError::Unavailable("switched off".into())) });
        }
        self.inner.announce(a)
    }

    fn subscribe(&self) -> BoxFuture<'_, Result<Announcements, BrokerError>> {
        Box::pin(async move {
            if self.down.load(Ordering::Relaxed) {
                return Err(BrokerError::Unavailable("switched off".into()));
            }
            let s = self.inner.subscribe().await?;
            let mut epoch = self.epoch.subscribe();
            // The stream ends when the broker is switched off.
            let s = futures_util::StreamExt::take_until(s, async move {
                let _ = epoch.changed().await;
            });
            Ok(Box::pin(s) as Announcements)
        })
    }
}

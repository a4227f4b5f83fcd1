//! The fan-out suite on every broker: in-process, and the real NATS and Redis of this
//! machine reached through a loopback proxy the test can cut (an outage) and restore.
//! NATS and Redis tests skip with a notice when the service is unreachable, except under
//! `CI=true`, where that is a failure.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crier_cluster::nats::NatsBroker;
use crier_cluster::redis::RedisBroker;
use crier_cluster::suite::{self, Switchable};
use crier_cluster::{Broker, LocalBroker};
use crier_core::log::BoxFuture;
use crier_core::EventLog;
use crier_store::{Durability, SqliteLog};
use crier_testkit::proxy::Proxy;
use crier_testkit::services::reachable;

fn fresh_logs(dir: &std::path::Path) -> impl Fn() -> BoxFuture<'static, Arc<dyn EventLog>> {
    let dir = dir.to_path_buf();
    let n = Arc::new(std::sync::atomic::AtomicU64::new(0));
    move || {
        let path = dir.join(format!(
            "log{}.db",
            n.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        Box::pin(async move {
            let log: Arc<dyn EventLog> =
                Arc::new(SqliteLog::open(&path, Durability::Commit).expect("open log"));
            log
        })
    }
}

fn unique(prefix: &str) -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos();
    format!("{prefix}.{}.{}", std::process::id(), t)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_broker_fans_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let local = LocalBroker::default();
    let down = Arc::new(AtomicBool::new(false));
    let epoch = Arc::new(tokio::sync::watch::channel(0u64).0);
    let (d, e) = (down.clone(), epoch.clone());
    suite::run(
        fresh_logs(dir.path()),
        move || {
            let b: Arc<dyn Broker> = Arc::new(Switchable::new(
                Arc::new(local.clone()),
                d.clone(),
                e.clone(),
            ));
            Box::pin(async move { b })
        },
        move |off| {
            down.store(off, std::sync::atomic::Ordering::Relaxed);
            epoch.send_modify(|v| *v += 1);
            Box::pin(async {})
        },
    )
    .await;
}

/// Runs the suite over a broker reached through a proxy to 127.0.0.1:`port`, which the
/// suite cuts and restores; `connect` makes a broker from the proxy's URL (`scheme://...`).
async fn through_proxy(
    port: u16,
    name: &str,
    scheme: &str,
    connect: fn(String, String) -> BoxFuture<'static, Arc<dyn Broker>>,
) {
    if !reachable(port, name, "its fan-out suite").await {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Arc::new(Proxy::start(port).await);
    let topic = unique("crier.test");
    let url = format!("{scheme}://127.0.0.1:{}", proxy.port);
    suite::run(
        fresh_logs(dir.path()),
        move || connect(url.clone(), topic.clone()),
        move |off| {
            let p = proxy.clone();
            Box::pin(async move {
                if off {
                    p.cut()
                } else {
                    p.restore().await
                }
            })
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_broker_fans_out() {
    through_proxy(4222, "NATS", "nats", |url, subject| {
        Box::pin(async move {
            let b: Arc<dyn Broker> =
                Arc::new(NatsBroker::connect(&url, &subject).await.expect("nats"));
            b
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_broker_fans_out() {
    through_proxy(6379, "Redis", "redis", |url, channel| {
        Box::pin(async move {
            let b: Arc<dyn Broker> = Arc::new(RedisBroker::new(&url, &channel).expect("redis"));
            b
        })
    })
    .await;
}

//! The fan-out suite on every broker: in-process, and the real NATS and Redis of this
//! machine reached through a loopback proxy the test can cut (an outage) and restore.
//! NATS and Redis tests skip with a notice when the service is unreachable, except under
//! `CI=true`, where that is a failure.

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crier_cluster::nats::NatsBroker;
use crier_cluster::redis::RedisBroker;
use crier_cluster::suite::{self, Switchable};
use crier_cluster::{Broker, LocalBroker};
use crier_core::log::BoxFuture;
use crier_core::EventLog;
use crier_store::{Durability, SqliteLog};
use tokio::net::{TcpListener, TcpStream};

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

/// A loopback TCP proxy to a service; `cut` drops every connection and stops listening,
/// `restore` listens again on the same port.
struct Proxy {
    port: u16,
    target: u16,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let port = listener.local_addr().expect("addr").port();
        let p = Proxy {
            port,
            target,
            tasks: Arc::default(),
        };
        p.serve(listener);
        p
    }

    fn serve(&self, listener: TcpListener) {
        let (target, tasks) = (self.target, self.tasks.clone());
        let t2 = tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                t2.lock().expect("lock").push(conn.abort_handle());
            }
        });
        tasks.lock().expect("lock").push(accept.abort_handle());
    }

    fn cut(&self) {
        for t in self.tasks.lock().expect("lock").drain(..) {
            t.abort();
        }
    }

    async fn restore(&self) {
        let mut tries = 0;
        loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => return self.serve(l),
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot listen again on {}: {e}", self.port),
            }
        }
    }
}

async fn reachable(port: u16, name: &str) -> bool {
    let ok = tokio::time::timeout(
        Duration::from_secs(2),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{name} on 127.0.0.1:{port} is unreachable and CI=true");
        }
        eprintln!("NOTICE: {name} on 127.0.0.1:{port} is unreachable; skipping its fan-out suite");
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_broker_fans_out() {
    if !reachable(4222, "NATS").await {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Arc::new(Proxy::start(4222).await);
    let subject = unique("crier.test");
    let url = format!("nats://127.0.0.1:{}", proxy.port);
    let p = proxy.clone();
    suite::run(
        fresh_logs(dir.path()),
        move || {
            let (url, subject) = (url.clone(), subject.clone());
            Box::pin(async move {
                let b: Arc<dyn Broker> =
                    Arc::new(NatsBroker::connect(&url, &subject).await.expect("nats"));
                b
            })
        },
        move |off| {
            let p = p.clone();
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
async fn redis_broker_fans_out() {
    if !reachable(6379, "Redis").await {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let proxy = Arc::new(Proxy::start(6379).await);
    let channel = unique("crier.test");
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let p = proxy.clone();
    suite::run(
        fresh_logs(dir.path()),
        move || {
            let (url, channel) = (url.clone(), channel.clone());
            Box::pin(async move {
                let b: Arc<dyn Broker> = Arc::new(RedisBroker::new(&url, &channel).expect("redis"));
                b
            })
        },
        move |off| {
            let p = p.clone();
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

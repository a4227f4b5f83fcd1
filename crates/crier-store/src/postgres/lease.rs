//! A cluster-wide lease on PostgreSQL: work that must run on one node at a time (webhook
//! dispatch, retention) runs while this node holds the lease.
//!
//! The lease is a session-level advisory lock held on a dedicated connection. PostgreSQL
//! releases it when that connection ends — a clean stop, a crash or `kill -9` of the node, or
//! a network partition detected by the server — and another node's next attempt takes it.
//! A holder also checks its connection on every renewal and reports the lease lost as soon as
//! the connection fails, so two nodes never both believe they hold it for longer than one
//! renewal interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::NoTls;
use tokio_util::sync::CancellationToken;

/// A lease contender. Cheap to clone; the background task stops with `cancel`.
#[derive(Clone)]
pub struct Lease {
    held: Arc<AtomicBool>,
    changed: Arc<tokio::sync::Notify>,
}

impl Lease {
    /// Starts contending for lease `key` on the database at `url`, trying every `interval`.
    pub fn contend(url: String, key: i64, interval: Duration, cancel: CancellationToken) -> Lease {
        let lease = Lease {
            held: Arc::default(),
            changed: Arc::default(),
        };
        let l = lease.clone();
        tokio::spawn(async move {
            while !cancel.is_cancelled() {
                let held = l.try_hold(&url, key, interval, &cancel).await;
                if let Err(e) = held {
                    tracing::debug!(error = %e, "lease connection failed; retrying");
                }
                l.set(false);
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(interval) => {}
                }
            }
            l.set(false);
        });
        lease
    }

    fn set(&self, held: bool) {
        if self.held.swap(held, Ordering::AcqRel) != held {
            metrics::gauge!("crier_lease_held").set(if held { 1.0 } else { 0.0 });
            self.changed.notify_waiters();
        }
    }

    /// Connects, then tries to take the lock every `interval` and keeps checking it while held.
    async fn try_hold(
        &self,
        url: &str,
        key: i64,
        interval: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(url, NoTls).await?;
        let conn_task = tokio::spawn(conn);
        loop {
            let got: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&key])
                .await?
                .get(0);
            if got {
                self.set(true);
                // Held: renew by proving the session is alive.
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => {
                            let _ = client.query_one("SELECT pg_advisory_unlock($1)", &[&key]).await;
                            conn_task.abort();
                            return Ok(());
                        }
                        _ = tokio::time::sleep(interval) => {}
                    }
                    if let Err(e) = client.simple_query("SELECT 1").await {
                        conn_task.abort();
                        return Err(e);
                    }
                }
            }
            tokio::select! {
                _ = cancel.cancelled() => {
                    conn_task.abort();
                    return Ok(());
                }
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Whether this node holds the lease now.
    pub fn held(&self) -> bool {
        self.held.load(Ordering::Acquire)
    }

    /// Waits until the lease is taken or lost.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

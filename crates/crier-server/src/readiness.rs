//! Readiness that tells the truth (§12.8): besides "the store answers", `/readyz` says whether
//! the store can write. A background task probes writability every [`PROBE_INTERVAL`] (a
//! small write and fsync in the data directory for SQLite, a write round-trip for
//! PostgreSQL) and `/readyz` answers 503 with the reason while the last probe failed; the
//! next probe that succeeds makes the node ready again by itself.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use crate::state::AppState;

/// How often writability is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// A probe that has not finished by then counts as failed (a hung disk is not ready).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a writability probe writes to.
#[derive(Clone)]
pub enum WriteProbe {
    /// The data directory of the SQLite store.
    Dir(PathBuf),
    /// The PostgreSQL database of the shared log.
    #[cfg(feature = "postgres")]
    Postgres(std::sync::Arc<crier_store::PgSubs>),
}

/// The outcome of the last writability probe.
#[derive(Default)]
pub struct Readiness {
    failure: Mutex<Option<String>>,
}

impl Readiness {
    /// Why the store cannot write, if the last probe failed.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Records a probe's outcome, logging the transitions (not every probe).
    fn record(&self, outcome: Result<(), String>) {
        let mut failure = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        match (&*failure, outcome) {
            (None, Err(e)) => {
                tracing::warn!(error = %e, "the store cannot write; /readyz answers 503 until it can");
                metrics::counter!("crier_store_probe_failures_total").increment(1);
                *failure = Some(e);
            }
            (Some(_), Err(e)) => {
                metrics::counter!("crier_store_probe_failures_total").increment(1);
                *failure = Some(e);
            }
            (Some(_), Ok(())) => {
                tracing::info!("the store can write again; ready");
                *failure = None;
            }
            (None, Ok(())) => {}
        }
    }
}

/// Runs one probe, bounded by [`PROBE_TIMEOUT`].
pub async fn probe(p: &WriteProbe) -> Result<(), String> {
    let run = async {
        match p {
            WriteProbe::Dir(dir) => {
                let dir = dir.clone();
                match tokio::task::spawn_blocking(move || crate::datadir::probe(&dir)).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(format!("the data directory is not writable: {e}")),
                    Err(e) => Err(format!("the write probe failed: {e}")),
                }
            }
            #[cfg(feature = "postgres")]
            WriteProbe::Postgres(db) => db
                .probe_write()
                .await
                .map_err(|e| format!("the database does not take writes: {e}")),
        }
    };
    match tokio::time::timeout(PROBE_TIMEOUT, run).await {
        Ok(r) => r,
        Err(_) => Err(format!(
            "a write probe did not finish within {} s",
            PROBE_TIMEOUT.as_secs()
        )),
    }
}

/// Probes once now (so the first `/readyz` is already truthful), then every
/// [`PROBE_INTERVAL`] until shutdown.
pub async fn start(state: &AppState, p: WriteProbe) {
    state.readiness.record(probe(&p).await);
    let s = state.clone();
    state.tasks.spawn(async move {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = s.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            s.readiness.record(probe(&p).await);
        }
    });
}

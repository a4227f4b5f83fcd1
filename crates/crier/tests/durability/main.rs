//! The real binary under `kill -9`, SIGTERM and slow readers: acknowledged events survive,
//! seqs stay gapless, readers resume without loss, webhooks deliver everything at least
//! once, and slow readers cost bounded memory. `crash` kills the hub during publishes and
//! entity changes, `streams` stops it under readers and stalls readers, `webhooks` kills it
//! during deliveries.

mod crash;
mod streams;
mod webhooks;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinHandle;

use crier_testkit::process::{free_port, serve_cmd, Proc};
use crier_testkit::Sse;
use serde_json::Value;

/// `crier serve` over a data directory that outlives it.
struct Hub {
    proc: Proc,
    dir: PathBuf,
}

impl Hub {
    /// Starts the binary over `dir` with extra environment, on a free port (five tries).
    async fn start(dir: &Path, env: &[(&str, &str)]) -> Hub {
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = serve_cmd(env!("CARGO_BIN_EXE_crier"), dir, port);
            for (k, v) in env {
                cmd.env(k, v);
            }
            let mut proc = Proc::spawn(cmd, port);
            if proc.healthy_within(Duration::from_secs(15)).await {
                return Hub {
                    proc,
                    dir: dir.to_path_buf(),
                };
            }
        }
        panic!("the hub did not start");
    }

    /// The hub of iteration `iteration` of a crash test over `dir`: `fsync` durability on
    /// even iterations, `commit` on odd ones.
    async fn start_alternating(dir: &Path, iteration: usize) -> Hub {
        let durability = if iteration.is_multiple_of(2) {
            "fsync"
        } else {
            "commit"
        };
        Hub::start(dir, &[("CRIER_DURABILITY", durability)]).await
    }

    fn url(&self, path: &str) -> String {
        self.proc.url(path)
    }

    fn kill9(mut self) -> PathBuf {
        self.proc.kill9();
        self.dir.clone()
    }

    /// Lets `tasks` work against the hub for a random number of milliseconds in `ms`, kills
    /// it with -9 mid-flight and waits for the tasks to notice: the directory.
    async fn kill9_amid(self, ms: Range<u64>, tasks: Vec<JoinHandle<()>>) -> PathBuf {
        let delay = rand::rng().random_range(ms);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let dir = self.kill9();
        for t in tasks {
            let _ = t.await;
        }
        dir
    }

    /// SIGTERM: the directory and whether the hub exited 0.
    fn sigterm(mut self) -> (PathBuf, bool) {
        let status = self.proc.sigterm(Duration::from_secs(10));
        (self.dir.clone(), status.success())
    }

    /// Every stored event as (seq, id), paging through history.
    async fn history(&self) -> Vec<(u64, String)> {
        self.proc
            .events()
            .await
            .iter()
            .map(|e| {
                (
                    e["seq"].as_u64().expect("seq"),
                    e["id"].as_str().expect("id").to_string(),
                )
            })
            .collect()
    }

    /// Publishes a batch (or one event) and returns the answer.
    async fn publish(&self, batch: &Value) -> (u16, Value) {
        self.proc.post("/v1/events", batch).await
    }
}

/// Reads an SSE stream and sends each event's seq until `want` of them (or the end).
async fn read_sse(
    url: String,
    last_event_id: Option<u64>,
    want: usize,
    tx: tokio::sync::mpsc::UnboundedSender<u64>,
) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let mut sse = Sse::from_response(req.send().await.expect("stream"));
    let mut n = 0;
    while let Some(m) = sse.next_raw().await {
        if let Some(id) = m.id {
            let _ = tx.send(id);
            n += 1;
            if n == want {
                return;
            }
        }
    }
}

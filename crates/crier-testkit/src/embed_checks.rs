//! Small checks the binary's own tests (`crates/crier/tests`) share with the rest: reading
//! publish answers and history pages, scraping `/metrics`, polling until a probe succeeds,
//! running a command that must succeed, waiting for the next item of a stream with a
//! deadline, and a webhook receiver that takes its time.

use std::future::Future;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use serde_json::Value;

/// The seqs of the events of a publish answer (`{"events": [{"seq": …}, …]}`), in order.
pub fn seqs(answer: &Value) -> Vec<u64> {
    answer["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["seq"].as_u64().expect("seq"))
        .collect()
}

/// The `type` of each event of a history page, in order.
pub fn types(page: &Value) -> Vec<&str> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect()
}

/// The text of `GET url` (a hub's `/metrics`), which must answer.
pub async fn metrics_text(url: &str) -> String {
    reqwest::get(url)
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text")
}

/// Whether string field `key` of `v` contains `text` (false when it is not a string).
pub fn says(v: &Value, key: &str, text: &str) -> bool {
    v[key].as_str().is_some_and(|s| s.contains(text))
}

/// Calls `probe` every `every` until it gives `Ok`, and gives that; fails with its last `Err`
/// message once `within` has passed.
pub async fn poll<T, F, Fut>(within: Duration, every: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(why) => assert!(Instant::now() < deadline, "{why}"),
        }
        tokio::time::sleep(every).await;
    }
}

/// Runs `cmd` to the end and asserts that it succeeded, showing `what` and its stderr if
/// not; its stdout.
pub fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("run {what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Waits up to `within` for the next item of a stream (`next` gives `None` once it ended);
/// fails naming `what` when it is late or the stream ended.
pub async fn next_within<T>(
    what: &str,
    within: Duration,
    next: impl Future<Output = Option<T>>,
) -> T {
    tokio::time::timeout(within, next)
        .await
        .unwrap_or_else(|_| panic!("{what}: nothing within {within:?}"))
        .unwrap_or_else(|| panic!("{what}: the stream ended"))
}

/// The `webhook-id` header of a delivery ("" when it has none).
pub fn webhook_id(headers: &HeaderMap) -> String {
    headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// A receiver at `http://<addr>/hook` that waits `pause()` before it records a delivery's
/// `webhook-id` (in arrival order) and answers `status`.
pub async fn paced_webhook_ids(
    status: StatusCode,
    pause: fn() -> Duration,
) -> (Arc<Mutex<Vec<String>>>, String) {
    crate::hooks::recording(move |_| async move {
        tokio::time::sleep(pause()).await;
        status
    })
    .await
}

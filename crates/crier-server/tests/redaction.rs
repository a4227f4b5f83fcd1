//! Tokens in query strings never reach the logs. In a test binary of its own: it installs a
//! thread's log subscriber, and tracing's per-callsite interest cache can race with other
//! tests of the same process hitting the same log statements first.

#[allow(dead_code)]
mod logs;

use std::time::Duration;

use crier_testkit::auth::claims;
use crier_testkit::Hub;
use serde_json::Value;

const SECRET: &str = "test-secret-of-at-least-32-characters!!";

fn hs(c: &Value) -> String {
    crier_testkit::auth::hs256(SECRET, c)
}

async fn hs_hub() -> Hub {
    Hub::start_with(|s| {
        crier_testkit::auth::with_hs256(s, SECRET);
    })
    .await
}

#[tokio::test]
async fn tokens_in_query_strings_never_reach_the_logs() {
    let (buf, subscriber) = logs::capture("debug");
    let _guard = tracing::subscriber::set_default(subscriber);
    let hub = hs_hub().await;
    let good = hs(&claims("logme", "acme", "admin"));
    let bad = "secret-garbage-token-value";
    for t in [good.as_str(), bad] {
        hub.http
            .get(hub.url(&format!("/v1/events?type=a.*&token={t}")))
            .send()
            .await
            .unwrap();
        hub.http
            .get(hub.url(&format!("/v1/ws?token={t}")))
            .send()
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = buf.text();
    assert!(
        logs.contains("/v1/events") && logs.contains("token=REDACTED"),
        "requests are logged: {logs}"
    );
    assert!(!logs.contains(bad), "raw token in logs");
    assert!(!logs.contains(&good), "JWT in logs");
    let signature = good.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature), "JWT signature in logs");
}

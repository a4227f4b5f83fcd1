//! Observability against a real hub: request ids echoed and carried by log lines, the access
//! log at info, webhook failures and state changes logged. In a test binary of its own, with
//! one test: it installs a thread's log subscriber, and tracing's per-callsite interest cache
//! can race with other tests of the same process.

mod logs;

use std::time::Duration;

use crier_testkit::checks::{answered, request};
use crier_testkit::Hub;
use serde_json::json;

/// A webhook receiver on loopback that answers every delivery with 500.
async fn failing_receiver() -> std::net::SocketAddr {
    let app =
        axum::Router::new().fallback(|| async { axum::http::StatusCode::INTERNAL_SERVER_ERROR });
    crier_testkit::hooks::serve(app).await
}

#[tokio::test]
async fn request_ids_reach_the_answer_and_every_log_line() {
    let (buf, subscriber) = logs::capture("info");
    let _guard = tracing::subscriber::set_default(subscriber);
    let hub = Hub::start_with(|s| {
        s.webhooks.allow_private = true;
        s.webhooks.backoff = vec![Duration::from_millis(50)];
    })
    .await;

    // The client's own id is echoed and names the access log line, at info level.
    let req = request(&hub, "GET", "/v1/events?type=a.*&token=hide-me", "", None);
    let res = answered(req.header("x-request-id", "trace-7f3a.1"), 200).await;
    assert_eq!(res.headers()["x-request-id"], "trace-7f3a.1");
    let line = buf.line_with(&["trace-7f3a.1", "request"]).await;
    assert!(line.contains(" INFO "), "{line}");
    assert!(line.contains("status=200"), "{line}");
    assert!(line.contains("token=REDACTED"), "{line}");
    assert!(
        !buf.text().contains("hide-me"),
        "the token stays out of the logs"
    );
    // Durations read as milliseconds with a few decimals, not 17 digits.
    let ms = line
        .split("ms=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert!(ms.len() <= 8 && ms.parse::<f64>().is_ok(), "{line}");

    // Without an id, or with one that would garble the logs, a new one is made.
    for sent in [None, Some("two words"), Some(&*"x".repeat(200))] {
        let mut req = hub.http.get(hub.url("/v1/nothing-here"));
        if let Some(id) = sent {
            req = req.header("x-request-id", id);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 404);
        let id = res.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        assert_ne!(Some(id.as_str()), sent);
        buf.line_with(&[&id, "status=404"]).await;
    }

    // A POST's access line carries its id as well.
    let res = hub
        .http
        .post(hub.url("/v1/subscriptions"))
        .header("x-request-id", "sub-create-1")
        .json(&json!({"webhook": {"url": format!("http://{}/hook", failing_receiver().await)}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    buf.line_with(&["sub-create-1", "status=201"]).await;

    // A failing webhook is logged at info while retried and at warn when it pauses.
    hub.publish(json!({"type": "a.b"})).await;
    let retry = buf.line_with(&["webhook attempt failed; retrying"]).await;
    assert!(retry.contains(" INFO "), "{retry}");
    assert!(
        retry.contains("500"),
        "the receiver's answer is named: {retry}"
    );
    let dead = buf.line_with(&["subscription paused"]).await;
    assert!(dead.contains(" WARN "), "{dead}");
    hub.stop().await;
}

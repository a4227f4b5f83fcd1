//! §12.10 over real sockets: a query parameter whose percent-decoded name is `token` is the
//! credential, and no log line at any level shows it. In a test binary of its own: it
//! installs a log subscriber for the whole process.

#[allow(dead_code)]
mod harden;
#[allow(dead_code)]
mod logs;

use std::time::Duration;

use crier_testkit::checks::get_status;
use futures_util::SinkExt;
use harden::{gql_recv, gql_ws, hub_with, token};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn percent_encoded_token_names_are_redacted_at_every_level() {
    let (buf, subscriber) = logs::capture("trace");
    tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
    let hub = hub_with(|s| s.access_log = false).await;
    let jwt = token("logme", "admin", None);
    let garbage = "secret-garbage-token-value";
    for name in ["tok%65n", "%74%6F%6B%65%6E", "TOKEN", "token", "tok%65n%00"] {
        for t in [jwt.as_str(), garbage] {
            for path in [
                "/v1/events",
                "/v1/stats",
                "/v1/ws",
                "/v1/stream",
                "/graphql",
            ] {
                let _ = hub
                    .http
                    .get(hub.url(&format!("{path}?type=a.*&{name}={t}")))
                    .timeout(Duration::from_millis(300))
                    .send()
                    .await;
            }
        }
    }
    // The percent-encoded name authenticates, as it decodes to `token`.
    get_status(&hub, &format!("/v1/events?tok%65n={jwt}"), "", 200).await;
    // Credentials inside WebSocket messages: `/v1/ws` auth ops and GraphQL connection_init.
    let (mut w, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?tok%65n={jwt}", hub.addr))
            .await
            .expect("ws");
    w.send(Message::text(
        json!({"op": "auth", "token": jwt}).to_string(),
    ))
    .await
    .expect("send");
    w.send(Message::text(
        json!({"op": "auth", "token": garbage}).to_string(),
    ))
    .await
    .expect("send");
    w.send(Message::text(format!(
        "{{\"op\":\"auth\",\"token\":\"{garbage}\",\"token\":1}}"
    )))
    .await
    .expect("send");
    let mut g = gql_ws(&hub, garbage).await;
    let _ = gql_recv(&mut g).await;
    let mut g = gql_ws(&hub, &jwt).await;
    let _ = gql_recv(&mut g).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let logs = buf.text();
    assert!(logs.contains("REDACTED"), "requests are logged: {logs}");
    for line in logs
        .lines()
        .filter(|l| l.contains(garbage) || l.contains(jwt.rsplit('.').next().unwrap_or("-")))
    {
        eprintln!("LEAK: {}", &line[..line.len().min(400)]);
    }
    assert!(!logs.contains(garbage), "a raw token in the logs");
    let signature = jwt.rsplit('.').next().expect("signature");
    assert!(!logs.contains(&jwt), "a JWT in the logs");
    assert!(!logs.contains(signature), "a JWT signature in the logs");
}

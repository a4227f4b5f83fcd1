//! Pusher-style webhooks (§13): `channel_occupied`, `channel_vacated`, `member_added`,
//! `member_removed` and `client_event`, POSTed to each of an app's webhook URLs as Pusher
//! sends them: `{"time_ms", "events": [...]}` with `X-Pusher-Key` and `X-Pusher-Signature`
//! (hex HMAC-SHA256 of the body under the app secret).
//!
//! One task per app takes what is queued, in order, and delivers it to every URL, retrying
//! on the `[webhooks]` backoff schedule like §8 with the same SSRF rules (§12.9): the URL is
//! checked before each attempt and the delivery client refuses internal addresses at connect
//! time unless `webhooks.allow_private`. Events are reported by the node where they happen.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::apps::App;
use super::protocol;
use crate::state::AppState;

/// Webhook events queued per app before new ones are dropped (and counted).
const QUEUE: usize = 10_000;
/// Events per POST.
const PER_POST: usize = 100;

/// The webhook queues of the apps that have webhooks.
#[derive(Default)]
pub struct Hooks {
    queues: Mutex<HashMap<String, mpsc::Sender<Value>>>,
}

impl Hooks {
    /// Queues one webhook event of `app` (nothing when the app has no webhook URLs).
    pub fn send(&self, state: &AppState, app: &Arc<App>, event: Value) {
        if app.webhooks.is_empty() {
            return;
        }
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let tx = queues.entry(app.id.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            state
                .tasks
                .spawn(deliver_loop(state.clone(), app.clone(), rx));
            tx
        });
        if tx.try_send(event).is_err() {
            metrics::counter!("crier_pusher_webhooks_dropped_total").increment(1);
            tracing::warn!(app = %app.id, "the Pusher webhook queue is full; an event was dropped");
        }
    }
}

async fn deliver_loop(state: AppState, app: Arc<App>, mut rx: mpsc::Receiver<Value>) {
    loop {
        let first = tokio::select! {
            _ = state.shutdown.cancelled() => return,
            e = rx.recv() => match e { Some(e) => e, None => return },
        };
        let mut events = vec![first];
        while events.len() < PER_POST {
            let Ok(e) = rx.try_recv() else { break };
            events.push(e);
        }
        let time_ms = crier_core::event::now_us() / 1000;
        let body = json!({"time_ms": time_ms, "events": events}).to_string();
        let signature = protocol::sign(&app.secret, body.as_bytes());
        for url in &app.webhooks {
            deliver(&state, &app, url.as_str(), &body, &signature).await;
        }
    }
}

/// Delivers one body to one URL, retrying on the backoff schedule until a 2xx.
async fn deliver(state: &AppState, app: &App, url: &str, body: &str, signature: &str) {
    let s = &state.settings.webhooks;
    let mut attempt = 0;
    loop {
        let outcome = match crate::webhooks::check_url(url, s.allow_private).await {
            Err(e) => Err(e.into_parts().1),
            Ok(target) => state
                .webhook_client
                .post(target)
                .header("content-type", "application/json")
                .header("x-pusher-key", &app.key)
                .header("x-pusher-signature", signature)
                .body(body.to_string())
                .send()
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| {
                    if r.status().is_success() {
                        Ok(())
                    } else {
                        Err(format!("answered {}", r.status()))
                    }
                }),
        };
        match outcome {
            Ok(()) => {
                metrics::counter!("crier_pusher_webhooks_total", "outcome" => "delivered")
                    .increment(1);
                return;
            }
            Err(e) => {
                let Some(wait) = s.backoff.get(attempt) else {
                    metrics::counter!("crier_pusher_webhooks_total", "outcome" => "dead")
                        .increment(1);
                    tracing::warn!(app = %app.id, %url, error = %e, "a Pusher webhook failed its last attempt");
                    return;
                };
                tracing::debug!(app = %app.id, %url, error = %e, "a Pusher webhook attempt failed; retrying");
                attempt += 1;
                let jitter = rand::rng().random_range(0.8..1.2);
                tokio::select! {
                    _ = state.shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs_f64(wait.as_secs_f64() * jitter)) => {}
                }
            }
        }
    }
}

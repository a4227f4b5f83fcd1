//! The delivery task of one webhook subscription (§8): a cursor over the log, each event
//! POSTed until it is delivered, dead or gone, on the retry schedule.
//!
//! The task's bookkeeping (delivery records, the persisted cursor, the subscription's
//! status) is part of the guarantee, so a write of it that fails is never dropped: it is
//! retried with backoff ([`persist`]), logged at warn and counted in
//! `crier_webhook_bookkeeping_errors_total{op}`, and delivery does not move on to the next
//! event until it is written. A task stopped meanwhile (shutdown, a changed subscription)
//! leaves the stored state where it was, and the next task resumes from there: an event may
//! then go out again (at least once), but none is skipped, and a running task never sends
//! one twice because a write failed.

use std::time::Duration;

use crier_core::event::now_us;
use crier_core::log::BoxFuture;
use crier_core::webhook::{Delivery, DeliveryStatus, WebhookStatus, WebhookSub};
use crier_core::{Committed, CursorItem, Filter, LogError, Reset, Scope, Start};
use rand::Rng;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use super::signing::{secret_key, sign};
use super::ssrf::target;
use crate::state::AppState;

/// The first wait before a failed bookkeeping write is tried again; it doubles up to
/// [`BOOKKEEPING_MAX_WAIT`].
const BOOKKEEPING_FIRST_WAIT: Duration = Duration::from_millis(50);
/// The longest wait between two tries of a bookkeeping write.
const BOOKKEEPING_MAX_WAIT: Duration = Duration::from_secs(10);

/// Runs a bookkeeping write (`op` names it in logs and metrics) until it succeeds; `None`
/// when the task is cancelled first.
async fn persist<'a, T>(
    sub: &str,
    op: &'static str,
    cancel: &CancellationToken,
    mut write: impl FnMut() -> BoxFuture<'a, Result<T, LogError>>,
) -> Option<T> {
    let mut wait = BOOKKEEPING_FIRST_WAIT;
    let mut failures: u32 = 0;
    loop {
        match write().await {
            Ok(v) => {
                if failures > 0 {
                    tracing::info!(
                        sub,
                        op,
                        failures,
                        "webhook delivery state written after retrying"
                    );
                }
                return Some(v);
            }
            Err(e) => {
                failures += 1;
                metrics::counter!("crier_webhook_bookkeeping_errors_total", "op" => op)
                    .increment(1);
                // Every failure counts; the log says so at the first and then sparingly.
                if failures.is_power_of_two() {
                    tracing::warn!(sub, op, failures, error = %e, "cannot write webhook delivery state; retrying before delivery moves on");
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return None,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(BOOKKEEPING_MAX_WAIT);
    }
}

enum Outcome {
    Delivered,
    Dead,
    Gone,
    Cancelled,
}

fn unix_now() -> u64 {
    u64::try_from(now_us() / 1_000_000).unwrap_or(0)
}

/// Delivers a subscription's events until it is cancelled, paused, disabled or expired.
pub(crate) async fn run(
    state: AppState,
    sub: WebhookSub,
    cancel: CancellationToken,
    generation: u64,
) {
    let filter = match serde_json::from_str(&sub.filter)
        .map_err(|e| e.to_string())
        .and_then(|v| Filter::from_stored_json(&v).map_err(|e| e.message))
    {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(sub = %sub.id, error = %e, "stored filter is unreadable; pausing");
            let note = format!("unreadable filter: {e}");
            persist(&sub.id, "status", &cancel, || {
                state
                    .subs
                    .set_status(&sub.id, WebhookStatus::Paused, Some(&note))
            })
            .await;
            state.webhooks.finished(&sub.id, generation);
            return;
        }
    };
    let key = match secret_key(&sub.secret) {
        Ok(k) => k,
        Err(e) => {
            persist(&sub.id, "status", &cancel, || {
                state
                    .subs
                    .set_status(&sub.id, WebhookStatus::Paused, Some(e.message()))
            })
            .await;
            state.webhooks.finished(&sub.id, generation);
            return;
        }
    };
    let queue = state.settings.limits.queue_per_connection;
    let open = state
        .hub
        .open(
            Scope::Tenant(sub.tenant.clone()),
            Arc::new(filter),
            Start::After(sub.cursor),
            queue,
        )
        .await;
    let mut cursor = match open {
        Ok((c, _)) => c,
        Err(e) => {
            tracing::error!(sub = %sub.id, error = %e, "cannot open the subscription's cursor");
            state.webhooks.finished(&sub.id, generation);
            return;
        }
    };
    let expires = crate::transport::expiry_instant(
        sub.expires_us
            .map(|us| u64::try_from(us / 1_000_000).unwrap_or(0)),
    );
    loop {
        let item = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(expires), if sub.expires_us.is_some() => {
                tracing::info!(sub = %sub.id, "webhook subscription expired");
                persist(&sub.id, "status", &cancel, || {
                    state.subs.set_status(&sub.id, WebhookStatus::Expired, None)
                })
                .await;
                break;
            }
            item = cursor.next() => item,
        };
        match item {
            Ok(CursorItem::Event(e)) => match deliver(&state, &sub, &key, &e, &cancel).await {
                Outcome::Delivered => {
                    let advanced = persist(&sub.id, "advance", &cancel, || {
                        state.subs.advance(&sub.id, e.seq)
                    });
                    if advanced.await.is_none() {
                        break;
                    }
                }
                Outcome::Dead if state.settings.webhooks.skip_dead => {
                    tracing::warn!(sub = %sub.id, seq = e.seq, "webhook delivery is dead; skipping to the next event (on_dead = \"skip\")");
                    let advanced = persist(&sub.id, "advance", &cancel, || {
                        state.subs.advance(&sub.id, e.seq)
                    });
                    if advanced.await.is_none() {
                        break;
                    }
                }
                Outcome::Dead => {
                    let note = format!("paused: delivery of seq {} is dead", e.seq);
                    tracing::warn!(sub = %sub.id, seq = e.seq, "webhook delivery is dead; subscription paused");
                    persist(&sub.id, "status", &cancel, || {
                        state
                            .subs
                            .set_status(&sub.id, WebhookStatus::Paused, Some(&note))
                    })
                    .await;
                    break;
                }
                Outcome::Gone => {
                    let note = "disabled: the receiver answered 410 Gone";
                    tracing::warn!(sub = %sub.id, seq = e.seq, "webhook receiver answered 410 Gone; subscription disabled");
                    persist(&sub.id, "status", &cancel, || {
                        state
                            .subs
                            .set_status(&sub.id, WebhookStatus::Disabled, Some(note))
                    })
                    .await;
                    break;
                }
                Outcome::Cancelled => break,
            },
            Ok(CursorItem::Reset(Reset::Retention { oldest })) => {
                let note = format!(
                    "events up to seq {} were removed by retention before delivery",
                    oldest - 1
                );
                tracing::warn!(sub = %sub.id, %note);
                let noted = persist(&sub.id, "note", &cancel, || {
                    state.subs.set_note(&sub.id, &note)
                })
                .await;
                let advanced = match noted {
                    Some(()) => {
                        persist(&sub.id, "advance", &cancel, || {
                            state.subs.advance(&sub.id, oldest - 1)
                        })
                        .await
                    }
                    None => None,
                };
                if advanced.is_none() {
                    break;
                }
            }
            Ok(CursorItem::Reset(r)) => {
                let note = format!("cursor reset: {}", r.to_json());
                let noted = persist(&sub.id, "note", &cancel, || {
                    state.subs.set_note(&sub.id, &note)
                });
                if noted.await.is_none() {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(sub = %sub.id, error = %e, "log read failed; retrying");
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
    state.webhooks.finished(&sub.id, generation);
}

fn retry_after(res: &reqwest::Response) -> Option<Duration> {
    let v = res
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?;
    parse_retry_after(v, std::time::SystemTime::now())
}

/// A `Retry-After` value (RFC 9110 §10.2.3): delay-seconds or an HTTP-date, as a wait from
/// `now`, at least a second (a receiver cannot make the hub hammer it) and at most a day.
pub fn parse_retry_after(v: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = v.trim();
    let wait = match v.parse::<u64>() {
        Ok(s) => Duration::from_secs(s),
        Err(_) => httpdate::parse_http_date(v)
            .ok()?
            .duration_since(now)
            .unwrap_or(Duration::ZERO),
    };
    Some(wait.clamp(Duration::from_secs(1), Duration::from_secs(24 * 3600)))
}

async fn deliver(
    state: &AppState,
    sub: &WebhookSub,
    key: &[u8],
    e: &Committed,
    cancel: &CancellationToken,
) -> Outcome {
    let cfg = &state.settings.webhooks;
    let Some(prior) = persist(&sub.id, "lookup", cancel, || {
        state.subs.delivery(&sub.id, e.seq)
    })
    .await
    else {
        return Outcome::Cancelled;
    };
    let mut attempts = prior.map_or(0, |d| {
        if d.status == DeliveryStatus::Dead {
            0
        } else {
            d.attempts
        }
    });
    loop {
        attempts += 1;
        let ts = unix_now();
        let sent = match target(&sub.url, cfg.allow_private) {
            Err(err) => Err(err.into_parts().1),
            Ok(url) => state
                .webhook_client
                .post(url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("webhook-id", &e.id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", sign(key, &e.id, ts, &e.json))
                .body(e.json.clone())
                .send()
                .await
                .map_err(|err| {
                    if err.is_timeout() {
                        "timed out".to_string()
                    } else {
                        let mut msg = err.to_string();
                        let mut src = std::error::Error::source(&err);
                        while let Some(s) = src {
                            msg = format!("{msg}: {s}");
                            src = s.source();
                        }
                        msg
                    }
                }),
        };
        let mut rec = Delivery {
            sub_id: sub.id.clone(),
            seq: e.seq,
            event_id: e.id.clone(),
            status: DeliveryStatus::Failed,
            attempts,
            last_status_code: None,
            last_error: None,
            next_attempt_us: None,
            updated_us: now_us(),
        };
        let mut wait_hint = None;
        match &sent {
            Ok(res) if res.status().is_success() => {
                rec.status = DeliveryStatus::Delivered;
                rec.last_status_code = Some(res.status().as_u16());
                if !record(state, sub, &rec, cancel).await {
                    return Outcome::Cancelled;
                }
                metrics::counter!("crier_webhook_attempts_total", "result" => "delivered")
                    .increment(1);
                if attempts > 1 {
                    tracing::info!(sub = %sub.id, seq = e.seq, attempts, "webhook delivered after retrying");
                }
                return Outcome::Delivered;
            }
            Ok(res) => {
                let code = res.status().as_u16();
                rec.last_status_code = Some(code);
                rec.last_error = Some(format!("the receiver answered {}", res.status()));
                if code == 410 {
                    rec.status = DeliveryStatus::Failed;
                    if !record(state, sub, &rec, cancel).await {
                        return Outcome::Cancelled;
                    }
                    return Outcome::Gone;
                }
                if code == 429 || code == 503 {
                    wait_hint = retry_after(res);
                }
            }
            Err(msg) => rec.last_error = Some(msg.clone()),
        }
        metrics::counter!("crier_webhook_attempts_total", "result" => "failed").increment(1);
        let error = rec.last_error.clone().unwrap_or_default();
        let Some(base) = cfg.backoff.get(attempts as usize - 1).copied() else {
            tracing::warn!(sub = %sub.id, seq = e.seq, attempts, %error, "webhook attempt failed; no retries left");
            rec.status = DeliveryStatus::Dead;
            if !record(state, sub, &rec, cancel).await {
                return Outcome::Cancelled;
            }
            metrics::counter!("crier_webhook_dead_total").increment(1);
            return Outcome::Dead;
        };
        let wait = wait_hint.unwrap_or_else(|| base.mul_f64(rand::rng().random_range(0.8..1.2)));
        tracing::info!(
            sub = %sub.id,
            seq = e.seq,
            attempts,
            %error,
            retry_in = %humantime::format_duration(Duration::from_secs(wait.as_secs().max(1))),
            "webhook attempt failed; retrying"
        );
        rec.status = DeliveryStatus::Failed;
        rec.next_attempt_us =
            Some(now_us() + i64::try_from(wait.as_micros()).unwrap_or(i64::MAX / 2));
        if !record(state, sub, &rec, cancel).await {
            return Outcome::Cancelled;
        }
        tokio::select! {
            _ = cancel.cancelled() => return Outcome::Cancelled,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Writes a delivery record (retrying); false when the task was cancelled first.
async fn record(
    state: &AppState,
    sub: &WebhookSub,
    rec: &Delivery,
    cancel: &CancellationToken,
) -> bool {
    persist(&sub.id, "record", cancel, || {
        state.subs.record(&sub.tenant, rec)
    })
    .await
    .is_some()
}

#[cfg(test)]
mod tests {
    use super::parse_retry_after;
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    #[test]
    fn retry_after_takes_seconds_and_http_dates() {
        // Sun, 06 Nov 1994 08:49:37 GMT, the example of RFC 9110.
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let secs = |v: &str| parse_retry_after(v, now).map(|d| d.as_secs());
        assert_eq!(secs("120"), Some(120));
        assert_eq!(secs(" 5 "), Some(5));
        assert_eq!(secs("Sun, 06 Nov 1994 08:51:37 GMT"), Some(120));
        assert_eq!(secs("Sunday, 06-Nov-94 08:50:37 GMT"), Some(60));
        assert_eq!(secs("Sun Nov  6 08:49:47 1994"), Some(10));
        assert_eq!(
            secs("Sun, 06 Nov 1994 07:00:00 GMT"),
            Some(1),
            "a past date waits the minimum"
        );
        assert_eq!(secs("0"), Some(1));
        assert_eq!(secs("99999999"), Some(24 * 3600));
        assert_eq!(secs("soon"), None);
        assert_eq!(secs("-5"), None);
        assert!(parse_retry_after("Sun, 06 Nov 1994 08:51:37 GMT", SystemTime::now()).is_some());
    }
}

//! Webhook delivery (§8): one task per active subscription, each a cursor over the log.
//!
//! Per subscription, events go out in seq order, at least once: the persisted cursor
//! advances only on a 2xx answer, so after a crash the hub resumes with the event that was in
//! flight. Each delivery carries the Standard Webhooks headers (`webhook-id` = the event id,
//! stable across retries; `webhook-timestamp`; `webhook-signature: v1,<base64 HMAC-SHA256>`).
//! Failures are retried on the configured schedule with ±20 % jitter, `Retry-After` is
//! honoured on 429 and 503, 410 disables the subscription, redirects are not followed, and
//! after the last attempt the delivery is `dead` and the subscription pauses (or skips it
//! with `on_dead = "skip"`).
//!
//! SSRF guard: URLs are parsed the WHATWG way (so decimal, octal and hex IPv4 forms become
//! plain addresses) and refused when they name or resolve to loopback, private, link-local,
//! unspecified or otherwise internal addresses (IPv4-mapped IPv6 included), at creation and
//! again at connect time through the client's resolver (DNS rebinding), unless
//! `webhooks.allow_private`.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use crier_core::event::now_us;
use crier_core::{Committed, CursorItem, Filter, Reset, Scope, Start};
use crier_store::subs::{Delivery, Subscription};
use hmac::{Hmac, Mac};
use rand::Rng;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;
use crate::state::AppState;

pub use crate::ssrf::{blocked_ip, blocked_reason};

fn refused(message: impl Into<String>) -> ApiError {
    ApiError::bad("url_not_allowed", message)
}

/// Validates a webhook URL; with `allow_private` false also resolves it and refuses internal
/// addresses.
pub async fn check_url(raw: &str, allow_private: bool) -> Result<reqwest::Url, ApiError> {
    let url = reqwest::Url::parse(raw)
        .map_err(|e| ApiError::bad("invalid_url", format!("{raw:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ApiError::bad(
            "invalid_url",
            "a webhook URL is http:// or https://",
        ));
    }
    let host = url
        .host()
        .ok_or_else(|| ApiError::bad("invalid_url", "a webhook URL needs a host"))?;
    if allow_private {
        return Ok(url);
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<IpAddr> = match host {
        url::Host::Ipv4(ip) => vec![IpAddr::V4(ip)],
        url::Host::Ipv6(ip) => vec![IpAddr::V6(ip)],
        url::Host::Domain(d) => tokio::net::lookup_host((d, port))
            .await
            .map_err(|e| refused(format!("cannot resolve {d:?}: {e}")))?
            .map(|a| a.ip())
            .collect(),
    };
    if addrs.is_empty() {
        return Err(refused("the webhook host resolves to no address"));
    }
    // The refusal names the rule, never the address a name resolved to.
    let named = if matches!(host, url::Host::Domain(_)) {
        "the webhook host resolves to"
    } else {
        "the webhook URL points at"
    };
    if let Some(why) = addrs.iter().find_map(|ip| blocked_reason(*ip)) {
        return Err(refused(format!(
            "{named} {why}; set webhooks.allow_private to allow internal targets"
        )));
    }
    Ok(url)
}

/// The URL of a delivery attempt. Names are checked by the client's guarded resolver as it
/// connects; addresses written as IP literals never reach a resolver, so they are checked
/// here.
fn target(raw: &str, allow_private: bool) -> Result<reqwest::Url, ApiError> {
    let url = reqwest::Url::parse(raw)
        .map_err(|e| ApiError::bad("invalid_url", format!("{raw:?} is not a URL: {e}")))?;
    let literal = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
        Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
        _ => None,
    };
    if let Some(why) = literal.filter(|_| !allow_private).and_then(blocked_reason) {
        return Err(refused(format!("the webhook URL points at {why}")));
    }
    Ok(url)
}

/// The client's resolver: refuses internal addresses at connect time (DNS rebinding).
struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| !blocked_ip(a.ip())).collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves only to internal addresses").into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The HTTP client for deliveries: no redirects, the configured timeout, guarded DNS.
pub fn client(allow_private: bool, timeout: Duration) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .user_agent(concat!("crier/", env!("CARGO_PKG_VERSION")));
    if !allow_private {
        b = b.dns_resolver(Arc::new(GuardedResolver));
    }
    b.build().unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot build the webhook client with its options; using defaults");
        reqwest::Client::new()
    })
}

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill(&mut raw);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// The key bytes of a `whsec_` secret, or why it is not one.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, ApiError> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or_else(|| ApiError::bad("invalid_secret", "a webhook secret starts with `whsec_`"))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| {
            ApiError::bad(
                "invalid_secret",
                "a webhook secret is `whsec_` followed by base64",
            )
        })?;
    if key.len() < 16 {
        return Err(ApiError::bad(
            "invalid_secret",
            "a webhook secret holds at least 16 bytes",
        ));
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// Running delivery tasks, one per active subscription, on the node that dispatches (every
/// node of a single-node hub; the lease holder of a cluster).
#[derive(Default)]
pub struct Dispatcher {
    // A std Mutex: map updates only, never held across an await.
    tasks: Mutex<HashMap<String, Running>>,
    generation: std::sync::atomic::AtomicU64,
    /// Set while this node dispatches; every task is a child of it.
    active: Mutex<Option<CancellationToken>>,
}

struct Running {
    generation: u64,
    cancel: CancellationToken,
    /// The subscription as the task started it (to notice changes made on other nodes).
    started: Subscription,
}

/// Whether two versions of a subscription deliver the same way (cursor and note aside).
fn same_delivery(a: &Subscription, b: &Subscription) -> bool {
    a.filter == b.filter
        && a.url == b.url
        && a.secret == b.secret
        && a.status == b.status
        && a.expires_us == b.expires_us
}

impl Dispatcher {
    /// Makes this node the one that delivers (idempotent).
    pub fn activate(&self, state: &AppState) {
        let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        if active.is_none() {
            *active = Some(state.shutdown.child_token());
        }
    }

    /// Stops every delivery task of this node (the lease moved elsewhere).
    pub fn deactivate(&self) {
        if let Some(t) = self.active.lock().unwrap_or_else(|p| p.into_inner()).take() {
            t.cancel();
        }
        self.tasks.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// Whether this node delivers.
    pub fn is_active(&self) -> bool {
        self.active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// (Re)starts delivery for a subscription according to its status. On a node that does
    /// not dispatch this does nothing; the dispatching node picks the change up when it
    /// reconciles.
    pub fn restart(&self, state: &AppState, sub: Subscription) {
        let Some(parent) = self
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        else {
            return;
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = tasks.remove(&sub.id) {
            old.cancel.cancel();
        }
        if sub.status != "active" {
            return;
        }
        let cancel = parent.child_token();
        let generation = self
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tasks.insert(
            sub.id.clone(),
            Running {
                generation,
                cancel: cancel.clone(),
                started: sub.clone(),
            },
        );
        state
            .tasks
            .spawn(run(state.clone(), sub, cancel, generation));
    }

    /// Stops delivery for a subscription.
    pub fn stop(&self, id: &str) {
        if let Some(r) = self
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id)
        {
            r.cancel.cancel();
        }
    }

    /// Forgets a task that ended by itself (unless a newer one replaced it).
    fn finished(&self, id: &str, generation: u64) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if tasks.get(id).is_some_and(|r| r.generation == generation) {
            tasks.remove(id);
        }
    }

    /// Brings the running tasks in line with the stored subscriptions: starts new or
    /// resumed ones, restarts changed ones, stops deleted or paused ones.
    pub async fn reconcile(&self, state: &AppState) {
        if !self.is_active() {
            return;
        }
        let subs = match state.subs.list(None).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load subscriptions; retrying later");
                return;
            }
        };
        let stored: HashMap<&str, &Subscription> =
            subs.iter().map(|s| (s.id.as_str(), s)).collect();
        let gone: Vec<String> = {
            let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
            tasks
                .keys()
                .filter(|id| !stored.contains_key(id.as_str()))
                .cloned()
                .collect()
        };
        for id in gone {
            self.stop(&id);
        }
        for s in &subs {
            let current = {
                let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
                tasks.get(&s.id).map(|r| same_delivery(&r.started, s))
            };
            match current {
                Some(true) => {}
                Some(false) => self.restart(state, s.clone()),
                None if s.status == "active" => self.restart(state, s.clone()),
                None => {}
            }
        }
    }
}

/// Starts delivery on a node that dispatches by itself (a single-node hub).
pub async fn start_all(state: &AppState) {
    state.webhooks.activate(state);
    state.webhooks.reconcile(state).await;
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

async fn run(state: AppState, sub: Subscription, cancel: CancellationToken, generation: u64) {
    let filter = match serde_json::from_str(&sub.filter)
        .map_err(|e| e.to_string())
        .and_then(|v| Filter::from_stored_json(&v).map_err(|e| e.message))
    {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(sub = %sub.id, error = %e, "stored filter is unreadable; pausing");
            let _ = state
                .subs
                .set_status(
                    sub.id.clone(),
                    "paused",
                    Some(format!("unreadable filter: {e}")),
                )
                .await;
            return;
        }
    };
    let key = match secret_key(&sub.secret) {
        Ok(k) => k,
        Err(e) => {
            let _ = state
                .subs
                .set_status(sub.id.clone(), "paused", Some(e.message))
                .await;
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
            return;
        }
    };
    let expires = crate::sse::expiry_instant(
        sub.expires_us
            .map(|us| u64::try_from(us / 1_000_000).unwrap_or(0)),
    );
    loop {
        let item = tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep_until(expires), if sub.expires_us.is_some() => {
                tracing::info!(sub = %sub.id, "webhook subscription expired");
                let _ = state.subs.set_status(sub.id.clone(), "expired", None).await;
                break;
            }
            item = cursor.next() => item,
        };
        match item {
            Ok(CursorItem::Event(e)) => match deliver(&state, &sub, &key, &e, &cancel).await {
                Outcome::Delivered => {
                    if let Err(err) = state.subs.advance(sub.id.clone(), e.seq).await {
                        tracing::error!(sub = %sub.id, error = %err, "cannot persist the cursor");
                    }
                }
                Outcome::Dead if state.settings.webhooks.skip_dead => {
                    tracing::warn!(sub = %sub.id, seq = e.seq, "webhook delivery is dead; skipping to the next event (on_dead = \"skip\")");
                    let _ = state.subs.advance(sub.id.clone(), e.seq).await;
                }
                Outcome::Dead => {
                    let note = format!("paused: delivery of seq {} is dead", e.seq);
                    tracing::warn!(sub = %sub.id, seq = e.seq, "webhook delivery is dead; subscription paused");
                    let _ = state
                        .subs
                        .set_status(sub.id.clone(), "paused", Some(note))
                        .await;
                    break;
                }
                Outcome::Gone => {
                    let note = "disabled: the receiver answered 410 Gone".to_string();
                    tracing::warn!(sub = %sub.id, seq = e.seq, "webhook receiver answered 410 Gone; subscription disabled");
                    let _ = state
                        .subs
                        .set_status(sub.id.clone(), "disabled", Some(note))
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
                let _ = state.subs.set_note(sub.id.clone(), note).await;
                let _ = state.subs.advance(sub.id.clone(), oldest - 1).await;
            }
            Ok(CursorItem::Reset(r)) => {
                let _ = state
                    .subs
                    .set_note(sub.id.clone(), format!("cursor reset: {}", r.to_json()))
                    .await;
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
    sub: &Subscription,
    key: &[u8],
    e: &Committed,
    cancel: &CancellationToken,
) -> Outcome {
    let cfg = &state.settings.webhooks;
    let prior = state
        .subs
        .delivery(sub.id.clone(), e.seq)
        .await
        .ok()
        .flatten();
    let mut attempts = prior.map_or(0, |d| if d.status == "dead" { 0 } else { d.attempts });
    loop {
        attempts += 1;
        let ts = unix_now();
        let sent = match target(&sub.url, cfg.allow_private) {
            Err(err) => Err(err.message),
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
            status: String::new(),
            attempts,
            last_status_code: None,
            last_error: None,
            next_attempt_us: None,
            updated_us: now_us(),
        };
        let mut wait_hint = None;
        match &sent {
            Ok(res) if res.status().is_success() => {
                rec.status = "delivered".into();
                rec.last_status_code = Some(res.status().as_u16());
                let _ = state.subs.record(sub.tenant.clone(), rec).await;
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
                    rec.status = "failed".into();
                    let _ = state.subs.record(sub.tenant.clone(), rec).await;
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
            rec.status = "dead".into();
            let _ = state.subs.record(sub.tenant.clone(), rec).await;
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
        rec.status = "failed".into();
        rec.next_attempt_us =
            Some(now_us() + i64::try_from(wait.as_micros()).unwrap_or(i64::MAX / 2));
        let _ = state.subs.record(sub.tenant.clone(), rec).await;
        tokio::select! {
            _ = cancel.cancelled() => return Outcome::Cancelled,
            _ = tokio::time::sleep(wait) => {}
        }
    }
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

//! Webhook delivery (§8): one task per active subscription, each a cursor over the log (the
//! task itself is in `webhook_delivery`).
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
use crier_core::webhook::{WebhookStatus, WebhookSub};
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
pub(crate) fn target(raw: &str, allow_private: bool) -> Result<reqwest::Url, ApiError> {
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
    started: WebhookSub,
}

/// Whether two versions of a subscription deliver the same way (cursor and note aside).
fn same_delivery(a: &WebhookSub, b: &WebhookSub) -> bool {
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
    pub fn restart(&self, state: &AppState, sub: WebhookSub) {
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
        if sub.status != WebhookStatus::Active {
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
        state.tasks.spawn(crate::webhook_delivery::run(
            state.clone(),
            sub,
            cancel,
            generation,
        ));
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
    pub(crate) fn finished(&self, id: &str, generation: u64) {
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
        let stored: HashMap<&str, &WebhookSub> = subs.iter().map(|s| (s.id.as_str(), s)).collect();
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
                None if s.status == WebhookStatus::Active => self.restart(state, s.clone()),
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

pub use crate::webhook_delivery::parse_retry_after;

//! Webhooks (§8): durable subscriptions that push a tenant's matching events to a URL.
//!
//! * [`routes`]: `/v1/subscriptions`, the HTTP handlers that manage them.
//! * [`dispatcher`]: one delivery task per active subscription, on the node that delivers.
//! * [`delivery`]: the task of one subscription, a cursor over the log; its bookkeeping.
//! * [`signing`]: secrets and the Standard Webhooks signature.
//! * [`ssrf`]: which URLs and addresses a webhook may target.
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
//! The subscriptions themselves and their store contract are `crier_core::webhook`.

pub(crate) mod delivery;
pub mod dispatcher;
pub mod routes;
pub mod signing;
pub mod ssrf;

pub use delivery::parse_retry_after;
pub use dispatcher::{start_all, Dispatcher};
pub use signing::{new_secret, secret_key, sign};
pub use ssrf::{blocked_ip, blocked_reason, check_url, client};

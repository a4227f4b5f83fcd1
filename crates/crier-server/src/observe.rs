//! Request observability: every HTTP request gets an `X-Request-Id` (the client's own when it
//! sent a sane one, else a new UUID), echoed on the answer and carried by every log line
//! written while the request is handled; an access log line at info level (or debug, with
//! `access_log = false`); and a latency histogram by route template and status.
//!
//! The id is set and echoed by `tower-http`; this module only refuses ids that would make
//! log lines unreadable (too long, or characters beyond a conservative set) so that a new
//! one is generated in their place.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use axum::Router;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tracing::Instrument;

use crate::state::AppState;

/// The request id header.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest request id taken from a client.
const MAX_ID_LEN: usize = 128;

/// Wraps `router` with request ids, the access log and request metrics.
pub fn layer(router: Router<AppState>, state: AppState) -> Router<AppState> {
    // Layers added later run earlier: sanitise, then set an id, then echo it, then log.
    router
        .layer(axum::middleware::from_fn_with_state(state, access))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
        .layer(axum::middleware::from_fn(drop_bad_ids))
}

fn acceptable_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_ID_LEN
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.:/+=@".contains(c))
}

/// Removes a client's request id that is empty, too long or oddly spelled, so a fresh one
/// is generated; duplicates are reduced to none for the same reason.
async fn drop_bad_ids(mut req: Request, next: Next) -> Response {
    let headers = req.headers_mut();
    let mut ids = headers.get_all(REQUEST_ID).iter();
    let keep = match (ids.next(), ids.next()) {
        (Some(v), None) => acceptable_id(v),
        (None, _) => true,
        _ => false,
    };
    if !keep {
        headers.remove(REQUEST_ID);
    }
    next.run(req).await
}

/// The method as a metric label: one of the standard methods, or `other`, so that made-up
/// methods cannot create series without bound.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Milliseconds with a precision that reads well: three decimals below 10 ms, one below a
/// second, none above.
pub struct Millis(pub std::time::Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_secs_f64() * 1000.0;
        if ms < 10.0 {
            write!(f, "{ms:.3}")
        } else if ms < 1000.0 {
            write!(f, "{ms:.1}")
        } else {
            write!(f, "{ms:.0}")
        }
    }
}

/// Runs the request inside a span carrying its id, then logs and measures it. Credentials in
/// the query string are redacted.
async fn access(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let path = req.uri().path().to_string();
    let query = req
        .uri()
        .query()
        .map(crate::auth::redact_query)
        .unwrap_or_default();
    let span = tracing::info_span!("request", id = %id);
    let started = Instant::now();
    let res = next.run(req).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = res.status().as_u16();
    let route_label = route.as_deref().unwrap_or("unmatched").to_string();
    metrics::histogram!(
        "crier_http_request_duration_seconds",
        "route" => route_label,
        "method" => method_label(&method),
        "status" => status.to_string(),
    )
    .record(elapsed.as_secs_f64());
    let ms = Millis(elapsed);
    span.in_scope(|| {
        if state.settings.access_log {
            tracing::info!(%method, %path, %query, status, %ms, "request");
        } else {
            tracing::debug!(%method, %path, %query, status, %ms, "request");
        }
    });
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn milliseconds_read_well() {
        assert_eq!(Millis(Duration::from_nanos(35_834)).to_string(), "0.036");
        assert_eq!(Millis(Duration::from_micros(12_345)).to_string(), "12.3");
        assert_eq!(Millis(Duration::from_millis(2_500)).to_string(), "2500");
    }

    #[test]
    fn odd_request_ids_are_refused() {
        assert!(acceptable_id(&HeaderValue::from_static("abc-123_x.y:z")));
        assert!(!acceptable_id(&HeaderValue::from_static("")));
        assert!(!acceptable_id(&HeaderValue::from_static("a b")));
        assert!(!acceptable_id(&HeaderValue::from_static("a\"b")));
        let long = "a".repeat(MAX_ID_LEN + 1);
        assert!(!acceptable_id(&HeaderValue::from_str(&long).unwrap()));
    }
}

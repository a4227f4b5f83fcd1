//! What a browser may make the hub do (§12.7), the same on every route: HTTP, SSE,
//! `/v1/ws`, the GraphQL WebSocket and the Pusher WebSocket (`/app/{key}`).
//!
//! - In no-auth mode the hub answers only requests whose `Host` is a loopback name or
//!   address or is listed in `allowed_hosts` (421 `host_not_allowed`): a page on another
//!   name that rebinds its DNS to 127.0.0.1 reaches nothing.
//! - A WebSocket upgrade or a state-changing request (POST, PUT, PATCH, DELETE) whose
//!   `Origin` is neither the hub's own origin (`public_url`, else the listen address) nor in
//!   `allowed_origins` is refused with 403 `origin_not_allowed` when `allowed_origins` is
//!   set, and always in no-auth mode. `Host` is never trusted to say what "same origin" is.
//!   Requests without `Origin` (servers, command-line tools, SDKs) are not from a browser
//!   page and pass.
//! - A state-changing request carries one of the JSON media types of [`BODY_TYPES`]; anything
//!   else (`text/plain`, forms: what a page can send without a CORS preflight) is 415
//!   `unsupported_media_type`. A request without a body may leave the type out.

use std::net::IpAddr;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::state::AppState;

/// The media types a state-changing request may carry (§12.7).
pub const BODY_TYPES: &[&str] = &[
    "application/json",
    "application/x-ndjson",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/merge-patch+json",
];

pub use crate::config::origins::{origin_of, public_origin};
pub use crate::transport::origin::{check_origin, own_origins};

/// The host of a `Host` header or request authority, without its port, in lower case and
/// without a trailing dot.
fn host_name(authority: &str) -> String {
    let a = authority.trim().to_ascii_lowercase();
    let host = if let Some(rest) = a.strip_prefix('[') {
        rest.split(']').next().unwrap_or("").to_string()
    } else {
        match a.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h.to_string(),
            _ => a,
        }
    };
    host.trim_end_matches('.').to_string()
}

/// Whether a host name is this machine by definition: `localhost` (and its subdomains,
/// which browsers resolve to loopback themselves) or a loopback address.
fn loopback(host: &str) -> bool {
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

/// Whether a no-auth hub answers a request for `authority` (see the module docs).
pub fn host_allowed(authority: &str, allowed_hosts: &[String]) -> bool {
    let host = host_name(authority);
    if host.is_empty() {
        return false;
    }
    loopback(&host)
        || allowed_hosts.iter().any(|h| {
            let h = h.trim().to_ascii_lowercase();
            h == host || h == authority.trim().to_ascii_lowercase()
        })
}

/// The authority a request asked for: the request target's (HTTP/2, absolute form), else
/// the `Host` header.
fn authority(req: &Request) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(header::HOST)
        .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
}

/// Layer: the `Host` rule of no-auth mode, outside everything else (CORS preflights too).
pub async fn host_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.settings.auth.enabled {
        return next.run(req).await;
    }
    let host = authority(&req).unwrap_or_default();
    if host_allowed(&host, &state.settings.allowed_hosts) {
        return next.run(req).await;
    }
    ApiError::new(
        StatusCode::MISDIRECTED_REQUEST,
        "host_not_allowed",
        format!(
            "host {host:?} is not served: this hub has no authentication, so it answers only \
             loopback names and addresses and the names in allowed_hosts"
        ),
    )
    .into_response()
}

fn changes_state(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// A WebSocket handshake: an HTTP/1.1 `Upgrade: websocket` or an HTTP/2 extended CONNECT.
fn is_upgrade(req: &Request) -> bool {
    req.method() == Method::CONNECT
        || req.headers().get_all(header::UPGRADE).iter().any(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .to_ascii_lowercase()
                .contains("websocket")
        })
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// The content-type rule of state-changing requests.
pub fn check_content_type(method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
    if !changes_state(method) {
        return Ok(());
    }
    let refuse = |what: String| {
        ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "{what}; send {} ({method} requests carry one of these)",
                BODY_TYPES.join(", ")
            ),
        )
    };
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        if has_body(headers) {
            return Err(refuse("the request has a body but no Content-Type".into()));
        }
        return Ok(());
    };
    let ct = String::from_utf8_lossy(ct.as_bytes());
    let mime = crate::transport::essence(&ct);
    if BODY_TYPES.contains(&mime.as_str()) {
        Ok(())
    } else {
        Err(refuse(format!("content type {mime:?} is not accepted")))
    }
}

/// Layer: the origin and content-type rules, inside CORS (so an allowed origin can read the
/// refusal).
pub async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if changes_state(req.method()) || is_upgrade(&req) {
        if let Err(e) = check_origin(&state, req.headers()) {
            return e.into_response();
        }
    }
    if let Err(e) = check_content_type(req.method(), req.headers()) {
        return e.into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_of_a_no_auth_hub() {
        let none: Vec<String> = vec![];
        for ok in [
            "localhost",
            "localhost:7400",
            "LOCALHOST.:7400",
            "app.localhost:1",
            "127.0.0.1:7400",
            "127.9.9.9",
            "[::1]:7400",
            "[::ffff:127.0.0.1]:80",
        ] {
            assert!(host_allowed(ok, &none), "{ok}");
        }
        for bad in [
            "",
            "evil.example:7400",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1:7400",
            "[::2]:7400",
            "0.0.0.0:7400",
        ] {
            assert!(!host_allowed(bad, &none), "{bad}");
        }
        let listed = vec!["events.internal".to_string()];
        assert!(host_allowed("events.internal:7400", &listed));
        assert!(host_allowed("Events.Internal", &listed));
        assert!(!host_allowed("other.internal", &listed));
    }

    #[test]
    fn origins_are_compared_normalised() {
        assert_eq!(
            origin_of("HTTPS://Events.Example.com:443/x").as_deref(),
            Some("https://events.example.com")
        );
        assert_eq!(
            origin_of("http://127.0.0.1:7400").as_deref(),
            Some("http://127.0.0.1:7400")
        );
        assert_eq!(origin_of("null"), None);
        assert_eq!(origin_of("file:///etc/passwd"), None);
        assert!(public_origin("ftp://x").is_err());
        assert_eq!(public_origin(""), Ok(None));
    }

    #[test]
    fn state_changing_requests_carry_json_types() {
        let mut h = HeaderMap::new();
        assert!(
            check_content_type(&Method::DELETE, &h).is_ok(),
            "no body, no type"
        );
        h.insert(header::CONTENT_LENGTH, "3".parse().unwrap());
        assert!(
            check_content_type(&Method::POST, &h).is_err(),
            "a body needs a type"
        );
        assert!(check_content_type(&Method::GET, &h).is_ok());
        for (t, ok) in [
            ("application/json; charset=utf-8", true),
            ("Application/X-NDJSON", true),
            ("application/cloudevents-batch+json", true),
            ("application/merge-patch+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("multipart/form-data; boundary=x", false),
            ("", false),
        ] {
            h.insert(header::CONTENT_TYPE, t.parse().unwrap());
            assert_eq!(check_content_type(&Method::POST, &h).is_ok(), ok, "{t}");
        }
    }
}

//! The Origin rule (§12.7) of every WebSocket upgrade (`/v1/ws`, the GraphQL WebSocket,
//! Pusher) and of every state-changing request (through [`crate::browser::guard`]): one
//! function, so each path refuses a foreign browser page the same way. See
//! [`crate::browser`] for the rule in full.

use std::net::{IpAddr, SocketAddr};

use axum::http::{header, HeaderMap, StatusCode};

use crate::config::origins::origin_of;
use crate::error::ApiError;
use crate::state::AppState;

/// The origins that are the hub itself: `public_url`, else those of the address it listens
/// on (for a loopback address, under each loopback name a browser may have used).
pub fn own_origins(state: &AppState) -> Vec<String> {
    if let Some(o) = &state.settings.public_url {
        return vec![o.clone()];
    }
    let addr: SocketAddr = state
        .bound_addr
        .get()
        .copied()
        .unwrap_or(state.settings.listen);
    let scheme = if state.settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let port = addr.port();
    let mut hosts = vec![match addr.ip() {
        IpAddr::V4(ip) => ip.to_string(),
        IpAddr::V6(ip) => format!("[{ip}]"),
    }];
    if addr.ip().is_loopback() {
        hosts.extend(["localhost", "127.0.0.1", "[::1]"].map(String::from));
    }
    hosts
        .iter()
        .filter_map(|h| origin_of(&format!("{scheme}://{h}:{port}")))
        .collect()
}

/// Refuses a browser's WebSocket upgrade or state-changing request from a foreign origin
/// (see the module docs).
pub fn check_origin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let allowed = &state.settings.allowed_origins;
    let no_auth = !state.settings.auth.enabled;
    if allowed.is_empty() && !no_auth {
        return Ok(());
    }
    let Some(raw) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let shown = String::from_utf8_lossy(raw.as_bytes()).into_owned();
    if allowed.iter().any(|a| a == "*") {
        return Ok(());
    }
    if let Some(o) = raw.to_str().ok().and_then(origin_of) {
        let listed = allowed.iter().any(|a| origin_of(a).is_some_and(|a| a == o));
        if listed || own_origins(state).contains(&o) {
            return Ok(());
        }
    }
    let why = if no_auth && allowed.is_empty() {
        "this hub has no authentication, so it serves pages of its own origin only; list the page's origin in allowed_origins"
    } else {
        "it is not this hub's own origin (public_url) and not in allowed_origins"
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        format!("origin {shown:?} is refused: {why}"),
    ))
}

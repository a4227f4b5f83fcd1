//! `GET /v1/ws`: the WebSocket protocol of §5.
//!
//! Each connection has one writer task that owns the socket's sending half, an outbound
//! queue of answers and replay frames bounded in bytes, and the connection's subscriptions:
//! each is a stream of frames over its own cursor, polled by the writer, which writes
//! whatever is ready and flushes once.
//! When the client reads slowly the writer waits on the socket and polls no cursor; a
//! cursor's live queue then overflows and it falls back to the log: memory stays bounded
//! and nothing is lost. Publishes go through one task per connection, so a connection's
//! publishes are committed in the order it sent them without blocking its reads. Errors are
//! answered with an `error` op and the connection stays open.
//!
//! The module's parts: `handshake` (the opening handshake), `protocol` (client ops as typed
//! structs, answer frames), `connection` (the connection's state, read loop and teardown),
//! `ops` (one method per op), `tasks` (subscriptions, replays, publishes and the socket
//! writer) and `wire` (the socket: read by the WebSocket library, written by the writer).

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;

use crate::auth::Auth;
use crate::error::ApiError;
use crate::monitor::Peer;
use crate::query::Query;
use crate::state::{AppState, Transport};
use crate::transport::check_origin;

mod connection;
mod handshake;
pub mod oneshot;
mod ops;
mod protocol;
mod tasks;
mod wire;

use connection::Conn;
pub use handshake::Handshake;

/// Bytes of answers and replay frames queued for the writer before the ops (and replays,
/// and the publish task) wait: half the reader's buffer (§12.2 `reader_buffer_bytes`); a
/// replay's read-ahead page holds the other half.
fn outbound_bytes(state: &AppState) -> usize {
    state.settings.limits.reader_buffer_bytes / 2
}

/// Publishes queued per connection before the reader waits.
const PUBLISH_QUEUE: usize = 64;

/// `GET /v1/ws`.
pub async fn upgrade(
    State(state): State<AppState>,
    Auth(principal): Auth,
    Peer(remote): Peer,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
    ws: Result<Handshake, ApiError>,
) -> Result<Response, ApiError> {
    Query::parse(raw.as_deref(), &[])?;
    let ws = ws?;
    check_origin(&state, &headers)?;
    let guard = state.conns.open(
        &state,
        &principal.tenant,
        Transport::Ws,
        &principal.subject,
        remote,
    )?;
    Ok(ws.accept(move |socket| Conn::run(state, principal, guard, socket)))
}

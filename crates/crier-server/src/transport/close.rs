//! The close code a WebSocket gets when its client breaks the protocol (§12.11), shared by
//! `/v1/ws`, the GraphQL WebSocket and Pusher.
//!
//! The WebSocket library reports a broken frame as a read error and leaves the socket open
//! for writing; the connection then closes with the code RFC 6455 names for the fault
//! instead of a plain 1000, so a client can tell "you sent garbage" from "goodbye".

use std::error::Error as _;

use tungstenite::error::{CapacityError, Error as WsError};

/// The close code and reason for a read error, or `None` when the peer simply went away
/// (nothing can be written to it any more).
pub fn for_read_error(e: &axum::Error) -> Option<(u16, &'static str)> {
    for_ws_error(e.source()?.downcast_ref::<WsError>()?)
}

/// [`for_read_error`] for an error of the library itself.
pub fn for_ws_error(inner: &WsError) -> Option<(u16, &'static str)> {
    match inner {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            metrics::counter!("crier_limit_hits_total", "limit" => "max_ws_frame_bytes")
                .increment(1);
            Some((1009, "message too big"))
        }
        WsError::Capacity(_) => Some((1009, "message too big")),
        WsError::Utf8(_) => Some((1007, "invalid UTF-8 in a text frame")),
        WsError::Protocol(_) | WsError::AttackAttempt => Some((1002, "protocol violation")),
        _ => None,
    }
}

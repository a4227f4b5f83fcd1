//! One client message through the real op handler, without a socket: the entry point of the
//! WebSocket-op fuzz target (`fuzz/`), which feeds it arbitrary text frames.
//!
//! The connection is the one an upgrade would build for `principal`, answering into a queue
//! instead of a socket; after the message it is torn down as `Conn::run` tears a
//! closed connection down, so subscriptions, replays and publishes it started end with it.

use std::sync::Arc;

use axum::extract::ws::Message;
use crier_core::{queue, Principal};

use super::connection::Conn;
use super::outbound_bytes;
use super::tasks::Out;
use crate::monitor::ConnInfo;
use crate::state::{AppState, Transport};

/// Handles `text` as one text frame on a fresh connection of `principal` and returns the
/// frames it answered with (replies and errors; events of subscriptions it opened too, if
/// any arrived before the connection closed).
pub async fn answer(state: AppState, principal: Principal, text: &str) -> Vec<String> {
    let (out, mut out_rx) = queue::weighed::<Out>(outbound_bytes(&state), Out::weight);
    // Read while the connection works, as the writer task would: producers never block. A
    // subscription it opened is dropped unread: the connection ends after this message.
    let reader = tokio::spawn(async move {
        let mut frames = Vec::new();
        while let Some(o) = out_rx.recv().await {
            if let Out::Frame(Message::Text(t)) = o {
                frames.push(t.to_string());
            }
        }
        frames
    });
    let cancel = state.shutdown.child_token();
    // An entry outside the registry: this connection has no socket to list.
    let info = Arc::new(ConnInfo::new(
        0,
        &principal.tenant,
        Transport::Ws,
        &principal.subject,
        None,
    ));
    let mut conn = Conn::new(state, principal, out, cancel, info);
    let answer = conn.handle(text).await;
    conn.cancel.cancel();
    conn.stop_tasks().await;
    drop(conn.out);
    let mut frames = reader.await.unwrap_or_default();
    if let Some(Message::Text(t)) = answer {
        frames.push(t.to_string());
    }
    frames
}

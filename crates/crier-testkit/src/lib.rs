//! The one test kit of crier's integration tests, so that no test file carries its own copy
//! of the harness: a hub in process on a real socket ([`hub`]), the real binary as a child
//! process ([`process`]), a loopback proxy a test can cut ([`proxy`]), signed credentials
//! ([`auth`]), the external services with their skip-or-fail rule ([`services`]), and SSE
//! and WebSocket readers ([`sse`], [`ws`]) — SSE parsed by the client's own parser.
//!
//! Only ever a dev-dependency.

pub mod auth;
pub mod checks;
pub mod embed_checks;
pub mod graphql;
pub mod hooks;
pub mod http;
pub mod hub;
pub mod process;
pub mod proxy;
pub mod services;
pub mod sse;
pub mod ws;

pub use hub::{ev, Hub, WAIT};
pub use sse::{Msg, Sse};
pub use ws::Ws;

use std::time::{Duration, Instant};

/// Polls `ok` every 50 ms until it holds; fails naming `what` after `within`.
pub async fn until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

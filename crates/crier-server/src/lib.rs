//! crier-server: the hub's HTTP API, Server-Sent Events and WebSocket transports.
//!
//! Embedders, tests and the binary start the hub the same way: build a [`Settings`], bind a
//! listener, and call [`run`] with a cancellation token that stops it. [`app`] is the router
//! as a function, for tests that want to drive it without a socket.
//!
//! Where things are: `router` (the routes), `startup` (opening stores, building the state,
//! serving, closing) and `background` (retention and the cluster leader's loop); the rules
//! every transport shares are in [`service`], the wire helpers they share in [`transport`];
//! each transport is a module of its own (`events`, `entities`, `replays`, `filters`,
//! `subscriptions` and `stats` over HTTP, [`sse`], [`ws`], [`graphql`], [`pusher`]).
#![deny(missing_docs)]

pub mod auth;
mod background;
pub mod browser;
pub mod budget;
pub mod config;
pub mod connections;
pub mod dashboard;
pub mod datadir;
pub mod entities;
pub mod error;
pub mod events;
pub mod filters;
pub mod graphql;
pub mod http;
pub mod lifetime;
pub mod listener;
pub mod metrics_catalog;
pub mod monitor;
pub mod observe;
pub mod ops;
pub mod outbox;
#[cfg(feature = "postgres")]
mod outbox_drain;
pub mod pusher;
pub mod query;
pub mod reader_limits;
pub mod readiness;
pub mod replays;
mod router;
pub mod service;
pub mod sse;
mod startup;
pub mod state;
pub mod stats;
mod stream_conn;
pub mod tls;
pub mod transport;
pub mod webhooks;
pub mod ws;

pub use config::{Config, ConfigError, Settings};
pub use error::ApiError;
pub use router::{app, app_for};
pub use startup::{close, open_log, run, serve, start, ServeError};
pub use state::AppState;

//! crier-core: the pieces of crier that have nothing to do with sockets or SQL.
//!
//! * [`event`]: the event model of the public contract (§1), its validation and the
//!   encode-once representation of a committed event ([`Committed`]).
//! * [`filter`]: the one filter language (§2) used by history, streams, replays and
//!   subscriptions.
//! * [`log`]: the [`EventLog`] trait every store implements: a durable, totally ordered log.
//! * [`frames`]: an event's SSE and WebSocket frames, encoded once and shared.
//! * [`hub`]: cursors over the log and the live fan-out that feeds caught-up cursors.
//! * [`principal`]: who is asking (tenant, role, subject), carried by every request.
//! * [`keys`]: the API-key store contract.
//! * [`webhook`]: webhook subscriptions, their delivery records and the [`WebhookStore`]
//!   contract.
//! * [`queue`]: lean single-receiver queues, for what each connection and live reader holds.
//! * [`entity`]: entities (§11): the rules of mutations and the [`entity::EntityStore`]
//!   contract every store implements in its own write transactions.
//!
//! Dependencies flow one way: this crate knows no web framework and no SQL.
#![deny(missing_docs)]

pub mod cloudevents;
pub mod entity;
pub mod event;
mod fanout;
pub mod filter;
pub mod frames;
pub mod hub;
pub mod keys;
pub mod log;
pub mod principal;
pub mod queue;
pub mod strict_json;
mod validate;
pub mod webhook;

pub use event::{Committed, EventInput, NewEvent, PublishContext, Severity};
pub use filter::{Filter, Pattern, PatternKey};
pub use hub::{read_full, Cursor, CursorItem, Hub, Reset, Start};
pub use log::{AppendResult, EventCounts, EventLog, LogError, ReadPage, ReadQuery, Scope};
pub use principal::{Principal, Role};
pub use validate::{ErrorKind, ValidationError};
pub use webhook::{WebhookStore, WebhookSub};

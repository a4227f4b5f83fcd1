//! crier-store: implementations of [`crier_core::EventLog`].
//!
//! * [`sqlite`]: the embedded default, one file under `data_dir`, with a single writer
//!   thread doing group commit.
//! * [`postgres`]: a PostgreSQL log several hub nodes can share, with their subscriptions,
//!   API keys and saved filters.
//! * Both logs also implement [`crier_core::entity::EntityStore`]: entity rows live next to
//!   the events, and a change is written in the same transaction as its events.
//! * [`keys`]: API keys, stored hashed in the same file.
//! * [`lease`]: a cluster-wide lease for work that must run on one node at a time.
//! * [`subs`]: durable subscriptions and their delivery records, in the same file.
//! * [`filters`]: saved named filters per tenant, in the same file (or PostgreSQL:
//!   [`PgFilters`]).
//! * [`conformance`]: the suite every implementation must pass, run by each backend's tests.
//!
//! PostgreSQL (the log, its tables and the lease) is the `postgres` feature, on by default;
//! without it the crate is SQLite alone.
#![deny(missing_docs)]

pub mod conformance;
pub mod filters;
pub mod keys;
#[cfg(feature = "postgres")]
pub mod lease;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod sqlite;
pub mod subs;

pub use filters::SqliteFilters;
pub use keys::SqliteKeys;
#[cfg(feature = "postgres")]
pub use lease::Lease;
#[cfg(feature = "postgres")]
pub use postgres::{PgFilters, PgKeys, PgSubs, PostgresLog};
pub use sqlite::{Durability, SqliteLog};
pub use subs::SqliteSubs;

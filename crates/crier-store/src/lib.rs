//! crier-store: implementations of [`crier_core::EventLog`].
//!
//! * [`sqlite`]: the embedded default, one file under `data_dir`, with a single writer
//!   thread doing group commit.
//! * [`postgres`]: a PostgreSQL log several hub nodes can share; [`postgres_tables`]: their
//!   API keys; [`postgres_subs`]: their webhook subscriptions.
//! * Both logs also implement [`crier_core::entity::EntityStore`]: entity rows live next to
//!   the events, and a change is written in the same transaction as its events.
//! * [`keys`]: API keys, stored hashed in the same file.
//! * [`lease`]: a cluster-wide lease for work that must run on one node at a time.
//! * [`subs`]: webhook subscriptions and their delivery records, in the same file (the
//!   contract is [`crier_core::webhook`]). In a hub these side tables write through the
//!   log's writer thread, so nothing else writes to the file.
//! * [`filters`]: saved named filters per tenant, in the same file (or PostgreSQL:
//!   [`postgres_filters`]).
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
#[cfg(feature = "postgres")]
mod postgres_entities;
#[cfg(feature = "postgres")]
pub mod postgres_filters;
#[cfg(feature = "postgres")]
pub mod postgres_subs;
#[cfg(feature = "postgres")]
pub mod postgres_tables;
pub mod sqlite;
pub mod subs;

pub use filters::SqliteFilters;
pub use keys::SqliteKeys;
#[cfg(feature = "postgres")]
pub use lease::Lease;
#[cfg(feature = "postgres")]
pub use postgres::PostgresLog;
#[cfg(feature = "postgres")]
pub use postgres_filters::PgFilters;
#[cfg(feature = "postgres")]
pub use postgres_subs::PgSubs;
#[cfg(feature = "postgres")]
pub use postgres_tables::PgKeys;
pub use sqlite::{Durability, SqliteLog};
pub use subs::SqliteSubs;

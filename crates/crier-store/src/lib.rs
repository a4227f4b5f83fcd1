//! crier-store: implementations of [`crier_core::EventLog`], one folder per backend.
//!
//! * [`sqlite`]: the embedded default, one file under `data_dir`, with a single writer
//!   thread doing group commit; its API keys ([`keys`]), saved named filters per tenant
//!   ([`filters`]) and entity rows live in the same file.
//! * [`postgres`]: a PostgreSQL log several hub nodes can share, with their subscriptions,
//!   API keys, saved filters and a cluster-wide [`postgres::Lease`] for work that must run
//!   on one node at a time.
//! * Both logs also implement [`crier_core::entity::EntityStore`]: entity rows live next to
//!   the events, and a change is written in the same transaction as its events.
//! * [`subs`]: webhook subscriptions and their delivery records in the SQLite file (the
//!   contract is [`crier_core::webhook`]). In a hub the SQLite side tables write through the
//!   log's writer thread, so nothing else writes to the file.
//! * `conformance`: the suites every implementation must pass, run by each backend's tests;
//!   the `conformance` feature, which only this crate's dev-dependencies turn on.
//!
//! PostgreSQL (the log, its tables and the lease) is the `postgres` feature, on by default;
//! without it the crate is SQLite alone.
#![deny(missing_docs)]

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
mod group_commit;
#[cfg(feature = "postgres")]
pub mod postgres;
mod rows;
mod scan;
pub mod sqlite;
pub mod subs;

/// The saved-filter contract ([`filters::FilterStore`]) and its SQLite table.
pub use sqlite::filters;
/// Key secrets and hashing, and the SQLite key table.
pub use sqlite::keys;

#[cfg(feature = "postgres")]
pub use postgres::{Lease, PgFilters, PgKeys, PgSubs, PostgresLog};
pub use sqlite::{Durability, SqliteFilters, SqliteKeys, SqliteLog};
pub use subs::SqliteSubs;

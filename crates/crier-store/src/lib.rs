//! crier-store: implementations of [`crier_core::EventLog`].
//!
//! * [`sqlite`]: the embedded default, one file under `data_dir`, with a single writer
//!   thread doing group commit.
//! * [`conformance`]: the suite every implementation must pass, run by each backend's tests.
#![deny(missing_docs)]

pub mod conformance;
pub mod sqlite;

pub use sqlite::{Durability, SqliteLog};

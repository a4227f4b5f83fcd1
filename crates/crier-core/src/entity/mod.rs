//! Entities (§11): a small document store whose every change is an event.
//!
//! The rules live here, once, as a pure function: a store loads what a [`Mutation`] touches
//! ([`Loaded`]), calls [`plan`], and applies the returned [`Plan`] — row writes plus the
//! events that describe them — in the same transaction that appends those events to the
//! log. So no backend can write a change without its event, or an event without its change,
//! and SQLite and PostgreSQL cannot disagree on versions, `changed` lists or link cascades.
//!
//! Versions start at 1 and grow by one per change. A deleted entity leaves a tombstone that
//! keeps its version, so re-creating it continues the count: a client holding version 3 of a
//! deleted entity can never match a different entity's version 3 (`If-Match` stays sound).
//!
//! `model.rs` holds the types, `plan.rs` the rules, `patch.rs` merge-patch and changed
//! fields, `store.rs` the store trait.

mod model;
mod patch;
mod plan;
mod store;
#[cfg(test)]
mod tests;

pub use model::*;
pub use patch::{changed_fields, merge_patch};
pub use plan::plan;
pub use store::{EntityStore, LinkQuery};

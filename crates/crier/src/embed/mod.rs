//! The pieces of the embedding API, re-exported at the crate root.

pub mod error;
pub mod event;
pub mod subscription;

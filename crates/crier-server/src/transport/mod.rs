//! The small toolkit every transport shares (HTTP handlers, SSE, `/v1/ws`, GraphQL, Pusher),
//! so that no transport module has to import another.
//!
//! What lives here is about the wire, not about the hub's rules (those are in
//! [`crate::service`]): the Origin rule of upgrades, when a credential ends, where a stream
//! starts, how a `Content-Type` is read, and the headers of an event-stream answer.

pub mod close;
pub mod content_type;
pub mod expiry;
pub mod origin;
pub mod position;
pub mod sse_headers;

pub use content_type::essence;
pub use expiry::expiry_instant;
pub use origin::check_origin;
pub use position::{start_position, MAX_LAST};
pub use sse_headers::event_stream;

//! crier-cluster: fan-out between hub nodes that share one log.
//!
//! The log (PostgreSQL) is the truth; brokers only carry *signals*. After a node commits, it
//! announces the log's new head through a [`Broker`]; every node's [`Follower`] then reads
//! the log from its own published head up to the announced one and hands the events, in seq
//! order, to its hub. Because a follower always reads from the log starting at what it has
//! already delivered, a lost, late or reordered announcement cannot make it skip or repeat an
//! event: a jump in seq is repaired by the read itself. A follower also polls the log on a
//! timer — slowly while the broker is healthy, quickly while it is not — so a broker outage
//! degrades to polling and delivery goes on.
//!
//! Brokers: [`broker::LocalBroker`] (in-process), [`nats::NatsBroker`] (`async-nats`) and
//! [`redis::RedisBroker`] (Redis pub/sub). Brokers also carry [`presence`] signals, so
//! Pusher presence members are the same on every node. [`suite`] is the fan-out suite every broker runs.
//! The NATS and Redis brokers are the `nats` and `redis` features, on by default.
#![deny(missing_docs)]

pub mod broker;
pub mod follower;
#[cfg(feature = "nats")]
pub mod nats;
pub mod presence;
#[cfg(feature = "redis")]
pub mod redis;
pub mod suite;

pub use broker::{Announcement, Broker, BrokerError, LocalBroker, Signals};
pub use follower::{Follower, FollowerConfig};

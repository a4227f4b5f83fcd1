//! The [`Broker`] contract and the in-process broker.

use std::pin::Pin;

use crier_core::log::BoxFuture;
use futures_util::Stream;
use tokio::sync::broadcast;

/// "The log's head is now at least `head`", from node `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announcement {
    /// The announcing node.
    pub node: String,
    /// The head after its commit.
    pub head: u64,
}

impl Announcement {
    /// Wire form: `{"node": "...", "head": N}`.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::json!({"node": self.node, "head": self.head})
            .to_string()
            .into_bytes()
    }

    /// Parses the wire form; `None` for anything else (ignored by followers).
    pub fn decode(bytes: &[u8]) -> Option<Announcement> {
        let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
        Some(Announcement {
            node: v.get("node")?.as_str()?.to_string(),
            head: v.get("head")?.as_u64()?,
        })
    }
}

/// A stream of announcements; it ends when the broker connection is lost.
pub type Announcements = Pin<Box<dyn Stream<Item = Announcement> + Send>>;

/// A stream of raw presence signals (see [`crate::presence`]); it ends when the broker
/// connection is lost. Payloads come from other nodes: decode them as untrusted input.
pub type Signals = Pin<Box<dyn Stream<Item = Vec<u8>> + Send>>;

/// Broker failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The broker is unreachable or refused the operation.
    #[error("broker error: {0}")]
    Unavailable(String),
}

/// Carries head announcements between nodes.
pub trait Broker: Send + Sync + 'static {
    /// `local`, `nats` or `redis`.
    fn name(&self) -> &'static str;

    /// Publishes an announcement to every node (the sender's own subscription included).
    fn announce(&self, a: Announcement) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Subscribes to announcements. The stream ends when the connection is lost; subscribe
    /// again (with backoff) to resume.
    fn subscribe(&self) -> BoxFuture<'_, Result<Announcements, BrokerError>>;

    /// Publishes a presence signal to every node (the sender's own subscription included),
    /// on a topic of its own next to the announcements. Brokers that carry no presence
    /// refuse.
    fn signal(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<(), BrokerError>> {
        drop(payload);
        Box::pin(async {
            Err(BrokerError::Unavailable(
                "this broker carries no presence".into(),
            ))
        })
    }

    /// Subscribes to presence signals. Like [`Broker::subscribe`], the stream ends when the
    /// connection is lost.
    fn signals(&self) -> BoxFuture<'_, Result<Signals, BrokerError>> {
        Box::pin(async {
            Err(BrokerError::Unavailable(
                "this broker carries no presence".into(),
            ))
        })
    }

    /// Whether the connection is up right now (clients that reconnect by themselves keep
    /// their streams open while down; followers poll faster meanwhile).
    fn connected(&self) -> bool {
        true
    }
}

/// In-process broker: nodes in one process (tests, embedding) share a broadcast channel.
#[derive(Clone)]
pub struct LocalBroker {
    tx: broadcast::Sender<Announcement>,
    signals: broadcast::Sender<Vec<u8>>,
}

impl Default for LocalBroker {
    fn default() -> Self {
        // Lagging receivers skip announcements; followers repair from the log.
        LocalBroker {
            tx: broadcast::channel(256).0,
            // Lagging presence receivers see a gap in seq and ask for the sender's state.
            signals: broadcast::channel(1024).0,
        }
    }
}

/// What `rx` receives, as a stream: a lagging receiver skips what it missed, and the
/// stream ends when the channel closes.
fn received<T: Clone + Send + 'static>(rx: broadcast::Receiver<T>) -> impl Stream<Item = T> {
    futures_util::stream::unfold(rx, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(v) => return Some((v, rx)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}

impl Broker for LocalBroker {
    fn name(&self) -> &'static str {
        "local"
    }

    fn announce(&self, a: Announcement) -> BoxFuture<'_, Result<(), BrokerError>> {
        // No receiver is not an error: nobody is listening yet.
        let _ = self.tx.send(a);
        Box::pin(async { Ok(()) })
    }

    fn subscribe(&self) -> BoxFuture<'_, Result<Announcements, BrokerError>> {
        let s = received(self.tx.subscribe());
        Box::pin(async move { Ok(Box::pin(s) as Announcements) })
    }

    fn signal(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<(), BrokerError>> {
        let _ = self.signals.send(payload);
        Box::pin(async { Ok(()) })
    }

    fn signals(&self) -> BoxFuture<'_, Result<Signals, BrokerError>> {
        let s = received(self.signals.subscribe());
        Box::pin(async move { Ok(Box::pin(s) as Signals) })
    }
}

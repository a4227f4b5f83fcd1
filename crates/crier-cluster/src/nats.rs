//! NATS broker (`broker = "nats://..."`): core NATS publish/subscribe on one subject.
//! `async-nats` reconnects by itself and restores subscriptions; while it is disconnected
//! the followers poll the log. Presence signals travel on `<subject>.presence`.

use crier_core::log::BoxFuture;
use futures_util::StreamExt;

use crate::broker::{Announcement, Announcements, Broker, BrokerError, Signals};

/// Announcements over a NATS subject.
pub struct NatsBroker {
    client: async_nats::Client,
    subject: String,
    presence: String,
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

impl NatsBroker {
    /// Connects to `url`; announcements travel on `subject` (e.g. `crier.head`).
    pub async fn connect(url: &str, subject: &str) -> Result<NatsBroker, BrokerError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(std::time::Duration::from_secs(5))
            .connect(url)
            .await
            .map_err(unavailable)?;
        Ok(NatsBroker {
            client,
            subject: subject.to_string(),
            presence: format!("{subject}.presence"),
        })
    }
}

impl NatsBroker {
    /// Publishes `payload` on `subject` and flushes; refused at once while disconnected.
    async fn publish(&self, subject: &str, payload: Vec<u8>) -> Result<(), BrokerError> {
        if !self.connected() {
            return Err(BrokerError::Unavailable("not connected to NATS".into()));
        }
        self.client
            .publish(subject.to_string(), payload.into())
            .await
            .map_err(unavailable)?;
        self.client.flush().await.map_err(unavailable)
    }

    /// The messages on `subject` from now on.
    async fn messages(&self, subject: &str) -> Result<async_nats::Subscriber, BrokerError> {
        let subject = subject.to_string();
        self.client.subscribe(subject).await.map_err(unavailable)
    }
}

impl Broker for NatsBroker {
    fn name(&self) -> &'static str {
        "nats"
    }

    fn announce(&self, a: Announcement) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(self.publish(&self.subject, a.encode()))
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    fn subscribe(&self) -> BoxFuture<'_, Result<Announcements, BrokerError>> {
        Box::pin(async move {
            let sub = self.messages(&self.subject).await?;
            let s = sub.filter_map(|m| async move { Announcement::decode(&m.payload) });
            Ok(Box::pin(s) as Announcements)
        })
    }

    fn signal(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(self.publish(&self.presence, payload))
    }

    fn signals(&self) -> BoxFuture<'_, Result<Signals, BrokerError>> {
        Box::pin(async move {
            let sub = self.messages(&self.presence).await?;
            let s = sub.map(|m| m.payload.to_vec());
            Ok(Box::pin(s) as Signals)
        })
    }
}

//! NATS broker (`broker = "nats://..."`): core NATS publish/subscribe on one subject.
//! `async-nats` reconnects by itself and restores subscriptions; while it is disconnected
//! the followers poll the log. Presence signals travel on `<subject>.presence`.

use crier_core::log::BoxFuture;
use futures_util::{Stream, StreamExt};

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

    /// The payloads published on `subject` from now on.
    async fn payloads(&self, subject: &str) -> Result<impl Stream<Item = Vec<u8>>, BrokerError> {
        let subject = subject.to_string();
        let sub = self.client.subscribe(subject).await.map_err(unavailable)?;
        Ok(sub.map(|m| m.payload.to_vec()))
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
            let payloads = self.payloads(&self.subject).await?;
            let s = payloads.filter_map(|p| async move { Announcement::decode(&p) });
            Ok(Box::pin(s) as Announcements)
        })
    }

    fn signal(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(self.publish(&self.presence, payload))
    }

    fn signals(&self) -> BoxFuture<'_, Result<Signals, BrokerError>> {
        Box::pin(async move {
            let payloads = self.payloads(&self.presence).await;
            payloads.map(|s| Box::pin(s) as Signals)
        })
    }
}

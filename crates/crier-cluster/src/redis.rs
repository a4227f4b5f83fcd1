//! Redis broker (`broker = "redis://..."`): `PUBLISH`/`SUBSCRIBE` on one channel. A lost
//! subscription connection ends the announcement stream; the follower subscribes again with
//! backoff and polls the log meanwhile. Presence signals travel on `<channel>.presence`.

use crier_core::log::BoxFuture;
use futures_util::StreamExt;
use tokio::sync::Mutex;

use crate::broker::{Announcement, Announcements, Broker, BrokerError, Signals};

/// Announcements over a Redis pub/sub channel.
pub struct RedisBroker {
    client: ::redis::Client,
    channel: String,
    presence: String,
    conn: Mutex<Option<::redis::aio::MultiplexedConnection>>,
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

impl RedisBroker {
    /// Prepares a broker for `url`; connections are made on use (and remade after failures).
    pub fn new(url: &str, channel: &str) -> Result<RedisBroker, BrokerError> {
        let client = ::redis::Client::open(url).map_err(unavailable)?;
        Ok(RedisBroker {
            client,
            channel: channel.to_string(),
            presence: format!("{channel}.presence"),
            conn: Mutex::new(None),
        })
    }
}

impl RedisBroker {
    /// `PUBLISH`es on the shared command connection, made on first use and remade after a
    /// failure.
    async fn publish(&self, channel: &str, payload: Vec<u8>) -> Result<(), BrokerError> {
        // A tokio Mutex: the connection is used across the await of the command.
        let mut guard = self.conn.lock().await;
        if guard.is_none() {
            let c = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                self.client.get_multiplexed_async_connection(),
            )
            .await
            .map_err(|_| BrokerError::Unavailable("timed out connecting to Redis".into()))?
            .map_err(unavailable)?;
            *guard = Some(c);
        }
        let Some(conn) = guard.as_mut() else {
            return Err(BrokerError::Unavailable("no connection".into()));
        };
        let sent: Result<i64, _> = ::redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(conn)
            .await;
        if let Err(e) = sent {
            *guard = None;
            return Err(unavailable(e));
        }
        Ok(())
    }

    async fn pubsub(&self, channel: &str) -> Result<::redis::aio::PubSub, BrokerError> {
        let mut pubsub = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            self.client.get_async_pubsub(),
        )
        .await
        .map_err(|_| BrokerError::Unavailable("timed out connecting to Redis".into()))?
        .map_err(unavailable)?;
        pubsub.subscribe(channel).await.map_err(unavailable)?;
        Ok(pubsub)
    }
}

impl Broker for RedisBroker {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn announce(&self, a: Announcement) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(self.publish(&self.channel, a.encode()))
    }

    fn subscribe(&self) -> BoxFuture<'_, Result<Announcements, BrokerError>> {
        Box::pin(async move {
            let pubsub = self.pubsub(&self.channel).await?;
            let s = pubsub
                .into_on_message()
                .filter_map(|m| async move { Announcement::decode(m.get_payload_bytes()) });
            Ok(Box::pin(s) as Announcements)
        })
    }

    fn signal(&self, payload: Vec<u8>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(self.publish(&self.presence, payload))
    }

    fn signals(&self) -> BoxFuture<'_, Result<Signals, BrokerError>> {
        Box::pin(async move {
            let pubsub = self.pubsub(&self.presence).await?;
            let s = pubsub
                .into_on_message()
                .map(|m| m.get_payload_bytes().to_vec());
            Ok(Box::pin(s) as Signals)
        })
    }
}

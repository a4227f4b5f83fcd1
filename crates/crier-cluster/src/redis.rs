//! Redis broker (`broker = "redis://..."`): `PUBLISH`/`SUBSCRIBE` on one channel. A lost
//! subscription connection ends the announcement stream; the follower subscribes again with
//! backoff and polls the log meanwhile.

use crier_core::log::BoxFuture;
use futures_util::StreamExt;
use tokio::sync::Mutex;

use crate::broker::{Announcement, Announcements, Broker, BrokerError};

/// Announcements over a Redis pub/sub channel.
pub struct RedisBroker {
    client: ::redis::Client,
    channel: String,
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
            conn: Mutex::new(None),
        })
    }
}

impl Broker for RedisBroker {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn announce(&self, a: Announcement) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
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
                .arg(&self.channel)
                .arg(a.encode())
                .query_async(conn)
                .await;
            if let Err(e) = sent {
                *guard = None;
                return Err(unavailable(e));
            }
            Ok(())
        })
    }

    fn subscribe(&self) -> BoxFuture<'_, Result<Announcements, BrokerError>> {
        Box::pin(async move {
            let mut pubsub = tokio::time::timeout(
                std::time::Duration::from_secs(2),
                self.client.get_async_pubsub(),
            )
            .await
            .map_err(|_| BrokerError::Unavailable("timed out connecting to Redis".into()))?
            .map_err(unavailable)?;
            pubsub.subscribe(&self.channel).await.map_err(unavailable)?;
            let s = pubsub
                .into_on_message()
                .filter_map(|m| async move { Announcement::decode(m.get_payload_bytes()) });
            Ok(Box::pin(s) as Announcements)
        })
    }
}

//! A WebSocket client of the hub's `/v1/ws` protocol: JSON frames, subscriptions and the
//! seqs they deliver, each wait bounded.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::WAIT;

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn send(&mut self, v: Value) {
        self.stream
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("ws send");
    }

    pub async fn send_text(&mut self, s: &str) {
        self.stream
            .send(Message::Text(s.to_string().into()))
            .await
            .expect("ws send");
    }

    /// The next JSON message (skipping pings), within the wait.
    pub async fn recv(&mut self) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                match self
                    .stream
                    .next()
                    .await
                    .expect("ws open")
                    .expect("ws frame")
                {
                    Message::Text(t) => return serde_json::from_str(&t).expect("json frame"),
                    Message::Close(c) => panic!("closed: {c:?}"),
                    _ => continue,
                }
            }
        })
        .await
        .expect("ws message within the wait")
    }

    pub async fn subscribe(&mut self, id: &str, filter: Value, after: Option<u64>) -> Value {
        let mut m = json!({"op": "subscribe", "id": id, "filter": filter});
        if let Some(a) = after {
            m["after"] = a.into();
        }
        self.send(m).await;
        let r = self.recv().await;
        assert_eq!(r["op"], "subscribed", "{r}");
        r
    }

    /// Collects `n` event seqs of subscription `sub`.
    pub async fn seqs(&mut self, sub: &str, n: usize) -> Vec<u64> {
        let mut out = Vec::new();
        while out.len() < n {
            let m = self.recv().await;
            assert_eq!(m["op"], "event", "{m}");
            assert_eq!(m["sub"], sub);
            out.push(m["event"]["seq"].as_u64().expect("seq"));
        }
        out
    }
}

//! A `graphql-transport-ws` client of the hub's `/graphql` socket: opened with the
//! subprotocol (which the hub must choose), initialised with a payload, and read with pings
//! answered.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::{Hub, WAIT};

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens `/graphql` and sends `connection_init` with `payload`.
pub async fn open_with(hub: &Hub, payload: Value) -> Socket {
    let mut req = format!("ws://{}/graphql", hub.addr)
        .into_client_request()
        .expect("request");
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut ws, res) = tokio_tungstenite::connect_async(req)
        .await
        .expect("graphql connect");
    assert_eq!(
        res.headers()["sec-websocket-protocol"],
        "graphql-transport-ws"
    );
    ws.send(Message::text(
        json!({"type": "connection_init", "payload": payload}).to_string(),
    ))
    .await
    .expect("init");
    ws
}

/// Opens `/graphql` and sends `connection_init` with `token`.
pub async fn open(hub: &Hub, token: &str) -> Socket {
    open_with(hub, json!({"token": token})).await
}

/// The next message (answering pings); a close as `{"closed": code, "reason": ...}`.
pub async fn recv(ws: &mut Socket) -> Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a message in time");
        match m {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).expect("json");
                if v["type"] == "ping" {
                    let _ = ws.send(Message::text(r#"{"type":"pong"}"#)).await;
                    continue;
                }
                return v;
            }
            Some(Ok(Message::Close(f))) => {
                return json!({
                    "closed": f.as_ref().map(|f| u16::from(f.code)),
                    "reason": f.map(|f| f.reason.to_string()),
                })
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => return json!({"error": e.to_string()}),
            None => return json!({"closed": null}),
        }
    }
}

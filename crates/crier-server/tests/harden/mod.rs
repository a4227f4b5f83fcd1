//! Helpers of the §12 hardening tests: a hub with HS256 credentials, tokens with narrowing
//! patterns, plain requests, a loopback webhook receiver and a GraphQL WebSocket client.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crier_testkit::{Hub, WAIT};
use jsonwebtoken::Header;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

pub const SECRET: &str = "test-secret-of-at-least-32-characters!!";

/// A token of tenant `acme` with `role` and, when given, `subscribe` patterns.
pub fn token(sub: &str, role: &str, subscribe: Option<&[&str]>) -> String {
    crier_testkit::auth::token(SECRET, sub, "acme", role, subscribe)
}

pub fn sign(header: &Header, claims: &Value) -> String {
    crier_testkit::auth::sign(SECRET, header, claims)
}

pub fn with_auth(s: &mut crier_server::Settings) {
    crier_testkit::auth::with_hs256(s, SECRET);
}

/// A hub with HS256 credentials; `tweak` adjusts the rest.
pub async fn hub_with(tweak: impl FnOnce(&mut crier_server::Settings)) -> Hub {
    Hub::start_with(|s| {
        with_auth(s);
        tweak(s);
    })
    .await
}

/// A request with a bearer token and a JSON (or raw) body: status, JSON answer, raw text.
pub async fn call(
    hub: &Hub,
    method: &str,
    path: &str,
    token: &str,
    body: Option<(&str, String)>,
) -> (u16, Value, String) {
    let mut r = hub
        .http
        .request(method.parse().expect("method"), hub.url(path))
        .bearer_auth(token);
    if let Some((ct, b)) = body {
        r = r.header("content-type", ct).body(b);
    }
    let res = r.send().await.expect("request");
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    )
}

/// A request with a bearer token and a JSON body: status, JSON answer, raw text.
pub async fn json_call(
    hub: &Hub,
    method: &str,
    path: &str,
    token: &str,
    body: Value,
) -> (u16, Value, String) {
    let body = Some(("application/json", body.to_string()));
    call(hub, method, path, token, body).await
}

pub async fn post_json(hub: &Hub, path: &str, token: &str, body: Value) -> (u16, Value, String) {
    json_call(hub, "POST", path, token, body).await
}

/// A webhook receiver on loopback recording every body it gets, per path.
#[derive(Clone, Default)]
pub struct Receiver {
    pub got: Arc<Mutex<Vec<(String, String)>>>,
    pub base: String,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let app = axum::Router::new().route(
            "/{path}",
            axum::routing::post({
                let got = got.clone();
                move |axum::extract::Path(p): axum::extract::Path<String>, body: String| {
                    let got = got.clone();
                    async move {
                        got.lock().expect("lock").push((p, body));
                        axum::http::StatusCode::OK
                    }
                }
            }),
        );
        let base = format!("http://{}", crier_testkit::hooks::serve(app).await);
        Receiver { got, base }
    }

    /// The receiver's URL for `/{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base)
    }

    /// The bodies posted to `/{path}`.
    pub fn bodies(&self, path: &str) -> Vec<String> {
        self.got
            .lock()
            .expect("lock")
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b.clone())
            .collect()
    }

    /// Waits until `/{path}` got an event of type `ty`.
    pub async fn wait_for(&self, path: &str, ty: &str) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let b = self.bodies(path);
            if b.iter().any(|x| x.contains(&format!("\"type\":\"{ty}\""))) {
                return b;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "/{path} never got {ty}: {b:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub use crier_testkit::graphql::Socket;

/// A `graphql-transport-ws` socket that sent `connection_init` with `token`.
pub async fn gql_ws(hub: &Hub, token: &str) -> Socket {
    crier_testkit::graphql::open(hub, token).await
}

pub use crier_testkit::graphql::recv as gql_recv;

/// A `graphql-transport-ws` socket of `token`, acknowledged, that subscribed (as `"1"`) with
/// `query`.
pub async fn gql_subscribe(hub: &Hub, token: &str, query: &str) -> Socket {
    use futures_util::SinkExt;
    let mut g = gql_ws(hub, token).await;
    assert_eq!(gql_recv(&mut g).await["type"], "connection_ack");
    let sub = json!({"id": "1", "type": "subscribe", "payload": {"query": query}});
    g.send(Message::text(sub.to_string())).await.expect("send");
    g
}

/// Sends `frame` on `w` and checks that the answer is an error with `code`.
pub async fn ws_refused(w: &mut crier_testkit::Ws, frame: Value, code: &str) {
    w.send(frame).await;
    let m = w.recv().await;
    assert_eq!(
        (&m["op"], &m["code"]),
        (&json!("error"), &json!(code)),
        "{m}"
    );
}

/// A `/v1/ws` socket authenticated by `?token=`.
pub async fn ws(hub: &Hub, token: &str) -> crier_testkit::Ws {
    let (stream, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?token={token}", hub.addr))
            .await
            .expect("ws connect");
    let mut ws = crier_testkit::Ws { stream };
    assert_eq!(ws.recv().await["op"], "welcome");
    ws
}

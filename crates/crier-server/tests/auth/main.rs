//! Credentials, roles and tenant isolation (§6, §9) over real sockets: `credentials` for
//! what is refused and which keys are accepted, `roles` for what each role and tenant may
//! do, `lifetimes` for expiry and revocation of open streams, `limits` for rate,
//! connection and origin limits.

mod credentials;
mod lifetimes;
mod limits;
mod roles;

use std::path::Path;

use crier_testkit::http::{send, Answer};
use crier_testkit::{Hub, Ws};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::Value;

const SECRET: &str = "test-secret-of-at-least-32-characters!!";

fn keys_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys"))
}

/// Claims valid for ten minutes.
fn claims(sub: &str, tenant: &str, role: &str) -> Value {
    crier_testkit::auth::claims(sub, tenant, role)
}

/// HS256 over the hub's secret.
fn hs(c: &Value) -> String {
    crier_testkit::auth::hs256(SECRET, c)
}

/// Signs with the test key pair of `alg` (RSA, EC or Ed25519), with `kid` in the header.
fn sign(alg: Algorithm, kid: Option<&str>, c: &Value) -> String {
    let pem = std::fs::read(keys_dir().join(match alg {
        Algorithm::RS256 => "rsa.key",
        Algorithm::ES256 => "ec.key",
        _ => "ed.key",
    }))
    .expect("key file");
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .expect("key");
    let mut h = Header::new(alg);
    h.kid = kid.map(String::from);
    jsonwebtoken::encode(&h, c, &key).expect("sign")
}

/// A hub checking HS256 credentials over [`SECRET`].
async fn hs_hub() -> Hub {
    hs_hub_with(|_| {}).await
}

/// A hub checking HS256 credentials over [`SECRET`], its settings then changed by `tweak`.
async fn hs_hub_with(tweak: impl FnOnce(&mut crier_server::Settings)) -> Hub {
    Hub::start_with(|s| {
        crier_testkit::auth::with_hs256(s, SECRET);
        tweak(s);
    })
    .await
}

/// One request with an optional credential and JSON body.
async fn req(
    hub: &Hub,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Answer {
    let body = body.map(|b| b.to_string());
    send(hub, method, path, "", body.as_deref(), token.unwrap_or("")).await
}

/// A WebSocket with `token` in the query, or the status of the refused upgrade.
async fn ws_connect(hub: &Hub, token: &str) -> Result<Ws, u16> {
    match tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?token={token}", hub.addr)).await {
        Ok((stream, _)) => {
            let mut ws = Ws { stream };
            assert_eq!(ws.recv().await["op"], "welcome");
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("ws connect: {e}"),
    }
}

/// Waits for the close frame of `ws` and returns its code.
async fn close_code(ws: &mut Ws, within: std::time::Duration, what: &str) -> u16 {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    tokio::time::timeout(within, async {
        loop {
            match ws.stream.next().await {
                Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                Some(Ok(_)) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect(what)
}

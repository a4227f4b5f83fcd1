//! `[tls] cert`/`key`: a self-signed certificate made in the test, real TLS handshakes, an
//! HTTPS publish, an SSE stream and a wss subscription on the one listen address; plus what
//! an attacker tries: plaintext, garbage and stalled handshakes.

use std::sync::Arc;

use crier_server::Config;
use crier_testkit::checks::{answered, status_json};
use crier_testkit::{Hub, Sse, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;

struct Pki {
    cert_pem: String,
    _dir: tempfile::TempDir,
    cert_file: std::path::PathBuf,
    key_file: std::path::PathBuf,
}

fn self_signed() -> Pki {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let cert_pem = ck.cert.pem();
    let key_pem = ck.signing_key.serialize_pem();
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_file = dir.path().join("cert.pem");
    let key_file = dir.path().join("key.pem");
    std::fs::write(&cert_file, &cert_pem).expect("write cert");
    std::fs::write(&key_file, key_pem).expect("write key");
    Pki {
        cert_pem,
        _dir: dir,
        cert_file,
        key_file,
    }
}

/// A hub whose TLS settings come from the `[tls]` keys, as `crier serve` reads them.
async fn tls_hub(pki: &Pki) -> Hub {
    let config = Config {
        tls: crier_server::config::TlsConfig {
            cert: pki.cert_file.display().to_string(),
            key: pki.key_file.display().to_string(),
        },
        ..Config::default()
    };
    let tls = config.validate().expect("valid TLS config").tls;
    assert!(tls.is_some());
    Hub::start_with(move |s| s.tls = tls).await
}

fn https_client(pki: &Pki, hub: &Hub) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(pki.cert_pem.as_bytes()).expect("certificate"),
        )
        .resolve("localhost", hub.addr)
        .build()
        .expect("client")
}

fn url(hub: &Hub, path: &str) -> String {
    format!("https://localhost:{}{path}", hub.addr.port())
}

fn client_config(pki: &Pki) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.cert_pem.as_bytes()).expect("cert"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

async fn tls_connect(
    pki: &Pki,
    hub: &Hub,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connect");
    let connector = tokio_rustls::TlsConnector::from(client_config(pki));
    let name = ServerName::try_from("localhost").expect("name");
    tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("TLS handshake")
}

#[tokio::test]
async fn https_sse_and_wss_on_the_listen_address() {
    let pki = self_signed();
    let hub = tls_hub(&pki).await;
    let http = https_client(&pki, &hub);

    // A real handshake that verifies the certificate against the generated root; the hub
    // picks HTTP/1.1 (which WebSocket upgrades need) over h2.
    let stream = tls_connect(&pki, &hub).await;
    let (_, conn) = stream.get_ref();
    assert_eq!(conn.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(stream);

    // An SSE stream over TLS, opened before the publish: it sees it live.
    let res = answered(http.get(url(&hub, "/v1/stream?type=tls.*")), 200).await;
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut sse = Sse::from_response(res);

    // A wss subscription.
    let tls = tls_connect(&pki, &hub).await;
    let ws_url = format!("wss://localhost:{}/v1/ws", hub.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(ws_url, tls)
        .await
        .expect("wss upgrade");
    let welcome = recv(&mut ws).await;
    assert_eq!(welcome["op"], "welcome", "{welcome}");
    send(
        &mut ws,
        json!({"op": "subscribe", "id": "s1", "filter": {"type": ["tls.*"]}}),
    )
    .await;
    let subscribed = recv(&mut ws).await;
    assert_eq!(subscribed["op"], "subscribed", "{subscribed}");

    // Publish over HTTPS.
    let res = http
        .post(url(&hub, "/v1/events"))
        .header("content-type", "application/json")
        .body(r#"{"type":"tls.published","data":{"over":"https"}}"#)
        .send()
        .await
        .expect("POST over https");
    assert_eq!(res.status().as_u16(), 201);
    let answer: Value = res.json().await.expect("json");
    let seq = answer["events"][0]["seq"].as_u64().expect("seq");

    let m = sse.next().await.expect("SSE event over TLS");
    assert_eq!(m.id, Some(seq));
    assert_eq!(m.json()["data"]["over"], "https");

    let ev = recv(&mut ws).await;
    assert_eq!(ev["op"], "event", "{ev}");
    assert_eq!(ev["event"]["seq"].as_u64(), Some(seq));

    // Publishing over wss reaches the SSE reader.
    send(
        &mut ws,
        json!({"op": "publish", "ref": "r1", "event": {"type": "tls.from_ws"}}),
    )
    .await;
    let mut published = None;
    let mut echoed = false;
    while published.is_none() || !echoed {
        let m = recv(&mut ws).await;
        match m["op"].as_str() {
            Some("published") => published = m["seq"].as_u64(),
            Some("event") if m["event"]["type"] == "tls.from_ws" => echoed = true,
            _ => panic!("unexpected {m}"),
        }
    }
    let m = sse.next().await.expect("second SSE event");
    assert_eq!(m.id, published);
    assert_eq!(m.event, "tls.from_ws");

    // History reads over HTTPS too.
    let (_, v) = status_json(http.get(url(&hub, "/v1/events?type=tls.*"))).await;
    assert_eq!(v["events"].as_array().map(Vec::len), Some(2), "{v}");
    hub.stop().await;
}

#[tokio::test]
async fn plaintext_garbage_and_stalled_handshakes_do_not_get_through() {
    let pki = self_signed();
    let hub = tls_hub(&pki).await;
    let http = https_client(&pki, &hub);

    // A client that opens a socket and never speaks holds no one else up.
    let _stalled = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connect");

    // Plain HTTP on the TLS port is not served: no HTTP answer comes back.
    let mut plain = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connect");
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .expect("write");
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, plain.read_to_end(&mut buf))
        .await
        .expect("the server closes a plaintext connection");
    let _ = read;
    assert!(!buf.starts_with(b"HTTP/"), "served plaintext: {buf:?}");

    // Random bytes instead of a ClientHello: closed too.
    let mut junk = tokio::net::TcpStream::connect(hub.addr)
        .await
        .expect("connect");
    junk.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2, 3])
        .await
        .expect("write");
    junk.write_all(&[0xAB; 4096]).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, junk.read_to_end(&mut buf))
        .await
        .expect("the server closes a garbage connection");

    // A client that does not trust the certificate fails its handshake.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", hub.addr)
        .build()
        .expect("client");
    assert!(untrusting.get(url(&hub, "/healthz")).send().await.is_err());

    // Meanwhile, with the stalled socket still open, a good client is served.
    answered(http.get(url(&hub, "/healthz")), 200).await;
    hub.stop().await;
}

#[test]
fn tls_keys_are_checked_at_start() {
    let pki = self_signed();
    let with = |cert: &str, key: &str| Config {
        tls: crier_server::config::TlsConfig {
            cert: cert.into(),
            key: key.into(),
        },
        ..Config::default()
    };
    let cert = pki.cert_file.display().to_string();
    let key = pki.key_file.display().to_string();
    assert_eq!(with(&cert, "").validate().unwrap_err().key, "tls.key");
    assert_eq!(with("", &key).validate().unwrap_err().key, "tls.cert");
    let e = with("/nonexistent/cert.pem", &key).validate().unwrap_err();
    assert_eq!(e.key, "tls.cert");
    assert!(e.message.contains("/nonexistent/cert.pem"), "{e}");
    // The key where the certificate belongs, and the other way round.
    assert_eq!(with(&key, &key).validate().unwrap_err().key, "tls.cert");
    assert_eq!(with(&cert, &cert).validate().unwrap_err().key, "tls.key");
    // A key that is not the certificate's.
    let other = self_signed();
    let other_key = other.key_file.display().to_string();
    let e = with(&cert, &other_key).validate().unwrap_err();
    assert_eq!(e.key, "tls.key", "{e}");
    assert!(with(&cert, &key).validate().expect("valid").tls.is_some());
}

type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

async fn send(ws: &mut WsStream, v: Value) {
    ws.send(Message::Text(v.to_string().into()))
        .await
        .expect("ws send");
}

async fn recv(ws: &mut WsStream) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await.expect("ws open").expect("ws frame") {
                Message::Text(t) => return serde_json::from_str(&t).expect("json frame"),
                Message::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    })
    .await
    .expect("ws message within the wait")
}

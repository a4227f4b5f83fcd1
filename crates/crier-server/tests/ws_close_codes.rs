//! §12.11 over raw sockets: a WebSocket client that breaks the protocol gets the close code
//! RFC 6455 names for the fault — 1009 for a message over twice `max_ws_frame_bytes`, 1007
//! for invalid UTF-8 in a text frame, 1002 for other violations (an unmasked client frame, a
//! reserved opcode, reserved bits) — on `/v1/ws` and on the GraphQL WebSocket alike; a
//! GraphQL socket that never sends `connection_init` is closed with 4408. A client's own close
//! frame is answered (the closing handshake completes) on `/v1/ws`, the GraphQL WebSocket and
//! a Pusher connection, and an oversized Pusher message gets 1009 as well. A hub shutting down
//! closes a subscribed `/v1/ws` socket with 1001. A client that floods pings and reads no
//! pong stops being read on every WebSocket, instead of growing the hub a pong per ping. Frames
//! a client sends in the same write as its handshake are read, in order.

use crier_testkit::checks::pusher_app;
use crier_testkit::{Hub, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const MAX_FRAME: usize = 1024;

/// The opening request of a WebSocket on `path` (with GraphQL's subprotocol on `/graphql`).
fn upgrade_request(hub: &Hub, path: &str) -> String {
    let protocol = if path == "/graphql" {
        "Sec-WebSocket-Protocol: graphql-transport-ws\r\n"
    } else {
        ""
    };
    format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{protocol}\r\n",
        hub.addr
    )
}

/// Opens a WebSocket by hand on `path`; for `/v1/ws` reads the welcome frame too.
async fn open(hub: &Hub, path: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let req = upgrade_request(hub, path);
    tcp.write_all(req.as_bytes()).await.expect("handshake");
    switched(&mut tcp).await;
    if path == "/v1/ws" {
        let (op, payload) = read_frame(&mut tcp).await.expect("welcome");
        assert_eq!(op, 1);
        assert!(String::from_utf8_lossy(&payload).contains("welcome"));
    }
    tcp
}

/// Reads the handshake's answer, which must be `101 Switching Protocols`.
async fn switched(tcp: &mut TcpStream) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        tcp.read_exact(&mut b).await.expect("handshake answer");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
}

/// A client frame: `first` is the FIN/RSV/opcode byte; masked unless told otherwise.
fn frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut f = vec![first];
    let m = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(m | n as u8),
        n if n <= 0xffff => {
            f.push(m | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(m | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        f.extend_from_slice(payload);
    }
    f
}

/// One server frame: opcode and payload (server frames are never masked).
async fn read_frame(tcp: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    tcp.read_exact(&mut h).await.ok()?;
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            tcp.read_exact(&mut b).await.ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            tcp.read_exact(&mut b).await.ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    tcp.read_exact(&mut payload).await.ok()?;
    Some((h[0] & 0x0f, payload))
}

/// Sends `bytes` and returns the close code the server answers with.
async fn close_code_after(tcp: &mut TcpStream, bytes: &[u8]) -> Option<u16> {
    // The server may close before reading all of an oversized frame.
    let _ = tcp.write_all(bytes).await;
    tokio::time::timeout(WAIT, async {
        loop {
            let (op, payload) = read_frame(tcp).await?;
            if op == 8 {
                return payload.get(..2).map(|c| u16::from_be_bytes([c[0], c[1]]));
            }
        }
    })
    .await
    .expect("the server closed in time")
}

#[tokio::test]
async fn protocol_faults_close_with_their_codes_on_both_websockets() {
    let hub = Hub::start_with(|s| s.limits.max_ws_frame_bytes = MAX_FRAME).await;
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        (
            "a message over twice max_ws_frame_bytes",
            frame(0x81, &vec![b' '; 2 * MAX_FRAME + 100], true),
            1009,
        ),
        (
            "invalid UTF-8 in a text frame",
            frame(0x81, &[b'"', 0xff, 0xfe, b'"'], true),
            1007,
        ),
        ("an unmasked client frame", frame(0x81, b"{}", false), 1002),
        ("a reserved opcode", frame(0x83, b"{}", true), 1002),
        ("a reserved bit", frame(0xC1, b"{}", true), 1002),
    ];
    for path in ["/v1/ws", "/graphql"] {
        for (what, bytes, want) in &cases {
            let mut tcp = open(&hub, path).await;
            let code = close_code_after(&mut tcp, bytes).await;
            assert_eq!(code, Some(*want), "{path}: {what}");
        }
    }
    // A well-behaved client on the same hub is unaffected.
    let mut ws = hub.ws().await;
    ws.send(serde_json::json!({"op": "ping", "ref": 1})).await;
    assert_eq!(ws.recv().await["op"], "pong");
    // Each oversized message counts as a limit hit.
    let metrics = hub.text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("crier_limit_hits_total") && l.contains("max_ws_frame_bytes")),
        "{metrics}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn a_graphql_socket_without_connection_init_is_closed() {
    let hub =
        Hub::start_with(|s| s.limits.header_read_timeout = std::time::Duration::from_secs(1)).await;
    let mut tcp = open(&hub, "/graphql").await;
    let started = std::time::Instant::now();
    // Nothing is sent: the socket may not stay open unauthenticated.
    let code = close_code_after(&mut tcp, &[]).await;
    assert_eq!(code, Some(4408));
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    hub.stop().await;
}

/// A hub with one Pusher app, key `close-key`.
async fn hub_with_pusher() -> Hub {
    Hub::start_with(|s| {
        s.limits.max_ws_frame_bytes = MAX_FRAME;
        s.pusher = pusher_app("77", "close-key", "close-secret-of-some-length", "default");
    })
    .await
}

#[tokio::test]
async fn a_client_close_is_answered_on_every_websocket() {
    let hub = hub_with_pusher().await;
    let bye = frame(0x88, &1000u16.to_be_bytes(), true);
    for path in ["/v1/ws", "/graphql", "/app/close-key?protocol=7"] {
        let mut tcp = open(&hub, path).await;
        // Without the server's answer the client sees the connection drop (1006).
        let code = close_code_after(&mut tcp, &bye).await;
        assert_eq!(code, Some(1000), "{path}: the close frame is answered");
    }
    // Pusher messages are bounded too (twice the app's data limit, plus room for the frame).
    let mut tcp = open(&hub, "/app/close-key?protocol=7").await;
    let code = close_code_after(&mut tcp, &frame(0x81, &vec![b' '; 40_000], true)).await;
    assert_eq!(code, Some(1009), "an oversized Pusher message");
    hub.stop().await;
}

#[tokio::test]
async fn a_shutdown_closes_a_subscribed_websocket_with_1001() {
    let hub = Hub::start().await;
    let mut tcp = open(&hub, "/v1/ws").await;
    let sub = br#"{"op":"subscribe","id":"s","filter":{"type":["x.*"]}}"#;
    tcp.write_all(&frame(0x81, sub, true))
        .await
        .expect("subscribe");
    let (_, subscribed) = tokio::time::timeout(WAIT, read_frame(&mut tcp))
        .await
        .expect("an answer within the wait")
        .expect("an answer");
    assert!(String::from_utf8_lossy(&subscribed).contains("subscribed"));
    // The socket's writer, busy with its subscription, does not watch the shutdown itself:
    // the close frame must still come, with the code for "going away".
    hub.shutdown.cancel();
    let close = tokio::time::timeout(WAIT, async {
        loop {
            match read_frame(&mut tcp).await {
                Some((8, payload)) => return Some(payload),
                Some(_) => continue,
                None => return None,
            }
        }
    })
    .await
    .expect("a close frame within the wait")
    .expect("a close frame before the connection ends");
    assert_eq!(close.get(..2), Some(&1001u16.to_be_bytes()[..]));
    assert_eq!(&close[2..], b"server shutting down");
}

/// Bytes of pings a client sends before the test calls the server's reading unbounded.
const FLOOD: usize = 128 << 20;

/// Sends pings on `tcp`, reading nothing, until [`FLOOD`] bytes are out or `WAIT` passes;
/// returns the bytes sent.
async fn flood_pings(mut tcp: TcpStream) -> usize {
    let ping = frame(0x89, &[b'p'; 125], true).repeat(64);
    let mut sent = 0;
    let _ = tokio::time::timeout(WAIT, async {
        while sent < FLOOD {
            if tcp.write_all(&ping).await.is_err() {
                return;
            }
            sent += ping.len();
        }
    })
    .await;
    sent
}

/// A client that sends pings and never reads the pongs stops being read once what it has
/// not read fills the sockets: the library queues a pong per ping, and a server that kept
/// reading would hold them all (a gigabyte in seconds). The hub keeps serving others.
#[tokio::test]
async fn a_ping_flood_that_reads_nothing_stops_being_read_on_every_websocket() {
    let hub = hub_with_pusher().await;
    let paths = ["/v1/ws", "/graphql", "/app/close-key?protocol=7"];
    let mut floods = Vec::new();
    for path in paths {
        let tcp = open(&hub, path).await;
        floods.push(tokio::spawn(flood_pings(tcp)));
    }
    for (path, flood) in paths.iter().zip(floods) {
        let sent = flood.await.expect("the flood task");
        // The sockets' buffers on both sides hold a few MiB; nothing else may.
        assert!(sent < FLOOD, "{path}: {sent} bytes of pings were read");
    }
    let mut tcp = open(&hub, "/v1/ws").await;
    tcp.write_all(&frame(0x81, br#"{"op":"ping","ref":1}"#, true))
        .await
        .expect("a ping op");
    let (_, pong) = tokio::time::timeout(WAIT, read_frame(&mut tcp))
        .await
        .expect("an answer within the wait")
        .expect("an answer");
    assert!(String::from_utf8_lossy(&pong).contains("pong"));
    hub.stop().await;
}

/// A client may send its first frames in the same write as the handshake, before it has
/// the answer: the hub reads them once the connection is a WebSocket, in order, whichever
/// layer read them off the socket.
#[tokio::test]
async fn frames_sent_with_the_handshake_are_answered_in_order() {
    let hub = Hub::start().await;
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let mut bytes = upgrade_request(&hub, "/v1/ws").into_bytes();
    for r in 1..=3 {
        let op = format!(r#"{{"op":"ping","ref":{r}}}"#);
        bytes.extend(frame(0x81, op.as_bytes(), true));
    }
    tcp.write_all(&bytes).await.expect("handshake and frames");
    switched(&mut tcp).await;
    let mut ops = Vec::new();
    while ops.len() < 4 {
        let (op, payload) = tokio::time::timeout(WAIT, read_frame(&mut tcp))
            .await
            .expect("a frame in time")
            .expect("a frame");
        assert_eq!(op, 1, "text frames only");
        let v: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
        ops.push((v["op"].clone(), v["ref"].clone()));
    }
    assert_eq!(ops[0].0, "welcome");
    for (i, r) in (1..=3).enumerate() {
        assert_eq!(
            ops[i + 1],
            (serde_json::json!("pong"), serde_json::json!(r))
        );
    }
    hub.stop().await;
}

//! §12.4 over real sockets: connections that trickle their request head are closed after
//! `header_read_timeout` while `/healthz` stays responsive; beyond `max_connections` new
//! connections get 503 `too_many_connections` at once while open ones and `/healthz` keep
//! working; a `max_connections` that cannot fit in the open-file limit stops the start.

use std::time::{Duration, Instant};

use crier_testkit::checks::{call, read_answer};
use crier_testkit::{Hub, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one request on `tcp` and reads the answer's status line and body (the answer must
/// carry a Content-Length, as the hub's JSON answers do).
async fn request(tcp: &mut TcpStream, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let (status, _, body) = read_answer(tcp).await;
    (status, String::from_utf8_lossy(&body).into_owned())
}

async fn healthz_in_time(hub: &Hub) {
    let started = Instant::now();
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let (status, _) = tokio::time::timeout(Duration::from_secs(2), request(&mut tcp, "/healthz"))
        .await
        .expect("/healthz answers promptly");
    assert_eq!(status, 200);
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// Waits until the peer closes `tcp` (a read of 0 bytes or an error).
async fn closed(tcp: &mut TcpStream) {
    let mut b = [0u8; 512];
    loop {
        match tcp.read(&mut b).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_healthz_stays_responsive() {
    let hub = Hub::start_with(|s| s.limits.header_read_timeout = Duration::from_secs(1)).await;
    let mut attackers = Vec::new();
    for i in 0..300 {
        let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
        // A plain request, an event stream (served on a path of its own) and a request
        // whose first bytes look like a stream's until they don't.
        let start: &[u8] = match i % 4 {
            0 => b"",
            1 => b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\n",
            2 => b"GET /v1/stream HTTP/1.1\r\nHost: localhost\r\n",
            _ => b"GET /v1/replays",
        };
        tcp.write_all(start).await.expect("write");
        attackers.push(tcp);
    }
    let started = Instant::now();
    // Three quarters trickle a header line every 200 ms and never finish the head; a
    // quarter never send a byte. /healthz answers all along.
    let trickle = tokio::spawn(async move {
        let mut open = attackers;
        let mut done = Vec::new();
        while !open.is_empty() && started.elapsed() < WAIT {
            let mut still = Vec::new();
            for mut tcp in open {
                let mut probe = [0u8; 1];
                let gone = matches!(
                    tokio::time::timeout(Duration::from_millis(1), tcp.read(&mut probe)).await,
                    Ok(Ok(0) | Err(_))
                );
                if gone || tcp.write_all(b"X-Slow: 1\r\n").await.is_err() {
                    done.push(started.elapsed());
                } else {
                    still.push(tcp);
                }
            }
            open = still;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        (open.len(), done)
    });
    for _ in 0..5 {
        healthz_in_time(&hub).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (left, done) = trickle.await.expect("trickle task");
    assert_eq!(left, 0, "trickling connections still open after {WAIT:?}");
    assert_eq!(done.len(), 300);
    assert!(
        done.iter().all(|t| *t < Duration::from_secs(5)),
        "closed too late: {:?}",
        done.iter().max()
    );
    // A well-behaved client is served after the attack as before.
    let (status, _) = hub.get("/v1/events").await;
    assert_eq!(status, 200);
    let metrics = hub.text("/metrics").await;
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("crier_limit_hits_total") && l.contains("header_read_timeout")));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_connections_new_ones_are_refused_at_once() {
    let hub = Hub::start_with(|s| s.limits.max_connections = Some(20)).await;
    // Twenty open connections, each with a request answered and kept alive.
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
        let (status, _) = request(&mut tcp, "/healthz").await;
        assert_eq!(status, 200);
        held.push(tcp);
    }
    // A 21st: refused with a JSON answer at once.
    let mut extra = TcpStream::connect(hub.addr).await.expect("connect");
    let (status, body) =
        tokio::time::timeout(Duration::from_secs(2), request(&mut extra, "/v1/events"))
            .await
            .expect("refused at once");
    assert_eq!(status, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(v["error"]["code"], "too_many_connections", "{v}");
    closed(&mut extra).await;
    // /healthz still answers on a new connection, and open connections keep working.
    healthz_in_time(&hub).await;
    for tcp in held.iter_mut().take(3) {
        let (status, _) = request(tcp, "/v1/events").await;
        assert_eq!(status, 200);
    }
    // Closing some frees their slots.
    held.truncate(15);
    tokio::time::timeout(WAIT, async {
        loop {
            let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
            if request(&mut tcp, "/v1/events").await.0 == 200 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("a slot is free again");
    let metrics = hub
        .http
        .get(hub.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await;
    assert!(metrics.is_ok());
    hub.stop().await;
}

#[tokio::test]
async fn a_max_connections_beyond_the_open_file_limit_stops_the_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut s = crier_server::Settings::for_data_dir(dir.path());
    s.limits.max_connections = Some(usize::MAX / 2);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = crier_server::run(s, listener, tokio_util::sync::CancellationToken::new())
        .await
        .expect_err("refused to start");
    let msg = err.to_string();
    assert!(
        msg.contains("max_connections") && msg.contains("open-file limit"),
        "{msg}"
    );
}

/// Reads from `tcp` into `buf` until `pat` appears, returning the text read so far.
async fn read_until(tcp: &mut TcpStream, buf: &mut Vec<u8>, pat: &str) -> String {
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(buf).to_string();
        if text.contains(pat) {
            return text;
        }
        let n = tokio::time::timeout(WAIT, tcp.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {pat:?} within {WAIT:?}: {text}"))
            .expect("read");
        assert!(n > 0, "closed before {pat:?}: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Opens a connection, writes `req` on it and reads until `pat`: the connection, the buffer
/// read into and the text read so far.
async fn exchange(hub: &Hub, req: &[u8], pat: &str) -> (TcpStream, Vec<u8>, String) {
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    tcp.write_all(req).await.expect("write");
    let mut buf = Vec::new();
    let text = read_until(&mut tcp, &mut buf, pat).await;
    (tcp, buf, text)
}

/// How many SSE connections `/v1/connections` lists.
async fn sse_connections(hub: &Hub) -> u64 {
    let (status, v) = hub.get("/v1/connections?transport=sse").await;
    assert_eq!(status, 200, "{v}");
    v["total"].as_u64().expect("total")
}

/// An event stream that is the first request of its connection is served on the listener's
/// own lean path (no HTTP/1 buffers kept while it idles): it must still be a correct HTTP/1.1
/// response, deliver live events, end with its client, and refuse oversized heads.
#[tokio::test]
async fn event_streams_on_their_own_connection_are_served_and_end_with_their_client() {
    let hub = Hub::start().await;
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    // The head arrives in pieces, as a slow network delivers it.
    for piece in [
        "GET /v1/st",
        "ream?type=lean.* HTTP/1.1\r\nHost: local",
        "host\r\n\r\n",
    ] {
        tcp.write_all(piece.as_bytes()).await.expect("write");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut buf = Vec::new();
    let text = read_until(&mut tcp, &mut buf, "retry:").await;
    let head = text
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    // The body is delimited by the close: no chunk framing, no length.
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(!head.contains("content-length"), "{head}");
    for line in [
        "content-type: text/event-stream",
        "connection: close",
        "cache-control: no-cache",
        "date: ",
    ] {
        assert!(head.contains(line), "missing {line:?}: {head}");
    }
    assert_eq!(sse_connections(&hub).await, 1);
    hub.publish(serde_json::json!([{"type": "other.x"}, {"type": "lean.a"}]))
        .await;
    let text = read_until(&mut tcp, &mut buf, "lean.a").await;
    assert!(!text.contains("other.x"), "{text}");
    // The body is the SSE messages themselves, one after the other.
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    assert!(body.starts_with("retry:"), "{body}");
    let at = body.find("id: 2\n").expect("the event's id line");
    assert!(body[..at].ends_with("\n\n"), "{body}");
    assert!(!body.contains('\r'), "{body}");
    // The client goes away: the stream and its registration go with it.
    drop(tcp);
    let deadline = Instant::now() + WAIT;
    while sse_connections(&hub).await != 0 {
        assert!(
            Instant::now() < deadline,
            "the closed stream is still listed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A stream the hub ends (a replay, after its last event) ends with the close.
    let replay = serde_json::json!({"since": "1h", "speed": "max"});
    let (_, created) = call(&hub, "POST", "/v1/replays", "", Some(&replay)).await;
    let id = created["id"].as_str().expect("replay id");
    let req = format!("GET /v1/replays/{id}/stream HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let (mut tcp, mut buf, _) = exchange(&hub, req.as_bytes(), "crier.replay_done").await;
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf))
        .await
        .expect("the replay's stream closes after its last message")
        .expect("read");
    let text = String::from_utf8_lossy(&buf);
    assert!(text.ends_with("\n\n"), "the last message is whole: {text}");
    assert!(!text.contains("\r\n0\r\n"), "no chunk framing: {text}");

    // HTTP/1.0 knows no chunks: the body is delimited by the close.
    let req = b"GET /v1/stream HTTP/1.0\r\nHost: localhost\r\n\r\n";
    let (tcp, _, text) = exchange(&hub, req, "retry:").await;
    let text = text.to_ascii_lowercase();
    assert!(!text.contains("transfer-encoding"), "{text}");
    assert!(
        text.contains("\r\n\r\nretry:"),
        "the body starts right after the head: {text}"
    );
    drop(tcp);

    // Lines may end in a bare LF, as HTTP/1.1 parsers accept.
    let req = b"GET /v1/stream HTTP/1.1\nHost: localhost\n\n";
    let (tcp, _, text) = exchange(&hub, req, "retry:").await;
    assert!(text.starts_with("HTTP/1.1 200 "), "{text}");
    drop(tcp);

    // An error is a complete answer with its length, then the connection closes.
    let req = b"GET /v1/stream?after=x HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let (mut tcp, _, text) = exchange(&hub, req, "}}").await;
    assert!(text.starts_with("HTTP/1.1 400 "), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("content-length: "),
        "{text}"
    );
    closed(&mut tcp).await;

    // A head beyond 16 KiB is refused with 431, not buffered without end.
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let big = format!(
        "GET /v1/stream HTTP/1.1\r\nX-Big: {}\r\n",
        "a".repeat(20 * 1024)
    );
    let _ = tcp.write_all(big.as_bytes()).await;
    let mut buf = Vec::new();
    let text = read_until(&mut tcp, &mut buf, "request_head_too_large").await;
    assert!(text.starts_with("HTTP/1.1 431 "), "{text}");

    // Other requests on a connection are hyper's, keep-alive included, as before.
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    for _ in 0..3 {
        assert_eq!(request(&mut tcp, "/healthz").await.0, 200);
    }
    hub.stop().await;
}

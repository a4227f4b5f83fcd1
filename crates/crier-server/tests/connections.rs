//! §12.4 over real sockets: connections that trickle their request head are closed after
//! `header_read_timeout` while `/healthz` stays responsive; beyond `max_connections` new
//! connections get 503 `too_many_connections` at once while open ones and `/healthz` keep
//! working; a `max_connections` that cannot fit in the open-file limit stops the start.

use std::time::{Duration, Instant};

use crier_testkit::{Hub, WAIT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one request on `tcp` and reads the answer's status line and body (the answer must
/// carry a Content-Length, as the hub's JSON answers do).
async fn request(tcp: &mut TcpStream, path: &str) -> (u16, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                let status = text[9..12].parse().expect("status");
                return (status, text[end + 4..end + 4 + len].to_string());
            }
        }
        let n = tcp.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed before a whole answer: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
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
        if i % 3 > 0 {
            tcp.write_all(b"GET /v1/events HTTP/1.1\r\nHost: localhost\r\n")
                .await
                .expect("write");
        }
        attackers.push(tcp);
    }
    let started = Instant::now();
    // Two thirds trickle a header line every 200 ms and never finish the head; a third
    // never send a byte. /healthz answers all along.
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

//! §12.7 over real sockets: what a browser page can make the hub do. Requests are written
//! by hand so that `Host` and `Origin` are exactly what a hostile page (or a DNS-rebinding
//! one) would send.

use std::time::Duration;

use crier_testkit::Hub;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SECRET: &str = "browser-rules-secret-of-32-chars-or-more";

/// One HTTP/1.1 exchange on a fresh connection: `(status, JSON body)`. A `101` answer
/// (an accepted WebSocket) has no body.
async fn raw(
    hub: &Hub,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, Value) {
    let mut tcp = TcpStream::connect(hub.addr).await.expect("connect");
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("connection"))
    {
        req.push_str("Connection: close\r\n");
    }
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {}\r\n", hub.addr));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let read = async {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_string();
                let status: u16 = head[9..12].parse().expect("status");
                if status == 101 {
                    return (status, Value::Null);
                }
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body =
                        serde_json::from_slice(&buf[end + 4..end + 4 + len]).unwrap_or(Value::Null);
                    return (status, body);
                }
            }
            let n = tcp.read(&mut chunk).await.expect("read");
            assert!(n > 0, "closed before a whole answer");
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer in time")
}

fn upgrade_headers(extra: &[(&str, String)]) -> Vec<(&'static str, String)> {
    let mut h: Vec<(&'static str, String)> = vec![
        ("Upgrade", "websocket".into()),
        ("Connection", "Upgrade".into()),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==".into()),
        ("Sec-WebSocket-Version", "13".into()),
        ("Sec-WebSocket-Protocol", "graphql-transport-ws".into()),
    ];
    for (k, v) in extra {
        let k: &'static str = match *k {
            "Origin" => "Origin",
            "Host" => "Host",
            "Authorization" => "Authorization",
            other => panic!("unexpected header {other}"),
        };
        h.push((k, v.clone()));
    }
    h
}

fn assert_error(status: u16, body: &Value, want: u16, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
}

fn with_auth(s: &mut crier_server::Settings) {
    crier_testkit::auth::with_hs256(s, SECRET);
}

fn with_pusher(s: &mut crier_server::Settings) {
    let cfg: crier_server::pusher::apps::PusherConfig = serde_json::from_value(json!({
        "apps": [{"id": "77", "key": "browser-key", "secret": "browser-secret-long-enough"}]
    }))
    .expect("pusher config");
    s.pusher = cfg.validate().expect("pusher app");
}

fn admin_token() -> String {
    crier_testkit::auth::token(SECRET, "ops", "acme", "admin", None)
}

#[tokio::test]
async fn no_auth_hub_refuses_simple_requests_and_foreign_origins() {
    let hub = Hub::start_with(|s| {
        with_pusher(s);
        // So that nothing but the rules under test could refuse the subscription.
        s.webhooks.allow_private = true;
    })
    .await;
    let sub = json!({"webhook": {"url": "http://127.0.0.1:9/hook"}, "filter": {"type": ["x.*"]}})
        .to_string();

    // The reported attack: a text/plain POST (no preflight) from a foreign page.
    let evil = ("Origin", "http://evil.example".to_string());
    let (s, b) = raw(
        &hub,
        "POST",
        "/v1/subscriptions",
        &[evil.clone(), ("Content-Type", "text/plain".into())],
        &sub,
    )
    .await;
    assert!(s == 403 || s == 415, "{s} {b}");
    // Each rule alone: the media type without an Origin, the Origin with JSON.
    let (s, b) = raw(
        &hub,
        "POST",
        "/v1/subscriptions",
        &[("Content-Type", "text/plain".into())],
        &sub,
    )
    .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    let (s, b) = raw(
        &hub,
        "POST",
        "/v1/subscriptions",
        &[("Content-Type", "application/x-www-form-urlencoded".into())],
        "url=http://x",
    )
    .await;
    assert_error(s, &b, 415, "unsupported_media_type");
    let (s, b) = raw(
        &hub,
        "POST",
        "/v1/subscriptions",
        &[evil.clone(), ("Content-Type", "application/json".into())],
        &sub,
    )
    .await;
    assert_error(s, &b, 403, "origin_not_allowed");
    let (s, b) = raw(
        &hub,
        "DELETE",
        "/v1/subscriptions/sub_x",
        std::slice::from_ref(&evil),
        "",
    )
    .await;
    assert_error(s, &b, 403, "origin_not_allowed");
    let (s, b) = raw(
        &hub,
        "POST",
        "/v1/events",
        &[
            ("Origin", "null".into()),
            ("Content-Type", "application/json".into()),
        ],
        r#"{"type":"x.null"}"#,
    )
    .await;
    assert_error(s, &b, 403, "origin_not_allowed");
    let (s, v) = hub.get("/v1/subscriptions").await;
    assert_eq!(s, 200);
    assert_eq!(v["subscriptions"], json!([]), "nothing was created: {v}");
    assert_eq!(
        hub.history_seqs("").await,
        Vec::<u64>::new(),
        "nothing was published"
    );

    // The contract's body types pass; a page of the hub itself (any loopback name) passes.
    let own = format!("http://127.0.0.1:{}", hub.addr.port());
    let own_by_name = format!("http://localhost:{}", hub.addr.port());
    for (ct, body) in [
        (
            "application/json; charset=utf-8",
            r#"{"type":"x.json"}"#.to_string(),
        ),
        (
            "application/x-ndjson",
            "{\"type\":\"x.ndjson\"}\n".to_string(),
        ),
        (
            "application/cloudevents+json",
            json!({"specversion": "1.0", "id": "ce1", "source": "s", "type": "x.ce"}).to_string(),
        ),
    ] {
        let (s, b) = raw(
            &hub,
            "POST",
            "/v1/events",
            &[("Origin", own.clone()), ("Content-Type", ct.into())],
            &body,
        )
        .await;
        assert_eq!(s, 201, "{ct}: {b}");
    }
    let (s, b) = raw(
        &hub,
        "POST",
        "/v1/events",
        &[
            ("Origin", own_by_name.clone()),
            ("Content-Type", "application/json".into()),
        ],
        r#"{"type":"x.named"}"#,
    )
    .await;
    assert_eq!(s, 201, "{b}");
    // No Origin: a server or the CLI, not a page.
    let (s, b) = raw(
        &hub,
        "POST",
        "/v1/events",
        &[("Content-Type", "application/json".into())],
        r#"{"type":"x.server"}"#,
    )
    .await;
    assert_eq!(s, 201, "{b}");

    // Every WebSocket upgrade follows the same rule: /v1/ws, GraphQL, Pusher.
    for path in ["/v1/ws", "/graphql", "/app/browser-key?protocol=7"] {
        let (s, b) = raw(
            &hub,
            "GET",
            path,
            &upgrade_headers(&[("Origin", "http://evil.example".into())]),
            "",
        )
        .await;
        assert_error(s, &b, 403, "origin_not_allowed");
        let (s, b) = raw(
            &hub,
            "GET",
            path,
            &upgrade_headers(&[("Origin", own.clone())]),
            "",
        )
        .await;
        assert_eq!(s, 101, "{path} from the hub's own origin: {b}");
        let (s, b) = raw(&hub, "GET", path, &upgrade_headers(&[]), "").await;
        assert_eq!(s, 101, "{path} without Origin: {b}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn no_auth_hub_answers_loopback_hosts_only() {
    let hub = Hub::start_with(|s| s.allowed_hosts = vec!["events.internal".into()]).await;
    let port = hub.addr.port();
    // DNS rebinding: the page's name now points at 127.0.0.1, the browser still says its name.
    for (method, path, extra) in [
        ("GET", "/v1/events", vec![]),
        ("GET", "/v1/stream", vec![]),
        ("GET", "/healthz", vec![]),
        (
            "OPTIONS",
            "/v1/events",
            vec![("Access-Control-Request-Method", "POST".to_string())],
        ),
        (
            "POST",
            "/v1/events",
            vec![("Content-Type", "application/json".to_string())],
        ),
    ] {
        let mut h = vec![
            ("Host", format!("evil.example:{port}")),
            ("Origin", format!("http://evil.example:{port}")),
        ];
        h.extend(extra);
        let body = if method == "POST" {
            r#"{"type":"x.rebound"}"#
        } else {
            ""
        };
        let (s, b) = raw(&hub, method, path, &h, body).await;
        assert_error(s, &b, 421, "host_not_allowed");
    }
    let (s, b) = raw(
        &hub,
        "GET",
        "/v1/ws",
        &upgrade_headers(&[("Host", format!("evil.example:{port}"))]),
        "",
    )
    .await;
    assert_error(s, &b, 421, "host_not_allowed");
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "events.internal".into(),
    ] {
        let (s, b) = raw(&hub, "GET", "/v1/events", &[("Host", host.clone())], "").await;
        assert_eq!(s, 200, "{host}: {b}");
    }
    let (s, b) = raw(
        &hub,
        "GET",
        "/v1/events",
        &[("Host", "127.0.0.1.evil.example".into())],
        "",
    )
    .await;
    assert_error(s, &b, 421, "host_not_allowed");
    assert_eq!(
        hub.history_seqs("").await,
        Vec::<u64>::new(),
        "nothing was published"
    );
    hub.stop().await;
}

#[tokio::test]
async fn allowed_origins_never_trust_host_for_the_same_origin() {
    let hub = Hub::start_with(|s| {
        with_auth(s);
        s.allowed_origins = vec!["https://app.example".into()];
        with_pusher(s);
    })
    .await;
    let port = hub.addr.port();
    let bearer = format!("Bearer {}", admin_token());
    for path in ["/v1/ws", "/graphql", "/app/browser-key?protocol=7"] {
        // The reported attack: Origin and Host name the same foreign site.
        let h = upgrade_headers(&[
            ("Origin", format!("http://evil.example:{port}")),
            ("Host", format!("evil.example:{port}")),
            ("Authorization", bearer.clone()),
        ]);
        let (s, b) = raw(&hub, "GET", path, &h, "").await;
        assert_error(s, &b, 403, "origin_not_allowed");
        for origin in [
            "https://app.example".to_string(),
            format!("http://127.0.0.1:{port}"),
        ] {
            let h = upgrade_headers(&[
                ("Origin", origin.clone()),
                ("Authorization", bearer.clone()),
            ]);
            let (s, b) = raw(&hub, "GET", path, &h, "").await;
            assert_eq!(s, 101, "{path} from {origin}: {b}");
        }
    }
    // State-changing requests follow the same rule, before credentials are looked at.
    let (s, b) = raw(
        &hub,
        "POST",
        "/v1/events",
        &[
            ("Origin", format!("http://evil.example:{port}")),
            ("Host", format!("evil.example:{port}")),
            ("Content-Type", "application/json".into()),
            ("Authorization", bearer.clone()),
        ],
        r#"{"type":"x.forged"}"#,
    )
    .await;
    assert_error(s, &b, 403, "origin_not_allowed");
    let (s, b) = raw(
        &hub,
        "POST",
        "/v1/events",
        &[
            ("Origin", "https://app.example".into()),
            ("Content-Type", "application/json".into()),
            ("Authorization", bearer.clone()),
        ],
        r#"{"type":"x.allowed"}"#,
    )
    .await;
    assert_eq!(s, 201, "{b}");
    // With authentication, Host is not restricted.
    let (s, b) = raw(
        &hub,
        "GET",
        "/healthz",
        &[("Host", "events.example.com".into())],
        "",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    hub.stop().await;
}

#[tokio::test]
async fn public_url_is_the_hubs_own_origin() {
    let hub = Hub::start_with(|s| {
        with_auth(s);
        s.allowed_origins = vec!["https://app.example".into()];
        s.public_url = Some("https://events.example.com".into());
    })
    .await;
    let bearer = format!("Bearer {}", admin_token());
    let own = upgrade_headers(&[
        ("Origin", "https://events.example.com".into()),
        ("Authorization", bearer.clone()),
    ]);
    let (s, b) = raw(&hub, "GET", "/v1/ws", &own, "").await;
    assert_eq!(s, 101, "{b}");
    // The listen address is not the hub's origin once public_url names it.
    let listen = upgrade_headers(&[
        ("Origin", format!("http://127.0.0.1:{}", hub.addr.port())),
        ("Authorization", bearer.clone()),
    ]);
    let (s, b) = raw(&hub, "GET", "/v1/ws", &listen, "").await;
    assert_error(s, &b, 403, "origin_not_allowed");
    hub.stop().await;
}

#[test]
fn public_url_must_be_an_http_origin() {
    for bad in ["events.example.com", "ftp://events.example.com", "https://"] {
        let c = crier_server::Config {
            public_url: bad.into(),
            ..crier_server::Config::default()
        };
        assert_eq!(c.validate().expect_err(bad).key, "public_url");
    }
    let c = crier_server::Config {
        public_url: "https://Events.Example.com:443/".into(),
        ..crier_server::Config::default()
    };
    assert_eq!(
        c.validate().expect("valid").public_url.as_deref(),
        Some("https://events.example.com")
    );
}

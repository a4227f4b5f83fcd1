//! §12.7 over real sockets: what a browser page can make the hub do. Requests are written
//! by hand so that `Host` and `Origin` are exactly what a hostile page (or a DNS-rebinding
//! one) would send.

use std::time::Duration;

use crier_testkit::checks::read_answer;
use crier_testkit::Hub;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const SECRET: &str = "browser-rules-secret-of-32-chars-or-more";

/// One HTTP/1.1 exchange on a fresh connection: `(status, JSON body)`. A `101` answer
/// (an accepted WebSocket) has no body.
async fn raw(
    hub: &Hub,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
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
    let (status, _, body) = tokio::time::timeout(Duration::from_secs(10), read_answer(&mut tcp))
        .await
        .expect("an answer in time");
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// One hand-written request: method, path, headers, body, the status expected and the error
/// code expected ("" where the answer is not an error).
type Case<'a> = (
    &'a str,
    &'a str,
    Vec<(&'a str, &'a str)>,
    &'a str,
    u16,
    &'a str,
);

/// Sends every case on a fresh connection, in order, and checks its answer: the status and,
/// for an error, its code and that it has a message.
async fn check_raw(hub: &Hub, cases: &[Case<'_>]) {
    for (method, path, headers, body, want, code) in cases {
        let (s, b) = raw(hub, method, path, headers, body).await;
        assert_eq!(s, *want, "{method} {path} {headers:?}: {b}");
        if !code.is_empty() {
            assert_eq!(
                b["error"]["code"], *code,
                "{method} {path} {headers:?}: {b}"
            );
            assert!(b["error"]["message"].is_string(), "{b}");
        }
    }
}

/// The headers of a GraphQL WebSocket upgrade, then `extra`.
fn upgrade_headers<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut h = vec![
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("Sec-WebSocket-Version", "13"),
        ("Sec-WebSocket-Protocol", "graphql-transport-ws"),
    ];
    h.extend_from_slice(extra);
    h
}

fn with_auth(s: &mut crier_server::Settings) {
    crier_testkit::auth::with_hs256(s, SECRET);
}

/// A hub with credentials that allows the origin `https://app.example`; `tweak` adjusts the
/// rest.
async fn app_hub(tweak: impl FnOnce(&mut crier_server::Settings)) -> Hub {
    Hub::start_with(|s| {
        with_auth(s);
        s.allowed_origins = vec!["https://app.example".into()];
        tweak(s);
    })
    .await
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
    let evil = ("Origin", "http://evil.example");
    let plain = ("Content-Type", "text/plain");
    let json_ct = ("Content-Type", "application/json");
    let (s, b) = raw(&hub, "POST", "/v1/subscriptions", &[evil, plain], &sub).await;
    assert!(s == 403 || s == 415, "{s} {b}");
    // Each rule alone: the media type without an Origin, the Origin with JSON.
    let form = ("Content-Type", "application/x-www-form-urlencoded");
    let no = "origin_not_allowed";
    #[rustfmt::skip]
    check_raw(&hub, &[
        ("POST", "/v1/subscriptions", vec![plain], sub.as_str(), 415, "unsupported_media_type"),
        ("POST", "/v1/subscriptions", vec![form], "url=http://x", 415, "unsupported_media_type"),
        ("POST", "/v1/subscriptions", vec![evil, json_ct], sub.as_str(), 403, no),
        ("DELETE", "/v1/subscriptions/sub_x", vec![evil], "", 403, no),
        ("POST", "/v1/events", vec![("Origin", "null"), json_ct], r#"{"type":"x.null"}"#, 403, no),
    ]).await;
    let (s, v) = hub.get("/v1/subscriptions").await;
    assert_eq!(s, 200);
    assert_eq!(v["subscriptions"], json!([]), "nothing was created: {v}");
    assert_eq!(
        hub.history_seqs("").await,
        Vec::<u64>::new(),
        "nothing was published"
    );

    // The contract's body types pass; a page of the hub itself (any loopback name) passes;
    // so does no Origin: a server or the CLI, not a page.
    let own = format!("http://127.0.0.1:{}", hub.addr.port());
    let own_by_name = format!("http://localhost:{}", hub.addr.port());
    let ce = json!({"specversion": "1.0", "id": "ce1", "source": "s", "type": "x.ce"}).to_string();
    let o = ("Origin", own.as_str());
    let e = "/v1/events";
    #[rustfmt::skip]
    check_raw(&hub, &[
        ("POST", e, vec![o, ("Content-Type", "application/json; charset=utf-8")], r#"{"type":"x.json"}"#, 201, ""),
        ("POST", e, vec![o, ("Content-Type", "application/x-ndjson")], "{\"type\":\"x.ndjson\"}\n", 201, ""),
        ("POST", e, vec![o, ("Content-Type", "application/cloudevents+json")], ce.as_str(), 201, ""),
        ("POST", e, vec![("Origin", own_by_name.as_str()), json_ct], r#"{"type":"x.named"}"#, 201, ""),
        ("POST", e, vec![json_ct], r#"{"type":"x.server"}"#, 201, ""),
    ]).await;

    // Every WebSocket upgrade follows the same rule: /v1/ws, GraphQL, Pusher; from the hub's
    // own origin and without Origin it is accepted.
    for path in ["/v1/ws", "/graphql", "/app/browser-key?protocol=7"] {
        check_raw(
            &hub,
            &[
                ("GET", path, upgrade_headers(&[evil]), "", 403, no),
                ("GET", path, upgrade_headers(&[o]), "", 101, ""),
                ("GET", path, upgrade_headers(&[]), "", 101, ""),
            ],
        )
        .await;
    }
    hub.stop().await;
}

#[tokio::test]
async fn no_auth_hub_answers_loopback_hosts_only() {
    let hub = Hub::start_with(|s| s.allowed_hosts = vec!["events.internal".into()]).await;
    let port = hub.addr.port();
    let evil_host = format!("evil.example:{port}");
    let evil_origin = format!("http://evil.example:{port}");
    let host = ("Host", evil_host.as_str());
    let page = [host, ("Origin", evil_origin.as_str())];
    let preflight = ("Access-Control-Request-Method", "POST");
    let json_ct = ("Content-Type", "application/json");
    let no = "host_not_allowed";
    // DNS rebinding: the page's name now points at 127.0.0.1, the browser still says its name.
    #[rustfmt::skip]
    check_raw(&hub, &[
        ("GET", "/v1/events", page.to_vec(), "", 421, no),
        ("GET", "/v1/stream", page.to_vec(), "", 421, no),
        ("GET", "/healthz", page.to_vec(), "", 421, no),
        ("OPTIONS", "/v1/events", [&page[..], &[preflight]].concat(), "", 421, no),
        ("POST", "/v1/events", [&page[..], &[json_ct]].concat(), r#"{"type":"x.rebound"}"#, 421, no),
        ("GET", "/v1/ws", upgrade_headers(&[host]), "", 421, no),
    ]).await;
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "events.internal".into(),
    ] {
        let (s, b) = raw(&hub, "GET", "/v1/events", &[("Host", host.as_str())], "").await;
        assert_eq!(s, 200, "{host}: {b}");
    }
    let near = [("Host", "127.0.0.1.evil.example")];
    check_raw(&hub, &[("GET", "/v1/events", near.to_vec(), "", 421, no)]).await;
    assert_eq!(
        hub.history_seqs("").await,
        Vec::<u64>::new(),
        "nothing was published"
    );
    hub.stop().await;
}

#[tokio::test]
async fn allowed_origins_never_trust_host_for_the_same_origin() {
    let hub = app_hub(with_pusher).await;
    let port = hub.addr.port();
    let bearer = format!("Bearer {}", admin_token());
    let auth = ("Authorization", bearer.as_str());
    let evil_origin = format!("http://evil.example:{port}");
    let evil_host = format!("evil.example:{port}");
    // The reported attack: Origin and Host name the same foreign site.
    let forged = [
        ("Origin", evil_origin.as_str()),
        ("Host", evil_host.as_str()),
    ];
    let own = format!("http://127.0.0.1:{port}");
    let no = "origin_not_allowed";
    for path in ["/v1/ws", "/graphql", "/app/browser-key?protocol=7"] {
        #[rustfmt::skip]
        check_raw(&hub, &[
            ("GET", path, upgrade_headers(&[forged[0], forged[1], auth]), "", 403, no),
            ("GET", path, upgrade_headers(&[("Origin", "https://app.example"), auth]), "", 101, ""),
            ("GET", path, upgrade_headers(&[("Origin", own.as_str()), auth]), "", 101, ""),
        ]).await;
    }
    // State-changing requests follow the same rule, before credentials are looked at. With
    // authentication, Host is not restricted.
    let json_ct = ("Content-Type", "application/json");
    let app = ("Origin", "https://app.example");
    #[rustfmt::skip]
    check_raw(&hub, &[
        ("POST", "/v1/events", [&forged[..], &[json_ct, auth]].concat(), r#"{"type":"x.forged"}"#, 403, no),
        ("POST", "/v1/events", vec![app, json_ct, auth], r#"{"type":"x.allowed"}"#, 201, ""),
        ("GET", "/healthz", vec![("Host", "events.example.com")], "", 200, ""),
    ]).await;
    hub.stop().await;
}

#[tokio::test]
async fn public_url_is_the_hubs_own_origin() {
    let hub = app_hub(|s| s.public_url = Some("https://events.example.com".into())).await;
    let bearer = format!("Bearer {}", admin_token());
    let auth = ("Authorization", bearer.as_str());
    // The listen address is not the hub's origin once public_url names it.
    let listen = format!("http://127.0.0.1:{}", hub.addr.port());
    #[rustfmt::skip]
    check_raw(&hub, &[
        ("GET", "/v1/ws", upgrade_headers(&[("Origin", "https://events.example.com"), auth]), "", 101, ""),
        ("GET", "/v1/ws", upgrade_headers(&[("Origin", listen.as_str()), auth]), "", 403, "origin_not_allowed"),
    ]).await;
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

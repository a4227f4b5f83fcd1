//! Hostile input over real sockets: random bodies, content types, query strings, headers and
//! WebSocket frames. Every answer is a client error with the JSON error shape (never a 5xx),
//! WebSocket errors keep the connection open, and the hub keeps serving.

use crier_testkit::Hub;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    "\"type\"",
    ":",
    ",",
    "\"a.b\"",
    "null",
    "1e999",
    "\"\\u0000\"",
    "\n",
    "\"seq\"",
    "\"data\"",
    "{\"type\":\"x\"}",
    "\"tags\"",
    "[\"t\"]",
    "true",
    "\u{feff}",
    "\"severity\"",
    "\"loud\"",
    "💥",
    "\\",
    "\"",
    "-",
    "0",
];

/// The content types a random publish is sent with.
const CONTENT_TYPES: &[&str] = &[
    "application/json",
    "application/x-ndjson",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "text/plain",
    "",
    "application/json; charset=utf-8",
];

/// The query keys a random history or stream request is made of.
const QUERY_KEYS: &[&str] = &[
    "type", "after", "before", "limit", "since", "until", "order", "last", "severity", "tag",
    "tenant", "x",
];

/// The ops a random WebSocket frame names.
const WS_OPS: &[&str] = &[
    "subscribe",
    "unsubscribe",
    "publish",
    "history",
    "replay",
    "replay_stop",
    "ping",
    "auth",
    "nope",
];

/// One of `list`, at random.
fn pick(rng: &mut StdRng, list: &[&'static str]) -> &'static str {
    list[rng.random_range(0..list.len())]
}

fn noise(rng: &mut StdRng) -> String {
    (0..rng.random_range(0..24))
        .map(|_| pick(rng, PIECES))
        .collect()
}

#[tokio::test]
async fn random_requests_get_client_errors_never_server_errors() {
    let hub = Hub::start_with(|s| s.limits.max_body_bytes = 2048).await;
    let mut rng = StdRng::seed_from_u64(7400);
    for i in 0..400 {
        let body = if i % 50 == 0 {
            "x".repeat(3000)
        } else {
            noise(&mut rng)
        };
        let ct = pick(&mut rng, CONTENT_TYPES);
        let (status, v) = hub.post_raw(body.clone(), ct).await;
        assert!(
            status == 201 || (400..500).contains(&status),
            "{ct} {body:?} answered {status}"
        );
        if status != 201 {
            assert!(
                v["error"]["code"].is_string() && v["error"]["message"].is_string(),
                "{ct} {body:?}: {v}"
            );
        }
    }
    for _ in 0..300 {
        let q: Vec<String> = (0..rng.random_range(0..4))
            .map(|_| {
                format!(
                    "{}={}",
                    pick(&mut rng, QUERY_KEYS),
                    urlencode(&noise(&mut rng))
                )
            })
            .collect();
        let q = q.join("&");
        for path in ["/v1/events", "/v1/stream"] {
            let mut req = hub.http.get(hub.url(&format!("{path}?{q}")));
            if rng.random_bool(0.3) {
                req = req.header("Last-Event-ID", noise(&mut rng).replace(['\n', '\r'], ""));
            }
            let Ok(res) = req.send().await else { continue };
            let status = res.status().as_u16();
            assert!(status < 500, "{path}?{q} answered {status}");
            drop(res);
        }
    }
    let (s, _) = hub.get("/healthz").await;
    assert_eq!(s, 200, "the hub keeps serving");
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn random_websocket_frames_get_error_ops_and_the_socket_lives() {
    let hub = Hub::start().await;
    let mut ws = hub.ws().await;
    let mut rng = StdRng::seed_from_u64(4001);
    for i in 0..300 {
        let frame = if i % 3 == 0 {
            noise(&mut rng)
        } else {
            format!(
                "{{\"op\":\"{}\",\"ref\":{i},{}\"x\":1}}",
                pick(&mut rng, WS_OPS),
                noise(&mut rng).replace('}', "")
            )
        };
        ws.send_text(&frame).await;
        // Drain whatever the frame caused until a pong proves the connection is still in order.
        ws.send_text(&format!("{{\"op\":\"ping\",\"ref\":\"p{i}\"}}"))
            .await;
        loop {
            let m: Value = ws.recv().await;
            if m["op"] == "pong" && m["ref"] == format!("p{i}") {
                break;
            }
            assert!(m["op"].is_string(), "{frame} → {m}");
        }
    }
}

//! The Pusher protocol as clients and server SDKs speak it.
//!
//! The first byte picks the path; the rest is text:
//! * even: WebSocket frames, one per line, through a connection's own frame handler
//!   (subscribe, channel auth, presence `channel_data`, client events, ping, unsubscribe).
//!   A subscribe whose `data.auth` is `"sign"` gets the correct signature for its channel
//!   and `channel_data`, so the fuzzer reaches what lies behind the signature check.
//! * odd: an HTTP API request, `<path under /apps/<id>/>[?query]` on the first line and the
//!   body after it, correctly signed (auth_key, auth_timestamp, auth_version, body_md5,
//!   auth_signature) and sent through the hub's router.
#![no_main]

use axum::body::Body;
use axum::http::{Method, Request};
use libfuzzer_sys::fuzz_target;
use md5::{Digest, Md5};
use serde_json::Value;
use tower::ServiceExt;

const SOCKET_ID: &str = "1234.5678";

/// The frame with a correct channel authorization when it asks for one.
fn signed_frame(line: &str) -> String {
    let Ok(Value::Object(mut m)) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    let Some(Value::Object(data)) = m.get_mut("data") else {
        return line.to_string();
    };
    if data.get("auth").and_then(Value::as_str) != Some("sign") {
        return line.to_string();
    }
    let channel = data.get("channel").and_then(Value::as_str).unwrap_or("");
    let msg = match data.get("channel_data").and_then(Value::as_str) {
        Some(d) => format!("{SOCKET_ID}:{channel}:{d}"),
        None => format!("{SOCKET_ID}:{channel}"),
    };
    let (_, key, secret) = crier_fuzz::PUSHER_APP;
    let auth = format!(
        "{key}:{}",
        crier_server::pusher::protocol::sign(secret, msg.as_bytes())
    );
    data.insert("auth".into(), Value::String(auth));
    Value::Object(m).to_string()
}

fn frames(f: &crier_fuzz::Fixture, text: &str) {
    let (_, key, _) = crier_fuzz::PUSHER_APP;
    let Some(app) = f.state.pusher.apps.by_key(key).cloned() else {
        panic!("the fuzzing hub has no Pusher app");
    };
    let input: Vec<String> = text.lines().map(signed_frame).collect();
    let answers = f.rt.block_on(crier_server::pusher::conn::answer(
        &f.state,
        app,
        SOCKET_ID,
        &input.join("\n"),
    ));
    // Every frame the hub writes is a JSON object naming its event.
    for frame in answers {
        let v: Value = match serde_json::from_str(&frame) {
            Ok(v) => v,
            Err(e) => panic!("the hub wrote invalid JSON ({e}): {frame}"),
        };
        assert!(
            v.get("event").and_then(Value::as_str).is_some(),
            "no event in {frame}"
        );
    }
}

fn http(f: &crier_fuzz::Fixture, text: &str) {
    let (id, key, secret) = crier_fuzz::PUSHER_APP;
    let (target, body) = text.split_once('\n').unwrap_or((text, ""));
    let (path, extra) = target.split_once('?').unwrap_or((target, ""));
    let path = format!("/apps/{id}/{}", path.trim_start_matches('/'));
    if path.parse::<axum::http::Uri>().is_err() {
        return;
    }
    let method = if path.ends_with("events") {
        Method::POST
    } else {
        Method::GET
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut query = format!("auth_key={key}&auth_timestamp={now}&auth_version=1.0");
    if !body.is_empty() {
        let digest = Md5::digest(body.as_bytes());
        let md5: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        query.push_str(&format!("&body_md5={md5}"));
    }
    if !extra.is_empty() {
        query.push('&');
        query.push_str(extra);
    }
    // Signed as the hub reads it: decoded pairs, keys in lower case, sorted.
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
        .filter(|(k, _)| k != "auth_signature")
        .collect();
    let mut signed: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let to_sign =
        crier_server::pusher::protocol::string_to_sign(method.as_str(), &path, &mut signed);
    let signature = crier_server::pusher::protocol::sign(secret, to_sign.as_bytes());
    let uri = format!("{path}?{query}&auth_signature={signature}");
    let Ok(req) = Request::builder()
        .method(method)
        .uri(&uri)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
    else {
        return;
    };
    let router = crier_server::app_for::<()>(f.state.clone());
    let status = f.rt.block_on(async move {
        match router.oneshot(req).await {
            Ok(resp) => resp.status(),
            Err(e) => match e {},
        }
    });
    assert_ne!(status.as_u16(), 500, "{uri}\n{body}");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let f = crier_fuzz::fixture();
    if mode & 1 == 0 {
        frames(f, text);
    } else {
        http(f, text);
    }
});

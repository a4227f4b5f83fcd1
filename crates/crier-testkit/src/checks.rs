//! Requests and checks that crier-server's tests repeat: a JSON request with its status and
//! answer, the same with the status and error code checked, a response kept unread for a
//! stream or a raw body, and the fields of a listed answer.

use reqwest::{Method, RequestBuilder, Response};
use serde_json::Value;

use crate::{Hub, Sse};

/// A request `method path` to `hub` with a bearer `credential` ("" for none) and, when
/// given, a JSON `body`; headers may be added before it is sent.
pub fn request(
    hub: &Hub,
    method: &str,
    path: &str,
    credential: &str,
    body: Option<&Value>,
) -> RequestBuilder {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = hub.http.request(method, hub.url(path));
    if !credential.is_empty() {
        req = req.bearer_auth(credential);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    req
}

/// Sends `req` and checks that it answers `status`; the response, its body unread. A
/// failure shows the body.
pub async fn answered(req: RequestBuilder, status: u16) -> Response {
    let res = req.send().await.expect("request");
    if res.status().as_u16() != status {
        let got = res.status().as_u16();
        let url = res.url().to_string();
        let text = res.text().await.unwrap_or_default();
        panic!("{url}: status {got}, expected {status}: {text}");
    }
    res
}

/// GET `path` with `credential` ("" for none), checking that it answers `status`; the
/// response, its body unread.
pub async fn get_status(hub: &Hub, path: &str, credential: &str, status: u16) -> Response {
    answered(request(hub, "GET", path, credential, None), status).await
}

/// Opens the event stream at `path` with `credential` ("" for none): it must answer 200.
pub async fn stream(hub: &Hub, path: &str, credential: &str) -> Sse {
    Sse::from_response(get_status(hub, path, credential, 200).await)
}

/// Sends `req`: its status and JSON answer (Null when the body is not JSON).
pub async fn status_json(req: RequestBuilder) -> (u16, Value) {
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A JSON request as [`request`] builds it: its status and JSON answer (or Null).
pub async fn call(
    hub: &Hub,
    method: &str,
    path: &str,
    credential: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    status_json(request(hub, method, path, credential, body)).await
}

/// A JSON request as [`call`] sends it, checked: it answers `status` and, unless `code` is
/// "", that error code. Returns the JSON answer.
pub async fn expect(
    hub: &Hub,
    method: &str,
    path: &str,
    credential: &str,
    body: Option<&Value>,
    status: u16,
    code: &str,
) -> Value {
    let (s, v) = call(hub, method, path, credential, body).await;
    assert_eq!(s, status, "{method} {path}: {v}");
    if !code.is_empty() {
        assert_eq!(error_code(&v), code, "{method} {path}: {v}");
    }
    v
}

/// The error code of a JSON answer, or "".
pub fn error_code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

/// The error message of a JSON answer, or "".
pub fn error_message(v: &Value) -> &str {
    v["error"]["message"].as_str().unwrap_or("")
}

/// The text `field` of every item of the list `v[list]`, skipping items without it.
pub fn texts<'a>(v: &'a Value, list: &str, field: &str) -> Vec<&'a str> {
    items(v, list).filter_map(|e| e[field].as_str()).collect()
}

/// The numeric `field` of every item of the list `v[list]`, skipping items without it.
pub fn numbers(v: &Value, list: &str, field: &str) -> Vec<u64> {
    items(v, list).filter_map(|e| e[field].as_u64()).collect()
}

/// The items of the list `v[list]`, which must be a list.
fn items<'a>(v: &'a Value, list: &str) -> std::slice::Iter<'a, Value> {
    v[list]
        .as_array()
        .unwrap_or_else(|| panic!("{list}: {v}"))
        .iter()
}

/// The `/metrics` scrape with `credential` ("" for none), as text.
pub async fn metrics(hub: &Hub, credential: &str) -> String {
    request(hub, "GET", "/metrics", credential, None)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// A fresh PostgreSQL schema `<prefix>_<pid>` for the test `skipping`, or None (with the
/// skip notice) when PostgreSQL is not reachable.
pub async fn pg_schema(skipping: &str, prefix: &str) -> Option<String> {
    if !crate::services::pg_reachable(skipping).await {
        return None;
    }
    let schema = format!("{prefix}_{}", std::process::id());
    crate::services::drop_schema(&schema).await;
    Some(schema)
}

/// Reads one HTTP/1.1 answer from `tcp`: its status, head and body, the body as long as its
/// `Content-Length` says (none for a `101`, an accepted upgrade).
pub async fn read_answer(tcp: &mut tokio::net::TcpStream) -> (u16, String, Vec<u8>) {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let status: u16 = head[9..12].parse().expect("status");
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if status == 101 || buf.len() >= end + 4 + len {
                let body = if status == 101 {
                    Vec::new()
                } else {
                    buf[end + 4..end + 4 + len].to_vec()
                };
                return (status, head, body);
            }
        }
        let n = tcp.read(&mut chunk).await.expect("read");
        let text = String::from_utf8_lossy(&buf);
        assert!(n > 0, "closed before a whole answer: {text}");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Pusher settings with the one app `id`/`key`/`secret` of `tenant`, client events off and
/// the default timeouts and limits.
pub fn pusher_app(
    id: &str,
    key: &str,
    secret: &str,
    tenant: &str,
) -> crier_server::pusher::apps::Apps {
    use crier_server::pusher::apps::{AppConfig, PusherConfig};
    PusherConfig {
        apps: vec![AppConfig {
            id: id.into(),
            key: key.into(),
            secret: secret.into(),
            tenant: tenant.into(),
            client_events: false,
            activity_timeout: 120,
            webhooks: vec![],
            max_data_bytes: 10_240,
        }],
        ..PusherConfig::default()
    }
    .validate()
    .expect("pusher app")
}

/// Creates a replay of `spec` with `credential` ("" for none): it must answer 201. Returns
/// its id.
pub async fn replay(hub: &Hub, credential: &str, spec: &Value) -> String {
    let v = expect(hub, "POST", "/v1/replays", credential, Some(spec), 201, "").await;
    v["id"].as_str().expect("replay id").to_string()
}

/// Calls `probe` every 20 ms until it answers `Ok`: its value. After `within` it fails with
/// the last `Err`, which says what was awaited and what was seen instead.
pub async fn eventually<T, P, F>(within: std::time::Duration, mut probe: P) -> T
where
    P: FnMut() -> F,
    F: std::future::Future<Output = Result<T, String>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) => assert!(std::time::Instant::now() < deadline, "{seen}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Calls `holds` every 20 ms until it answers true; after `within` it fails saying `what`.
pub async fn wait_until<P, F>(what: &str, within: std::time::Duration, mut holds: P)
where
    P: FnMut() -> F,
    F: std::future::Future<Output = bool>,
{
    eventually(within, || {
        let check = holds();
        async move { check.await.then_some(()).ok_or_else(|| what.to_string()) }
    })
    .await
}

/// Waits (up to 10 s) until retention has pruned `hub`'s history to `keep` events or fewer.
pub async fn pruned_to(hub: &Hub, keep: usize) {
    wait_until(
        "retention did not prune",
        std::time::Duration::from_secs(10),
        || async { hub.history_seqs("").await.len() <= keep },
    )
    .await
}

/// Checks a `/readyz` body that reports an unwritable store: `store` is `not_writable` and
/// the `reason` names `cause`.
pub fn assert_not_writable(body: &Value, cause: &str) {
    assert_eq!(body["store"], "not_writable", "{body}");
    assert!(
        body["reason"].as_str().is_some_and(|r| r.contains(cause)),
        "the reason names the cause: {body}"
    );
}

/// Sends `req`: its status, its headers and its body as text.
pub async fn raw(req: RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    (status, headers, res.text().await.expect("body"))
}

/// Sets retention in `s`: keep at most `max` events, pruning every `every`.
pub fn retention(s: &mut crier_server::Settings, max: u64, every: std::time::Duration) {
    s.retention_max_events = Some(max);
    s.retention_interval = every;
}

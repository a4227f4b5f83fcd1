//! Plain requests to a hub and status tables: a table is a list of rows
//! `(method, path, headers, body, credential, status, error code)` sent in order, each
//! checked, a failure naming its row.

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

use crate::Hub;

/// One row of a status table: method, path, headers (`"name: value; name: value"`, or ""),
/// JSON body, bearer credential ("" for none), the status expected, and the error code
/// expected ("" when the answer's code is not checked).
pub type Row<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    &'a str,
    u16,
    &'a str,
);

/// One answer: its status, headers and JSON body (Null when it has none, or for a stream).
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    /// The error code of the answer, or "".
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `ETag` header.
    pub fn etag(&self) -> Option<String> {
        self.header("etag").map(str::to_string)
    }

    /// The seqs of the events the request emitted (`Crier-Seq`).
    pub fn seqs(&self) -> Vec<u64> {
        self.header("crier-seq")
            .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or_default()
    }
}

/// Sends one request; `headers` as in [`Row`], `body` as JSON (unless `headers` name another
/// content type), `credential` as a bearer token ("" for none). A stream's body is not read.
pub async fn send(
    hub: &Hub,
    method: &str,
    path: &str,
    headers: &str,
    body: Option<&str>,
    credential: &str,
) -> Answer {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = hub.http.request(method, hub.url(path));
    if !credential.is_empty() {
        req = req.bearer_auth(credential);
    }
    let mut content_type = false;
    for h in headers.split(';').filter(|h| !h.trim().is_empty()) {
        let (k, v) = h.split_once(':').expect("header as name: value");
        content_type |= k.trim().eq_ignore_ascii_case("content-type");
        req = req.header(k.trim(), v.trim());
    }
    if let Some(b) = body {
        if !content_type {
            req = req.header("content-type", "application/json");
        }
        req = req.body(b.to_string());
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let stream = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("text/event-stream"));
    let body = if stream {
        Value::Null
    } else {
        let text = res.text().await.unwrap_or_default();
        serde_json::from_str(&text).unwrap_or(Value::Null)
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// Sends every row in order and checks its status and error code; returns the answers.
pub async fn check(hub: &Hub, rows: &[Row<'_>]) -> Vec<Answer> {
    let mut out = Vec::with_capacity(rows.len());
    for (i, &(method, path, headers, body, credential, status, code)) in rows.iter().enumerate() {
        let a = send(hub, method, path, headers, body, credential).await;
        assert_eq!(
            a.status, status,
            "row {i}: {method} {path} [{headers}]: {}",
            a.body
        );
        if !code.is_empty() {
            assert_eq!(
                a.code(),
                code,
                "row {i}: {method} {path} [{headers}]: {}",
                a.body
            );
        }
        out.push(a);
    }
    out
}

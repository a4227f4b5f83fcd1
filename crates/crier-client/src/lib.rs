//! crier-client: subscribe to a crier hub over Server-Sent Events or WebSocket and get every
//! matching event once, in seq order, across disconnects.
//!
//! A [`Subscription`] remembers the last seq it handed out. When the connection drops (or
//! the hub restarts) it reconnects with exponential backoff and equal jitter (each wait is
//! between half and all of a step doubling from 1 s to 30 s by default, unlimited attempts)
//! and resumes after that seq — `Last-Event-ID` over SSE, `after` over WebSocket — so
//! nothing is lost and, because it also skips anything at or below that seq, nothing is
//! doubled. [`Subscription::on_status`] reports reconnects and resumes. A token callback is asked for a fresh credential
//! before every connection.
#![deny(missing_docs)]

pub mod sse;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};

/// Client errors that end a subscription (connection failures are retried, not returned).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The hub refused the subscription (a 4xx or a WebSocket `error` op): retrying would
    /// not help.
    #[error("the hub refused the subscription: {0}")]
    Refused(String),
    /// The reconnect budget is used up.
    #[error("gave up after {0} failed connection attempts")]
    GaveUp(u32),
}

/// Which transport to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `GET /v1/stream`.
    Sse,
    /// `GET /v1/ws`.
    WebSocket,
}

/// Where a subscription starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Live from now.
    Live,
    /// After this seq.
    After(u64),
    /// The last `n` matching events, then live.
    Last(u64),
}

/// Reconnect timing.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First wait.
    pub initial: Duration,
    /// Longest wait.
    pub max: Duration,
    /// Give up after this many consecutive failures (`None`: never).
    pub max_attempts: Option<u32>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(30),
            max_attempts: None,
        }
    }
}

/// Supplies a token before each connection (for refresh).
pub type TokenSource = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What to subscribe to.
#[derive(Clone)]
pub struct Options {
    /// Hub base URL, e.g. `http://127.0.0.1:7400`.
    pub url: String,
    /// Filter in its JSON form (`{"type": ["site.*"]}`), a string naming one of the tenant's
    /// saved filters (`/v1/filters`), or `null` for everything.
    pub filter: Value,
    /// Start position of the first connection.
    pub start: Start,
    /// Transport.
    pub transport: Transport,
    /// Reconnect timing.
    pub backoff: Backoff,
    /// Credential source.
    pub token: Option<TokenSource>,
}

impl Options {
    /// Everything from `url` over SSE, live, with default backoff and no credential.
    pub fn new(url: impl Into<String>) -> Options {
        Options {
            url: url.into(),
            filter: Value::Null,
            start: Start::Live,
            transport: Transport::Sse,
            backoff: Backoff::default(),
            token: None,
        }
    }
}

/// One message of a subscription.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// An event (its JSON as the hub sent it).
    Event(Value),
    /// The hub reset the cursor (`{"reason": ..., ...}`); events follow.
    Reset(Value),
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;
type WsStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

enum Conn {
    Sse(ByteStream, sse::SseParser),
    Ws(Box<WsStream>),
}

/// How a connection attempt failed.
enum Attempt {
    /// Refused for good (bad filter, bad credential): retrying would not help.
    Fatal(String),
    /// Unreachable or unavailable for now (why).
    Retry(String),
}

/// What a subscription is doing about its connection, for a caller that reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Status {
    /// The connection failed or was lost; the next attempt follows after `wait`.
    Reconnecting {
        /// Why the last attempt or connection ended.
        error: String,
        /// Consecutive failures so far.
        attempt: u32,
        /// The wait before the next attempt.
        wait: Duration,
    },
    /// Connected again after failures; the stream resumes after `after` (`None`: from the
    /// start position the subscription was opened with).
    Resumed {
        /// The seq the stream resumes after.
        after: Option<u64>,
    },
}

/// Called with each [`Status`] change.
pub type StatusHook = Arc<dyn Fn(&Status) + Send + Sync>;

/// The hub's own words from a refusal body (`{"error": {"message": ...}}`), else the body.
fn refusal(status: reqwest::StatusCode, body: &str) -> String {
    let v: Value = serde_json::from_str(body).unwrap_or(Value::Null);
    match v["error"]["message"].as_str() {
        Some(m) => format!("{m} ({status})"),
        None if body.trim().is_empty() => status.to_string(),
        None => format!("{} ({status})", body.trim()),
    }
}

/// The wait before reconnect attempt `failures` (1-based): the exponential step
/// `initial * 2^(failures-1)`, capped at `max`, with equal jitter: half the step plus a
/// random share `r` (0 to 1) of the other half.
fn backoff_wait(b: &Backoff, failures: u32, r: f64) -> Duration {
    let step = b
        .initial
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(b.max);
    step / 2 + (step / 2).mul_f64(r.clamp(0.0, 1.0))
}

/// A subscription that reconnects and resumes by itself.
pub struct Subscription {
    opts: Options,
    http: reqwest::Client,
    conn: Option<Conn>,
    pending: VecDeque<Item>,
    /// The last seq handed out: the resume point.
    last_seq: Option<u64>,
    /// For a subscription that has handed out nothing yet: the head its stream opened at.
    opened_at: Option<u64>,
    first: bool,
    failures: u32,
    status: Option<StatusHook>,
}

/// Whether a refusal is final: a 4xx other than 429 (limits) and, when a token source can
/// supply a fresh credential, 401.
fn fatal(status: u16, refresh: bool) -> bool {
    (400..500).contains(&status) && status != 429 && !(status == 401 && refresh)
}

fn query(filter: &Value) -> Vec<(String, String)> {
    let mut q = Vec::new();
    if let Value::String(name) = filter {
        q.push(("filter".to_string(), name.clone()));
    }
    if let Value::Object(m) = filter {
        for (k, v) in m {
            let key = if k == "tags" {
                "tag".to_string()
            } else {
                k.clone()
            };
            match v {
                Value::Array(a) => q.push((
                    key,
                    a.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(","),
                )),
                Value::String(s) => q.push((key, s.clone())),
                _ => {}
            }
        }
    }
    q
}

impl Subscription {
    /// Starts a subscription; it connects on the first [`Subscription::next`].
    pub fn new(opts: Options) -> Subscription {
        Subscription {
            opts,
            http: reqwest::Client::new(),
            conn: None,
            pending: VecDeque::new(),
            last_seq: None,
            opened_at: None,
            first: true,
            failures: 0,
            status: None,
        }
    }

    /// Calls `hook` when the subscription starts reconnecting and when it has resumed.
    pub fn on_status(mut self, hook: StatusHook) -> Subscription {
        self.status = Some(hook);
        self
    }

    /// The seq of the last event handed out (the point a reconnect resumes after).
    pub fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }

    fn start(&self) -> Start {
        match self.last_seq.or(self.opened_at) {
            Some(s) => Start::After(s),
            None if self.first => self.opts.start,
            None => match self.opts.start {
                Start::Last(_) | Start::Live => Start::Live,
                s => s,
            },
        }
    }

    async fn connect(&mut self) -> Result<Conn, Attempt> {
        let token = self.opts.token.as_ref().and_then(|t| t());
        let refresh = self.opts.token.is_some();
        let base = self.opts.url.trim_end_matches('/').to_string();
        let start = self.start();
        let result = match self.opts.transport {
            Transport::Sse => {
                let mut q = query(&self.opts.filter);
                match start {
                    Start::After(s) => q.push(("after".into(), s.to_string())),
                    Start::Last(n) => q.push(("last".into(), n.to_string())),
                    Start::Live => {}
                }
                let mut req = self.http.get(format!("{base}/v1/stream")).query(&q);
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                match req.send().await {
                    Ok(res) if res.status().is_success() => Ok(Conn::Sse(
                        Box::pin(res.bytes_stream()),
                        sse::SseParser::default(),
                    )),
                    Ok(res) if fatal(res.status().as_u16(), refresh) => {
                        let status = res.status();
                        let text = res.text().await.unwrap_or_default();
                        return Err(Attempt::Fatal(refusal(status, &text)));
                    }
                    Ok(res) => Err(format!("the hub answered {}", res.status())),
                    Err(e) => Err(e.to_string()),
                }
            }
            Transport::WebSocket => {
                let ws_base = base.replacen("http", "ws", 1);
                let mut url = match reqwest::Url::parse(&format!("{ws_base}/v1/ws")) {
                    Ok(u) => u,
                    Err(e) => return Err(Attempt::Fatal(format!("bad hub URL {base:?}: {e}"))),
                };
                if let Some(t) = &token {
                    url.query_pairs_mut().append_pair("token", t);
                }
                let url = url.to_string();
                match tokio_tungstenite::connect_async(url).await {
                    Ok((mut ws, _)) => {
                        let mut m =
                            json!({"op": "subscribe", "id": "s", "filter": self.opts.filter});
                        match start {
                            Start::After(s) => m["after"] = s.into(),
                            Start::Last(n) => m["last"] = n.into(),
                            Start::Live => {}
                        }
                        match ws
                            .send(tokio_tungstenite::tungstenite::Message::Text(
                                m.to_string().into(),
                            ))
                            .await
                        {
                            Ok(()) => Ok(Conn::Ws(Box::new(ws))),
                            Err(e) => Err(e.to_string()),
                        }
                    }
                    Err(tokio_tungstenite::tungstenite::Error::Http(res))
                        if fatal(res.status().as_u16(), refresh) =>
                    {
                        let body = res
                            .body()
                            .as_deref()
                            .map(String::from_utf8_lossy)
                            .unwrap_or_default();
                        let status = reqwest::StatusCode::from_u16(res.status().as_u16())
                            .unwrap_or(reqwest::StatusCode::BAD_REQUEST);
                        return Err(Attempt::Fatal(refusal(status, &body)));
                    }
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        result.map_err(|e| {
            tracing::debug!(error = %e, "connection failed; will retry");
            Attempt::Retry(e)
        })
    }

    async fn wait_before_retry(&mut self, error: String) -> Result<(), ClientError> {
        self.failures += 1;
        if let Some(max) = self.opts.backoff.max_attempts {
            if self.failures > max {
                return Err(ClientError::GaveUp(self.failures - 1));
            }
        }
        // Equal jitter: reconnecting clients spread out, yet none retries at once.
        let wait = backoff_wait(&self.opts.backoff, self.failures, rand::random());
        if let Some(hook) = &self.status {
            hook(&Status::Reconnecting {
                error,
                attempt: self.failures,
                wait,
            });
        }
        tokio::time::sleep(wait).await;
        Ok(())
    }

    /// Takes a reset notice: the hub moved the cursor, so the resume point moves with it
    /// (after a retention reset to just before the oldest stored event; after an unknown
    /// cursor to the head the hub continues from).
    fn reset(&mut self, v: Value) {
        match v["reason"].as_str() {
            Some("retention") => {
                if let Some(oldest) = v["oldest"].as_u64() {
                    self.last_seq = oldest.checked_sub(1);
                }
            }
            Some("unknown_cursor") => {
                if let Some(head) = v["head"].as_u64() {
                    self.last_seq = Some(head);
                }
            }
            _ => {}
        }
        self.pending.push_back(Item::Reset(v));
    }

    /// Remembers where a live subscription that has seen nothing yet started, so that a
    /// reconnect resumes there and events published during an outage are not lost.
    fn opened(&mut self, head: Option<u64>) {
        if self.last_seq.is_none() && self.opened_at.is_none() {
            self.opened_at = head;
        }
    }

    /// Accepts an event unless it was handed out already.
    fn accept(&mut self, ev: Value) {
        let Some(seq) = ev.get("seq").and_then(Value::as_u64) else {
            return;
        };
        if self.last_seq.is_some_and(|l| seq <= l) {
            return;
        }
        self.last_seq = Some(seq);
        self.pending.push_back(Item::Event(ev));
    }

    /// The next event (or reset notice), reconnecting as needed.
    pub async fn next(&mut self) -> Result<Item, ClientError> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Ok(item);
            }
            let Some(conn) = self.conn.as_mut() else {
                match self.connect().await {
                    Ok(c) => {
                        self.conn = Some(c);
                        self.first = false;
                        if self.failures > 0 {
                            if let Some(hook) = &self.status {
                                let after = self.last_seq.or(self.opened_at);
                                hook(&Status::Resumed { after });
                            }
                        }
                        self.failures = 0;
                    }
                    Err(Attempt::Fatal(msg)) => return Err(ClientError::Refused(msg)),
                    Err(Attempt::Retry(e)) => self.wait_before_retry(e).await?,
                }
                continue;
            };
            let mut lost = false;
            match conn {
                Conn::Sse(body, parser) => match body.next().await {
                    Some(Ok(chunk)) => {
                        let messages = parser.feed(&chunk);
                        let head = parser.take_head();
                        self.opened(head);
                        for m in messages {
                            match m.event.as_str() {
                                // A control message has no id (an event that merely has this
                                // type carries its seq as id).
                                "crier.reset" if m.id.is_none() => {
                                    self.reset(serde_json::from_str(&m.data).unwrap_or(Value::Null))
                                }
                                _ => {
                                    if let Ok(ev) = serde_json::from_str::<Value>(&m.data) {
                                        self.accept(ev);
                                    }
                                }
                            }
                        }
                    }
                    _ => lost = true,
                },
                Conn::Ws(ws) => match ws.next().await {
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => {
                        let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                        match v["op"].as_str() {
                            Some("event") => self.accept(v["event"].clone()),
                            Some("subscribed") => self.opened(v["head"].as_u64()),
                            Some("reset") => self.reset(v),
                            // The store was briefly unavailable: reconnect and resume.
                            Some("error") if v["code"] == "store_unavailable" => lost = true,
                            Some("error") => {
                                return Err(ClientError::Refused(
                                    v["message"].as_str().unwrap_or("error").to_string(),
                                ))
                            }
                            _ => {}
                        }
                    }
                    Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
                    | Some(Err(_))
                    | None => lost = true,
                    Some(Ok(_)) => {}
                },
            }
            if lost {
                self.conn = None;
                self.wait_before_retry("the connection was lost".into())
                    .await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_equal_jitter_capped_at_max() {
        let b = Backoff::default();
        for (failures, step) in [(1, 1), (2, 2), (3, 4), (5, 16), (6, 30), (40, 30)] {
            let step = Duration::from_secs(step);
            assert_eq!(
                backoff_wait(&b, failures, 0.0),
                step / 2,
                "attempt {failures}"
            );
            assert_eq!(backoff_wait(&b, failures, 1.0), step, "attempt {failures}");
            let mid = backoff_wait(&b, failures, 0.5);
            assert!(mid > step / 2 && mid < step, "attempt {failures}: {mid:?}");
        }
    }

    #[test]
    fn refusals_read_as_the_hub_wrote_them() {
        let body = r#"{"error":{"code":"unauthorized","message":"the token has expired"}}"#;
        assert_eq!(
            refusal(reqwest::StatusCode::UNAUTHORIZED, body),
            "the token has expired (401 Unauthorized)"
        );
        assert_eq!(refusal(reqwest::StatusCode::FORBIDDEN, ""), "403 Forbidden");
    }
}

//! Shared helpers: an in-process hub on a real socket and a real SQLite file, plus real SSE
//! and WebSocket clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crier_server::Settings;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct Hub {
    pub addr: SocketAddr,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
}

impl Hub {
    pub async fn start() -> Hub {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut Settings)) -> Hub {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().to_path_buf();
        let mut h = Self::start_in(dir, tweak).await;
        h._tmp = Some(tmp);
        h
    }

    /// Starts a hub over an existing data directory (for restarts).
    pub async fn start_in(dir: PathBuf, tweak: impl FnOnce(&mut Settings)) -> Hub {
        let mut s = Settings::for_data_dir(&dir);
        s.durability = crier_store::Durability::Commit;
        s.shutdown_timeout = Duration::from_secs(2);
        tweak(&mut s);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            crier_server::run(s, listener, token)
                .await
                .expect("hub runs");
        });
        Hub {
            addr,
            shutdown,
            task,
            dir,
            _tmp: None,
            http: reqwest::Client::new(),
        }
    }

    /// Stops the hub and waits for it to flush; keeps the directory.
    pub async fn stop(mut self) -> (PathBuf, Option<tempfile::TempDir>) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, &mut self.task)
            .await
            .expect("hub stops in time")
            .expect("hub task");
        (self.dir.clone(), self._tmp.take())
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post_raw(
        &self,
        body: impl Into<reqwest::Body>,
        content_type: &str,
    ) -> (u16, Value) {
        let res = self
            .http
            .post(self.url("/v1/events"))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("POST /v1/events");
        let status = res.status().as_u16();
        let v = res.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    /// Publishes events (a JSON array); returns their seqs.
    pub async fn publish(&self, events: Value) -> Vec<u64> {
        let (status, v) = self.post_raw(events.to_string(), "application/json").await;
        assert_eq!(status, 201, "publish failed: {v}");
        v["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["seq"].as_u64().expect("seq"))
            .collect()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let res = self.http.get(self.url(path)).send().await.expect("GET");
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// All events (admin view), paging through history.
    pub async fn history_seqs(&self, query: &str) -> Vec<u64> {
        let mut after = 0;
        let mut out = Vec::new();
        loop {
            let (s, v) = self
                .get(&format!("/v1/events?limit=1000&after={after}&{query}"))
                .await;
            assert_eq!(s, 200, "{v}");
            out.extend(
                v["events"]
                    .as_array()
                    .expect("events")
                    .iter()
                    .map(|e| e["seq"].as_u64().expect("seq")),
            );
            match v["next_after"].as_u64() {
                Some(n) => after = n,
                None => return out,
            }
        }
    }

    pub async fn sse(&self, query: &str, last_event_id: Option<u64>) -> Sse {
        let mut req = self.http.get(self.url(&format!("/v1/stream?{query}")));
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let res = req.send().await.expect("GET /v1/stream");
        assert_eq!(res.status().as_u16(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Sse {
            body: Box::pin(res.bytes_stream()),
            buf: Vec::new(),
            pending: Default::default(),
        }
    }

    pub async fn ws(&self) -> Ws {
        let (stream, _) = tokio_tungstenite::connect_async(format!("ws://{}/v1/ws", self.addr))
            .await
            .expect("ws connect");
        let mut ws = Ws { stream };
        let welcome = ws.recv().await;
        assert_eq!(welcome["op"], "welcome", "{welcome}");
        ws
    }
}

pub fn ev(kind: &str) -> Value {
    json!({"type": kind})
}

/// One SSE message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub id: Option<u64>,
    pub event: String,
    pub data: String,
    pub comment: bool,
}

impl Msg {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data).expect("event JSON")
    }
}

type ByteStream =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

pub struct Sse {
    body: ByteStream,
    buf: Vec<u8>,
    pending: std::collections::VecDeque<Msg>,
}

impl Sse {
    pub fn from_response(res: reqwest::Response) -> Sse {
        Sse {
            body: Box::pin(res.bytes_stream()),
            buf: Vec::new(),
            pending: Default::default(),
        }
    }

    /// The next message or comment block, or None when the stream ended.
    pub async fn next_raw(&mut self) -> Option<Msg> {
        loop {
            if let Some(m) = self.pending.pop_front() {
                return Some(m);
            }
            if let Some(pos) = find_blank(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..pos).collect();
                let text = String::from_utf8(block).expect("utf8");
                let mut m = Msg {
                    id: None,
                    event: "message".into(),
                    data: String::new(),
                    comment: true,
                };
                for line in text.split('\n').filter(|l| !l.is_empty()) {
                    if let Some(c) = line.strip_prefix(':') {
                        let _ = c;
                        continue;
                    }
                    m.comment = false;
                    let (f, v) = line.split_once(": ").unwrap_or((line, ""));
                    match f {
                        "id" => m.id = Some(v.parse().expect("numeric id")),
                        "event" => m.event = v.to_string(),
                        "data" => m.data.push_str(v),
                        "retry" => m.event = "retry".into(),
                        _ => panic!("unexpected field {f}"),
                    }
                }
                self.pending.push_back(m);
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next event or reset (skipping comments and retry), within the default wait.
    pub async fn next(&mut self) -> Option<Msg> {
        tokio::time::timeout(WAIT, async {
            loop {
                let m = self.next_raw().await?;
                if !m.comment && m.event != "retry" {
                    return Some(m);
                }
            }
        })
        .await
        .expect("SSE message within the wait")
    }

    /// Collects `n` event seqs.
    pub async fn seqs(&mut self, n: usize) -> Vec<u64> {
        let mut out = Vec::new();
        while out.len() < n {
            let m = self.next().await.expect("stream open");
            assert_ne!(m.event, "crier.reset", "unexpected reset {}", m.data);
            out.push(m.id.expect("event id"));
        }
        out
    }
}

fn find_blank(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2)
}

pub struct Ws {
    pub stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub async fn send(&mut self, v: Value) {
        self.stream
            .send(Message::Text(v.to_string().into()))
            .await
            .expect("ws send");
    }

    pub async fn send_text(&mut self, s: &str) {
        self.stream
            .send(Message::Text(s.to_string().into()))
            .await
            .expect("ws send");
    }

    /// The next JSON message (skipping pings), within the wait.
    pub async fn recv(&mut self) -> Value {
        tokio::time::timeout(WAIT, async {
            loop {
                match self
                    .stream
                    .next()
                    .await
                    .expect("ws open")
                    .expect("ws frame")
                {
                    Message::Text(t) => return serde_json::from_str(&t).expect("json frame"),
                    Message::Close(c) => panic!("closed: {c:?}"),
                    _ => continue,
                }
            }
        })
        .await
        .expect("ws message within the wait")
    }

    pub async fn subscribe(&mut self, id: &str, filter: Value, after: Option<u64>) -> Value {
        let mut m = json!({"op": "subscribe", "id": id, "filter": filter});
        if let Some(a) = after {
            m["after"] = a.into();
        }
        self.send(m).await;
        let r = self.recv().await;
        assert_eq!(r["op"], "subscribed", "{r}");
        r
    }

    /// Collects `n` event seqs of subscription `sub`.
    pub async fn seqs(&mut self, sub: &str, n: usize) -> Vec<u64> {
        let mut out = Vec::new();
        while out.len() < n {
            let m = self.recv().await;
            assert_eq!(m["op"], "event", "{m}");
            assert_eq!(m["sub"], sub);
            out.push(m["event"]["seq"].as_u64().expect("seq"));
        }
        out
    }
}

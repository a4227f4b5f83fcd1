//! A hub in process on a real socket and a real SQLite file, as crier-server's tests start
//! it, with plain HTTP helpers and its SSE and WebSocket clients.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crier_server::Settings;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::{Sse, Ws};

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
        Self::start_on(dir, 0, tweak).await
    }

    /// Starts a hub over `dir` on 127.0.0.1:`port` (0 for any), waiting while a hub that
    /// just stopped still holds the port.
    pub async fn start_on(dir: PathBuf, port: u16, tweak: impl FnOnce(&mut Settings)) -> Hub {
        let mut s = Settings::for_data_dir(&dir);
        s.durability = crier_store::Durability::Commit;
        s.shutdown_timeout = Duration::from_secs(2);
        tweak(&mut s);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
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
        crate::embed_checks::seqs(&v)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let res = self.http.get(self.url(path)).send().await.expect("GET");
        let status = res.status().as_u16();
        (status, res.json::<Value>().await.unwrap_or(Value::Null))
    }

    /// GET `path` with a bearer `token` ("" for none): its JSON body, which must be JSON.
    pub async fn json(&self, path: &str, token: &str) -> Value {
        let mut req = self.http.get(self.url(path));
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        let res = req.send().await.expect("GET");
        res.json().await.expect("JSON body")
    }

    /// GET `path`: its body as text (a scrape of `/metrics`, a page).
    pub async fn text(&self, path: &str) -> String {
        let res = self.http.get(self.url(path)).send().await.expect("GET");
        res.text().await.expect("text body")
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
        Sse::from_response(res)
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

//! Webhook bookkeeping that fails for a while (the delivery record, the persisted cursor, the
//! subscription's status) loses and doubles nothing: delivery waits until the write
//! succeeds, so the stored state is true once it does, and a restart resends nothing.
//!
//! The hub runs on a real SQLite file and socket, with its subscription store wrapped in one
//! that fails chosen operations a chosen number of times; the receiver is a real HTTP server.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crier_core::log::BoxFuture;
use crier_core::webhook::{
    Delivery, DeliveryStatus, StatusCounts, WebhookError, WebhookPatch, WebhookStatus,
    WebhookStore, WebhookSub,
};
use crier_core::LogError;
use crier_server::{AppState, Settings};
use crier_store::{SqliteKeys, SqliteSubs};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(15);

/// A subscription store whose `record`, `advance` and `set_status` fail while armed.
struct Flaky {
    inner: SqliteSubs,
    fail: Mutex<HashMap<&'static str, usize>>,
    failed: AtomicUsize,
}

impl Flaky {
    fn arm(&self, op: &'static str, times: usize) {
        self.fail.lock().expect("lock").insert(op, times);
    }

    /// Fails `op` if armed (counting it down).
    fn check<'a, T: Send + 'static>(
        &self,
        op: &'static str,
    ) -> Option<BoxFuture<'a, Result<T, LogError>>> {
        let mut fail = self.fail.lock().expect("lock");
        let left = fail.get_mut(op)?;
        if *left == 0 {
            return None;
        }
        *left -= 1;
        self.failed.fetch_add(1, Ordering::SeqCst);
        Some(Box::pin(async move {
            Err(LogError::backend(std::io::Error::other(format!(
                "{op}: disk I/O error (injected)"
            ))))
        }))
    }
}

impl WebhookStore for Flaky {
    fn create<'a>(
        &'a self,
        s: &'a WebhookSub,
        max: Option<usize>,
    ) -> BoxFuture<'a, Result<(), WebhookError>> {
        self.inner.create(s, max)
    }
    fn get<'a>(
        &'a self,
        t: Option<&'a str>,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>> {
        self.inner.get(t, id)
    }
    fn list<'a>(&'a self, t: Option<&'a str>) -> BoxFuture<'a, Result<Vec<WebhookSub>, LogError>> {
        self.inner.list(t)
    }
    fn update<'a>(
        &'a self,
        t: &'a str,
        id: &'a str,
        p: &'a WebhookPatch,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>> {
        self.inner.update(t, id, p)
    }
    fn delete<'a>(&'a self, t: &'a str, id: &'a str) -> BoxFuture<'a, Result<bool, LogError>> {
        self.inner.delete(t, id)
    }
    fn advance<'a>(&'a self, id: &'a str, seq: u64) -> BoxFuture<'a, Result<(), LogError>> {
        self.check("advance")
            .unwrap_or_else(|| self.inner.advance(id, seq))
    }
    fn set_status<'a>(
        &'a self,
        id: &'a str,
        status: WebhookStatus,
        note: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), LogError>> {
        self.check("set_status")
            .unwrap_or_else(|| self.inner.set_status(id, status, note))
    }
    fn set_note<'a>(&'a self, id: &'a str, note: &'a str) -> BoxFuture<'a, Result<(), LogError>> {
        self.inner.set_note(id, note)
    }
    fn record<'a>(&'a self, t: &'a str, d: &'a Delivery) -> BoxFuture<'a, Result<(), LogError>> {
        self.check("record")
            .unwrap_or_else(|| self.inner.record(t, d))
    }
    fn delivery<'a>(
        &'a self,
        id: &'a str,
        seq: u64,
    ) -> BoxFuture<'a, Result<Option<Delivery>, LogError>> {
        self.inner.delivery(id, seq)
    }
    fn deliveries<'a>(
        &'a self,
        id: &'a str,
        status: Option<DeliveryStatus>,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Delivery>, LogError>> {
        self.inner.deliveries(id, status, limit)
    }
    fn redeliver<'a>(
        &'a self,
        t: &'a str,
        id: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<Option<WebhookSub>, LogError>> {
        self.inner.redeliver(t, id, after)
    }
    fn counts<'a>(
        &'a self,
        t: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(StatusCounts, StatusCounts), LogError>> {
        self.inner.counts(t)
    }
}

/// A running hub over `dir` with the flaky store.
struct Node {
    addr: std::net::SocketAddr,
    shutdown: CancellationToken,
    served: tokio::task::JoinHandle<()>,
    subs: Arc<Flaky>,
    http: reqwest::Client,
}

impl Node {
    async fn start(dir: &Path) -> Node {
        let mut s = Settings::for_data_dir(dir);
        s.durability = crier_store::Durability::Commit;
        s.webhooks.allow_private = true;
        s.webhooks.backoff = vec![Duration::from_millis(20)];
        s.shutdown_timeout = Duration::from_secs(2);
        let log = crier_server::open_log(&s).expect("log");
        let db = dir.join("crier.db");
        let subs = Arc::new(Flaky {
            inner: SqliteSubs::open(&db).expect("subs"),
            fail: Mutex::default(),
            failed: AtomicUsize::new(0),
        });
        let hub =
            crier_core::Hub::with_reader_buffer_bytes(log.clone(), s.limits.reader_buffer_bytes);
        crier_core::EventLog::set_commit_sink(log.as_ref(), hub.commit_sink());
        let shutdown = CancellationToken::new();
        let keys = Arc::new(SqliteKeys::open(&db).expect("keys"));
        let state = AppState::new(
            s,
            log.clone(),
            log,
            hub,
            keys,
            subs.clone(),
            Arc::new(crier_store::SqliteFilters::open(&db).expect("filters")),
            shutdown.clone(),
        );
        crier_server::webhooks::start_all(&state).await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let served = tokio::spawn({
            let state = state.clone();
            async move { crier_server::serve(state, listener).await.expect("serve") }
        });
        Node {
            addr,
            shutdown,
            served,
            subs,
            http: reqwest::Client::new(),
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.served)
            .await
            .expect("stops in time")
            .expect("serve task");
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("http://{}{path}", self.addr))
            .json(&body)
            .send()
            .await
            .expect("POST");
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.expect("json")
    }

    /// The subscription as stored (bypassing the flaky wrapper).
    async fn stored(&self, id: &str) -> WebhookSub {
        self.subs
            .inner
            .get(None, id)
            .await
            .expect("get")
            .expect("exists")
    }

    /// Waits until `check` holds for the stored subscription and its records.
    async fn until(&self, id: &str, what: &str, check: impl Fn(&WebhookSub, &[Delivery]) -> bool) {
        let deadline = Instant::now() + WAIT;
        loop {
            let sub = self.stored(id).await;
            let recs = self
                .subs
                .inner
                .deliveries(id, None, 100)
                .await
                .expect("records");
            if check(&sub, &recs) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: stored {sub:?} with records {recs:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A receiver that answers 200, or 500 for events whose type is `x.refused`; it keeps the
/// `webhook-id` of every request.
async fn receiver() -> (Arc<Mutex<Vec<String>>>, String) {
    crier_testkit::hooks::recording(|ev| async move {
        if ev["type"] == "x.refused" {
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        } else {
            axum::http::StatusCode::OK
        }
    })
    .await
}

/// A node over a fresh directory with a subscription to `x.*` delivering to [`receiver`]:
/// the directory, the ids the receiver got, the node and the subscription's id.
async fn subscribed() -> (tempfile::TempDir, Arc<Mutex<Vec<String>>>, Node, String) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (got, url) = receiver().await;
    let node = Node::start(tmp.path()).await;
    let sub = node
        .post(
            "/v1/subscriptions",
            json!({"webhook": {"url": url}, "filter": {"type": ["x.*"]}}),
        )
        .await;
    let id = sub["id"].as_str().expect("id").to_string();
    (tmp, got, node, id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_records_and_cursor_writes_lose_and_double_nothing() {
    let (tmp, got, node, id) = subscribed().await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let v = node
            .post(
                "/v1/events",
                json!({"id": format!("ev-{i}"), "type": "x.ok"}),
            )
            .await;
        ids.push(v["events"][0]["id"].as_str().expect("id").to_string());
    }
    node.until(&id, "the first events delivered", |s, _| s.cursor == 3)
        .await;

    // The last event's record and cursor writes fail three times each.
    node.subs.arm("record", 3);
    node.subs.arm("advance", 3);
    node.post("/v1/events", json!({"id": "ev-last", "type": "x.ok"}))
        .await;
    ids.push("ev-last".into());
    node.until(
        &id,
        "the cursor and the record of the last event written",
        |s, recs| {
            s.cursor == 4
                && recs
                    .iter()
                    .any(|r| r.seq == 4 && r.status == DeliveryStatus::Delivered)
        },
    )
    .await;
    assert_eq!(
        node.subs.failed.load(Ordering::SeqCst),
        6,
        "the failures happened"
    );
    assert_eq!(*got.lock().expect("lock"), ids, "each event once, in order");

    // After a restart nothing is sent again: a new event is the next thing the receiver sees.
    node.stop().await;
    let node = Node::start(tmp.path()).await;
    node.post("/v1/events", json!({"id": "ev-after", "type": "x.ok"}))
        .await;
    ids.push("ev-after".into());
    node.until(&id, "the event after the restart delivered", |s, _| {
        s.cursor == 5
    })
    .await;
    assert_eq!(
        *got.lock().expect("lock"),
        ids,
        "nothing was delivered twice"
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_pause_is_written_before_the_task_ends() {
    let (_tmp, got, node, id) = subscribed().await;
    node.subs.arm("set_status", 2);
    node.subs.arm("record", 1);
    // Refused on both attempts of the schedule: dead, and the subscription pauses.
    node.post("/v1/events", json!({"id": "ev-dead", "type": "x.refused"}))
        .await;
    node.until(
        &id,
        "the subscription paused with the dead record",
        |s, recs| {
            s.status == WebhookStatus::Paused
                && recs
                    .iter()
                    .any(|r| r.seq == 1 && r.status == DeliveryStatus::Dead)
        },
    )
    .await;
    assert_eq!(
        s_cursor(&node, &id).await,
        0,
        "a dead event is not skipped when pausing"
    );
    assert_eq!(node.subs.failed.load(Ordering::SeqCst), 3);
    assert_eq!(got.lock().expect("lock").len(), 2, "two attempts");
    node.stop().await;
}

async fn s_cursor(node: &Node, id: &str) -> u64 {
    node.stored(id).await.cursor
}

//! Real `crier` processes sharing the real PostgreSQL and fanning out over NATS (and again
//! over Redis), the broker reached through a loopback proxy the test can cut: identical
//! sequences on every node, a node killed with -9 while its client resumes elsewhere with
//! `Last-Event-ID`, a node joining later, a broker outage, and webhook dispatch moving when
//! the lease holder is killed. Skips with a notice when a service is unreachable, except
//! under CI=true.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crier_testkit::process::{free_port, serve_cmd, Proc};
use crier_testkit::proxy::Proxy;
use crier_testkit::services::{drop_schema, pg_url, reachable};
use crier_testkit::{until, Sse};
use serde_json::json;

const SKIPPING: &str = "the multi-process cluster test";

/// A `crier serve` node on the shared PostgreSQL log and a broker.
struct Node(Proc);

impl Node {
    async fn start(schema: &str, id: &str, broker: &str) -> Node {
        let port = free_port();
        let mut cmd = serve_cmd(env!("CARGO_BIN_EXE_crier"), &std::env::temp_dir(), port);
        cmd.env("CRIER_STORE", pg_url())
            .env("CRIER_STORE_SCHEMA", schema)
            .env("CRIER_BROKER", broker)
            .env("CRIER_NODE_ID", id)
            .env("CRIER_WEBHOOKS_ALLOW_PRIVATE", "true");
        let node = Node(Proc::spawn(cmd, port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if node.0.get("/readyz").await["broker"] == "ok" {
                return node;
            }
            assert!(Instant::now() < deadline, "node {id} did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn url(&self, path: &str) -> String {
        self.0.url(path)
    }

    async fn publish(&self, id: &str) -> u64 {
        let (_, v) = self
            .0
            .post("/v1/events", &json!({"type": "k.x", "id": id}))
            .await;
        v["events"][0]["seq"].as_u64().expect("seq")
    }

    async fn leads(&self) -> bool {
        self.0.get("/readyz").await["leader"] == true
    }
}

/// An SSE reader collecting seqs until its stream ends.
fn follow(
    url: String,
    last_event_id: Option<u64>,
) -> (Arc<Mutex<Vec<u64>>>, tokio::task::JoinHandle<()>) {
    let got: Arc<Mutex<Vec<u64>>> = Arc::default();
    let g = got.clone();
    let task = tokio::spawn(async move {
        let mut req = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id.to_string());
        }
        let Ok(res) = req.send().await else { return };
        let mut sse = Sse::from_response(res);
        while let Some(m) = sse.next_raw().await {
            if let Some(id) = m.id {
                g.lock().expect("lock").push(id);
            }
        }
    });
    (got, task)
}

/// Publishes the events `k{i:03}` for each `i` of `keys`, event `i` on `nodes[on(i)]`,
/// noting their ids in `ids`.
async fn publish_keys(
    nodes: &[Node],
    keys: std::ops::Range<usize>,
    on: impl Fn(usize) -> usize,
    ids: &mut Vec<String>,
) {
    for i in keys {
        let id = format!("k{i:03}");
        nodes[on(i)].publish(&id).await;
        ids.push(id);
    }
}

/// Waits up to `secs` seconds until a [`follow`]er has received `n` events; fails naming
/// `what`.
async fn holds(what: &str, secs: u64, got: &Mutex<Vec<u64>>, n: usize) {
    let within = Duration::from_secs(secs);
    until(what, within, || got.lock().expect("lock").len() >= n).await;
}

async fn cluster(scheme: &str, broker_port: u16, tag: &str) {
    let schema = format!("crier_procs_{tag}_{}", std::process::id());
    drop_schema(&schema).await;
    let proxy = Proxy::start(broker_port).await;
    let broker = format!("{scheme}://127.0.0.1:{}", proxy.port);
    let mut nodes = vec![
        Node::start(&schema, "n1", &broker).await,
        Node::start(&schema, "n2", &broker).await,
        Node::start(&schema, "n3", &broker).await,
    ];

    // A webhook receiver.
    let (hooks, hook) = crier_testkit::hooks::webhook_ids(axum::http::StatusCode::OK).await;
    let r = reqwest::Client::new()
        .post(nodes[2].url("/v1/subscriptions"))
        .json(&json!({"webhook": {"url": hook}}))
        .send()
        .await
        .expect("sub");
    assert_eq!(r.status().as_u16(), 201);

    // Subscribers on every node; publish round-robin.
    let readers: Vec<_> = nodes
        .iter()
        .map(|n| follow(n.url("/v1/stream?after=0"), None))
        .collect();
    let mut ids = Vec::new();
    publish_keys(&nodes, 0..60, |i| i % 3, &mut ids).await;
    for (k, (got, _)) in readers.iter().enumerate() {
        holds(&format!("node {k} to deliver 60 events"), 15, got, 60).await;
    }
    let first: Vec<u64> = readers[0].0.lock().expect("lock").clone();
    assert_eq!(first, (1..=60).collect::<Vec<u64>>());
    for (got, _) in &readers {
        assert_eq!(
            *got.lock().expect("lock"),
            first,
            "every node delivers the identical sequence"
        );
    }

    // kill -9 the node holding the lease (its client resumes on another node), while
    // publishing continues elsewhere.
    let leader_idx = {
        let mut found = None;
        let deadline = Instant::now() + Duration::from_secs(15);
        while found.is_none() {
            for (i, n) in nodes.iter().enumerate() {
                if n.leads().await {
                    found = Some(i);
                }
            }
            assert!(Instant::now() < deadline, "no node holds the lease");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        found.expect("leader")
    };
    let victim = nodes.remove(leader_idx);
    let (victim_got, victim_task) = readers.into_iter().nth(leader_idx).expect("reader");
    drop(victim); // SIGKILL
    let _ = victim_task.await;
    let last_seen = *victim_got.lock().expect("lock").last().expect("seen");
    publish_keys(&nodes, 60..90, |i| i % 2, &mut ids).await;
    let (resumed, _t) = follow(nodes[0].url("/v1/stream"), Some(last_seen));
    let missed = 90 - last_seen as usize;
    holds("the resumed client to catch up", 15, &resumed, missed).await;
    assert_eq!(
        *resumed.lock().expect("lock"),
        (last_seen + 1..=90).collect::<Vec<u64>>(),
        "nothing lost, nothing doubled"
    );

    // A node joining later serves history and live.
    nodes.push(Node::start(&schema, "n4", &broker).await);
    let (late, _t) = follow(nodes[2].url("/v1/stream?after=0"), None);
    holds("the new node's history", 15, &late, 90).await;

    // The broker goes away: delivery goes on by polling; then it returns.
    proxy.cut();
    publish_keys(&nodes, 90..100, |_| 0, &mut ids).await;
    holds("delivery during the broker outage", 15, &late, 100).await;
    proxy.restore().await;
    publish_keys(&nodes, 100..105, |_| 1, &mut ids).await;
    holds("delivery after the broker returned", 20, &late, 105).await;
    assert_eq!(*late.lock().expect("lock"), (1..=105).collect::<Vec<u64>>());

    // Webhook dispatch moved to a surviving node: every event delivered, in order of first delivery.
    until(
        "every webhook after the leader was killed",
        Duration::from_secs(30),
        || {
            let seen: HashSet<String> = hooks.lock().expect("lock").iter().cloned().collect();
            ids.iter().all(|i| seen.contains(i))
        },
    )
    .await;
    let mut first_seen = Vec::new();
    let mut seen = HashSet::new();
    for id in hooks.lock().expect("lock").iter() {
        if seen.insert(id.clone()) {
            first_seen.push(id.clone());
        }
    }
    assert_eq!(first_seen, ids, "webhooks in order, none skipped");
    drop(nodes);
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_over_nats() {
    if !reachable(5432, "PostgreSQL", SKIPPING).await || !reachable(4222, "NATS", SKIPPING).await {
        return;
    }
    cluster("nats", 4222, "nats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_over_redis() {
    if !reachable(5432, "PostgreSQL", SKIPPING).await || !reachable(6379, "Redis", SKIPPING).await {
        return;
    }
    cluster("redis", 6379, "redis").await;
}

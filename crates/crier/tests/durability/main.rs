//! The real binary under `kill -9`, SIGTERM and slow readers: acknowledged events survive,
//! seqs stay gapless, readers resume without loss, webhooks deliver everything at least
//! once, and slow readers cost bounded memory.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use rand::Rng;
use serde_json::{json, Value};

struct Hub {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Hub {
    async fn start(dir: &Path, env: &[(&str, &str)]) -> Hub {
        for _ in 0..5 {
            let port = free_port();
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_crier"));
            cmd.args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--data-dir",
            ])
            .arg(dir)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            for (k, v) in env {
                cmd.env(k, v);
            }
            let child = cmd.spawn().expect("spawn crier");
            let mut hub = Hub {
                child,
                port,
                dir: dir.to_path_buf(),
            };
            let deadline = Instant::now() + Duration::from_secs(15);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = hub.child.try_wait() {
                    break;
                }
                if let Ok(r) = reqwest::get(hub.url("/healthz")).await {
                    if r.status().is_success() {
                        return hub;
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        }
        panic!("the hub did not start");
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    fn kill9(mut self) -> PathBuf {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
        self.dir.clone()
    }

    fn sigterm(mut self) -> (PathBuf, bool) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (self.dir.clone(), status.success());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the hub did not stop on SIGTERM");
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("proc status");
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|n| n.parse().ok())
            .expect("VmRSS")
    }

    /// Every stored event as (seq, id), paging through history.
    async fn history(&self) -> Vec<(u64, String)> {
        all_events(self)
            .await
            .iter()
            .map(|e| {
                (
                    e["seq"].as_u64().expect("seq"),
                    e["id"].as_str().expect("id").to_string(),
                )
            })
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_never_loses_an_acknowledged_event() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut acked: Vec<(String, u64)> = Vec::new();
    for iteration in 0..10 {
        let durability = if iteration % 2 == 0 {
            "fsync"
        } else {
            "commit"
        };
        let hub = Hub::start(tmp.path(), &[("CRIER_DURABILITY", durability)]).await;
        let got: Arc<Mutex<Vec<(String, u64)>>> = Arc::default();
        let mut tasks = Vec::new();
        for p in 0..4 {
            let url = hub.url("/v1/events");
            let got = got.clone();
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                for n in 0.. {
                    let size = 1 + (n * 7 + p) % 20;
                    let batch: Vec<Value> =
                        (0..size).map(|k| json!({"type": "crash.test", "id": format!("it{iteration}-p{p}-{n}-{k}")})).collect();
                    let Ok(res) = client.post(&url).json(&batch).send().await else { return };
                    if res.status().as_u16() != 201 {
                        return;
                    }
                    let Ok(v) = res.json::<Value>().await else { return };
                    let mut g = got.lock().expect("lock");
                    for r in v["events"].as_array().expect("events") {
                        g.push((r["id"].as_str().expect("id").to_string(), r["seq"].as_u64().expect("seq")));
                    }
                }
            }));
        }
        let delay = rand::rng().random_range(50..400);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let dir = hub.kill9();
        for t in tasks {
            let _ = t.await;
        }
        acked.extend(got.lock().expect("lock").drain(..));

        let hub = Hub::start(&dir, &[]).await;
        let stored = hub.history().await;
        let seqs: Vec<u64> = stored.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "iteration {iteration}: seqs are gapless"
        );
        let ids: HashSet<&str> = stored.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(
            ids.len(),
            stored.len(),
            "iteration {iteration}: no id stored twice"
        );
        let by_id: std::collections::HashMap<&str, u64> =
            stored.iter().map(|(s, id)| (id.as_str(), *s)).collect();
        for (id, seq) in &acked {
            assert_eq!(
                by_id.get(id.as_str()),
                Some(seq),
                "iteration {iteration}: acknowledged {id} at seq {seq} is stored once, at its seq"
            );
        }
        assert!(
            !acked.is_empty(),
            "publishers got acknowledgements before the kill"
        );
        // Publishing an acknowledged id again is a duplicate with the original seq.
        let (id, seq) = acked[rand::rng().random_range(0..acked.len())].clone();
        let v: Value = reqwest::Client::new()
            .post(hub.url("/v1/events"))
            .json(&json!({"type": "crash.test", "id": id}))
            .send()
            .await
            .expect("republish")
            .json()
            .await
            .expect("json");
        assert_eq!(
            v["events"][0],
            json!({"id": id, "seq": seq, "duplicate": true})
        );
        let _ = hub.kill9();
    }
}

async fn read_sse(
    url: String,
    last_event_id: Option<u64>,
    want: usize,
    tx: tokio::sync::mpsc::UnboundedSender<u64>,
) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let res = req.send().await.expect("stream");
    let mut body = res.bytes_stream();
    let mut buf = String::new();
    let mut n = 0;
    while let Some(Ok(chunk)) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(pos) = buf.find("\n\n") {
            let block: String = buf.drain(..pos + 2).collect();
            if let Some(id) = block.lines().find_map(|l| l.strip_prefix("id: ")) {
                let _ = tx.send(id.parse().expect("numeric id"));
                n += 1;
                if n == want {
                    return;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_streams_cleanly_and_readers_resume_across_restarts() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let hub = Hub::start(tmp.path(), &[]).await;
    let client = reqwest::Client::new();
    let publish = |hub: &Hub, types: Vec<&str>| {
        let url = hub.url("/v1/events");
        let client = client.clone();
        let batch: Vec<Value> = types.iter().map(|t| json!({"type": t})).collect();
        async move {
            let v: Value = client
                .post(url)
                .json(&batch)
                .send()
                .await
                .expect("publish")
                .json()
                .await
                .expect("json");
            v["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["seq"].as_u64().expect("seq"))
                .collect::<Vec<u64>>()
        }
    };
    let first = publish(&hub, vec!["keep.a", "drop.a", "keep.b"]).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let stream = tokio::spawn(read_sse(
        hub.url("/v1/stream?type=keep.*&after=0"),
        None,
        usize::MAX,
        tx,
    ));
    let mut seen = vec![
        rx.recv().await.expect("event"),
        rx.recv().await.expect("event"),
    ];
    assert_eq!(seen, vec![first[0], first[2]]);
    let (dir, clean) = hub.sigterm();
    assert!(clean, "the hub exits 0 on SIGTERM");
    tokio::time::timeout(Duration::from_secs(5), stream)
        .await
        .expect("the stream ended with the hub")
        .expect("reader");

    let hub = Hub::start(&dir, &[]).await;
    let missed = publish(&hub, vec!["drop.b", "keep.c", "keep.d", "drop.c"]).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let last = *seen.last().expect("seen");
    let resumed = tokio::spawn(read_sse(
        hub.url("/v1/stream?type=keep.*"),
        Some(last),
        3,
        tx,
    ));
    seen.push(rx.recv().await.expect("missed 1"));
    seen.push(rx.recv().await.expect("missed 2"));
    let live = publish(&hub, vec!["keep.e"]).await;
    seen.push(rx.recv().await.expect("live"));
    resumed.await.expect("reader");
    assert_eq!(
        seen,
        vec![first[0], first[2], missed[1], missed[2], live[0]],
        "exactly the missed events, in order, then live"
    );
    let stored = hub.history().await;
    assert_eq!(stored.len(), 8);
    let _ = hub.sigterm();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_deliver_everything_after_kill_9() {
    // A receiver that answers slowly, so deliveries are in flight when the hub dies.
    let got: Arc<Mutex<Vec<String>>> = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap| {
            let g = g.clone();
            async move {
                let pause = Duration::from_millis(rand::rng().random_range(1..15));
                tokio::time::sleep(pause).await;
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                g.lock().expect("lock").push(id);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let hook = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("receiver") });

    let tmp = tempfile::tempdir().expect("tempdir");
    let env = [
        ("CRIER_WEBHOOKS_ALLOW_PRIVATE", "true"),
        ("CRIER_WEBHOOKS_BACKOFF", "50ms,100ms,200ms"),
    ];
    let hub = Hub::start(tmp.path(), &env).await;
    let client = reqwest::Client::new();
    let sub: Value = client
        .post(hub.url("/v1/subscriptions"))
        .json(&json!({"webhook": {"url": hook}, "filter": {"type": ["w.*"]}}))
        .send()
        .await
        .expect("create")
        .json()
        .await
        .expect("json");
    let sub_id = sub["id"].as_str().expect("id").to_string();
    let ids: Vec<String> = (0..300).map(|i| format!("w{i:03}")).collect();
    for chunk in ids.chunks(50) {
        let batch: Vec<Value> = chunk
            .iter()
            .map(|id| json!({"type": "w.x", "id": id}))
            .collect();
        assert_eq!(
            client
                .post(hub.url("/v1/events"))
                .json(&batch)
                .send()
                .await
                .expect("publish")
                .status()
                .as_u16(),
            201
        );
    }
    // Let some deliveries happen, then kill the hub mid-flight.
    let deadline = Instant::now() + Duration::from_secs(10);
    while got.lock().expect("lock").len() < 40 {
        assert!(Instant::now() < deadline, "deliveries did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before: Value = client
        .get(hub.url(&format!("/v1/subscriptions/{sub_id}")))
        .send()
        .await
        .expect("sub")
        .json()
        .await
        .expect("json");
    let cursor_before = before["cursor"].as_u64().expect("cursor");
    let dir = hub.kill9();
    let hub = Hub::start(&dir, &env).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let received: HashSet<String> = got.lock().expect("lock").iter().cloned().collect();
        if ids.iter().all(|id| received.contains(id)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not every event was delivered after the restart: {} of 300",
            received.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Order per subscription: first deliveries of each id are in seq order.
    let log = got.lock().expect("lock").clone();
    let mut first_seen = Vec::new();
    let mut seen = HashSet::new();
    for id in &log {
        if seen.insert(id.clone()) {
            first_seen.push(id.clone());
        }
    }
    assert_eq!(first_seen, ids, "delivered in order, none skipped");
    let v: Value = client
        .get(hub.url(&format!("/v1/subscriptions/{sub_id}")))
        .send()
        .await
        .expect("sub")
        .json()
        .await
        .expect("json");
    assert!(
        v["cursor"].as_u64().expect("cursor") >= cursor_before,
        "the cursor never moves back"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let v: Value = client
            .get(hub.url(&format!("/v1/subscriptions/{sub_id}")))
            .send()
            .await
            .expect("sub")
            .json()
            .await
            .expect("json");
        if v["cursor"] == 300 {
            break;
        }
        assert!(Instant::now() < deadline, "cursor stuck at {}", v["cursor"]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_cost_bounded_memory_and_miss_nothing() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let env = [
        ("CRIER_LIMITS_QUEUE_PER_CONNECTION", "256"),
        ("CRIER_HEARTBEAT", "60s"),
        ("CRIER_DURABILITY", "commit"),
    ];
    let hub = Hub::start(tmp.path(), &env).await;
    let client = reqwest::Client::new();
    // Slow SSE reader: opens the stream and does not read.
    let slow_sse = client
        .get(hub.url("/v1/stream?after=0"))
        .send()
        .await
        .expect("slow sse");
    // Slow WebSocket reader: subscribes and stops reading.
    let (mut slow_ws, _) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{}/v1/ws", hub.port))
            .await
            .expect("ws");
    use futures_util::SinkExt;
    slow_ws
        .send(tokio_tungstenite::tungstenite::Message::Text(
            json!({"op": "subscribe", "id": "s", "filter": {}, "after": 0})
                .to_string()
                .into(),
        ))
        .await
        .expect("subscribe");
    // A fast reader.
    let total = 20_000usize;
    let (tx, mut fast_rx) = tokio::sync::mpsc::unbounded_channel();
    let fast = tokio::spawn(read_sse(hub.url("/v1/stream?after=0"), None, total, tx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = hub.rss_kib();
    let payload = "x".repeat(2000);
    for chunk in 0..(total / 200) {
        let batch: Vec<Value> = (0..200)
            .map(|i| json!({"type": "slow.test", "data": {"n": chunk * 200 + i, "pad": payload}}))
            .collect();
        assert_eq!(
            client
                .post(hub.url("/v1/events"))
                .json(&batch)
                .send()
                .await
                .expect("publish")
                .status()
                .as_u16(),
            201
        );
    }
    let published_at = Instant::now();
    let mut fast_got = Vec::with_capacity(total);
    while fast_got.len() < total {
        let seq = tokio::time::timeout(Duration::from_secs(20), fast_rx.recv())
            .await
            .expect("fast reader keeps pace")
            .expect("open");
        fast_got.push(seq);
    }
    let fast_lag = published_at.elapsed();
    fast.await.expect("fast");
    assert_eq!(fast_got, (1..=total as u64).collect::<Vec<_>>());
    assert!(
        fast_lag < Duration::from_secs(10),
        "the fast reader was slowed: {fast_lag:?}"
    );
    let rss_after = hub.rss_kib();
    let growth_mib = (rss_after.saturating_sub(rss_before)) as f64 / 1024.0;
    let published_mib = (total * 2100) as f64 / (1024.0 * 1024.0);
    eprintln!("hub RSS grew {growth_mib:.1} MiB while {published_mib:.1} MiB piled up for each of two stalled readers");
    assert!(
        growth_mib < 40.0,
        "slow readers grew the hub by {growth_mib:.1} MiB"
    );
    let metrics = client
        .get(hub.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    let fallbacks: f64 = metrics
        .lines()
        .find(|l| l.starts_with("crier_queue_fallbacks_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(fallbacks > 0.0, "the stalled readers fell back to the log");

    // Now the slow readers read: every event, once, in order.
    let mut body = slow_sse.bytes_stream();
    let mut buf = String::new();
    let mut sse_got = Vec::with_capacity(total);
    while sse_got.len() < total {
        let chunk = tokio::time::timeout(Duration::from_secs(20), body.next())
            .await
            .expect("slow sse reads")
            .expect("open")
            .expect("chunk");
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(pos) = buf.find("\n\n") {
            let block: String = buf.drain(..pos + 2).collect();
            if let Some(id) = block.lines().find_map(|l| l.strip_prefix("id: ")) {
                sse_got.push(id.parse::<u64>().expect("id"));
            }
        }
    }
    assert_eq!(
        sse_got,
        (1..=total as u64).collect::<Vec<_>>(),
        "the slow SSE reader got every event once, in order"
    );
    let mut ws_got = Vec::with_capacity(total);
    while ws_got.len() < total {
        let msg = tokio::time::timeout(Duration::from_secs(20), slow_ws.next())
            .await
            .expect("slow ws reads")
            .expect("open")
            .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["op"] == "event" {
                ws_got.push(v["event"]["seq"].as_u64().expect("seq"));
            }
        }
    }
    assert_eq!(
        ws_got,
        (1..=total as u64).collect::<Vec<_>>(),
        "the slow WebSocket reader got every event once, in order"
    );
}

/// Every stored event, whole, paging through history.
async fn all_events(hub: &Hub) -> Vec<Value> {
    let client = reqwest::Client::new();
    let mut after = 0;
    let mut out = Vec::new();
    loop {
        let v: Value = client
            .get(hub.url(&format!("/v1/events?limit=1000&after={after}")))
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("history json");
        out.extend(v["events"].as_array().expect("events").iter().cloned());
        match v["next_after"].as_u64() {
            Some(n) => after = n,
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_mutations_keeps_entities_and_their_events_in_agreement() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Acknowledged changes: (seqs from Crier-Seq).
    let mut acked: Vec<u64> = Vec::new();
    let mut acked_changes = 0usize;
    for iteration in 0..6 {
        let durability = if iteration % 2 == 0 {
            "fsync"
        } else {
            "commit"
        };
        let hub = Hub::start(tmp.path(), &[("CRIER_DURABILITY", durability)]).await;
        let got: Arc<Mutex<Vec<u64>>> = Arc::default();
        let changes = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for w in 0..4u64 {
            let base = hub.url("");
            let got = got.clone();
            let changes = changes.clone();
            tasks.push(tokio::spawn(async move {
                let client = reqwest::Client::new();
                for n in 0u64.. {
                    let d = (n * 3 + w) % 8;
                    let g = (n + w) % 3;
                    let (method, path, body) = match (n + w) % 6 {
                        0 | 1 => (reqwest::Method::PUT, format!("/v1/entities/device/d{d}"), Some(json!({"w": w, "n": n, "tag": format!("t{}", n % 4)}))),
                        2 => (reqwest::Method::PATCH, format!("/v1/entities/device/d{d}"), Some(json!({"n": n, "note": if n % 2 == 0 { Value::Null } else { json!("x") }}))),
                        3 => (reqwest::Method::PUT, format!("/v1/entities/group/g{g}"), Some(json!({"n": n}))),
                        4 => (reqwest::Method::PUT, format!("/v1/links/member_of/device/d{d}/group/g{g}"), None),
                        _ => (reqwest::Method::DELETE, format!("/v1/entities/{}", if n % 4 == 0 { format!("group/g{g}") } else { format!("device/d{d}") }), None),
                    };
                    let mut req = client.request(method, format!("{base}{path}"));
                    if let Some(b) = body {
                        req = req.json(&b);
                    }
                    let Ok(res) = req.send().await else { return };
                    let status = res.status().as_u16();
                    if status >= 500 {
                        return;
                    }
                    if (200..300).contains(&status) {
                        let seqs: Vec<u64> = res
                            .headers()
                            .get("crier-seq")
                            .and_then(|v| v.to_str().ok())
                            .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
                            .unwrap_or_default();
                        changes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        got.lock().expect("lock").extend(seqs);
                    }
                }
            }));
        }
        let delay = rand::rng().random_range(100..500);
        tokio::time::sleep(Duration::from_millis(delay)).await;
        let dir = hub.kill9();
        for t in tasks {
            let _ = t.await;
        }
        acked.extend(got.lock().expect("lock").drain(..));
        acked_changes += changes.load(std::sync::atomic::Ordering::Relaxed);

        let hub = Hub::start(&dir, &[]).await;
        let events = all_events(&hub).await;
        let seqs: HashSet<u64> = events.iter().filter_map(|e| e["seq"].as_u64()).collect();
        for s in &acked {
            assert!(
                seqs.contains(s),
                "iteration {iteration}: acknowledged change event {s} is gone"
            );
        }
        // Replay the entity events: the last event of each entity names its stored state,
        // and versions grow by one per event with no gap.
        let mut last: std::collections::HashMap<String, (i64, Value)> = Default::default();
        let mut links: HashSet<(String, String, String)> = HashSet::new();
        for e in &events {
            let d = &e["data"];
            let ty = e["type"].as_str().unwrap_or("");
            if ty == "link.created" || ty == "link.deleted" {
                let k = (
                    d["type"].as_str().unwrap_or("").to_string(),
                    d["source"].as_str().unwrap_or("").to_string(),
                    d["target"].as_str().unwrap_or("").to_string(),
                );
                assert!(
                    if ty == "link.created" {
                        links.insert(k)
                    } else {
                        links.remove(&k)
                    },
                    "iteration {iteration}: {ty} out of step at seq {}",
                    e["seq"]
                );
                continue;
            }
            let key = format!(
                "{}/{}",
                d["kind"].as_str().unwrap_or(""),
                d["id"].as_str().unwrap_or("")
            );
            let version = d["version"].as_i64().expect("version");
            let prev = last.get(&key).map_or(0, |(v, _)| *v);
            assert_eq!(
                version,
                prev + 1,
                "iteration {iteration}: {key} versions in its events"
            );
            let value = if ty.ends_with(".deleted") {
                Value::Null
            } else {
                d["value"].clone()
            };
            last.insert(key, (version, value));
        }
        let client = reqwest::Client::new();
        for (key, (version, value)) in &last {
            let res = client
                .get(hub.url(&format!("/v1/entities/{key}")))
                .send()
                .await
                .expect("get");
            if value.is_null() {
                assert_eq!(
                    res.status(),
                    404,
                    "iteration {iteration}: {key} was deleted by its last event"
                );
            } else {
                assert_eq!(res.status(), 200, "iteration {iteration}: {key}");
                let v: Value = res.json().await.expect("json");
                assert_eq!(
                    v["version"].as_i64(),
                    Some(*version),
                    "iteration {iteration}: {key} version"
                );
                assert_eq!(&v["value"], value, "iteration {iteration}: {key} value");
            }
        }
        for kind in ["device", "group"] {
            let v: Value = client
                .get(hub.url(&format!("/v1/entities/{kind}?limit=1000")))
                .send()
                .await
                .expect("list")
                .json()
                .await
                .expect("json");
            for ent in v["entities"].as_array().expect("entities") {
                let key = format!("{kind}/{}", ent["id"].as_str().unwrap_or(""));
                assert!(
                    last.get(&key).is_some_and(|(_, v)| !v.is_null()),
                    "iteration {iteration}: {key} stored without its events"
                );
            }
        }
        let v: Value = client
            .get(hub.url("/v1/links?limit=1000"))
            .send()
            .await
            .expect("links")
            .json()
            .await
            .expect("json");
        let stored: HashSet<(String, String, String)> = v["links"]
            .as_array()
            .expect("links")
            .iter()
            .map(|l| {
                (
                    l["type"].as_str().unwrap_or("").to_string(),
                    l["source"].as_str().unwrap_or("").to_string(),
                    l["target"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        assert_eq!(
            stored, links,
            "iteration {iteration}: links and their events agree"
        );
        drop(hub);
    }
    assert!(
        acked_changes > 50,
        "the writers got changes through ({acked_changes})"
    );
}

//! Chaos: 200 clients (SSE, WebSocket and GraphQL-WS subscriptions, with varied filters) reach
//! the hub through a loopback TCP proxy that cuts connections at random, mid-frame or not,
//! while events are published at 2,000 a second. Each client resumes after the last seq it
//! received (`Last-Event-ID`, `after`, the GraphQL `after` argument) every time it is cut.
//!
//! Passes when every client ends with exactly the events of the log's history that match its
//! filter: in order, none missing, none twice.
//!
//! `CRIER_CHAOS_SECS` sets how long events are published (60 s by default); the figures of a
//! run are printed at the end (`--nocapture` shows them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crier_testkit::Hub;
use futures_util::{SinkExt, StreamExt};
use rand::Rng;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

const CLIENTS: usize = 200;
const RATE: u64 = 2_000;
/// Mean life of a proxied connection before the proxy cuts it.
const MEAN_LIFE: Duration = Duration::from_secs(4);
/// How long the clients get, after the last publish, to catch up (plus a fifth of the
/// publishing time).
const DRAIN: Duration = Duration::from_secs(120);

fn publish_for() -> Duration {
    let secs = std::env::var("CRIER_CHAOS_SECS")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or(60);
    Duration::from_secs(secs.max(1))
}

// ---------------------------------------------------------------------------------------
// The proxy: forwards each accepted connection to the hub until it is cut.

struct Proxy {
    addr: std::net::SocketAddr,
    conns: Mutex<HashMap<u64, CancellationToken>>,
    cuts: AtomicU64,
    accepted: AtomicU64,
}

impl Proxy {
    async fn start(target: std::net::SocketAddr, stop: CancellationToken) -> Arc<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let proxy = Arc::new(Proxy {
            addr: listener.local_addr().expect("proxy addr"),
            conns: Mutex::new(HashMap::new()),
            cuts: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
        });
        let p = proxy.clone();
        tokio::spawn(async move {
            let mut next = 0u64;
            loop {
                let (mut down, _) = tokio::select! {
                    _ = stop.cancelled() => return,
                    a = listener.accept() => match a {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                };
                next += 1;
                let id = next;
                p.accepted.fetch_add(1, Ordering::Relaxed);
                let cut = stop.child_token();
                p.conns
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(id, cut.clone());
                let p2 = p.clone();
                tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(target).await {
                        let _ = down.set_nodelay(true);
                        let _ = up.set_nodelay(true);
                        tokio::select! {
                            _ = cut.cancelled() => {}
                            _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        }
                    }
                    // Both sockets are dropped here: the client sees the cut wherever it was.
                    p2.conns
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&id);
                });
            }
        });
        proxy
    }

    /// Cuts each open connection with the probability that gives it a mean life of
    /// [`MEAN_LIFE`] when called every `tick`.
    fn cut_some(&self, tick: Duration) {
        let p = tick.as_secs_f64() / MEAN_LIFE.as_secs_f64();
        let mut rng = rand::rng();
        let conns = self.conns.lock().unwrap_or_else(|e| e.into_inner());
        for token in conns.values() {
            if !token.is_cancelled() && rng.random_bool(p) {
                token.cancel();
                self.cuts.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// The clients.

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Sse,
    Ws,
    Graphql,
}

/// What one client has seen.
#[derive(Default)]
struct Seen {
    seqs: Vec<u64>,
    /// Anything that should not happen: a seq not above the last one, a reset, an error.
    faults: Vec<String>,
    connects: u64,
}

impl Seen {
    fn push(&mut self, seq: u64) {
        if let Some(&last) = self.seqs.last() {
            if seq <= last {
                self.faults.push(format!("seq {seq} after {last}"));
            }
        }
        self.seqs.push(seq);
    }
}

struct Client {
    kind: Kind,
    filter: Value,
    seen: Mutex<Seen>,
}

impl Client {
    fn last(&self) -> u64 {
        self.lock().seqs.last().copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fault(&self, f: String) {
        self.lock().faults.push(f);
    }
}

/// The filter as the query string of `/v1/stream` and `/v1/events`.
fn query_of(filter: &Value) -> String {
    let mut q = Vec::new();
    for (k, v) in filter.as_object().expect("filter object") {
        let text = match v {
            Value::Array(items) => items
                .iter()
                .map(|i| i.as_str().expect("string item"))
                .collect::<Vec<_>>()
                .join(","),
            Value::String(s) => s.clone(),
            other => panic!("filter value {other}"),
        };
        q.push(format!("{k}={text}"));
    }
    q.join("&")
}

/// Runs one client until `stop`: connect, resume after the last seq, read until cut, again.
async fn run_client(client: Arc<Client>, proxy: std::net::SocketAddr, stop: CancellationToken) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .expect("http client");
    while !stop.is_cancelled() {
        client.lock().connects += 1;
        let after = client.last();
        let ended = match client.kind {
            Kind::Sse => sse_session(&client, &http, proxy, after, &stop).await,
            Kind::Ws => ws_session(&client, proxy, after, &stop).await,
            Kind::Graphql => graphql_session(&client, proxy, after, &stop).await,
        };
        if let Err(e) = ended {
            // Refusals that are not the proxy's doing are faults; broken connections are not.
            if e.starts_with("refused") {
                client.fault(e);
            }
        }
        // A short, jittered pause before reconnecting, as real clients back off.
        let pause = Duration::from_millis(rand::rng().random_range(5..50));
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

async fn sse_session(
    client: &Client,
    http: &reqwest::Client,
    proxy: std::net::SocketAddr,
    after: u64,
    stop: &CancellationToken,
) -> Result<(), String> {
    let url = format!("http://{proxy}/v1/stream?{}", query_of(&client.filter));
    let res = http
        .get(url)
        .header("Last-Event-ID", after.to_string())
        .send()
        .await
        .map_err(|e| format!("broken: {e}"))?;
    if !res.status().is_success() {
        return Err(format!("refused: SSE answered {}", res.status()));
    }
    let mut body = res.bytes_stream();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let chunk = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            c = body.next() => c,
        };
        match chunk {
            Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
            Some(Err(e)) => return Err(format!("broken: {e}")),
            None => return Err("broken: the stream ended".into()),
        }
        // Only complete blocks count: a block cut before its blank line is read again.
        let mut start = 0;
        while let Some(end) = buf[start..].windows(2).position(|w| w == b"\n\n") {
            let block = &buf[start..start + end];
            start += end + 2;
            let text = std::str::from_utf8(block).map_err(|e| format!("bad UTF-8: {e}"))?;
            let mut id = None;
            let mut event = "";
            for line in text.split('\n') {
                if let Some(v) = line.strip_prefix("id: ") {
                    id = v.parse::<u64>().ok();
                } else if let Some(v) = line.strip_prefix("event: ") {
                    event = v;
                }
            }
            if event == "crier.reset" {
                client.fault(format!("reset: {text}"));
            } else if let Some(seq) = id {
                client.lock().push(seq);
            }
        }
        buf.drain(..start);
    }
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// The next text frame as JSON (answering pings), or why the socket ended.
async fn next_json(ws: &mut Socket, stop: &CancellationToken) -> Result<Option<Value>, String> {
    loop {
        let m = tokio::select! {
            _ = stop.cancelled() => return Ok(None),
            m = ws.next() => m,
        };
        match m {
            Some(Ok(Message::Text(t))) => {
                return serde_json::from_str(&t)
                    .map(Some)
                    .map_err(|e| format!("refused: invalid JSON frame ({e}): {t}"))
            }
            Some(Ok(Message::Close(c))) => return Err(format!("broken: closed {c:?}")),
            Some(Ok(_)) => continue,
            Some(Err(e)) => return Err(format!("broken: {e}")),
            None => return Err("broken: the socket ended".into()),
        }
    }
}

async fn ws_session(
    client: &Client,
    proxy: std::net::SocketAddr,
    after: u64,
    stop: &CancellationToken,
) -> Result<(), String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{proxy}/v1/ws"))
        .await
        .map_err(|e| format!("broken: {e}"))?;
    let sub = json!({"op": "subscribe", "id": "c", "filter": client.filter, "after": after});
    ws.send(Message::Text(sub.to_string().into()))
        .await
        .map_err(|e| format!("broken: {e}"))?;
    while let Some(v) = next_json(&mut ws, stop).await? {
        match v["op"].as_str() {
            Some("event") => {
                let seq = v["event"]["seq"]
                    .as_u64()
                    .ok_or("refused: an event without seq")?;
                client.lock().push(seq);
            }
            Some("welcome" | "subscribed" | "pong") => {}
            Some("reset") => client.fault(format!("reset: {v}")),
            _ => return Err(format!("refused: {v}")),
        }
    }
    Ok(())
}

const SUBSCRIPTION: &str =
    "subscription($f: EventFilter, $after: Seq) { events(filter: $f, after: $after) { seq } }";

async fn graphql_session(
    client: &Client,
    proxy: std::net::SocketAddr,
    after: u64,
    stop: &CancellationToken,
) -> Result<(), String> {
    let mut req = format!("ws://{proxy}/graphql")
        .into_client_request()
        .map_err(|e| format!("refused: {e}"))?;
    req.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header value"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| format!("broken: {e}"))?;
    let send = |v: Value| Message::Text(v.to_string().into());
    ws.send(send(json!({"type": "connection_init", "payload": {}})))
        .await
        .map_err(|e| format!("broken: {e}"))?;
    let Some(ack) = next_json(&mut ws, stop).await? else {
        return Ok(());
    };
    if ack["type"] != "connection_ack" {
        return Err(format!("refused: {ack}"));
    }
    let subscribe = json!({
        "id": "1",
        "type": "subscribe",
        "payload": {"query": SUBSCRIPTION, "variables": {"f": client.filter, "after": after}},
    });
    ws.send(send(subscribe))
        .await
        .map_err(|e| format!("broken: {e}"))?;
    while let Some(v) = next_json(&mut ws, stop).await? {
        match v["type"].as_str() {
            Some("next") => {
                if let Some(errors) = v["payload"].get("errors") {
                    return Err(format!("refused: {errors}"));
                }
                let seq = v["payload"]["data"]["events"]["seq"]
                    .as_u64()
                    .ok_or_else(|| format!("refused: no seq in {v}"))?;
                client.lock().push(seq);
            }
            Some("ping") => ws
                .send(send(json!({"type": "pong"})))
                .await
                .map_err(|e| format!("broken: {e}"))?,
            Some("pong") => {}
            _ => return Err(format!("refused: {v}")),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Events and filters.

const TYPES: [&str; 6] = [
    "order.created",
    "order.paid",
    "user.created",
    "user.deleted",
    "site.updated",
    "probe.tick",
];
const SEVERITIES: [&str; 5] = ["debug", "info", "warning", "error", "critical"];
const SOURCES: [&str; 4] = ["api", "probe-1", "probe-2", "billing"];
const CATEGORIES: [&str; 3] = ["billing", "health", "config"];
const TAGS: [&str; 4] = ["prod", "dev", "eu", "us"];

fn random_event(rng: &mut impl Rng) -> Value {
    let tags: Vec<&str> = TAGS
        .iter()
        .copied()
        .filter(|_| rng.random_bool(0.5))
        .collect();
    json!({
        "type": TYPES[rng.random_range(0..TYPES.len())],
        "severity": SEVERITIES[rng.random_range(0..SEVERITIES.len())],
        "source": SOURCES[rng.random_range(0..SOURCES.len())],
        "category": CATEGORIES[rng.random_range(0..CATEGORIES.len())],
        "subject": format!("order/{}", rng.random_range(0..100)),
        "tags": tags,
        "data": {"n": rng.random_range(0..1_000_000)},
    })
}

/// Varied filters, each matching a small share of the events (every key is used); the
/// first matches everything.
fn filters() -> Vec<Value> {
    vec![
        json!({}),
        json!({"type": ["order.*"], "tags": ["eu"], "severity": "warning"}),
        json!({"type": ["user.*"], "severity": "error"}),
        json!({"type": ["*.created"], "tags": ["prod"], "source": ["probe-*"]}),
        json!({"severity": "critical", "category": ["health"]}),
        json!({"subject": ["order/1*"], "tags": ["us"]}),
        json!({"type": ["site.updated"], "tags": ["us", "dev"], "severity": "warning"}),
        json!({"category": ["billing"], "severity": "warning", "tags": ["dev"]}),
        json!({"type": ["probe.tick", "user.deleted"], "source": ["api"]}),
        json!({"source": ["billing", "api"], "category": ["config"], "severity": "error"}),
    ]
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clients_cut_at_random_end_with_exactly_their_events() {
    let hub = Hub::start().await;
    let stop = CancellationToken::new();
    let proxy = Proxy::start(hub.addr, stop.clone()).await;
    let filters = filters();
    let kinds = [Kind::Sse, Kind::Ws, Kind::Graphql];
    // The match-everything filter goes to one client of each kind; the rest share the others.
    let clients: Vec<Arc<Client>> = (0..CLIENTS)
        .map(|i| {
            let filter = if i < kinds.len() {
                filters[0].clone()
            } else {
                filters[1 + i % (filters.len() - 1)].clone()
            };
            Arc::new(Client {
                kind: kinds[i % kinds.len()],
                filter,
                seen: Mutex::new(Seen::default()),
            })
        })
        .collect();
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| tokio::spawn(run_client(c.clone(), proxy.addr, stop.clone())))
        .collect();

    // Cuts, from now until the clients are stopped.
    let cutter = {
        let proxy = proxy.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let tick = Duration::from_millis(20);
            let mut every = tokio::time::interval(tick);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = every.tick() => proxy.cut_some(tick),
                }
            }
        })
    };

    // Publish RATE events a second: each tick sends what the clock says is due by then, so
    // a slow tick is made up by the next and the total is exact.
    let span = publish_for();
    let total = RATE * span.as_secs();
    let started = Instant::now();
    let mut published = 0u64;
    let mut rng = rand::rng();
    let mut every = tokio::time::interval(Duration::from_millis(10));
    while published < total {
        every.tick().await;
        let due = ((started.elapsed().as_secs_f64() * RATE as f64) as u64).min(total);
        if due <= published {
            continue;
        }
        let n = (due - published).min(1000);
        let batch: Vec<Value> = (0..n).map(|_| random_event(&mut rng)).collect();
        let seqs = hub.publish(Value::from(batch)).await;
        assert_eq!(seqs.len() as u64, n);
        published += n;
    }
    let publishing = started.elapsed();
    assert_eq!(published, total);

    // What each filter should have delivered: the log's own history under that filter.
    let mut expected: HashMap<String, Vec<u64>> = HashMap::new();
    for f in &filters {
        let q = query_of(f);
        let seqs = hub.history_seqs(&q).await;
        expected.insert(q, seqs);
    }
    assert_eq!(
        expected[""].len() as u64,
        total,
        "the log holds every event"
    );

    // Wait until every client holds as many events as its filter matched (still being cut).
    let drain = DRAIN + span / 5;
    let deadline = Instant::now() + drain;
    loop {
        let behind: Vec<usize> = clients
            .iter()
            .enumerate()
            .filter(|(_, c)| c.lock().seqs.len() < expected[&query_of(&c.filter)].len())
            .map(|(i, _)| i)
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} clients still short of their events after {drain:?} (e.g. client {}: {} of {})",
            behind.len(),
            behind[0],
            clients[behind[0]].lock().seqs.len(),
            expected[&query_of(&clients[behind[0]].filter)].len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    for t in tasks {
        t.await.expect("client task");
    }
    cutter.await.expect("cutter task");

    // Exactly the matching events, in order, once each.
    let mut deliveries = 0usize;
    let mut connects = 0u64;
    let mut by_kind: HashMap<&str, usize> = HashMap::new();
    for (i, c) in clients.iter().enumerate() {
        let seen = c.lock();
        let want = &expected[&query_of(&c.filter)];
        assert!(
            seen.faults.is_empty(),
            "client {i} ({:?}, {}): {:?}",
            c.kind,
            c.filter,
            &seen.faults[..seen.faults.len().min(5)]
        );
        if seen.seqs != *want {
            let first = seen.seqs.iter().zip(want).position(|(a, b)| a != b);
            panic!(
                "client {i} ({:?}, {}) got {} events, the log has {} matching; first difference at {:?}",
                c.kind,
                c.filter,
                seen.seqs.len(),
                want.len(),
                first
            );
        }
        deliveries += seen.seqs.len();
        connects += seen.connects;
        *by_kind
            .entry(match c.kind {
                Kind::Sse => "sse",
                Kind::Ws => "ws",
                Kind::Graphql => "graphql",
            })
            .or_default() += 1;
    }
    let cuts = proxy.cuts.load(Ordering::Relaxed);
    assert!(
        cuts as usize >= CLIENTS,
        "only {cuts} cuts: the proxy did not cut each client at least once on average"
    );
    println!(
        "chaos: {CLIENTS} clients {by_kind:?}, {total} events published in {publishing:.1?} \
         (aimed at {RATE}/s for {span:?}, achieved {:.0}/s), {cuts} cuts, {connects} connections \
         ({} accepted by the proxy), {deliveries} deliveries checked against the log: every \
         client exact, in order, no gap, no duplicate",
        total as f64 / publishing.as_secs_f64(),
        proxy.accepted.load(Ordering::Relaxed)
    );
    hub.stop().await;
}

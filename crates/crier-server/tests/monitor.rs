//! `GET /v1/connections` over real sockets: every transport (SSE, `/v1/ws`, the GraphQL
//! WebSocket, Pusher) is listed with its actor, remote address, start, filters or channels
//! and lag, and leaves the list when it closes; presence channels come with their members;
//! only admins may look, and only at their own tenant unless they ask for another or `*`; a
//! reader that does not read shows a growing lag; Pusher connections count against
//! `max_connections_per_tenant` and in `crier_connections{transport="pusher"}`.

use std::net::SocketAddr;
use std::time::Duration;

use crier_testkit::checks::{answered, call, get_status, metrics, pusher_app, request, stream};
use crier_testkit::{Hub, Sse, Ws, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const SECRET: &str = "test-secret-of-at-least-32-characters!!";
const APP_ID: &str = "77";
const APP_KEY: &str = "monitor-key";
const APP_SECRET: &str = "monitor-app-secret";

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

fn token(sub: &str, tenant: &str, role: &str) -> String {
    crier_testkit::auth::token(SECRET, sub, tenant, role, None)
}

/// A hub with HS256 auth and one Pusher app of tenant `acme`.
async fn hub_with(tweak: impl FnOnce(&mut crier_server::Settings)) -> Hub {
    Hub::start_with(|s| {
        crier_testkit::auth::with_hs256(s, SECRET);
        s.pusher = pusher_app(APP_ID, APP_KEY, APP_SECRET, "acme");
        tweak(s);
    })
    .await
}

/// `GET path` with a bearer token: status and JSON body.
async fn get(hub: &Hub, path: &str, tok: &str) -> (u16, Value) {
    call(hub, "GET", path, tok, None).await
}

/// Polls `GET path` until `check` holds for the answer; fails with the last answer after
/// the wait.
async fn until(
    hub: &Hub,
    path: &str,
    tok: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, v) = get(hub, path, tok).await;
        assert_eq!(status, 200, "{v}");
        if check(&v) {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "waited for {what}; GET {path} answers {v:#}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn conns(v: &Value) -> &Vec<Value> {
    v["connections"].as_array().expect("connections")
}

fn by_transport<'a>(v: &'a Value, transport: &str) -> Vec<&'a Value> {
    conns(v)
        .iter()
        .filter(|c| c["transport"] == transport)
        .collect()
}

fn local_addr(ws: &Socket) -> SocketAddr {
    match ws.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("local addr"),
        _ => panic!("plain TCP expected"),
    }
}

async fn sse(hub: &Hub, query: &str, tok: &str) -> Sse {
    stream(hub, &format!("/v1/stream?{query}"), tok).await
}

async fn ws(hub: &Hub, tok: &str) -> Ws {
    let (stream, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?token={tok}", hub.addr))
            .await
            .expect("ws connect");
    let mut ws = Ws { stream };
    assert_eq!(ws.recv().await["op"], "welcome");
    ws
}

/// The next text frame as JSON (answering GraphQL pings).
async fn recv<S>(ws: &mut WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("frame");
        if let Message::Text(t) = m {
            let v: Value = serde_json::from_str(&t).expect("json");
            if v["type"] == "ping" {
                ws.send(Message::text(r#"{"type":"pong"}"#))
                    .await
                    .expect("pong");
                continue;
            }
            return v;
        }
    }
}

/// A GraphQL socket with one `events` subscription of types `gql.*`.
async fn graphql(hub: &Hub, tok: &str) -> Socket {
    let mut ws = crier_testkit::graphql::open(hub, tok).await;
    assert_eq!(recv(&mut ws).await["type"], "connection_ack");
    let q = "subscription { events(filter: {type: [\"gql.*\"]}) { seq } }";
    ws.send(Message::text(
        json!({"id": "g1", "type": "subscribe", "payload": {"query": q}}).to_string(),
    ))
    .await
    .expect("subscribe");
    ws
}

/// A Pusher connection that joined `channel` as presence user `user` ({"name": name}).
async fn pusher(hub: &Hub, channel: &str, user: &str, name: &str) -> (Socket, String) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!(
        "ws://{}/app/{APP_KEY}?protocol=7&client=rust&version=1",
        hub.addr
    ))
    .await
    .expect("pusher connect");
    let hello = recv(&mut ws).await;
    assert_eq!(hello["event"], "pusher:connection_established", "{hello}");
    let data: Value = serde_json::from_str(hello["data"].as_str().expect("data")).expect("json");
    let socket_id = data["socket_id"].as_str().expect("socket_id").to_string();
    let channel_data = json!({"user_id": user, "user_info": {"name": name}}).to_string();
    let sig = crier_server::pusher::protocol::sign(
        APP_SECRET,
        format!("{socket_id}:{channel}:{channel_data}").as_bytes(),
    );
    ws.send(Message::text(
        json!({"event": "pusher:subscribe", "data": {
            "channel": channel, "auth": format!("{APP_KEY}:{sig}"), "channel_data": channel_data,
        }})
        .to_string(),
    ))
    .await
    .expect("subscribe");
    loop {
        let f = recv(&mut ws).await;
        if f["event"] == "pusher_internal:subscription_succeeded" {
            break;
        }
        assert_ne!(f["event"], "pusher:subscription_error", "{f}");
    }
    (ws, socket_id)
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str()
        .and_then(crier_core::event::parse_time_us)
        .is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_transport_is_listed_with_its_fields_and_leaves_when_closed() {
    let hub = hub_with(|_| {}).await;
    let admin = token("root", "acme", "admin");
    let path = "/v1/connections";

    let sse_stream = sse(&hub, "type=sse.*", &token("alice", "acme", "subscriber")).await;
    let mut socket = ws(&hub, &token("bob", "acme", "subscriber")).await;
    socket
        .subscribe("s1", json!({"type": ["ws.*"], "severity": "warning"}), None)
        .await;
    let ws_local = match socket.stream.get_ref() {
        MaybeTlsStream::Plain(tcp) => tcp.local_addr().expect("addr"),
        _ => panic!("plain TCP expected"),
    };
    let gql = graphql(&hub, &token("carol", "acme", "subscriber")).await;
    let gql_local = local_addr(&gql);
    let (push, socket_id) = pusher(&hub, "presence-room", "u-1", "Ada").await;
    let push_local = local_addr(&push);

    // Each appears once it is registered (the GraphQL subscription starts after its frame is
    // read, so wait for its filter).
    let v = until(&hub, path, &admin, "four connections", |v| {
        conns(v).len() == 4
            && by_transport(v, "graphql")
                .first()
                .is_some_and(|c| c["filters"].as_array().is_some_and(|f| f.len() == 1))
    })
    .await;
    assert_eq!(v["total"], 4, "{v:#}");
    assert_eq!(v["next_after"], Value::Null);
    assert!(v["head"].is_u64());
    for c in conns(&v) {
        assert_eq!(c["tenant"], "acme");
        assert!(is_rfc3339(&c["connected_since"]), "{c}");
        assert!(
            c["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("127.0.0.1:")),
            "{c}"
        );
        assert!(c["id"].is_u64(), "{c}");
    }

    let s = by_transport(&v, "sse")[0];
    assert_eq!(s["actor"], "alice");
    assert_eq!(s["filters"][0]["filter"], json!({"type": ["sse.*"]}));
    assert_eq!(s["filters"][0]["id"], Value::Null);
    assert_eq!(s["channels"], json!([]));

    let w = by_transport(&v, "ws")[0];
    assert_eq!(w["actor"], "bob");
    assert_eq!(w["remote"], ws_local.to_string());
    assert_eq!(w["filters"][0]["id"], "s1");
    assert_eq!(
        w["filters"][0]["filter"],
        json!({"type": ["ws.*"], "severity": "warning"})
    );

    let g = by_transport(&v, "graphql")[0];
    assert_eq!(g["actor"], "carol");
    assert_eq!(g["remote"], gql_local.to_string());
    assert_eq!(g["filters"][0]["filter"], json!({"type": ["gql.*"]}));

    let p = by_transport(&v, "pusher")[0];
    assert_eq!(p["actor"], "pusher:u-1");
    assert_eq!(p["remote"], push_local.to_string());
    assert_eq!(p["pusher"], json!({"app": APP_ID, "socket_id": socket_id}));
    assert_eq!(
        p["channels"],
        json!([{"name": "presence-room", "user_id": "u-1"}])
    );
    assert_eq!(p["filters"], json!([]));
    assert_eq!(p["delivered_seq"], Value::Null);
    assert_eq!(
        v["presence"],
        json!([{"tenant": "acme", "channel": "presence-room", "subscription_count": 1,
                "members": [{"user_id": "u-1", "user_info": {"name": "Ada"}}]}])
    );
    assert_eq!(v["presence_truncated"], false);

    // A WebSocket `auth` refresh changes the actor shown.
    socket
        .send(
            json!({"op": "auth", "ref": "a1", "token": token("bob-renewed", "acme", "subscriber")}),
        )
        .await;
    assert_eq!(socket.recv().await["op"], "authed");
    until(&hub, path, &admin, "the refreshed actor", |v| {
        by_transport(v, "ws")
            .first()
            .is_some_and(|c| c["actor"] == "bob-renewed")
    })
    .await;

    // Idle readers that are caught up have no lag.
    until(&hub, path, &admin, "caught-up readers at lag 0", |v| {
        conns(v).iter().all(|c| c["lag"] == 0)
    })
    .await;

    // Narrowing by transport, and pages.
    let (_, only) = get(&hub, "/v1/connections?transport=pusher,sse", &admin).await;
    let mut kinds: Vec<&str> = conns(&only)
        .iter()
        .filter_map(|c| c["transport"].as_str())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["pusher", "sse"]);
    assert_eq!(only["total"], 2);
    let (_, no_pusher) = get(&hub, "/v1/connections?transport=ws", &admin).await;
    assert_eq!(conns(&no_pusher).len(), 1);
    assert_eq!(
        no_pusher["presence"],
        json!([]),
        "presence comes with pusher"
    );
    let (_, first) = get(&hub, "/v1/connections?limit=3", &admin).await;
    assert_eq!(conns(&first).len(), 3);
    let next = first["next_after"].as_u64().expect("next_after");
    let (_, rest) = get(
        &hub,
        &format!("/v1/connections?limit=3&after={next}"),
        &admin,
    )
    .await;
    assert_eq!(conns(&rest).len(), 1);
    assert_eq!(rest["next_after"], Value::Null);
    let mut ids: Vec<u64> = conns(&first)
        .iter()
        .chain(conns(&rest))
        .filter_map(|c| c["id"].as_u64())
        .collect();
    let listed = ids.clone();
    ids.sort();
    ids.dedup();
    assert_eq!(ids, listed, "pages are in id order without repeats");
    assert_eq!(ids.len(), 4);

    // Bad parameters are a clear 400.
    for q in [
        "transport=carrier-pigeon",
        "limit=0",
        "limit=1001",
        "limit=many",
        "after=-1",
        "filter=x",
    ] {
        let (status, body) = get(&hub, &format!("/v1/connections?{q}"), &admin).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{q}: {body}");
    }

    // Closing each removes it; the presence member leaves with its connection.
    drop(sse_stream);
    until(&hub, path, &admin, "the SSE stream to leave", |v| {
        by_transport(v, "sse").is_empty() && conns(v).len() == 3
    })
    .await;
    socket.stream.close(None).await.expect("close ws");
    let mut gql = gql;
    gql.close(None).await.expect("close graphql");
    let mut push = push;
    push.close(None).await.expect("close pusher");
    let v = until(&hub, path, &admin, "every connection to leave", |v| {
        conns(v).is_empty()
    })
    .await;
    assert_eq!(v["total"], 0);
    assert_eq!(v["presence"], json!([]));
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_look_and_only_at_their_tenant_unless_they_ask() {
    let hub = hub_with(|_| {}).await;
    let acme_admin = token("root", "acme", "admin");
    let beta_admin = token("boss", "beta", "admin");
    let _acme = sse(&hub, "", &token("alice", "acme", "subscriber")).await;
    let _beta = sse(&hub, "", &token("bea", "beta", "subscriber")).await;
    let (_push, _) = pusher(&hub, "presence-lobby", "u-9", "Grace").await;

    for (who, tok) in [
        ("a subscriber", token("alice", "acme", "subscriber")),
        ("a publisher", token("pub", "acme", "publisher")),
    ] {
        for q in ["", "?tenant=*", "?tenant=beta"] {
            let (status, body) = get(&hub, &format!("/v1/connections{q}"), &tok).await;
            assert_eq!(status, 403, "{who} {q}: {body}");
            assert_eq!(body["error"]["code"], "forbidden", "{body}");
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }
    get_status(&hub, "/v1/connections", "", 401).await;

    let actors = |v: &Value| -> Vec<String> {
        let mut a: Vec<String> = conns(v)
            .iter()
            .filter_map(|c| c["actor"].as_str().map(String::from))
            .collect();
        a.sort();
        a
    };
    let own = until(&hub, "/v1/connections", &acme_admin, "acme's two", |v| {
        conns(v).len() == 2
    })
    .await;
    assert_eq!(actors(&own), ["alice", "pusher:u-9"]);
    assert_eq!(own["presence"][0]["channel"], "presence-lobby");

    let beta = until(&hub, "/v1/connections", &beta_admin, "beta's one", |v| {
        conns(v).len() == 1
    })
    .await;
    assert_eq!(actors(&beta), ["bea"]);
    assert_eq!(beta["presence"], json!([]), "acme's presence is not beta's");

    let (_, other) = get(&hub, "/v1/connections?tenant=beta", &acme_admin).await;
    assert_eq!(actors(&other), ["bea"]);
    let (_, all) = get(&hub, "/v1/connections?tenant=*", &acme_admin).await;
    assert_eq!(actors(&all), ["alice", "bea", "pusher:u-9"]);
    assert_eq!(all["total"], 3);
    let (status, body) = get(&hub, "/v1/connections?tenant=Not%20A%20Tenant", &acme_admin).await;
    assert_eq!(status, 400, "{body}");
    hub.stop().await;
}

/// A raw SSE request on a socket with a small receive buffer that is then never read.
async fn stalled_reader(hub: &Hub) -> tokio::net::TcpStream {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let mut tcp = sock.connect(hub.addr).await.expect("connect");
    let tok = token("slow", "acme", "subscriber");
    tcp.write_all(
        format!("GET /v1/stream HTTP/1.1\r\nHost: hub\r\nAuthorization: Bearer {tok}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .expect("write");
    tcp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_grows_for_a_reader_that_does_not_read() {
    let hub = hub_with(|_| {}).await;
    let admin = token("root", "acme", "admin");
    let publisher = token("pub", "acme", "publisher");
    let _slow = stalled_reader(&hub).await;
    let mut fast = sse(&hub, "", &token("quick", "acme", "subscriber")).await;
    until(&hub, "/v1/connections", &admin, "both readers", |v| {
        by_transport(v, "sse").len() == 2
    })
    .await;
    let sse_of = |v: &Value, actor: &str| -> Value {
        conns(v)
            .iter()
            .find(|c| c["actor"] == actor)
            .cloned()
            .unwrap_or(Value::Null)
    };

    // Large events fill the stalled reader's socket buffers; from then on its position stays
    // and each publish adds to its lag. Observed after each batch, never slept on.
    let blob = "x".repeat(60_000);
    let batch = Value::Array(
        (0..10)
            .map(|_| json!({"type": "bulk.item", "data": {"blob": blob}}))
            .collect(),
    );
    let mut seen: Option<(u64, u64)> = None; // (lag, delivered_seq) while stalled
    let mut grew = false;
    let mut published = 0u64;
    for _ in 0..200 {
        let publish = request(&hub, "POST", "/v1/events", &publisher, Some(&batch));
        answered(publish, 201).await;
        published += 10;
        let (_, v) = get(&hub, "/v1/connections?transport=sse", &admin).await;
        let slow = sse_of(&v, "slow");
        let lag = slow["lag"].as_u64().expect("lag");
        let delivered = slow["delivered_seq"].as_u64().expect("delivered_seq");
        assert_eq!(slow["filters"][0]["lag"], slow["lag"]);
        if let Some((before, at)) = seen {
            if delivered == at && lag >= before + 10 {
                grew = true;
                break;
            }
        }
        if lag > 0 {
            seen = Some((lag, delivered));
        }
    }
    assert!(
        grew,
        "after {published} events the stalled reader's lag did not grow: last {seen:?}"
    );

    // The reader that reads catches up: its lag comes back to 0 once it has everything.
    let head = {
        let (_, v) = get(&hub, "/v1/connections", &admin).await;
        v["head"].as_u64().expect("head")
    };
    loop {
        let m = fast.next().await.expect("an event");
        if m.id.is_some_and(|s| s >= head) {
            break;
        }
    }
    until(
        &hub,
        "/v1/connections",
        &admin,
        "the reading reader at lag 0",
        |v| sse_of(v, "quick")["lag"] == 0 && sse_of(v, "slow")["lag"].as_u64() > Some(0),
    )
    .await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pusher_connections_count_against_the_tenant_limit_and_in_metrics() {
    let hub = hub_with(|s| s.limits.max_connections_per_tenant = 2).await;
    let admin = token("root", "acme", "admin");
    let _stream = sse(&hub, "", &token("alice", "acme", "subscriber")).await;
    let (_push, _) = pusher(&hub, "presence-full", "u-1", "Ada").await;

    // A third connection of the tenant is refused, whichever its transport.
    let (mut third, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/app/{APP_KEY}?protocol=7", hub.addr))
            .await
            .expect("connect");
    let refusal = recv(&mut third).await;
    assert_eq!(refusal["event"], "pusher:error", "{refusal}");
    assert_eq!(refusal["data"]["code"], 4100, "{refusal}");
    let alice = token("alice", "acme", "subscriber");
    get_status(&hub, "/v1/stream", &alice, 429).await;

    // Both open ones are listed; the gauge has a pusher series counting this one.
    let (status, v) = get(&hub, "/v1/connections", &admin).await;
    assert_eq!(status, 200);
    assert_eq!(v["total"], 2, "{v:#}");
    let (status, _) = get(
        &hub,
        "/v1/connections?tenant=acme",
        &token("boss", "beta", "admin"),
    )
    .await;
    assert_eq!(status, 200, "an admin of another tenant may ask by name");
    let metrics = metrics(&hub, &admin).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("crier_connections{") && l.contains("transport=\"pusher\""))
        .unwrap_or_else(|| panic!("no pusher series in:\n{metrics}"));
    let n: f64 = line
        .rsplit(' ')
        .next()
        .and_then(|x| x.parse().ok())
        .expect("value");
    // The recorder is shared by every hub of this test binary: at least this one.
    assert!(n >= 1.0, "{line}");
    hub.stop().await;
}

/// A Pusher socket on public channel `channel` whose client reads nothing once subscribed,
/// with a small receive buffer so that the kernel holds little of what it is sent.
async fn stalled_pusher(hub: &Hub, channel: &str) -> WebSocketStream<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4().expect("socket");
    sock.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    let tcp = sock.connect(hub.addr).await.expect("connect");
    let url = format!("ws://{}/app/{APP_KEY}?protocol=7&client=rust", hub.addr);
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp)
        .await
        .expect("pusher handshake");
    let hello = recv(&mut ws).await;
    assert_eq!(hello["event"], "pusher:connection_established", "{hello}");
    ws.send(Message::text(
        json!({"event": "pusher:subscribe", "data": {"channel": channel}}).to_string(),
    ))
    .await
    .expect("subscribe");
    loop {
        let f = recv(&mut ws).await;
        if f["event"] == "pusher_internal:subscription_succeeded" {
            return ws;
        }
        assert_ne!(f["event"], "pusher:subscription_error", "{f}");
    }
}

/// §12.2: a Pusher socket that stops reading holds at most `reader_buffer_bytes` of frames
/// beyond the kernel's buffers; past that it is let go, and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pusher_socket_that_does_not_read_is_let_go_past_reader_buffer_bytes() {
    let hub = hub_with(|_| {}).await;
    let admin = token("root", "acme", "admin");
    let publisher = token("pub", "acme", "publisher");
    let evictions = |m: &str| -> f64 {
        m.lines()
            .find(|l| l.starts_with("crier_pusher_evictions_total"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|x| x.parse().ok())
            .unwrap_or(0.0)
    };
    // The recorder is shared by every hub of this test binary: compared, not absolute.
    let before = evictions(&metrics(&hub, &admin).await);
    let _stalled = stalled_pusher(&hub, "slow-news").await;
    until(&hub, "/v1/connections", &admin, "the pusher socket", |v| {
        by_transport(v, "pusher").len() == 1
    })
    .await;

    // 600 KB per batch of ten 60 KB events to the channel (their subject). The 1 MiB of
    // `reader_buffer_bytes` and the kernel's send buffer (4 MiB at most here) fill within
    // about nine batches; 30 batches are 18 MB, well short of what 512 queued frames of this
    // size would hold. Observed after each batch, never slept on.
    let blob = "x".repeat(60_000);
    let batch = Value::Array(
        (0..10)
            .map(|_| json!({"type": "bulk.item", "subject": "slow-news", "data": {"blob": blob}}))
            .collect(),
    );
    let mut evicted = false;
    for _ in 0..30 {
        answered(
            request(&hub, "POST", "/v1/events", &publisher, Some(&batch)),
            201,
        )
        .await;
        if evictions(&metrics(&hub, &admin).await) > before {
            evicted = true;
            break;
        }
    }
    assert!(
        evicted,
        "the stalled Pusher socket was not let go within 18 MB"
    );
    // Its farewell, which it does not read, is given up on after a moment; it leaves.
    until(
        &hub,
        "/v1/connections",
        &admin,
        "the evicted socket gone",
        |v| by_transport(v, "pusher").is_empty(),
    )
    .await;
    hub.stop().await;
}

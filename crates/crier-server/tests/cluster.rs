//! Two hub nodes in one process sharing one PostgreSQL log and fanning out over NATS (and
//! again over Redis): identical sequences on both nodes whichever node took each publish,
//! webhooks dispatched by the lease holder only, and the lease moving when that node stops.
//! Skips with a notice when PostgreSQL or the broker is unreachable, except under CI=true.

use std::time::Duration;

use crier_server::config::{BrokerKind, StoreKind};
use crier_testkit::checks::{answered, assert_not_writable, eventually, request, wait_until};
use crier_testkit::services::{drop_schema, pg_url, reachable};
use crier_testkit::Hub;
use serde_json::{json, Value};

async fn node(schema: &str, id: &str, broker: BrokerKind) -> Hub {
    let (schema, id) = (schema.to_string(), id.to_string());
    Hub::start_with(move |s| {
        s.store = StoreKind::Postgres(pg_url());
        s.broker = broker;
        s.store_schema = schema;
        s.node_id = id;
        s.webhooks.allow_private = true;
    })
    .await
}

/// Polls `/readyz` until its status and body satisfy `holds`: the body. After `within` it
/// fails saying `what`.
async fn readyz_until(
    hub: &Hub,
    within: Duration,
    what: &str,
    holds: impl Fn(u16, &Value) -> bool,
) -> Value {
    eventually(within, || async {
        if let Ok(r) = request(hub, "GET", "/readyz", "", None).send().await {
            let status = r.status().as_u16();
            let v = r.json().await.unwrap_or(Value::Null);
            if holds(status, &v) {
                return Ok(v);
            }
        }
        Err(what.to_string())
    })
    .await
}

async fn wait_ready(hub: &Hub) {
    let what = "node never became ready with its broker up";
    let within = Duration::from_secs(20);
    readyz_until(hub, within, what, |s, v| {
        (200..300).contains(&s) && v["broker"] == "ok"
    })
    .await;
}

/// The cluster test over the broker `name` listening on `port`, when PostgreSQL and the
/// broker are reachable.
async fn two_nodes_share_one_log(name: &str, port: u16, broker: BrokerKind, tag: &str) {
    if !reachable(5432, "PostgreSQL", "the cluster test").await
        || !reachable(port, name, "the cluster test").await
    {
        return;
    }
    let schema = format!("crier_cluster_{tag}_{}", std::process::id());
    drop_schema(&schema).await;
    let a = node(&schema, "a", broker.clone()).await;
    let b = node(&schema, "b", broker.clone()).await;
    wait_ready(&a).await;
    wait_ready(&b).await;

    // A webhook receiver counting deliveries by event id.
    let (got, hook) = crier_testkit::hooks::webhook_ids(axum::http::StatusCode::NO_CONTENT).await;
    let sub = json!({"webhook": {"url": hook}, "filter": {"type": ["c.*"]}});
    answered(
        request(&b, "POST", "/v1/subscriptions", "", Some(&sub)),
        201,
    )
    .await;

    let mut sse_a = a.sse("after=0", None).await;
    let mut sse_b = b.sse("after=0", None).await;
    let mut ids = Vec::new();
    for i in 0..40 {
        let via = if i % 2 == 0 { &a } else { &b };
        let id = format!("c{i:02}");
        via.publish(json!([{"type": "c.x", "id": id}])).await;
        ids.push(id);
    }
    let seqs_a = sse_a.seqs(40).await;
    let seqs_b = sse_b.seqs(40).await;
    assert_eq!(
        seqs_a,
        (1..=40).collect::<Vec<u64>>(),
        "node a delivers every event in seq order"
    );
    assert_eq!(seqs_a, seqs_b, "both nodes deliver the identical sequence");

    eventually(Duration::from_secs(20), || async {
        match got.lock().expect("lock").len() {
            n if n < 40 => Err(format!("webhooks: {n} of 40 delivered")),
            _ => Ok(()),
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        *got.lock().expect("lock"),
        ids,
        "one dispatcher in the cluster: each event once, in order"
    );

    // Stop the node holding the lease: the other takes over dispatch.
    let ready: Value = a.json("/readyz", "").await;
    let a_leads = ready["leader"] == true;
    let (survivor, stopped) = if a_leads { (b, a) } else { (a, b) };
    let _ = stopped.stop().await;
    for i in 40..45 {
        let id = format!("c{i:02}");
        survivor.publish(json!([{"type": "c.x", "id": id}])).await;
        ids.push(id);
    }
    let moved = "dispatch did not move to the surviving node";
    wait_until(moved, Duration::from_secs(30), || async {
        let seen: std::collections::HashSet<String> =
            got.lock().expect("lock").iter().cloned().collect();
        ids.iter().all(|i| seen.contains(i))
    })
    .await;
    let _ = survivor.stop().await;
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_nats() {
    let nats = BrokerKind::Nats("nats://127.0.0.1:4222".into());
    two_nodes_share_one_log("NATS", 4222, nats, "nats").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_over_redis() {
    let redis = BrokerKind::Redis("redis://127.0.0.1:6379".into());
    two_nodes_share_one_log("Redis", 6379, redis, "redis").await;
}

/// Runs one statement on the test server's `postgres` database (for CREATE/ALTER DATABASE).
async fn admin_sql(sql: &str) {
    let url = pg_url();
    let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
    let (client, conn) =
        tokio_postgres::connect(&format!("{base}/postgres"), tokio_postgres::NoTls)
            .await
            .expect("connect to the postgres database");
    tokio::spawn(conn);
    client.batch_execute(sql).await.expect(sql);
}

/// Makes every new session of `db` read-only (`on`) or writable again, then cuts its open
/// sessions so that the hub's next ones follow the change.
async fn read_only(db: &str, on: bool) {
    let change = if on {
        "SET default_transaction_read_only = on"
    } else {
        "RESET default_transaction_read_only"
    };
    // Two statements, two transactions: a session the hub opens after the cut follows it.
    admin_sql(&format!("ALTER DATABASE {db} {change}")).await;
    admin_sql(&format!(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = '{db}' AND pid <> pg_backend_pid()"
    ))
    .await;
}

/// Waits until `/readyz` answers `status` with `store` = `store_state`, returning its body
/// (a moment of `unreachable` while the sessions are cut is not the state waited for).
async fn readyz_becomes(hub: &Hub, status: u16, store_state: &str, why: &str) -> Value {
    let what = format!("/readyz never answered {status}: {why}");
    readyz_until(hub, Duration::from_secs(30), &what, |s, v| {
        s == status && v["store"] == store_state
    })
    .await
}

/// §12.8 on PostgreSQL: a database that stops accepting writes (here every new session is
/// read-only and the hub's sessions are cut, as after a failover to a replica) turns
/// `/readyz` to 503 with the reason, and it recovers by itself once writes work again.
#[tokio::test]
async fn a_read_only_database_makes_the_node_unready_until_it_can_write() {
    if !reachable(5432, "PostgreSQL", "the read-only database test").await {
        return;
    }
    let db = format!("crier_readonly_{}", std::process::id());
    admin_sql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
    admin_sql(&format!("CREATE DATABASE {db}")).await;
    let url = pg_url();
    let db_url = format!(
        "{}/{db}",
        url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b)
    );
    let hub = Hub::start_with(move |s| s.store = StoreKind::Postgres(db_url)).await;
    readyz_becomes(&hub, 200, "ok", "a fresh database").await;
    hub.publish(json!({"type": "before.readonly"})).await;

    read_only(&db, true).await;
    let body = readyz_becomes(&hub, 503, "not_writable", "the database refuses writes").await;
    assert_not_writable(&body, "read-only");
    // A publish meanwhile is refused, not acknowledged and lost.
    let during = json!({"type": "during.readonly"});
    let res = request(&hub, "POST", "/v1/events", "", Some(&during))
        .send()
        .await
        .expect("publish");
    assert!(
        res.status().as_u16() >= 500,
        "a publish to a read-only log: {}",
        res.status()
    );

    read_only(&db, false).await;
    let body = readyz_becomes(&hub, 200, "ok", "the database accepts writes again").await;
    assert_eq!(body["store"], "ok", "{body}");
    hub.publish(json!({"type": "after.readonly"})).await;
    let (_, v) = hub.get("/v1/events?limit=10").await;
    let types: Vec<&str> = v["events"]
        .as_array()
        .map(|a| a.iter().filter_map(|e| e["type"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(types, ["before.readonly", "after.readonly"], "{v}");
    let _ = hub.stop().await;
    admin_sql(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)")).await;
}

//! The transactional outbox (§14.2) against the real PostgreSQL and real `crier` processes:
//! committed rows are published and rolled-back ones never; rows committed one after another
//! come out in `id` order; concurrent transactions lose or double nothing; invalid rows go to
//! `<table>_rejected` without blocking the rows behind them; a hub killed with -9 during a
//! burst of 10,000 rows publishes every row exactly once after a restart; and two nodes over
//! one PostgreSQL log hand the drain over when the leader is killed with -9.
//!
//! Each test uses a table (and log schema) of its own. Skips with a notice when PostgreSQL is
//! unreachable, except under CI=true.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crier_testkit::embed_checks::{metrics_text, run_ok};
use crier_testkit::process::{free_port, serve_cmd, Proc};
use crier_testkit::services::{pg_client, pg_url};
use serde_json::{json, Value};
use tokio_postgres::Client;

const SKIPPING: &str = "the outbox test";

/// A table name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{}",
        std::process::id(),
        rand::random::<u32>() % 1_000_000
    )
}

/// Creates the outbox with the real `crier outbox init`.
fn init(table: &str) {
    run_ok(
        Command::new(env!("CARGO_BIN_EXE_crier")).args([
            "outbox",
            "init",
            "--url",
            &pg_url(),
            "--table",
            table,
        ]),
        "crier outbox init",
    );
}

/// What every test starts from: a PostgreSQL client, a fresh outbox table made by `crier
/// outbox init`, and a data directory.
struct Setup {
    db: Client,
    table: String,
    dir: tempfile::TempDir,
}

/// The [`Setup`] of a test whose table names start with `prefix`; `None` (after a notice)
/// when PostgreSQL is unreachable outside CI.
async fn setup(prefix: &str) -> Option<Setup> {
    let db = pg_client(SKIPPING).await?;
    let table = unique(prefix);
    init(&table);
    let dir = tempfile::tempdir().expect("tempdir");
    Some(Setup { db, table, dir })
}

/// A `crier serve` node draining an outbox table.
struct Node(Proc);

impl Node {
    /// A hub draining `table`, its log under `dir` (SQLite) or in `schema` (PostgreSQL).
    async fn start(dir: &Path, table: &str, schema: Option<&str>, id: &str) -> Node {
        let port = free_port();
        let mut cmd = serve_cmd(env!("CARGO_BIN_EXE_crier"), dir, port);
        cmd.env("CRIER_OUTBOX_URL", pg_url())
            .env("CRIER_OUTBOX_TABLE", table)
            .env("CRIER_NODE_ID", id)
            .env("CRIER_DURABILITY", "commit");
        if let Some(s) = schema {
            cmd.env("CRIER_STORE", pg_url())
                .env("CRIER_STORE_SCHEMA", s);
        }
        let node = Node(Proc::spawn(cmd, port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while reqwest::get(node.0.url("/healthz")).await.is_err() {
            assert!(Instant::now() < deadline, "node {id} did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        node
    }

    async fn ready(&self) -> Value {
        self.0.get("/readyz").await
    }

    /// Every event of the log, in seq order.
    async fn history(&self) -> Vec<Value> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self
                .0
                .get(&format!("/v1/events?after={after}&limit=1000&tenant=*"))
                .await;
            let events = page["events"].as_array().cloned().unwrap_or_default();
            out.extend(events);
            match page["next_after"].as_u64() {
                Some(n) => after = n,
                None => return out,
            }
        }
    }
}

async fn rows(db: &Client, table: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .expect("count")
        .get(0)
}

/// Waits until the outbox table is empty and the node's log holds `n` outbox events.
async fn drained(node: &Node, db: &Client, table: &str, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let left = rows(db, table).await;
        if left == 0 {
            let events = node.history().await;
            if events.len() >= n {
                return events;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the outbox did not drain: {left} rows left"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Row id of an event published from `table` with the default id.
fn row_id(table: &str, ev: &Value) -> Option<i64> {
    ev["id"]
        .as_str()?
        .strip_prefix(&format!("outbox-{table}-"))?
        .parse()
        .ok()
}

#[tokio::test]
async fn commits_rollbacks_order_and_rejected_rows() {
    let Some(Setup { mut db, table, dir }) = setup("ob_basic").await else {
        return;
    };
    let node = Node::start(dir.path(), &table, None, "n1").await;
    let insert =
        format!("INSERT INTO {table} (tenant, event) VALUES ($1, $2::text::jsonb) RETURNING id");

    // A committed row and a rolled-back one.
    let tx = db.transaction().await.expect("tx");
    tx.execute(
        &insert,
        &[&"acme", &json!({"type": "o.rolled_back"}).to_string()],
    )
    .await
    .expect("insert");
    tx.rollback().await.expect("rollback");
    let mut expected = Vec::new();
    for i in 0..20 {
        // Row 3 is far too large, row 5 is not JSON of an event, row 9 names a bad type, row
        // 13 a bad tenant: each is rejected and the rows behind them still go out.
        let (tenant, event) = match i {
            3 => (
                "acme",
                json!({"type": "o.seq", "data": "x".repeat(200_000)}),
            ),
            5 => ("acme", json!([1, 2, 3])),
            9 => ("acme", json!({"type": "not a type!"})),
            13 => ("no tenant!", json!({"type": "o.seq"})),
            17 => (
                "acme",
                json!({"type": "o.seq", "id": "own-id", "data": {"i": i}}),
            ),
            _ => (
                "acme",
                json!({"type": "o.seq", "subject": "row", "data": {"i": i}}),
            ),
        };
        let id: i64 = db
            .query_one(&insert, &[&tenant, &event.to_string()])
            .await
            .expect("insert")
            .get(0);
        if ![3, 5, 9, 13].contains(&i) {
            expected.push((id, i));
        }
    }
    let events = drained(&node, &db, &table, expected.len(), Duration::from_secs(20)).await;
    assert_eq!(events.len(), expected.len(), "{events:#?}");
    // One after another: in id order, each exactly once, as the tenant's publisher `outbox`.
    for (ev, (id, i)) in events.iter().zip(&expected) {
        assert_eq!(ev["data"]["i"], json!(i));
        assert_eq!(ev["tenant"], "acme");
        assert_eq!(ev["actor"], "outbox");
        if *i == 17 {
            assert_eq!(ev["id"], "own-id", "a row's own id is kept");
        } else {
            assert_eq!(row_id(&table, ev), Some(*id));
        }
    }
    assert!(events.iter().all(|e| e["type"] != "o.rolled_back"));
    let rejected = db
        .query(
            &format!("SELECT id, error FROM {table}_rejected ORDER BY id"),
            &[],
        )
        .await
        .expect("rejected");
    assert_eq!(rejected.len(), 4);
    let errors: Vec<String> = rejected.iter().map(|r| r.get(1)).collect();
    assert!(errors[0].contains("max_event_bytes"), "{errors:?}");
    assert!(errors[1].contains("object"), "{errors:?}");
    assert!(errors[2].contains("type"), "{errors:?}");
    assert!(errors[3].contains("tenant"), "{errors:?}");
    // The lag is sampled after each pass: a row inserted while a pass ran is counted until
    // the next one, which the insert's notification (or the 1 s tick) starts.
    let deadline = Instant::now() + Duration::from_secs(10);
    let ready = loop {
        let ready = node.ready().await;
        if ready["outbox"]["lag_rows"] == 0 {
            break ready;
        }
        assert!(
            Instant::now() < deadline,
            "the outbox lag never fell to 0: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(ready["outbox"]["draining"], true, "{ready}");
    assert_eq!(ready["outbox"]["rejected"], 4, "{ready}");
    let metrics = metrics_text(&node.0.url("/metrics")).await;
    assert!(metrics.contains("crier_outbox_lag_rows"), "{metrics}");
    assert!(metrics.contains("crier_outbox_lag_seconds"), "{metrics}");
}

#[tokio::test]
async fn concurrent_transactions_are_never_lost_or_doubled() {
    let Some(Setup { db, table, dir }) = setup("ob_conc").await else {
        return;
    };
    let node = Node::start(dir.path(), &table, None, "n1").await;
    let mut writers = Vec::new();
    for w in 0..8 {
        let table = table.clone();
        writers.push(tokio::spawn(async move {
            let (mut c, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls)
                .await
                .expect("pg");
            tokio::spawn(conn);
            let insert =
                format!("INSERT INTO {table} (event) VALUES ($1::text::jsonb) RETURNING id");
            let mut ids = Vec::new();
            for t in 0..40 {
                // Ids are taken in one order and become visible in another: transactions
                // hold theirs for a while before committing.
                let tx = c.transaction().await.expect("tx");
                let mut mine = Vec::new();
                for r in 0..(1 + (w + t) % 3) {
                    let ev = json!({"type": "o.conc", "data": {"w": w, "t": t, "r": r}});
                    let id: i64 = tx
                        .query_one(&insert, &[&ev.to_string()])
                        .await
                        .expect("insert")
                        .get(0);
                    mine.push(id);
                }
                tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 15)).await;
                if (w + t) % 7 == 0 {
                    tx.rollback().await.expect("rollback");
                } else {
                    tx.commit().await.expect("commit");
                    ids.extend(mine);
                }
            }
            ids
        }));
    }
    let mut committed = Vec::new();
    for w in writers {
        committed.extend(w.await.expect("writer"));
    }
    let events = drained(&node, &db, &table, committed.len(), Duration::from_secs(30)).await;
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for ev in &events {
        *seen
            .entry(row_id(&table, ev).expect("outbox id"))
            .or_default() += 1;
    }
    assert_eq!(events.len(), committed.len(), "nothing doubled");
    for id in &committed {
        assert_eq!(seen.get(id), Some(&1), "row {id} published exactly once");
    }
}

/// Inserts `n` rows in transactions of 100 from 4 connections.
async fn burst(table: &str, n: usize) {
    let mut tasks = Vec::new();
    for w in 0..4 {
        let table = table.to_string();
        tasks.push(tokio::spawn(async move {
            let (c, conn) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await.expect("pg");
            tokio::spawn(conn);
            for b in (w * 100..n).step_by(400) {
                let upto = (b + 100).min(n);
                c.execute(
                    &format!(
                        "INSERT INTO {table} (event) SELECT jsonb_build_object('type', 'o.burst', 'data', i) \
                         FROM generate_series($1::int, $2::int - 1) i"
                    ),
                    &[&(b as i32), &(upto as i32)],
                )
                .await
                .expect("insert");
            }
        }));
    }
    for t in tasks {
        t.await.expect("burst");
    }
}

fn exactly_once(table: &str, events: &[Value], n: usize) {
    let mut seen: HashMap<i64, usize> = HashMap::new();
    let mut data: HashMap<i64, usize> = HashMap::new();
    for ev in events {
        *seen
            .entry(row_id(table, ev).expect("outbox id"))
            .or_default() += 1;
        *data.entry(ev["data"].as_i64().expect("data")).or_default() += 1;
    }
    assert_eq!(events.len(), n, "every row once, none doubled");
    assert_eq!(seen.len(), n);
    assert!((0..n as i64).all(|i| data.get(&i) == Some(&1)));
}

#[tokio::test]
async fn a_hub_killed_during_a_burst_publishes_every_row_once() {
    let Some(Setup { db, table, dir }) = setup("ob_kill").await else {
        return;
    };
    let mut node = Node::start(dir.path(), &table, None, "n1").await;
    let n = 10_000;
    let writer = tokio::spawn({
        let table = table.clone();
        async move { burst(&table, n).await }
    });
    // Kill it once it has published part of the burst, mid-drain.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let published = node.ready().await["outbox"]["published"]
            .as_u64()
            .unwrap_or(0);
        if published >= 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "the hub did not start draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    node.0.kill9();
    writer.await.expect("writer");
    assert!(rows(&db, &table).await > 0, "the kill left rows behind");
    let node = Node::start(dir.path(), &table, None, "n1").await;
    let events = drained(&node, &db, &table, n, Duration::from_secs(120)).await;
    exactly_once(&table, &events, n);
}

#[tokio::test]
async fn two_nodes_hand_the_drain_over_when_the_leader_is_killed() {
    let Some(Setup { db, table, dir }) = setup("ob_lead").await else {
        return;
    };
    let schema = unique("crier_ob");
    let a = Node::start(dir.path(), &table, Some(&schema), "a").await;
    let b = Node::start(dir.path(), &table, Some(&schema), "b").await;
    // Exactly one of them drains.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (mut leader, follower) = loop {
        let (ra, rb) = (a.ready().await, b.ready().await);
        let (da, db_) = (
            ra["outbox"]["draining"] == true,
            rb["outbox"]["draining"] == true,
        );
        assert!(!(da && db_), "two nodes drain at once");
        if da {
            break (a, b);
        }
        if db_ {
            break (b, a);
        }
        assert!(Instant::now() < deadline, "no node drains the outbox");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(follower.ready().await["outbox"]["draining"], false);
    let n = 4000;
    let writer = tokio::spawn({
        let table = table.clone();
        async move { burst(&table, n).await }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while leader.ready().await["outbox"]["published"]
        .as_u64()
        .unwrap_or(0)
        < 500
    {
        assert!(Instant::now() < deadline, "the leader did not drain");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    leader.0.kill9();
    writer.await.expect("writer");
    let events = drained(&follower, &db, &table, n, Duration::from_secs(60)).await;
    exactly_once(&table, &events, n);
    assert_eq!(follower.ready().await["outbox"]["draining"], true);
}

//! The conformance suite against the real PostgreSQL, plus concurrent writers from several
//! log instances (as several hub nodes would be) on one shared log.
//!
//! The database comes from `CRIER_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it is unreachable the tests print a notice
//! and pass, except under `CI=true`, where that is a failure.

use std::sync::Arc;
use std::time::Duration;

use crier_core::{EventLog, Filter, ReadQuery, Scope};
use crier_store::conformance::{self, event, Opener};
use crier_store::PostgresLog;

fn url() -> String {
    std::env::var("CRIER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A unique prefix for one test's schemas, so tests never see (or drop) each other's: the
/// process, the time, and a count within the process, since the tests of this file start
/// together and two may read the same microsecond.
fn run_prefix() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros();
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("crier_t{}_{}_{n}", std::process::id(), t % 1_000_000_000)
}

async fn reachable() -> bool {
    let ok = match tokio::time::timeout(
        Duration::from_secs(5),
        tokio_postgres::connect(&url(), tokio_postgres::NoTls),
    )
    .await
    {
        Ok(Ok((client, conn))) => {
            tokio::spawn(conn);
            client.simple_query("SELECT 1").await.is_ok()
        }
        _ => false,
    };
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("PostgreSQL at {} is unreachable and CI=true", url());
        }
        eprintln!(
            "NOTICE: PostgreSQL at {} is unreachable; skipping the PostgreSQL tests",
            url()
        );
    }
    ok
}

/// This run's schema prefix, or `None` (after the notice) when PostgreSQL is unreachable
/// and the test is to pass without running.
async fn start() -> Option<String> {
    reachable().await.then(run_prefix)
}

/// Runs `test` with a schema of its own (this run's prefix and `name`), then drops the
/// run's schemas; passes at once (after the notice) when PostgreSQL is unreachable.
async fn with_schema<F: std::future::Future<Output = ()>>(
    name: &str,
    test: impl FnOnce(String) -> F,
) {
    let Some(prefix) = start().await else {
        return;
    };
    test(format!("{prefix}_{name}")).await;
    drop_schemas(&prefix).await;
}

/// A log on `schema`, as one hub node opens it.
async fn open_log(schema: &str) -> Arc<PostgresLog> {
    let log = PostgresLog::open(&url(), Some(schema)).await;
    Arc::new(log.expect("open postgres log"))
}

async fn drop_schemas(prefix: &str) {
    let Ok((client, conn)) = tokio_postgres::connect(&url(), tokio_postgres::NoTls).await else {
        return;
    };
    tokio::spawn(conn);
    // Exactly the schemas named `{prefix}_…`: `_` is a wildcard of LIKE, so it is escaped,
    // and the separator keeps prefix `…_1` from matching the schemas of `…_10`.
    let pattern = format!("{}\\_%", prefix.replace('_', "\\_"));
    let rows = client
        .query(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE $1",
            &[&pattern],
        )
        .await
        .unwrap_or_default();
    for r in rows {
        let name: String = r.get(0);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA \"{name}\" CASCADE"))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_conforms() {
    let Some(prefix) = start().await else {
        return;
    };
    let p = prefix.clone();
    let opener: Opener = Arc::new(move |name: String| {
        let schema = format!("{p}_{}", name.replace('-', "_"));
        Box::pin(async move {
            let log: Arc<dyn EventLog> = open_log(&schema).await;
            log
        })
    });
    conformance::run("pg", opener).await;
    drop_schemas(&prefix).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_one_log_commit_gapless_in_order() {
    with_schema("nodes", |schema| async move {
        let mut nodes = Vec::new();
        for _ in 0..3 {
            nodes.push(open_log(&schema).await);
        }
        // A reader tails the log from another instance while the three write.
        let reader = open_log(&schema).await;
        let total = 3 * 8 * 25;
        let tail = {
            let reader = reader.clone();
            tokio::spawn(async move {
                let mut seen: Vec<u64> = Vec::new();
                let mut after = 0;
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                while seen.len() < total && tokio::time::Instant::now() < deadline {
                    let page = reader
                        .read(ReadQuery::after(
                            Scope::All,
                            Arc::new(Filter::default()),
                            after,
                            1000,
                        ))
                        .await
                        .expect("read");
                    for e in &page.events {
                        assert!(
                            e.seq > after,
                            "seq {} appeared behind the reader's cursor {after}",
                            e.seq
                        );
                        assert_eq!(
                            e.seq,
                            seen.last().copied().unwrap_or(0) + 1,
                            "a gap: the reader must never see n+1 before n"
                        );
                        after = e.seq;
                        seen.push(e.seq);
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
                seen
            })
        };
        // Eight writers per node.
        let writers = (0..24)
            .map(|w| -> Arc<dyn EventLog> { nodes[w / 8].clone() })
            .collect();
        let acked = conformance::appended_seqs(writers, 25, |w, i| {
            let id = format!("n{}-w{}-{i}", w / 8, w % 8);
            vec![event("a", Some(&id), "t", &[])]
        })
        .await;
        assert_eq!(
            acked,
            (1..=total as u64).collect::<Vec<_>>(),
            "every seq once, gapless, across three writers"
        );
        let seen = tail.await.expect("reader");
        assert_eq!(
            seen,
            (1..=total as u64).collect::<Vec<_>>(),
            "the reader saw every seq in order"
        );
        for n in nodes {
            n.close().await.expect("close");
        }
        reader.close().await.expect("close");
    })
    .await;
}

#[tokio::test]
async fn refuses_a_newer_schema() {
    with_schema("version", |schema| async move {
        open_log(&schema).await.close().await.expect("close");
        let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .execute(
                &format!(
                    "UPDATE \"{schema}\".crier_meta SET value = 99 WHERE key = 'schema_version'"
                ),
                &[],
            )
            .await
            .expect("bump");
        match PostgresLog::open(&url(), Some(&schema)).await {
            Err(crier_core::LogError::SchemaTooNew { found: 99, .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("opened a store with a newer schema"),
        }
    })
    .await;
}

#[tokio::test]
async fn postgres_subscriptions_conform() {
    with_schema("subs", |schema| async move {
        let store = crier_store::PgSubs::open(&url(), Some(&schema)).await;
        conformance::subs(Arc::new(store.expect("open"))).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_held_by_one_contender_and_moves_when_it_goes() {
    if !reachable().await {
        return;
    }
    let key = i64::from(std::process::id()) * 1000 + 7;
    let interval = Duration::from_millis(100);
    let (c1, c2, c3) = (
        tokio_util::sync::CancellationToken::new(),
        tokio_util::sync::CancellationToken::new(),
        tokio_util::sync::CancellationToken::new(),
    );
    let contenders = [
        crier_store::Lease::contend(url(), key, interval, c1.clone()),
        crier_store::Lease::contend(url(), key, interval, c2.clone()),
        crier_store::Lease::contend(url(), key, interval, c3.clone()),
    ];
    let holders = |ls: &[crier_store::Lease]| ls.iter().filter(|l| l.held()).count();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while holders(&contenders) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nobody took the lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..20 {
        assert_eq!(holders(&contenders), 1, "exactly one holder");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = contenders.iter().position(|l| l.held()).expect("a holder");
    [&c1, &c2, &c3][first].cancel();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let others: Vec<usize> = (0..3)
            .filter(|i| *i != first && contenders[*i].held())
            .collect();
        if others.len() == 1 && !contenders[first].held() {
            break;
        }
        assert!(others.len() <= 1, "two holders at once");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease did not move after its holder went away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A holder whose database session dies (as when its node is killed) loses the lease;
    // a live contender (possibly the same one, reconnected) holds it again, never two.
    let second = (0..3).find(|i| contenders[*i].held()).expect("a holder");
    let (client, conn) = tokio_postgres::connect(&url(), tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(conn);
    let low = u32::try_from(key & 0xffff_ffff).expect("low bits");
    let killed = client
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objid = $1::oid AND classid = 0",
            &[&low],
        )
        .await
        .expect("terminate");
    assert_eq!(killed.len(), 1, "one session holds the lock");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut saw_loss = false;
    loop {
        let live: Vec<usize> = (0..3)
            .filter(|i| *i != first && contenders[*i].held())
            .collect();
        assert!(live.len() <= 1, "two holders at once");
        saw_loss |= live.is_empty() || !contenders[second].held();
        if saw_loss && live.len() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the lease was not lost and taken again after its holder's session died"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    c1.cancel();
    c2.cancel();
    c3.cancel();
}

#[tokio::test]
async fn postgres_keys_create_find_revoke() {
    use crier_core::keys::KeyStore;
    with_schema("keys", |schema| async move {
        let keys = crier_store::PgKeys::open(&url(), Some(&schema))
            .await
            .expect("open");
        let (k, secret) = keys
            .create("acme", crier_core::Role::Publisher, "ci")
            .await
            .expect("create");
        let hash = crier_store::keys::hash_secret(&secret);
        assert_eq!(keys.find(&hash).await.expect("find"), Some(k.clone()));
        assert!(keys
            .find(&crier_store::keys::hash_secret("crier_nope"))
            .await
            .expect("find")
            .is_none());
        assert!(keys.revoke(&k.id).await.expect("revoke"));
        assert!(!keys.revoke("key_missing").await.expect("revoke"));
        assert!(keys
            .find(&hash)
            .await
            .expect("find")
            .expect("still listed")
            .revoked_us
            .is_some());
        assert_eq!(keys.list().await.expect("list").len(), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_entities_conform() {
    with_schema("entities", |schema| async move {
        let log = open_log(&schema).await;
        conformance::entities(log.clone(), log.clone()).await;
        log.close().await.expect("close");
    })
    .await;
}

/// Two nodes (two log instances on one schema) race conditional updates of one entity:
/// each round exactly one wins, with exactly one event, and versions stay in step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_updates_race_across_nodes() {
    use crier_core::entity::{EntityError, EntityKey, EntityStore, Mutation, Precondition};
    with_schema("race", |schema| async move {
        let (x, y) = (open_log(&schema).await, open_log(&schema).await);
        let p = crier_core::Principal::anonymous_admin();
        let key = EntityKey::new("policy", "p1").expect("key");
        let put = |v: i64, cond| Mutation::Put {
            key: key.clone(),
            value: serde_json::json!({"v": v})
                .as_object()
                .cloned()
                .expect("object"),
            cond,
        };
        x.mutate(put(0, Precondition::Absent), p.clone(), 65536)
            .await
            .expect("create");
        for round in 1..=20 {
            let version = x
                .entity("default", &key)
                .await
                .expect("get")
                .expect("row")
                .version;
            let head = x.refresh().await.expect("head");
            let (a, b) = tokio::join!(
                x.mutate(put(round, Precondition::Version(version)), p.clone(), 65536),
                y.mutate(
                    put(-round, Precondition::Version(version)),
                    p.clone(),
                    65536
                ),
            );
            assert_eq!(
                [&a, &b].iter().filter(|r| r.is_ok()).count(),
                1,
                "round {round}"
            );
            assert!([a, b]
                .into_iter()
                .any(|r| matches!(r, Err(EntityError::Refused(_)))));
            assert_eq!(
                x.refresh().await.expect("head"),
                head + 1,
                "round {round}: one event"
            );
        }
        x.close().await.expect("close");
        y.close().await.expect("close");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_saved_filters_conform() {
    with_schema("filters", |schema| async move {
        let store = crier_store::PgFilters::open(&url(), Some(&schema)).await;
        conformance::filters(Arc::new(store.expect("open"))).await;
    })
    .await;
}

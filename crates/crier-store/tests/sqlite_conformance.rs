//! The conformance suite against real SQLite files, in both durability modes.

use std::sync::Arc;

use crier_core::EventLog;
use crier_store::conformance::{self, Opener};
use crier_store::{Durability, SqliteLog};

fn opener(dir: &std::path::Path, durability: Durability) -> Opener {
    let dir = dir.to_path_buf();
    Arc::new(move |name: String| {
        let path = dir.join(format!("{name}.db"));
        Box::pin(async move {
            let log: Arc<dyn EventLog> =
                Arc::new(SqliteLog::open(&path, durability).expect("open sqlite log"));
            log
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_fsync_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::run("fsync", opener(dir.path(), Durability::Fsync)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_commit_conforms() {
    let dir = tempfile::tempdir().expect("tempdir");
    conformance::run("commit", opener(dir.path(), Durability::Commit)).await;
}

#[tokio::test]
async fn refuses_a_newer_schema() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("x.db");
    let log = SqliteLog::open(&path, Durability::Commit).expect("open");
    log.close().await.expect("close");
    drop(log);
    let conn = rusqlite::Connection::open(&path).expect("raw open");
    conn.execute(
        "UPDATE meta SET value = 99 WHERE key = 'schema_version'",
        [],
    )
    .expect("bump");
    drop(conn);
    match SqliteLog::open(&path, Durability::Commit) {
        Err(crier_core::LogError::SchemaTooNew { found: 99, .. }) => {}
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("opened a store with a newer schema"),
    }
}

#[tokio::test]
async fn sqlite_subscriptions_conform() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crier_store::SqliteSubs::open(&dir.path().join("subs.db")).expect("open");
    conformance::subs(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_tables_conform_through_the_log_writer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log = SqliteLog::open(&dir.path().join("crier.db"), Durability::Commit).expect("open");
    let subs = crier_store::SqliteSubs::with_log(&log).await.expect("subs");
    conformance::subs(Arc::new(subs)).await;
    let filters = crier_store::SqliteFilters::with_log(&log)
        .await
        .expect("filters");
    conformance::filters(Arc::new(filters)).await;
    let subs = crier_store::SqliteSubs::with_log(&log).await.expect("subs");
    log.close().await.expect("close");
    assert!(
        matches!(
            crier_core::WebhookStore::advance(&subs, "s2", 1).await,
            Err(crier_core::LogError::Closed)
        ),
        "a side write after the log closed is refused, not written beside it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_entities_conform() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log =
        Arc::new(SqliteLog::open(&dir.path().join("e.db"), Durability::Commit).expect("open"));
    conformance::entities(log.clone(), log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_saved_filters_conform() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = crier_store::SqliteFilters::open(&dir.path().join("filters.db")).expect("open");
    conformance::filters(Arc::new(store)).await;
}

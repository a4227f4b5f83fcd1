//! A savepoint statement that fails sinks its whole group: no publisher is told "stored" for
//! an event that is not, nor "failed" for one that is, and the log keeps working after it.
//!
//! The failures are real SQLite errors: an authorizer installed on the writer's own
//! connection refuses one `SAVEPOINT`, `RELEASE` or `ROLLBACK TO` statement, and a temporary
//! trigger makes one event of a batch fail half-way, as a full disk or a constraint would.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crier_core::{AppendResult, EventLog, Filter, LogError, ReadQuery, Scope};
use rusqlite::hooks::{AuthAction, AuthContext, Authorization, TransactionOperation};
use tokio::sync::oneshot;

use super::{Durability, SqliteLog, WriteReq};
use crate::conformance::event;

/// Makes every insert of an event of type `x.boom` fail.
const BOOM: &str = "CREATE TEMP TRIGGER boom BEFORE INSERT ON events
    WHEN NEW.type = 'x.boom' BEGIN SELECT RAISE(ABORT, 'boom'); END;";

/// The seqs the log holds, by id.
async fn stored(log: &SqliteLog) -> Vec<(String, u64)> {
    let q = ReadQuery::after(Scope::All, Arc::new(Filter::default()), 0, 1000);
    let page = log.read(q).await.expect("read");
    page.events.iter().map(|e| (e.id.clone(), e.seq)).collect()
}

/// Queues three appends behind a writer that is held in a hook (so they form one group),
/// with the `nth` savepoint statement of kind `op` refused, and returns their answers.
async fn group_with_refused(
    log: &Arc<SqliteLog>,
    op: TransactionOperation,
    nth: usize,
) -> Vec<Result<Vec<AppendResult>, LogError>> {
    let (started_tx, started_rx) = oneshot::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let hook = move |conn: &mut rusqlite::Connection| {
        conn.execute_batch(BOOM).expect("trigger");
        let mut seen = 0;
        conn.authorizer(Some(move |ctx: AuthContext<'_>| match ctx.action {
            AuthAction::Savepoint {
                operation,
                savepoint_name: "batch",
            } if operation == op => {
                seen += 1;
                if seen == nth {
                    Authorization::Deny
                } else {
                    Authorization::Allow
                }
            }
            _ => Authorization::Allow,
        }));
        let _ = started_tx.send(());
        let _ = go_rx.recv();
    };
    let sender = log.sender().expect("open log");
    sender
        .send(WriteReq::Hook(Box::new(hook)))
        .await
        .expect("writer runs");
    started_rx.await.expect("hook started");
    let batches = [
        vec![event("t", Some("a1"), "x.ok", &[])],
        vec![
            event("t", Some("b1"), "x.ok", &[]),
            event("t", Some("b2"), "x.boom", &[]),
        ],
        vec![event("t", Some("c1"), "x.ok", &[])],
    ];
    let mut tasks = Vec::new();
    for b in batches {
        let log = log.clone();
        tasks.push(tokio::spawn(async move { log.append(b).await }));
        // Queued in this order, so the group is A, B, C.
        let want = tasks.len();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sender.max_capacity() - sender.capacity() < want {
            assert!(Instant::now() < deadline, "the append was not queued");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    go_tx.send(()).expect("release the writer");
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("append task"));
    }
    out
}

async fn refused_statement_fails_the_whole_group(op: TransactionOperation, nth: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let log =
        Arc::new(SqliteLog::open(&dir.path().join("t.db"), Durability::Commit).expect("open"));
    let answers = group_with_refused(&log, op, nth).await;
    let held = stored(&log).await;
    for (name, a) in ["a", "b", "c"].iter().zip(&answers) {
        assert!(
            a.is_err(),
            "{op:?} #{nth} refused: request {name} was told {a:?} while the log holds {held:?}"
        );
    }
    assert_eq!(
        held,
        vec![],
        "{op:?} #{nth} refused: nothing of the group is stored"
    );
    assert_eq!(log.head(), 0);
    // The writer is healthy afterwards: the next publish is stored at the next seq.
    let d = log
        .append(vec![event("t", Some("d1"), "x.ok", &[])])
        .await
        .expect("publish after the failed group");
    assert_eq!(d[0].seq, 1);
    assert_eq!(stored(&log).await, vec![("d1".to_string(), 1)]);
    log.close().await.expect("close");
    // And nothing of the failed group reappears from the file.
    let reopened = SqliteLog::open(&dir.path().join("t.db"), Durability::Commit).expect("reopen");
    assert_eq!(stored(&reopened).await, vec![("d1".to_string(), 1)]);
    reopened.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_rollback_to_fails_the_whole_group() {
    // B's second event fails; rolling back to B's savepoint is refused, so B's first event
    // would stay in the transaction.
    refused_statement_fails_the_whole_group(TransactionOperation::Rollback, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_release_fails_the_whole_group() {
    refused_statement_fails_the_whole_group(TransactionOperation::Release, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_savepoint_fails_the_whole_group() {
    refused_statement_fails_the_whole_group(TransactionOperation::Begin, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_batch_alone_is_rolled_back_to_its_savepoint() {
    // Without a refused statement, only B fails and A and C are stored.
    let dir = tempfile::tempdir().expect("tempdir");
    let log =
        Arc::new(SqliteLog::open(&dir.path().join("t.db"), Durability::Commit).expect("open"));
    let answers = group_with_refused(&log, TransactionOperation::Unknown, usize::MAX).await;
    assert!(answers[0].is_ok() && answers[2].is_ok(), "{answers:?}");
    assert!(answers[1].is_err(), "{answers:?}");
    assert_eq!(
        stored(&log).await,
        vec![("a1".to_string(), 1), ("c1".to_string(), 2)]
    );
    log.close().await.expect("close");
}

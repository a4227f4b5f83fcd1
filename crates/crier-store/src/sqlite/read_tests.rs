//! Reads beyond the pool wait for a turn instead of each taking a thread and a connection.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{Durability, SqliteLog, READ_POOL};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_beyond_the_pool_wait_their_turn() {
    let dir = tempfile::tempdir().expect("tempdir");
    let log =
        Arc::new(SqliteLog::open(&dir.path().join("t.db"), Durability::Commit).expect("open"));
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let reads: Vec<_> = (0..READ_POOL * 8)
        .map(|_| {
            let (log, running, most) = (log.clone(), running.clone(), most.clone());
            tokio::spawn(async move {
                log.with_reader(move |conn| {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    // Long enough that the readers overlap if nothing holds them back.
                    std::thread::sleep(Duration::from_millis(10));
                    let one: i64 = conn.query_row("SELECT 1", [], |r| r.get(0))?;
                    running.fetch_sub(1, Ordering::SeqCst);
                    Ok(one)
                })
                .await
            })
        })
        .collect();
    for r in reads {
        assert_eq!(r.await.expect("task").expect("read"), 1);
    }
    let most = most.load(Ordering::SeqCst);
    assert!((1..=READ_POOL).contains(&most), "{most} reads ran at once");
    let pooled = log.shared.readers.lock().expect("pool").len();
    assert!(pooled <= READ_POOL, "{pooled} connections kept");
}

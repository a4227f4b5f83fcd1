//! The `EventLog` suite: appends and reads, idempotence, the commit sink's order, time
//! ranges, the event series, and retention across a reopen.

use std::sync::{Arc, Mutex};

use crier_core::log::Order;
use crier_core::{read_full, Committed, EventLog, Filter, NewEvent, ReadQuery, Scope};

use super::{appended_seqs, event, Opener};

fn all(scope: Scope) -> ReadQuery {
    ReadQuery::after(scope, Arc::new(Filter::default()), 0, 100_000)
}

async fn seqs(log: &Arc<dyn EventLog>, q: ReadQuery) -> Vec<u64> {
    read_full(log.as_ref(), q)
        .await
        .expect("read")
        .events
        .iter()
        .map(|e| e.seq)
        .collect()
}

/// Runs every check, each on its own fresh log named `{prefix}-{check}`.
pub async fn run(prefix: &str, open: Opener) {
    let o = |n: &str| open(format!("{prefix}-{n}"));
    append_and_read(o("append").await).await;
    idempotent(o("idem").await).await;
    concurrent_sink_order(o("sink").await).await;
    time_ranges(o("time").await).await;
    series(o("series").await).await;
    retention_and_reopen(open.clone(), format!("{prefix}-retention")).await;
}

async fn append_and_read(log: Arc<dyn EventLog>) {
    assert_eq!(log.head(), 0, "a new log is empty");
    let r = log
        .append(vec![
            event("a", Some("1"), "site.created", &["prod"]),
            event("b", Some("2"), "site.created", &[]),
            event("a", Some("3"), "user.deleted", &["dev"]),
        ])
        .await
        .expect("append");
    assert_eq!(
        r.iter().map(|x| x.seq).collect::<Vec<_>>(),
        vec![1, 2, 3],
        "seqs start at 1, gapless"
    );
    assert!(r.iter().all(|x| !x.duplicate));
    let r = log
        .append(vec![event("a", Some("4"), "site.deleted", &["prod"])])
        .await
        .expect("append");
    assert_eq!(r[0].seq, 4);
    assert_eq!(log.head(), 4);

    assert_eq!(seqs(&log, all(Scope::All)).await, vec![1, 2, 3, 4]);
    assert_eq!(
        seqs(&log, all(Scope::Tenant("a".into()))).await,
        vec![1, 3, 4],
        "tenant scope"
    );
    assert_eq!(
        seqs(&log, all(Scope::Tenant("c".into()))).await,
        Vec::<u64>::new()
    );

    let mut q = all(Scope::Tenant("a".into()));
    q.filter = Arc::new(Filter::from_query([("type", "site.*"), ("tag", "prod")]).expect("filter"));
    assert_eq!(seqs(&log, q.clone()).await, vec![1, 4], "filtered read");
    q.order = Order::Desc;
    assert_eq!(seqs(&log, q.clone()).await, vec![4, 1], "descending read");
    q.limit = 1;
    assert_eq!(seqs(&log, q.clone()).await, vec![4], "limit");

    let mut q = all(Scope::All);
    q.after = 1;
    q.before = Some(4);
    assert_eq!(
        seqs(&log, q).await,
        vec![2, 3],
        "seq range is exclusive at both ends"
    );

    let page = log
        .read(ReadQuery::after(
            Scope::All,
            Arc::new(Filter::default()),
            4,
            10,
        ))
        .await
        .expect("read at head");
    assert!(
        page.events.is_empty() && page.exhausted,
        "nothing after the head"
    );

    let got = log
        .get("a", "3")
        .await
        .expect("get")
        .expect("event 3 exists");
    assert_eq!(got.seq, 3);
    let v: serde_json::Value = serde_json::from_slice(&got.json).expect("stored JSON");
    assert_eq!(v["seq"], 3);
    assert_eq!(v["type"], "user.deleted");
    assert!(
        log.get("b", "3").await.expect("get").is_none(),
        "get is tenant-scoped"
    );
    log.close().await.expect("close");
}

/// The (seq, duplicate) answer to each event of `batch`.
async fn outcomes(log: &Arc<dyn EventLog>, batch: Vec<NewEvent>) -> Vec<(u64, bool)> {
    let r = log.append(batch).await.expect("append");
    r.iter().map(|a| (a.seq, a.duplicate)).collect()
}

async fn idempotent(log: Arc<dyn EventLog>) {
    let r = outcomes(&log, vec![event("a", Some("x"), "t", &[])]).await;
    assert_eq!(r, [(1, false)]);
    let r = outcomes(
        &log,
        vec![
            event("a", Some("x"), "t", &[]),
            event("a", Some("y"), "t", &[]),
            event("a", Some("y"), "t", &[]),
        ],
    )
    .await;
    assert_eq!(r[0], (1, true), "existing id is a duplicate");
    assert_eq!(r[1], (2, false));
    assert_eq!(r[2], (2, true), "a repeat inside one batch is a duplicate");
    let r = outcomes(&log, vec![event("b", Some("x"), "t", &[])]).await;
    assert_eq!(r, [(3, false)], "ids are unique per tenant only");
    assert_eq!(log.head(), 3);
    log.close().await.expect("close");
}

async fn concurrent_sink_order(log: Arc<dyn EventLog>) {
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let s = seen.clone();
    log.set_commit_sink(Arc::new(move |evs: &[Arc<Committed>]| {
        s.lock()
            .expect("sink lock")
            .extend(evs.iter().map(|e| e.seq));
    }));
    let acked = appended_seqs(vec![log.clone(); 16], 20, |t, i| {
        let id = format!("{t}-{i}");
        vec![event("a", Some(&id), "t", &[]), event("a", None, "t", &[])]
    })
    .await;
    let n = 16 * 20 * 2;
    assert_eq!(
        acked,
        (1..=n).collect::<Vec<u64>>(),
        "every acknowledged seq is unique and gapless"
    );
    let seen = seen.lock().expect("sink lock").clone();
    assert_eq!(
        seen,
        (1..=n).collect::<Vec<u64>>(),
        "the sink sees every commit, in seq order"
    );
    assert_eq!(seqs(&log, all(Scope::All)).await.len(), n as usize);
    log.close().await.expect("close");
}

async fn time_ranges(log: Arc<dyn EventLog>) {
    let mut batch = Vec::new();
    for (i, t) in [
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:01:00Z",
        "2026-01-01T00:02:00Z",
        "2026-01-01T00:03:00Z",
    ]
    .iter()
    .enumerate()
    {
        let mut e = event("a", Some(&i.to_string()), "t", &[]);
        e.time_us = crier_core::event::parse_time_us(t).expect("time");
        batch.push(e);
    }
    log.append(batch).await.expect("append");
    let mut q = all(Scope::Tenant("a".into()));
    q.since_us = crier_core::event::parse_time_us("2026-01-01T00:01:00Z");
    q.until_us = crier_core::event::parse_time_us("2026-01-01T00:03:00Z");
    assert_eq!(
        seqs(&log, q.clone()).await,
        vec![2, 3],
        "since is inclusive, until exclusive"
    );
    q.scope = Scope::Tenant("b".into());
    assert!(seqs(&log, q).await.is_empty());
    log.close().await.expect("close");
}

/// Events per 10 s bucket: counted per tenant at commit, in buckets around now, summed
/// across tenants for `Scope::All`, and not lowered by pruning.
async fn series(log: Arc<dyn EventLog>) {
    let before = crier_core::log::series_bucket(crier_core::event::now_us());
    log.append(vec![
        event("a", Some("1"), "t", &[]),
        event("a", Some("2"), "t", &[]),
        event("b", Some("3"), "t", &[]),
    ])
    .await
    .expect("append");
    log.append(vec![event("a", Some("4"), "t", &[])])
        .await
        .expect("append");
    let after = crier_core::log::series_bucket(crier_core::event::now_us());
    let a = log.counts(Scope::Tenant("a".into())).await.expect("counts");
    assert_eq!(a.series.values().sum::<u64>(), 3, "{:?}", a.series);
    assert!(
        a.series
            .keys()
            .all(|k| (before..=after).contains(k) && k % 10 == 0),
        "buckets are 10 s starts around now: {:?} not in {before}..={after}",
        a.series
    );
    let all = log.counts(Scope::All).await.expect("counts");
    assert_eq!(all.series.values().sum::<u64>(), 4);
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    log.prune(Some(0), None).await.expect("prune");
    let all = log.counts(Scope::All).await.expect("counts");
    assert_eq!(all.total, 0, "pruned");
    assert_eq!(
        all.series.values().sum::<u64>(),
        4,
        "the rate history stays"
    );
    log.close().await.expect("close");
}

async fn retention_and_reopen(open: Opener, name: String) {
    let log = open(name.clone()).await;
    for chunk in 0..5 {
        let batch = (0..10)
            .map(|i| event("a", Some(&format!("{chunk}-{i}")), "t", &[]))
            .collect();
        log.append(batch).await.expect("append");
    }
    assert_eq!(log.head(), 50);
    let pruned = log.prune(None, Some(15)).await.expect("prune");
    assert_eq!(pruned, 35, "count retention keeps the newest max_events");
    assert_eq!(log.pruned_through(), 35);
    assert_eq!(
        seqs(&log, all(Scope::All)).await,
        (36..=50).collect::<Vec<_>>()
    );
    // Age retention: everything was received just now, so a one-hour age removes nothing.
    assert_eq!(
        log.prune(Some(3_600_000_000), None).await.expect("prune"),
        35
    );
    // ... and an age of zero removes everything received before now.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    assert_eq!(log.prune(Some(0), None).await.expect("prune"), 50);
    assert!(seqs(&log, all(Scope::All)).await.is_empty());
    assert!(
        log.get("a", "4-9").await.expect("get").is_none(),
        "pruned events are gone"
    );
    log.close().await.expect("close");

    let log = open(name).await;
    assert_eq!(
        log.head(),
        50,
        "head survives a restart even when every event was pruned"
    );
    assert_eq!(log.pruned_through(), 50, "retention survives a restart");
    let r = log
        .append(vec![event("a", Some("after"), "t", &[])])
        .await
        .expect("append");
    assert_eq!(r[0].seq, 51, "seqs continue after a restart");
    log.close().await.expect("close");
}

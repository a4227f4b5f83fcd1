//! The `EventLog` conformance suite: every backend's tests call [`run`] with a way to open
//! (and reopen) a log by name. It checks the invariants of [`crier_core::log`]: gapless
//! commit-ordered seqs, all-or-nothing idempotent appends, filtered and ranged reads in both
//! orders, tenant scoping, retention as a prefix that survives a restart, and the commit
//! sink's ordering under concurrent appenders.
//!
//! Failures panic with a message naming the broken property, as tests do.

use std::sync::{Arc, Mutex};

use crier_core::log::{BoxFuture, Order};
use crier_core::{
    read_full, Committed, EventInput, EventLog, Filter, NewEvent, Principal, PublishContext,
    ReadQuery, Scope,
};

/// Opens the log called `name`; opening a name again after `close` reopens the same log.
pub type Opener = Arc<dyn Fn(String) -> BoxFuture<'static, Arc<dyn EventLog>> + Send + Sync>;

/// Builds a valid event for the suite.
pub fn event(tenant: &str, id: Option<&str>, kind: &str, tags: &[&str]) -> NewEvent {
    let mut p = Principal::anonymous_admin();
    p.tenant = tenant.to_string();
    let input = EventInput {
        id: id.map(String::from),
        kind: Some(kind.to_string()),
        tags: Some(tags.iter().map(|t| t.to_string()).collect()),
        data: Some(serde_json::json!({"n": id})),
        ..EventInput::default()
    };
    input
        .validate(&PublishContext {
            principal: &p,
            max_event_bytes: 65536,
            now_us: crier_core::event::now_us(),
        })
        .expect("suite events are valid")
}

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

async fn idempotent(log: Arc<dyn EventLog>) {
    let r = log
        .append(vec![event("a", Some("x"), "t", &[])])
        .await
        .expect("append");
    assert_eq!((r[0].seq, r[0].duplicate), (1, false));
    let r = log
        .append(vec![
            event("a", Some("x"), "t", &[]),
            event("a", Some("y"), "t", &[]),
            event("a", Some("y"), "t", &[]),
        ])
        .await
        .expect("append");
    assert_eq!(
        (r[0].seq, r[0].duplicate),
        (1, true),
        "existing id is a duplicate"
    );
    assert_eq!((r[1].seq, r[1].duplicate), (2, false));
    assert_eq!(
        (r[2].seq, r[2].duplicate),
        (2, true),
        "a repeat inside one batch is a duplicate"
    );
    let r = log
        .append(vec![event("b", Some("x"), "t", &[])])
        .await
        .expect("append");
    assert_eq!(
        (r[0].seq, r[0].duplicate),
        (3, false),
        "ids are unique per tenant only"
    );
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
    let mut tasks = Vec::new();
    for t in 0..16 {
        let log = log.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..20 {
                let id = format!("{t}-{i}");
                let batch = vec![event("a", Some(&id), "t", &[]), event("a", None, "t", &[])];
                let r = log.append(batch).await.expect("append");
                acked.extend(r.iter().map(|x| x.seq));
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("task"));
    }
    acked.sort_unstable();
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

/// The subscription-store part of the suite: CRUD scoped by tenant, a cursor that only
/// advances (except by redeliver), delivery records newest first, and counts.
pub async fn subs(store: Arc<dyn crate::subs::SubStore>) {
    use crate::subs::{Delivery, SubPatch, Subscription};
    let sub = |id: &str, tenant: &str| Subscription {
        id: id.into(),
        tenant: tenant.into(),
        name: format!("{id} name"),
        filter: "{}".into(),
        url: "https://example.com/hook".into(),
        secret: "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=".into(),
        cursor: 5,
        status: "active".into(),
        expires_us: None,
        created_us: crier_core::event::now_us(),
        note: None,
    };
    store.create(sub("s1", "a")).await.expect("create");
    store.create(sub("s2", "a")).await.expect("create");
    store.create(sub("s3", "b")).await.expect("create");
    assert_eq!(
        store.list(Some("a".into())).await.expect("list").len(),
        2,
        "list is per tenant"
    );
    assert_eq!(store.list(None).await.expect("list").len(), 3);
    assert!(
        store
            .get(Some("b".into()), "s1".into())
            .await
            .expect("get")
            .is_none(),
        "another tenant's subscription is absent"
    );
    let got = store
        .get(Some("a".into()), "s1".into())
        .await
        .expect("get")
        .expect("s1");
    assert_eq!(
        (got.cursor, got.status.as_str(), got.name.as_str()),
        (5, "active", "s1 name")
    );

    let patch = SubPatch {
        name: Some("renamed".into()),
        status: Some("paused".into()),
        ..SubPatch::default()
    };
    assert!(
        store
            .update("b".into(), "s1".into(), patch.clone())
            .await
            .expect("update")
            .is_none(),
        "update is tenant-scoped"
    );
    let s = store
        .update("a".into(), "s1".into(), patch)
        .await
        .expect("update")
        .expect("s1");
    assert_eq!((s.name.as_str(), s.status.as_str()), ("renamed", "paused"));

    store.advance("s1".into(), 9).await.expect("advance");
    store.advance("s1".into(), 7).await.expect("advance");
    assert_eq!(
        store
            .get(None, "s1".into())
            .await
            .expect("get")
            .expect("s1")
            .cursor,
        9,
        "the cursor never moves back by advance"
    );

    for (seq, status) in [(6, "delivered"), (7, "dead"), (8, "failed")] {
        let d = Delivery {
            sub_id: "s1".into(),
            seq,
            event_id: format!("e{seq}"),
            status: status.into(),
            attempts: 2,
            last_status_code: Some(500),
            last_error: Some("boom".into()),
            next_attempt_us: None,
            updated_us: crier_core::event::now_us(),
        };
        store.record("a".into(), d).await.expect("record");
    }
    let list = store
        .deliveries("s1".into(), None, 10)
        .await
        .expect("deliveries");
    assert_eq!(
        list.iter().map(|d| d.seq).collect::<Vec<_>>(),
        vec![8, 7, 6],
        "newest first"
    );
    let dead = store
        .deliveries("s1".into(), Some("dead".into()), 10)
        .await
        .expect("deliveries");
    assert_eq!(dead.len(), 1);
    assert_eq!(
        store
            .delivery("s1".into(), 7)
            .await
            .expect("delivery")
            .expect("7")
            .last_status_code,
        Some(500)
    );

    let (subs, dels) = store.counts(Some("a".into())).await.expect("counts");
    let get = |l: &[(String, u64)], k: &str| l.iter().find(|(s, _)| s == k).map_or(0, |(_, n)| *n);
    assert_eq!((get(&subs, "active"), get(&subs, "paused")), (1, 1));
    assert_eq!(
        (
            get(&dels, "delivered"),
            get(&dels, "dead"),
            get(&dels, "failed")
        ),
        (1, 1, 1)
    );

    let s = store
        .redeliver("a".into(), "s1".into(), 6)
        .await
        .expect("redeliver")
        .expect("s1");
    assert_eq!(
        (s.cursor, s.status.as_str()),
        (6, "active"),
        "redeliver moves the cursor back and resumes"
    );
    assert_eq!(
        store
            .delivery("s1".into(), 7)
            .await
            .expect("delivery")
            .expect("7")
            .status,
        "pending",
        "dead records above the cursor are retried"
    );
    assert!(store
        .redeliver("b".into(), "s1".into(), 0)
        .await
        .expect("redeliver")
        .is_none());

    assert!(
        !store.delete("b".into(), "s1".into()).await.expect("delete"),
        "delete is tenant-scoped"
    );
    assert!(store.delete("a".into(), "s1".into()).await.expect("delete"));
    assert!(store.get(None, "s1".into()).await.expect("get").is_none());
    assert!(
        store
            .deliveries("s1".into(), None, 10)
            .await
            .expect("deliveries")
            .is_empty(),
        "records go with it"
    );
}

/// The saved-filter contract: names unique per tenant, tenants isolated, the per-tenant cap
/// checked with the insert (also under concurrent creators), updates keep the creator.
pub async fn filters(store: Arc<dyn crate::filters::FilterStore>) {
    use crate::filters::{Created, SavedFilter};
    let saved = |tenant: &str, name: &str, filter: &str| SavedFilter {
        tenant: tenant.into(),
        name: name.into(),
        filter: filter.into(),
        description: Some(format!("{name} of {tenant}")),
        created_by: "alice".into(),
        created_us: 1_000,
        updated_us: 1_000,
    };
    let errors = r#"{"severity":"error"}"#;
    assert_eq!(
        store
            .create(saved("a", "errors", errors), 3)
            .await
            .expect("create"),
        Created::Stored(saved("a", "errors", errors))
    );
    assert_eq!(
        store
            .create(saved("a", "errors", "{}"), 3)
            .await
            .expect("create"),
        Created::Exists,
        "a name is unique within a tenant"
    );
    assert_eq!(
        store
            .get("a".into(), "errors".into())
            .await
            .expect("get")
            .expect("errors")
            .filter,
        errors,
        "a refused duplicate changes nothing"
    );
    assert!(
        matches!(
            store
                .create(saved("b", "errors", "{}"), 3)
                .await
                .expect("create"),
            Created::Stored(_)
        ),
        "another tenant may use the same name"
    );
    store
        .create(saved("a", "deploys", r#"{"type":["deploy.*"]}"#), 3)
        .await
        .expect("create");
    store
        .create(saved("a", "audit", "{}"), 3)
        .await
        .expect("create");
    assert_eq!(
        store
            .create(saved("a", "fourth", "{}"), 3)
            .await
            .expect("create"),
        Created::Full,
        "the per-tenant cap holds"
    );
    assert!(store
        .get("a".into(), "fourth".into())
        .await
        .expect("get")
        .is_none());
    let names: Vec<String> = store
        .list("a".into())
        .await
        .expect("list")
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(
        names,
        ["audit", "deploys", "errors"],
        "listed by name, per tenant"
    );
    assert!(
        store
            .get("b".into(), "deploys".into())
            .await
            .expect("get")
            .is_none(),
        "another tenant's filter is absent"
    );

    let up = store
        .update(
            "a".into(),
            "errors".into(),
            r#"{"severity":"critical"}"#.into(),
            None,
            2_000,
        )
        .await
        .expect("update")
        .expect("errors");
    assert_eq!(
        (
            up.filter.as_str(),
            up.description.as_deref(),
            up.created_by.as_str(),
            up.created_us,
            up.updated_us
        ),
        (r#"{"severity":"critical"}"#, None, "alice", 1_000, 2_000),
        "an update replaces the definition and keeps the creator"
    );
    assert!(store
        .update("b".into(), "deploys".into(), "{}".into(), None, 3_000)
        .await
        .expect("update")
        .is_none());
    assert_eq!(
        store
            .get("b".into(), "errors".into())
            .await
            .expect("get")
            .expect("b's errors")
            .filter,
        "{}",
        "an update is tenant-scoped"
    );

    assert!(
        !store
            .delete("b".into(), "deploys".into())
            .await
            .expect("delete"),
        "delete is tenant-scoped"
    );
    assert!(store
        .delete("a".into(), "deploys".into())
        .await
        .expect("delete"));
    assert!(!store
        .delete("a".into(), "deploys".into())
        .await
        .expect("delete"));
    assert_eq!(store.list("a".into()).await.expect("list").len(), 2);

    // Concurrent creators racing for the last places never overshoot the cap.
    let tasks: Vec<_> = (0..8)
        .map(|i| tokio::spawn(store.create(saved("c", &format!("f{i}"), "{}"), 5)))
        .collect();
    let mut stored = 0;
    for t in tasks {
        if matches!(t.await.expect("task").expect("create"), Created::Stored(_)) {
            stored += 1;
        }
    }
    assert_eq!(stored, 5, "exactly the cap's worth of creators succeed");
    assert_eq!(store.list("c".into()).await.expect("list").len(), 5);
}

fn principal(tenant: &str) -> Principal {
    let mut p = Principal::anonymous_admin();
    p.tenant = tenant.to_string();
    p.subject = format!("{tenant}-writer");
    p
}

fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    match v {
        serde_json::Value::Object(m) => m,
        other => panic!("suite values are objects, not {other}"),
    }
}

async fn events_after(log: &Arc<dyn EventLog>, tenant: &str, after: u64) -> Vec<serde_json::Value> {
    read_full(
        log.as_ref(),
        ReadQuery::after(
            Scope::Tenant(tenant.to_string()),
            Arc::new(Filter::default()),
            after,
            100_000,
        ),
    )
    .await
    .expect("read")
    .events
    .iter()
    .map(|e| e.to_value())
    .collect()
}

/// The entity-store suite: §11's rules as stored by a backend, with each change's events
/// committed in the same transaction (read back from the log).
pub async fn entities(log: Arc<dyn EventLog>, store: Arc<dyn crier_core::entity::EntityStore>) {
    use crier_core::entity::{
        EntityError, EntityKey, LinkKey, LinkQuery, Mutation, Outcome, Precondition,
    };
    use crier_core::ErrorKind;
    use serde_json::json;

    let a = principal("a");
    let refusal = |r: Result<crier_core::entity::Applied, EntityError>| match r {
        Err(EntityError::Refused(e)) => e.kind,
        Err(e) => panic!("a store error where a refusal was expected: {e}"),
        Ok(x) => panic!("applied where a refusal was expected: {x:?}"),
    };
    let key = |k: &str, i: &str| EntityKey::new(k, i).expect("key");
    let put = |k: EntityKey, v: serde_json::Value, cond| Mutation::Put {
        key: k,
        value: obj(v),
        cond,
    };
    let site = key("site", "nyc");

    // Create, then the event is in the log with the change.
    let r = store
        .mutate(
            put(
                site.clone(),
                json!({"name": "NYC", "floors": 3}),
                Precondition::Absent,
            ),
            a.clone(),
            65536,
        )
        .await
        .expect("create");
    assert_eq!(r.seqs.len(), 1, "a create emits one event");
    let Outcome::Entity { row, created: true } = &r.outcome else {
        panic!("create answered {:?}", r.outcome);
    };
    assert_eq!(row.version, 1);
    let evs = events_after(&log, "a", 0).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["seq"], r.seqs[0]);
    assert_eq!(evs[0]["type"], "site.created");
    assert_eq!(evs[0]["source"], "entities");
    assert_eq!(evs[0]["subject"], "site/nyc");
    assert_eq!(evs[0]["actor"], "a-writer");
    assert_eq!(
        evs[0]["data"],
        json!({"kind": "site", "id": "nyc", "version": 1, "value": {"name": "NYC", "floors": 3}})
    );

    // Create-only on an existing entity, a stale If-Match: 412 and no event.
    let head = log.head();
    let e = refusal(
        store
            .mutate(
                put(site.clone(), json!({"x": 1}), Precondition::Absent),
                a.clone(),
                65536,
            )
            .await,
    );
    assert_eq!(e, ErrorKind::PreconditionFailed);
    let e = refusal(
        store
            .mutate(
                put(site.clone(), json!({"x": 1}), Precondition::Version(7)),
                a.clone(),
                65536,
            )
            .await,
    );
    assert_eq!(e, ErrorKind::PreconditionFailed);
    assert_eq!(log.head(), head, "a refused change appends nothing");

    // The same value again: no event, same version.
    let r = store
        .mutate(
            put(
                site.clone(),
                json!({"floors": 3, "name": "NYC"}),
                Precondition::Version(1),
            ),
            a.clone(),
            65536,
        )
        .await
        .expect("same put");
    assert!(
        r.seqs.is_empty(),
        "an update that changes nothing emits nothing"
    );
    assert!(matches!(&r.outcome, Outcome::Entity { row, .. } if row.version == 1));

    // Merge patch: null removes, nested objects merge; `changed` names top-level fields.
    let r = store
        .mutate(
            Mutation::Patch {
                key: site.clone(),
                patch: obj(json!({"floors": null, "address": {"city": "New York"}})),
                cond: Precondition::Version(1),
            },
            a.clone(),
            65536,
        )
        .await
        .expect("patch");
    assert_eq!(r.seqs.len(), 1);
    let got = store
        .entity("a", &site)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(got.version, 2);
    assert_eq!(
        serde_json::Value::Object(got.value.clone().expect("live")),
        json!({"name": "NYC", "address": {"city": "New York"}})
    );
    let evs = events_after(&log, "a", head).await;
    assert_eq!(evs.len(), 1);
    assert_eq!(evs[0]["type"], "site.updated");
    assert_eq!(evs[0]["data"]["previous_version"], 1);
    assert_eq!(evs[0]["data"]["version"], 2);
    assert_eq!(evs[0]["data"]["changed"], json!(["address", "floors"]));

    // Patch and delete of a missing entity: 404.
    let missing = key("site", "nowhere");
    let e = refusal(
        store
            .mutate(
                Mutation::Patch {
                    key: missing.clone(),
                    patch: obj(json!({"a": 1})),
                    cond: Precondition::None,
                },
                a.clone(),
                65536,
            )
            .await,
    );
    assert_eq!(e, ErrorKind::NotFound);
    let e = refusal(
        store
            .mutate(
                Mutation::Delete {
                    key: missing.clone(),
                    cond: Precondition::None,
                },
                a.clone(),
                65536,
            )
            .await,
    );
    assert_eq!(e, ErrorKind::NotFound);

    // Lists page by id.
    for id in ["b", "a", "d", "c"] {
        store
            .mutate(
                put(key("user", id), json!({"n": id}), Precondition::None),
                a.clone(),
                65536,
            )
            .await
            .expect("user");
    }
    let page = store.entities("a", "user", None, 3).await.expect("list");
    let ids: Vec<&str> = page.iter().map(|r| r.key.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "c"]);
    let page = store
        .entities("a", "user", Some("c"), 3)
        .await
        .expect("list");
    let ids: Vec<&str> = page.iter().map(|r| r.key.id.as_str()).collect();
    assert_eq!(ids, ["d"]);

    // Links: both ends must exist; idempotent when identical; conflicting metadata refused.
    let group = key("group", "ops");
    let link = |kind: &str, s: &EntityKey, t: &EntityKey| {
        LinkKey::new(kind, s.clone(), t.clone()).expect("link key")
    };
    let e = refusal(
        store
            .mutate(
                Mutation::Link {
                    key: link("member_of", &key("user", "a"), &group),
                    metadata: json!({}),
                },
                a.clone(),
                65536,
            )
            .await,
    );
    assert_eq!(
        e,
        ErrorKind::NotFound,
        "linking to a missing entity is a 404"
    );
    store
        .mutate(
            put(group.clone(), json!({"title": "Ops"}), Precondition::None),
            a.clone(),
            65536,
        )
        .await
        .expect("group");
    let before_links = log.head();
    for u in ["a", "b"] {
        let r = store
            .mutate(
                Mutation::Link {
                    key: link("member_of", &key("user", u), &group),
                    metadata: json!({"since": 2024}),
                },
                a.clone(),
                65536,
            )
            .await
            .expect("link");
        assert_eq!(r.seqs.len(), 1);
    }
    store
        .mutate(
            Mutation::Link {
                key: link("located_in", &group, &site),
                metadata: json!({}),
            },
            a.clone(),
            65536,
        )
        .await
        .expect("link");
    let again = store
        .mutate(
            Mutation::Link {
                key: link("member_of", &key("user", "a"), &group),
                metadata: json!({"since": 2024}),
            },
            a.clone(),
            65536,
        )
        .await
        .expect("same link");
    assert!(
        again.seqs.is_empty(),
        "re-linking identically emits nothing"
    );
    let e = refusal(
        store
            .mutate(
                Mutation::Link {
                    key: link("member_of", &key("user", "a"), &group),
                    metadata: json!({"since": 1999}),
                },
                a.clone(),
                65536,
            )
            .await,
    );
    assert_eq!(e, ErrorKind::Conflict);
    let evs = events_after(&log, "a", before_links).await;
    assert_eq!(evs.len(), 3);
    assert_eq!(evs[0]["type"], "link.created");
    assert_eq!(evs[0]["subject"], "user/a");
    assert_eq!(
        evs[0]["data"],
        json!({"type": "member_of", "source": "user/a", "target": "group/ops", "metadata": {"since": 2024}})
    );
    let to_group = store
        .links(
            "a",
            LinkQuery {
                target: Some(group.clone()),
                limit: 10,
                ..LinkQuery::default()
            },
        )
        .await
        .expect("links");
    assert_eq!(to_group.len(), 2);
    let first = store
        .links(
            "a",
            LinkQuery {
                limit: 1,
                ..LinkQuery::default()
            },
        )
        .await
        .expect("links");
    let rest = store
        .links(
            "a",
            LinkQuery {
                after: Some(first[0].key.clone()),
                limit: 10,
                ..LinkQuery::default()
            },
        )
        .await
        .expect("links");
    assert_eq!(first.len() + rest.len(), 3, "pages cover every link once");
    assert!(rest.iter().all(|l| l.key > first[0].key));

    // Another tenant sees none of it, and cannot link to it.
    let b = principal("b");
    assert!(store.entity("b", &site).await.expect("get").is_none());
    assert!(store
        .entities("b", "user", None, 10)
        .await
        .expect("list")
        .is_empty());
    assert!(store
        .links(
            "b",
            LinkQuery {
                limit: 10,
                ..LinkQuery::default()
            }
        )
        .await
        .expect("links")
        .is_empty());
    store
        .mutate(
            put(key("user", "z"), json!({}), Precondition::None),
            b.clone(),
            65536,
        )
        .await
        .expect("b's user");
    let e = refusal(
        store
            .mutate(
                Mutation::Link {
                    key: link("member_of", &key("user", "z"), &group),
                    metadata: json!({}),
                },
                b.clone(),
                65536,
            )
            .await,
    );
    assert_eq!(
        e,
        ErrorKind::NotFound,
        "another tenant's entity does not exist for b"
    );
    let e = refusal(
        store
            .mutate(
                Mutation::Delete {
                    key: site.clone(),
                    cond: Precondition::None,
                },
                b.clone(),
                65536,
            )
            .await,
    );
    assert_eq!(e, ErrorKind::NotFound);

    // Deleting the group takes its three links... two member_of in, one located_in out.
    let before_delete = log.head();
    let r = store
        .mutate(
            Mutation::Delete {
                key: group.clone(),
                cond: Precondition::Version(1),
            },
            a.clone(),
            65536,
        )
        .await
        .expect("delete");
    assert_eq!(r.seqs.len(), 4, "three link.deleted and one group.deleted");
    let evs = events_after(&log, "a", before_delete).await;
    let types: Vec<&str> = evs.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "link.deleted",
            "link.deleted",
            "link.deleted",
            "group.deleted"
        ]
    );
    assert_eq!(
        evs[3]["data"],
        json!({"kind": "group", "id": "ops", "version": 2})
    );
    assert!(store.entity("a", &group).await.expect("get").is_none());
    assert!(store
        .links(
            "a",
            LinkQuery {
                limit: 10,
                ..LinkQuery::default()
            }
        )
        .await
        .expect("links")
        .is_empty());
    // Re-created, it continues its version count.
    let r = store
        .mutate(
            put(group.clone(), json!({}), Precondition::Absent),
            a.clone(),
            65536,
        )
        .await
        .expect("recreate");
    assert!(matches!(&r.outcome, Outcome::Entity { row, created: true } if row.version == 3));

    // Two concurrent updates with the same If-Match: exactly one wins, exactly one event.
    for round in 0..10 {
        let current = store.entity("a", &site).await.expect("get").expect("site");
        let head = log.head();
        let (x, y) = tokio::join!(
            store.mutate(
                put(
                    site.clone(),
                    json!({"round": round, "by": "x"}),
                    Precondition::Version(current.version)
                ),
                a.clone(),
                65536
            ),
            store.mutate(
                put(
                    site.clone(),
                    json!({"round": round, "by": "y"}),
                    Precondition::Version(current.version)
                ),
                a.clone(),
                65536
            ),
        );
        let wins = [&x, &y].iter().filter(|r| r.is_ok()).count();
        assert_eq!(
            wins, 1,
            "round {round}: exactly one conditional update wins"
        );
        for r in [x, y] {
            if let Err(e) = r {
                assert!(
                    matches!(&e, EntityError::Refused(v) if v.kind == ErrorKind::PreconditionFailed),
                    "the loser gets 412, not {e}"
                );
            }
        }
        assert_eq!(log.head(), head + 1, "round {round}: exactly one event");
    }

    // Many writers at once, entity changes mixed with plain appends: every entity's events
    // carry versions 1..=n in seq order, and n is the stored version.
    let mut tasks = Vec::new();
    for w in 0..4 {
        let store = store.clone();
        let log = log.clone();
        let a = a.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..25 {
                let k = EntityKey::new("device", &format!("d{}", i % 5)).expect("key");
                store
                    .mutate(
                        Mutation::Put {
                            key: k,
                            value: obj(json!({"w": w, "i": i})),
                            cond: Precondition::None,
                        },
                        a.clone(),
                        65536,
                    )
                    .await
                    .expect("put");
                log.append(vec![event("a", None, "noise.made", &[])])
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let evs = events_after(&log, "a", 0).await;
    let seqs: Vec<u64> = evs.iter().filter_map(|e| e["seq"].as_u64()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    for d in 0..5 {
        let subject = format!("device/d{d}");
        let versions: Vec<i64> = evs
            .iter()
            .filter(|e| e["subject"] == subject.as_str())
            .filter_map(|e| e["data"]["version"].as_i64())
            .collect();
        let stored = store
            .entity("a", &key("device", &format!("d{d}")))
            .await
            .expect("get")
            .expect("device");
        assert_eq!(
            versions,
            (1..=stored.version).collect::<Vec<_>>(),
            "{subject}"
        );
    }
}

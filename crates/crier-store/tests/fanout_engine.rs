//! The fan-out stage against a real SQLite log: random filters × random event streams ×
//! random reader speeds and start positions, with queues small enough (in events and in
//! bytes) that readers keep falling back to the log and rejoining live. Each reader must get
//! exactly its matching subsequence of the log, in order, once.

use std::sync::Arc;
use std::time::Duration;

use crier_core::{
    Committed, CursorItem, EventInput, EventLog, Filter, Hub, NewEvent, Pattern, Principal,
    PublishContext, ReadQuery, Scope, Start,
};
use crier_store::{Durability, SqliteLog};
use proptest::prelude::*;

const TENANTS: [&str; 3] = ["t0", "t1", "t2"];
const TYPES: [&str; 7] = ["a.x", "a.y", "a.x.z", "b.x", "bx", "c", "b_x.a"];
const PATTERNS: [&str; 10] = [
    "a.*", "a.x", "*.x", "b*", "*", "c", "a.x*", "a.x.z", "*a*", "b_x.*",
];
const TAGS: [&str; 3] = ["p", "q", "r"];
const SEVERITIES: [&str; 5] = ["debug", "info", "warning", "error", "critical"];

#[derive(Debug, Clone)]
struct Ev {
    tenant: usize,
    kind: usize,
    severity: usize,
    tags: Vec<usize>,
    pad: usize,
}

#[derive(Debug, Clone)]
struct ReaderSpec {
    /// None: every tenant.
    tenant: Option<usize>,
    types: Vec<usize>,
    narrowed: Option<Vec<usize>>,
    severity: Option<usize>,
    tags: Vec<usize>,
    /// 0 live, 1 after a seq, 2 last n.
    start: (u8, usize),
    speed: u8,
    queue: usize,
}

fn ev_strategy() -> impl Strategy<Value = Ev> {
    (
        0..TENANTS.len(),
        0..TYPES.len(),
        0..SEVERITIES.len(),
        prop::collection::vec(0..TAGS.len(), 0..3),
        0..3000usize,
    )
        .prop_map(|(tenant, kind, severity, tags, pad)| Ev {
            tenant,
            kind,
            severity,
            tags,
            pad,
        })
}

fn reader_strategy() -> impl Strategy<Value = ReaderSpec> {
    (
        prop::option::weighted(0.8, 0..TENANTS.len()),
        prop::collection::vec(0..PATTERNS.len(), 0..4),
        prop::option::weighted(0.3, prop::collection::vec(0..PATTERNS.len(), 1..3)),
        prop::option::weighted(0.3, 0..SEVERITIES.len()),
        prop::collection::vec(0..TAGS.len(), 0..2),
        (0..3u8, 0..400usize),
        0..4u8,
        1..6usize,
    )
        .prop_map(
            |(tenant, types, narrowed, severity, tags, start, speed, queue)| ReaderSpec {
                tenant,
                types,
                narrowed,
                severity,
                tags,
                start,
                speed,
                queue,
            },
        )
}

/// `fields` (an event as published) validated as published by `tenant`.
fn validated(tenant: &str, fields: serde_json::Value) -> NewEvent {
    let mut p = Principal::anonymous_admin();
    p.tenant = tenant.to_string();
    let input: EventInput = serde_json::from_value(fields).expect("event input");
    input
        .validate(&PublishContext {
            principal: &p,
            max_event_bytes: 65536,
            now_us: crier_core::event::now_us(),
        })
        .expect("valid event")
}

fn new_event(e: &Ev, n: usize) -> NewEvent {
    let fields = serde_json::json!({
        "id": format!("e{n}"),
        "type": TYPES[e.kind],
        "severity": SEVERITIES[e.severity],
        "tags": e.tags.iter().map(|t| TAGS[*t]).collect::<Vec<_>>(),
        "data": {"pad": "x".repeat(e.pad)},
    });
    validated(TENANTS[e.tenant], fields)
}

fn filter(r: &ReaderSpec) -> Filter {
    let pats = |v: &[usize]| -> Vec<Pattern> {
        v.iter()
            .map(|i| Pattern::new(PATTERNS[*i]).expect("pattern"))
            .collect()
    };
    let mut f = Filter {
        types: pats(&r.types),
        tags: r.tags.iter().map(|t| TAGS[*t].to_string()).collect(),
        allowed_types: r.narrowed.as_deref().map(pats),
        ..Filter::default()
    };
    if let Some(s) = r.severity {
        f.severity = crier_core::Severity::parse(SEVERITIES[s]);
    }
    f
}

fn scope(r: &ReaderSpec) -> Scope {
    match r.tenant {
        Some(t) => Scope::Tenant(TENANTS[t].to_string()),
        None => Scope::All,
    }
}

async fn everything(log: &Arc<dyn EventLog>) -> Vec<Arc<Committed>> {
    let q = ReadQuery::after(Scope::All, Arc::new(Filter::default()), 0, 1_000_000);
    crier_core::read_full(log.as_ref(), q)
        .await
        .expect("read the log")
        .events
}

/// Reads until the cursor has handed out `last` (or forever, if the cursor misbehaves; the
/// caller's timeout catches that), at the given speed.
async fn read_until(
    mut c: crier_core::Cursor,
    speed: u8,
    last: u64,
    out: Arc<std::sync::Mutex<Vec<u64>>>,
) {
    let mut n = 0u64;
    loop {
        if out.lock().expect("lock").last().is_some_and(|s| *s >= last) {
            return;
        }
        match c.next().await.expect("cursor reads") {
            CursorItem::Event(e) => out.lock().expect("lock").push(e.seq),
            CursorItem::Reset(r) => panic!("unexpected reset {r:?}"),
        }
        n += 1;
        match speed {
            0 => {}
            1 => tokio::task::yield_now().await,
            2 if n.is_multiple_of(5) => tokio::time::sleep(Duration::from_millis(1)).await,
            3 if n < 20 => tokio::time::sleep(Duration::from_millis(3)).await,
            _ => {}
        }
    }
}

async fn scenario(events: Vec<Ev>, split: usize, readers: Vec<ReaderSpec>, buffer: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite =
        Arc::new(SqliteLog::open(&dir.path().join("f.db"), Durability::Commit).expect("open log"));
    let log: Arc<dyn EventLog> = sqlite;
    let hub = Hub::with_reader_buffer_bytes(log.clone(), buffer);
    log.set_commit_sink(hub.commit_sink());
    let split = split.min(events.len());
    let news: Vec<NewEvent> = events
        .iter()
        .enumerate()
        .map(|(i, e)| new_event(e, i))
        .collect();
    let (first, second) = news.split_at(split);
    for chunk in first.chunks(17) {
        log.append(chunk.to_vec()).await.expect("append");
    }
    let head_before = log.head();
    // Readers with `last` open while nothing is being published (their start depends on
    // the head); the others open while the second half is being published.
    let mut opened = Vec::new();
    for r in readers.iter().filter(|r| r.start.0 == 2) {
        let (c, head) = hub
            .open(
                scope(r),
                Arc::new(filter(r)),
                Start::Last(r.start.1 % 50),
                r.queue,
            )
            .await
            .expect("open");
        opened.push((r.clone(), c, head, Start::Last(r.start.1 % 50)));
    }
    let publisher = {
        let log = log.clone();
        let second = second.to_vec();
        tokio::spawn(async move {
            for chunk in second.chunks(13) {
                log.append(chunk.to_vec()).await.expect("append");
                tokio::task::yield_now().await;
            }
        })
    };
    for r in readers.iter().filter(|r| r.start.0 != 2) {
        let start = if r.start.0 == 0 {
            Start::Live
        } else {
            Start::After((r.start.1 as u64).min(head_before))
        };
        let (c, head) = hub
            .open(scope(r), Arc::new(filter(r)), start, r.queue)
            .await
            .expect("open");
        opened.push((r.clone(), c, head, start));
        tokio::task::yield_now().await;
    }
    publisher.await.expect("publisher");
    let all = everything(&log).await;
    let mut tasks = Vec::new();
    for (r, c, head, start) in opened {
        let f = filter(&r);
        let sc = scope(&r);
        let matching: Vec<u64> = all
            .iter()
            .filter(|e| f.matches(e) && sc.includes(&e.tenant))
            .map(|e| e.seq)
            .collect();
        let expected: Vec<u64> = match start {
            Start::Live => matching.into_iter().filter(|s| *s > head).collect(),
            Start::After(a) => matching.into_iter().filter(|s| *s > a).collect(),
            Start::Last(n) => {
                let older = matching.iter().filter(|s| **s <= head).count();
                matching.into_iter().skip(older.saturating_sub(n)).collect()
            }
        };
        let out = Arc::new(std::sync::Mutex::new(Vec::new()));
        let last = expected.last().copied().unwrap_or(0);
        let task = tokio::spawn(read_until(c, r.speed, last, out.clone()));
        tasks.push((r, start, expected, out, task));
    }
    for (r, start, expected, out, task) in tasks {
        if expected.is_empty() {
            task.abort();
            continue;
        }
        if tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .is_err()
        {
            panic!(
                "reader {r:?} from {start:?} stalled: got {:?}, expected {expected:?}",
                out.lock().expect("lock")
            );
        }
        let got = out.lock().expect("lock").clone();
        assert_eq!(got, expected, "reader {r:?} from {start:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn every_reader_gets_exactly_its_matching_subsequence(
        events in prop::collection::vec(ev_strategy(), 1..250),
        split in 0..250usize,
        readers in prop::collection::vec(reader_strategy(), 1..10),
        buffer in prop::sample::select(vec![8 * 1024usize, 32 * 1024, 1 << 20]),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(scenario(events, split, readers, buffer));
    }
}

fn typed(tenant: &str, kind: &str, n: usize) -> NewEvent {
    validated(
        tenant,
        serde_json::json!({"id": format!("{tenant}{n}"), "type": kind}),
    )
}

/// Tenant B's readers hold the most expensive filters the limits allow and B publishes
/// 10,000 events; tenant A then publishes one. A's reader gets it while B's deliveries are
/// still under way: the fan-out serves tenants in turn, it does not finish B's backlog first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_tenant_delays_only_its_own_deliveries() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite =
        Arc::new(SqliteLog::open(&dir.path().join("f.db"), Durability::Commit).expect("open log"));
    let log: Arc<dyn EventLog> = sqlite;
    let hub = Hub::with_reader_buffer_bytes(log.clone(), 256 << 20);
    log.set_commit_sink(hub.commit_sink());
    let b = Scope::Tenant("b".into());
    let mut heavy = Vec::new();
    for r in 0..32 {
        let f = Filter {
            types: (0..64)
                .map(|i| Pattern::new(&format!("*q*z{r}x{i}*")).expect("pattern"))
                .collect(),
            ..Filter::default()
        };
        let (c, _) = hub
            .open(b.clone(), Arc::new(f), Start::Live, 16)
            .await
            .expect("open");
        heavy.push(c);
    }
    let counted = Filter {
        types: vec![Pattern::new("b.*").expect("pattern")],
        ..Filter::default()
    };
    let (mut b_reader, _) = hub
        .open(b.clone(), Arc::new(counted), Start::Live, 20_000)
        .await
        .expect("open");
    let b_seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let b_task = {
        let seen = b_seen.clone();
        tokio::spawn(async move {
            while seen.load(std::sync::atomic::Ordering::SeqCst) < 10_000 {
                b_reader.next().await.expect("b reads");
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            b_reader
        })
    };
    let (mut a_reader, _) = hub
        .open(
            Scope::Tenant("a".into()),
            Arc::new(Filter::default()),
            Start::Live,
            16,
        )
        .await
        .expect("open");
    let long = format!("b.{}.x", "q".repeat(120));
    let batch: Vec<NewEvent> = (0..10_000).map(|n| typed("b", &long, n)).collect();
    log.append(batch).await.expect("append b");
    log.append(vec![typed("a", "a.one", 0)])
        .await
        .expect("append a");
    let got = tokio::time::timeout(Duration::from_secs(60), a_reader.next())
        .await
        .expect("tenant A's event arrives")
        .expect("a reads");
    let b_at_a = b_seen.load(std::sync::atomic::Ordering::SeqCst);
    assert!(matches!(got, CursorItem::Event(e) if e.kind == "a.one"));
    assert!(
        b_at_a < 10_000,
        "tenant A's event waited for all of tenant B's backlog ({b_at_a} delivered first)"
    );
    tokio::time::timeout(Duration::from_secs(120), b_task)
        .await
        .expect("tenant B's events all arrive")
        .expect("b task");
    assert!(heavy.iter_mut().all(|c| c.try_next().is_none()));
}

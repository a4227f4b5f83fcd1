//! The entity-store suite: §11's rules as stored by a backend, each change's events read
//! back from the log.

use std::sync::Arc;

use crier_core::entity::{Applied, EntityError, EntityStore, Mutation};
use crier_core::{read_full, ErrorKind, EventLog, Filter, Principal, ReadQuery, Scope};

use super::event;

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

/// Applies `m` as `p`, with the suite's event size limit.
async fn mutate(
    store: &Arc<dyn EntityStore>,
    m: Mutation,
    p: &Principal,
) -> Result<Applied, EntityError> {
    store.mutate(m, p.clone(), 65536).await
}

/// The kind of refusal `m` as `p` meets; a store error or an applied change fails the suite.
async fn refused(store: &Arc<dyn EntityStore>, m: Mutation, p: &Principal) -> ErrorKind {
    match mutate(store, m, p).await {
        Err(EntityError::Refused(e)) => e.kind,
        Err(e) => panic!("a store error where a refusal was expected: {e}"),
        Ok(x) => panic!("applied where a refusal was expected: {x:?}"),
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
pub async fn entities(log: Arc<dyn EventLog>, store: Arc<dyn EntityStore>) {
    use crier_core::entity::{EntityKey, LinkKey, LinkQuery, Outcome, Precondition};
    use serde_json::json;

    let a = principal("a");
    let by_a = |m| mutate(&store, m, &a);
    let refused_by_a = |m| refused(&store, m, &a);
    let key = |k: &str, i: &str| EntityKey::new(k, i).expect("key");
    let put = |k: EntityKey, v: serde_json::Value, cond| Mutation::Put {
        key: k,
        value: obj(v),
        cond,
    };
    let deleting = |key, cond| Mutation::Delete { key, cond };
    let any_links = |tenant| {
        let q = LinkQuery {
            limit: 10,
            ..LinkQuery::default()
        };
        store.links(tenant, q)
    };
    let site = key("site", "nyc");

    // Create, then the event is in the log with the change.
    let r = by_a(put(
        site.clone(),
        json!({"name": "NYC", "floors": 3}),
        Precondition::Absent,
    ))
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
    let e = refused_by_a(put(site.clone(), json!({"x": 1}), Precondition::Absent)).await;
    assert_eq!(e, ErrorKind::PreconditionFailed);
    let e = refused_by_a(put(site.clone(), json!({"x": 1}), Precondition::Version(7))).await;
    assert_eq!(e, ErrorKind::PreconditionFailed);
    assert_eq!(log.head(), head, "a refused change appends nothing");

    // The same value again: no event, same version.
    let r = by_a(put(
        site.clone(),
        json!({"floors": 3, "name": "NYC"}),
        Precondition::Version(1),
    ))
    .await
    .expect("same put");
    assert!(
        r.seqs.is_empty(),
        "an update that changes nothing emits nothing"
    );
    assert!(matches!(&r.outcome, Outcome::Entity { row, .. } if row.version == 1));

    // Merge patch: null removes, nested objects merge; `changed` names top-level fields.
    let r = by_a(Mutation::Patch {
        key: site.clone(),
        patch: obj(json!({"floors": null, "address": {"city": "New York"}})),
        cond: Precondition::Version(1),
    })
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
    let e = refused_by_a(Mutation::Patch {
        key: missing.clone(),
        patch: obj(json!({"a": 1})),
        cond: Precondition::None,
    })
    .await;
    assert_eq!(e, ErrorKind::NotFound);
    let e = refused_by_a(deleting(missing.clone(), Precondition::None)).await;
    assert_eq!(e, ErrorKind::NotFound);

    // Lists page by id.
    for id in ["b", "a", "d", "c"] {
        by_a(put(key("user", id), json!({"n": id}), Precondition::None))
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
    let linking = |kind: &str, s: &EntityKey, t: &EntityKey, metadata| Mutation::Link {
        key: LinkKey::new(kind, s.clone(), t.clone()).expect("link key"),
        metadata,
    };
    let e = refused_by_a(linking("member_of", &key("user", "a"), &group, json!({}))).await;
    assert_eq!(
        e,
        ErrorKind::NotFound,
        "linking to a missing entity is a 404"
    );
    by_a(put(
        group.clone(),
        json!({"title": "Ops"}),
        Precondition::None,
    ))
    .await
    .expect("group");
    let before_links = log.head();
    for u in ["a", "b"] {
        let r = by_a(linking(
            "member_of",
            &key("user", u),
            &group,
            json!({"since": 2024}),
        ))
        .await
        .expect("link");
        assert_eq!(r.seqs.len(), 1);
    }
    by_a(linking("located_in", &group, &site, json!({})))
        .await
        .expect("link");
    let again = by_a(linking(
        "member_of",
        &key("user", "a"),
        &group,
        json!({"since": 2024}),
    ))
    .await
    .expect("same link");
    assert!(
        again.seqs.is_empty(),
        "re-linking identically emits nothing"
    );
    let e = refused_by_a(linking(
        "member_of",
        &key("user", "a"),
        &group,
        json!({"since": 1999}),
    ))
    .await;
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
    let by_b = |m| mutate(&store, m, &b);
    let refused_by_b = |m| refused(&store, m, &b);
    assert!(store.entity("b", &site).await.expect("get").is_none());
    assert!(store
        .entities("b", "user", None, 10)
        .await
        .expect("list")
        .is_empty());
    assert!(any_links("b").await.expect("links").is_empty());
    by_b(put(key("user", "z"), json!({}), Precondition::None))
        .await
        .expect("b's user");
    let e = refused_by_b(linking("member_of", &key("user", "z"), &group, json!({}))).await;
    assert_eq!(
        e,
        ErrorKind::NotFound,
        "another tenant's entity does not exist for b"
    );
    let e = refused_by_b(deleting(site.clone(), Precondition::None)).await;
    assert_eq!(e, ErrorKind::NotFound);

    // Deleting the group takes its three links... two member_of in, one located_in out.
    let before_delete = log.head();
    let r = by_a(deleting(group.clone(), Precondition::Version(1)))
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
    assert!(any_links("a").await.expect("links").is_empty());
    // Re-created, it continues its version count.
    let r = by_a(put(group.clone(), json!({}), Precondition::Absent))
        .await
        .expect("recreate");
    assert!(matches!(&r.outcome, Outcome::Entity { row, created: true } if row.version == 3));

    // Two concurrent updates with the same If-Match: exactly one wins, exactly one event.
    for round in 0..10 {
        let current = store.entity("a", &site).await.expect("get").expect("site");
        let head = log.head();
        let (x, y) = tokio::join!(
            by_a(put(
                site.clone(),
                json!({"round": round, "by": "x"}),
                Precondition::Version(current.version)
            )),
            by_a(put(
                site.clone(),
                json!({"round": round, "by": "y"}),
                Precondition::Version(current.version)
            )),
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
                mutate(
                    &store,
                    Mutation::Put {
                        key: k,
                        value: obj(json!({"w": w, "i": i})),
                        cond: Precondition::None,
                    },
                    &a,
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

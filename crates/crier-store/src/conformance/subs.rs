//! The subscription-store suite.

use std::sync::Arc;

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

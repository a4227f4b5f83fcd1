//! The subscription-store suite.

use std::sync::Arc;

use crier_core::webhook::{Delivery, WebhookStatus, WebhookStore, WebhookSub};

/// An active subscription `id` of `tenant`, at cursor 5.
fn sub(id: &str, tenant: &str) -> WebhookSub {
    WebhookSub {
        id: id.into(),
        tenant: tenant.into(),
        name: format!("{id} name"),
        filter: "{}".into(),
        url: "https://example.com/hook".into(),
        secret: "whsec_c2VjcmV0LXNlY3JldC1zZWNyZXQ=".into(),
        cursor: 5,
        status: WebhookStatus::Active,
        expires_us: None,
        created_us: crier_core::event::now_us(),
        note: None,
    }
}

/// The delivery record of `sub_id` for `seq`, which must exist.
async fn record(store: &Arc<dyn WebhookStore>, sub_id: &str, seq: u64) -> Delivery {
    let found = store.delivery(sub_id, seq).await.expect("delivery");
    found.unwrap_or_else(|| panic!("no record of {sub_id} for {seq}"))
}

/// The subscription-store part of the suite: CRUD scoped by tenant, a cursor that only
/// advances (except by redeliver), delivery records newest first, and counts.
pub async fn subs(store: Arc<dyn WebhookStore>) {
    use crier_core::webhook::{DeliveryStatus, WebhookPatch};
    store.create(&sub("s1", "a"), None).await.expect("create");
    store.create(&sub("s2", "a"), None).await.expect("create");
    store.create(&sub("s3", "b"), None).await.expect("create");
    assert_eq!(
        store.list(Some("a")).await.expect("list").len(),
        2,
        "list is per tenant"
    );
    assert_eq!(store.list(None).await.expect("list").len(), 3);
    assert!(
        store.get(Some("b"), "s1").await.expect("get").is_none(),
        "another tenant's subscription is absent"
    );
    let got = store.get(Some("a"), "s1").await.expect("get").expect("s1");
    assert_eq!(
        (got.cursor, got.status.as_str(), got.name.as_str()),
        (5, "active", "s1 name")
    );

    let patch = WebhookPatch {
        name: Some("renamed".into()),
        status: Some(WebhookStatus::Paused),
        ..WebhookPatch::default()
    };
    assert!(
        store
            .update("b", "s1", &patch)
            .await
            .expect("update")
            .is_none(),
        "update is tenant-scoped"
    );
    let s = store
        .update("a", "s1", &patch)
        .await
        .expect("update")
        .expect("s1");
    assert_eq!((s.name.as_str(), s.status.as_str()), ("renamed", "paused"));

    store.advance("s1", 9).await.expect("advance");
    store.advance("s1", 7).await.expect("advance");
    assert_eq!(
        store
            .get(None, "s1")
            .await
            .expect("get")
            .expect("s1")
            .cursor,
        9,
        "the cursor never moves back by advance"
    );

    for (seq, status) in [
        (6, DeliveryStatus::Delivered),
        (7, DeliveryStatus::Dead),
        (8, DeliveryStatus::Failed),
    ] {
        let d = Delivery {
            sub_id: "s1".into(),
            seq,
            event_id: format!("e{seq}"),
            status,
            attempts: 2,
            last_status_code: Some(500),
            last_error: Some("boom".into()),
            next_attempt_us: None,
            updated_us: crier_core::event::now_us(),
        };
        store.record("a", &d).await.expect("record");
    }
    let list = store.deliveries("s1", None, 10).await.expect("deliveries");
    assert_eq!(
        list.iter().map(|d| d.seq).collect::<Vec<_>>(),
        vec![8, 7, 6],
        "newest first"
    );
    let dead = store
        .deliveries("s1", Some(DeliveryStatus::Dead), 10)
        .await
        .expect("deliveries");
    assert_eq!(dead.len(), 1);
    assert_eq!(record(&store, "s1", 7).await.last_status_code, Some(500));

    let (subs, dels) = store.counts(Some("a")).await.expect("counts");
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
        .redeliver("a", "s1", 6)
        .await
        .expect("redeliver")
        .expect("s1");
    assert_eq!(
        (s.cursor, s.status.as_str()),
        (6, "active"),
        "redeliver moves the cursor back and resumes"
    );
    assert_eq!(
        record(&store, "s1", 7).await.status,
        DeliveryStatus::Pending,
        "dead records above the cursor are retried"
    );
    assert!(store
        .redeliver("b", "s1", 0)
        .await
        .expect("redeliver")
        .is_none());

    assert!(
        !store.delete("b", "s1").await.expect("delete"),
        "delete is tenant-scoped"
    );
    assert!(store.delete("a", "s1").await.expect("delete"));
    assert!(store.get(None, "s1").await.expect("get").is_none());
    assert!(
        store
            .deliveries("s1", None, 10)
            .await
            .expect("deliveries")
            .is_empty(),
        "records go with it"
    );
    subs_cap(store).await;
}

/// A tenant's cap holds under simultaneous creates: of many creators at once exactly `max`
/// succeed and the rest are refused as over the limit (409 `too_many_subscriptions`).
async fn subs_cap(store: Arc<dyn WebhookStore>) {
    use crier_core::webhook::WebhookError;
    const MAX: usize = 4;
    let creators: Vec<_> = (0..24)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = WebhookSub {
                    name: String::new(),
                    cursor: 0,
                    ..sub(&format!("cap{n}"), "capped")
                };
                store.create(&s, Some(MAX)).await
            })
        })
        .collect();
    let (mut stored, mut refused) = (0, 0);
    for t in creators {
        match t.await.expect("creator task") {
            Ok(()) => stored += 1,
            Err(WebhookError::TooMany { max: MAX }) => refused += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(
        (stored, refused),
        (MAX, 24 - MAX),
        "exactly max creates pass"
    );
    let held = store.list(Some("capped")).await.expect("list").len();
    assert_eq!(held, MAX, "the tenant holds max subscriptions");
}

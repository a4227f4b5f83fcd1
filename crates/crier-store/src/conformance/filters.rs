//! The saved-filter store suite.

use std::sync::Arc;

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

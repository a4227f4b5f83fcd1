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
    let create = |tenant: &str, name: &str, filter: &str| {
        let created = store.create(saved(tenant, name, filter), 3);
        async move { created.await.expect("create") }
    };
    let get = |tenant: &str, name: &str| {
        let found = store.get(tenant.into(), name.into());
        async move { found.await.expect("get") }
    };
    let delete = |tenant: &str, name: &str| {
        let deleted = store.delete(tenant.into(), name.into());
        async move { deleted.await.expect("delete") }
    };
    let errors = r#"{"severity":"error"}"#;
    assert_eq!(
        create("a", "errors", errors).await,
        Created::Stored(saved("a", "errors", errors))
    );
    assert_eq!(
        create("a", "errors", "{}").await,
        Created::Exists,
        "a name is unique within a tenant"
    );
    assert_eq!(
        get("a", "errors").await.expect("errors").filter,
        errors,
        "a refused duplicate changes nothing"
    );
    assert!(
        matches!(create("b", "errors", "{}").await, Created::Stored(_)),
        "another tenant may use the same name"
    );
    create("a", "deploys", r#"{"type":["deploy.*"]}"#).await;
    create("a", "audit", "{}").await;
    assert_eq!(
        create("a", "fourth", "{}").await,
        Created::Full,
        "the per-tenant cap holds"
    );
    assert!(get("a", "fourth").await.is_none());
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
        get("b", "deploys").await.is_none(),
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
        get("b", "errors").await.expect("b's errors").filter,
        "{}",
        "an update is tenant-scoped"
    );

    assert!(!delete("b", "deploys").await, "delete is tenant-scoped");
    assert!(delete("a", "deploys").await);
    assert!(!delete("a", "deploys").await);
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

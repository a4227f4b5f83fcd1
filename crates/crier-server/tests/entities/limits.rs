//! Entity values are limited in size, and narrowed credentials see and write only the
//! kinds their patterns allow.

use crier_testkit::http::{check, Row};
use serde_json::json;

use crate::{call, start, token, Backend, SECRET};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_value_size_is_limited() {
    let hub = start(Backend::Sqlite, "", |s| s.limits.max_event_bytes = 2048).await;
    let w = token("acme", "publisher");
    let big = json!({"blob": "x".repeat(4096)}).to_string();
    let small = r#"{"small":1}"#;
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("PUT", "/v1/entities/doc/a", "", Some(&big), &w, 413, "entity_too_large"),
        ("PUT", "/v1/entities/doc/a", "", Some(small), &w, 201, ""),
        ("PATCH", "/v1/entities/doc/a", "", Some(&big), &w, 413, ""),
    ];
    check(&hub, rows).await;
    let r = call(&hub, "GET", "/v1/entities/doc/a", &w, "", None).await;
    assert_eq!(r.body["version"], 1, "the refused patch changed nothing");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowed_credentials_see_only_their_kinds() {
    let hub = start(Backend::Sqlite, "", |_| {}).await;
    let w = token("acme", "publisher");
    let mut c = crier_testkit::auth::claims("n", "acme", "publisher");
    c["subscribe"] = json!(["site.*"]);
    c["publish"] = json!(["site.*"]);
    let narrow = crier_testkit::auth::hs256(SECRET, &c);
    let e = Some("{}");
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("PUT", "/v1/entities/site/a", "", e, &w, 201, ""),
        ("PUT", "/v1/entities/secret/a", "", e, &w, 201, ""),
        ("GET", "/v1/entities/site/a", "", None, &narrow, 200, ""),
        ("GET", "/v1/entities/secret/a", "", None, &narrow, 404, ""),
    ];
    check(&hub, rows).await;
    let r = call(&hub, "GET", "/v1/entities/secret", &narrow, "", None).await;
    assert_eq!(r.body["entities"], json!([]));
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("PUT", "/v1/entities/site/b", "", e, &narrow, 201, ""),
        ("PUT", "/v1/entities/secret/b", "", e, &narrow, 403, ""),
    ];
    check(&hub, rows).await;
    hub.stop().await;
}

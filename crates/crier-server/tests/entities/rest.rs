//! The REST paths of entities and links walked in order on one hub, on SQLite and on
//! PostgreSQL: create, read, preconditions, merge patch, refusals, lists, links, cascading
//! deletes, the events on a live stream, roles and tenants, and racing conditional updates.

use std::time::Duration;

use crier_testkit::checks::{pg_schema, texts};
use crier_testkit::http::{check, Answer, Row};
use crier_testkit::services::drop_schema;
use crier_testkit::{Hub, Sse};
use serde_json::{json, Value};

use crate::{call, ids, start, stored, token, Backend};

const NYC: &str = "/v1/entities/site/nyc";

/// PUT `body` to site/nyc with the credential `w` and the precondition header `cond`.
async fn put_nyc(hub: &Hub, w: &str, cond: &str, body: &str) -> Answer {
    call(hub, "PUT", NYC, w, cond, Some(body)).await
}

/// Creates site/nyc, reads it and walks preconditions, merge patch and replace; the
/// changes are seen on `stream`.
async fn entity_lifecycle(hub: &Hub, stream: &mut Sse, w: &str, sub: &str) {
    let r = put_nyc(hub, w, "if-none-match: *", r#"{"name":"NYC","floors":3}"#).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.etag().as_deref(), Some("\"1\""));
    assert_eq!(r.body["kind"], "site");
    assert_eq!(r.body["id"], "nyc");
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["value"], json!({"name": "NYC", "floors": 3}));
    assert!(r.body["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(r.body["created_at"], r.body["updated_at"]);
    assert_eq!(r.seqs().len(), 1);
    let created_seq = r.seqs()[0];
    let m = stream.next().await.expect("created event");
    let e = m.json();
    assert_eq!(e["seq"], created_seq);
    assert_eq!(e["type"], "site.created");
    assert_eq!(e["subject"], "site/nyc");
    assert_eq!(e["source"], "entities");
    assert_eq!(e["actor"], "publisher@acme");
    assert_eq!(
        e["data"],
        json!({"kind": "site", "id": "nyc", "version": 1, "value": {"name": "NYC", "floors": 3}})
    );

    // Read, conditional read, a missing entity; preconditions fail with 412 and emit nothing.
    let e = Some("{}");
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("GET", NYC, "", None, sub, 200, ""),
        ("GET", NYC, "if-none-match: \"1\"", None, sub, 304, ""),
        ("GET", "/v1/entities/site/nowhere", "", None, sub, 404, "not_found"),
        ("PUT", NYC, "if-none-match: *", e, w, 412, "precondition_failed"),
        ("PUT", NYC, "if-match: \"9\"", e, w, 412, "precondition_failed"),
        ("PATCH", "/v1/entities/site/ghost", "if-match: *", e, w, 412, ""),
    ];
    let a = check(hub, rows).await;
    assert_eq!(a[0].body["version"].as_i64(), Some(1));
    assert!(
        a[4].body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("version 1"),
        "{}",
        a[4].body
    );

    // The same value again: 200, same version, no event.
    let r = put_nyc(hub, w, "if-match: 1", r#"{"floors":3,"name":"NYC"}"#).await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(1)));
    assert!(r.seqs().is_empty());

    // Merge patch: null removes, objects merge.
    let patch = r#"{"floors":null,"address":{"city":"New York","zip":"10001"}}"#;
    let r = call(hub, "PATCH", NYC, w, "if-match: \"1\"", Some(patch)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 2);
    assert_eq!(
        r.body["value"],
        json!({"name": "NYC", "address": {"city": "New York", "zip": "10001"}})
    );
    assert_eq!(r.etag().as_deref(), Some("\"2\""));
    let r = call(
        hub,
        "PATCH",
        NYC,
        w,
        "",
        Some(r#"{"address":{"zip":null}}"#),
    )
    .await;
    assert_eq!(
        r.body["value"],
        json!({"name": "NYC", "address": {"city": "New York"}})
    );
    assert_eq!(r.body["version"], 3);
    let e = stream.next().await.expect("event").json();
    assert_eq!(e["type"], "site.updated");
    assert_eq!(e["data"]["previous_version"], 1);
    assert_eq!(e["data"]["changed"], json!(["address", "floors"]));
    let e = stream.next().await.expect("event").json();
    assert_eq!(e["data"]["changed"], json!(["address"]));
    assert_eq!(e["data"]["version"], 3);

    // Replace drops fields not given.
    let r = put_nyc(hub, w, "", r#"{"name":"New York"}"#).await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(4)));
    assert_eq!(r.body["value"], json!({"name": "New York"}));
    let e = stream.next().await.expect("event").json();
    assert_eq!(e["data"]["changed"], json!(["address", "name"]));
}

/// Bad input: a clear 4xx, nothing stored.
async fn refusals(hub: &Hub, w: &str) {
    let head = stored(hub).await;
    let x = "/v1/entities/site/x";
    let e = Some("{}");
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("PUT", "/v1/entities/si.te/x", "", e, w, 400, "invalid_entity"),
        ("PUT", "/v1/entities/site/a%20b", "", e, w, 400, "invalid_entity"),
        ("PUT", x, "", Some("[1,2]"), w, 400, "invalid_json"),
        ("PUT", x, "", Some("{"), w, 400, "invalid_json"),
        ("PUT", x, "", Some(""), w, 400, "invalid_json"),
        ("PUT", x, "if-match: abc", e, w, 400, "invalid_header"),
        ("PUT", x, "if-match: 1; if-none-match: *", e, w, 400, "invalid_header"),
        ("PATCH", x, "if-none-match: *", e, w, 400, "invalid_header"),
        ("PATCH", "/v1/entities/site/nowhere", "", e, w, 404, "not_found"),
        ("DELETE", "/v1/entities/site/nowhere", "", None, w, 404, "not_found"),
        ("GET", "/v1/entities/site?limit=0", "", None, w, 400, "invalid_query"),
        ("GET", "/v1/entities/site?limit=5000", "", None, w, 400, "invalid_query"),
        ("GET", "/v1/entities/site?severity=error", "", None, w, 400, "invalid_query"),
        ("GET", "/v1/links?source=site", "", None, w, 400, "invalid_entity"),
        ("GET", "/v1/links?after=garbage", "", None, w, 400, "invalid_query"),
        ("PUT", x, "content-type: text/plain", e, w, 415, ""),
    ];
    check(hub, rows).await;
    assert_eq!(stored(hub).await, head, "refused requests stored nothing");
}

/// Lists page by id; links are created, refused, listed and deleted, and deleting an
/// entity deletes its links in the same transaction. Returns the seq of the first link.
async fn lists_and_links(hub: &Hub, w: &str, sub: &str) -> u64 {
    for id in ["u3", "u1", "u2", "u5", "u4"] {
        let path = format!("/v1/entities/user/{id}");
        let r = call(
            hub,
            "PUT",
            &path,
            w,
            "",
            Some(&format!(r#"{{"name":"{id}"}}"#)),
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let r = call(hub, "GET", "/v1/entities/user?limit=2", sub, "", None).await;
    assert_eq!(ids(&r.body), ["u1", "u2"]);
    assert_eq!(r.body["next_after"], "u2");
    let r = call(
        hub,
        "GET",
        "/v1/entities/user?limit=2&after=u4",
        sub,
        "",
        None,
    )
    .await;
    assert_eq!(r.body["entities"][0]["id"], "u5");
    assert_eq!(r.body["next_after"], Value::Null);

    let u1_ops = "/v1/links/member_of/user/u1/group/ops";
    let u2_ops = "/v1/links/member_of/user/u2/group/ops";
    let lead = Some(r#"{"role":"lead"}"#);
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("PUT", u1_ops, "", None, w, 404, "not_found"),
        ("PUT", "/v1/entities/group/ops", "", Some(r#"{"title":"Ops"}"#), w, 201, ""),
        ("PUT", u1_ops, "", lead, w, 201, ""),
        ("PUT", u1_ops, "", lead, w, 200, ""),
        ("PUT", u1_ops, "", Some(r#"{"role":"member"}"#), w, 409, "link_exists"),
        ("PUT", u2_ops, "", None, w, 201, ""),
        ("PUT", "/v1/links/located_in/group/ops/site/nyc", "", None, w, 201, ""),
    ];
    let a = check(hub, rows).await;
    let link = &a[2].body;
    assert_eq!(link["type"], "member_of");
    assert_eq!(link["source"], "user/u1");
    assert_eq!(link["target"], "group/ops");
    assert_eq!(link["metadata"], json!({"role": "lead"}));
    let link_seq = a[2].seqs()[0];
    assert!(a[3].seqs().is_empty());
    assert_eq!(a[5].body["metadata"], json!({}));

    let r = call(hub, "GET", "/v1/links?target=group/ops", sub, "", None).await;
    assert_eq!(
        r.body["links"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.body
    );
    let r = call(hub, "GET", "/v1/links?type=located_in", sub, "", None).await;
    assert_eq!(r.body["links"][0]["target"], "site/nyc");
    let r = call(
        hub,
        "GET",
        "/v1/links?source=user/u1&limit=1",
        sub,
        "",
        None,
    )
    .await;
    assert_eq!(r.body["links"].as_array().map(Vec::len), Some(1));

    // Delete the group: its two remaining links go with it, in the same transaction.
    let ops = "/v1/entities/group/ops";
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("DELETE", u2_ops, "", None, w, 200, ""),
        ("DELETE", u2_ops, "", None, w, 404, ""),
        ("DELETE", ops, "if-match: \"7\"", None, w, 412, ""),
        ("DELETE", ops, "if-match: 1", None, w, 200, ""),
    ];
    let a = check(hub, rows).await;
    assert_eq!(a[0].seqs().len(), 1);
    let (body, seqs) = (&a[3].body, a[3].seqs());
    assert_eq!(body["version"], 2);
    assert_eq!(body["links_deleted"], 2);
    assert_eq!(seqs.len(), 3);
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "one transaction, consecutive seqs"
    );
    let r = call(hub, "GET", "/v1/links", sub, "", None).await;
    assert_eq!(r.body["links"], json!([]));
    let r = call(hub, "GET", ops, sub, "", None).await;
    assert_eq!(r.status, 404);
    // Recreate continues the version.
    let r = call(hub, "PUT", ops, w, "if-none-match: *", Some("{}")).await;
    assert_eq!((r.status, r.body["version"].as_i64()), (201, Some(3)));
    link_seq
}

/// The stream saw every change, in order, once.
async fn stream_saw_every_change(stream: &mut Sse, link_seq: u64) {
    let mut types = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while types.last().map(String::as_str) != Some("group.created")
        || types.iter().filter(|t| *t == "group.created").count() < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stream stalled at {types:?}"
        );
        let e = stream.next().await.expect("event").json();
        if e["seq"] == link_seq {
            assert_eq!(e["type"], "link.created");
        }
        types.push(e["type"].as_str().unwrap_or("").to_string());
    }
    let mut want = vec!["user.created"; 5];
    want.push("group.created");
    want.extend(["link.created"; 3]);
    want.extend(["link.deleted"; 3]);
    want.extend(["group.deleted", "group.created"]);
    assert_eq!(types, want);
}

/// Subscribers cannot write; another tenant sees none of acme's entities and has its own.
async fn roles_and_tenants(hub: &Hub, sub: &str) {
    let other = token("beta", "admin");
    let other = other.as_str();
    let e = Some("{}");
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("PUT", "/v1/entities/site/x", "", e, sub, 403, ""),
        ("DELETE", NYC, "", None, sub, 403, ""),
        ("PUT", "/v1/links/x/user/u1/site/nyc", "", None, sub, 403, ""),
        // Another tenant's entity does not exist.
        ("GET", NYC, "", None, other, 404, ""),
        ("GET", "/v1/entities/user", "", None, other, 200, ""),
        ("PATCH", NYC, "", e, other, 404, ""),
        // beta's site/nyc is its own.
        ("PUT", NYC, "if-none-match: *", Some(r#"{"mine":true}"#), other, 201, ""),
        // beta cannot link to acme's user.
        ("PUT", "/v1/links/x/site/nyc/user/u1", "", None, other, 404, ""),
        ("GET", NYC, "", None, sub, 200, ""),
        ("GET", "/v1/events?limit=1000", "", None, other, 200, ""),
    ];
    let a = check(hub, rows).await;
    assert_eq!(a[4].body["entities"], json!([]));
    assert_eq!(
        a[6].body["version"].as_i64(),
        Some(1),
        "beta's site/nyc is its own"
    );
    assert_eq!(
        a[8].body["value"],
        json!({"name": "New York"}),
        "acme's site is untouched"
    );
    let subjects = texts(&a[9].body, "events", "subject");
    assert_eq!(subjects, ["site/nyc"], "beta sees only its own change");
}

/// Concurrent conditional updates: exactly one wins, exactly one event.
async fn racing_updates(hub: &Hub, w: &str) {
    for round in 0..10 {
        let cur = call(hub, "GET", NYC, w, "", None).await;
        let v = cur.body["version"].as_i64().expect("version");
        let before = stored(hub).await;
        let body_a = format!(r#"{{"round":{round},"by":"a"}}"#);
        let body_b = format!(r#"{{"round":{round},"by":"b"}}"#);
        let cond = format!("if-match: {v}");
        let (a, b) = tokio::join!(
            call(hub, "PUT", NYC, w, &cond, Some(&body_a)),
            call(hub, "PATCH", NYC, w, &cond, Some(&body_b)),
        );
        let mut statuses = [a.status, b.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 412], "round {round}");
        assert_eq!(stored(hub).await, before + 1, "round {round}: one event");
    }
}

async fn rest_paths(backend: Backend, schema: &str) {
    let hub = start(backend, schema, |_| {}).await;
    let w = token("acme", "publisher");
    let sub = token("acme", "subscriber");
    // Watch every event of the tenant from the start.
    let mut stream = {
        let res = hub
            .http
            .get(hub.url("/v1/stream?after=0"))
            .bearer_auth(&sub)
            .send()
            .await
            .expect("stream");
        assert_eq!(res.status(), 200);
        Sse::from_response(res)
    };
    entity_lifecycle(&hub, &mut stream, &w, &sub).await;
    refusals(&hub, &w).await;
    let link_seq = lists_and_links(&hub, &w, &sub).await;
    stream_saw_every_change(&mut stream, link_seq).await;
    roles_and_tenants(&hub, &sub).await;
    racing_updates(&hub, &w).await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_paths_on_sqlite() {
    rest_paths(Backend::Sqlite, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_paths_on_postgres() {
    let Some(schema) = pg_schema("the PostgreSQL entity tests", "crier_ent").await else {
        return;
    };
    rest_paths(Backend::Postgres, &schema).await;
    drop_schema(&schema).await;
}

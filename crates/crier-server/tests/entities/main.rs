//! Entities and links over HTTP (§11), on SQLite and on PostgreSQL: every path and status,
//! merge-patch semantics, conditional updates racing, the events each change emits (seen on
//! a real SSE stream), roles and tenant isolation.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Hub;
use crier_server::auth::{load_keys, AuthSettings};
use crier_server::config::StoreKind;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::Method;
use serde_json::{json, Value};

const SECRET: &str = "entities-secret-of-at-least-32-chars!";

fn token(tenant: &str, role: &str) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let c = json!({"sub": format!("{role}@{tenant}"), "tenant": tenant, "role": role, "exp": exp});
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &c,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token")
}

fn pg_url() -> String {
    std::env::var("CRIER_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

async fn pg_reachable() -> bool {
    let ok = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(("127.0.0.1", 5432)),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    if !ok {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("PostgreSQL on 127.0.0.1:5432 is unreachable and CI=true");
        }
        eprintln!("NOTICE: PostgreSQL is unreachable; skipping the PostgreSQL entity tests");
    }
    ok
}

async fn drop_schema(schema: &str) {
    if let Ok((client, conn)) = tokio_postgres::connect(&pg_url(), tokio_postgres::NoTls).await {
        tokio::spawn(conn);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await;
    }
}

#[derive(Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

async fn start(
    backend: Backend,
    schema: &str,
    tweak: impl FnOnce(&mut crier_server::Settings) + Send + 'static,
) -> Hub {
    let schema = schema.to_string();
    Hub::start_with(move |s| {
        s.auth = AuthSettings {
            jwt: load_keys(SECRET, "", "", "HS256").expect("keys"),
            enabled: true,
            single_tenant: false,
        };
        if let Backend::Postgres = backend {
            s.store = StoreKind::Postgres(pg_url());
            s.store_schema = schema;
        }
        tweak(s);
    })
    .await
}

/// One answer: status, headers we look at, body.
struct Res {
    status: u16,
    etag: Option<String>,
    seqs: Vec<u64>,
    body: Value,
}

async fn call(
    hub: &Hub,
    method: Method,
    path: &str,
    tok: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> Res {
    let mut req = hub.http.request(method, hub.url(path)).bearer_auth(tok);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    let etag = res
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let seqs = res
        .headers()
        .get("crier-seq")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.split(',').filter_map(|x| x.parse().ok()).collect())
        .unwrap_or_default();
    let text = res.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Res {
        status,
        etag,
        seqs,
        body,
    }
}

/// How many events the log holds (every tenant, read by an admin).
async fn stored(hub: &Hub) -> usize {
    let admin = token("acme", "admin");
    let mut after = 0;
    let mut n = 0;
    loop {
        let v: Value = hub
            .http
            .get(hub.url(&format!("/v1/events?tenant=*&limit=1000&after={after}")))
            .bearer_auth(&admin)
            .send()
            .await
            .expect("history")
            .json()
            .await
            .expect("json");
        n += v["events"].as_array().map_or(0, Vec::len);
        match v["next_after"].as_u64() {
            Some(a) => after = a,
            None => return n,
        }
    }
}

fn code(r: &Res) -> &str {
    r.body["error"]["code"].as_str().unwrap_or("")
}

async fn rest_paths(backend: Backend, schema: &str) {
    let hub = start(backend, schema, |_| {}).await;
    let w = token("acme", "publisher");
    let sub = |_: ()| token("acme", "subscriber");
    // Watch every event of the tenant from the start.
    let mut stream = {
        let res = hub
            .http
            .get(hub.url("/v1/stream?after=0"))
            .bearer_auth(token("acme", "subscriber"))
            .send()
            .await
            .expect("stream");
        assert_eq!(res.status(), 200);
        common::Sse::from_response(res)
    };

    // Create.
    let r = call(
        &hub,
        Method::PUT,
        "/v1/entities/site/nyc",
        &w,
        &[("if-none-match", "*")],
        Some(r#"{"name":"NYC","floors":3}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.etag.as_deref(), Some("\"1\""));
    assert_eq!(r.body["kind"], "site");
    assert_eq!(r.body["id"], "nyc");
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["value"], json!({"name": "NYC", "floors": 3}));
    assert!(r.body["created_at"]
        .as_str()
        .is_some_and(|t| t.ends_with('Z')));
    assert_eq!(r.body["created_at"], r.body["updated_at"]);
    assert_eq!(r.seqs.len(), 1);
    let created_seq = r.seqs[0];
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

    // Read, conditional read.
    let r = call(
        &hub,
        Method::GET,
        "/v1/entities/site/nyc",
        &sub(()),
        &[],
        None,
    )
    .await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(1)));
    let r = call(
        &hub,
        Method::GET,
        "/v1/entities/site/nyc",
        &sub(()),
        &[("if-none-match", "\"1\"")],
        None,
    )
    .await;
    assert_eq!(r.status, 304);
    let r = call(
        &hub,
        Method::GET,
        "/v1/entities/site/nowhere",
        &sub(()),
        &[],
        None,
    )
    .await;
    assert_eq!((r.status, code(&r)), (404, "not_found"));

    // Preconditions fail with 412 and emit nothing.
    let r = call(
        &hub,
        Method::PUT,
        "/v1/entities/site/nyc",
        &w,
        &[("if-none-match", "*")],
        Some("{}"),
    )
    .await;
    assert_eq!(
        (r.status, code(&r)),
        (412, "precondition_failed"),
        "{}",
        r.body
    );
    let r = call(
        &hub,
        Method::PUT,
        "/v1/entities/site/nyc",
        &w,
        &[("if-match", "\"9\"")],
        Some("{}"),
    )
    .await;
    assert_eq!((r.status, code(&r)), (412, "precondition_failed"));
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("version 1"),
        "{}",
        r.body
    );
    let r = call(
        &hub,
        Method::PATCH,
        "/v1/entities/site/ghost",
        &w,
        &[("if-match", "*")],
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 412);

    // The same value again: 200, same version, no event.
    let r = call(
        &hub,
        Method::PUT,
        "/v1/entities/site/nyc",
        &w,
        &[("if-match", "1")],
        Some(r#"{"floors":3,"name":"NYC"}"#),
    )
    .await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(1)));
    assert!(r.seqs.is_empty());

    // Merge patch: null removes, objects merge.
    let r = call(
        &hub,
        Method::PATCH,
        "/v1/entities/site/nyc",
        &w,
        &[("if-match", "\"1\"")],
        Some(r#"{"floors":null,"address":{"city":"New York","zip":"10001"}}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 2);
    assert_eq!(
        r.body["value"],
        json!({"name": "NYC", "address": {"city": "New York", "zip": "10001"}})
    );
    assert_eq!(r.etag.as_deref(), Some("\"2\""));
    let r = call(
        &hub,
        Method::PATCH,
        "/v1/entities/site/nyc",
        &w,
        &[],
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
    let r = call(
        &hub,
        Method::PUT,
        "/v1/entities/site/nyc",
        &w,
        &[],
        Some(r#"{"name":"New York"}"#),
    )
    .await;
    assert_eq!((r.status, r.body["version"].as_i64()), (200, Some(4)));
    assert_eq!(r.body["value"], json!({"name": "New York"}));
    let e = stream.next().await.expect("event").json();
    assert_eq!(e["data"]["changed"], json!(["address", "name"]));

    // Bad input: clear 4xx, nothing stored.
    let head = stored(&hub).await;
    for (method, path, headers, body, status, want) in [
        (
            Method::PUT,
            "/v1/entities/si.te/x",
            vec![],
            Some("{}"),
            400,
            "invalid_entity",
        ),
        (
            Method::PUT,
            "/v1/entities/site/a%20b",
            vec![],
            Some("{}"),
            400,
            "invalid_entity",
        ),
        (
            Method::PUT,
            "/v1/entities/site/x",
            vec![],
            Some("[1,2]"),
            400,
            "invalid_json",
        ),
        (
            Method::PUT,
            "/v1/entities/site/x",
            vec![],
            Some("{"),
            400,
            "invalid_json",
        ),
        (
            Method::PUT,
            "/v1/entities/site/x",
            vec![],
            Some(""),
            400,
            "invalid_json",
        ),
        (
            Method::PUT,
            "/v1/entities/site/x",
            vec![("if-match", "abc")],
            Some("{}"),
            400,
            "invalid_header",
        ),
        (
            Method::PUT,
            "/v1/entities/site/x",
            vec![("if-match", "1"), ("if-none-match", "*")],
            Some("{}"),
            400,
            "invalid_header",
        ),
        (
            Method::PATCH,
            "/v1/entities/site/x",
            vec![("if-none-match", "*")],
            Some("{}"),
            400,
            "invalid_header",
        ),
        (
            Method::PATCH,
            "/v1/entities/site/nowhere",
            vec![],
            Some("{}"),
            404,
            "not_found",
        ),
        (
            Method::DELETE,
            "/v1/entities/site/nowhere",
            vec![],
            None,
            404,
            "not_found",
        ),
        (
            Method::GET,
            "/v1/entities/site?limit=0",
            vec![],
            None,
            400,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/entities/site?limit=5000",
            vec![],
            None,
            400,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/entities/site?severity=error",
            vec![],
            None,
            400,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/links?source=site",
            vec![],
            None,
            400,
            "invalid_entity",
        ),
        (
            Method::GET,
            "/v1/links?after=garbage",
            vec![],
            None,
            400,
            "invalid_query",
        ),
    ] {
        let r = call(&hub, method.clone(), path, &w, &headers, body).await;
        assert_eq!(
            (r.status, code(&r)),
            (status, want),
            "{method} {path}: {}",
            r.body
        );
    }
    let res = hub
        .http
        .put(hub.url("/v1/entities/site/x"))
        .bearer_auth(&w)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("put");
    assert_eq!(res.status(), 415);
    assert_eq!(stored(&hub).await, head, "refused requests stored nothing");

    // Lists page by id.
    for id in ["u3", "u1", "u2", "u5", "u4"] {
        let r = call(
            &hub,
            Method::PUT,
            &format!("/v1/entities/user/{id}"),
            &w,
            &[],
            Some(&format!(r#"{{"name":"{id}"}}"#)),
        )
        .await;
        assert_eq!(r.status, 201);
    }
    let r = call(
        &hub,
        Method::GET,
        "/v1/entities/user?limit=2",
        &sub(()),
        &[],
        None,
    )
    .await;
    let ids: Vec<&str> = r.body["entities"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, ["u1", "u2"]);
    assert_eq!(r.body["next_after"], "u2");
    let r = call(
        &hub,
        Method::GET,
        "/v1/entities/user?limit=2&after=u4",
        &sub(()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["entities"][0]["id"], "u5");
    assert_eq!(r.body["next_after"], Value::Null);

    // Links.
    let r = call(
        &hub,
        Method::PUT,
        "/v1/links/member_of/user/u1/group/ops",
        &w,
        &[],
        None,
    )
    .await;
    assert_eq!((r.status, code(&r)), (404, "not_found"), "{}", r.body);
    let r = call(
        &hub,
        Method::PUT,
        "/v1/entities/group/ops",
        &w,
        &[],
        Some(r#"{"title":"Ops"}"#),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = call(
        &hub,
        Method::PUT,
        "/v1/links/member_of/user/u1/group/ops",
        &w,
        &[],
        Some(r#"{"role":"lead"}"#),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["type"], "member_of");
    assert_eq!(r.body["source"], "user/u1");
    assert_eq!(r.body["target"], "group/ops");
    assert_eq!(r.body["metadata"], json!({"role": "lead"}));
    let link_seq = r.seqs[0];
    let r = call(
        &hub,
        Method::PUT,
        "/v1/links/member_of/user/u1/group/ops",
        &w,
        &[],
        Some(r#"{"role":"lead"}"#),
    )
    .await;
    assert_eq!(r.status, 200);
    assert!(r.seqs.is_empty());
    let r = call(
        &hub,
        Method::PUT,
        "/v1/links/member_of/user/u1/group/ops",
        &w,
        &[],
        Some(r#"{"role":"member"}"#),
    )
    .await;
    assert_eq!((r.status, code(&r)), (409, "link_exists"));
    let r = call(
        &hub,
        Method::PUT,
        "/v1/links/member_of/user/u2/group/ops",
        &w,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["metadata"], json!({}));
    let r = call(
        &hub,
        Method::PUT,
        "/v1/links/located_in/group/ops/site/nyc",
        &w,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 201);
    let r = call(
        &hub,
        Method::GET,
        "/v1/links?target=group/ops",
        &sub(()),
        &[],
        None,
    )
    .await;
    assert_eq!(
        r.body["links"].as_array().map(Vec::len),
        Some(2),
        "{}",
        r.body
    );
    let r = call(
        &hub,
        Method::GET,
        "/v1/links?type=located_in",
        &sub(()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["links"][0]["target"], "site/nyc");
    let r = call(
        &hub,
        Method::GET,
        "/v1/links?source=user/u1&limit=1",
        &sub(()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.body["links"].as_array().map(Vec::len), Some(1));
    let r = call(
        &hub,
        Method::DELETE,
        "/v1/links/member_of/user/u2/group/ops",
        &w,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.seqs.len(), 1);
    let r = call(
        &hub,
        Method::DELETE,
        "/v1/links/member_of/user/u2/group/ops",
        &w,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 404);

    // Delete the group: its two remaining links go with it, in the same transaction.
    let r = call(
        &hub,
        Method::DELETE,
        "/v1/entities/group/ops",
        &w,
        &[("if-match", "\"7\"")],
        None,
    )
    .await;
    assert_eq!(r.status, 412);
    let r = call(
        &hub,
        Method::DELETE,
        "/v1/entities/group/ops",
        &w,
        &[("if-match", "1")],
        None,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["version"], 2);
    assert_eq!(r.body["links_deleted"], 2);
    assert_eq!(r.seqs.len(), 3);
    assert!(
        r.seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "one transaction, consecutive seqs"
    );
    let r = call(&hub, Method::GET, "/v1/links", &sub(()), &[], None).await;
    assert_eq!(r.body["links"], json!([]));
    let r = call(
        &hub,
        Method::GET,
        "/v1/entities/group/ops",
        &sub(()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 404);
    // Recreate continues the version.
    let r = call(
        &hub,
        Method::PUT,
        "/v1/entities/group/ops",
        &w,
        &[("if-none-match", "*")],
        Some("{}"),
    )
    .await;
    assert_eq!((r.status, r.body["version"].as_i64()), (201, Some(3)));

    // The stream saw every change, in order, once.
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
    assert_eq!(
        types,
        [
            "user.created",
            "user.created",
            "user.created",
            "user.created",
            "user.created",
            "group.created",
            "link.created",
            "link.created",
            "link.created",
            "link.deleted",
            "link.deleted",
            "link.deleted",
            "group.deleted",
            "group.created",
        ]
    );

    // Roles and tenants.
    let r = call(
        &hub,
        Method::PUT,
        "/v1/entities/site/x",
        &sub(()),
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = call(
        &hub,
        Method::DELETE,
        "/v1/entities/site/nyc",
        &sub(()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let r = call(
        &hub,
        Method::PUT,
        "/v1/links/x/user/u1/site/nyc",
        &sub(()),
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 403);
    let other = token("beta", "admin");
    let r = call(
        &hub,
        Method::GET,
        "/v1/entities/site/nyc",
        &other,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 404, "another tenant's entity does not exist");
    let r = call(&hub, Method::GET, "/v1/entities/user", &other, &[], None).await;
    assert_eq!(r.body["entities"], json!([]));
    let r = call(
        &hub,
        Method::PATCH,
        "/v1/entities/site/nyc",
        &other,
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = call(
        &hub,
        Method::PUT,
        "/v1/entities/site/nyc",
        &other,
        &[("if-none-match", "*")],
        Some(r#"{"mine":true}"#),
    )
    .await;
    assert_eq!(
        (r.status, r.body["version"].as_i64()),
        (201, Some(1)),
        "beta's site/nyc is its own"
    );
    let r = call(
        &hub,
        Method::PUT,
        "/v1/links/x/site/nyc/user/u1",
        &other,
        &[],
        None,
    )
    .await;
    assert_eq!(r.status, 404, "beta cannot link to acme's user");
    let r = call(
        &hub,
        Method::GET,
        "/v1/entities/site/nyc",
        &sub(()),
        &[],
        None,
    )
    .await;
    assert_eq!(
        r.body["value"],
        json!({"name": "New York"}),
        "acme's site is untouched"
    );
    let beta_events = hub
        .http
        .get(hub.url("/v1/events?limit=1000"))
        .bearer_auth(&other)
        .send()
        .await
        .expect("history")
        .json::<Value>()
        .await
        .expect("json");
    let subjects: Vec<&str> = beta_events["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["subject"].as_str())
        .collect();
    assert_eq!(subjects, ["site/nyc"], "beta sees only its own change");

    // Concurrent conditional updates: exactly one wins, exactly one event.
    for round in 0..10 {
        let cur = call(&hub, Method::GET, "/v1/entities/site/nyc", &w, &[], None).await;
        let v = cur.body["version"].as_i64().expect("version").to_string();
        let before = stored(&hub).await;
        let body_a = format!(r#"{{"round":{round},"by":"a"}}"#);
        let body_b = format!(r#"{{"round":{round},"by":"b"}}"#);
        let cond = [("if-match", v.as_str())];
        let (a, b) = tokio::join!(
            call(
                &hub,
                Method::PUT,
                "/v1/entities/site/nyc",
                &w,
                &cond,
                Some(&body_a)
            ),
            call(
                &hub,
                Method::PATCH,
                "/v1/entities/site/nyc",
                &w,
                &cond,
                Some(&body_b)
            ),
        );
        let mut statuses = [a.status, b.status];
        statuses.sort_unstable();
        assert_eq!(statuses, [200, 412], "round {round}");
        assert_eq!(stored(&hub).await, before + 1, "round {round}: one event");
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_paths_on_sqlite() {
    rest_paths(Backend::Sqlite, "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_paths_on_postgres() {
    if !pg_reachable().await {
        return;
    }
    let schema = format!("crier_ent_{}", std::process::id());
    drop_schema(&schema).await;
    rest_paths(Backend::Postgres, &schema).await;
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entity_value_size_is_limited() {
    let hub = start(Backend::Sqlite, "", |s| s.limits.max_event_bytes = 2048).await;
    let w = token("acme", "publisher");
    let big = json!({"blob": "x".repeat(4096)}).to_string();
    let r = call(&hub, Method::PUT, "/v1/entities/doc/a", &w, &[], Some(&big)).await;
    assert_eq!(
        (r.status, code(&r)),
        (413, "entity_too_large"),
        "{}",
        r.body
    );
    let r = call(
        &hub,
        Method::PUT,
        "/v1/entities/doc/a",
        &w,
        &[],
        Some(r#"{"small":1}"#),
    )
    .await;
    assert_eq!(r.status, 201);
    let r = call(
        &hub,
        Method::PATCH,
        "/v1/entities/doc/a",
        &w,
        &[],
        Some(&big),
    )
    .await;
    assert_eq!(r.status, 413);
    let r = call(&hub, Method::GET, "/v1/entities/doc/a", &w, &[], None).await;
    assert_eq!(r.body["version"], 1, "the refused patch changed nothing");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn narrowed_credentials_see_only_their_kinds() {
    let hub = start(Backend::Sqlite, "", |_| {}).await;
    let w = token("acme", "publisher");
    assert_eq!(
        call(
            &hub,
            Method::PUT,
            "/v1/entities/site/a",
            &w,
            &[],
            Some("{}")
        )
        .await
        .status,
        201
    );
    assert_eq!(
        call(
            &hub,
            Method::PUT,
            "/v1/entities/secret/a",
            &w,
            &[],
            Some("{}")
        )
        .await
        .status,
        201
    );
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 600;
    let narrow = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({"sub": "n", "tenant": "acme", "role": "publisher", "exp": exp, "subscribe": ["site.*"], "publish": ["site.*"]}),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("token");
    assert_eq!(
        call(&hub, Method::GET, "/v1/entities/site/a", &narrow, &[], None)
            .await
            .status,
        200
    );
    assert_eq!(
        call(
            &hub,
            Method::GET,
            "/v1/entities/secret/a",
            &narrow,
            &[],
            None
        )
        .await
        .status,
        404
    );
    let r = call(&hub, Method::GET, "/v1/entities/secret", &narrow, &[], None).await;
    assert_eq!(r.body["entities"], json!([]));
    assert_eq!(
        call(
            &hub,
            Method::PUT,
            "/v1/entities/site/b",
            &narrow,
            &[],
            Some("{}")
        )
        .await
        .status,
        201
    );
    let r = call(
        &hub,
        Method::PUT,
        "/v1/entities/secret/b",
        &narrow,
        &[],
        Some("{}"),
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    hub.stop().await;
}

//! Entities and links over HTTP (§11), on SQLite and on PostgreSQL: every path and status,
//! merge-patch semantics, conditional updates racing, the events each change emits (seen on
//! a real SSE stream), roles and tenant isolation. `rest` walks the API in order on both
//! backends; `limits` checks value sizes and narrowed credentials.

mod limits;
mod rest;

use crier_server::config::StoreKind;
use crier_testkit::http::{send, Answer};
use crier_testkit::services::pg_url;
use crier_testkit::Hub;
use serde_json::Value;

const SECRET: &str = "entities-secret-of-at-least-32-chars!";

/// A token of `role` in `tenant`, its subject `role@tenant`.
fn token(tenant: &str, role: &str) -> String {
    crier_testkit::auth::token(SECRET, &format!("{role}@{tenant}"), tenant, role, None)
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
        crier_testkit::auth::with_hs256(s, SECRET);
        if let Backend::Postgres = backend {
            s.store = StoreKind::Postgres(pg_url());
            s.store_schema = schema;
        }
        tweak(s);
    })
    .await
}

/// One request with a credential; `headers` as `"name: value; name: value"`.
async fn call(
    hub: &Hub,
    method: &str,
    path: &str,
    tok: &str,
    headers: &str,
    body: Option<&str>,
) -> Answer {
    send(hub, method, path, headers, body, tok).await
}

/// How many events the log holds (every tenant, read by an admin).
async fn stored(hub: &Hub) -> usize {
    let admin = token("acme", "admin");
    let mut after = 0;
    let mut n = 0;
    loop {
        let path = format!("/v1/events?tenant=*&limit=1000&after={after}");
        let v = call(hub, "GET", &path, &admin, "", None).await.body;
        n += v["events"].as_array().map_or(0, Vec::len);
        match v["next_after"].as_u64() {
            Some(a) => after = a,
            None => return n,
        }
    }
}

/// The ids of a list of entities.
fn ids(v: &Value) -> Vec<&str> {
    v["entities"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect()
}

//! §12.3 over real sockets: `max_response_bytes` bounds what one request loads (a history
//! page stops early and pages on; a GraphQL request fails with `response_too_large`), a
//! GraphQL request holds at most `graphql_max_batch` operations, and complexity counts list
//! sizes so aliases cannot multiply a query past the limit.

use crier_testkit::checks::{call, get_status};
use crier_testkit::Hub;
use serde_json::{json, Value};

const BUDGET: usize = 8 * 1024;

/// A hub whose requests may load 8 KiB, holding 40 events of about 600 bytes each.
async fn loaded() -> (Hub, Vec<u64>) {
    let hub = Hub::start_with(|s| {
        s.limits.max_response_bytes = BUDGET;
        s.limits.max_event_bytes = 1024;
    })
    .await;
    let pad = "x".repeat(500);
    let events: Vec<Value> = (0..40)
        .map(|i| json!({"type": "big.one", "data": {"i": i, "pad": pad}}))
        .collect();
    let seqs = hub.publish(Value::from(events)).await;
    (hub, seqs)
}

async fn gql(hub: &Hub, body: Value) -> (u16, Value) {
    call(hub, "POST", "/graphql", "", Some(&body)).await
}

fn code(v: &Value) -> String {
    v["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn a_history_page_stops_at_max_response_bytes_and_pages_on() {
    let (hub, seqs) = loaded().await;
    let mut after = 0;
    let mut got: Vec<u64> = Vec::new();
    let mut pages = 0;
    loop {
        let page = format!("/v1/events?limit=1000&after={after}");
        let res = get_status(&hub, &page, "", 200).await;
        let body = res.bytes().await.expect("body");
        assert!(
            body.len() <= BUDGET + 200,
            "a page of {} bytes is over the budget",
            body.len()
        );
        let v: Value = serde_json::from_slice(&body).expect("json");
        let page: Vec<u64> = v["events"]
            .as_array()
            .expect("events")
            .iter()
            .map(|e| e["seq"].as_u64().expect("seq"))
            .collect();
        pages += 1;
        got.extend(&page);
        match v["next_after"].as_u64() {
            Some(n) => {
                assert_eq!(Some(&n), page.last(), "next_after is the page's last seq");
                after = n;
            }
            None => break,
        }
        assert!(pages < 40, "paging does not move forward");
    }
    assert!(pages > 1, "all 40 events (~24 KiB) came in one page");
    assert_eq!(got, seqs, "every event once, in order");
    // Newest first stops early too, and says where to go on.
    let (_, v) = hub.get("/v1/events?limit=1000&order=desc").await;
    let n = v["events"].as_array().expect("events").len();
    assert!(n < 40 && n > 0, "{n}");
    assert!(v["next_before"].as_u64().is_some(), "{v}");
    hub.stop().await;
}

#[tokio::test]
async fn graphql_requests_that_would_load_too_much_fail() {
    let (hub, _) = loaded().await;
    // One field over the budget.
    let (s, v) = gql(&hub, json!({"query": "{ events(limit: 40) { seq data } }"})).await;
    assert_eq!(s, 200);
    assert_eq!(code(&v), "response_too_large", "{v}");
    // Each alias fits alone, not together: the budget is the request's.
    let (_, v) = gql(&hub, json!({"query": "{ a: events(limit: 10) { seq } }"})).await;
    assert_eq!(v["data"]["a"].as_array().map(Vec::len), Some(10), "{v}");
    let q = "{ a: events(limit: 10) { seq } b: events(limit: 10) { seq } }";
    let (_, v) = gql(&hub, json!({ "query": q })).await;
    assert_eq!(code(&v), "response_too_large", "{v}");
    // So is a batch: its operations share one budget.
    let one = json!({"query": "{ events(limit: 10) { seq } }"});
    let (s, v) = gql(&hub, json!([one, one])).await;
    assert_eq!(s, 200);
    let codes: Vec<String> = v
        .as_array()
        .expect("batch answer")
        .iter()
        .map(code)
        .collect();
    assert!(codes.contains(&"response_too_large".to_string()), "{v}");
    let metrics = hub.text("/metrics").await;
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("crier_limit_hits_total") && l.contains("max_response_bytes")));
    hub.stop().await;
}

#[tokio::test]
async fn aliases_and_batches_cannot_multiply_a_request() {
    let hub = Hub::start().await;
    hub.publish(json!([{"type": "a.b"}])).await;
    // One full page with every field is allowed.
    let full = "{ events(limit: 1000) { seq id time tenant type source category severity subject actor tags data metadata } }";
    let (_, v) = gql(&hub, json!({ "query": full })).await;
    assert!(v["errors"].is_null(), "{v}");
    // 249 aliases of a 1000-item list: the list size counts, so this is refused unrun.
    let wide: String = (0..249)
        .map(|i| format!("a{i}: events(limit: 1000) {{ data }} "))
        .collect();
    let (_, v) = gql(&hub, json!({ "query": format!("{{ {wide} }}") })).await;
    let msg = v["errors"][0]["message"].as_str().unwrap_or_default();
    assert!(msg.to_lowercase().contains("complex"), "{v}");
    assert!(v["data"].is_null(), "{v}");
    // So are 21 of them.
    let wide: String = (0..21)
        .map(|i| format!("a{i}: events(limit: 1000) {{ seq }} "))
        .collect();
    let (_, v) = gql(&hub, json!({ "query": format!("{{ {wide} }}") })).await;
    assert!(v["errors"][0]["message"]
        .as_str()
        .is_some_and(|m| m.to_lowercase().contains("complex")));
    // Batches: 10 operations pass, 11 and 20,000 are refused before any runs.
    let op = json!({"query": "{ events(limit: 1) { seq } }"});
    let (s, v) = gql(&hub, Value::from(vec![op.clone(); 10])).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v.as_array().map(Vec::len), Some(10));
    for n in [11, 20_000] {
        let (s, v) = gql(&hub, Value::from(vec![op.clone(); n])).await;
        assert_eq!(s, 413, "{n}: {v}");
        assert_eq!(v["error"]["code"], "batch_too_large", "{v}");
    }
    hub.stop().await;
}

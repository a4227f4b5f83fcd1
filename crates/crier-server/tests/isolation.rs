//! Property: random events across random tenants, random subscribers on every path; no
//! subscriber ever sees, counts or can fetch another tenant's event.

use crier_testkit::checks::{answered, call, get_status, request, stream};
use crier_testkit::Hub;
use proptest::prelude::*;
use serde_json::{json, Value};

const SECRET: &str = "isolation-secret-of-at-least-32-chars";
const TENANTS: [&str; 3] = ["acme", "beta", "gamma"];
const TYPES: [&str; 3] = ["site.created", "site.deleted", "user.created"];

fn token(tenant: &str, role: &str) -> String {
    crier_testkit::auth::token(SECRET, "p", tenant, role, None)
}

async fn check(events: Vec<(usize, usize)>, subscribers: Vec<(usize, Option<usize>)>) {
    let hub = Hub::start_with(|s| {
        crier_testkit::auth::with_hs256(s, SECRET);
    })
    .await;
    let admin = token("ops", "admin");
    let batch: Value = events
        .iter()
        .enumerate()
        .map(|(i, (t, ty))| json!({"type": TYPES[*ty], "tenant": TENANTS[*t], "id": format!("e{i}")}))
        .collect();
    let publish = request(&hub, "POST", "/v1/events", &admin, Some(&batch));
    answered(publish, 201).await;
    // Every stored event as (tenant, type, id), sentinels included as they are added.
    let mut log: Vec<(usize, usize, String)> = events
        .iter()
        .enumerate()
        .map(|(i, (t, ty))| (*t, *ty, format!("e{i}")))
        .collect();
    for (t, ty) in subscribers {
        let tenant = TENANTS[t];
        let tok = token(tenant, "subscriber");
        let want: Vec<String> = log
            .iter()
            .filter(|(et, ety, _)| *et == t && ty.is_none_or(|x| x == *ety))
            .map(|(_, _, id)| id.clone())
            .collect();
        let q = ty.map(|x| format!("type={}", TYPES[x])).unwrap_or_default();
        // History.
        let v: Value = hub
            .http
            .get(hub.url(&format!("/v1/events?limit=1000&{q}")))
            .bearer_auth(&tok)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let ids: Vec<String> = v["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, want, "history of {tenant}");
        assert!(v["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["tenant"] == tenant));
        // Asking for another tenant is refused, not answered.
        for other in TENANTS.iter().filter(|o| **o != tenant) {
            get_status(&hub, &format!("/v1/events?tenant={other}"), &tok, 403).await;
        }
        // Lookups by id: own found, others not found (never forbidden).
        for (et, _, id) in &log {
            let (status, _) = call(&hub, "GET", &format!("/v1/events/{id}"), &tok, None).await;
            assert_eq!(
                status,
                if *et == t { 200 } else { 404 },
                "lookup {id} as {tenant}"
            );
        }
        // SSE and WebSocket from the start, then a live sentinel per tenant: the first
        // live event a subscriber sees must be its own tenant's.
        let mut sse = stream(&hub, &format!("/v1/stream?after=0&{q}"), &tok).await;
        let (stream, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?token={tok}", hub.addr))
                .await
                .unwrap();
        let mut ws = crier_testkit::Ws { stream };
        assert_eq!(ws.recv().await["tenant"], tenant);
        let filter = ty.map(|x| json!({"type": [TYPES[x]]})).unwrap_or(json!({}));
        ws.subscribe("s", filter, Some(0)).await;
        let sentinel = ty.unwrap_or(0);
        for (k, other) in TENANTS.iter().enumerate() {
            if *other != tenant {
                let id = format!("x{k}-{}", log.len());
                let e = json!({"type": TYPES[sentinel], "tenant": other, "id": id});
                call(&hub, "POST", "/v1/events", &admin, Some(&e)).await;
                log.push((k, sentinel, id));
            }
        }
        let own = format!("own-{t}-{}", log.len());
        let e = json!({"type": TYPES[sentinel], "tenant": tenant, "id": own});
        call(&hub, "POST", "/v1/events", &admin, Some(&e)).await;
        log.push((t, sentinel, own.clone()));
        let mut expected = want.clone();
        expected.push(own);
        let mut got_sse = Vec::new();
        while got_sse.len() < expected.len() {
            let m = sse.next().await.expect("sse open");
            let e = m.json();
            assert_eq!(e["tenant"], tenant, "SSE leaked {e}");
            got_sse.push(e["id"].as_str().unwrap().to_string());
        }
        assert_eq!(got_sse, expected, "SSE of {tenant}");
        let mut got_ws = Vec::new();
        while got_ws.len() < expected.len() {
            let m = ws.recv().await;
            assert_eq!(m["event"]["tenant"], tenant, "WS leaked {m}");
            got_ws.push(m["event"]["id"].as_str().unwrap().to_string());
        }
        assert_eq!(got_ws, expected, "WS of {tenant}");
    }
    let _ = hub.stop().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn no_subscriber_sees_another_tenants_events(
        events in prop::collection::vec((0..3usize, 0..3usize), 1..30),
        subscribers in prop::collection::vec((0..3usize, prop::option::of(0..3usize)), 1..4),
    ) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        rt.block_on(check(events, subscribers));
    }
}

//! What each role may do, that the tenant and actor come from the credential, that narrowed
//! tokens cannot widen, and that subscriptions, replays and stats are scoped to a tenant.

use crier_testkit::checks::texts;
use crier_testkit::http::{check, Row};
use serde_json::json;

use crate::{claims, hs, hs_hub, hs_hub_with, req, ws_connect};

#[tokio::test]
async fn role_table() {
    let hub = hs_hub().await;
    let admin = hs(&claims("root", "acme", "admin"));
    let r = req(
        &hub,
        "POST",
        "/v1/events",
        Some(&admin),
        Some(json!({"type": "seed", "id": "e1"})),
    )
    .await;
    assert_eq!(r.body["events"][0]["seq"], 1);
    let roles = ["subscriber", "publisher", "admin"];
    let tokens: Vec<String> = roles.iter().map(|r| hs(&claims("u", "acme", r))).collect();
    // (method, path, body, expected status for subscriber, publisher, admin)
    let table: [(&str, &str, Option<&str>, [u16; 3]); 7] = [
        (
            "POST",
            "/v1/events",
            Some(r#"{"type":"x"}"#),
            [403, 201, 201],
        ),
        ("GET", "/v1/events", None, [200, 200, 200]),
        ("GET", "/v1/events/e1", None, [200, 200, 200]),
        ("GET", "/v1/stream", None, [200, 200, 200]),
        ("GET", "/v1/events?tenant=other", None, [403, 403, 200]),
        ("GET", "/v1/events?tenant=*", None, [403, 403, 200]),
        ("GET", "/metrics", None, [403, 403, 200]),
    ];
    let mut rows: Vec<Row> = Vec::new();
    for (method, path, body, want) in table {
        for (i, token) in tokens.iter().enumerate() {
            rows.push((method, path, "", body, token, want[i], ""));
        }
    }
    // No credential needed.
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        rows.push(("GET", path, "", None, "", 200, ""));
    }
    check(&hub, &rows).await;
    // WebSocket: every role connects and subscribes; only publishers publish.
    for (i, role) in roles.iter().enumerate() {
        let mut ws = ws_connect(&hub, &hs(&claims("u", "acme", role)))
            .await
            .expect("connect");
        ws.subscribe("s", json!({}), None).await;
        ws.send(json!({"op": "publish", "ref": "p", "event": {"type": "w"}}))
            .await;
        let m = ws.recv().await;
        if i == 0 {
            assert_eq!(
                (m["op"].as_str(), m["code"].as_str()),
                (Some("error"), Some("forbidden")),
                "{m}"
            );
        } else {
            assert!(m["op"] == "published" || m["op"] == "event", "{role}: {m}");
        }
    }
}

#[tokio::test]
async fn tenant_is_forced_from_the_credential() {
    let hub = hs_hub().await;
    let p = hs(&claims("pub", "acme", "publisher"));
    let admin = hs(&claims("root", "ops", "admin"));
    let ev = "/v1/events";
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("POST", ev, "", Some(r#"{"type":"a","tenant":"other"}"#), &p, 403, ""),
        ("POST", ev, "", Some(r#"{"type":"a","actor":"someone"}"#), &p, 403, ""),
        ("POST", ev, "", Some(r#"{"type":"a","id":"mine"}"#), &p, 201, ""),
        ("GET", "/v1/events/mine", "", None, &p, 200, ""),
        // An admin may set tenant and actor.
        ("POST", ev, "", Some(r#"{"type":"a","tenant":"beta","actor":"robot","id":"b1"}"#), &admin, 201, ""),
        // Another tenant's event is not found, not forbidden.
        ("GET", "/v1/events/b1", "", None, &p, 404, ""),
        ("GET", "/v1/events/b1?tenant=beta", "", None, &admin, 200, ""),
    ];
    let a = check(&hub, rows).await;
    let e = &a[3].body;
    assert_eq!(
        (e["tenant"].as_str(), e["actor"].as_str()),
        (Some("acme"), Some("pub"))
    );
    assert_eq!(a[6].body["actor"].as_str(), Some("robot"));
}

#[tokio::test]
async fn narrowed_tokens_cannot_widen() {
    let hub = hs_hub().await;
    let admin = hs(&claims("root", "acme", "admin"));
    for (ty, id) in [
        ("site.created", "s1"),
        ("user.created", "u1"),
        ("site.deleted", "s2"),
    ] {
        req(
            &hub,
            "POST",
            "/v1/events",
            Some(&admin),
            Some(json!({"type": ty, "id": id})),
        )
        .await;
    }
    let mut c = claims("n", "acme", "publisher");
    c["subscribe"] = json!(["site.*"]);
    c["publish"] = json!(["site.*"]);
    let narrow = hs(&c);
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("GET", "/v1/events?type=*", "", None, &narrow, 200, ""),
        ("GET", "/v1/events?type=user.*", "", None, &narrow, 200, ""),
        ("GET", "/v1/events/u1", "", None, &narrow, 404, ""),
        // Publish patterns are enforced.
        ("POST", "/v1/events", "", Some(r#"{"type":"user.deleted"}"#), &narrow, 403, ""),
        ("POST", "/v1/events", "", Some(r#"{"type":"site.moved"}"#), &narrow, 201, ""),
    ];
    let a = check(&hub, rows).await;
    let types = texts(&a[0].body, "events", "type");
    assert_eq!(types, vec!["site.created", "site.deleted"]);
    assert_eq!(a[1].body["events"], json!([]));
    let mut ws = ws_connect(&hub, &narrow).await.expect("connect");
    ws.subscribe("all", json!({"type": ["*"]}), Some(0)).await;
    let got: Vec<u64> = ws.seqs("all", 3).await;
    assert_eq!(
        got,
        vec![1, 3, 4],
        "only site.* events reach the narrowed subscription"
    );
    ws.send(json!({"op": "publish", "ref": "x", "event": {"type": "user.x"}}))
        .await;
    assert_eq!(ws.recv().await["code"], "forbidden");
}

#[tokio::test]
async fn subscriptions_replays_and_stats_are_tenant_scoped() {
    let hub = hs_hub_with(|s| s.webhooks.allow_private = true).await;
    let a = hs(&claims("pa", "acme", "publisher"));
    let b = hs(&claims("pb", "beta", "publisher"));
    let sub_a = hs(&claims("sa", "acme", "subscriber"));
    let hook = r#"{"webhook":{"url":"http://127.0.0.1:9/"},"paused":true}"#;
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("POST", "/v1/events", "", Some(r#"[{"type":"a.one"},{"type":"a.two"}]"#), &a, 201, ""),
        ("POST", "/v1/events", "", Some(r#"{"type":"b.one"}"#), &b, 201, ""),
        ("POST", "/v1/subscriptions", "", Some(hook), &a, 201, ""),
        // Subscribers do not manage subscriptions.
        ("POST", "/v1/subscriptions", "", Some(r#"{"webhook":{"url":"http://127.0.0.1:9/"}}"#), &sub_a, 403, ""),
        ("POST", "/v1/replays", "", Some(r#"{"since":"2000-01-01T00:00:00Z","speed":"max"}"#), &sub_a, 201, ""),
    ];
    let created = check(&hub, rows).await;
    let id = created[2].body["id"].as_str().expect("subscription id");
    let rp = &created[4].body;
    assert_eq!(
        rp["total"].as_u64(),
        Some(2),
        "a replay counts only its tenant's events: {rp}"
    );
    let rid = rp["id"].as_str().expect("replay id");
    // Another tenant's subscription and replay do not exist for beta.
    let (sub, deliveries) = (
        format!("/v1/subscriptions/{id}"),
        format!("/v1/subscriptions/{id}/deliveries"),
    );
    let (replay, stop) = (
        format!("/v1/replays/{rid}"),
        format!("/v1/replays/{rid}/stop"),
    );
    let unpause = Some(r#"{"paused":false}"#);
    let root = hs(&claims("root", "ops", "admin"));
    #[rustfmt::skip]
    let rows: &[Row] = &[
        ("GET", &sub, "", None, &b, 404, ""),
        ("PATCH", &sub, "", unpause, &b, 404, ""),
        ("GET", &deliveries, "", None, &b, 404, ""),
        ("DELETE", &sub, "", None, &b, 404, ""),
        ("GET", "/v1/subscriptions", "", None, &b, 200, ""),
        ("GET", &replay, "", None, &b, 404, ""),
        ("POST", &stop, "", None, &b, 404, ""),
        ("GET", "/v1/stats", "", None, &b, 200, ""),
        ("GET", "/v1/stats?tenant=acme", "", None, &b, 403, ""),
        ("GET", "/v1/stats?tenant=*", "", None, &root, 200, ""),
    ];
    let seen = check(&hub, rows).await;
    assert_eq!(seen[4].body["subscriptions"], json!([]));
    let st = &seen[7].body;
    assert_eq!(
        (
            st["events"]["total"].as_u64(),
            st["subscriptions"]["paused"].as_u64()
        ),
        (Some(1), Some(0)),
        "{st}"
    );
    assert_eq!(st["events"]["by_type"], json!({"b.one": 1}));
    assert_eq!(seen[9].body["events"]["total"], 3);
}

//! §12.9 over real sockets: every internal address form is refused as a webhook target with
//! a message naming the rule (never what a name resolved to), and the tenant's webhook
//! subscriptions are bounded. No test here makes the hub send anything to a non-loopback
//! address: the public targets are created paused and deleted at once.

use crier_testkit::checks::{answered, call, metrics, request};
use crier_testkit::Hub;
use serde_json::{json, Value};

async fn create(hub: &Hub, url: &str) -> (u16, Value) {
    let body = json!({"webhook": {"url": url}, "paused": true});
    call(hub, "POST", "/v1/subscriptions", "", Some(&body)).await
}

async fn delete(hub: &Hub, id: &str) {
    let path = format!("/v1/subscriptions/{id}");
    answered(request(hub, "DELETE", &path, "", None), 204).await;
}

#[tokio::test]
async fn every_internal_address_form_is_refused_by_name() {
    let hub = Hub::start().await;
    for (url, rule) in [
        (
            "http://[::ffff:0:127.0.0.1]/",
            "IPv4-translated address embedding a loopback address",
        ),
        (
            "http://[::ffff:127.0.0.1]/",
            "IPv4-mapped address embedding a loopback address",
        ),
        (
            "http://[::ffff:a00:1]/",
            "IPv4-mapped address embedding a private address",
        ),
        ("http://[::127.0.0.1]/", "IPv4-compatible"),
        (
            "http://[2002:7f00:1::]/",
            "6to4 address embedding a loopback address",
        ),
        (
            "http://[2002:a9fe:a9fe::1]/",
            "6to4 address embedding a link-local address",
        ),
        ("http://[2001::7f00:1]/", "Teredo"),
        (
            "http://[2001:0:a00:1::]/",
            "Teredo address embedding a private address",
        ),
        (
            "http://[64:ff9b::7f00:1]/",
            "NAT64 address embedding a loopback address",
        ),
        (
            "http://[64:ff9b::192.168.0.1]/",
            "NAT64 address embedding a private address",
        ),
        ("http://[64:ff9b:1::1]/", "local-use NAT64"),
        ("http://[fec0::1]/", "site-local"),
        ("http://[fc00::1]/", "unique-local"),
        ("http://[fd00::1]/", "unique-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[ff02::1]/", "multicast"),
        ("http://[ff0e::1]/", "multicast"),
        ("http://[::]/", "unspecified"),
        ("http://[::1]/", "loopback"),
        ("http://[2001:db8::1]/", "documentation"),
        ("http://[100::1]/", "discard-only"),
        ("http://127.0.0.1/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://10.0.0.1/", "private"),
        ("http://169.254.169.254/", "link-local"),
        ("http://100.64.0.1/", "carrier-grade NAT"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://255.255.255.255/", "broadcast"),
        ("http://192.0.2.1/", "documentation"),
        ("http://198.18.0.1/", "benchmarking"),
        ("http://240.0.0.1/", "reserved"),
    ] {
        let (s, v) = create(&hub, url).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("url_not_allowed")),
            "{url}: {v}"
        );
        let msg = v["error"]["message"].as_str().unwrap_or("");
        assert!(msg.contains(rule), "{url}: {msg:?} does not name {rule:?}");
    }
    // A name: the rule is named, what it resolved to is not.
    let (s, v) = create(&hub, "http://localhost:9/hook").await;
    assert_eq!(s, 400, "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or("");
    assert!(msg.contains("resolves to a loopback address"), "{msg}");
    assert!(!msg.contains("127.0.0.1") && !msg.contains("::1"), "{msg}");
    // Public addresses, including IPv6 forms embedding a public IPv4 address, are targets
    // (paused, and deleted at once: nothing is ever sent to them).
    for url in [
        "http://[2606:4700:4700::1111]/hook",
        "http://[64:ff9b::808:808]/hook",
        "http://[2002:808:808::1]/hook",
        "http://93.184.215.14/hook",
    ] {
        let (s, v) = create(&hub, url).await;
        assert_eq!(s, 201, "{url}: {v}");
        assert_eq!(v["status"], "paused");
        delete(&hub, v["id"].as_str().expect("id")).await;
    }
    // A PATCH to an internal address is refused as well.
    let (_, v) = create(&hub, "http://93.184.215.14/hook").await;
    let id = v["id"].as_str().expect("id").to_string();
    let path = format!("/v1/subscriptions/{id}");
    let change = json!({"webhook": {"url": "http://[2002:7f00:1::]/"}});
    answered(request(&hub, "PATCH", &path, "", Some(&change)), 400).await;
    delete(&hub, &id).await;
}

#[tokio::test]
async fn webhook_subscriptions_per_tenant_are_bounded() {
    let hub = Hub::start_with(|s| {
        s.webhooks.allow_private = true;
        s.limits.max_subscriptions_per_tenant = 2;
    })
    .await;
    // Loopback targets on a closed port, paused: nothing is delivered.
    let a = create(&hub, "http://127.0.0.1:9/a").await;
    assert_eq!(a.0, 201, "{}", a.1);
    assert_eq!(create(&hub, "http://127.0.0.1:9/b").await.0, 201);
    let (s, v) = create(&hub, "http://127.0.0.1:9/c").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (409, Some("too_many_subscriptions")),
        "{v}"
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("limits.max_subscriptions_per_tenant"),
        "{v}"
    );
    let metrics = metrics(&hub, "").await;
    assert!(
        metrics.contains("limit=\"max_subscriptions_per_tenant\""),
        "the hit is counted"
    );
    delete(&hub, a.1["id"].as_str().expect("id")).await;
    assert_eq!(
        create(&hub, "http://127.0.0.1:9/c").await.0,
        201,
        "room again after a delete"
    );
}

#[test]
fn the_limit_is_a_documented_config_key() {
    let toml = "[limits]\nmax_subscriptions_per_tenant = 5\n";
    let cfg: crier_server::config::Config = toml::from_str(toml).expect("parses");
    assert_eq!(cfg.limits.max_subscriptions_per_tenant, 5);
    assert_eq!(
        crier_server::config::Config::default()
            .limits
            .max_subscriptions_per_tenant,
        1000
    );
    let zero: crier_server::config::Config =
        toml::from_str("[limits]\nmax_subscriptions_per_tenant = 0\n").expect("parses");
    let e = zero.validate().expect_err("0 is refused");
    assert!(
        e.to_string().contains("max_subscriptions_per_tenant"),
        "{e}"
    );
}

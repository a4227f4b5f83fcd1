//! `/metrics` against a real hub: HELP on every metric, series registered at zero, build info,
//! latency histograms by route template, process metrics, and `metrics_token` scraping
//! without an admin credential.

use crier_testkit::checks::get_status;
use crier_testkit::Hub;

const SECRET: &str = "test-secret-of-at-least-32-characters!!";
const METRICS_TOKEN: &str = "scrape-token-0123456789";

fn admin_token() -> String {
    crier_testkit::auth::token(SECRET, "ops", "acme", "admin", None)
}

#[tokio::test]
async fn metrics_are_described_registered_and_scrapable_with_a_token() {
    let hub = Hub::start_with(|s| {
        crier_testkit::auth::with_hs256(s, SECRET);
        s.metrics_token = Some(METRICS_TOKEN.into());
    })
    .await;
    let scrape = |token: Option<&str>| {
        let mut req = hub.http.get(hub.url("/metrics"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let res = req.send().await.unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    assert_eq!(scrape(None).await.0, 401);
    assert_eq!(scrape(Some("scrape-token-wrong-guess")).await.0, 401);
    let (status, _) = scrape(Some(&admin_token())).await;
    assert_eq!(status, 200, "admins may scrape");
    // The metrics token opens /metrics and nothing else.
    get_status(&hub, "/v1/events", METRICS_TOKEN, 401).await;

    let missing = "/v1/events/0193a5c2-0000-7000-8000-000000000000";
    get_status(&hub, missing, &admin_token(), 404).await;

    let (status, text) = scrape(Some(METRICS_TOKEN)).await;
    assert_eq!(status, 200);
    let version = env!("CARGO_PKG_VERSION");
    for want in [
        format!("version=\"{version}\""),
        "crier_build_info{".into(),
        "# HELP crier_events_published_total ".into(),
        "process_resident_memory_bytes".into(),
        "process_open_fds".into(),
        "process_cpu_seconds_total".into(),
    ] {
        assert!(text.contains(&want), "no {want} in:\n{text}");
    }
    // Series with fixed labels exist at zero before any use.
    for (name, label) in [
        ("crier_stream_events_sent_total", "transport=\"graphql\""),
        ("crier_webhook_attempts_total", "result=\"failed\""),
        ("crier_limit_hits_total", "limit=\"max_replays_per_tenant\""),
        ("crier_webhook_dead_total", ""),
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l.contains(label))
            .unwrap_or_else(|| panic!("no {name} {label} in:\n{text}"));
        assert!(line.ends_with(" 0"), "{line}");
    }
    // Every metric has its HELP.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let name = line.split_whitespace().nth(2).unwrap();
        assert!(
            text.contains(&format!("# HELP {name} ")),
            "{name} has no HELP"
        );
    }
    // Request latency by route template and status, never by raw path.
    let bucket = text
        .lines()
        .find(|l| {
            l.starts_with("crier_http_request_duration_seconds_count")
                && l.contains("route=\"/v1/events/{id}\"")
                && l.contains("status=\"404\"")
        })
        .unwrap_or_else(|| panic!("no route histogram in:\n{text}"));
    assert!(bucket.contains("method=\"GET\""), "{bucket}");
    assert!(!text.contains("0193a5c2-0000"), "raw paths are no labels");
    assert!(
        !text.contains("crier_deliveries_total"),
        "the old name is gone"
    );
    hub.stop().await;
}

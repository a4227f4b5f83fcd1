//! `GET /v1/stats` carries `series`: events received per 10 s over the last 15 minutes,
//! from the log's counters, so a chart draws history at once (and after a restart).

use crier_testkit::{ev, Hub};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

fn points(stats: &Value) -> Vec<(i64, u64)> {
    assert_eq!(stats["series"]["interval_s"], 10, "{stats}");
    stats["series"]["points"]
        .as_array()
        .expect("points")
        .iter()
        .map(|p| {
            let t = OffsetDateTime::parse(p["t"].as_str().expect("t"), &Rfc3339).expect("RFC 3339");
            (t.unix_timestamp(), p["events"].as_u64().expect("events"))
        })
        .collect()
}

#[tokio::test]
async fn stats_series_covers_fifteen_minutes_and_survives_a_restart() {
    let hub = Hub::start().await;
    let (s, v) = hub.get("/v1/stats").await;
    assert_eq!(s, 200, "{v}");
    let empty = points(&v);
    assert!(
        empty.iter().all(|(_, n)| *n == 0),
        "a new log has no history"
    );

    hub.publish(json!([ev("a.one"), ev("a.two"), ev("a.three")]))
        .await;
    hub.publish(json!([ev("a.four"), ev("a.five")])).await;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let (_, v) = hub.get("/v1/stats").await;
    let p = points(&v);
    let (first, last) = (p[0].0, p[p.len() - 1].0);
    assert!(
        last - first >= 15 * 60,
        "at least 15 minutes: {first}..{last}"
    );
    assert!(
        p.windows(2).all(|w| w[1].0 - w[0].0 == 10),
        "consecutive 10 s steps"
    );
    assert!(
        last % 10 == 0 && last <= now && now - last < 20,
        "ends now: {last} vs {now}"
    );
    assert_eq!(p.iter().map(|(_, n)| n).sum::<u64>(), 5, "{v}");

    // The counters are stored with the log: a restarted hub still has the history.
    let (dir, tmp) = hub.stop().await;
    let hub = Hub::start_in(dir, |_| {}).await;
    let (_, v) = hub.get("/v1/stats").await;
    assert_eq!(points(&v).iter().map(|(_, n)| n).sum::<u64>(), 5, "{v}");
    hub.stop().await;
    drop(tmp);
}

//! Times given to history and replays may be a duration before now (`15m`, `2h`, `7d`) as
//! well as RFC 3339, on HTTP and WebSocket alike (§10).

use crier_testkit::checks::expect;
use crier_testkit::Hub;
use serde_json::json;

#[tokio::test]
async fn history_and_replays_take_durations_before_now() {
    let hub = Hub::start().await;
    let seqs = hub.publish(json!([{"type": "a.b"}, {"type": "a.c"}])).await;

    assert_eq!(hub.history_seqs("since=15m").await, seqs);
    assert_eq!(
        hub.history_seqs("since=7d&until=1h").await,
        Vec::<u64>::new()
    );
    assert_eq!(hub.history_seqs("until=1h").await, Vec::<u64>::new());
    for bad in ["soon", "-5m", "100000y"] {
        let (s, v) = hub.get(&format!("/v1/events?since={bad}")).await;
        assert_eq!(s, 400, "{bad}: {v}");
        let m = v["error"]["message"].as_str().unwrap_or_default();
        assert!(
            m.contains("15m"),
            "the message shows the accepted forms: {m}"
        );
    }

    let mut ws = hub.ws().await;
    ws.send(json!({"op": "history", "ref": "h", "since": "2h"}))
        .await;
    let h = ws.recv().await;
    assert_eq!(h["op"], "history", "{h}");
    assert_eq!(h["events"].as_array().map(Vec::len), Some(2), "{h}");
    ws.send(json!({"op": "history", "ref": "h2", "until": "1h"}))
        .await;
    let h = ws.recv().await;
    assert_eq!(h["events"].as_array().map(Vec::len), Some(0), "{h}");

    let spec = json!({"since": "15m", "speed": "max"});
    let v = expect(&hub, "POST", "/v1/replays", "", Some(&spec), 201, "").await;
    assert_eq!(v["total"], 2, "{v}");
    hub.stop().await;
}

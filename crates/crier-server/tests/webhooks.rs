//! Durable subscriptions delivering to a real webhook receiver on loopback (§3, §8).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use crier_testkit::checks::{call, eventually, pruned_to, retention};
use crier_testkit::Hub;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    RetryAfter(u16, u64),
    Hang,
    Redirect,
}

#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Receiver {
    script: Arc<Mutex<VecDeque<Answer>>>,
    default: Arc<Mutex<Option<Answer>>>,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(script: Vec<Answer>, default: Answer) -> (Receiver, String) {
        let r = Receiver::default();
        *r.script.lock().unwrap() = script.into();
        *r.default.lock().unwrap() = Some(default);
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let r = r.clone();
                move |headers: HeaderMap, body: axum::body::Bytes| {
                    let r = r.clone();
                    async move {
                        r.got.lock().unwrap().push(Received {
                            at: Instant::now(),
                            headers,
                            body: body.to_vec(),
                        });
                        let next = r.script.lock().unwrap().pop_front();
                        let answer = next.or(*r.default.lock().unwrap()).unwrap();
                        match answer {
                            Answer::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
                            Answer::RetryAfter(s, secs) => (
                                StatusCode::from_u16(s).unwrap(),
                                [("retry-after", secs.to_string())],
                            )
                                .into_response(),
                            Answer::Hang => {
                                tokio::time::sleep(Duration::from_secs(5)).await;
                                StatusCode::OK.into_response()
                            }
                            Answer::Redirect => {
                                (StatusCode::FOUND, [("location", "/elsewhere")]).into_response()
                            }
                        }
                    }
                }
            }),
        );
        let url = format!("http://{}/hook", crier_testkit::hooks::serve(app).await);
        (r, url)
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        eventually(within, || async move {
            let got = self.got();
            match got.len() {
                len if len >= n => Ok(got),
                len => Err(format!("receiver got {len} of {n} requests")),
            }
        })
        .await
    }
}

/// The `webhook-id` of each request `got`, in order.
fn ids(got: &[Received]) -> Vec<&str> {
    got.iter()
        .map(|r| r.headers["webhook-id"].to_str().unwrap())
        .collect()
}

/// Standard Webhooks verification, written from the specification.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) -> bool {
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let id = headers["webhook-id"].to_str().unwrap();
    let ts = headers["webhook-timestamp"].to_str().unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    headers["webhook-signature"]
        .to_str()
        .unwrap()
        .split(' ')
        .any(|s| s == format!("v1,{expected}"))
}

async fn hook_hub(backoff: &[u64], on_dead_skip: bool) -> Hub {
    let backoff: Vec<Duration> = backoff
        .iter()
        .map(|ms| Duration::from_millis(*ms))
        .collect();
    Hub::start_with(move |s| {
        s.webhooks.allow_private = true;
        s.webhooks.timeout = Duration::from_millis(300);
        s.webhooks.backoff = backoff;
        s.webhooks.skip_dead = on_dead_skip;
    })
    .await
}

async fn post(hub: &Hub, path: &str, body: Value) -> (u16, Value) {
    call(hub, "POST", path, "", Some(&body)).await
}

/// Polls the subscription `id` until `holds` for its view, which it returns; after `within`
/// fails saying `what` and the last view.
async fn sub_until(
    hub: &Hub,
    id: &str,
    within: Duration,
    what: &str,
    holds: impl Fn(&Value) -> bool,
) -> Value {
    eventually(within, || async {
        let (_, v) = hub.get(&format!("/v1/subscriptions/{id}")).await;
        if holds(&v) {
            Ok(v)
        } else {
            Err(format!("{what}: {v}"))
        }
    })
    .await
}

async fn sub_status(hub: &Hub, id: &str, want: &str) -> Value {
    let what = format!("subscription never became {want}");
    sub_until(hub, id, Duration::from_secs(10), &what, |v| {
        v["status"] == want
    })
    .await
}

#[tokio::test]
async fn retries_follow_the_schedule_keep_order_and_sign() {
    let (rx, url) = Receiver::start(
        vec![
            Answer::Status(500),
            Answer::Status(502),
            Answer::Hang,
            Answer::RetryAfter(429, 1),
            Answer::Redirect,
        ],
        Answer::Status(204),
    )
    .await;
    let hub = hook_hub(&[100, 200, 300, 400, 500, 600], false).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let (s, sub) = post(&hub, "/v1/subscriptions", json!({"name": "orders", "filter": {"type": ["order.*"]}, "webhook": {"url": url, "secret": secret}})).await;
    assert_eq!(s, 201, "{sub}");
    assert_eq!(
        sub["webhook"]["secret"], secret,
        "the secret is shown at creation"
    );
    let id = sub["id"].as_str().unwrap().to_string();
    hub.publish(json!([{"type": "order.created", "id": "o1"}, {"type": "noise"}, {"type": "order.paid", "id": "o2"}, {"type": "order.shipped", "id": "o3"}])).await;
    let got = rx.wait_for(8, Duration::from_secs(15)).await;
    assert_eq!(
        ids(&got),
        vec!["o1", "o1", "o1", "o1", "o1", "o1", "o2", "o3"],
        "retries keep the webhook-id; order is kept; nothing skipped"
    );
    let gaps: Vec<u128> = got
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    // 500 → 100 ms ±20 %; 502 → 200 ms; hang → 300 ms timeout + 300 ms; 429 → Retry-After 1 s; 302 → 500 ms.
    // Lower bounds are the schedule less its jitter; upper bounds leave room for a busy machine.
    let expect = [(80, 330), (160, 450), (520, 950), (950, 1450), (400, 850)];
    for (i, (lo, hi)) in expect.iter().enumerate() {
        assert!(
            (*lo..=*hi).contains(&gaps[i]),
            "gap {i} is {} ms, expected {lo}..{hi}: {gaps:?}",
            gaps[i]
        );
    }
    for r in &got {
        assert!(verify(secret, &r.headers, &r.body), "signature verifies");
        let mut tampered = r.body.clone();
        tampered[5] ^= 1;
        assert!(
            !verify(secret, &r.headers, &tampered),
            "a tampered body fails"
        );
        let mut h = r.headers.clone();
        let ts: u64 = h["webhook-timestamp"].to_str().unwrap().parse().unwrap();
        h.insert("webhook-timestamp", (ts + 1).to_string().parse().unwrap());
        assert!(!verify(secret, &h, &r.body), "a tampered timestamp fails");
        let ts_age = ts.abs_diff(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs(),
        );
        assert!(ts_age < 30);
    }
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(
        (body["id"].as_str(), body["type"].as_str()),
        (Some("o1"), Some("order.created"))
    );
    // Records and cursor.
    sub_status(&hub, &id, "active").await;
    let within = Duration::from_secs(5);
    let v = sub_until(&hub, &id, within, "cursor did not reach 4", |v| {
        v["cursor"] == 4
    })
    .await;
    assert!(
        v["webhook"].get("secret").is_none(),
        "the secret is never shown again"
    );
    let (_, d) = hub.get(&format!("/v1/subscriptions/{id}/deliveries")).await;
    let list = d["deliveries"].as_array().unwrap();
    assert_eq!(list.len(), 3);
    assert_eq!(list[2]["event_id"], "o1");
    assert_eq!(list[2]["attempts"], 6);
    assert_eq!(list[2]["status"], "delivered");
    assert!(list.iter().all(|d| d["status"] == "delivered"));
    let (_, d) = hub
        .get(&format!("/v1/subscriptions/{id}/deliveries?status=dead"))
        .await;
    assert_eq!(d["deliveries"], json!([]));
}

#[tokio::test]
async fn gone_disables_and_dead_pauses_or_skips_and_redeliver_retries() {
    let (_rx, gone_url) = Receiver::start(vec![], Answer::Status(410)).await;
    let hub = hook_hub(&[30, 30], false).await;
    let (_, sub) = post(
        &hub,
        "/v1/subscriptions",
        json!({"webhook": {"url": gone_url}}),
    )
    .await;
    assert!(
        sub["webhook"]["secret"]
            .as_str()
            .unwrap()
            .starts_with("whsec_"),
        "a secret is generated"
    );
    hub.publish(json!([{"type": "a"}])).await;
    let v = sub_status(&hub, sub["id"].as_str().unwrap(), "disabled").await;
    assert!(v["note"].as_str().unwrap().contains("410"));

    let (rx, url) = Receiver::start(vec![], Answer::Status(500)).await;
    let (_, sub) = post(
        &hub,
        "/v1/subscriptions",
        json!({"webhook": {"url": url}, "filter": {"type": ["b"]}}),
    )
    .await;
    let id = sub["id"].as_str().unwrap().to_string();
    hub.publish(json!([{"type": "b", "id": "b1"}, {"type": "b", "id": "b2"}]))
        .await;
    sub_status(&hub, &id, "paused").await;
    assert_eq!(
        rx.got().len(),
        3,
        "first attempt plus one per backoff step, then dead"
    );
    let (_, d) = hub
        .get(&format!("/v1/subscriptions/{id}/deliveries?status=dead"))
        .await;
    assert_eq!(d["deliveries"][0]["event_id"], "b1");
    assert_eq!(d["deliveries"][0]["last_status_code"], 500);
    let (_, v) = hub.get(&format!("/v1/subscriptions/{id}")).await;
    let cursor = v["cursor"].as_u64().unwrap();
    // Redeliver after the receiver recovers: the dead event goes first, then the rest.
    *rx.default.lock().unwrap() = Some(Answer::Status(200));
    let (s, _) = post(
        &hub,
        &format!("/v1/subscriptions/{id}/redeliver"),
        json!({"after": cursor}),
    )
    .await;
    assert_eq!(s, 200);
    let got = rx.wait_for(5, Duration::from_secs(5)).await;
    assert_eq!(ids(&got[3..]), vec!["b1", "b2"]);

    let skip = hook_hub(&[20], true).await;
    let (rx, url) = Receiver::start(
        vec![Answer::Status(500), Answer::Status(500)],
        Answer::Status(200),
    )
    .await;
    let (_, sub) = post(&skip, "/v1/subscriptions", json!({"webhook": {"url": url}})).await;
    skip.publish(json!([{"type": "c", "id": "c1"}, {"type": "c", "id": "c2"}]))
        .await;
    let got = rx.wait_for(3, Duration::from_secs(5)).await;
    assert_eq!(
        ids(&got),
        vec!["c1", "c1", "c2"],
        "with on_dead = skip the next event follows"
    );
    sub_status(&skip, sub["id"].as_str().unwrap(), "active").await;
}

#[tokio::test]
async fn subscription_crud_and_validation() {
    let hub = Hub::start().await;
    let bad: Vec<(Value, &str)> = vec![
        (json!({}), "invalid_json"),
        (
            json!({"webhook": {"url": "ftp://93.184.215.14/"}}),
            "invalid_url",
        ),
        (json!({"webhook": {"url": "not a url"}}), "invalid_url"),
        (
            json!({"webhook": {"url": "https://93.184.215.14/", "secret": "plain"}}),
            "invalid_secret",
        ),
        (
            json!({"webhook": {"url": "https://93.184.215.14/", "secret": "whsec_c2hvcnQ="}}),
            "invalid_secret",
        ),
        (
            json!({"webhook": {"url": "https://93.184.215.14/"}, "filter": {"bogus": 1}}),
            "invalid_filter",
        ),
        (
            json!({"webhook": {"url": "https://93.184.215.14/"}, "colour": "red"}),
            "invalid_json",
        ),
        (
            json!({"webhook": {"url": "https://93.184.215.14/"}, "expires_at": "soon"}),
            "invalid_subscription",
        ),
    ];
    for (body, code) in bad {
        let (s, v) = post(&hub, "/v1/subscriptions", body.clone()).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}: {v}"
        );
    }
    let (s, sub) = post(&hub, "/v1/subscriptions", json!({"name": "n", "webhook": {"url": "https://93.184.215.14/hook"}, "paused": true, "after": 0})).await;
    assert_eq!(s, 201, "{sub}");
    assert_eq!(sub["status"], "paused");
    assert_eq!(sub["cursor"], 0);
    let id = sub["id"].as_str().unwrap();
    let (_, list) = hub.get("/v1/subscriptions").await;
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 1);
    let res = hub
        .http
        .patch(hub.url(&format!("/v1/subscriptions/{id}")))
        .json(&json!({"name": "renamed", "filter": {"severity": "error"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let v: Value = res.json().await.unwrap();
    assert_eq!(
        (v["name"].as_str(), v["filter"]["severity"].as_str()),
        (Some("renamed"), Some("error"))
    );
    let path = format!("/v1/subscriptions/{id}");
    assert_eq!(call(&hub, "DELETE", &path, "", None).await.0, 204);
    assert_eq!(hub.get(&path).await.0, 404);
    assert_eq!(call(&hub, "DELETE", &path, "", None).await.0, 404);
}

#[tokio::test]
async fn internal_addresses_are_refused() {
    let hub = Hub::start().await;
    for url in [
        "http://127.0.0.1/",
        "http://127.1/",
        "http://localhost:8080/",
        "http://10.0.0.1/",
        "http://172.16.5.4/",
        "http://192.168.1.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://100.64.0.1/",
        "http://0.0.0.0/",
        "http://[::1]/",
        "http://[::]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[fe80::1]/",
        "http://[fd00::1]/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://0x7f.0x0.0x0.0x1/",
        "http://0177.0.0.1/",
        "http://017700000001/",
        "http://3232235777/",
    ] {
        let (s, v) = post(&hub, "/v1/subscriptions", json!({"webhook": {"url": url}})).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (400, Some("url_not_allowed")),
            "{url}: {v}"
        );
    }
    // Checked again at connect time (DNS rebinding): the guarded client never reaches a
    // receiver on loopback through a name.
    let (rx, url) = Receiver::start(vec![], Answer::Status(200)).await;
    let port = reqwest::Url::parse(&url).unwrap().port().unwrap();
    let client = crier_server::webhooks::client(false, Duration::from_secs(1));
    let res = client
        .post(format!("http://localhost:{port}/hook"))
        .send()
        .await;
    assert!(
        res.is_err(),
        "the guarded resolver refuses loopback at connect time"
    );
    assert!(rx.got().is_empty());
    let open = crier_server::webhooks::client(true, Duration::from_secs(1));
    assert_eq!(
        open.post(format!("http://localhost:{port}/hook"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test]
async fn a_subscription_behind_retention_records_it_and_continues() {
    let (rx, url) = Receiver::start(vec![], Answer::Status(200)).await;
    let hub = Hub::start_with(|s| {
        s.webhooks.allow_private = true;
        retention(s, 5, Duration::from_millis(50));
    })
    .await;
    let (_, sub) = post(
        &hub,
        "/v1/subscriptions",
        json!({"webhook": {"url": url}, "after": 0, "paused": true}),
    )
    .await;
    let id = sub["id"].as_str().unwrap().to_string();
    hub.publish(Value::from(
        (0..20)
            .map(|i| json!({"type": "r", "id": format!("r{i}")}))
            .collect::<Vec<_>>(),
    ))
    .await;
    pruned_to(&hub, 5).await;
    let res = hub
        .http
        .patch(hub.url(&format!("/v1/subscriptions/{id}")))
        .json(&json!({"paused": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 200);
    let got = rx.wait_for(5, Duration::from_secs(5)).await;
    assert_eq!(ids(&got), vec!["r15", "r16", "r17", "r18", "r19"]);
    let v = sub_status(&hub, &id, "active").await;
    assert!(
        v["note"].as_str().unwrap_or("").contains("retention"),
        "the skip is recorded: {v}"
    );
}

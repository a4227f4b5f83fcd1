//! Credentials, roles and tenant isolation (§6, §9) over real sockets.

#[allow(dead_code)] // each test binary uses a subset of the helpers
mod common;

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Hub;
use crier_server::auth::{load_keys, AuthSettings};
use futures_util::{SinkExt, StreamExt};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const SECRET: &str = "test-secret-of-at-least-32-characters!!";

fn keys_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys"))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn claims(sub: &str, tenant: &str, role: &str) -> Value {
    json!({"sub": sub, "tenant": tenant, "role": role, "exp": now() + 600})
}

fn hs(c: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        c,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn sign(alg: Algorithm, kid: Option<&str>, c: &Value) -> String {
    let pem = std::fs::read(keys_dir().join(match alg {
        Algorithm::RS256 => "rsa.key",
        Algorithm::ES256 => "ec.key",
        _ => "ed.key",
    }))
    .unwrap();
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&pem),
        _ => EncodingKey::from_ed_pem(&pem),
    }
    .unwrap();
    let mut h = Header::new(alg);
    h.kid = kid.map(String::from);
    jsonwebtoken::encode(&h, c, &key).unwrap()
}

fn with_auth(s: &mut crier_server::Settings, secret: &str, pubkey: &str, jwks: &str, alg: &str) {
    s.auth = AuthSettings {
        jwt: load_keys(secret, pubkey, jwks, alg).expect("keys"),
        enabled: true,
        single_tenant: false,
    };
}

async fn hs_hub() -> Hub {
    Hub::start_with(|s| with_auth(s, SECRET, "", "", "HS256")).await
}

async fn req(
    hub: &Hub,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut r = hub.http.request(method.parse().unwrap(), hub.url(path));
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    if let Some(b) = body {
        r = r.json(&b);
    }
    let res = r.send().await.unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let v = if ct.starts_with("text/event-stream") {
        Value::Null
    } else {
        res.json().await.unwrap_or(Value::Null)
    };
    (status, v, headers)
}

async fn ws_connect(hub: &Hub, token: &str) -> Result<common::Ws, u16> {
    match tokio_tungstenite::connect_async(format!("ws://{}/v1/ws?token={token}", hub.addr)).await {
        Ok((stream, _)) => {
            let mut ws = common::Ws { stream };
            assert_eq!(ws.recv().await["op"], "welcome");
            Ok(ws)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(e) => panic!("ws connect: {e}"),
    }
}

#[tokio::test]
async fn bad_credentials_are_401_with_a_message() {
    let hub = hs_hub().await;
    let keys = crier_store::SqliteKeys::open(&hub.dir.join("crier.db")).unwrap();
    let (revoked, revoked_secret) = keys
        .create("acme", crier_core::Role::Publisher, "old")
        .unwrap();
    keys.revoke(&revoked.id).unwrap();
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let body = b64(claims("eve", "acme", "admin"));
    let mut cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("garbage", Some("not-a-token".into())),
        ("garbage with dots", Some("a.b.c".into())),
        (
            "wrong signature",
            Some({
                let good = hs(&claims("a", "acme", "admin"));
                let (head, _) = good.rsplit_once('.').unwrap();
                format!("{head}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
            }),
        ),
        (
            "other secret",
            Some(
                jsonwebtoken::encode(
                    &Header::new(Algorithm::HS256),
                    &claims("a", "acme", "admin"),
                    &EncodingKey::from_secret(b"another-secret-another-secret-1234"),
                )
                .unwrap(),
            ),
        ),
        (
            "expired",
            Some(hs(
                &json!({"sub": "a", "tenant": "acme", "exp": now() - 120}),
            )),
        ),
        (
            "nbf in the future",
            Some(hs(
                &json!({"sub": "a", "tenant": "acme", "exp": now() + 600, "nbf": now() + 300}),
            )),
        ),
        (
            "missing exp",
            Some(hs(&json!({"sub": "a", "tenant": "acme"}))),
        ),
        (
            "missing sub",
            Some(hs(&json!({"tenant": "acme", "exp": now() + 600}))),
        ),
        (
            "missing tenant",
            Some(hs(&json!({"sub": "a", "exp": now() + 600}))),
        ),
        (
            "unknown role",
            Some(hs(
                &json!({"sub": "a", "tenant": "acme", "role": "root", "exp": now() + 600}),
            )),
        ),
        (
            "RS256 token on an HS256 hub",
            Some(sign(Algorithm::RS256, None, &claims("a", "acme", "admin"))),
        ),
        ("revoked API key", Some(revoked_secret)),
        (
            "unknown API key",
            Some("crier_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".into()),
        ),
    ];
    for alg in ["none", "NONE", "None", "nOnE"] {
        let head = b64(json!({"alg": alg, "typ": "JWT"}));
        cases.push(("alg none", Some(format!("{head}.{body}."))));
    }
    for (name, token) in cases {
        for path in ["/v1/events", "/v1/stream"] {
            let (s, v, _) = req(&hub, "GET", path, token.as_deref(), None).await;
            assert_eq!(s, 401, "{name} on {path}: {v}");
            assert_eq!(v["error"]["code"], "unauthorized", "{name}");
            assert!(
                v["error"]["message"].as_str().is_some_and(|m| m.len() > 8),
                "{name}: {v}"
            );
        }
        if let Some(t) = &token {
            assert!(
                matches!(ws_connect(&hub, t).await, Err(401)),
                "{name} on /v1/ws"
            );
        }
    }
    let (s, v, _) = req(&hub, "GET", "/v1/events", None, None).await;
    assert_eq!(s, 401);
    assert!(v["error"]["message"].as_str().unwrap().contains("Bearer"));
    let (s, _, _) = req(
        &hub,
        "GET",
        "/v1/events",
        Some(&hs(&claims("a", "acme", "admin"))),
        None,
    )
    .await;
    assert_eq!(s, 200, "a good token passes");
}

#[tokio::test]
async fn public_key_algorithms_and_jwks() {
    let c = claims("ann", "acme", "publisher");
    for (alg, name, file) in [
        (Algorithm::RS256, "RS256", "rsa.pub"),
        (Algorithm::ES256, "ES256", "ec.pub"),
        (Algorithm::EdDSA, "EdDSA", "ed.pub"),
    ] {
        let path = keys_dir().join(file).display().to_string();
        let hub = Hub::start_with(|s| with_auth(s, "", &path, "", name)).await;
        let (s, v, _) = req(
            &hub,
            "POST",
            "/v1/events",
            Some(&sign(alg, None, &c)),
            Some(json!({"type": "a"})),
        )
        .await;
        assert_eq!(s, 201, "{name}: {v}");
        let (s, _, _) = req(&hub, "GET", "/v1/events", Some(&hs(&c)), None).await;
        assert_eq!(s, 401, "{name} hub refuses HS256");
        if alg == Algorithm::RS256 {
            // The classic confusion: an HS256 token keyed with the RSA public key's PEM.
            let pem = std::fs::read(keys_dir().join("rsa.pub")).unwrap();
            let forged = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &c,
                &EncodingKey::from_secret(&pem),
            )
            .unwrap();
            let (s, v, _) = req(&hub, "GET", "/v1/events", Some(&forged), None).await;
            assert_eq!(s, 401, "algorithm confusion refused: {v}");
        }
    }
    // JWKS: keys chosen by kid, algorithm pinned by the key.
    let dir = tempfile::tempdir().unwrap();
    let mut set = Vec::new();
    for (kid, alg, file) in [
        ("r1", Algorithm::RS256, "rsa.key"),
        ("e1", Algorithm::ES256, "ec.key"),
    ] {
        let pem = std::fs::read(keys_dir().join(file)).unwrap();
        let ek = if alg == Algorithm::RS256 {
            EncodingKey::from_rsa_pem(&pem)
        } else {
            EncodingKey::from_ec_pem(&pem)
        }
        .unwrap();
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&ek, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        set.push(serde_json::to_value(jwk).unwrap());
    }
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": set}).to_string()).unwrap();
    let jwks = jwks.display().to_string();
    let hub = Hub::start_with(|s| with_auth(s, "", "", &jwks, "RS256")).await;
    for (token, want) in [
        (sign(Algorithm::RS256, Some("r1"), &c), 200),
        (sign(Algorithm::ES256, Some("e1"), &c), 200),
        (sign(Algorithm::ES256, Some("r1"), &c), 401),
        (sign(Algorithm::RS256, Some("e1"), &c), 401),
        (sign(Algorithm::RS256, Some("zz"), &c), 401),
        (sign(Algorithm::RS256, None, &c), 401),
    ] {
        let (s, v, _) = req(&hub, "GET", "/v1/events", Some(&token), None).await;
        assert_eq!(s, want, "{v}");
    }
    let (_, v, _) = req(
        &hub,
        "GET",
        "/v1/events",
        Some(&sign(Algorithm::RS256, Some("zz"), &c)),
        None,
    )
    .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("kid"),
        "{v}"
    );
}

#[tokio::test]
async fn role_table() {
    let hub = hs_hub().await;
    let admin = hs(&claims("root", "acme", "admin"));
    let (_, v, _) = req(
        &hub,
        "POST",
        "/v1/events",
        Some(&admin),
        Some(json!({"type": "seed", "id": "e1"})),
    )
    .await;
    assert_eq!(v["events"][0]["seq"], 1);
    let roles = ["subscriber", "publisher", "admin"];
    // (method, path, body, expected status for subscriber, publisher, admin)
    let table: Vec<(&str, &str, Option<Value>, [u16; 3])> = vec![
        (
            "POST",
            "/v1/events",
            Some(json!({"type": "x"})),
            [403, 201, 201],
        ),
        ("GET", "/v1/events", None, [200, 200, 200]),
        ("GET", "/v1/events/e1", None, [200, 200, 200]),
        ("GET", "/v1/stream", None, [200, 200, 200]),
        ("GET", "/v1/events?tenant=other", None, [403, 403, 200]),
        ("GET", "/v1/events?tenant=*", None, [403, 403, 200]),
        ("GET", "/metrics", None, [403, 403, 200]),
    ];
    for (method, path, body, want) in table {
        for (i, role) in roles.iter().enumerate() {
            let (s, v, _) = req(
                &hub,
                method,
                path,
                Some(&hs(&claims("u", "acme", role))),
                body.clone(),
            )
            .await;
            assert_eq!(s, want[i], "{role} {method} {path}: {v}");
        }
    }
    for path in ["/healthz", "/readyz", "/openapi.json"] {
        assert_eq!(
            req(&hub, "GET", path, None, None).await.0,
            200,
            "{path} needs no credential"
        );
    }
    // WebSocket: every role connects and subscribes; only publishers publish.
    for (i, role) in roles.iter().enumerate() {
        let mut ws = ws_connect(&hub, &hs(&claims("u", "acme", role)))
            .await
            .unwrap();
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
    let (s, v, _) = req(
        &hub,
        "POST",
        "/v1/events",
        Some(&p),
        Some(json!({"type": "a", "tenant": "other"})),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let (s, v, _) = req(
        &hub,
        "POST",
        "/v1/events",
        Some(&p),
        Some(json!({"type": "a", "actor": "someone"})),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    let (s, _, _) = req(
        &hub,
        "POST",
        "/v1/events",
        Some(&p),
        Some(json!({"type": "a", "id": "mine"})),
    )
    .await;
    assert_eq!(s, 201);
    let (_, e, _) = req(&hub, "GET", "/v1/events/mine", Some(&p), None).await;
    assert_eq!(
        (e["tenant"].as_str(), e["actor"].as_str()),
        (Some("acme"), Some("pub"))
    );
    let admin = hs(&claims("root", "ops", "admin"));
    let (s, _, _) = req(
        &hub,
        "POST",
        "/v1/events",
        Some(&admin),
        Some(json!({"type": "a", "tenant": "beta", "actor": "robot", "id": "b1"})),
    )
    .await;
    assert_eq!(s, 201, "an admin may set tenant and actor");
    let (s, _, _) = req(&hub, "GET", "/v1/events/b1", Some(&p), None).await;
    assert_eq!(s, 404, "another tenant's event is not found, not forbidden");
    let (s, e, _) = req(&hub, "GET", "/v1/events/b1?tenant=beta", Some(&admin), None).await;
    assert_eq!((s, e["actor"].as_str()), (200, Some("robot")));
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
    let (_, v, _) = req(&hub, "GET", "/v1/events?type=*", Some(&narrow), None).await;
    let types: Vec<&str> = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, vec!["site.created", "site.deleted"]);
    let (_, v, _) = req(&hub, "GET", "/v1/events?type=user.*", Some(&narrow), None).await;
    assert_eq!(v["events"], json!([]));
    assert_eq!(
        req(&hub, "GET", "/v1/events/u1", Some(&narrow), None)
            .await
            .0,
        404
    );
    let (s, _, _) = req(
        &hub,
        "POST",
        "/v1/events",
        Some(&narrow),
        Some(json!({"type": "user.deleted"})),
    )
    .await;
    assert_eq!(s, 403, "publish patterns are enforced");
    let (s, _, _) = req(
        &hub,
        "POST",
        "/v1/events",
        Some(&narrow),
        Some(json!({"type": "site.moved"})),
    )
    .await;
    assert_eq!(s, 201);
    let mut ws = ws_connect(&hub, &narrow).await.unwrap();
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
async fn expiry_closes_websocket_and_ends_sse_refresh_keeps_it_open() {
    let hub = hs_hub().await;
    let short = |tenant: &str| hs(&json!({"sub": "s", "tenant": tenant, "exp": now() + 2}));
    let mut ws = ws_connect(&hub, &short("acme")).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match ws.stream.next().await {
                Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                Some(Ok(_)) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("closed at expiry");
    assert_eq!(closed, 4001);

    let mut kept = ws_connect(&hub, &short("acme")).await.unwrap();
    kept.send(json!({"op": "auth", "ref": "a1", "token": hs(&json!({"sub": "s", "tenant": "acme", "exp": now() + 600}))})).await;
    let m = kept.recv().await;
    assert_eq!(
        (m["op"].as_str(), m["ref"].as_str()),
        (Some("authed"), Some("a1")),
        "{m}"
    );
    assert!(m["exp"].as_u64().unwrap() > now() + 500);
    kept.send(json!({"op": "auth", "ref": "a2", "token": hs(&json!({"sub": "s", "tenant": "other", "exp": now() + 600}))})).await;
    assert_eq!(kept.recv().await["code"], "tenant_mismatch");
    kept.send(json!({"op": "auth", "ref": "a3", "token": "garbage"}))
        .await;
    assert_eq!(kept.recv().await["code"], "unauthorized");
    tokio::time::sleep(Duration::from_secs(3)).await;
    kept.send(json!({"op": "ping", "ref": "still"})).await;
    assert_eq!(
        kept.recv().await["op"],
        "pong",
        "the refreshed connection outlived the first token"
    );

    let mut sse = hub
        .http
        .get(hub.url("/v1/stream"))
        .bearer_auth(short("acme"))
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let ended = tokio::time::timeout(Duration::from_secs(6), async {
        while let Some(chunk) = sse.next().await {
            if chunk.is_err() {
                break;
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the SSE stream ends at the token's expiry");
}

#[tokio::test]
async fn revoked_key_stops_open_streams_within_a_heartbeat() {
    let hub = Hub::start_with(|s| {
        with_auth(s, SECRET, "", "", "HS256");
        s.heartbeat = Duration::from_millis(500);
    })
    .await;
    let keys = crier_store::SqliteKeys::open(&hub.dir.join("crier.db")).unwrap();
    let (key, secret) = keys
        .create("acme", crier_core::Role::Subscriber, "reader")
        .unwrap();
    let mut ws = ws_connect(&hub, &secret).await.unwrap();
    let mut sse = hub
        .http
        .get(hub.url("/v1/stream"))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .bytes_stream();
    assert_eq!(
        req(&hub, "GET", "/v1/events", Some(&secret), None).await.0,
        200
    );
    keys.revoke(&key.id).unwrap();
    assert_eq!(
        req(&hub, "GET", "/v1/events", Some(&secret), None).await.0,
        401,
        "revocation is immediate"
    );
    let code = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match ws.stream.next().await {
                Some(Ok(Message::Close(Some(f)))) => return u16::from(f.code),
                Some(Ok(_)) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    })
    .await
    .expect("websocket closed within a heartbeat or two");
    assert_eq!(code, 4001);
    tokio::time::timeout(Duration::from_secs(3), async {
        while let Some(Ok(_)) = sse.next().await {}
    })
    .await
    .expect("SSE stream ended");
}

#[tokio::test]
async fn publish_rate_limit_and_recovery() {
    let hub = Hub::start_with(|s| {
        with_auth(s, SECRET, "", "", "HS256");
        s.limits.publish_rate_per_tenant = 5;
    })
    .await;
    let a = hs(&claims("p", "acme", "publisher"));
    let b = hs(&claims("p", "beta", "publisher"));
    let batch = |n: usize| Value::from(vec![json!({"type": "r"}); n]);
    assert_eq!(
        req(&hub, "POST", "/v1/events", Some(&a), Some(batch(5)))
            .await
            .0,
        201
    );
    let (s, v, h) = req(&hub, "POST", "/v1/events", Some(&a), Some(batch(1))).await;
    assert_eq!(s, 429, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited");
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry));
    assert_eq!(
        req(&hub, "POST", "/v1/events", Some(&b), Some(batch(1)))
            .await
            .0,
        201,
        "other tenants are not affected"
    );
    let (s, _, _) = req(&hub, "POST", "/v1/events", Some(&b), Some(batch(10))).await;
    assert_eq!(s, 429, "a batch beyond the rate is refused");
    let mut ws = ws_connect(&hub, &a).await.unwrap();
    ws.send(json!({"op": "publish", "ref": "w", "event": {"type": "r"}}))
        .await;
    assert_eq!(ws.recv().await["code"], "rate_limited");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        req(&hub, "POST", "/v1/events", Some(&a), Some(batch(3)))
            .await
            .0,
        201,
        "the bucket refills"
    );
    let admin = hs(&claims("root", "acme", "admin"));
    let (_, v, _) = req(&hub, "GET", "/v1/events?tenant=*", Some(&admin), None).await;
    assert_eq!(
        v["events"].as_array().unwrap().len(),
        5 + 1 + 3,
        "nothing refused was stored, nothing accepted was lost"
    );
}

#[tokio::test]
async fn connection_limit_per_tenant_and_recovery() {
    let hub = Hub::start_with(|s| {
        with_auth(s, SECRET, "", "", "HS256");
        s.limits.max_connections_per_tenant = 2;
    })
    .await;
    let a = hs(&claims("s", "acme", "subscriber"));
    let open = |t: String| {
        let hub = &hub;
        async move {
            hub.http
                .get(hub.url("/v1/stream"))
                .bearer_auth(t)
                .send()
                .await
                .unwrap()
        }
    };
    let first = open(a.clone()).await;
    assert_eq!(first.status(), 200);
    let ws = ws_connect(&hub, &a).await.unwrap();
    let third = open(a.clone()).await;
    assert_eq!(third.status(), 429);
    assert!(third.headers().contains_key("retry-after"));
    assert!(matches!(ws_connect(&hub, &a).await, Err(429)));
    assert_eq!(
        open(hs(&claims("s", "beta", "subscriber"))).await.status(),
        200,
        "other tenants are not affected"
    );
    drop(first);
    drop(ws);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = open(a.clone()).await;
        if r.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "slots were not released"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn allowed_origins_guard_websocket_upgrades() {
    let hub = Hub::start_with(|s| s.allowed_origins = vec!["https://app.example".into()]).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/v1/ws", hub.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            assert_eq!(res.status().as_u16(), 403)
        }
        other => panic!("foreign origin accepted: {:?}", other.map(|_| ())),
    }
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://{}/v1/ws", hub.addr),
    )
    .unwrap();
    req.headers_mut()
        .insert("origin", "https://app.example".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("allowed origin");
    ws.send(Message::Text(json!({"op": "ping"}).to_string().into()))
        .await
        .unwrap();
}

#[tokio::test]
async fn subscriptions_replays_and_stats_are_tenant_scoped() {
    let hub = Hub::start_with(|s| {
        with_auth(s, SECRET, "", "", "HS256");
        s.webhooks.allow_private = true;
    })
    .await;
    let a = hs(&claims("pa", "acme", "publisher"));
    let b = hs(&claims("pb", "beta", "publisher"));
    let sub_a = hs(&claims("sa", "acme", "subscriber"));
    req(
        &hub,
        "POST",
        "/v1/events",
        Some(&a),
        Some(json!([{"type": "a.one"}, {"type": "a.two"}])),
    )
    .await;
    req(
        &hub,
        "POST",
        "/v1/events",
        Some(&b),
        Some(json!({"type": "b.one"})),
    )
    .await;
    let (s, sub, _) = req(
        &hub,
        "POST",
        "/v1/subscriptions",
        Some(&a),
        Some(json!({"webhook": {"url": "http://127.0.0.1:9/"}, "paused": true})),
    )
    .await;
    assert_eq!(s, 201, "{sub}");
    let id = sub["id"].as_str().unwrap();
    assert_eq!(
        req(
            &hub,
            "POST",
            "/v1/subscriptions",
            Some(&sub_a),
            Some(json!({"webhook": {"url": "http://127.0.0.1:9/"}}))
        )
        .await
        .0,
        403,
        "subscribers do not manage subscriptions"
    );
    for (method, path) in [
        ("GET", format!("/v1/subscriptions/{id}")),
        ("PATCH", format!("/v1/subscriptions/{id}")),
        ("GET", format!("/v1/subscriptions/{id}/deliveries")),
        ("DELETE", format!("/v1/subscriptions/{id}")),
    ] {
        let body = (method == "PATCH").then(|| json!({"paused": false}));
        assert_eq!(
            req(&hub, method, &path, Some(&b), body).await.0,
            404,
            "{method} {path} from another tenant"
        );
    }
    let (_, list, _) = req(&hub, "GET", "/v1/subscriptions", Some(&b), None).await;
    assert_eq!(list["subscriptions"], json!([]));
    let (s, rp, _) = req(
        &hub,
        "POST",
        "/v1/replays",
        Some(&sub_a),
        Some(json!({"since": "2000-01-01T00:00:00Z", "speed": "max"})),
    )
    .await;
    assert_eq!(
        (s, rp["total"].as_u64()),
        (201, Some(2)),
        "a replay counts only its tenant's events: {rp}"
    );
    let rid = rp["id"].as_str().unwrap();
    assert_eq!(
        req(&hub, "GET", &format!("/v1/replays/{rid}"), Some(&b), None)
            .await
            .0,
        404
    );
    assert_eq!(
        req(
            &hub,
            "POST",
            &format!("/v1/replays/{rid}/stop"),
            Some(&b),
            None
        )
        .await
        .0,
        404
    );
    let (_, st, _) = req(&hub, "GET", "/v1/stats", Some(&b), None).await;
    assert_eq!(
        (
            st["events"]["total"].as_u64(),
            st["subscriptions"]["paused"].as_u64()
        ),
        (Some(1), Some(0)),
        "{st}"
    );
    assert_eq!(st["events"]["by_type"], json!({"b.one": 1}));
    assert_eq!(
        req(&hub, "GET", "/v1/stats?tenant=acme", Some(&b), None)
            .await
            .0,
        403
    );
    let (_, all, _) = req(
        &hub,
        "GET",
        "/v1/stats?tenant=*",
        Some(&hs(&claims("root", "ops", "admin"))),
        None,
    )
    .await;
    assert_eq!(all["events"]["total"], 3);
}

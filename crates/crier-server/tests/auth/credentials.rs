//! What a hub refuses as a credential (401 with a message, on HTTP, SSE and WebSocket), and
//! the public-key algorithms and JWKS it accepts.

use crier_testkit::Hub;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::{claims, hs, hs_hub, keys_dir, req, sign, ws_connect};

/// Credentials a hub over HS256 must refuse, by name.
fn refused(revoked_secret: String) -> Vec<(&'static str, Option<String>)> {
    let now = crier_testkit::auth::now();
    let b64 = |v: Value| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let good = hs(&claims("a", "acme", "admin"));
    let (head, _) = good.rsplit_once('.').expect("a JWT");
    let other_secret = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("a", "acme", "admin"),
        &EncodingKey::from_secret(b"another-secret-another-secret-1234"),
    )
    .expect("sign");
    let mut cases: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("garbage", Some("not-a-token".into())),
        ("garbage with dots", Some("a.b.c".into())),
        (
            "wrong signature",
            Some(format!(
                "{head}.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
            )),
        ),
        ("other secret", Some(other_secret)),
        (
            "expired",
            Some(hs(&json!({"sub": "a", "tenant": "acme", "exp": now - 120}))),
        ),
        (
            "nbf in the future",
            Some(hs(
                &json!({"sub": "a", "tenant": "acme", "exp": now + 600, "nbf": now + 300}),
            )),
        ),
        (
            "missing exp",
            Some(hs(&json!({"sub": "a", "tenant": "acme"}))),
        ),
        (
            "missing sub",
            Some(hs(&json!({"tenant": "acme", "exp": now + 600}))),
        ),
        (
            "missing tenant",
            Some(hs(&json!({"sub": "a", "exp": now + 600}))),
        ),
        (
            "unknown role",
            Some(hs(
                &json!({"sub": "a", "tenant": "acme", "role": "root", "exp": now + 600}),
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
    let body = b64(claims("eve", "acme", "admin"));
    for alg in ["none", "NONE", "None", "nOnE"] {
        let head = b64(json!({"alg": alg, "typ": "JWT"}));
        cases.push(("alg none", Some(format!("{head}.{body}."))));
    }
    cases
}

#[tokio::test]
async fn bad_credentials_are_401_with_a_message() {
    let hub = hs_hub().await;
    let keys = crier_store::SqliteKeys::open(&hub.dir.join("crier.db")).expect("keys");
    let (revoked, revoked_secret) = keys
        .create("acme", crier_core::Role::Publisher, "old")
        .expect("create key");
    keys.revoke(&revoked.id).expect("revoke");
    for (name, token) in refused(revoked_secret) {
        for path in ["/v1/events", "/v1/stream"] {
            let r = req(&hub, "GET", path, token.as_deref(), None).await;
            assert_eq!(r.status, 401, "{name} on {path}: {}", r.body);
            assert_eq!(r.code(), "unauthorized", "{name}");
            assert!(
                r.body["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.len() > 8),
                "{name}: {}",
                r.body
            );
        }
        if let Some(t) = &token {
            assert!(
                matches!(ws_connect(&hub, t).await, Err(401)),
                "{name} on /v1/ws"
            );
        }
    }
    let r = req(&hub, "GET", "/v1/events", None, None).await;
    assert_eq!(r.status, 401);
    assert!(r.body["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("Bearer")));
    let good = hs(&claims("a", "acme", "admin"));
    let r = req(&hub, "GET", "/v1/events", Some(&good), None).await;
    assert_eq!(r.status, 200, "a good token passes");
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
        let hub = Hub::start_with(|s| crier_testkit::auth::with_keys(s, "", &path, "", name)).await;
        let r = req(
            &hub,
            "POST",
            "/v1/events",
            Some(&sign(alg, None, &c)),
            Some(json!({"type": "a"})),
        )
        .await;
        assert_eq!(r.status, 201, "{name}: {}", r.body);
        let r = req(&hub, "GET", "/v1/events", Some(&hs(&c)), None).await;
        assert_eq!(r.status, 401, "{name} hub refuses HS256");
        if alg == Algorithm::RS256 {
            // The classic confusion: an HS256 token keyed with the RSA public key's PEM.
            let pem = std::fs::read(keys_dir().join("rsa.pub")).expect("rsa.pub");
            let forged = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &c,
                &EncodingKey::from_secret(&pem),
            )
            .expect("sign");
            let r = req(&hub, "GET", "/v1/events", Some(&forged), None).await;
            assert_eq!(r.status, 401, "algorithm confusion refused: {}", r.body);
        }
    }
    // JWKS: keys chosen by kid, algorithm pinned by the key.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut set = Vec::new();
    for (kid, alg, file) in [
        ("r1", Algorithm::RS256, "rsa.key"),
        ("e1", Algorithm::ES256, "ec.key"),
    ] {
        let pem = std::fs::read(keys_dir().join(file)).expect("key file");
        let ek = if alg == Algorithm::RS256 {
            EncodingKey::from_rsa_pem(&pem)
        } else {
            EncodingKey::from_ec_pem(&pem)
        }
        .expect("key");
        let mut jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&ek, alg).expect("jwk");
        jwk.common.key_id = Some(kid.into());
        set.push(serde_json::to_value(jwk).expect("jwk json"));
    }
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": set}).to_string()).expect("write jwks");
    let jwks = jwks.display().to_string();
    let hub = Hub::start_with(|s| crier_testkit::auth::with_keys(s, "", "", &jwks, "RS256")).await;
    let zz = sign(Algorithm::RS256, Some("zz"), &c);
    for (token, want) in [
        (sign(Algorithm::RS256, Some("r1"), &c), 200),
        (sign(Algorithm::ES256, Some("e1"), &c), 200),
        (sign(Algorithm::ES256, Some("r1"), &c), 401),
        (sign(Algorithm::RS256, Some("e1"), &c), 401),
        (zz.clone(), 401),
        (sign(Algorithm::RS256, None, &c), 401),
    ] {
        let r = req(&hub, "GET", "/v1/events", Some(&token), None).await;
        assert_eq!(r.status, want, "{}", r.body);
    }
    let r = req(&hub, "GET", "/v1/events", Some(&zz), None).await;
    assert!(
        r.body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("kid")),
        "{}",
        r.body
    );
}

//! Signed credentials for tests: HS256 tokens over a test's own secret, and the settings
//! that make a hub check them.

use std::time::{SystemTime, UNIX_EPOCH};

use crier_server::auth::{load_keys, AuthSettings};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// Seconds since the epoch.
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Claims of `sub` in `tenant` with `role`, valid for ten minutes.
pub fn claims(sub: &str, tenant: &str, role: &str) -> Value {
    json!({"sub": sub, "tenant": tenant, "role": role, "exp": now() + 600})
}

/// Signs `claims` with `header` over the HMAC `secret`.
pub fn sign(secret: &str, header: &Header, claims: &Value) -> String {
    jsonwebtoken::encode(header, claims, &EncodingKey::from_secret(secret.as_bytes()))
        .expect("sign")
}

/// Signs `claims` with HS256 over `secret`.
pub fn hs256(secret: &str, claims: &Value) -> String {
    sign(secret, &Header::new(Algorithm::HS256), claims)
}

/// An HS256 token of `sub` in `tenant` with `role` and, when given, `subscribe` patterns.
pub fn token(
    secret: &str,
    sub: &str,
    tenant: &str,
    role: &str,
    subscribe: Option<&[&str]>,
) -> String {
    let mut c = claims(sub, tenant, role);
    if let Some(s) = subscribe {
        c["subscribe"] = json!(s);
    }
    hs256(secret, &c)
}

/// Makes a hub require credentials signed with HS256 over `secret`.
pub fn with_hs256(s: &mut crier_server::Settings, secret: &str) {
    with_keys(s, secret, "", "", "HS256");
}

/// Makes a hub require credentials checked with the given keys.
pub fn with_keys(
    s: &mut crier_server::Settings,
    secret: &str,
    pubkey: &str,
    jwks: &str,
    alg: &str,
) {
    s.auth = AuthSettings {
        jwt: load_keys(secret, pubkey, jwks, alg).expect("keys"),
        enabled: true,
        single_tenant: false,
    };
}

//! How the hub authenticates, as configured: the JWT verification keys (one key with its
//! algorithm, or a JWKS by `kid`) loaded and checked at start. Verifying a request's
//! credential with them is [`crate::auth`]'s work; this file only reads configuration, so the
//! configuration depends on nothing of the request path.

use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey};

/// The JWT verification key(s).
#[derive(Clone)]
pub enum JwtKeys {
    /// One key and the one algorithm it accepts.
    Single {
        /// The key.
        key: DecodingKey,
        /// Its algorithm.
        alg: Algorithm,
    },
    /// Keys by `kid`, each with its own algorithm.
    Jwks(HashMap<String, (DecodingKey, Algorithm)>),
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JwtKeys::Single { alg, .. } => write!(f, "JwtKeys::Single({alg:?})"),
            JwtKeys::Jwks(m) => write!(f, "JwtKeys::Jwks({} keys)", m.len()),
        }
    }
}

/// How the hub authenticates.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// JWT keys, if JWTs are accepted.
    pub jwt: Option<JwtKeys>,
    /// Whether credentials are required at all (false: the open loopback mode).
    pub enabled: bool,
    /// Tokens need no `tenant` claim; every principal is of tenant `default`.
    pub single_tenant: bool,
}

/// Loads the configured keys. `Err` carries the configuration key at fault and why.
pub fn load_keys(
    secret: &str,
    public_key: &str,
    jwks_file: &str,
    algorithm: &str,
) -> Result<Option<JwtKeys>, (&'static str, String)> {
    let set = [
        !secret.is_empty(),
        !public_key.is_empty(),
        !jwks_file.is_empty(),
    ];
    if set.iter().filter(|x| **x).count() > 1 {
        return Err((
            "auth",
            "set only one of jwt_secret, jwt_public_key and jwks_file".into(),
        ));
    }
    if !jwks_file.is_empty() {
        let text = std::fs::read_to_string(jwks_file)
            .map_err(|e| ("auth.jwks_file", format!("cannot read {jwks_file:?}: {e}")))?;
        let set: jsonwebtoken::jwk::JwkSet = serde_json::from_str(&text)
            .map_err(|e| ("auth.jwks_file", format!("not a JWKS document: {e}")))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let kid = jwk
                .common
                .key_id
                .clone()
                .ok_or(("auth.jwks_file", "every key needs a `kid`".to_string()))?;
            let alg = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => Algorithm::EdDSA,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_) => Algorithm::HS256,
                _ => {
                    return Err((
                        "auth.jwks_file",
                        format!("key {kid:?} has an unsupported key type"),
                    ))
                }
            };
            let alg = match jwk.common.key_algorithm {
                Some(ka) => ka.to_string().parse::<Algorithm>().map_err(|_| {
                    (
                        "auth.jwks_file",
                        format!("key {kid:?} has an unsupported `alg`"),
                    )
                })?,
                None => alg,
            };
            let key = DecodingKey::from_jwk(jwk)
                .map_err(|e| ("auth.jwks_file", format!("key {kid:?} is unusable: {e}")))?;
            keys.insert(kid, (key, alg));
        }
        if keys.is_empty() {
            return Err(("auth.jwks_file", "the JWKS holds no keys".into()));
        }
        return Ok(Some(JwtKeys::Jwks(keys)));
    }
    let alg = match algorithm {
        "HS256" => Algorithm::HS256,
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        other => {
            return Err((
                "auth.algorithm",
                format!("{other:?} is not one of HS256, RS256, ES256, EdDSA"),
            ))
        }
    };
    if !secret.is_empty() {
        if alg != Algorithm::HS256 {
            return Err((
                "auth.algorithm",
                "a jwt_secret is for HS256; use jwt_public_key for other algorithms".into(),
            ));
        }
        if secret.len() < 32 {
            return Err(("auth.jwt_secret", "must be at least 32 characters".into()));
        }
        return Ok(Some(JwtKeys::Single {
            key: DecodingKey::from_secret(secret.as_bytes()),
            alg,
        }));
    }
    if !public_key.is_empty() {
        let pem = std::fs::read(public_key).map_err(|e| {
            (
                "auth.jwt_public_key",
                format!("cannot read {public_key:?}: {e}"),
            )
        })?;
        let key = match alg {
            Algorithm::RS256 => DecodingKey::from_rsa_pem(&pem),
            Algorithm::ES256 => DecodingKey::from_ec_pem(&pem),
            Algorithm::EdDSA => DecodingKey::from_ed_pem(&pem),
            _ => {
                return Err((
                    "auth.algorithm",
                    "a public key needs RS256, ES256 or EdDSA".into(),
                ))
            }
        }
        .map_err(|e| {
            (
                "auth.jwt_public_key",
                format!("not a {alg:?} public key in PEM: {e}"),
            )
        })?;
        return Ok(Some(JwtKeys::Single { key, alg }));
    }
    Ok(None)
}

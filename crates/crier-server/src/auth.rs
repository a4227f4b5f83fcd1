//! Credentials (§6): JWTs and API keys, turned into a [`Principal`] by the [`Auth`]
//! extractor, so every path — and every path added later — authenticates the same way.
//!
//! * A token comes from `Authorization: Bearer` or, for `EventSource` and browser
//!   WebSockets, `?token=` (query strings never reach the logs; see [`redact_query`]).
//! * JWTs are verified with the one configured key: an HS256 secret, a PEM public key
//!   (RS256, ES256 or EdDSA) or a JWKS file whose key is chosen by `kid` and whose algorithm
//!   is pinned by the key, never by the token. `sub` and `exp` are required, `nbf` honoured,
//!   `tenant` required unless the hub is single-tenant.
//! * API keys (`crier_…`) are looked up by SHA-256 in the store on every request, so a
//!   revoked key stops working at once; open connections re-check it (see
//!   [`crate::lifetime`]).
//! * Without any credential configured the hub only listens on loopback and every request
//!   is `admin` of tenant `default`.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use crier_core::keys::KeyStore;
use crier_core::{Pattern, Principal, Role, Scope};
use jsonwebtoken::Validation;
use serde::Deserialize;

use crate::error::ApiError;
use crate::state::AppState;

pub use crate::config::credentials::{load_keys, AuthSettings, JwtKeys};

#[derive(Deserialize)]
struct Claims {
    sub: Option<String>,
    exp: Option<u64>,
    tenant: Option<String>,
    role: Option<String>,
    subscribe: Option<Vec<String>>,
    publish: Option<Vec<String>>,
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
}

fn patterns(claim: &str, list: Option<Vec<String>>) -> Result<Option<Vec<Pattern>>, ApiError> {
    list.map(|l| {
        l.iter()
            .map(|p| {
                Pattern::new(p).map_err(|_| {
                    unauthorized(format!(
                        "the `{claim}` claim holds an invalid pattern {p:?}"
                    ))
                })
            })
            .collect()
    })
    .transpose()
}

/// §12.11: the hub understands no JWT extensions, so a header naming any in `crit` (RFC 7515
/// §4.1.11) is refused, and so is a header that repeats a key (which `alg` would hold?).
/// A header that is no base64 JSON at all is left to the decoder's own error.
fn check_jose_header(token: &str) -> Result<(), ApiError> {
    use base64::Engine;
    let head = token.split('.').next().unwrap_or("");
    let Ok(bytes) =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(head.trim_end_matches('='))
    else {
        return Ok(());
    };
    match crier_core::strict_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(m)) if m.contains_key("crit") => Err(unauthorized(
            "the token's header carries `crit`; this hub understands no JWT extensions",
        )),
        Ok(_) => Ok(()),
        Err(e) if e.is_data() => Err(unauthorized(
            "the token's header repeats a key; it is refused as ambiguous",
        )),
        Err(_) => Ok(()),
    }
}

impl AuthSettings {
    /// Verifies a JWT into a principal.
    pub fn verify_jwt(&self, token: &str) -> Result<Principal, ApiError> {
        let Some(keys) = &self.jwt else {
            return Err(unauthorized("this hub accepts API keys only, not JWTs"));
        };
        check_jose_header(token)?;
        let header = jsonwebtoken::decode_header(token).map_err(|e| match e.kind() {
            // A well-formed header whose `alg` is no algorithm jsonwebtoken knows: `none`
            // (an unsigned token) or something made up.
            jsonwebtoken::errors::ErrorKind::Json(j) if j.is_data() => unauthorized(
                "the token's `alg` is none or unknown; unsigned tokens are never accepted",
            ),
            _ => unauthorized("the token is malformed: it is no JWT"),
        })?;
        let (key, alg) = match keys {
            JwtKeys::Single { key, alg } => (key, *alg),
            JwtKeys::Jwks(map) => {
                let kid = header
                    .kid
                    .as_deref()
                    .ok_or_else(|| unauthorized("the token has no `kid` to choose a key by"))?;
                let (k, a) = map
                    .get(kid)
                    .ok_or_else(|| unauthorized(format!("no key with kid {kid:?}")))?;
                (k, *a)
            }
        };
        if header.alg != alg {
            return Err(unauthorized(format!(
                "the token is signed with {:?}; this hub accepts {alg:?} only",
                header.alg
            )));
        }
        let mut v = Validation::new(alg);
        v.leeway = 0;
        v.validate_nbf = true;
        v.validate_aud = false;
        v.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<Claims>(token, key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            unauthorized(match e.kind() {
                K::ExpiredSignature => "the token has expired".to_string(),
                K::ImmatureSignature => {
                    "the token is not valid yet (nbf is in the future)".to_string()
                }
                K::InvalidSignature => "the token's signature does not verify".to_string(),
                K::InvalidAlgorithm => format!("this hub accepts {alg:?} tokens only"),
                K::MissingRequiredClaim(c) => format!("the token lacks the `{c}` claim"),
                _ => "the token is malformed".to_string(),
            })
        })?;
        let c = data.claims;
        let sub = c
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| unauthorized("the token lacks the `sub` claim"))?;
        let tenant = if self.single_tenant {
            "default".to_string()
        } else {
            let t = c
                .tenant
                .ok_or_else(|| unauthorized("the token lacks the `tenant` claim"))?;
            crier_core::event::check_tenant(&t)
                .map_err(|e| unauthorized(format!("bad `tenant` claim: {}", e.message)))?;
            t
        };
        let role = match c.role.as_deref() {
            None => Role::Subscriber,
            Some(r) => Role::parse(r).ok_or_else(|| unauthorized(format!("unknown role {r:?}")))?,
        };
        Ok(Principal {
            tenant,
            role,
            subject: sub,
            subscribe: patterns("subscribe", c.subscribe)?,
            publish: patterns("publish", c.publish)?,
            expires_at: c.exp,
            key_hash: None,
        })
    }

    /// Authenticates a presented token (JWT or API key).
    pub async fn authenticate(
        &self,
        keys: &dyn KeyStore,
        token: &str,
    ) -> Result<Principal, ApiError> {
        if token.starts_with(crier_store::keys::KEY_PREFIX) {
            let hash = crier_store::keys::hash_secret(token);
            let key = keys
                .find(&hash)
                .await?
                .ok_or_else(|| unauthorized("unknown API key"))?;
            if key.revoked_us.is_some() {
                return Err(unauthorized("this API key has been revoked"));
            }
            return Ok(Principal {
                tenant: if self.single_tenant {
                    "default".into()
                } else {
                    key.tenant
                },
                role: key.role,
                subject: key.name,
                subscribe: None,
                publish: None,
                expires_at: None,
                key_hash: Some(hash),
            });
        }
        self.verify_jwt(token)
    }
}

/// The token of a request: `Authorization: Bearer` first, then `?token=`.
pub fn token_of(parts: &Parts) -> Result<Option<String>, ApiError> {
    if let Some(h) = parts.headers.get(header::AUTHORIZATION) {
        let h = h
            .to_str()
            .map_err(|_| unauthorized("the Authorization header is not text"))?;
        let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
        if !scheme.eq_ignore_ascii_case("bearer") || rest.trim().is_empty() {
            return Err(unauthorized("use `Authorization: Bearer <token>`"));
        }
        return Ok(Some(rest.trim().to_string()));
    }
    let q = parts.uri.query().unwrap_or("");
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(q).unwrap_or_default();
    Ok(pairs
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v))
}

/// Query parameter names whose values are credentials, compared after percent-decoding.
const CREDENTIAL_PARAMS: [&str; 4] = ["token", "access_token", "api_key", "auth_signature"];

/// A query string with credential values replaced, safe to log. Names are percent-decoded
/// (and `+` read as a space) before they are compared, as [`token_of`] decodes them, so
/// `?tok%65n=` is redacted like `?token=` (§12.10). A pair that does not decode is
/// redacted whole.
pub fn redact_query(q: &str) -> String {
    q.split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let decoded: Result<Vec<(String, String)>, _> = serde_urlencoded::from_str(kv);
            match decoded {
                Ok(pairs) => {
                    // Compared loosely (any case, ignoring characters no parameter name of
                    // the hub has), so a near miss that does not authenticate is not
                    // logged either.
                    let secret = pairs.iter().any(|(name, _)| {
                        let norm: String = name
                            .chars()
                            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                            .collect::<String>()
                            .to_ascii_lowercase();
                        CREDENTIAL_PARAMS.contains(&norm.as_str())
                    });
                    if secret {
                        format!("{k}=REDACTED")
                    } else {
                        kv.to_string()
                    }
                }
                Err(_) if v.is_empty() => "REDACTED".to_string(),
                Err(_) => format!("{k}=REDACTED"),
            }
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// The authenticated principal of a request.
pub struct Auth(pub Principal);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let auth = &state.settings.auth;
        if !auth.enabled {
            return Ok(Auth(Principal::anonymous_admin()));
        }
        let token = token_of(parts)?.ok_or_else(|| {
            unauthorized(
                "a credential is required: send `Authorization: Bearer <token>` or `?token=`",
            )
        })?;
        let p = auth.authenticate(state.keys.as_ref(), &token).await?;
        Ok(Auth(p))
    }
}

/// Shared handle for the key store.
pub type Keys = Arc<dyn KeyStore>;

/// Requires at least `role`, as an HTTP refusal.
pub fn require(p: &Principal, role: Role) -> Result<(), ApiError> {
    Ok(check_role(p, role)?)
}

/// Requires at least `role`, as a service's refusal (`forbidden`).
pub fn check_role(p: &Principal, role: Role) -> Result<(), crate::service::Error> {
    if p.has(role) {
        Ok(())
    } else {
        Err(crate::service::Error::forbidden(format!(
            "this needs the {} role",
            role.as_str()
        )))
    }
}

/// The tenants a read covers: the principal's own, or for an admin the one named by a
/// `tenant` parameter (`*` for all).
pub fn read_scope(p: &Principal, tenant: Option<&str>) -> Result<Scope, crate::service::Error> {
    match tenant {
        None => Ok(Scope::Tenant(p.tenant.clone())),
        Some(t) if t == p.tenant => Ok(Scope::Tenant(p.tenant.clone())),
        Some(_) if p.role != Role::Admin => Err(crate::service::Error::forbidden(
            "only an admin may read another tenant",
        )),
        Some("*") => Ok(Scope::All),
        Some(t) => {
            crier_core::event::check_tenant(t)?;
            Ok(Scope::Tenant(t.to_string()))
        }
    }
}

/// The filter a principal may use: its own, narrowed by the credential's `subscribe` patterns.
pub fn narrow(p: &Principal, mut f: crier_core::Filter) -> crier_core::Filter {
    f.allowed_types = p.subscribe.clone();
    f
}

//! Webhook secrets and signatures (Standard Webhooks): a `whsec_` secret holds the HMAC key,
//! and each delivery is signed over `{id}.{timestamp}.{body}`.

use base64::Engine;
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::Sha256;

use crate::service::Error;

/// A new signing secret: `whsec_` + base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill(&mut raw);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// The key bytes of a `whsec_` secret, or why it is not one.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, Error> {
    let b64 = secret
        .strip_prefix("whsec_")
        .ok_or_else(|| Error::invalid("invalid_secret", "a webhook secret starts with `whsec_`"))?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| {
            Error::invalid(
                "invalid_secret",
                "a webhook secret is `whsec_` followed by base64",
            )
        })?;
    if key.len() < 16 {
        return Err(Error::invalid(
            "invalid_secret",
            "a webhook secret holds at least 16 bytes",
        ));
    }
    Ok(key)
}

/// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
pub fn sign(key: &[u8], id: &str, timestamp: u64, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(key) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC accepts keys of any length"),
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

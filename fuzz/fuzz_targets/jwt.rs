//! JWTs: the raw token as a client sends it, and tokens whose header and claims are arbitrary
//! but carry a valid HS256 signature, so the header checks and the claims handling (tenant,
//! role, subject, expiry, `subscribe`/`publish` patterns) are reached too.
//!
//! Input: a first byte that picks the mode, then the token, or header and claims JSON
//! separated by a NUL byte.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use sha2::Sha256;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let auth = &crier_fuzz::fixture().state.settings.auth;
    if mode & 1 == 0 {
        if let Ok(token) = std::str::from_utf8(rest) {
            let _ = auth.verify_jwt(token);
        }
        return;
    }
    let split = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
    let (header, claims) = (&rest[..split], rest.get(split + 1..).unwrap_or(&[]));
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(crier_fuzz::SECRET.as_bytes()) else {
        return;
    };
    mac.update(signing_input.as_bytes());
    let token = format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    );
    if let Ok(p) = auth.verify_jwt(&token) {
        // An accepted token names a tenant and a subject the hub can work with.
        assert!(
            crier_core::event::check_tenant(&p.tenant).is_ok(),
            "accepted tenant {:?}",
            p.tenant
        );
    }
});

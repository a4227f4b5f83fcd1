//! `POST /v1/events` with CloudEvents: structured (one object) and batch (an array), and the
//! `Content-Type` header itself. The first byte picks the content type, the rest is the body.
#![no_main]

use axum::http::HeaderValue;
use crier_core::Principal;
use libfuzzer_sys::fuzz_target;

const TYPES: [&str; 4] = [
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "application/cloudevents+json; charset=utf-8",
    "Application/CloudEvents-Batch+JSON ; x=y",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else {
        return;
    };
    let ct = match TYPES.get(usize::from(first & 0x7f)) {
        Some(t) => HeaderValue::from_static(t),
        // Any other first byte: the leading bytes up to a NUL are the header value itself.
        None => {
            let end = body.iter().position(|&b| b == 0).unwrap_or(0);
            match HeaderValue::from_bytes(&body[..end]) {
                Ok(v) => v,
                Err(_) => return,
            }
        }
    };
    crier_fuzz::decode_publish(&Principal::anonymous_admin(), ct, body);
});

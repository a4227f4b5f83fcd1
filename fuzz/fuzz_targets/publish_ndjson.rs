//! `POST /v1/events` with NDJSON bodies: line splitting (LF, CRLF, blank lines) and each
//! line's event, validated as the hub does before anything is stored.
#![no_main]

use axum::http::HeaderValue;
use crier_core::Principal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let ndjson = HeaderValue::from_static("application/x-ndjson");
    crier_fuzz::decode_publish(&Principal::anonymous_admin(), ndjson, data);
});

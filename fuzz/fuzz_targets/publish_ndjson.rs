//! `POST /v1/events` with NDJSON bodies: line splitting (LF, CRLF, blank lines) and each
//! line's event, validated as the hub does before anything is stored.
#![no_main]

use axum::http::{header, HeaderMap, HeaderValue};
use crier_core::Principal;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = crier_fuzz::fixture();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    let _ = crier_server::events::decode_publish(
        &f.state,
        &Principal::anonymous_admin(),
        &headers,
        data,
    );
});

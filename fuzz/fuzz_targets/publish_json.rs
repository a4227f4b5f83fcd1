//! `POST /v1/events` with `application/json` bodies: one event object or an array of them,
//! split and validated as the hub does before anything is stored.
#![no_main]

use axum::http::{header, HeaderMap, HeaderValue};
use crier_core::{Principal, Role};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let f = crier_fuzz::fixture();
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // As the hub without auth, and as a publisher narrowed to some types.
    let _ = crier_server::events::decode_publish(
        &f.state,
        &Principal::anonymous_admin(),
        &headers,
        data,
    );
    let _ = crier_server::events::decode_publish(
        &f.state,
        &crier_fuzz::principal(Role::Publisher, true),
        &headers,
        data,
    );
});

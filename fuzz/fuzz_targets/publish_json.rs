//! `POST /v1/events` with `application/json` bodies: one event object or an array of them,
//! split and validated as the hub does before anything is stored.
#![no_main]

use axum::http::HeaderValue;
use crier_core::{Principal, Role};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let json = || HeaderValue::from_static("application/json");
    // As the hub without auth, and as a publisher narrowed to some types.
    crier_fuzz::decode_publish(&Principal::anonymous_admin(), json(), data);
    let publisher = crier_fuzz::principal(Role::Publisher, true);
    crier_fuzz::decode_publish(&publisher, json(), data);
});

//! Query strings of the read endpoints (`/v1/events`, `/v1/stream`, replays, webhooks):
//! percent-decoding, known keys, the §2 filter keys and the numeric and time parameters.
#![no_main]

use libfuzzer_sys::fuzz_target;

const EXTRA: [&str; 8] = [
    "after", "last", "limit", "order", "since", "until", "tenant", "token",
];

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    for q in [
        crier_server::query::Query::parse(Some(raw), &EXTRA),
        crier_server::query::Query::parse_only(Some(raw), &EXTRA),
    ] {
        let Ok(q) = q else { continue };
        let _ = q.filter();
        for k in ["after", "last", "limit"] {
            let _ = q.u64(k);
        }
        for k in ["since", "until"] {
            let _ = q.time(k);
        }
        let _ = q.get("order");
    }
    let _ = crier_server::auth::redact_query(raw);
});

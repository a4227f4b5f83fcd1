//! Filters in their JSON form (WebSocket subscribe, replays, webhook subscriptions, GraphQL
//! variables) and glob patterns matched against text. Input: a JSON filter, or a pattern and
//! a text separated by a NUL byte.
#![no_main]

use crier_core::{Filter, Pattern};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(f) = Filter::from_json(&v) {
            // What the hub sends back describes the same filter.
            let again = Filter::from_json(&f.to_json());
            assert!(
                again.is_ok(),
                "a filter's own JSON is refused: {:?}",
                f.to_json()
            );
            let _ = f.is_empty();
        }
        return;
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (pat, subject) = text.split_once('\0').unwrap_or((text, ""));
    if let Ok(p) = Pattern::new(pat) {
        let _ = p.matches(subject);
        let _ = p.matches(pat);
        assert_eq!(p.as_str(), pat);
    }
});

//! Stream and page positions from clients: `Last-Event-ID`, `after`/`last`, link-page cursors
//! and RFC 3339 times.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crier_server::transport::start_position(Some(s), None, None);
    let _ = crier_server::transport::start_position(Some(s), Some(1), Some(5));
    let last = s.parse::<u64>().ok();
    let _ = crier_server::transport::start_position(None, None, last);
    if let Ok(k) = crier_core::entity::LinkKey::parse_cursor(s) {
        // A cursor the hub hands out reads back as the same key.
        let again = crier_core::entity::LinkKey::parse_cursor(&k.cursor());
        assert!(
            again.is_ok_and(|a| a == k),
            "cursor {s:?} does not round-trip"
        );
    }
    let _ = crier_core::event::parse_time_us(s);
});

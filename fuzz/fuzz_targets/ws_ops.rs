//! `GET /v1/ws` text frames: every op (subscribe, unsubscribe, publish, history, ping, auth,
//! replay, replay_stop) through the connection's real handler, as a read-only principal of a
//! hub whose log is empty. Subscriptions and replays a message opens are closed after it.
#![no_main]

use crier_core::Role;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let f = crier_fuzz::fixture();
    let principal = crier_fuzz::principal(Role::Subscriber, true);
    let frames = f.rt.block_on(crier_server::ws::oneshot::answer(
        f.state.clone(),
        principal,
        text,
    ));
    // Every answer is a JSON object with an op.
    for frame in frames {
        let v: serde_json::Value = match serde_json::from_str(&frame) {
            Ok(v) => v,
            Err(e) => panic!("the hub answered with invalid JSON ({e}): {frame}"),
        };
        assert!(
            v.get("op").and_then(|o| o.as_str()).is_some(),
            "no op in {frame}"
        );
    }
});
